"""APGD against the reference (fra31/auto-attack, PyPI ``pyautoattack``): same inputs, steps, restarts.

    python bench/bench_apgd.py [--model digits-cnn] [--n 512] [--eps 0.1]      # APGD rows
    python bench/bench_apgd.py --survivors   # what each other attack adds after the default plan's APGD pair
    python bench/bench_apgd.py --autoattack  # reference AutoAttack standard vs our preset vs our default plan

The reference is imported from ``.venv-aa/site`` (``pip install --no-deps --target .venv-aa/site
pyautoattack``): it is never a dependency. Rows: APGD-CE (100 steps, 1 restart), APGD-DLR, APGD-T (9
targets, 100 steps), each ours and the reference's, on the inputs the model classifies correctly; the
table gives robust accuracy (over all n inputs, re-measured by running the model on the clipped output),
"reference's starts" rows draw the random starts as the reference does (``batch_start``), so they
must match it exactly; the plain rows use per-input streams (independent of the batch) and differ by
the starts only;
the largest perturbation, wall time, and our forward passes. One torch thread.

``--survivors`` runs the default white-box plan's gradient part (APGD-CE, then APGD-T with the 9 targets
side by side) and then every other gradient attack and Square (5,000 queries) on the inputs it left:
the planner leaves out the attacks that break none of them (attackgen.plan.planner.FAST_CORE).
``--autoattack`` times the reference AutoAttack standard against the same sequence as our preset and as
our default plan (APGD pair + Square with the planner's 1,000 queries on the survivors), each stage on the
inputs the earlier ones left, as the executor runs them.
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
from attackgen.run.access import ScoreOracle, WhiteBoxAccess  # noqa: E402
from attackgen.run.attacks.apgd import APGDCE, APGDDLR, APGDT  # noqa: E402
from attackgen.run.attacks.base import Budget  # noqa: E402
from attackgen.run.attacks.deepfool import DeepFool  # noqa: E402
from attackgen.run.attacks.fmn import FMN  # noqa: E402
from attackgen.run.attacks.fmn_t import TargetedFMNSweep  # noqa: E402
from attackgen.run.attacks.mifgsm import MIFGSM  # noqa: E402
from attackgen.run.attacks.pgd import L2PGD, LinfPGD  # noqa: E402
from attackgen.run.attacks.square import SquareL2, SquareLinf  # noqa: E402
from attackgen.run.objectives.classification import ClassificationObjective  # noqa: E402

DATA = {"digits-cnn": "digits", "fashion-cnn": "fashion-mnist"}


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


Stage = tuple[str, type, dict[str, object]]


def sequence(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, budget: Budget, stages: list[Stage],
             alive: torch.Tensor | None = None) -> tuple[torch.Tensor, list[tuple[str, int, int, float]]]:
    """Each stage on the inputs the earlier ones left (as the executor runs a plan); success re-measured."""
    if alive is None:
        with torch.no_grad():
            alive = model(x).argmax(1) == y
    alive = alive.clone()
    log = []
    for name, cls, params in stages:
        idx = alive.nonzero().squeeze(1)
        if idx.numel() == 0:
            log.append((name, 0, 0, 0.0))
            continue
        started = time.perf_counter()
        access = (ScoreOracle(model, len(idx), "logits") if cls in (SquareLinf, SquareL2)
                  else WhiteBoxAccess(model, len(idx)))
        out = cls(seed=0, **params).run(access, x[idx], ClassificationObjective(y[idx]), budget).x_adv
        out = budget.project(x[idx], out.detach())
        with torch.no_grad():
            broken = model(out).argmax(1) != y[idx]
        alive[idx[broken]] = False
        log.append((name, int(broken.sum()), len(idx), time.perf_counter() - started))
    return alive, log


def core(norm: str, steps: int) -> list[Stage]:
    return [("apgd_ce", APGDCE, {"steps": steps}),
            ("apgd_t (parallel targets)", APGDT, {"steps": steps, "parallel_targets": True})]


def square(norm: str, queries: int) -> Stage:
    return (f"square {queries}", SquareLinf if norm == "inf" else SquareL2, {"n_queries": queries, "p_init": 0.8})


def survivors(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, budget: Budget, steps: int) -> None:
    alive, log = sequence(model, x, y, budget, core(budget.norm or "inf", steps))
    for name, broken, attacked, wall in log:
        print(f"| {name} | {attacked} | {broken} | {wall:.1f} |")
    pgd = LinfPGD if budget.norm == "inf" else L2PGD
    others: list[Stage] = [
        ("pgd 40", pgd, {"steps": 40}), ("pgd 10x100 restarts", pgd, {"steps": 100, "restarts": 10}),
        ("apgd_dlr", APGDDLR, {"steps": steps}), ("fmn 500", FMN, {"steps": 500}),
        ("fmn_t", TargetedFMNSweep, {"steps": 100}), ("deepfool", DeepFool, {}), square(budget.norm or "inf", 5000)]
    if budget.norm == "inf":
        others.append(("mifgsm", MIFGSM, {}))
    for stage in others:
        _, extra = sequence(model, x, y, budget, [stage], alive)
        for name, broken, attacked, wall in extra:
            print(f"| {name} on the survivors | {attacked} | {broken} | {wall:.1f} |")
    print(f"robust accuracy after the APGD pair: {100 * float(alive.sum()) / len(x):.1f}%")


def autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, budget: Budget, ref: object | None) -> None:
    norm = budget.norm or "inf"
    runs: dict[str, list[Stage]] = {
        "attackgen default plan": [*core(norm, 100), square(norm, 1000)],
        "attackgen --preset autoattack-standard": [
            ("apgd_ce", APGDCE, {"steps": 100}), ("apgd_t", APGDT, {"steps": 100, "parallel_targets": False}),
            ("fmn_t", TargetedFMNSweep, {"steps": 100}), square(norm, 5000)],
    }
    for label, stages in runs.items():
        started = time.perf_counter()
        alive, log = sequence(model, x, y, budget, stages)
        wall = time.perf_counter() - started
        detail = "; ".join(f"{n} {b}/{a} {w:.1f}s" for n, b, a, w in log)
        print(f"| {label} | {100 * float(alive.sum()) / len(x):.1f} | {wall:.1f} | {detail} |")
    if ref is None:
        print("reference AutoAttack not importable: see the module docstring")
        return
    from importlib import import_module

    aa = import_module(ref.__name__ + ".autoattack").AutoAttack(
        model, norm={"inf": "Linf", "2": "L2"}[norm], eps=budget.epsilon, version="standard", seed=0, device="cpu")
    started = time.perf_counter()
    out = aa.run_standard_evaluation(x.clone(), y.clone(), batch_size=len(x))
    out = out[0] if isinstance(out, tuple) else out
    wall = time.perf_counter() - started
    with torch.no_grad():
        robust = (model(out.clamp(0, 1)).argmax(1) == y).float().mean()
    print(f"| reference AutoAttack standard | {100 * float(robust):.1f} | {wall:.1f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits-cnn", choices=sorted(DATA))
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--norm", default="inf", choices=["inf", "2"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--survivors", action="store_true", help="what other attacks add after the APGD pair")
    parser.add_argument("--autoattack", action="store_true", help="reference AutoAttack vs preset vs default plan")
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
    print(f"{args.model}, {len(x)} inputs ({int(correct.sum())} correct), L{args.norm} eps {args.eps}; "
          f"load: {os.getloadavg()[0]:.2f}")
    if args.survivors:
        print("| attack | attacked | broken | wall s |\n|---|---:|---:|---:|")
        survivors(model, x, y, budget, args.steps)
        return
    if args.autoattack:
        print("| evaluation | robust acc % | wall s | stages (broken/attacked) |\n|---|---:|---:|---|")
        autoattack(model, x, y, budget, ref)
        return
    rows: list[tuple[str, str, Callable[[], tuple[torch.Tensor, int | None]]]] = [
        ("APGD-CE", "ours", lambda: ours(APGDCE, model, xc, yc, budget, steps=args.steps)),
        ("APGD-DLR", "ours", lambda: ours(APGDDLR, model, xc, yc, budget, steps=args.steps)),
        ("APGD-T", "ours", lambda: ours(APGDT, model, xc, yc, budget, steps=args.steps, parallel_targets=False)),
        ("APGD-T", "ours, parallel targets", lambda: ours(APGDT, model, xc, yc, budget, steps=args.steps)),
        ("APGD-CE", "ours, reference's starts", lambda: ours(APGDCE, model, xc, yc, budget, steps=args.steps,
                                                            batch_start=True)),
        ("APGD-DLR", "ours, reference's starts", lambda: ours(APGDDLR, model, xc, yc, budget, steps=args.steps,
                                                             batch_start=True)),
        ("APGD-T", "ours, reference's starts", lambda: ours(APGDT, model, xc, yc, budget, steps=args.steps,
                                                           parallel_targets=False, batch_start=True)),
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
