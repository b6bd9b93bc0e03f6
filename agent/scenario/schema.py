"""A JSON Schema of the scenario format, for editors (``coordinator schema``)."""

from __future__ import annotations

from typing import Any

from agent.scenario.models import scenario_model

#: union members that only exist to word errors well; an editor should not offer them
_INTERNAL = ("_BadStep", "_UnknownFault", "_BadTarget")


def scenario_schema() -> dict[str, Any]:
    schema = scenario_model().model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    for name in _INTERNAL:
        defs.pop(name, None)
    _prune(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Chaos coordinator scenario (coordinator/v1)"
    return schema


def _prune(node: Any) -> None:
    if isinstance(node, dict):
        for key in ("oneOf", "anyOf"):
            if key in node:
                node[key] = [m for m in node[key] if not _internal(m)]
                node.pop("discriminator", None)
        for value in node.values():
            _prune(value)
    elif isinstance(node, list):
        for value in node:
            _prune(value)


def _internal(member: Any) -> bool:
    return isinstance(member, dict) and any(str(member.get("$ref", "")).endswith(f"/{n}") for n in _INTERNAL)
