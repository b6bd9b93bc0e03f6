"""The hostile corpus: committed files plus the large ones made on the fly."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "hostile"

#: file -> fragment of the message that refuses it
EXPECTED = {
    "python-object-tag.yaml": "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
    "python-name-tag.yaml": "tag 'tag:yaml.org,2002:python/name:os.system' is not allowed",
    "custom-tag.yaml": "tag '!Ref' is not allowed",
    "binary-tag.yaml": "tag 'tag:yaml.org,2002:binary' is not allowed",
    "alias-bomb.yaml": "expands to more than 20000 nodes",
    "duplicate-keys.yaml": "duplicate key 'name' (first on line 4)",
    "wrong-types.yaml": "expected an int, got str '3'",
    "unknown-fields.yaml": "unknown field 'hooks'",
    "not-a-mapping.yaml": "a scenario is a mapping, not list",
    "two-documents.yaml": "a scenario file holds one document",
}


def generated() -> dict[str, tuple[bytes, str]]:
    """Name -> (document, fragment of the refusal)."""
    header = b"apiVersion: coordinator/v1\nkind: Scenario\nmetadata: {name: big}\nspec:\n  description: "
    big = header + b"x" * (10 * 1024 * 1024) + b"\n"
    deep_flow = b"spec: " + b"[" * 10_000 + b"]" * 10_000 + b"\n"
    deep_map = b"spec: " + b"{a: " * 10_000 + b"1" + b"}" * 10_000 + b"\n"
    return {
        "10mb-document": (big, "exceeds the 1048576-byte limit"),
        "10k-deep-lists": (deep_flow, "nesting deeper than 64 levels"),
        "10k-deep-mappings": (deep_map, "nesting deeper than 64 levels"),
    }


def all_cases() -> dict[str, tuple[bytes, str]]:
    cases = {name: ((CORPUS / name).read_bytes(), fragment) for name, fragment in EXPECTED.items()}
    cases.update(generated())
    return cases
