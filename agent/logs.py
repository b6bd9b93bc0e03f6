"""Structured logging: JSON lines in production, readable lines on a terminal.

``configure_logging("auto")`` picks console output when stderr is a terminal and JSON otherwise.
Values under secret-looking keys, and passwords inside URLs, are masked before anything is written.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|authorization|api[_-]?key)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
MASK = "***"


def redact(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)
    if isinstance(value, dict):
        return {k: MASK if _SECRET_KEYS.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


def _redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    redacted: dict[str, Any] = redact(event_dict)
    return redacted


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    numeric = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    renderer: Any
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # sys.stderr as it is when a line is written, not when logging was configured (a test's
        # captured stream, closed since, would otherwise be written to)
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # libraries log through the standard module: keep them quiet and on stderr
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())


class RepeatFilter(logging.Filter):
    """Lets one line of each kind through per ``window`` seconds from chatty client libraries.

    While a broker or Redis is down, aiokafka logs every failed connection and fetch: hundreds of
    lines a minute. A line's kind is its logger and its message template (before its arguments);
    the next line of a kind let through says how many like it were held back. Counted in
    ``coordinator_log_lines_suppressed_total``.
    """

    LIBRARIES = ("aiokafka", "kafka", "redis")

    def __init__(self, window: float = 30.0) -> None:
        super().__init__()
        self.window = window
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.LIBRARIES):
            return True
        kind = (record.name, str(record.msg))
        now = record.created
        if now - self._last.get(kind, float("-inf")) < self.window:
            self._held[kind] = self._held.get(kind, 0) + 1
            from agent import metrics

            metrics.LOG_LINES_SUPPRESSED.labels(logger=record.name.split(".")[0]).inc()
            return False
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.window:g}s held back)"
        return True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
