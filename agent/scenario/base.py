"""Shared pieces of the scenario models: strict camelCase models and durations."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

from agent.settings import to_seconds

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)


def _duration(value: Any) -> float:
    try:
        return to_seconds(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def format_duration(seconds: float) -> str:
    """Exact and readable: 30.0 -> "30s", 0.25 -> "0.25s" (``repr`` round-trips every float)."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds!r}s"


#: seconds, written "250ms", "30s", "5m", "1h" or as a number of seconds
Duration = Annotated[
    float,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0},
                              {"type": "string", "pattern": r"^\d+(\.\d+)?([eE][-+]?\d+)?(ms|s|m|h)?$"}],
                    "description": "seconds, or text such as 250ms, 30s, 5m, 1h"}),
]


class Strict(BaseModel):
    """Unknown fields refused, camelCase in YAML, snake_case in Python."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=True,
        str_strip_whitespace=False,
        validate_default=False,
    )


def is_name(value: str) -> bool:
    return bool(_NAME.match(value))
