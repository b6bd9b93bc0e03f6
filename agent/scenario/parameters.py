"""Typed scenario parameters: definitions, request overrides, and ``${name}`` substitution.

A parameter has a type (string, int, float, bool, duration, enum), an optional default and bounds.
A request may override any parameter; values from the command line arrive as text and are parsed
(``--param count=3``), values from JSON keep their type and must already match it.

Substitution runs on the document before validation: a string that is exactly ``${name}`` becomes
the typed value (an int stays an int); ``${name}`` inside a longer string is replaced by its text.
``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import model_validator

from agent.fields import Strict
from agent.scenario.base import format_duration
from agent.settings import to_seconds

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


@dataclass(frozen=True)
class ParameterIssue:
    path: tuple[str | int, ...]
    message: str


ParameterType = Literal["string", "int", "float", "bool", "duration", "enum"]


class Parameter(Strict):
    """A parameter's definition in a scenario's ``spec.parameters``."""

    type: ParameterType
    default: str | int | float | bool | None = None
    description: str = ""
    min: int | float | str | None = None
    max: int | float | str | None = None
    values: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        check_definition(self)
        return self


def check_definition(param: Parameter) -> None:
    """Raise ``ValueError`` when a definition contradicts itself."""
    if param.type == "enum" and not param.values:
        raise ValueError("an enum parameter needs values")
    if param.type != "enum" and param.values is not None:
        raise ValueError(f"values apply to enum parameters, not {param.type}")
    if param.type not in {"int", "float", "duration"} and (param.min is not None or param.max is not None):
        raise ValueError(f"min and max apply to int, float and duration parameters, not {param.type}")
    low, high = _bound(param, param.min, "min"), _bound(param, param.max, "max")
    if low is not None and high is not None and low > high:
        raise ValueError(f"min {param.min} is above max {param.max}")
    if param.default is not None:
        coerce(param, param.default, from_text=False, what="default")


def coerce(param: Parameter, value: Any, *, from_text: bool, what: str = "value") -> Any:
    """The typed value, or ``ValueError`` saying what is wrong with it."""
    kind = param.type
    if from_text and isinstance(value, str):
        value = _parse_text(kind, value, what)
    if kind in {"string", "enum"}:
        if not isinstance(value, str):
            raise ValueError(f"{what} {value!r} is not a string")
        if kind == "enum" and value not in (param.values or []):
            raise ValueError(f"{what} {value!r} is not one of {', '.join(param.values or [])}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{what} {value!r} is not a bool (true or false)")
        return value
    if kind == "duration":
        try:
            number = to_seconds(value)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # JSON has one number type: 3.0 is fine, 3.5 is not
            else:
                raise ValueError(f"{what} {value!r} is not an int")
        number = value
    else:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{what} {value!r} is not a float")
        number = float(value)
    low, high = _bound(param, param.min, "min"), _bound(param, param.max, "max")
    if low is not None and number < low:
        raise ValueError(f"{what} {_show(param, number)} is below the minimum {param.min}")
    if high is not None and number > high:
        raise ValueError(f"{what} {_show(param, number)} is above the maximum {param.max}")
    return number


def resolve(
    definitions: Mapping[str, Parameter], overrides: Mapping[str, Any] | None, *, from_text: bool = False
) -> tuple[dict[str, Any], list[ParameterIssue]]:
    """Typed values for every parameter: override, else default. Issues name each problem."""
    import difflib

    values: dict[str, Any] = {}
    issues: list[ParameterIssue] = []
    for name, value in (overrides or {}).items():
        if name not in definitions:
            close = difflib.get_close_matches(name, list(definitions), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else (
                f"; the parameters are {', '.join(definitions)}" if definitions else "; it has no parameters")
            issues.append(ParameterIssue(("parameters", name), f"the scenario has no parameter '{name}'{hint}"))
            continue
        try:
            values[name] = coerce(definitions[name], value, from_text=from_text)
        except ValueError as exc:
            issues.append(ParameterIssue(("parameters", name), f"parameter '{name}': {exc}"))
    for name, param in definitions.items():
        if name in values or ("parameters", name) in {i.path for i in issues}:
            continue
        if param.default is None:
            issues.append(ParameterIssue(("spec", "parameters", name),
                                         f"parameter '{name}' has no default and no value was given"))
            continue
        values[name] = coerce(param, param.default, from_text=False)
    return values, issues


def placeholder(param: Parameter) -> Any:
    """A value of the right type within bounds, to check a scenario whose parameter has no default."""
    if param.type == "enum":
        return (param.values or [""])[0]
    if param.type == "bool":
        return False
    if param.type == "string":
        return "placeholder"
    low = _bound(param, param.min, "min")
    value = low if low is not None else (1.0 if param.type == "duration" else 0)
    return int(value) if param.type == "int" else float(value)


def resolve_for_catalog(definitions: Mapping[str, Parameter]) -> dict[str, Any]:
    """Placeholders for the parameters a request must give, so the catalog can check the rest."""
    return {name: placeholder(p) for name, p in definitions.items() if p.default is None}


def substitute(data: Any, values: Mapping[str, Any], types: Mapping[str, str],
               path: tuple[str | int, ...] = ()) -> tuple[Any, list[ParameterIssue]]:
    """Replace ``${name}`` throughout ``data`` (not inside ``spec.parameters``)."""
    issues: list[ParameterIssue] = []

    def visit(node: Any, where: tuple[str | int, ...]) -> Any:
        if where == ("spec", "parameters"):
            return node
        if isinstance(node, dict):
            return {k: visit(v, (*where, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [visit(v, (*where, i)) for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            return _replace(node, where)
        return node

    def _replace(text: str, where: tuple[str | int, ...]) -> Any:
        whole = re.fullmatch(r"\$\{([^}]*)\}", text)
        if whole:
            name = whole.group(1).strip()
            if _known(name, where):
                return values[name]
            return text

        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1).strip()
            if not _known(name, where):
                return match.group(0)
            value = values[name]
            if types.get(name) == "duration":
                return format_duration(value)
            if isinstance(value, bool):
                return str(value).lower()
            return str(value)

        return _REF.sub(one, text)

    def _known(name: str, where: tuple[str | int, ...]) -> bool:
        if name in values:
            return True
        if name in types:
            return False  # defined but unresolved: already reported by resolve()
        import difflib

        close = difflib.get_close_matches(name, list(types), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        if not _NAME.match(name):
            issues.append(ParameterIssue(where, f"'${{{name}}}' is not a valid parameter reference"))
        else:
            issues.append(ParameterIssue(where, f"unknown parameter '${{{name}}}'{hint}"))
        return False

    return visit(data, path), issues


def _parse_text(kind: str, text: str, what: str) -> Any:
    if kind == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"{what} {text!r} is not an int") from None
    if kind == "float":
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"{what} {text!r} is not a float") from None
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{what} {text!r} is not a bool (true or false)")
    return text


def _bound(param: Parameter, bound: float | str | None, which: str) -> float | None:
    if bound is None:
        return None
    if param.type == "duration":
        try:
            return to_seconds(bound)
        except ValueError as exc:
            raise ValueError(f"{which}: {exc}") from None
    if isinstance(bound, str):
        raise ValueError(f"{which} {bound!r} is not a number")
    return float(bound)


def _show(param: Parameter, number: float) -> str:
    return format_duration(number) if param.type == "duration" else repr(number)
