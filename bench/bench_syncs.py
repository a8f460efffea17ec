"""Host<->device syncs per iteration of the attack loops, counted under torch.profiler (issue #12).

    python bench/bench_syncs.py                 # CPU, with the schedule a GPU gets (one look every K iterations)
    python bench/bench_syncs.py --device cuda   # the same on a GPU (bench/gpu_check.sh runs this)

A sync is what makes the host wait for the device: ``.item()``, ``bool(tensor)``, ``int(tensor)``
(all aten::_local_scalar_dense), ``nonzero`` (also behind boolean indexing), ``.tolist()`` and, on
CUDA, the runtime's cudaStreamSynchronize / cudaDeviceSynchronize. On the CPU none of these waits, but
they are the same calls, so counting them on the CPU tells what a GPU would wait for. Each attack runs
twice on the built-in digits CNN, with a short and a long loop; the difference of the two counts over
the difference of iterations is the count per iteration (what the loop adds), free of the fixed cost
of setting up and finishing. ``syncs.every(K)`` forces the device schedule on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attackgen.run.access import ScoreOracle, WhiteBoxAccess
from attackgen.run.attacks import syncs
from attackgen.run.attacks.base import Budget
from attackgen.run.objectives.classification import ClassificationObjective

SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "cudaStreamSynchronize", "cudaDeviceSynchronize")


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[int], Any]  # iterations -> attack
    access: str  # "white_box" or "scores"
    norm: str
    short: int = 8
    long: int = 40
    minimal: bool = False  # a minimal-norm attack: no epsilon


EPSILON = {"breaks": {"inf": 0.1, "2": 1.0, "1": 3.0}, "resists": {"inf": 0.002, "2": 0.02, "1": 0.02}}
"""Two regimes: inputs break during the loop (the working set shrinks), or none does (the steady loop)."""


def cases() -> list[Case]:
    from attackgen.run.attacks.apgd import APGDCE
    from attackgen.run.attacks.cw import CarliniWagnerL2
    from attackgen.run.attacks.deepfool import DeepFool
    from attackgen.run.attacks.pgd import LinfPGD
    from attackgen.run.attacks.simba import SimBA
    from attackgen.run.attacks.square import SquareL2, SquareLinf

    return [
        Case("pgd_linf", lambda k: LinfPGD(seed=0, steps=k, restarts=1), "white_box", "inf"),
        Case("apgd_ce", lambda k: APGDCE(seed=0, steps=k, restarts=1), "white_box", "inf"),
        Case("apgd_l1", lambda k: APGDCE(seed=0, steps=k, restarts=1), "white_box", "1"),  # radii 3, 2, 1 x eps
        Case("deepfool", lambda k: DeepFool(seed=0, steps=k), "white_box", "2", 2, 6, minimal=True),
        Case("cw_l2", lambda k: CarliniWagnerL2(seed=0, steps=k, binary_search_steps=1, abort_early=False),
             "white_box", "2", minimal=True),
        Case("square_linf", lambda k: SquareLinf(seed=0, n_queries=k), "scores", "inf", 16, 80),
        Case("square_l2", lambda k: SquareL2(seed=0, n_queries=k), "scores", "2", 16, 80),
        Case("simba", lambda k: SimBA(seed=0, max_queries=k), "scores", "2", 16, 80),
    ]


def budget_for(case: Case, regime: str) -> Budget:
    return Budget(norm=case.norm, epsilon=None if case.minimal else EPSILON[regime][case.norm])


@contextmanager
def counting_tolist() -> Iterator[list[int]]:
    """``Tensor.tolist`` does not dispatch to an aten op on the CPU: count its calls by wrapping it."""
    calls = [0]
    original = torch.Tensor.tolist

    def wrapped(self: torch.Tensor) -> Any:
        calls[0] += 1
        return original(self)

    torch.Tensor.tolist = wrapped  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        torch.Tensor.tolist = original  # type: ignore[method-assign]


def count_syncs(fn: Callable[[], Any], device: torch.device) -> int:
    """The syncs ``fn`` makes (see the module docstring)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with counting_tolist() as tolist, profile(activities=activities) as prof:
        fn()
    return tolist[0] + sum(int(e.count) for e in prof.key_averages() if e.key in SYNC_OPS)


def syncs_per_iteration(case: Case, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                        device: torch.device, every: int = syncs.SYNC_EVERY,
                        regime: str = "breaks") -> tuple[float, int, int]:
    """(syncs per loop iteration, syncs of the short run, of the long run) with one look every ``every``."""
    budget = budget_for(case, regime)

    def once(k: int) -> Callable[[], Any]:
        def go() -> Any:
            if case.access == "white_box":
                access: Any = WhiteBoxAccess(model, len(x), device)
            else:
                access = ScoreOracle(model, len(x), "logits", budget=case.long + 1, device=device)
            return case.build(k).run(access, x, ClassificationObjective(y), budget)
        return go

    with syncs.every(every):
        once(case.short)()  # warm-up (lazy inits, caches)
        short = count_syncs(once(case.short), device)
        long = count_syncs(once(case.long), device)
    return (long - short) / (case.long - case.short), short, long


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("-n", type=int, default=64, help="inputs per batch")
    parser.add_argument("--every", type=int, default=syncs.SYNC_EVERY, help="K: iterations between looks")
    parser.add_argument("--attacks", nargs="*", default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from attackgen.models.zoo import load_builtin_data, load_builtin_model

    device = torch.device(args.device)
    model = load_builtin_model("digits-cnn").eval().requires_grad_(False).to(device)
    data = load_builtin_data("digits").take(slice(0, args.n))
    x, y = data.x.to(device), data.y.to(device)
    print(f"device {device}, {args.n} inputs, one look every K={args.every} iterations; syncs counted: "
          f"{', '.join(SYNC_OPS)}, Tensor.tolist")
    print(f"{'attack':<12} {'regime':<8} {'iterations':>10} {'syncs':>10} {'per iteration':>14}")
    for case in cases():
        if args.attacks and case.name not in args.attacks:
            continue
        for regime in ("resists",) if case.minimal else ("resists", "breaks"):
            per, short, long = syncs_per_iteration(case, model, x, y, device, args.every, regime)
            label = "-" if case.minimal else regime
            print(f"{case.name:<12} {label:<8} {f'{case.short}/{case.long}':>10} {f'{short}/{long}':>10} "
                  f"{per:>14.3f}", flush=True)

if __name__ == "__main__":
    main()
