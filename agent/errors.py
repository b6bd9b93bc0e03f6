"""Exceptions raised by the agent.

Hierarchy::

    CoordinatorError                 base of everything the agent raises on purpose
    ├── ConfigError                  settings or environment unusable
    ├── DecodeError                  bytes that are not a valid event (goes to the dead-letter topic)
    ├── ContractError                topics/ or proto/ contract inconsistent or unreadable
    └── DevstackError                the local stack could not be installed, started or stopped
        └── MissingDependencyError   a tool the stack needs is absent and cannot be installed here

Messages are lowercase sentences that quote the offending name. Errors that wrap an external
failure keep it as ``__cause__`` (``raise ... from exc``) and say whether a retry may help.
"""

from __future__ import annotations


class CoordinatorError(Exception):
    """Base class; ``retryable`` tells a caller whether trying again may succeed."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(CoordinatorError):
    pass


class DecodeError(CoordinatorError):
    """Input bytes could not be decoded into the expected event.

    ``reason`` is a short machine-friendly code used in dead-letter headers.
    """

    def __init__(self, message: str, *, reason: str = "undecodable") -> None:
        super().__init__(message, retryable=False)
        self.reason = reason


class ContractError(CoordinatorError):
    pass


class DevstackError(CoordinatorError):
    pass


class MissingDependencyError(DevstackError):
    pass
