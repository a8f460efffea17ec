"""Where the cross-checks find the reference AutoAttack (pyautoattack, the authors' code): installed, or in
the folder `make test-slow` fills (.peers), or a local .venv-aa/site. Never a dependency of attackgen."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (ROOT / ".peers", ROOT / ".venv-aa" / "site")


def reference_module(submodule: str) -> ModuleType | None:
    """The reference's ``submodule`` (e.g. ``square``), or None where the reference is not importable."""
    for folder in FOLDERS:
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.append(str(folder))
    for name in ("pyautoattack", "autoattack"):
        try:
            return importlib.import_module(f"{name}.{submodule}")
        except ImportError:
            continue
    return None
