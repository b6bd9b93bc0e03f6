"""Exceptions raised by the agent.

Hierarchy::

    CoordinatorError                 base of everything the agent raises on purpose
    ├── ConfigError                  settings or environment unusable
    │   └── ConfigValueError         the configuration service's answer for a key cannot be used
    ├── NotFound                     no such scenario, execution or driver (says what there is)
    ├── Rejected                     a request refused before it runs (``code``: its REJECTED reason)
    ├── StateError                   not possible now: the agent is halted, the execution already ended
    ├── Unavailable                  Kafka or Redis cannot be reached (a retry may help)
    ├── DecodeError                  bytes that are not a valid event (goes to the dead-letter topic)
    ├── ContractError                topics/ or proto/ contract inconsistent or unreadable
    ├── ScenarioError                a scenario is invalid: every issue with file, line, column, path
    │   └── InvalidParameters        ... and every issue is about its parameters (the request's values)
    ├── DevstackError                the local stack could not be installed, started or stopped
    │   └── MissingDependencyError   a tool the stack needs is absent and cannot be installed here
    └── RunError                     something failed while a scenario ran (wraps the cause)
        ├── TargetRefused            a target outside the scenario or the allow-list; nothing touched
        ├── ActionError              a fault could not be applied
        ├── RevertError              a fault could not be reverted (retried; the lease stays)
        ├── ProbeError               a probe could not observe its target
        └── FencedOut                another agent took the execution over; this one stops touching it

Messages are lowercase sentences that quote the offending name. Errors that wrap an external
failure keep it as ``__cause__`` (``raise ... from exc``) and say whether a retry may help.

Each class carries what a caller answers with, so nobody matches message text: ``exit_code`` for
the CLI (1 a problem with the input or a failed action, 3 internal, 4 usage or configuration) and
``grpc_status`` (a ``grpc.StatusCode`` name) for the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class CoordinatorError(Exception):
    """Base class; ``retryable`` tells a caller whether trying again may succeed."""

    retryable: bool = False
    exit_code: ClassVar[int] = 3
    grpc_status: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(CoordinatorError):
    exit_code = 4
    grpc_status = "FAILED_PRECONDITION"


class ConfigValueError(ConfigError, ValueError):
    """The configuration service's answer for a key could not be used; the message says why."""


class NotFound(CoordinatorError):
    """No such scenario, execution or driver; the message names it and what there is instead."""

    exit_code = 1
    grpc_status = "NOT_FOUND"


class Rejected(CoordinatorError):
    """A request refused before it runs; ``code`` is the short reason its REJECTED result starts with."""

    exit_code = 1
    grpc_status = "INVALID_ARGUMENT"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, retryable=False)
        self.code = code


class StateError(CoordinatorError):
    """Not possible in the current state (halted; already ended); the message says which."""

    exit_code = 1
    grpc_status = "FAILED_PRECONDITION"


class Unavailable(CoordinatorError):
    """Kafka or Redis could not be reached; the message names which."""

    retryable = True
    exit_code = 3
    grpc_status = "UNAVAILABLE"


class DecodeError(CoordinatorError):
    """Input bytes could not be decoded into the expected event.

    ``reason`` is a short machine-friendly code used in dead-letter headers.
    """

    exit_code = 1
    grpc_status = "INVALID_ARGUMENT"

    def __init__(self, message: str, *, reason: str = "undecodable") -> None:
        super().__init__(message, retryable=False)
        self.reason = reason


class ContractError(CoordinatorError):
    pass


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in a scenario document, where it is and what is wrong."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "column": self.column, "path": self.path,
                "message": self.message}


class ScenarioError(CoordinatorError):
    """A scenario could not be loaded; ``issues`` lists every problem found, in file order."""

    exit_code = 1
    grpc_status = "INVALID_ARGUMENT"

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(set(issues))
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in the scenario"
        super().__init__(head + ":\n" + "\n".join(f"  {issue}" for issue in self.issues), retryable=False)


class InvalidParameters(ScenarioError):
    """The scenario is sound; the parameter values it was given are not (every issue says which)."""


class DevstackError(CoordinatorError):
    pass


class MissingDependencyError(DevstackError):
    pass


class RunError(CoordinatorError):
    exit_code = 1
    grpc_status = "UNAVAILABLE"


class TargetRefused(RunError):
    grpc_status = "PERMISSION_DENIED"


class ActionError(RunError):
    pass


class RevertError(RunError):
    pass


class ProbeError(RunError):
    pass


class FencedOut(RunError):
    """This agent no longer owns the execution (another agent took it over): it stops touching it."""

    grpc_status = "ABORTED"
