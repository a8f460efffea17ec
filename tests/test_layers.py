"""The layering promise: taxonomy and planning never import torch, and nothing imports upward."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "foolbox", "matplotlib", "sklearn", "numpy")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_taxonomy_imports_neither_torch_nor_attackgen() -> None:
    for path in sorted((ROOT / "taxonomy").rglob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in HEAVY, f"{path.relative_to(ROOT)} imports {name}"
            assert top != "attackgen", f"{path.relative_to(ROOT)} reaches up into {name}"


def test_importing_taxonomy_and_results_loads_no_torch() -> None:
    code = (
        "import sys, taxonomy, taxonomy.spec, attackgen.results, attackgen.cli.main;"
        "heavy=[m for m in ('torch','foolbox','numpy') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- the import graph

LAYERS = {
    "taxonomy": 0,
    "attackgen.plan": 1, "attackgen.audit": 1,  # planning and audit: no torch
    "attackgen.models": 2,  # loading, adapters, the zoo
    "attackgen.run": 3,  # execution
    "attackgen.report": 4, "attackgen.cli": 4, "attackgen.__main__": 4, "attackgen.api": 4,
}
"""Layer of each package: a module may import its own layer or lower ones, never a higher one."""
SHARED = {"attackgen", "attackgen.results"}
"""Imported from anywhere: the version, and the torch-free schema of what a run writes."""
ALLOWED_UP = {
    # The zoo's training entry points (python -m attackgen.models.zoo.train...) report a trained model's
    # figures with the run layer's task metrics; nothing imports them, so they form no circle.
    ("attackgen.models.zoo.train", "attackgen.run"),
    ("attackgen.models.zoo.train_dense", "attackgen.run"),
}
"""(module, package it may reach up into), each with its reason."""


def module_graph() -> tuple[dict[str, set[str]], dict[str, Path]]:
    """Every import between modules of taxonomy/ and attackgen/, including the lazy ones inside
    functions and those under TYPE_CHECKING (ast, not import-time), as module -> imported modules."""
    files: dict[str, Path] = {}
    for package in ("taxonomy", "attackgen"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    edges: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            edges[name].update(t for t in targets if t in files and t != name)
    return edges, files


def layer_of(module: str) -> tuple[str, int] | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    return None


def test_no_import_circles() -> None:
    import networkx as nx

    edges, _ = module_graph()
    graph = nx.DiGraph([(a, b) for a, targets in edges.items() for b in targets])
    cycles = sorted(" -> ".join([*c, c[0]]) for c in nx.simple_cycles(graph, length_bound=8))
    assert not cycles, "import circles:\n" + "\n".join(cycles[:20])


def test_every_module_has_a_layer_and_imports_only_downward() -> None:
    edges, files = module_graph()
    unplaced = sorted(m for m in files if m not in SHARED and layer_of(m) is None)
    assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"
    upward = []
    for module, targets in edges.items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if target in SHARED or mine is None or theirs is None or theirs[1] <= mine[1]:
                continue
            if (module, theirs[0]) not in ALLOWED_UP:
                upward.append(f"{module} (layer {mine[1]}) imports {target} (layer {theirs[1]})")
    assert not upward, "\n".join(upward)
    # the shared modules stay shared: the schema imports nothing above taxonomy
    for module in SHARED:
        above = [t for t in edges[module] if t not in SHARED and (layer_of(t) or ("", 0))[1] > 0]
        assert not above, f"{module} imports {above}"


def test_the_graph_sees_lazy_imports() -> None:
    """The check above would pass vacuously if function-level imports were missed."""
    edges, _ = module_graph()
    assert "attackgen.run.surrogates" in edges["attackgen.run.resources"]  # imported inside a method
    assert "taxonomy.graph" in edges["attackgen.plan.checks"]
