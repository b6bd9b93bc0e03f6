"""The fault catalogue: every fault name, the driver that applies it, and its typed parameters.

Names are kebab-case and match what users know: process faults as in Pumba and Chaos Mesh,
network faults as Toxiproxy's toxics, and Kafka event faults (ours). Adding a fault means adding
one parameter model and one line in ``FAULTS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from agent.scenario.base import Duration, Strict

Stream = Literal["upstream", "downstream"]
Signal = Literal["SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"]


class NoParameters(Strict):
    pass


# -- process faults (driver: supervisor) ----------------------------------------------------------
class KillParameters(Strict):
    signal: Signal = "SIGKILL"


# -- network faults (driver: toxiproxy), fields as Toxiproxy names them ------------------------------
class ToxicParameters(Strict):
    stream: Stream = "downstream"
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


# -- Kafka event faults (driver: kafka) --------------------------------------------------------------
class InjectEventsParameters(Strict):
    count: int = Field(default=1, ge=1, le=100_000)
    #: events per second; 0 sends them as fast as the broker takes them
    rate: float = Field(default=0.0, ge=0.0)
    key: str | None = None
    #: the event body: a mapping sent as JSON, or text sent as is
    payload: dict[str, object] | str = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    content_type: Literal["application/json", "text/plain", "application/octet-stream"] = "application/json"


class RelayParameters(Strict):
    #: share of relayed events affected
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    #: only events whose headers include all of these are affected
    match_headers: dict[str, str] = Field(default_factory=dict)


class DuplicateEventsParameters(RelayParameters):
    copies: int = Field(default=1, ge=1, le=100)


class DelayEventsParameters(RelayParameters):
    delay: Duration


class DropEventsParameters(RelayParameters):
    pass


class CorruptEventsParameters(RelayParameters):
    mode: Literal["truncate", "garbage", "flip-bits"] = "garbage"


@dataclass(frozen=True)
class FaultKind:
    name: str
    driver: str
    parameters: type[Strict]
    #: the fault lasts until reverted (a duration applies); instantaneous faults have no duration
    lasting: bool
    #: the fault reads events from the target's relay source topic
    relay: bool = False
    summary: str = ""


FAULTS: dict[str, FaultKind] = {f.name: f for f in (
    FaultKind("restart", "supervisor", NoParameters, False, summary="restart the process"),
    FaultKind("kill", "supervisor", KillParameters, False,
              summary="send a signal (SIGKILL by default); the supervisor brings it back"),
    FaultKind("stop", "supervisor", NoParameters, True, summary="stop the process; started again on revert"),
    FaultKind("pause", "supervisor", NoParameters, True, summary="SIGSTOP the process; SIGCONT on revert"),
    FaultKind("latency", "toxiproxy", LatencyParameters, True, summary="add latency (and jitter)"),
    FaultKind("bandwidth", "toxiproxy", BandwidthParameters, True, summary="limit to rate KB/s"),
    FaultKind("slow-close", "toxiproxy", SlowCloseParameters, True, summary="delay the close of connections"),
    FaultKind("timeout", "toxiproxy", TimeoutParameters, True, summary="stop all data, close after timeout"),
    FaultKind("reset-peer", "toxiproxy", ResetPeerParameters, True, summary="reset connections (TCP RST)"),
    FaultKind("slicer", "toxiproxy", SlicerParameters, True, summary="slice data into small packets"),
    FaultKind("limit-data", "toxiproxy", LimitDataParameters, True, summary="close after a number of bytes"),
    FaultKind("down", "toxiproxy", NoParameters, True, summary="disable the proxy: connections refused"),
    FaultKind("inject-events", "kafka", InjectEventsParameters, False,
              summary="publish events, each carrying the correlation header"),
    FaultKind("duplicate-events", "kafka", DuplicateEventsParameters, True, relay=True,
              summary="relay events with extra copies"),
    FaultKind("delay-events", "kafka", DelayEventsParameters, True, relay=True, summary="relay events late"),
    FaultKind("drop-events", "kafka", DropEventsParameters, True, relay=True, summary="relay without some events"),
    FaultKind("corrupt-events", "kafka", CorruptEventsParameters, True, relay=True,
              summary="relay events with damaged payloads"),
)}

FAULT_NAMES = tuple(FAULTS)
