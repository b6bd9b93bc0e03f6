"""Safe YAML loading with limits and positions.

Nothing but plain data is ever built: no Python tags, no custom constructors. The text is checked
in three passes, each cheap enough to refuse hostile input fast and without large memory:

1. size: more than ``MAX_BYTES`` is refused before parsing; flow brackets (``[``, ``{``) nested
   deeper than ``MAX_DEPTH`` are refused by a character scan (the YAML scanner reads a whole flow
   collection ahead before it yields anything, which costs quadratic time on deep nesting);
2. an event scan (the parser is iterative, nothing is built): nesting deeper than ``MAX_DEPTH``,
   more than ``MAX_ALIASES`` aliases, tags other than YAML's core ones, or more than one document
   are refused at the first offending event;
3. construction from the node graph, counting every node visited (aliases included) against
   ``MAX_NODES``, so an alias bomb stops long before it expands; duplicate keys are refused.

The result keeps the line and column (1-based) of every key and item, by field path, so that
validation errors can say where they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from agent.errors import Issue, ScenarioError

MAX_BYTES = 1_048_576
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 20_000

_CORE = "tag:yaml.org,2002:"
#: libyaml's parser when PyYAML was built with it (same events and marks, several times faster)
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ALLOWED_TAGS = {None, "!", *(f"{_CORE}{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq",
                                                        "timestamp", "merge"))}
Path = tuple[str | int, ...]


@dataclass
class Document:
    data: Any
    source: str
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: Path) -> tuple[int, int]:
        """Line and column of ``path``, or of its nearest ancestor that is written in the file."""
        for cut in range(len(path), -1, -1):
            found = self.positions.get(path[:cut])
            if found:
                return found
        return (1, 1)


def load_yaml(text: str | bytes, source: str = "<string>") -> Document:
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise _fail(source, 1, 1, f"document of {len(text)} bytes exceeds the {MAX_BYTES}-byte limit")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(source, 1, 1, f"not utf-8 text (byte {exc.start})") from None
    if len(text) > MAX_BYTES:
        raise _fail(source, 1, 1, f"document of {len(text)} characters exceeds the {MAX_BYTES} limit")
    _flow_depth(text, source)
    _scan(text, source)
    try:
        node = yaml.compose(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    doc = Document(data=None, source=source)
    if node is None:
        raise _fail(source, 1, 1, "the document is empty")
    builder = _Builder(doc)
    doc.data = builder.build(node, ())
    if builder.issues:
        raise ScenarioError(builder.issues)
    return doc


_SPECIAL = re.compile(r"""[\[\]{}'"#\n\\]""")


def _flow_depth(text: str, source: str) -> None:
    """Refuse flow nesting deeper than ``MAX_DEPTH``, skipping quoted text and comments."""
    depth = 0
    quote: str | None = None
    comment = False
    escaped_at = -2
    for match in _SPECIAL.finditer(text):
        char, at = match.group(), match.start()
        if comment:
            comment = char != "\n"
            continue
        if quote == '"':
            if char == "\\" and escaped_at != at - 1:
                escaped_at = at
            elif char == '"' and escaped_at != at - 1:
                quote = None
            continue
        if quote == "'":
            if char == "'" and escaped_at != at - 1:
                if text[at + 1 : at + 2] == "'":
                    escaped_at = at  # '' is an escaped quote: skip the next one
                else:
                    quote = None
            continue
        if char in "\"'":
            if at == 0 or text[at - 1] in " \t\n[{,:-?":
                quote = char
        elif char == "#":
            comment = at == 0 or text[at - 1] in " \t\n"
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, at) + 1
                column = at - (text.rfind("\n", 0, at) + 1) + 1
                raise _fail(source, line, column, f"nesting deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth = max(0, depth - 1)


def _scan(text: str, source: str) -> None:
    depth = aliases = documents = 0
    try:
        for event in yaml.parse(text, Loader=_SAFE_LOADER):
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _at(source, event, "a scenario file holds one document; found a second '---'")
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _at(source, event, f"nesting deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise _at(source, event, f"more than {MAX_ALIASES} aliases")
            tag = getattr(event, "tag", None)
            if tag not in _ALLOWED_TAGS:
                raise _at(source, event, f"tag '{tag}' is not allowed: scenarios are plain data")
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.nodes = 0
        self.issues: list[Issue] = []
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            line, column = _mark(node)
            raise _fail(self.doc.source, line, column,
                        f"the document expands to more than {MAX_NODES} nodes (aliases included)")
        self.doc.positions.setdefault(path, _mark(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if node.tag == f"{_CORE}timestamp":
            return node.value  # dates stay text
        return self._constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, int] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == f"{_CORE}merge":
                merged.update(self._merge(value_node, path))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._issue(key_node, path, "mapping keys must be plain text")
                continue
            key = key_node.value
            if key in seen:
                self._issue(key_node, (*path, key),
                            f"duplicate key '{key}' (first on line {seen[key]})")
                continue
            seen[key] = _mark(key_node)[0]
            self.doc.positions[(*path, key)] = _mark(key_node)
            result[key] = self.build(value_node, (*path, key))
        return {**merged, **result}

    def _merge(self, node: yaml.Node, path: Path) -> dict[str, Any]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):
            value = self.build(source, path)
            if not isinstance(value, dict):
                self._issue(source, path, "'<<' merges mappings only")
                continue
            merged.update(value)
        return merged

    def _issue(self, node: yaml.Node, path: Path, message: str) -> None:
        line, column = _mark(node)
        self.issues.append(Issue(self.doc.source, line, column, format_path(path), message))


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def _mark(node: yaml.Node | yaml.Event) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


def _at(source: str, event: yaml.Event, message: str) -> ScenarioError:
    line, column = _mark(event)
    return _fail(source, line, column, message)


def _fail(source: str, line: int, column: int, message: str) -> ScenarioError:
    return ScenarioError([Issue(source, line, column, "", message)])


def _yaml_error(exc: yaml.YAMLError, source: str) -> ScenarioError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return _fail(source, line, column, message)
