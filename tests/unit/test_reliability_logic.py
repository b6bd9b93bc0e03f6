"""The pure parts of the agent's own reliability: failpoint specs, dead letters that always fit,
selectors that stay data, and the allow-list on what a driver touches."""

from __future__ import annotations

import asyncio
import hashlib
from urllib.parse import unquote

import pytest
from aiokafka.structs import ConsumerRecord

from agent import failpoints
from agent.drivers.toxiproxy import seg
from agent.engine.publisher import dead_letter_parts
from agent.errors import ActionError, ConfigError, ScenarioError
from agent.scenario import load_scenario
from agent.scenario.checks import refused_by_allow_list


def _record(value: bytes | None, key: bytes | None = b"k", headers: list | None = None) -> ConsumerRecord:
    return ConsumerRecord(topic="in", partition=3, offset=41, timestamp=0, timestamp_type=0, key=key, value=value,
                          checksum=None, serialized_key_size=0, serialized_value_size=0, headers=headers or [])


# -- failpoints ----------------------------------------------------------------------------------------
def test_failpoint_specs_are_parsed_and_every_bad_entry_is_named() -> None:
    armed = failpoints.parse("after-lease=exit; before-result=2*sleep(0.5);after-inject=raise")
    assert {n: (a.action, a.arg, a.remaining) for n, a in armed.items()} == {
        "after-lease": ("exit", None, None), "before-result": ("sleep", "0.5", 2),
        "after-inject": ("raise", None, None)}
    with pytest.raises(ConfigError) as caught:
        failpoints.parse("after-lese=exit;after-claim=explode;after-record=sleep(soon)")
    text = str(caught.value)
    assert "unknown failpoint 'after-lese'" in text
    assert "failpoint 'after-claim': expected" in text and "sleep needs seconds" in text


def test_a_disarmed_point_does_nothing_and_an_armed_count_runs_out() -> None:
    async def go() -> list[str]:
        seen = []
        failpoints.arm("")
        await failpoints.point("after-lease")
        failpoints.arm("after-lease=1*raise")
        for _ in range(2):
            try:
                await failpoints.point("after-lease")
                seen.append("passed")
            except failpoints.FailpointError as exc:
                seen.append(str(exc))
        failpoints.arm("")
        return seen

    assert asyncio.run(go()) == ["failpoint 'after-lease' fired", "passed"]


# -- dead letters ----------------------------------------------------------------------------------------
def test_a_record_that_fits_is_dead_lettered_byte_for_byte() -> None:
    value, key, headers = dead_letter_parts(_record(b"\xff bad", headers=[("content-type", b"x")]),
                                            "bad-protobuf", "oops", 4096)
    assert value == b"\xff bad" and key == b"k"
    assert ("content-type", b"x") in headers and ("dlq-reason", b"bad-protobuf") in headers
    assert ("dlq-source-offset", b"41") in headers and not any(n == "dlq-original-size" for n, _ in headers)


def test_an_oversized_record_becomes_a_truncated_copy_with_its_size_and_digest_within_the_limit() -> None:
    original = b"{" + b"x" * 2_000_000
    big_header = ("blob", b"y" * 100_000)
    value, key, headers = dead_letter_parts(_record(original, key=b"z" * 5000, headers=[big_header]),
                                            "too-large", "e" * 10_000, 64 * 1024)
    named = dict(headers)
    assert named["dlq-original-size"] == b"2000001"
    assert named["dlq-original-sha256"] == hashlib.sha256(original).hexdigest().encode()
    assert "blob" not in named, "a huge original header is dropped"
    assert original.startswith(value) and len(value) > 0
    total = len(value) + len(key) + sum(len(n) + len(v) for n, v in headers)
    assert total <= 64 * 1024


# -- selectors are data ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../reset#", "a/../../reset", "x?y", "%2e%2e", "a b"])
def test_every_name_is_one_url_segment(name: str) -> None:
    quoted = seg(name)
    assert "/" not in quoted and "?" not in quoted and "#" not in quoted and " " not in quoted
    assert unquote(quoted) == name


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_names_a_client_would_fold_are_refused(name: str) -> None:
    with pytest.raises(ActionError):
        seg(name)


SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: hostile}}
spec:
  targets:
    link: {{driver: toxiproxy, selector: {{proxy: "{proxy}"}}}}
    proc: {{driver: supervisor, selector: {{program: "{program}"}}}}
    topic: {{driver: kafka, selector: {{topic: "{topic}"}}}}
  steps:
    - {{name: slow, fault: latency, target: link, duration: 1s, parameters: {{latency: 1s}}}}
"""


def test_hostile_selectors_are_refused_each_with_its_field_path() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(SCENARIO.format(proxy="../reset#", program="a:b", topic="../x"), "hostile.yaml")
    found = {issue.path: issue.message for issue in caught.value.issues}
    assert "'../reset#' is not a valid name" in found["spec.targets.link.selector.proxy"]
    assert "'a:b' is not a valid name" in found["spec.targets.proc.selector.program"]
    assert "a Kafka topic name" in found["spec.targets.topic.selector.topic"]
    load_scenario(SCENARIO.format(proxy="engine-to-exchange", program="risk-monitor", topic="orders.v1"), "ok.yaml")


# -- the allow-list covers what a driver touches ---------------------------------------------------------------
def test_the_allow_list_applies_to_the_program_proxy_and_topics_a_target_touches() -> None:
    allowed = ["risk-*", "toxiproxy:engine-to-*"]
    assert refused_by_allow_list("risk-monitor", "supervisor", {"program": "risk-monitor"}, allowed) is None
    assert "supervisor 'trading-engine' is not in the agent's allow-list" in refused_by_allow_list(
        "risk-monitor", "supervisor", {"program": "trading-engine"}, allowed)
    assert refused_by_allow_list("risk-monitor", "toxiproxy", {"proxy": "engine-to-risk"}, allowed) is None
    assert "kafka 'orders.v1'" in refused_by_allow_list("risk-monitor", "kafka", {"topic": "orders.v1"}, allowed)
    assert "target 'exchange' is not" in refused_by_allow_list("exchange", "toxiproxy", {"proxy": "x"}, allowed)
    assert refused_by_allow_list("anything", "kafka", {"topic": "t", "source": "s"}, ["*"]) is None


# -- an outage is a few log lines, not hundreds ----------------------------------------------------------------
def test_repeated_library_lines_are_held_back_and_counted_in_the_next_one() -> None:
    import logging

    from agent.logs import RepeatFilter

    def line(name: str, at: float, node: int) -> logging.LogRecord:
        record = logging.LogRecord(name, logging.ERROR, __file__, 1, "Unable connect to node with id %s", (node,),
                                   None)
        record.created = at
        return record

    repeat = RepeatFilter(window=30)
    passed = [repeat.filter(line("aiokafka", t, 1)) for t in (0.0, 1.0, 2.0, 29.0)]
    assert passed == [True, False, False, False]
    later = line("aiokafka", 31.0, 1)
    assert repeat.filter(later) and "3 more like this" in later.getMessage()
    assert repeat.filter(line("agent.engine", 31.5, 1)), "the project's own lines are never held back"
