"""The scenario catalog: every scenario file under ``scenarios/`` and any extra directories.

A catalog lists scenarios, gets one by name, and refuses two files that declare the same name.
Invalid files are kept as problems (the catalog still serves the valid ones).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import Issue, NotFound, ScenarioError
from agent.scenario.models import Scenario, suggest
from agent.scenario.validation import load_scenario, load_scenario_file

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    scenario: Scenario
    #: the path relative to its catalog directory, as the API shows it (no server paths leak out)
    relative: str = ""


@dataclass
class Catalog:
    entries: dict[str, Entry] = field(default_factory=dict)
    problems: list[Issue] = field(default_factory=list)

    @classmethod
    def load(cls, directories: Iterable[str | Path]) -> Catalog:
        catalog = cls()
        for directory in directories:
            root = Path(directory)
            if not root.is_dir():
                catalog.problems.append(Issue(str(root), 0, 0, "", "scenario directory not found"))
                continue
            for path in sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
                catalog._add(path, path.relative_to(root).as_posix())
        return catalog

    def _add(self, path: Path, relative: str = "") -> None:
        try:
            scenario = load_scenario_file(path, require_parameters=False)
        except ScenarioError as exc:
            self.problems.extend(exc.issues)
            return
        name = scenario.name
        if name in self.entries:
            first = self.entries[name].path
            self.problems.append(Issue(str(path), 1, 1, "metadata.name",
                                       f"duplicate scenario name '{name}' (also in {first})"))
            return
        self.entries[name] = Entry(name, path, scenario, relative or path.name)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            hint = suggest(name, self.names()) if self.entries else "; the catalog is empty"
            raise NotFound(f"unknown scenario '{name}'{hint}") from None


def default_directories(extra: Iterable[str] = ()) -> list[Path]:
    root = Path(__file__).resolve().parents[2] / "scenarios"
    dirs = [root if root.is_dir() else Path.cwd() / "scenarios"]
    dirs.extend(Path(d) for d in extra)
    return dirs


class CatalogCache:
    """A catalog reloaded only when a scenario file is added, removed or changed."""

    def __init__(self, directories: Iterable[str | Path]) -> None:
        self.directories = [Path(d) for d in directories]
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None
        self._catalog = Catalog()

    def get(self) -> Catalog:
        fingerprint = self._scan()
        if fingerprint != self._fingerprint:
            self._catalog = Catalog.load(self.directories)
            self._fingerprint = fingerprint
        return self._catalog

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        found = []
        for root in self.directories:
            if root.is_dir():
                for path in root.rglob("*"):
                    if path.suffix in SUFFIXES:
                        stat = path.stat()
                        found.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(found))


class ScenarioCache:
    """Validated scenarios by (text, overrides, allow-list): scenarios are frozen, so they are shared."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, tuple[str, ...]], Scenario] = OrderedDict()

    def load(self, text: str, source: str, overrides: dict[str, object] | None,
             allowed_targets: list[str] | None) -> Scenario:
        key = (hashlib.sha256(text.encode()).hexdigest(), json.dumps(overrides or {}, sort_keys=True, default=str),
               tuple(allowed_targets or ()))
        cached = self._items.get(key)
        if cached is not None:
            self._items.move_to_end(key)
            return cached
        scenario = load_scenario(text, source, overrides=overrides, allowed_targets=allowed_targets)
        self._items[key] = scenario
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return scenario
