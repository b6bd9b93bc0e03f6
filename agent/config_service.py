"""Runtime settings from the ecosystem's configuration service, with local settings as the fallback.

The service answers ``GET {base}/api/v1/configuration/{key}?environment={env}`` with
``{"key", "value", "type": "string"|"number"|"boolean"|"json", "environment", "last_updated"}``.
Values are cached for ``COORDINATOR_CONFIG_SERVICE_TTL`` seconds. When the service is not
configured, is down, answers 404 or answers nonsense, the local setting stands (a warning names
the key and why, once per change of reason).

Keys the agent reads (the setting of the same name is the fallback; ``agent.policy`` applies them):

- ``max_concurrent_executions`` (number): how many executions run at once on this agent.
- ``allowed_targets`` (json list of glob patterns, or a comma-separated string): the allow-list.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from agent.errors import ConfigValueError
from agent.logs import get_logger

log = get_logger("agent.config_service")


@dataclass(frozen=True)
class ConfigValue:
    key: str
    value: Any
    type: str
    environment: str
    last_updated: str


def parse_answer(key: str, body: Any) -> ConfigValue:
    if not isinstance(body, dict) or "value" not in body:
        raise ConfigValueError(f"'{key}': the answer has no value")
    kind = str(body.get("type", "string"))
    raw = body["value"]
    if kind not in ("number", "boolean", "json", "string"):
        raise ConfigValueError(f"'{key}': unknown type '{kind}'")
    try:
        if kind == "number":
            value: Any = float(raw) if not isinstance(raw, int | float) or isinstance(raw, bool) else raw
        elif kind == "boolean":
            value = raw if isinstance(raw, bool) else {"true": True, "false": False}[str(raw).strip().lower()]
        elif kind == "json":
            value = json.loads(raw) if isinstance(raw, str) else raw
        else:
            value = str(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigValueError(f"'{key}': value {raw!r} is not a {kind}") from exc
    return ConfigValue(key=str(body.get("key", key)), value=value, type=kind,
                       environment=str(body.get("environment", "")), last_updated=str(body.get("last_updated", "")))


class ConfigService:
    def __init__(self, base_url: str | None, environment: str = "", ttl: float = 30.0, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.environment = environment
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self._cache: dict[str, tuple[float, ConfigValue | None]] = {}
        self._warned: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None

    async def get(self, key: str) -> ConfigValue | None:
        """The service's value for ``key``, or None (not configured, absent, down, unusable)."""
        if not self.base_url:
            return None
        cached = self._cache.get(key)
        if cached is not None and self.clock() - cached[0] < self.ttl:
            return cached[1]
        value: ConfigValue | None = None
        try:
            value = await self._fetch(key)
            self._warned.pop(key, None)
        except (ConfigValueError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.warn(key, str(exc) or type(exc).__name__)
        self._cache[key] = (self.clock(), value)
        return value

    async def _fetch(self, key: str) -> ConfigValue | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        url = f"{self.base_url}/api/v1/configuration/{quote(key, safe='')}"
        params = {"environment": self.environment} if self.environment else None
        async with self._session.get(url, params=params) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise ConfigValueError(f"'{key}': the service answered HTTP {response.status}")
            try:
                body = await response.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError) as exc:
                raise ConfigValueError(f"'{key}': the answer is not JSON") from exc
        return parse_answer(key, body)

    def warn(self, key: str, why: str) -> None:
        if self._warned.get(key) != why:
            self._warned[key] = why
            log.warning("configuration service unusable; local setting kept", key=key, reason=why)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
