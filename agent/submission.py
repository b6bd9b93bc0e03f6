"""The one way a scenario request is made, checked and sent, whoever sends it: ``coordinator run``
and ``submit``, the demo, tests and benchmarks (through ``agent.client``), and the API's
``SubmitExecution`` (through ``Engine.submit``).

The same rules on every path:

- a request gets a new UUID as its id unless it brings one (its idempotency key), its requester
  (``cli:USER``, ``grpc``, ...) and the time it was made;
- it is keyed by its request id on the requests topic, so that copies of one request land on one
  partition and are claimed once;
- a scenario it carries inline is validated with its parameters *before* it is sent, every problem at
  once with file, line and field path (``check``), so a requester learns of a typo at once instead
  of from a ``REJECTED`` result. A scenario named from the catalog is resolved by the agent, which
  has the catalog.

What only the agent can know is checked where the agent has it: the allow-list in force and the
kill switch (``Engine.submit`` asks the store before it publishes; an agent claiming a request
reads both again in the claim's round trip and answers ``REJECTED`` with the reason), and whether
the request id was claimed already.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import json_format, struct_pb2

from agent import codec
from agent._proto.coordinator.v1 import events_pb2
from agent.errors import Rejected
from agent.scenario import Scenario, load_scenario
from agent.settings import Settings


def build(scenario: str, params: Mapping[str, str], *, requester: str, dry_run: bool = False,
          labels: Mapping[str, str] | None = None, request_id: str | None = None) -> events_pb2.ScenarioRequest:
    """A request for ``scenario``: a catalog name, or the path of a YAML file, sent inline."""
    request = events_pb2.ScenarioRequest(request_id=request_id or "", labels=dict(labels or {}), dry_run=dry_run)
    path = Path(scenario)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        request.scenario_yaml = path.read_text()
    else:
        request.scenario_name = scenario
    for name, value in params.items():
        request.parameters[name].CopyFrom(struct_pb2.Value(string_value=value))
    return complete(request, requester=requester)


def complete(request: events_pb2.ScenarioRequest, *, requester: str) -> events_pb2.ScenarioRequest:
    """Fill in what a request may leave out: its id, its requester, when it was made (in place)."""
    if not request.request_id:
        request.request_id = str(uuid.uuid4())
    if not request.requester:
        request.requester = requester
    if not request.HasField("requested_at"):
        request.requested_at.GetCurrentTime()
    return request


def overrides(request: events_pb2.ScenarioRequest) -> dict[str, object] | None:
    """The parameter values a request gives, as the scenario loader takes them."""
    return {k: json_format.MessageToDict(v) for k, v in request.parameters.items()} or None


def check(request: events_pb2.ScenarioRequest, source: str) -> Scenario | None:
    """What a requester can check before sending: a scenario named at all (``Rejected``), and one
    carried inline valid with the request's parameters (``ScenarioError`` with every problem;
    ``source`` names the file in them). The scenario, or None when it is named from the catalog."""
    if which(request) == "scenario_yaml":
        return load_scenario(request.scenario_yaml, source, overrides=overrides(request))
    return None


def which(request: events_pb2.ScenarioRequest) -> str:
    """How a request gives its scenario: ``scenario_yaml`` (inline) or ``scenario_name`` (from the
    catalog); ``Rejected`` when it gives none."""
    found: str | None = request.WhichOneof("scenario")
    if found is None:
        raise Rejected("no-scenario", "the request names no scenario (scenario_name or scenario_yaml)")
    return found


def encode(request: events_pb2.ScenarioRequest, settings: Settings, *, source: str) -> tuple[str, codec.OutgoingEvent]:
    """The requests topic and the record a request is sent as (keyed by its request id)."""
    return settings.topics.scenario_requests, codec.encode_event(
        request, key=request.request_id, source=source, content_type=settings.content_type)

