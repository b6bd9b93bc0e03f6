"""Hostile scenario files are refused, with a clear reason, without building anything large.

How fast each is refused is measured by bench/hostile_corpus.py (not a timed test)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from agent.errors import ScenarioError
from agent.scenario import load_scenario
from tests.unit.scenario.hostile import CORPUS, EXPECTED, all_cases

CASES = all_cases()
#: refusing any case may allocate at most this much beyond the input itself
MEMORY_BUDGET = 16 * 1024 * 1024


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_refused_with_a_reason_and_little_memory(name: str) -> None:
    document, fragment = CASES[name]
    tracemalloc.start()
    try:
        with pytest.raises(ScenarioError) as caught:
            load_scenario(document, name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fragment in str(caught.value)
    assert all(issue.file == name and issue.line >= 1 for issue in caught.value.issues)
    assert peak < MEMORY_BUDGET, f"refusing {name} allocated {peak / 1e6:.1f} MB"


def test_the_corpus_covers_every_committed_file() -> None:
    assert {p.name for p in CORPUS.glob("*.yaml")} == set(EXPECTED)


def test_nothing_is_executed_by_a_python_tag(tmp_path: Path) -> None:
    marker = Path("/tmp/pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(ScenarioError):
        load_scenario((CORPUS / "python-object-tag.yaml").read_bytes())
    assert not marker.exists()


def test_duplicate_keys_are_each_reported_where_they_are() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario((CORPUS / "duplicate-keys.yaml").read_bytes(), "dupes.yaml")
    where = {(i.line, i.path) for i in caught.value.issues}
    assert where == {(5, "metadata.name"), (11, "spec")}


def test_wrong_types_are_refused_not_converted() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario((CORPUS / "wrong-types.yaml").read_bytes(), "w.yaml")
    paths = {i.path: i.message for i in caught.value.issues}
    assert paths["spec.targets.rm.selector.program"] == "expected a string, got int 42"
    assert paths["spec.steps[0].background"] == "expected a bool (true or false), got str 'yes'"
    assert paths["spec.steps[1].parameters.rate"] == "expected an int, got str '100'"
    assert paths["spec.limits.maxConcurrentFaults"] == "expected an int, got str '3'"
    assert paths["metadata.labels.team"] == "expected a string, got a list"


def test_unknown_fields_are_all_named() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario((CORPUS / "unknown-fields.yaml").read_bytes(), "u.yaml")
    assert {i.path for i in caught.value.issues} == {
        "metadata.owner", "spec.targets.rm.selector.host", "spec.steps[0].retries", "spec.hooks"}


def test_brackets_inside_quotes_and_comments_are_not_nesting() -> None:
    brackets = "[" * 200
    text = f"""\
apiVersion: coordinator/v1
kind: Scenario  # {brackets}
metadata:
  name: quoted
  description: "{brackets} \\" {brackets}"
  labels: {{pattern: '{brackets}''{brackets}'}}
spec:
  targets:
    rm: {{driver: supervisor, selector: {{program: rm}}}}
  steps:
    - {{name: a, fault: kill, target: rm}}
"""
    scenario = load_scenario(text)
    assert scenario.metadata.description.count("[") == 400
    assert scenario.metadata.labels["pattern"] == brackets + "'" + brackets
