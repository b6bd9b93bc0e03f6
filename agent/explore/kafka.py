"""The explorer's side of Kafka: each run an ordinary scenario request followed to its result, and the
exploration's own result event on the results topic."""

from __future__ import annotations

import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from agent import client, codec, kafkaio, submission
from agent._proto.coordinator.v1 import events_pb2
from agent.explore import schedule as sched
from agent.explore.explorer import FAILED, INCONCLUSIVE, NO_RESULT, Outcome, Report
from agent.settings import Settings

#: how the engine begins a FAILED result's reason when the only problem is a missing verdict
NO_EVIDENCE = "no evidence for expectation(s)"


class KafkaRunner:
    """Runs a scenario the way ``coordinator run`` does: a request with the scenario inline, then its
    result from the results topic (``run_timeout`` seconds at most)."""

    def __init__(self, settings: Settings, *, requester: str, run_timeout: float) -> None:
        self.settings = settings
        self.requester = requester
        self.run_timeout = run_timeout

    async def run(self, scenario_yaml: str, labels: dict[str, str]) -> Outcome:
        request = events_pb2.ScenarioRequest(scenario_yaml=scenario_yaml, labels=labels)
        submission.complete(request, requester=self.requester)
        result = await client.run_and_follow(self.settings, request, timeout=self.run_timeout)
        if result is None:
            return Outcome(NO_RESULT, f"no result within {self.run_timeout:.0f}s (is an agent running?)")
        verdicts = tuple((v.expectation_name, events_pb2.VerdictStatus.Name(v.status).removeprefix("VERDICT_STATUS_"),
                          v.reason) for v in result.verdicts)
        return Outcome(outcome_status(result), result.reason, result.execution_id, verdicts)


def outcome_status(result: events_pb2.ScenarioResult) -> str:
    """The result's status, except that a run FAILED only for want of evidence (every other check
    held, some expectation had no verdict: the worker did not answer) is INCONCLUSIVE: it says
    nothing about the schedule, and an exploration neither shrinks on it nor calls it a pass."""
    status = client.status_name(result.status)
    if status == FAILED and result.reason.startswith(NO_EVIDENCE):
        return INCONCLUSIVE
    return status


def result_event(report: Report, *, exploration_id: str, requester: str, started: float,
                 ended: float) -> events_pb2.ExplorationResult:
    """The exploration's outcome as the results topic carries it."""
    event = events_pb2.ExplorationResult(
        exploration_id=exploration_id, name=report.name, seed=report.seed,
        outcome=f"EXPLORATION_OUTCOME_{report.outcome}",
        reason=report.reason, runs=len(report.runs), search_runs=report.count("search"),
        shrink_runs=report.count("confirm", "shrink"), first_failure_run=report.first_failure_run,
        found_faults=[p.describe() for p in report.found], minimal_faults=[p.describe() for p in report.minimal],
        minimal_scenario_yaml=report.minimal_yaml, requester=requester,
        execution_ids=[r.execution_id for r in report.runs if r.execution_id])
    event.started_at.CopyFrom(_stamp(started))
    event.ended_at.CopyFrom(_stamp(ended))
    return event


async def publish(settings: Settings, event: events_pb2.ExplorationResult) -> None:
    producer = kafkaio.producer(settings, purpose="explore")
    await kafkaio.started(producer)
    try:
        out = codec.encode_event(event, key=event.exploration_id, source=f"/explore/{event.name}",
                                 event_id=f"exploration-{event.exploration_id}")
        await producer.send_and_wait(settings.topics.scenario_results, out.value, key=out.key, headers=out.headers)
    finally:
        await producer.stop()


def new_id() -> str:
    return str(uuid.uuid4())


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


__all__ = ["KafkaRunner", "new_id", "publish", "result_event", "sched"]
