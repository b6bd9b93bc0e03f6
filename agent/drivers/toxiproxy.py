"""Network faults as Toxiproxy toxics, over its HTTP API.

Each fault adds one toxic named ``coordinator-<correlation id>`` to the target's proxy, and its
revert deletes that toxic (a toxic already gone is fine). ``down`` disables the proxy and its revert
enables it. A proxy named in the selector with ``listen`` and ``upstream`` is created when missing.
Names are checked by the scenario models and each one is quoted as a single URL path segment
(``seg``), so no name can reach another endpoint of Toxiproxy's API.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from agent.drivers.base import FaultDriver, FaultRequest
from agent.errors import ActionError, RevertError

#: our fault name -> Toxiproxy's toxic type
TOXIC_TYPES = {
    "latency": "latency", "bandwidth": "bandwidth", "slow-close": "slow_close", "timeout": "timeout",
    "reset-peer": "reset_peer", "slicer": "slicer", "limit-data": "limit_data",
}


def toxic_attributes(fault: str, parameters: dict[str, Any]) -> dict[str, int]:
    """Toxiproxy's attribute names and units (ms, except slicer's delay in microseconds)."""
    ms = lambda seconds: int(round(float(seconds) * 1000))  # noqa: E731
    if fault == "latency":
        return {"latency": ms(parameters["latency"]), "jitter": ms(parameters.get("jitter", 0))}
    if fault == "bandwidth":
        return {"rate": int(parameters["rate"])}
    if fault == "slow-close":
        return {"delay": ms(parameters["delay"])}
    if fault in {"timeout", "reset-peer"}:
        return {"timeout": ms(parameters.get("timeout", 0))}
    if fault == "slicer":
        return {"average_size": int(parameters["average_size"]),
                "size_variation": int(parameters.get("size_variation", 0)),
                "delay": int(round(float(parameters.get("delay", 0)) * 1_000_000))}
    if fault == "limit-data":
        return {"bytes": int(parameters["bytes"])}
    raise ActionError(f"the toxiproxy driver cannot apply fault '{fault}'")


class ToxiproxyDriver(FaultDriver):
    name = "toxiproxy"

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._session: aiohttp.ClientSession | None = None
        #: proxies seen to exist (a proxy deleted behind our back makes the toxic call fail: 404, retried)
        self._known: set[str] = set()

    @property
    def base(self) -> str:
        return self.settings.toxiproxy_url.rstrip("/")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def recipe(self, request: FaultRequest) -> dict[str, Any]:
        proxy = request.selector["proxy"]
        if request.fault == "down":
            return {"action": "enable", "proxy": proxy, "url": self.base}
        return {"action": "remove-toxic", "proxy": proxy, "toxic": _toxic_name(request.correlation_id),
                "url": self.base}

    async def inject(self, request: FaultRequest) -> dict[str, Any]:
        proxy = request.selector["proxy"]
        try:
            await self._ensure_proxy(request.selector)
            if request.fault == "down":
                await self._send("POST", f"/proxies/{seg(proxy)}", {"enabled": False})
                return {"proxy": proxy, "enabled": False}
            params = request.parameters
            toxic = {
                "name": _toxic_name(request.correlation_id),
                "type": TOXIC_TYPES[request.fault] if request.fault in TOXIC_TYPES else request.fault,
                "stream": params.get("stream", "downstream"),
                "toxicity": float(params.get("toxicity", 1.0)),
                "attributes": toxic_attributes(request.fault, params),
            }
            try:
                await self._send("POST", f"/proxies/{seg(proxy)}/toxics", toxic)
            except ActionError:
                self._known.discard(proxy)  # look again next time
                raise
        except aiohttp.ClientError as exc:
            raise ActionError(f"toxiproxy unreachable at {self.base}: {exc}", retryable=True) from exc
        return {"proxy": proxy, "toxic": toxic["name"], "type": toxic["type"], "attributes": toxic["attributes"]}

    async def revert(self, recipe: dict[str, Any]) -> None:
        base = recipe.get("url", self.base)
        try:
            if recipe["action"] == "enable":
                await self._send("POST", f"/proxies/{seg(recipe['proxy'])}", {"enabled": True}, base=base)
            else:
                await self._send("DELETE", f"/proxies/{seg(recipe['proxy'])}/toxics/{seg(recipe['toxic'])}", None,
                                 base=base, missing_ok=True)
        except aiohttp.ClientError as exc:
            raise RevertError(f"toxiproxy unreachable at {base}: {exc}", retryable=True) from exc

    async def rollback(self, action: str, selector: dict[str, Any]) -> None:
        proxy = selector["proxy"]
        if action == "remove-toxics":
            for toxic in await self.toxics(proxy) or []:
                await self._send("DELETE", f"/proxies/{seg(proxy)}/toxics/{seg(toxic['name'])}", None, missing_ok=True)
        elif action == "enable-proxy":
            await self._send("POST", f"/proxies/{seg(proxy)}", {"enabled": True})
        else:
            await super().rollback(action, selector)

    async def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return await self._send("GET", f"/proxies/{seg(proxy)}/toxics", None)  # type: ignore[no-any-return]

    async def _ensure_proxy(self, selector: dict[str, Any]) -> None:
        proxy = selector["proxy"]
        if proxy in self._known:
            return
        status, _ = await self._raw("GET", f"/proxies/{seg(proxy)}", None)
        if status == 200:
            self._known.add(proxy)
            return
        if not (selector.get("listen") and selector.get("upstream")):
            raise ActionError(f"toxiproxy has no proxy '{proxy}' (give listen and upstream to create it)")
        await self._send("POST", "/proxies", {"name": proxy, "listen": selector["listen"],
                                              "upstream": selector["upstream"], "enabled": True})
        self._known.add(proxy)

    async def _send(self, method: str, path: str, body: Any, *, base: str | None = None,
                    missing_ok: bool = False) -> Any:
        status, data = await self._raw(method, path, body, base=base)
        if status == 404 and missing_ok:
            return None
        if status >= 300:
            raise ActionError(f"toxiproxy answered {status} to {method} {path}: {data}",
                              retryable=status >= 500)
        return data

    async def _raw(self, method: str, path: str, body: Any, *, base: str | None = None) -> tuple[int, Any]:
        async with self._http().request(method, f"{base or self.base}{path}", json=body) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


def seg(name: object) -> str:
    """``name`` as one URL path segment: every '/', '.', '?', '#', '%' is escaped, and '.' or '..'
    alone (which HTTP clients fold) is refused."""
    text = str(name)
    if text in {"", ".", ".."}:
        raise ActionError(f"'{text}' is not a usable toxiproxy name")
    return quote(text, safe="-_~")


def _toxic_name(correlation_id: str) -> str:
    return f"coordinator-{correlation_id}"
