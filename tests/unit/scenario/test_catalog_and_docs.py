from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.errors import NotFound
from agent.scenario import Catalog, load_scenario, load_scenario_file

ROOT = Path(__file__).resolve().parents[3]
REQUIRED = {
    "restart-risk-monitor-during-trading",
    "kill-trading-engine",
    "engine-exchange-latency",
    "duplicate-orders",
}


def test_every_scenario_in_the_catalog_validates() -> None:
    catalog = Catalog.load([ROOT / "scenarios"])
    assert catalog.problems == []
    assert REQUIRED <= set(catalog.names())


def test_the_reference_scenarios_say_what_the_issue_asks() -> None:
    catalog = Catalog.load([ROOT / "scenarios"])
    flagship = catalog.get("restart-risk-monitor-during-trading").scenario
    assert [s.fault for s in flagship.fault_steps()] == ["restart"]
    assert {e.kind for e in flagship.spec.expectations} >= {"appears", "absent", "time_to_recover"}
    kill = catalog.get("kill-trading-engine").scenario
    assert kill.fault_steps()[0].parameters.signal == "SIGKILL"
    assert {e.attribution for e in kill.spec.expectations} == {"target-window"}
    latency = catalog.get("engine-exchange-latency").scenario
    assert latency.fault_steps()[0].parameters.latency == 0.5
    dupes = catalog.get("duplicate-orders").scenario
    assert dupes.fault_steps()[0].fault == "duplicate-events"


def _doc_examples() -> list[tuple[int, str]]:
    text = (ROOT / "docs" / "scenarios.md").read_text()
    blocks = []
    for match in re.finditer(r"```yaml\n(.*?)```", text, re.DOTALL):
        line = text[: match.start()].count("\n") + 2
        blocks.append((line, match.group(1)))
    return blocks


@pytest.mark.parametrize(("line", "example"), _doc_examples(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_every_example_in_the_docs_validates(line: int, example: str) -> None:
    load_scenario(example, f"docs/scenarios.md:{line}")


def test_docs_have_an_example_per_feature() -> None:
    names = {load_scenario(example).name for _, example in _doc_examples()}
    assert {"example-steps", "example-probes", "example-expectations", "example-rollbacks",
            "example-parameters", "example-containers"} <= names


def test_duplicate_names_in_the_catalog_are_reported_with_both_files(tmp_path: Path) -> None:
    source = (ROOT / "scenarios" / "kill-trading-engine.yaml").read_text()
    (tmp_path / "a.yaml").write_text(source)
    (tmp_path / "b.yml").write_text(source)
    catalog = Catalog.load([tmp_path])
    assert catalog.names() == ["kill-trading-engine"]
    assert len(catalog.problems) == 1
    problem = catalog.problems[0]
    assert problem.file.endswith("b.yml") and "a.yaml" in problem.message
    assert "duplicate scenario name 'kill-trading-engine'" in problem.message


def test_an_unknown_scenario_name_suggests_the_close_one() -> None:
    catalog = Catalog.load([ROOT / "scenarios"])
    with pytest.raises(NotFound, match="did you mean 'kill-trading-engine'") as caught:
        catalog.get("kill-trading-engin")
    assert caught.value.exit_code == 1 and caught.value.grpc_status == "NOT_FOUND"


def test_overrides_reach_the_scenario() -> None:
    scenario = load_scenario_file(ROOT / "scenarios" / "engine-exchange-latency.yaml",
                                  overrides={"latency": "2s", "faultDuration": "45s"}, overrides_from_text=True)
    step = scenario.fault_steps()[0]
    assert step.parameters.latency == 2.0
    assert step.duration == 45.0
