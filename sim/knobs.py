"""Knobs that make a sim service misbehave, so tests can tell recovery from non-recovery.

Each knob is read, in rising priority, from the environment (``SIM_START_DELAY=5``), from the
command line (``--start-delay 5``) and from the knobs file named by ``SIM_KNOBS_FILE`` (JSON: service
name -> knobs, ``{"risk-monitor": {"never_ready": true}}``). The file is read when a process
starts, so writing it changes what the *next* start of a service does: a restarted risk monitor
that never becomes ready again, while the one running now stays healthy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Knobs:
    #: seconds between start and ready
    start_delay: float = 0.0
    #: never report ready (health NOT_SERVING, /ready 503, registry status "starting")
    never_ready: bool = False
    #: exit with status 3 this many seconds after start; under supervisord's autorestart: a crash loop
    crash_after: float | None = None
    #: fraction (0..1) of audit events silently not sent
    audit_drop: float = 0.0
    #: fraction (0..1) of audit events sent twice
    audit_duplicate: float = 0.0
    #: stop doing the work (orders, checks, fills, reports) while staying healthy and ready
    stall: bool = False
    #: audit event types this process sends once more as it stops (SIGTERM): the "last words" of an
    #: old incarnation, e.g. "risk_report" (comma-separated)
    last_words: str = ""
    #: audit events leave out the emitting instance (pid): the agent cannot tell incarnations apart
    no_instance: bool = False
    #: fraction (0..1) of API calls (risk checks, executions) answered with INTERNAL, counted as
    #: errors in /metrics (``sim_requests_total{outcome="error"}``)
    error_rate: float = 0.0
    #: a latent bug only two faults together reveal (trading engine): an order whose call to the
    #: exchange fails while risk checks have been failing too (or the other way round) within
    #: ``BOTH_DOWN_WINDOW`` seconds is forgotten: no fill, no order_lost from the engine; only the
    #: load generator notices (its own order_lost). Either fault alone is ridden out by retrying.
    forget_when_both_down: bool = False

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def load(cls, service: str, flags: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> Knobs:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name in cls.names():
            raw = env.get(f"SIM_{name.upper()}")
            if raw not in (None, ""):
                values[name] = raw
        values.update({k: v for k, v in (flags or {}).items() if v is not None})
        path = env.get("SIM_KNOBS_FILE")
        if path and Path(path).is_file():
            try:
                from_file = json.loads(Path(path).read_text() or "{}")
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not JSON: {exc}") from exc
            section = from_file.get(service, {}) if isinstance(from_file, dict) else {}
            if not isinstance(section, dict):
                raise ValueError(f"{path}: '{service}' must be an object of knobs")
            values.update(section)
        return cls.parse(values, origin=path or "environment/flags")

    @classmethod
    def parse(cls, values: Mapping[str, Any], origin: str = "knobs") -> Knobs:
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(f"{origin}: unknown knob(s) {', '.join(unknown)}; known: {', '.join(cls.names())}")
        out: dict[str, Any] = {}
        for name, value in values.items():
            try:
                out[name] = _convert(name, value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{origin}: knob {name}={value!r}: {exc}") from exc
        for name in ("audit_drop", "audit_duplicate", "error_rate"):
            if not 0.0 <= out.get(name, 0.0) <= 1.0:
                raise ValueError(f"{origin}: knob {name} must be between 0 and 1")
        return cls(**out)

    def describe(self) -> str:
        changed = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}
        return ", ".join(f"{k}={v}" for k, v in changed.items()) or "none"


def _convert(name: str, value: Any) -> Any:
    if name == "last_words":
        return ",".join(p.strip() for p in str(value).split(",") if p.strip())
    if name in ("never_ready", "stall", "no_instance", "forget_when_both_down"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("expected true or false")
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number
