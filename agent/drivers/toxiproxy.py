"""Network faults as Toxiproxy toxics, over its HTTP API.

Each fault adds one toxic named ``coordinator-<correlation id>`` to the target's proxy, and its
revert deletes that toxic (a toxic already gone is fine). ``down`` disables the proxy and its revert
enables it. A proxy named in the selector with ``listen`` and ``upstream`` is created when missing.
Names are checked by the scenario models and each one is quoted as a single URL path segment
(``seg``), so no name can reach another endpoint of Toxiproxy's API.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field

from agent.drivers.base import DriverSpec, FaultDriver, FaultKind, FaultRequest
from agent.errors import ActionError, RevertError
from agent.fields import Duration, NoParameters, SelectorName, Strict
from agent.settings import Settings


class ToxiproxySelector(Strict):
    #: the proxy name; created from listen/upstream when given and missing
    proxy: SelectorName
    #: host:port, sent in a JSON body (never in a URL); Toxiproxy checks them
    listen: str | None = None
    upstream: str | None = None


# -- parameters, fields as Toxiproxy names them -------------------------------------------------------
class ToxicParameters(Strict):
    stream: Literal["upstream", "downstream"] = "downstream"
    toxicity: float = Field(default=1.0, ge=0.0, le=1.0)


class LatencyParameters(ToxicParameters):
    latency: Duration
    jitter: Duration = 0.0


class BandwidthParameters(ToxicParameters):
    #: KB/s
    rate: int = Field(ge=0)


class SlowCloseParameters(ToxicParameters):
    delay: Duration


class TimeoutParameters(ToxicParameters):
    #: 0 means the connection is never closed
    timeout: Duration = 0.0


class ResetPeerParameters(ToxicParameters):
    timeout: Duration = 0.0


class SlicerParameters(ToxicParameters):
    average_size: int = Field(ge=1)
    size_variation: int = Field(default=0, ge=0)
    delay: Duration = 0.0


class LimitDataParameters(ToxicParameters):
    bytes: int = Field(ge=0)


@dataclass(frozen=True)
class ToxiproxySettings:
    #: Toxiproxy's HTTP API
    url: str

#: our fault name -> Toxiproxy's toxic type
TOXIC_TYPES = {
    "latency": "latency", "bandwidth": "bandwidth", "slow-close": "slow_close", "timeout": "timeout",
    "reset-peer": "reset_peer", "slicer": "slicer", "limit-data": "limit_data",
}


def toxic_attributes(fault: str, parameters: dict[str, Any]) -> dict[str, int]:
    """Toxiproxy's attribute names and units (ms, except slicer's delay in microseconds)."""
    def ms(seconds: Any) -> int:
        return int(round(float(seconds) * 1000))

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


#: connections kept to the Toxiproxy API
HTTP_CONNECTIONS = 32


class ToxiproxyDriver(FaultDriver):
    name = "toxiproxy"
    settings: ToxiproxySettings

    def __init__(self, settings: ToxiproxySettings) -> None:
        super().__init__(settings)
        self._session: aiohttp.ClientSession | None = None
        #: proxies seen to exist (a proxy deleted behind our back makes the toxic call fail: 404, retried)
        self._known: set[str] = set()
        self._making: dict[str, asyncio.Lock] = {}

    @property
    def base(self) -> str:
        return self.settings.url.rstrip("/")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # kept-alive connections, reused for a minute: a burst of faults queues for them
            # instead of opening one each
            connector = aiohttp.TCPConnector(limit=HTTP_CONNECTIONS, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), connector=connector)
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
        # one look (and creation) per proxy at a time: simultaneous first faults on a proxy that does
        # not exist yet would each try to create it, and all but one get 409
        async with self._making.setdefault(proxy, asyncio.Lock()):
            if proxy in self._known:
                return
            status, _ = await self._raw("GET", f"/proxies/{seg(proxy)}", None)
            if status != 200:
                if not (selector.get("listen") and selector.get("upstream")):
                    raise ActionError(f"toxiproxy has no proxy '{proxy}' (give listen and upstream to create it)")
                status, data = await self._raw("POST", "/proxies", {
                    "name": proxy, "listen": selector["listen"], "upstream": selector["upstream"], "enabled": True})
                if status >= 300 and status != 409:  # 409: made by someone else meanwhile, as asked
                    raise ActionError(f"toxiproxy answered {status} to POST /proxies: {data}", retryable=status >= 500)
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


def _configure(settings: Settings) -> ToxiproxySettings:
    return ToxiproxySettings(url=settings.toxiproxy_url)


SPEC = DriverSpec(
    name="toxiproxy", selector=ToxiproxySelector, factory=ToxiproxyDriver, configure=_configure,
    rollbacks=("remove-toxics", "enable-proxy"), touches=lambda selector: [str(selector.get("proxy", ""))],
    summary="network faults on TCP links through Toxiproxy",
    faults=(
        FaultKind("latency", LatencyParameters, True, summary="add latency (and jitter)"),
        FaultKind("bandwidth", BandwidthParameters, True, summary="limit to rate KB/s"),
        FaultKind("slow-close", SlowCloseParameters, True, summary="delay the close of connections"),
        FaultKind("timeout", TimeoutParameters, True, summary="stop all data, close after timeout"),
        FaultKind("reset-peer", ResetPeerParameters, True, summary="reset connections (TCP RST)"),
        FaultKind("slicer", SlicerParameters, True, summary="slice data into small packets"),
        FaultKind("limit-data", LimitDataParameters, True, summary="close after a number of bytes"),
        FaultKind("down", NoParameters, True, summary="disable the proxy: connections refused"),
    ),
)
