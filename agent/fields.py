"""Field types shared by the scenario language and the drivers' vocabularies: strict camelCase
models, durations, names. A leaf module (it imports nothing of the project but settings), so that
a driver module can declare its selector and parameter models without importing the scenario
package that builds its models from them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema
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


#: a supervisord program or group name, a Toxiproxy proxy name (both refuse ':' and spaces)
#: the signals a process fault may send (the names supervisord and the Docker API both take)
Signal = Literal["SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"]
SELECTOR_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SelectorName = Annotated[str, Field(pattern=SELECTOR_NAME_PATTERN)]
#: a Kafka topic name, as the broker allows it (but not starting with '.')
TOPIC_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,248}$"
TopicName = Annotated[str, Field(pattern=TOPIC_PATTERN)]


class NoParameters(Strict):
    """The parameters of a fault that takes none."""


def is_name(value: str) -> bool:
    return bool(_NAME.match(value))
