from __future__ import annotations

import json
import uuid

import pytest
from google.protobuf import json_format

from agent import codec
from agent._proto.coordinator.v1 import events_pb2
from agent.errors import DecodeError


def _chaos_event() -> events_pb2.ChaosEvent:
    event = events_pb2.ChaosEvent(
        correlation_id=str(uuid.uuid4()),
        type=events_pb2.CHAOS_EVENT_TYPE_INJECTED,
        execution_id=str(uuid.uuid4()),
        target="risk-monitor",
        fault="restart",
        expectations=[events_pb2.Expectation(name="back", kind=events_pb2.EXPECTATION_KIND_APPEARS,
                                             event_type="service_ready")],
    )
    event.parameters.update({"signal": "SIGKILL", "count": 2})
    event.injected_at.GetCurrentTime()
    return event


@pytest.mark.parametrize("content_type", [codec.CONTENT_PROTOBUF, codec.CONTENT_JSON])
def test_an_event_survives_encoding_in_either_content_type(content_type: str) -> None:
    event = _chaos_event()
    data = codec.encode(event, content_type)
    assert codec.decode(data, events_pb2.ChaosEvent, content_type) == event


def test_json_encoding_is_the_canonical_mapping() -> None:
    event = _chaos_event()
    body = json.loads(codec.encode(event, codec.CONTENT_JSON))
    assert body["correlationId"] == event.correlation_id
    assert body["type"] == "CHAOS_EVENT_TYPE_INJECTED"


def test_payload_without_content_type_is_sniffed() -> None:
    request = events_pb2.ScenarioRequest(request_id="r-1", scenario_name="kill-engine")
    as_json = json_format.MessageToJson(request).encode()
    assert codec.decode(as_json, events_pb2.ScenarioRequest, None) == request
    assert codec.decode(request.SerializeToString(), events_pb2.ScenarioRequest, None) == request


def test_requests_written_by_hand_in_json_are_accepted() -> None:
    raw = b'{"requestId": "r-2", "scenarioName": "kill-engine", "parameters": {"count": 3, "delay": "5s"}}'
    request = codec.decode(raw, events_pb2.ScenarioRequest, "application/json; charset=utf-8")
    assert request.parameters["count"].number_value == 3
    assert request.parameters["delay"].string_value == "5s"


@pytest.mark.parametrize(
    ("data", "content_type", "reason", "fragment"),
    [
        (b"\xff\xfe\x00garbage", codec.CONTENT_PROTOBUF, "bad-protobuf",
         "invalid coordinator.v1.ScenarioRequest protobuf"),
        (b"{not json", codec.CONTENT_JSON, "bad-json", "invalid coordinator.v1.ScenarioRequest json"),
        (b'{"scenarioNam": "x"}', codec.CONTENT_JSON, "bad-json", "scenarioNam"),
        (b'{"dryRun": "yes"}', codec.CONTENT_JSON, "bad-json", "dryRun"),
        (b"\xc3\x28", codec.CONTENT_JSON, "bad-json", "not utf-8"),
        (None, codec.CONTENT_PROTOBUF, "empty", "empty payload"),
        (b"x", "text/xml", "unsupported-content-type", "unsupported content-type 'text/xml'"),
    ],
)
def test_undecodable_input_raises_one_error_type_that_names_the_problem(
    data: bytes | None, content_type: str, reason: str, fragment: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(data, events_pb2.ScenarioRequest, content_type)
    assert caught.value.reason == reason
    assert fragment in str(caught.value)


def test_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        codec.decode(b"{" + b" " * codec.MAX_PAYLOAD_BYTES + b"}", events_pb2.ScenarioRequest, None)


def test_every_published_event_carries_cloudevents_and_correlation_headers() -> None:
    event = _chaos_event()
    out = codec.encode_event(event, key=event.correlation_id, source="/coordinator/test",
                             correlation_id=event.correlation_id, traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    headers = codec.headers_to_dict(out.headers)
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "coordinator.v1.ChaosEvent.injected", "a chaos event's kind is in its type"
    assert headers["ce_source"] == "/coordinator/test"
    assert uuid.UUID(headers["ce_id"])
    assert headers["ce_time"].endswith("Z")
    assert headers["content-type"] == "application/protobuf"
    assert headers["correlation-id"] == event.correlation_id
    assert headers["traceparent"].startswith("00-")
    assert out.key == event.correlation_id.encode()


def test_an_event_of_another_type_is_refused_by_ce_type() -> None:
    out = codec.encode_event(_chaos_event(), key=None, source="/t")
    with pytest.raises(DecodeError, match="ce_type 'coordinator.v1.ChaosEvent.injected'") as caught:
        codec.decode_event(out.value, out.headers, events_pb2.ScenarioRequest)
    assert caught.value.reason == "wrong-type"


def test_each_kind_of_chaos_event_has_its_own_type_and_decodes_as_a_chaos_event() -> None:
    seen = {}
    for kind in (events_pb2.CHAOS_EVENT_TYPE_INJECTED, events_pb2.CHAOS_EVENT_TYPE_REVERTED,
                 events_pb2.CHAOS_EVENT_TYPE_REVERT_FAILED):
        event = _chaos_event()
        event.type = kind
        out = codec.encode_event(event, key=None, source="/t")
        seen[codec.headers_to_dict(out.headers)["ce_type"]] = codec.decode_event(out.value, out.headers,
                                                                                  events_pb2.ChaosEvent).type
    assert seen == {"coordinator.v1.ChaosEvent.injected": events_pb2.CHAOS_EVENT_TYPE_INJECTED,
                    "coordinator.v1.ChaosEvent.reverted": events_pb2.CHAOS_EVENT_TYPE_REVERTED,
                    "coordinator.v1.ChaosEvent.revert_failed": events_pb2.CHAOS_EVENT_TYPE_REVERT_FAILED}
    assert codec.ce_type_of(events_pb2.ScenarioResult) == "coordinator.v1.ScenarioResult"
    assert codec.ce_type_of(events_pb2.ChaosEvent) == "coordinator.v1.ChaosEvent"
