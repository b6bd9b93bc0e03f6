"""Load and validate a scenario: every problem at once, each with file, line, column and path."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.errors import InvalidParameters, Issue, ScenarioError
from agent.fields import SELECTOR_NAME_PATTERN, TOPIC_PATTERN
from agent.scenario import checks
from agent.scenario.base import NAME_PATTERN
from agent.scenario.loader import Document, Path, format_path, load_yaml
from agent.scenario.models import Scenario, scenario_model, suggest
from agent.scenario.parameters import Parameter, placeholder, resolve, resolve_for_catalog, substitute

_TYPE_WORDS = {
    "int_type": "an int", "int_parsing": "an int", "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "bool_type": "a bool (true or false)", "bool_parsing": "a bool (true or false)",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "list_type": "a list", "none_required": "nothing",
}


def load_scenario(
    text: str | bytes,
    source: str = "<string>",
    *,
    overrides: Mapping[str, Any] | None = None,
    overrides_from_text: bool = False,
    allowed_targets: list[str] | None = None,
    require_parameters: bool = True,
) -> Scenario:
    """The validated scenario with parameters applied; ``ScenarioError`` lists every problem.

    With ``require_parameters=False`` (the catalog), parameters without a default get a placeholder
    of their type, so a scenario meant to be given its values per request still validates.
    """
    doc = load_yaml(text, source)
    issues: list[Issue] = []
    data = doc.data
    if not isinstance(data, dict):
        raise ScenarioError([Issue(source, 1, 1, "", f"a scenario is a mapping, not {type(data).__name__}")])

    definitions, broken = _parameter_definitions(doc)
    # a value given for a broken definition is not checked: the definition's own error says enough
    overrides = {k: v for k, v in (overrides or {}).items() if k not in broken} if overrides else overrides
    if not require_parameters:
        overrides = {**resolve_for_catalog(definitions), **(overrides or {})}
    values, param_issues = resolve(definitions, overrides, from_text=overrides_from_text)
    for issue in param_issues:
        if issue.path[0] == "spec":
            issues.append(_issue(doc, issue.path, issue.message))
        else:  # an override: it comes from the request, not the file
            issues.append(Issue("request", 0, 0, format_path(issue.path), issue.message))
    for name, definition in {**broken, **definitions}.items():
        # a value or a definition that failed is reported once, at its own line, not again wherever
        # the scenario uses it
        values.setdefault(name, placeholder(definition))
    data, ref_issues = substitute(data, values, {n: p.type for n, p in {**broken, **definitions}.items()})
    issues += [_issue(doc, i.path, i.message) for i in ref_issues]
    about_parameters = set(issues)

    scenario, found = validate_data(data, doc, allowed_targets=allowed_targets,
                                    unresolved={format_path(i.path) for i in ref_issues})
    issues += found
    if issues and set(issues) <= about_parameters:
        raise InvalidParameters(issues)
    if issues or scenario is None:
        raise ScenarioError(issues)
    return scenario


def validate_data(data: Any, doc: Document, *, allowed_targets: list[str] | None = None,
                  unresolved: set[str] | None = None,
                  where: Callable[[Path], Path] | None = None) -> tuple[Scenario | None, list[Issue]]:
    """Validate scenario ``data`` (parameters already applied) against the drivers' models and its
    cross-references: the scenario, or None, and every problem, placed in ``doc``. ``where`` maps a
    path of ``data`` to the path in ``doc`` that wrote it (a document that is not itself a scenario,
    such as an exploration, builds scenario data from its parts); ``unresolved`` names paths already
    reported (a parameter reference that did not resolve)."""
    def place(path: Path, message: str) -> Issue:
        return _issue(doc, where(path) if where else path, message)

    scenario: Scenario | None = None
    issues: list[Issue] = []
    try:
        scenario = scenario_model().model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            if format_path(error_path(error)) not in (unresolved or set()):
                issues.append(pydantic_issue(place, error, scenario_model()))
    issues += [place(path, message) for path, message in checks.cross_references(data, allowed_targets)]
    return scenario, issues


def load_scenario_file(path: str | FilePath, **kwargs: Any) -> Scenario:
    file = FilePath(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ScenarioError([Issue(str(file), 0, 0, "", f"cannot read the file: {exc.strerror}")]) from None
    return load_scenario(raw, str(file), **kwargs)


def check_text(text: str | bytes, source: str = "<string>", **kwargs: Any) -> list[Issue]:
    try:
        load_scenario(text, source, **kwargs)
    except ScenarioError as exc:
        return exc.issues
    return []


def _parameter_definitions(doc: Document) -> tuple[dict[str, Parameter], dict[str, Parameter]]:
    """The valid parameter definitions, and the broken ones (reported by the whole-document
    validation) as bare definitions of their declared type (``string`` when it is not one), so that
    the places using a broken one are checked against its type and not reported again."""
    spec = doc.data.get("spec")
    raw = spec.get("parameters") if isinstance(spec, dict) else None
    if not isinstance(raw, dict):
        return {}, {}
    definitions: dict[str, Parameter] = {}
    broken: dict[str, Parameter] = {}
    for name, body in raw.items():
        try:
            definitions[name] = Parameter.model_validate(body)
        except ValidationError:
            declared = body.get("type") if isinstance(body, dict) else None
            try:
                broken[name] = Parameter.model_validate({"type": declared})
            except ValidationError:
                broken[name] = Parameter(type="string")
    return definitions, broken


def _issue(doc: Document, path: Path, message: str) -> Issue:
    line, column = doc.position(path)
    return Issue(doc.source, line, column, format_path(path), message)


def error_path(error: Mapping[str, Any]) -> Path:
    """The field path of a pydantic error, union tags ('@...') left out."""
    return tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("@")))


def pydantic_issue(place: Callable[[Path, str], Issue], error: Mapping[str, Any], root: Any) -> Issue:
    """A pydantic error of validating with the model ``root``, in words, placed by ``place``."""
    loc = tuple(error["loc"])
    path = error_path(error)
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_fields(root, loc[:-1])
        message = f"unknown field '{loc[-1]}'" + (suggest(loc[-1], allowed) if allowed else "")
    elif kind == "missing":
        message = f"missing required field '{loc[-1]}'"
    elif kind in _TYPE_WORDS:
        message = f"expected {_TYPE_WORDS[kind]}, got {_describe(value)}"
    elif kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", ""))
        choices = tuple(c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip())
        message = f"'{value}' is not allowed here" + (suggest(value, choices) if choices else "")
    elif kind == "string_pattern_mismatch":
        rule = _PATTERN_WORDS.get(str(error.get("ctx", {}).get("pattern")), "a name of letters, digits and '-'")
        message = f"'{value}' is not a valid name: {rule}"
    elif kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
    else:
        text = str(error["msg"])
        message = text[:1].lower() + text[1:]
    return place(path, message)


_PATTERN_WORDS = {
    NAME_PATTERN: "use lowercase letters, digits and '-' (at most 63)",
    SELECTOR_NAME_PATTERN: "use letters, digits, '.', '_' and '-', starting with a letter or digit (at most 128)",
    TOPIC_PATTERN: "a Kafka topic name: letters, digits, '.', '_' and '-', not starting with '.' (at most 249)",
}


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _allowed_fields(root: Any, loc: tuple[Any, ...]) -> list[str]:
    """The field names (as written in YAML) of the model found at ``loc`` of ``root``, following union tags."""
    current: Any = root
    for part in loc:
        current = _step_into(current, part)
        if current is None:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _step_into(current: Any, part: Any) -> Any:
    current = _unwrap(current)
    if isinstance(part, str) and part.startswith("@"):
        for member in typing.get_args(current):
            metadata = getattr(member, "__metadata__", ())
            if any(getattr(m, "tag", None) == part for m in metadata):
                return typing.get_args(member)[0]
        return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        for name, field in current.model_fields.items():
            if part in {name, field.alias}:
                return field.annotation
        return None
    origin = typing.get_origin(current)
    args = typing.get_args(current)
    if origin is list and isinstance(part, int):
        return args[0]
    if origin is dict:
        return args[1]
    return None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            inner = typing.get_args(annotation)[0]
            if typing.get_origin(inner) in (typing.Union, types.UnionType) and any(
                    getattr(m, "__metadata__", None) for m in typing.get_args(inner)):
                return inner  # a tagged union: the tag picks the member
            annotation = inner
            continue
        if origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation
