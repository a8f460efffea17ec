"""APGD against the reference (fra31/auto-attack, PyPI ``pyautoattack``): same inputs, steps, restarts.

    PYTHONPATH=.venv-aa/site python bench/bench_apgd.py [--model digits-cnn] [--n 512] [--eps 0.1]

The reference is imported from ``.venv-aa/site`` (``pip install --no-deps --target .venv-aa/site
pyautoattack``): it is never a dependency. Rows: APGD-CE (100 steps, 1 restart), APGD-DLR, APGD-T (9
targets, 100 steps), each ours and the reference's, on the inputs the model classifies correctly; the
table gives robust accuracy (over all n inputs, re-measured by running the model on the clipped output),
the largest perturbation, wall time, and our forward passes. One torch thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / ".venv-aa" / "site"))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from attackgen.models.zoo import load_builtin_data, load_builtin_model  # noqa: E402
from attackgen.run.access import WhiteBoxAccess  # noqa: E402
from attackgen.run.attacks.apgd import APGDCE, APGDDLR, APGDT  # noqa: E402
from attackgen.run.attacks.base import Budget  # noqa: E402
from attackgen.run.objectives.classification import ClassificationObjective  # noqa: E402

DATA = {"digits-cnn": "digits", "fashion-cnn": "fashion"}


def reference() -> object | None:
    try:
        import pyautoattack  # noqa: F401
    except ImportError:
        try:
            import autoattack  # noqa: F401
        except ImportError:
            return None
        return sys.modules["autoattack"]
    return sys.modules["pyautoattack"]


def ours(cls: type, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, budget: Budget,
         **params: object) -> tuple[torch.Tensor, int]:
    access = WhiteBoxAccess(model, len(x))
    out = cls(seed=0, **params).run(access, x, ClassificationObjective(y), budget).x_adv
    return out, int(access.queries.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits-cnn", choices=sorted(DATA))
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--norm", default="inf", choices=["inf", "2"])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_builtin_model(args.model).requires_grad_(False).eval()
    data = load_builtin_data(DATA[args.model]).take(slice(0, args.n))
    x, y = data.x, data.y
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    xc, yc = x[correct], y[correct]
    budget = Budget(norm=args.norm, epsilon=args.eps)
    ref = reference()
    rows: list[tuple[str, str, Callable[[], tuple[torch.Tensor, int | None]]]] = [
        ("APGD-CE", "ours", lambda: ours(APGDCE, model, xc, yc, budget, steps=args.steps)),
        ("APGD-DLR", "ours", lambda: ours(APGDDLR, model, xc, yc, budget, steps=args.steps)),
        ("APGD-T", "ours", lambda: ours(APGDT, model, xc, yc, budget, steps=args.steps)),
    ]
    if ref is not None:
        from importlib import import_module

        base = import_module(ref.__name__ + ".autopgd_base")
        norm = {"inf": "Linf", "2": "L2"}[args.norm]

        def reference_run(loss: str | None) -> tuple[torch.Tensor, None]:
            if loss is None:
                attack = base.APGDAttack_targeted(model, n_iter=args.steps, norm=norm, eps=args.eps, seed=0,
                                                  n_target_classes=9, device="cpu")
            else:
                attack = base.APGDAttack(model, n_iter=args.steps, norm=norm, eps=args.eps, seed=0, loss=loss,
                                         device="cpu")
            return attack.perturb(xc.clone(), yc.clone()), None

        rows += [("APGD-CE", "reference", lambda: reference_run("ce")),
                 ("APGD-DLR", "reference", lambda: reference_run("dlr")),
                 ("APGD-T", "reference", lambda: reference_run(None))]
    else:
        print("reference AutoAttack not importable: only our rows (see the module docstring)")
    print(f"{args.model}, {len(x)} inputs ({int(correct.sum())} correct), L{args.norm} eps {args.eps}, "
          f"{args.steps} steps; load: {os.getloadavg()[0]:.2f}")
    print("| attack | implementation | robust acc % | max pert | wall s | passes |")
    print("|---|---|---:|---:|---:|---:|")
    for name, impl, run in sorted(rows, key=lambda r: r[0]):
        started = time.perf_counter()
        adv, passes = run()
        wall = time.perf_counter() - started
        adv = adv.detach().clamp(0, 1)
        with torch.no_grad():
            still = model(adv).argmax(1) == yc
        delta = (adv - xc).flatten(1)
        pert = delta.abs().amax() if args.norm == "inf" else delta.norm(dim=1).amax()
        print(f"| {name} | {impl} | {100 * float(still.sum()) / len(x):.1f} | {float(pert):.4f} | {wall:.1f} | "
              f"{passes if passes is not None else '-'} |")


if __name__ == "__main__":
    main()
