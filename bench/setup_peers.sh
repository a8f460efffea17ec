#!/usr/bin/env bash
# A separate venv (.venv-bench) with the peer libraries the PGD benchmark compares against.
# torch is pinned first so nothing pulls CUDA torch; torchattacks goes in with --no-deps (its declared
# dependencies pull a torchvision that cannot be imported next to CPU torch and pin requests 2.25);
# ART needs 'packaging' (and its AutoAttack 'multiprocess'), which it does not declare. See
# ../shared/reference/offline-deps-and-data.md §0.
# The reference AutoAttack (Croce & Hein's code, fra31/auto-attack) is on PyPI as 'pyautoattack' (module
# pyautoattack); it declares no dependencies, so --no-deps changes nothing but keeps torch pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-bench}
PY=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints.txt "$(head -1 constraints.txt)"
"$VENV/bin/python" -m pip install -q --no-deps torchattacks==3.5.1
"$VENV/bin/python" -m pip install -q --no-deps pyautoattack==0.2.0
"$VENV/bin/python" -m pip install -q -c constraints.txt adversarial-robustness-toolbox packaging multiprocess scipy tqdm scikit-learn
"$VENV/bin/python" -m pip install -q -c constraints.txt -e .
"$VENV/bin/python" - <<'PY'
import importlib
for name in ("torch", "foolbox", "torchattacks", "art", "pyautoattack"):
    module = importlib.import_module(name)
    print(f"{name} {getattr(module, '__version__', '?')}")
PY
echo "peers ready: $VENV/bin/python bench/bench_pgd.py (or bench/bench_autoattack.py)"
