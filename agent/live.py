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

Audit events reach the page when they carry a correlation id, or when they come from a service a
fault on the page targeted (the chaos events say which), from shortly before its injection to a while
after its revert: what target-window and window expectations judge. The page draws each run as a
picture (``svg.timeline``): faults as bars from injection to revert, the audit events as ticks on
one row per service, each verdict as a marker and each expectation's deadline as a dashed line; and
per scenario a trend of its time to recover and pass rate from the run history (``/api/v1/history``).
Runs of a schedule link to the page of that schedule's runs (``/live?schedule=NAME``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from agent import follow
from agent._proto.coordinator.v1 import events_pb2
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
    since = int((time.time() - BACKLOG_SECONDS) * 1000)
    try:
        windows = Windows()
        async with Follower(settings, [topics.chaos_events], purpose="live") as faults:  # the targets first
            await faults.since(since)
            for update in await faults.read_to_end():
                windows.saw(update)
        async with Follower(settings, wanted, purpose="live") as follower:
            await follower.since(since)
            await response.write(b": connected\n\n")
            quiet = time.monotonic()
            while True:
                for update in windows.admit(await follower.poll(max_records=500)):
                    message = _message(update, windows)
                    if message is not None:
                        await response.write(f"data: {json.dumps(message)}\n\n".encode())
                if time.monotonic() - quiet > 15:  # a comment now and then keeps proxies from closing it
                    await response.write(b": keep-alive\n\n")
                    quiet = time.monotonic()
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the page went away
    return response


class Windows:
    """When each service was the target of a fault on the page: its audit events from ``BEFORE``
    seconds before an injection until ``AFTER`` after its revert (or while it is not reverted) go to
    the page; the rest of the audit topic does not."""

    BEFORE, AFTER = 2.0, 60.0
    #: audit events read before the chaos event that opens their window wait this long, at most this many
    HOLD, HELD = 10.0, 5000

    def __init__(self) -> None:
        self.open: dict[str, list[list[float]]] = {}
        self.held: deque[tuple[float, Update]] = deque(maxlen=self.HELD)

    def admit(self, updates: list[Update]) -> list[Update]:
        """What to send of ``updates``, with the audit events held until now whose window a chaos
        event among them opened (an audit event and its fault's chaos event come by different topics)."""
        out: list[Update] = []
        opened = False
        for update in updates:
            self.saw(update)
            opened = opened or update.kind == follow.CHAOS
            if update.kind == follow.AUDIT and not self._tied(update):
                self.held.append((time.monotonic(), update))
                continue
            out.append(update)
        if opened:
            waiting, self.held = list(self.held), deque(maxlen=self.HELD)
            for since, update in waiting:
                if self._tied(update):
                    out.append(update)
                elif time.monotonic() - since < self.HOLD:
                    self.held.append((since, update))
        return out

    def _tied(self, update: Update) -> bool:
        return bool(update.message.correlation_id or update.headers.get("correlation-id")) or self.covers(
            update.message.service_name, (update.written_ms or time.time() * 1000) / 1000)

    def saw(self, update: Update) -> None:
        if update.kind != follow.CHAOS:
            return
        event = update.message
        service = event.service or event.target
        at = (update.written_ms or time.time() * 1000) / 1000
        spans = self.open.setdefault(service, [])
        injected = event.injected_at.ToNanoseconds() / 1e9 if event.HasField("injected_at") else at
        span = next((s for s in spans if abs(s[0] - injected) < 1e-3), None)
        if span is None:
            span = [injected, float("inf")]
            spans.append(span)
            del spans[:-50]
        if event.type in (events_pb2.CHAOS_EVENT_TYPE_REVERTED, events_pb2.CHAOS_EVENT_TYPE_REVERT_FAILED):
            span[1] = at

    def covers(self, service: str, at: float) -> bool:
        return any(start - self.BEFORE <= at <= end + self.AFTER for start, end in self.open.get(service, ()))


def _message(update: Update, windows: Windows | None = None) -> dict[str, Any] | None:
    """The page's message of an update: the event in its JSON encoding, its kind, and when it was
    written (ms: the page orders a run's lines by it, whatever topic or partition each came from and
    in whatever order the backlog is read)."""
    body: dict[str, Any] = json_format.MessageToDict(update.message)
    if update.kind == follow.AUDIT:
        correlation = update.message.correlation_id or update.headers.get("correlation-id", "")
        at = (update.written_ms or time.time() * 1000) / 1000
        if not correlation and not (windows and windows.covers(update.message.service_name, at)):
            return None  # only what a fault's correlation id or its target's window ties to an injection
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
details{margin:.3em 0} summary{cursor:pointer;color:#555}
svg{display:block;margin:.4em 0;font:11px system-ui,sans-serif} svg .label{fill:#333} svg .axis{fill:#888}
svg .grid{stroke:#eee} svg .row{fill:#fafafa} rect.fault{fill:#e8a33d;stroke:#a8661a}
line.audit{stroke:#3b6fb6;stroke-width:2} path.verdict.PASSED,circle.PASSED{fill:#2e8b3a}
path.verdict.FAILED,circle.FAILED,circle.ERROR,circle.TIMED_OUT{fill:#c62828}
path.verdict.INCONCLUSIVE{fill:#d08a00} line.deadline{stroke:#888;stroke-dasharray:4 3}
polyline.ttr{fill:none;stroke-width:1.5} .trend p{margin:.2em 0;color:#555}
</style></head>
<body><h1>Chaos coordinator: live</h1>
<p id="state">connecting&hellip;</p>
<p id="filter" hidden></p>
<div id="runs"></div>
<script>
const runs = new Map(), injections = new Map(), early = new Map(), model = new Map(), loose = [];
const only = new URLSearchParams(location.search).get("schedule");
if (only) {
  const f = document.getElementById("filter"); f.hidden = false;
  f.innerHTML = 'runs of schedule <b></b> only (<a href="/live">all runs</a>)';
  f.querySelector("b").textContent = only;
}
const short = s => (s || "").replace(/^(EXECUTION_STATUS_|VERDICT_STATUS_|CHAOS_EVENT_TYPE_)/, "");
const when = t => (typeof t === "string" ? Date.parse(t) : t);
function run(id) {
  if (!runs.has(id)) {
    const el = document.createElement("div");
    el.className = "run"; el.id = "run-" + id; el.hidden = !!only;
    el.innerHTML = '<div class="head"><span class="name"></span><span class="status"></span>' +
      '<span class="requester"></span><span class="schedule"></span><code class="id"></code>' +
      '<span class="report"></span></div><svg class="timeline" width="960" height="0"></svg>' +
      '<div class="trend"></div><details open><summary>events</summary><ol></ol></details>';
    el.querySelector(".id").textContent = id;
    document.getElementById("runs").prepend(el);
    runs.set(id, el);
    model.set(id, {start: Infinity, end: 0, faults: new Map(), audits: [], verdicts: new Map(), scenario: "",
                   placed: new Set(), done: 0});
  }
  return runs.get(id);
}
function seen(id, at) {
  const r = model.get(id); r.start = Math.min(r.start, at); r.end = Math.max(r.end, at); return r;
}
// a run's lines in the order they happened (by the time each record was written), not in the order
// the topics' partitions are read: the backlog of a page opened late comes topic by topic
function line(el, cls, text, at) {
  const li = document.createElement("li"); li.className = cls; li.dataset.at = at;
  const time_ = document.createElement("time"); time_.textContent = new Date(at).toISOString().slice(11, 23);
  li.append(time_, document.createTextNode(text));
  const ol = el.querySelector("ol");
  const after = Array.from(ol.children).find(x => Number(x.dataset.at) > at);
  ol.insertBefore(li, after || null); return li;
}
// "0.727838754s" -> "0.728s"
const seconds = d => d ? Number(String(d).replace(/s$/, "")).toFixed(3) + "s" : "";
function head(el, m) {
  if (m.scenarioName) {
    el.querySelector(".name").textContent = m.scenarioName; model.get(m.executionId).scenario = m.scenarioName;
  }
  if (m.requester) el.querySelector(".requester").textContent = "by " + m.requester;
  if (m.status) {
    const s = el.querySelector(".status");
    s.textContent = short(m.status); s.className = "status " + short(m.status);
    model.get(m.executionId).status = short(m.status);
  }
}
// -- the picture of a run: faults as bars, audit events as ticks per service, verdicts and deadlines
const NS = "http://www.w3.org/2000/svg";
function svg(parent, tag, attrs, title) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (title) { const t = document.createElementNS(NS, "title"); t.textContent = title; e.append(t); }
  parent.append(e); return e;
}
function draw(id) {
  const r = model.get(id), pic = runs.get(id).querySelector("svg.timeline");
  if (!r.faults.size && !r.verdicts.size) return;
  pic.replaceChildren();
  const services = [...new Set([...[...r.faults.values()].map(f => f.service), ...r.audits.map(a => a.service)])];
  const rows = [["faults", "fault"], ...services.map(s => [s, "service"]),
                ...[...r.verdicts.keys()].map(v => [v, "verdict"])];
  const longest = Math.max(...rows.map(([name]) => name.length + 2));
  const W = 960, L = Math.min(340, 24 + 6.6 * longest), RM = 16, ROW = 20, TOP = 6, H = TOP + ROW * rows.length + 22;
  const deadlines = [...r.verdicts.values()].map(v => v.deadline || 0);
  const t0 = r.start, t1 = Math.max(r.status && r.status !== "RUNNING" ? r.end : Date.now(), t0 + 1000, ...deadlines);
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - RM);
  pic.setAttribute("height", H); pic.setAttribute("viewBox", `0 0 ${W} ${H}`);
  rows.forEach(([name, kind], i) => {
    const y = TOP + i * ROW;
    svg(pic, "rect", {x: L, y, width: W - L - RM, height: ROW - 2, class: "row"});
    svg(pic, "text", {x: L - 6, y: y + 13, "text-anchor": "end", class: "label " + kind}).textContent =
      kind === "service" ? name : kind === "verdict" ? "\u25c6 " + name : "faults";
  });
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find(s => (t1 - t0) / 1000 / s <= 10) || 1200;
  for (let s = 0; s * 1000 <= t1 - t0; s += step) {
    const gx = x(t0 + s * 1000);
    svg(pic, "line", {x1: gx, x2: gx, y1: TOP, y2: TOP + ROW * rows.length, class: "grid"});
    svg(pic, "text", {x: gx, y: H - 6, "text-anchor": "middle", class: "axis"}).textContent = "+" + s + "s";
  }
  const rowOf = name => TOP + rows.findIndex(([n]) => n === name) * ROW;
  for (const f of r.faults.values()) {
    const end = f.to || (r.status && r.status !== "RUNNING" ? r.end : Date.now());
    svg(pic, "rect", {x: x(f.from), y: TOP + 2, width: Math.max(4, x(end) - x(f.from)), height: ROW - 6, rx: 3,
                      class: "fault", "data-service": f.service},
        `${f.fault} on ${f.target} (${f.cid}): ${new Date(f.from).toISOString().slice(11, 23)}` +
        (f.to ? ` .. ${new Date(f.to).toISOString().slice(11, 23)}` : " .. not reverted yet"));
  }
  for (const a of r.audits) {
    const y = rowOf(a.service), ax = x(a.at);
    svg(pic, "line", {x1: ax, x2: ax, y1: y + 3, y2: y + ROW - 5, class: "audit", "data-service": a.service,
                      "data-type": a.type}, `${a.service}: ${a.type} at ${new Date(a.at).toISOString().slice(11, 23)}`);
  }
  for (const [name, v] of r.verdicts) {
    const y = rowOf(name) + ROW / 2 - 1;
    if (v.deadline) svg(pic, "line", {x1: x(v.deadline), x2: x(v.deadline), y1: y - 8, y2: y + 8, class: "deadline"},
                        `deadline of ${name}: ${new Date(v.deadline).toISOString().slice(11, 23)}`);
    const vx = x(v.at);
    svg(pic, "path", {d: `M${vx} ${y - 6} L${vx + 6} ${y} L${vx} ${y + 6} L${vx - 6} ${y} Z`,
                      class: "verdict " + v.status, "data-name": name}, `${name}: ${v.status} - ${v.reason}`);
  }
}
// an audit event without a correlation id belongs to each run with a fault on its service around its
// time: from the injection until the run's result (or 5 s after the revert, when later). Such events
// are kept a while, for a fault whose chaos event comes after them (another topic).
function fits(r, f, m) {
  const until = r.done ? Math.max(r.done, (f.to || 0) + 5000) : Infinity;
  return f.service === m.serviceName && m.at >= f.from - 500 && m.at <= until;
}
function place(id, m) {
  const r = model.get(id), key = m.id || `${m.serviceName}|${m.eventType}|${m.at}`;
  if (r.placed.has(key)) return;
  r.placed.add(key); r.audits.push({service: m.serviceName, type: m.eventType, at: m.at}); seen(id, m.at);
  line(runs.get(id), "audit", "audit " + m.serviceName + ": " + m.eventType, m.at); draw(id);
}
function attach(m) {
  for (const [id, r] of model) if ([...r.faults.values()].some(f => fits(r, f, m))) place(id, m);
  loose.push(m);
  while (loose.length > 3000 || (loose.length && loose[0].at < m.at - 120000)) loose.shift();
}
async function trend(id) {
  const r = model.get(id); if (!r.scenario) return;
  const answer = await fetch("/api/v1/history/" + encodeURIComponent(r.scenario) + "?last=30");
  if (!answer.ok) return;
  const h = await answer.json(), runs_ = h.recent.slice().reverse(), box = runs.get(id).querySelector(".trend");
  const names = Object.keys(h.expectations).filter(n => h.expectations[n].ttr_p50 !== null).slice(0, 4);
  box.replaceChildren();
  const p = document.createElement("p");
  p.textContent = `${r.scenario}: ${h.runs} run(s), pass rate ${(100 * h.pass_rate).toFixed(0)}%` +
    (h.score !== null ? `, resilience score ${h.score.toFixed(2)}` : "") +
    (names.length ? "; time to recover " +
      names.map(n => `${n} p50 ${h.expectations[n].ttr_p50.toFixed(3)}s`).join(", ") : "");
  box.append(p);
  if (!names.length || runs_.length < 2) return;
  const W = 480, H = 90, L = 40, pic = document.createElementNS(NS, "svg");
  pic.setAttribute("class", "trend"); pic.setAttribute("width", W); pic.setAttribute("height", H);
  box.append(pic);
  const all = runs_.flatMap(u => names.map(n => (u.expectations[n] || {}).ttr)).filter(v => v != null);
  const top = Math.max(...all) * 1.1 || 1;
  const x = i => L + i * (W - L - 10) / (runs_.length - 1), y = v => H - 16 - v / top * (H - 24);
  svg(pic, "text", {x: L - 4, y: 12, "text-anchor": "end", class: "axis"}).textContent = top.toFixed(1) + "s";
  svg(pic, "text", {x: L - 4, y: H - 16, "text-anchor": "end", class: "axis"}).textContent = "0s";
  const colours = ["#3b6fb6", "#e8a33d", "#7b4fa0", "#2e8b3a"];
  names.forEach((n, k) => {
    const points = runs_.map((u, i) => [i, (u.expectations[n] || {}).ttr]).filter(([, v]) => v != null);
    svg(pic, "polyline", {points: points.map(([i, v]) => `${x(i)},${y(v)}`).join(" "), class: "ttr",
                          stroke: colours[k], "data-name": n}, `${n}: time to recover, oldest run first`);
  });
  runs_.forEach((u, i) => svg(pic, "circle", {cx: x(i), cy: H - 6, r: 3, class: u.status},
                              `${u.execution_id}: ${u.status}`));
}
const on = {
  progress(m) {
    const el = run(m.executionId); head(el, m); seen(m.executionId, m.at);
    if (m.phase !== "expectations") line(el, "step", "[" + m.phase + "] " + m.message, m.at);
  },
  result(m) {
    const el = run(m.executionId); head(el, m); seen(m.executionId, m.at).done = m.at;
    line(el, "result " + short(m.status), "result: " + short(m.status) + (m.reason ? " - " + m.reason : ""), m.at);
    const link = el.querySelector(".report");
    link.innerHTML = '<a href="/api/v1/executions/' + encodeURIComponent(m.executionId) + '/report.html">report</a>';
    const schedule = (m.labels || {}).schedule;
    if (schedule) {
      const a = document.createElement("a"); a.href = "/live?schedule=" + encodeURIComponent(schedule);
      a.textContent = "schedule " + schedule; el.querySelector(".schedule").replaceChildren(a);
    }
    el.hidden = !!only && schedule !== only;
    draw(m.executionId); trend(m.executionId);
  },
  chaos(m) {
    const el = run(m.executionId), r = seen(m.executionId, m.at);
    const f = r.faults.get(m.correlationId) || {cid: m.correlationId, fault: m.fault, target: m.target,
                                                 service: m.service || m.target, from: when(m.injectedAt) || m.at};
    r.faults.set(m.correlationId, f);
    if (short(m.type) === "INJECTED") {
      injections.set(m.correlationId, el);
      (early.get(m.correlationId) || []).forEach(on.audit); early.delete(m.correlationId);
      line(el, "injection", "injected " + m.fault + " on " + m.target + " (correlation id " + m.correlationId + ")",
           m.at);
      loose.filter(a => fits(r, f, a)).forEach(a => place(m.executionId, a));
    } else {
      f.to = when(m.revertedAt) || m.at;
      line(el, "injection", short(m.type).toLowerCase() + " " + m.fault + " on " + m.target, m.at);
    }
    draw(m.executionId);
  },
  verdict(m) {
    const el = run(m.executionId), r = seen(m.executionId, m.at);
    const ttr = m.timeToRecover ? " (time to recover " + seconds(m.timeToRecover) + ")" : "";
    line(el, "verdict " + short(m.status), "verdict " + m.expectationName + ": " + short(m.status) + ttr + " - " +
         m.reason, m.at);
    // "@reaction" and the like are the worker's notes about an injection, not a scenario's expectations
    if (!m.lateEvidenceAt && !m.expectationName.startsWith("@")) {
      r.verdicts.set(m.expectationName, {status: short(m.status), at: m.at, deadline: when(m.deadline),
                                         reason: m.reason});
    }
    draw(m.executionId);
  },
  audit(m) {
    if (!m.correlationId) { attach(m); return; }
    const el = injections.get(m.correlationId);
    if (!el) {  // read before its injection (another topic): shown once the injection is
      if (!early.has(m.correlationId)) early.set(m.correlationId, []);
      if (early.size > 1000) early.delete(early.keys().next().value);  // ids of runs not on the page
      early.get(m.correlationId).push(m); return;
    }
    const id = el.id.slice(4), r = seen(id, m.at);
    r.audits.push({service: m.serviceName || m.service_name, type: m.eventType || m.event_type, at: m.at});
    line(el, "audit", "audit " + (m.serviceName || m.service_name) + ": " + (m.eventType || m.event_type),
                 m.at);
    draw(id);
  },
};
setInterval(() => { for (const [id, r] of model) if (r.status === "RUNNING") draw(id); }, 1000);
const source = new EventSource("/api/v1/live");
let opened = false;
source.onopen = () => {  // a reconnection reads the backlog again: start from a clean page
  if (opened) { runs.clear(); injections.clear(); early.clear(); model.clear(); loose.length = 0;
                document.getElementById("runs").innerHTML = ""; }
  opened = true; document.getElementById("state").textContent = "live";
};
source.onerror = () => { document.getElementById("state").textContent = "reconnecting\u2026"; };
source.onmessage = e => { const m = JSON.parse(e.data); (on[m.kind] || (() => {}))(m); };
</script></body></html>
"""
