"""The scenario catalog: every scenario file under ``scenarios/`` and any extra directories.

A catalog lists scenarios, gets one by name, and refuses two files that declare the same name.
Invalid files are kept as problems (the catalog still serves the valid ones).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import Issue, ScenarioError
from agent.scenario.models import Scenario, suggest
from agent.scenario.validation import load_scenario_file

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    scenario: Scenario


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
                catalog._add(path)
        return catalog

    def _add(self, path: Path) -> None:
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
        self.entries[name] = Entry(name, path, scenario)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            hint = suggest(name, self.names()) if self.entries else "; the catalog is empty"
            raise KeyError(f"unknown scenario '{name}'{hint}") from None


def default_directories(extra: Iterable[str] = ()) -> list[Path]:
    root = Path(__file__).resolve().parents[2] / "scenarios"
    dirs = [root if root.is_dir() else Path.cwd() / "scenarios"]
    dirs.extend(Path(d) for d in extra)
    return dirs
