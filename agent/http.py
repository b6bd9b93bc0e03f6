"""The agent's HTTP surface, on the ecosystem's paths.

- ``GET /api/v1/health``: liveness; 200 while the process serves.
- ``GET /api/v1/ready``: readiness; really asks Kafka for metadata and Redis for PING, and adds
  the service's own checks (the agent's: its parts, faults it cannot revert); 200 when all pass,
  503 naming each failing check otherwise.
- ``GET /metrics``: Prometheus text format.
- ``GET /api/v1/history``: every scenario with a run history, with its figures (``agent.history``);
  ``GET /api/v1/history/{scenario}?last=N``: one scenario's figures and its last N runs (default 50).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent import __version__, health, history, metrics
from agent.live import Report
from agent.live import add_routes as add_live_routes
from agent.settings import Settings

_STARTED = time.time()
SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings", Settings)
ExtraChecks = Callable[[], list[health.CheckResult]]
EXTRA_KEY: web.AppKey[ExtraChecks] = web.AppKey("extra_checks")
HISTORY_KEY: web.AppKey[history.History] = web.AppKey("history")


async def _health(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    return web.json_response({
        "status": "ok",
        "service": "coordinator",
        "instance": settings.instance_id,
        "version": __version__,
        "uptime_s": round(time.time() - _STARTED, 1),
    })


async def _ready(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    results = await health.readiness(settings) + request.app[EXTRA_KEY]()
    failing = [r.name for r in results if not r.ok]
    for r in results:
        metrics.READY_CHECKS.labels(check=r.name, outcome="ok" if r.ok else "failed").inc()
        metrics.READY_CHECK_SECONDS.labels(check=r.name).observe(r.latency_ms / 1000)
    body = {
        "status": "ready" if not failing else "not_ready",
        "failing": failing,
        "checks": {r.name: r.as_dict() for r in results},
    }
    if failing:
        body["message"] = "not ready: " + "; ".join(f"{r.name}: {r.detail}" for r in results if not r.ok)
    return web.json_response(body, status=503 if failing else 200)


async def _history(request: web.Request) -> web.Response:
    store = request.app[HISTORY_KEY]
    settings = request.app[SETTINGS_KEY]
    names = await store.scenarios()
    return web.json_response({"scenarios": [await history.overview(store, name, settings.history_score_runs,
                                                                   with_runs=False) for name in names]})


async def _scenario_history(request: web.Request) -> web.Response:
    try:
        last = int(request.query.get("last", "50"))
    except ValueError:
        last = 0
    if not 1 <= last <= 100_000:
        return web.json_response({"error": f"last must be a whole number 1..100000, got {request.query['last']!r}"},
                                 status=400)
    found = await history.overview(request.app[HISTORY_KEY], request.match_info["scenario"], last)
    if not found["recent"]:
        return web.json_response({"error": f"no runs of '{request.match_info['scenario']}' in the history"},
                                 status=404)
    return web.json_response(found)


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})


@web.middleware
async def _count(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.HTTP_REQUESTS.labels(route=route, status=str(exc.status)).inc()
        raise
    metrics.HTTP_REQUESTS.labels(route=route, status=str(response.status)).inc()
    return response


def build_app(settings: Settings, extra_checks: ExtraChecks | None = None, report: Report | None = None,
              live: bool = False, runs: history.History | None = None) -> web.Application:
    app = web.Application(middlewares=[_count])
    app[SETTINGS_KEY] = settings
    app[EXTRA_KEY] = extra_checks or list
    app.router.add_get("/api/v1/health", _health)
    app.router.add_get("/api/v1/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    if runs is not None:
        app[HISTORY_KEY] = runs
        app.router.add_get("/api/v1/history", _history)
        app.router.add_get("/api/v1/history/{scenario}", _scenario_history)
    if live:
        add_live_routes(app, settings, report)
    return app


class HttpServer:
    """The HTTP surface as a start/stop part of a service."""

    def __init__(self, settings: Settings, extra_checks: ExtraChecks | None = None, report: Report | None = None,
                 runs: history.History | None = None) -> None:
        self._settings = settings
        self._runs = runs
        self._extra_checks = extra_checks
        self._report = report
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(build_app(self._settings, self._extra_checks, self._report, live=True,
                                               runs=self._runs),
                                     access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.http_host, self._settings.http_port)
        await site.start()
        server = site._server  # the bound port when 0 was asked for
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._settings.http_port

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
