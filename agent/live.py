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
from google.protobuf import json_format

from agent import follow
from agent.follow import Follower, Update
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
    topics = settings.topics
    wanted = (topics.scenario_results, topics.chaos_events, topics.verdicts, topics.audit_events)
    try:
        async with Follower(settings, wanted, purpose="live") as follower:
            await follower.since(int((time.time() - BACKLOG_SECONDS) * 1000))
            await response.write(b": connected\n\n")
            quiet = time.monotonic()
            while True:
                for update in await follower.poll(max_records=500):
                    message = _message(update)
                    if message is not None:
                        await response.write(f"data: {json.dumps(message)}\n\n".encode())
                if time.monotonic() - quiet > 15:  # a comment now and then keeps proxies from closing it
                    await response.write(b": keep-alive\n\n")
                    quiet = time.monotonic()
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the page went away
    return response


def _message(update: Update) -> dict[str, Any] | None:
    """The page's message of an update: the event in its JSON encoding, its kind, and when it was
    written (ms: the page orders a run's lines by it, whatever topic or partition each came from and
    in whatever order the backlog is read)."""
    body: dict[str, Any] = json_format.MessageToDict(update.message)
    if update.kind == follow.AUDIT:
        correlation = update.message.correlation_id or update.headers.get("correlation-id", "")
        if not correlation:
            return None  # only what a fault's correlation id ties to an injection
        body["correlationId"] = correlation
    body["kind"] = update.kind
    body["at"] = update.written_ms or int(time.time() * 1000)
    return body


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
