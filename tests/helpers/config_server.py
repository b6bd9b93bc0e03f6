"""A small real configuration service (the ecosystem's ``/api/v1/configuration/{key}`` API) for tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.devstack.procs import free_port


class ConfigServer:
    """``GET /api/v1/configuration/{key}`` answering from ``values``; counts requests per key."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.hits: dict[str, int] = {}
        self.environments: list[str] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self.hits[key] = self.hits.get(key, 0) + 1
        self.environments.append(request.query.get("environment", ""))
        if key not in self.values:
            return web.json_response({"error": "not found"}, status=404)
        answer = self.values[key]
        if isinstance(answer, int) and not isinstance(answer, bool) and answer >= 500:
            return web.Response(status=answer, text="boom")
        return web.json_response(answer)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/configuration/{key}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
