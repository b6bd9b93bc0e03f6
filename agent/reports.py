"""Reports of one execution's result, for CI and for people.

- JUnit XML: one ``<testsuite>`` per execution; one ``<testcase>`` per expectation (classname
  ``{scenario}.expectations``) and per steady-state check (``{scenario}.steady-state``). FAILED is a
  ``<failure>`` (message: the verdict's reason; text: expected and observed); INCONCLUSIVE is an
  ``<error type="INCONCLUSIVE">`` (no evidence is not a pass); an execution that ended without
  verdicts (REJECTED, ABORTED, a failure before the faults) gets one ``execution`` test case
  carrying its reason, so CI never shows a silent green.
- JSON: the result as canonical JSON (camelCase), the journal included.
- HTML: one self-contained file (no scripts, no external assets) with the timeline of injections,
  recovery and verdicts, and the journal.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET  # noqa: S405 - used to write XML, never to parse it
from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from agent import vocabulary
from agent._proto.coordinator.v1 import events_pb2

S = events_pb2
FORMATS = ("junit", "json", "html")


def render(result: events_pb2.ScenarioResult, fmt: str, trace_link: str = "") -> str:
    """``result`` as a report; ``trace_link`` (with ``{trace_id}``) links the execution's trace."""
    if fmt == "junit":
        return junit(result)
    if fmt == "json":
        return json_format.MessageToJson(result, indent=2, sort_keys=True)
    if fmt == "html":
        return html_report(result, trace_link)
    raise ValueError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}")


# -- JUnit ------------------------------------------------------------------------------------------
def junit(result: events_pb2.ScenarioResult) -> str:
    scenario = result.scenario_name or "scenario"
    suites = ET.Element("testsuites", name="chaos-coordinator")
    suite = ET.SubElement(suites, "testsuite", name=scenario, timestamp=_iso(result.started_at) or "",
                          time=f"{_seconds(result.started_at, result.ended_at):.3f}")
    properties = ET.SubElement(suite, "properties")
    for name, value in (("execution_id", result.execution_id), ("request_id", result.request_id),
                        ("status", _status(result.status)), ("reason", result.reason),
                        *((("trace_id", result.trace_id),) if result.trace_id else ()),
                        *((f"injection.{i.step_name}", i.correlation_id) for i in result.injections),
                        *((f"label.{k}", v) for k, v in sorted(result.labels.items()))):
        ET.SubElement(properties, "property", name=name, value=value)

    cases = 0
    failures = errors = 0
    for verdict in result.verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"{scenario}.expectations", name=verdict.expectation_name,
                             time=f"{_ttr(verdict) or 0.0:.3f}")
        cases += 1
        detail = "\n".join(x for x in (f"expected: {verdict.expected}" if verdict.expected else "",
                                       f"observed: {verdict.observed}" if verdict.observed else "",
                                       f"correlation id: {verdict.correlation_id}") if x)
        if verdict.status == S.VERDICT_STATUS_FAILED:
            failures += 1
            ET.SubElement(case, "failure", message=verdict.reason, type="FAILED").text = detail
        elif verdict.status != S.VERDICT_STATUS_PASSED:
            errors += 1
            ET.SubElement(case, "error", message=verdict.reason or "no verdict", type="INCONCLUSIVE").text = detail
        else:
            ET.SubElement(case, "system-out").text = verdict.reason
    for entry in result.journal:
        if not entry.phase.startswith("steady-state"):
            continue
        took = _seconds(entry.started_at, entry.ended_at)
        case = ET.SubElement(suite, "testcase", classname=f"{scenario}.steady-state",
                             name=f"{entry.phase}: {entry.name}", time=f"{took:.3f}")
        cases += 1
        if entry.status == S.JOURNAL_ENTRY_STATUS_FAILED:
            failures += 1
            ET.SubElement(case, "failure", message=entry.error or entry.output or "steady state not met",
                          type="STEADY_STATE").text = entry.output
        elif entry.status == S.JOURNAL_ENTRY_STATUS_SKIPPED:
            ET.SubElement(case, "skipped", message=entry.output or "skipped")
    if result.status != S.EXECUTION_STATUS_PASSED and not failures and not errors:
        case = ET.SubElement(suite, "testcase", classname=f"{scenario}.execution", name="execution",
                             time=f"{_seconds(result.started_at, result.ended_at):.3f}")
        cases += 1
        failures += 1
        ET.SubElement(case, "failure", message=result.reason or _status(result.status),
                      type=_status(result.status))
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(sum(1 for c in suite.iter("skipped"))))
    for attribute in ("tests", "failures", "errors"):
        suites.set(attribute, suite.get(attribute, "0"))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


# -- HTML -------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d232a;max-width:72rem}
h1{font-size:1.4rem;margin:0 0 .25rem}.meta{color:#57606a;margin-bottom:1rem}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;font-weight:600;color:#fff}
.PASSED{background:#1a7f37}.FAILED{background:#cf222e}.ABORTED,.REJECTED{background:#9a6700}
.INCONCLUSIVE{background:#6e7781}.RUNNING,.PENDING{background:#0969da}
.timeline{position:relative;border-left:2px solid #d0d7de;margin:1rem 0 1.5rem .5rem;padding-left:1rem}
.ev{position:relative;margin:.35rem 0}.ev:before{content:"";position:absolute;left:-1.38rem;top:.45rem;
width:.6rem;height:.6rem;border-radius:50%;background:#8c959f}.ev.fault:before{background:#cf222e}
.ev.recovery:before{background:#1a7f37}.ev.verdict:before{background:#0969da}
.t{font-family:ui-monospace,monospace;color:#57606a;display:inline-block;min-width:6rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}th,td{border:1px solid #d0d7de;
padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f6f8fa}
.bar{height:.7rem;background:#cf222e;border-radius:.2rem;opacity:.75}
"""


def html_report(result: events_pb2.ScenarioResult, trace_link: str = "") -> str:
    e = html.escape
    start = _ts(result.started_at)
    status = _status(result.status)

    def at(moment: float | None) -> str:
        return f"+{moment - start:.3f}s" if moment is not None and start is not None else ""

    events: list[tuple[float, str, str]] = []
    for injection in result.injections:
        injected, reverted = _ts(injection.injected_at), _ts(injection.reverted_at)
        if injected is not None:
            events.append((injected, "fault", f"fault <b>{e(injection.fault)}</b> on {e(injection.target)} "
                                              f"(step {e(injection.step_name)}, correlation id "
                                              f"<code>{e(injection.correlation_id)}</code>)"))
        if reverted is not None:
            events.append((reverted, "revert", f"fault {e(injection.fault)} on {e(injection.target)} reverted"))
    for verdict in result.verdicts:
        seen = _ts(verdict.first_seen_at)
        if seen is not None and verdict.status == S.VERDICT_STATUS_PASSED:
            ttr = _ttr(verdict)
            events.append((seen, "recovery", f"{e(verdict.expectation_name)}: recovery seen"
                                             + (f", time to recover {ttr:.3f}s" if ttr is not None else "")))
        deadline = _ts(verdict.deadline)
        decided = seen if verdict.status == S.VERDICT_STATUS_PASSED and seen is not None else deadline
        if decided is not None:
            name = _verdict(verdict.status)
            events.append((decided, "verdict", f'<span class="badge {name}">{name}</span> '
                                               f"{e(verdict.expectation_name)}: {e(verdict.reason)}"))
    for entry in result.journal:
        started = _ts(entry.started_at)
        if started is not None and entry.phase not in ("steps",):
            events.append((started, "journal", f"[{e(entry.phase)}] {e(entry.name)}: "
                                               f"{e(_journal(entry.status))}"
                                               + (f" - {e(entry.error)}" if entry.error else "")))
    events.sort(key=lambda item: item[0])

    rows = "".join(
        f"<tr><td>{e(v.expectation_name)}</td><td><span class=\"badge {_verdict(v.status)}\">"
        f"{_verdict(v.status)}</span></td><td>{e(v.reason)}</td>"
        f"<td>{'' if _ttr(v) is None else f'{_ttr(v):.3f}s'}</td></tr>" for v in result.verdicts)
    span = max(_seconds(result.started_at, result.ended_at), 0.001)
    bars = "".join(
        f"<tr><td>{e(i.fault)} on {e(i.target)}</td><td><div class=\"bar\" style=\"margin-left:"
        f"{100 * ((_ts(i.injected_at) or start or 0) - (start or 0)) / span:.1f}%;width:"
        f"{max(0.5, 100 * _seconds(i.injected_at, i.reverted_at) / span):.1f}%\"></div></td></tr>"
        for i in result.injections)
    journal = "".join(
        f"<tr><td>{e(j.phase)}</td><td>{e(j.name)}</td><td>{e(_journal(j.status))}</td>"
        f"<td>{e(j.output)}</td><td>{e(j.error)}</td></tr>" for j in result.journal)
    timeline = "".join(f'<div class="ev {kind}"><span class="t">{at(moment)}</span> {text}</div>'
                       for moment, kind, text in events)
    labels = ", ".join(f"{e(k)}={e(v)}" for k, v in sorted(result.labels.items()))
    trace = ""
    if result.trace_id:
        trace = f"· trace <code>{e(result.trace_id)}</code>"
        if trace_link:
            trace = (f'· trace <a class="trace" href="{e(trace_link.replace("{trace_id}", result.trace_id))}">'
                     f"<code>{e(result.trace_id)}</code></a>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(result.scenario_name)}: {status}</title>
<style>{_CSS}</style></head><body>
<h1>{e(result.scenario_name)} <span class="badge {status}">{status}</span></h1>
<div class="meta">execution <code>{e(result.execution_id)}</code> · request <code>{e(result.request_id)}</code>
 · started {e(_iso(result.started_at) or "-")} · {_seconds(result.started_at, result.ended_at):.1f}s
 {trace} {("· " + labels) if labels else ""}</div>
<p>{e(result.reason)}</p>
<h2>Verdicts</h2><table><tr><th>expectation</th><th>verdict</th><th>why</th><th>time to recover</th></tr>{rows}</table>
<h2>Faults</h2><table><tr><th>fault</th><th>active over the run</th></tr>{bars}</table>
<h2>Timeline</h2><div class="timeline">{timeline}</div>
<h2>Journal</h2><table><tr><th>phase</th><th>name</th><th>status</th><th>output</th><th>error</th></tr>{journal}</table>
</body></html>
"""


# -- helpers ----------------------------------------------------------------------------------------
def _ts(stamp: Timestamp) -> float | None:
    return stamp.ToNanoseconds() / 1e9 if stamp.seconds or stamp.nanos else None


def _iso(stamp: Timestamp) -> str | None:
    moment = _ts(stamp)
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds") if moment is not None else None


def _seconds(start: Timestamp, end: Timestamp) -> float:
    a, b = _ts(start), _ts(end)
    return max(0.0, b - a) if a is not None and b is not None else 0.0


def _ttr(verdict: events_pb2.ExpectationVerdict) -> float | None:
    if verdict.HasField("time_to_recover"):
        return verdict.time_to_recover.ToNanoseconds() / 1e9
    return None


_status = vocabulary.status_name
_verdict = vocabulary.verdict_name


def _journal(status: int) -> str:
    return str(S.JournalEntryStatus.Name(status)).removeprefix("JOURNAL_ENTRY_STATUS_")
