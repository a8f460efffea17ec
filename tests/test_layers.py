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
