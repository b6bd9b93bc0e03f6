"""Chaos coordinator: a Kafka-native chaos-testing agent.

Scenario requests arrive as Kafka events; every injected fault carries a UUID correlation id; a
stream worker joins the system's own audit events to those ids and publishes the verdicts.
"""

from __future__ import annotations

__version__ = "0.1.0"

from agent.errors import (  # noqa: E402
    ConfigError,
    ContractError,
    CoordinatorError,
    DecodeError,
    DevstackError,
    MissingDependencyError,
)
from agent.settings import Settings, get_settings  # noqa: E402

__all__ = [
    "ConfigError",
    "ContractError",
    "CoordinatorError",
    "DecodeError",
    "DevstackError",
    "MissingDependencyError",
    "Settings",
    "__version__",
    "get_settings",
]
