"""Tolerances: which observed values are fine (Chaos Toolkit's tolerances, Litmus's comparators).
Used by probes and by expectations over a metric; ``Tolerance.check`` is pure."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import model_validator

from agent.fields import Strict

Comparator = Literal["==", "!=", ">", "<", ">=", "<="]
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}


def exactly_one(model: Strict, options: tuple[str, ...], what: str) -> None:
    chosen = [name for name in options if getattr(model, name) is not None]
    if len(chosen) != 1:
        fields = type(model).model_fields
        aliases = [fields[name].alias or name for name in options]
        given = ", ".join(fields[n].alias or n for n in chosen) or "none"
        raise ValueError(f"{what} needs exactly one of {', '.join(aliases)} (given: {given})")


class Range(Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min {self.min} is above max {self.max}")
        return self


class Compare(Strict):
    op: Comparator
    value: float | str


class Tolerance(Strict):
    equals: str | int | float | bool | None = None
    one_of: list[str | int | float | bool] | None = None
    range: Range | None = None
    regex: str | None = None
    contains: str | None = None
    comparator: Compare | None = None

    @model_validator(mode="after")
    def _one(self) -> Tolerance:
        exactly_one(self, ("equals", "one_of", "range", "regex", "contains", "comparator"), "a tolerance")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        return self

    def check(self, observed: Any) -> tuple[bool, str]:
        """Does ``observed`` satisfy the tolerance? Returns (ok, a sentence saying why)."""
        if self.equals is not None:
            ok = _same(observed, self.equals)
            return ok, f"observed {observed!r}, expected {self.equals!r}"
        if self.one_of is not None:
            ok = any(_same(observed, v) for v in self.one_of)
            return ok, f"observed {observed!r}, expected one of {self.one_of!r}"
        if self.range is not None:
            number = _number(observed)
            if number is None:
                return False, f"observed {observed!r}, expected a number in range"
            ok = (self.range.min is None or number >= self.range.min) and (
                self.range.max is None or number <= self.range.max)
            return ok, f"observed {number}, expected within [{self.range.min}, {self.range.max}]"
        if self.regex is not None:
            ok = re.search(self.regex, str(observed)) is not None
            return ok, f"observed {observed!r}, expected to match /{self.regex}/"
        if self.contains is not None:
            ok = self.contains in str(observed)
            return ok, f"observed {observed!r}, expected to contain {self.contains!r}"
        assert self.comparator is not None
        op, value = self.comparator.op, self.comparator.value
        left: Any = _number(observed) if isinstance(value, int | float) else str(observed)
        if left is None:
            return False, f"observed {observed!r}, expected a number {op} {value}"
        return _COMPARE[op](left, value), f"observed {left!r}, expected {op} {value!r}"


def _same(observed: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(observed, bool):
        return str(observed).lower() == str(expected).lower()
    if isinstance(expected, int | float):
        number = _number(observed)
        return number is not None and number == expected
    return str(observed) == str(expected)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
