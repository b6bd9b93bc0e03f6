"""Generate the JSON Schemas of the topics' payloads (topics/schemas/*.json) from the protos, or check
that the committed ones are current.

    python scripts/gen_schemas.py           # regenerate
    python scripts/gen_schemas.py --check   # exit 1 and list files when the committed schemas drifted

They describe each message in its JSON encoding (the canonical protobuf JSON mapping: camelCase
names, enums by name, 64-bit integers and bytes as strings, Timestamp and Duration as text), which
is what `content-type: application/json` carries; the audit topic's events use the proto field
names (snake_case), as the ecosystem's services write them. topics/asyncapi.yaml points its payloads
at these files, so standard AsyncAPI tools read the contract without knowing protobuf.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "topics" / "schemas"
sys.path.insert(0, str(ROOT))

from agent._proto.coordinator.v1 import events_pb2  # noqa: E402

#: the messages the topics carry, and whether their JSON uses the proto field names
MESSAGES = {"ScenarioRequest": False, "ChaosEvent": False, "AuditEvent": True, "ExecutionProgress": False,
            "ScenarioResult": False, "ExpectationVerdict": False, "ExplorationResult": False,
            "Schedule": False}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time",
                                  "description": "RFC 3339, e.g. 2026-11-26T12:00:00.250Z"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$",
                                 "description": "seconds with an s, e.g. 1.5s"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
}
_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"}, FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer"}, FieldDescriptor.TYPE_SINT32: {"type": "integer"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer"}, FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_INT64: {"type": "string", "pattern": r"^-?\d+$"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "pattern": r"^-?\d+$"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "pattern": r"^-?\d+$"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "pattern": r"^\d+$"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "pattern": r"^\d+$"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"}, FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}


def schema_of(message: Descriptor, proto_names: bool) -> dict[str, Any]:
    definitions: dict[str, Any] = {}
    root = _message(message, proto_names, definitions)
    return {"$schema": "http://json-schema.org/draft-07/schema#", "$id": f"{message.full_name}.json",
            "title": message.full_name, **root, **({"definitions": definitions} if definitions else {})}


def _message(message: Descriptor, proto_names: bool, definitions: dict[str, Any]) -> dict[str, Any]:
    properties = {(field.name if proto_names else field.json_name): _field(field, proto_names, definitions)
                  for field in message.fields}
    return {"type": "object", "properties": properties}


def _field(field: FieldDescriptor, proto_names: bool, definitions: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value, proto_names, definitions)}
    single = _single(field, proto_names, definitions)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _single(field: FieldDescriptor, proto_names: bool, definitions: dict[str, Any]) -> dict[str, Any]:
    if field.enum_type is not None:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in definitions:
            definitions[name] = {}  # recursion guard
            definitions[name] = _message(field.message_type, proto_names, definitions)
        return {"$ref": f"#/definitions/{name}"}
    return dict(_SCALARS[field.type])


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(schema_of(events_pb2.DESCRIPTOR.message_types_by_name[name], snake),
                                       indent=2, sort_keys=True) + "\n"
            for name, snake in MESSAGES.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    opts = parser.parse_args()
    wanted = render()
    if opts.check:
        stale = [name for name, text in wanted.items()
                 if not (OUT / name).exists() or (OUT / name).read_text() != text]
        if stale:
            print("topics/schemas is stale; run: python scripts/gen_schemas.py\n  " + "\n  ".join(stale))
            return 1
        print("topic schemas are current")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(wanted)} schemas to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
