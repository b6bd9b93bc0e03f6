"""The import rules of a package (``agent`` by default), checked by ``./dev lint``:

- no import circle, whatever hides it: imports inside functions and under ``TYPE_CHECKING`` count,
  since a circle hidden that way is still two modules that cannot be understood apart;
- no module imports one of a higher layer (``LAYERS``, top first). A module named by no layer is in
  the base layer below them all, and may import no named layer.

Each finding names the importing file and line. Exit 1 when there is one, 0 otherwise.

    python scripts/check_imports.py [--package DIR] [--no-layers]
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

#: top first; a module may import its own layer and the ones below, never one above
LAYERS: tuple[tuple[str, ...], ...] = (
    ("agent.__main__", "agent.cli"),                                    # the command line
    ("agent.cli_engine", "agent.cli_explore", "agent.cli_history", "agent.cli_schedule",
     "agent.demo"),                                                     # its commands
    ("agent.service", "agent.worker"),                                  # the two processes, wired
    ("agent.grpc_api", "agent.http", "agent.live", "agent.platform", "agent.relay"),  # parts of `serve`
    ("agent.engine",),                                                  # requests in, results out
)
SKIP = ("_proto",)  # generated code


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        try:
            shown = self.path.resolve().relative_to(Path.cwd())
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module under ``package`` (its parent is the import root)."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if any(part in SKIP for part in parts):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _named(node: ast.Import | ast.ImportFrom, module: str, path: Path) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    # `from a import b`: b may be a module of a, or a name defined in a
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def edges(found: dict[str, Path]) -> list[Edge]:
    out: dict[tuple[str, str], Edge] = {}
    for module, path in found.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _named(node, module, path):
                while name and name not in found:
                    name = name.rpartition(".")[0]
                # a module's own package is imported with it: not an edge of its own
                if name and name != module and not module.startswith(name + "."):
                    out.setdefault((module, name), Edge(module, name, path, node.lineno))
    return sorted(out.values(), key=lambda e: (e.source, e.target))


def cycles(all_edges: list[Edge]) -> list[list[Edge]]:
    """One circle per strongly connected component, as the edges that walk it."""
    graph: dict[str, list[Edge]] = {}
    for edge in all_edges:
        graph.setdefault(edge.source, []).append(edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph.get(node, ()):
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(all_edges) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_walk(graph, component) for component in components]


def _walk(graph: dict[str, list[Edge]], component: set[str]) -> list[Edge]:
    """A shortest circle through the component's first module (breadth first)."""
    start = min(component)
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph.get(node, ()):
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, came[path[0].source])
                    return path
                if edge.target in component and edge.target not in came:
                    came[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no circle through {start}")  # a strongly connected component has one


def layer_of(module: str, layers: tuple[tuple[str, ...], ...]) -> int:
    """0 for the top layer, len(layers) for the base layer."""
    for number, members in enumerate(layers):
        if any(module == m or module.startswith(m + ".") for m in members):
            return number
    return len(layers)


def upward(all_edges: list[Edge], layers: tuple[tuple[str, ...], ...]) -> list[Edge]:
    return [e for e in all_edges if layer_of(e.target, layers) < layer_of(e.source, layers)]


def check(package: Path, layers: tuple[tuple[str, ...], ...] = ()) -> list[str]:
    """Every finding, one line each (empty when the package keeps the rules)."""
    all_edges = edges(modules(package))
    problems = []
    for circle in cycles(all_edges):
        names = " -> ".join([circle[0].source, *(e.target for e in circle)])
        steps = ", ".join(f"{e.where()} imports {e.target}" for e in circle)
        problems.append(f"import circle: {names} ({steps})")
    for edge in upward(all_edges, layers):
        problems.append(f"{edge.where()}: {edge.source} imports {edge.target}, a higher layer "
                        f"(layer {layer_of(edge.source, layers)} may not import layer {layer_of(edge.target, layers)}; "
                        f"layers in {Path(__file__).name})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=Path(__file__).resolve().parent.parent / "agent")
    parser.add_argument("--no-layers", action="store_true", help="check circles only")
    opts = parser.parse_args(argv)
    problems = check(opts.package, () if opts.no_layers else LAYERS)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print(f"imports of {opts.package.name}/: no circle, no upward import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
