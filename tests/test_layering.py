"""The package's imports point one way (:data:`ecvit.layering.LAYERS`), and ``import ecvit``
leaves the process alone.

The import graph is read from the source (AST), function-level imports included, so these
checks are fast and see imports that only run on some code paths.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from _cli_helpers import ROOT
from ecvit.layering import LAYERS, LAZY_IMPORTS_ALLOWED, layer_of

PACKAGE = ROOT / "ecvit"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the ecvit module imported
    line: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _nearest_module(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.package = module, module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.found: list[Import] = []

    def _in_function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _in_function

    def _add(self, name: str, node: ast.stmt) -> None:
        target = _nearest_module(name)
        if target and target != self.module:
            self.found.append(Import(self.module, target, node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "ecvit" or alias.name.startswith("ecvit."):
                self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        if origin != "ecvit" and not origin.startswith("ecvit."):
            return
        for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
            full = f"{origin}.{alias.name}"
            self._add(full if full in MODULES else origin, node)


def _imports() -> list[Import]:
    found: list[Import] = []
    for module, path in MODULES.items():
        collector = _Collector(module, path.name == "__init__.py")
        collector.visit(ast.parse(path.read_text(), str(path)))
        found += collector.found
    return found


IMPORTS = _imports()


def _where(imp: Import) -> str:
    return f"{MODULES[imp.source].relative_to(ROOT)}:{imp.line} imports {imp.target}"


def test_the_collector_sees_every_kind_of_import():
    """The checks below are only as good as the graph: a known edge of each kind is in it."""
    edges = {(i.source, i.target, i.in_function) for i in IMPORTS}
    assert ("ecvit.engine.trainer", "ecvit.engine.distributed", False) in edges  # from pkg import mod
    assert ("ecvit.io.weights", "ecvit.models.registry", False) in edges
    assert any(s == "ecvit.cli" and f for s, _, f in edges)  # the command line imports lazily


def test_every_module_belongs_to_one_layer():
    missing = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            missing.append(module)
    assert not missing, f"modules in no layer of ecvit.layering.LAYERS: {missing}"
    names = [name for name, _, _ in LAYERS]
    assert len(names) == len(set(names)) and set(LAZY_IMPORTS_ALLOWED) <= set(names)


def test_imports_point_down_only():
    bad = []
    for imp in IMPORTS:
        (layer, rank), (target_layer, target_rank) = layer_of(imp.source), layer_of(imp.target)
        if target_layer != layer and target_rank >= rank:
            bad.append(f"{_where(imp)} ({layer} -> {target_layer})")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_no_function_level_imports_below_the_command_line():
    bad = [_where(i) for i in IMPORTS if i.in_function and layer_of(i.source)[0] not in LAZY_IMPORTS_ALLOWED]
    assert not bad, "function-level ecvit imports (import at the top instead):\n" + "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for imp in IMPORTS:
        graph.setdefault(imp.source, set()).add(imp.target)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None


def test_import_ecvit_leaves_the_environment_alone():
    """No environment variable set (the OpenMP policy belongs to the command line) and no
    torch imported (so a command line that imports ecvit can still set it)."""
    code = ("import os, sys; e = dict(os.environ); import ecvit; "
            "assert e == dict(os.environ), {k: v for k, v in os.environ.items() if e.get(k) != v}; "
            "assert 'torch' not in sys.modules")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "TORCHINDUCTOR_CACHE_DIR")}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True)


def test_timm_sees_the_models_whichever_is_imported_first():
    code = ("import {first}, {second}; import timm; "
            "assert 'cvt_13' in timm.list_models('cvt*') and 'dws_vit_tiny' in timm.list_models()")
    for first, second in (("ecvit", "timm"), ("timm", "ecvit")):
        subprocess.run([sys.executable, "-c", code.format(first=first, second=second)], cwd=ROOT, check=True,
                       capture_output=True, text=True)
