"""The live results page of ``coordinator serve``: ``/live`` (HTML, no framework, nothing fetched from
outside) and ``/api/v1/live`` (server-sent events).

The event stream reads the topics itself (results and progress, chaos events, verdicts, and the
audit events that carry a correlation id), with a consumer of its own per page, from a few minutes
back, so a page opened mid-run shows the run from its start and several agents' runs show on one
page. Each SSE message is one event in its JSON encoding with the topic's kind (``progress``,
``result``, ``chaos``, ``verdict``, ``audit``). The page keeps, per execution, its status and
requester and a timeline: steps, each injection with its correlation id, the audit events joined to
it as they arrive, each expectation's verdict and time to recover, and a link to the HTML report
once the run has ended (``/api/v1/executions/{id}/report.html``, when an engine is attached).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer
from google.protobuf import json_format

from agent import codec
from agent._proto.coordinator.v1 import events_pb2
from agent.errors import DecodeError
from agent.kafkaio import client_options, topic_partitions
from agent.settings import Settings

#: how far back a new page starts reading, so that a run in progress shows from its start
BACKLOG_SECONDS = 600
#: an execution's HTML report, or None when it has none (yet)
Report = Callable[[str], Awaitable[str | None]]


def add_routes(app: web.Application, settings: Settings, report: Report | None) -> None:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def events(request: web.Request) -> web.StreamResponse:
        return await _stream(request, settings)

    async def html_report(request: web.Request) -> web.Response:
        if report is None:
            raise web.HTTPNotFound(text="no engine attached")
        text = await report(request.match_info["execution_id"])
        if text is None:
            raise web.HTTPNotFound(text="no result for this execution (unknown, or still running)")
        return web.Response(text=text, content_type="text/html")

    app.router.add_get("/live", page)
    app.router.add_get("/api/v1/live", events)
    app.router.add_get("/api/v1/executions/{execution_id}/report.html", html_report)


async def _stream(request: web.Request, settings: Settings) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False,
                                client_id=f"{settings.kafka_client_id}-live")
    await consumer.start()
    try:
        topics = settings.topics
        wanted = (topics.scenario_results, topics.chaos_events, topics.verdicts, topics.audit_events)
        partitions = [tp for topic in wanted for tp in await topic_partitions(consumer, topic)]
        consumer.assign(partitions)
        since = int((time.time() - BACKLOG_SECONDS) * 1000)
        offsets = await consumer.offsets_for_times(dict.fromkeys(partitions, since))
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            found = offsets.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        await response.write(b": connected\n\n")
        quiet = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            for records in batch.values():
                for record in records:
                    message = _message(record, settings)
                    if message is not None:
                        message["at"] = _at(record)
                        await response.write(f"data: {json.dumps(message)}\n\n".encode())
            if time.monotonic() - quiet > 15:  # a comment now and then keeps proxies from closing it
                await response.write(b": keep-alive\n\n")
                quiet = time.monotonic()
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the page went away
    finally:
        await consumer.stop()
    return response


def _message(record: Any, settings: Settings) -> dict[str, Any] | None:
    topics = settings.topics
    kind = codec.headers_to_dict(record.headers).get("ce_type") or ""
    try:
        if record.topic == topics.scenario_results:
            if kind == codec.ce_type_of(events_pb2.ExecutionProgress):
                return _json("progress", codec.decode_event(record.value, record.headers, events_pb2.ExecutionProgress))
            return _json("result", codec.decode_event(record.value, record.headers, events_pb2.ScenarioResult))
        if record.topic == topics.chaos_events:
            return _json("chaos", codec.decode_event(record.value, record.headers, events_pb2.ChaosEvent))
        if record.topic == topics.verdicts:
            return _json("verdict", codec.decode_event(record.value, record.headers, events_pb2.ExpectationVerdict))
        event = codec.decode_event(record.value, record.headers, events_pb2.AuditEvent)
        correlation = event.correlation_id or codec.headers_to_dict(record.headers).get("correlation-id", "")
        if not correlation:
            return None  # only what a fault's correlation id ties to an injection
        message = _json("audit", event)
        message["correlationId"] = correlation
        return message
    except DecodeError:
        return None


def _json(kind: str, message: Any) -> dict[str, Any]:
    body: dict[str, Any] = json_format.MessageToDict(message)
    body["kind"] = kind
    return body


def _at(record: Any) -> int:
    """When a record was written (ms): the page orders a run's lines by it, whatever topic or
    partition each came from and in whatever order the backlog is read."""
    return int(record.timestamp) if record.timestamp and record.timestamp > 0 else int(time.time() * 1000)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Chaos coordinator: live</title>
<link rel="icon" href="data:,">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em} .run{border:1px solid #ccc;border-radius:6px;margin:0 0 1em;padding:.6em 1em}
.head{display:flex;gap:1em;align-items:baseline;flex-wrap:wrap} .name{font-weight:600}
.status{padding:0 .5em;border-radius:4px;background:#eee} .PASSED{background:#cfc}
.FAILED,.ERROR,.TIMED_OUT{background:#fcc} .RUNNING,.PENDING{background:#ffd} .ABORTED,.REJECTED{background:#ddd}
ol{margin:.4em 0;padding-left:1.4em} li{margin:.1em 0} code{font-size:12px}
.audit{color:#555} .verdict{font-weight:600} li.FAILED,li.ERROR,li.TIMED_OUT{color:#b00000}
li.PASSED{color:#106010} li.INCONCLUSIVE{color:#8a5a00} time{color:#888;font-size:12px;margin-right:.5em}
</style></head>
<body><h1>Chaos coordinator: live</h1>
<p id="state">connecting&hellip;</p>
<div id="runs"></div>
<script>
const runs = new Map(), injections = new Map(), early = new Map();
const short = s => (s || "").replace(/^(EXECUTION_STATUS_|VERDICT_STATUS_|CHAOS_EVENT_TYPE_)/, "");
function run(id) {
  if (!runs.has(id)) {
    const el = document.createElement("div");
    el.className = "run"; el.id = "run-" + id;
    el.innerHTML = '<div class="head"><span class="name"></span><span class="status"></span>' +
      '<span class="requester"></span><code class="id"></code><span class="report"></span></div><ol></ol>';
    el.querySelector(".id").textContent = id;
    document.getElementById("runs").prepend(el);
    runs.set(id, el);
  }
  return runs.get(id);
}
// a run's lines in the order they happened (by the time each record was written), not in the order
// the topics' partitions are read: the backlog of a page opened late comes topic by topic
function line(el, cls, text, at) {
  const li = document.createElement("li"); li.className = cls; li.dataset.at = at;
  const when = document.createElement("time"); when.textContent = new Date(at).toISOString().slice(11, 23);
  li.append(when, document.createTextNode(text));
  const ol = el.querySelector("ol");
  const after = Array.from(ol.children).find(x => Number(x.dataset.at) > at);
  ol.insertBefore(li, after || null); return li;
}
// "0.727838754s" -> "0.728s"
const seconds = d => d ? Number(String(d).replace(/s$/, "")).toFixed(3) + "s" : "";
function head(el, m) {
  if (m.scenarioName) el.querySelector(".name").textContent = m.scenarioName;
  if (m.requester) el.querySelector(".requester").textContent = "by " + m.requester;
  if (m.status) {
    const s = el.querySelector(".status");
    s.textContent = short(m.status); s.className = "status " + short(m.status);
  }
}
const on = {
  progress(m) {
    const el = run(m.executionId); head(el, m);
    if (m.phase !== "expectations") line(el, "step", "[" + m.phase + "] " + m.message, m.at);
  },
  result(m) {
    const el = run(m.executionId); head(el, m);
    line(el, "result " + short(m.status), "result: " + short(m.status) + (m.reason ? " - " + m.reason : ""), m.at);
    const link = el.querySelector(".report");
    link.innerHTML = '<a href="/api/v1/executions/' + encodeURIComponent(m.executionId) + '/report.html">report</a>';
  },
  chaos(m) {
    const el = run(m.executionId);
    if (short(m.type) === "INJECTED") {
      injections.set(m.correlationId, el);
      (early.get(m.correlationId) || []).forEach(on.audit); early.delete(m.correlationId);
      line(el, "injection", "injected " + m.fault + " on " + m.target + " (correlation id " + m.correlationId + ")",
           m.at);
    } else line(el, "injection", short(m.type).toLowerCase() + " " + m.fault + " on " + m.target, m.at);
  },
  verdict(m) {
    const el = run(m.executionId);
    const ttr = m.timeToRecover ? " (time to recover " + seconds(m.timeToRecover) + ")" : "";
    line(el, "verdict " + short(m.status), "verdict " + m.expectationName + ": " + short(m.status) + ttr + " - " +
         m.reason, m.at);
  },
  audit(m) {
    const el = injections.get(m.correlationId);
    if (!el) {  // read before its injection (another topic): shown once the injection is
      if (!early.has(m.correlationId)) early.set(m.correlationId, []);
      if (early.size > 1000) early.delete(early.keys().next().value);  // ids of runs not on the page
      early.get(m.correlationId).push(m); return;
    }
    line(el, "audit", "audit " + (m.serviceName || m.service_name) + ": " + (m.eventType || m.event_type),
                 m.at);
  },
};
const source = new EventSource("/api/v1/live");
let opened = false;
source.onopen = () => {  // a reconnection reads the backlog again: start from a clean page
  if (opened) { runs.clear(); injections.clear(); early.clear(); document.getElementById("runs").innerHTML = ""; }
  opened = true; document.getElementById("state").textContent = "live";
};
source.onerror = () => { document.getElementById("state").textContent = "reconnecting\u2026"; };
source.onmessage = e => { const m = JSON.parse(e.data); (on[m.kind] || (() => {}))(m); };
</script></body></html>
"""
