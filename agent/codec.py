"""Event codec: protobuf or its canonical JSON, chosen by ``content-type``, with CloudEvents headers.

Every event the project publishes carries CloudEvents binary-mode headers (``ce_id``, ``ce_type``,
``ce_source``, ``ce_specversion``, ``ce_time``, ``content-type``), the correlation header
``correlation-id`` when the event belongs to an injection, and ``traceparent`` when a trace exists.
``ce_type`` is the payload's protobuf full name (``coordinator.v1.ScenarioResult``); a chaos event's
adds its kind (``coordinator.v1.ChaosEvent.injected``, ``.reverted``, ``.revert_failed``).

Inputs accept both encodings. The content type comes from the ``content-type`` header; when it is
absent, a payload whose first non-blank byte is ``{`` is read as JSON, anything else as protobuf.
Whatever cannot be decoded raises :class:`agent.errors.DecodeError`, never anything else.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from agent._proto.coordinator.v1 import events_pb2
from agent.constants import CORRELATION_HEADER, TRACEPARENT_HEADER
from agent.errors import DecodeError

CONTENT_PROTOBUF = "application/protobuf"
CONTENT_JSON = "application/json"
_PROTOBUF_TYPES = {CONTENT_PROTOBUF, "application/x-protobuf", "application/vnd.google.protobuf"}
_JSON_TYPES = {CONTENT_JSON, "text/json"}
SPEC_VERSION = "1.0"
#: larger payloads are refused before parsing
MAX_PAYLOAD_BYTES = 1_048_576

M = TypeVar("M", bound=Message)
Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """What a producer sends: ``producer.send(topic, value, key=key, headers=headers)``."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def ce_type_of(message: Message | type[Message]) -> str:
    """The payload's protobuf full name; a chaos event adds its kind, so that subscribers can tell
    them apart by header alone: ``coordinator.v1.ChaosEvent.injected``, ``.reverted``,
    ``.revert_failed``."""
    name: str = message.DESCRIPTOR.full_name
    if isinstance(message, events_pb2.ChaosEvent) and message.type:
        return f"{name}.{events_pb2.ChaosEventType.Name(message.type).removeprefix('CHAOS_EVENT_TYPE_').lower()}"
    return name


def normalise_content_type(content_type: str | None) -> str | None:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``; unknown types raise."""
    if content_type is None or not content_type.strip():
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    if base in _PROTOBUF_TYPES:
        return CONTENT_PROTOBUF
    if base in _JSON_TYPES:
        return CONTENT_JSON
    raise DecodeError(f"unsupported content-type '{content_type}'", reason="unsupported-content-type")


def encode(message: Message, content_type: str = CONTENT_PROTOBUF, *, proto_names: bool = False) -> bytes:
    """Protobuf, or canonical JSON (camelCase; ``proto_names``: the .proto's snake_case names, as the
    ecosystem's audit adapter writes its events)."""
    kind = normalise_content_type(content_type) or CONTENT_PROTOBUF
    if kind == CONTENT_JSON:
        text = json_format.MessageToJson(message, indent=None, preserving_proto_field_name=proto_names)
        return text.encode()
    return message.SerializeToString(deterministic=True)


def decode(data: bytes | None, message_type: type[M], content_type: str | None = None) -> M:
    """Decode ``data`` into a new ``message_type``; raise :class:`DecodeError` naming the problem."""
    name = message_type.DESCRIPTOR.full_name
    if not data:  # None (a tombstone) or zero bytes: protobuf would read either as an all-default message
        raise DecodeError(f"empty payload where a {name} was expected", reason="empty")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise DecodeError(
            f"payload of {len(data)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit", reason="too-large"
        )
    kind = normalise_content_type(content_type) or _sniff(data)
    message = message_type()
    if kind == CONTENT_JSON:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"json payload is not utf-8 (byte {exc.start})", reason="bad-json") from exc
        try:
            json_format.Parse(text, message, ignore_unknown_fields=False)
        except (json_format.ParseError, json.JSONDecodeError, RecursionError) as exc:
            raise DecodeError(f"invalid {name} json: {_first_line(exc)}", reason="bad-json") from exc
        return message
    try:
        message.ParseFromString(data)
    except (ProtobufDecodeError, RecursionError) as exc:
        raise DecodeError(f"invalid {name} protobuf: {_first_line(exc)}", reason="bad-protobuf") from exc
    return message


def headers_to_dict(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as a dict of text (last value wins; undecodable bytes are replaced)."""
    result: dict[str, str] = {}
    for name, value in headers or ():
        result[name] = (value or b"").decode("utf-8", errors="replace")
    return result


def cloudevent_headers(
    message: Message,
    *,
    source: str,
    content_type: str = CONTENT_PROTOBUF,
    correlation_id: str | None = None,
    traceparent: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
    extra: Mapping[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    moment = (time or datetime.now(UTC)).astimezone(UTC)
    headers = [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", event_id or str(uuid.uuid4())),
        ("ce_type", ce_type_of(message)),
        ("ce_source", source),
        ("ce_time", moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
        ("content-type", normalise_content_type(content_type) or CONTENT_PROTOBUF),
    ]
    if correlation_id:
        headers.append((CORRELATION_HEADER, correlation_id))
    if traceparent:
        headers.append((TRACEPARENT_HEADER, traceparent))
    for name, value in (extra or {}).items():
        headers.append((name, value))
    return [(name, value.encode()) for name, value in headers]


def encode_event(
    message: Message,
    *,
    key: str | None,
    source: str,
    content_type: str = CONTENT_PROTOBUF,
    correlation_id: str | None = None,
    traceparent: str | None = None,
    event_id: str | None = None,
    proto_names: bool = False,
) -> OutgoingEvent:
    return OutgoingEvent(
        key=key.encode() if key is not None else None,
        value=encode(message, content_type, proto_names=proto_names),
        headers=cloudevent_headers(
            message,
            source=source,
            content_type=content_type,
            correlation_id=correlation_id,
            traceparent=traceparent,
            event_id=event_id,
        ),
    )


def decode_event(
    value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None, message_type: type[M],
    meta: dict[str, str] | None = None,
) -> M:
    """Decode a consumed record; a ``ce_type`` naming another message is refused. ``meta``: the
    headers already read with ``headers_to_dict``, when the caller has them."""
    meta = headers_to_dict(headers) if meta is None else meta
    declared = meta.get("ce_type")
    expected = message_type.DESCRIPTOR.full_name
    if declared and declared != expected and not declared.startswith(expected + "."):
        raise DecodeError(f"ce_type '{declared}' where '{expected}' was expected", reason="wrong-type")
    return decode(value, message_type, meta.get("content-type"))


def _sniff(data: bytes) -> str:
    stripped = data.lstrip()
    return CONTENT_JSON if stripped[:1] == b"{" else CONTENT_PROTOBUF


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
