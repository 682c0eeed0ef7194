"""The package-level import graph of ``reprogram`` (every import, function-level ones too).

``python scripts/import_graph.py`` prints it as a Mermaid diagram (docs/architecture.md holds
the drawing); ``--check`` exits non-zero if two packages import each other, directly or through
others. ``tests/test_architecture.py`` runs the same check.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "reprogram"
FACE = {"__init__", "__main__", "errors"}  # the package face: anyone may import it


def package_of(module: str) -> str | None:
    """``reprogram.engine.train`` -> ``engine``; the face and assets -> None."""
    parts = module.split(".")
    if parts[0] != "reprogram" or len(parts) < 2 or parts[1] in FACE:
        return None
    return parts[1]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_graph(src: Path = SRC) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.py")):
        own = package_of("reprogram." + ".".join(path.relative_to(src).with_suffix("").parts))
        if own is None:
            continue
        edges = graph.setdefault(own, set())
        for module in imports_of(path):
            other = package_of(module)
            if other is not None and other != own and (src / other).is_dir():
                edges.add(other)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Pairs (a, b) where a reaches b and b reaches a."""

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reached = {node: reach(node) for node in graph}
    return sorted((a, b) for a in graph for b in reached[a] if a < b and a in reached.get(b, set()))


def mermaid(graph: dict[str, set[str]]) -> str:
    lines = ["graph TD"]
    lines += [f"  {a} --> {b}" for a in sorted(graph) for b in sorted(graph[a])]
    return "\n".join(lines)


if __name__ == "__main__":
    graph = package_graph()
    if "--check" in sys.argv:
        found = cycles(graph)
        for a, b in found:
            print(f"import cycle: {a} <-> {b}")
        sys.exit(1 if found else 0)
    print(mermaid(graph))
