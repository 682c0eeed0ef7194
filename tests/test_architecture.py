"""The layout the README's Architecture section describes: packages by concept, no import cycle."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "reprogram"


def _graph_module():
    spec = importlib.util.spec_from_file_location(
        "import_graph", ROOT / "scripts" / "import_graph.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle_between_packages() -> None:
    graph = _graph_module()
    edges = graph.package_graph(SRC)
    assert {"engine", "model", "data", "text", "report"} <= set(edges)
    assert graph.cycles(edges) == []
    assert "report" not in edges["engine"]  # attribution maths lives beside the aggregations


def test_cycle_check_finds_a_cycle() -> None:
    graph = _graph_module()
    assert graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    ]


def test_package_root_holds_only_the_face() -> None:
    modules = {p.stem for p in SRC.glob("*.py")}
    assert modules <= {"__init__", "__main__", "errors"}


def test_no_source_file_is_much_over_500_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 550
    }
    assert long == {}


# the README's Architecture list, in data-flow order
FLOW = [
    "storage",
    "backbones",
    "data",
    "text",
    "model",
    "engine",
    "export",
    "protocols",
    "report",
    "speed",
    "toy",
    "sweep",
    "tune",
    "cli",
]


def test_each_package_imports_only_those_before_it_in_the_flow() -> None:
    edges = _graph_module().package_graph(SRC)
    assert set(edges) == set(FLOW)
    backwards = {
        (a, b) for a, targets in edges.items() for b in targets if FLOW.index(b) > FLOW.index(a)
    }
    assert backwards == set()
