"""Square attack: attackgen's against torchattacks' on the same inputs, queries and p_init, per query.

    .venv-bench/bin/python bench/bench_square.py [--n 128] [--queries 1000] [--repeats 2] [--norms inf,2] [--tiny]

Two settings per norm (Linf and L2) on the built-in digits CNN:

- "attack": the usual epsilon (Linf 0.1, L2 1.5): success and time, inputs stop when they succeed;
- "no success": a tiny epsilon (Linf 0.002, L2 0.02) that no input can reach, so both spend every
  query on every input with the same batch sizes: the pure cost of a query, overheads included.

Three libraries per setting: attackgen with its default per-input draws, attackgen with ``draws:
autoattack`` (the reference's shared stream and schedule, as the AutoAttack presets run it; ``n_queries``
proposals after the initial point, as torchattacks and the reference), and torchattacks.

Time per query = the process's CPU time (steadier than wall time on a shared machine; wall is shown
too) over the inputs forwarded through the model, counted by a wrapper. attackgen's Square queries a
counted, budgeted ScoreOracle (logits); torchattacks calls the model directly. Runs alternate between
the two libraries; the table gives the median over the repeats and the ratio attackgen / torchattacks
(without torchattacks installed: its rows are left out and the ratio is to attackgen's per-input row).

``--tiny``: a 1-layer linear model (seeded, untrained) instead of the CNN, so the model costs almost
nothing and the time is the attack's own per-iteration work (labels: the model's own predictions, so
every input starts correct); the table adds CPU ms per iteration (the "no success" rows: every input
makes every query).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.run.access import ScoreOracle
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.square import SquareL2, SquareLinf
from attackgen.run.objectives.classification import ClassificationObjective


class Counted(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, 0

    def forward(self, x: Tensor) -> Tensor:
        self.inputs += int(x.shape[0])
        return self.model(x)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--p-init", type=float, default=0.8, help="both libraries (AutoAttack's value)")
    parser.add_argument("--norms", default="inf,2", help="comma-separated: inf, 2")
    parser.add_argument("--tiny", action="store_true", help="a 1-layer linear model: the attack's own cost")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import torchattacks
    except ImportError:
        torchattacks = None

    data = load_builtin_data("digits")
    x, y = data.x[: args.n], data.y[: args.n]
    if args.tiny:
        torch.manual_seed(0)
        model: nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 10)).requires_grad_(False)
        y = model(x).argmax(dim=1)  # its own labels: every input starts correct, as with the CNN
    else:
        model = load_builtin_model("digits-cnn").requires_grad_(False)

    def ours(norm: str, eps: float, draws: str = "per_input") -> tuple[Tensor, int]:
        counted = Counted(model)
        extra = {"draws": draws, "rescale_schedule": True}
        attack = (SquareLinf if norm == "inf" else SquareL2)(n_queries=args.queries, p_init=args.p_init, seed=0,
                                                             **extra)
        oracle = ScoreOracle(counted, len(x), "logits", budget=args.queries + 1)
        out = attack.run(oracle, x, ClassificationObjective(y), Budget(norm=norm, epsilon=eps))
        return out.x_adv, counted.inputs

    def ours_aa(norm: str, eps: float) -> tuple[Tensor, int]:
        return ours(norm, eps, "autoattack")

    def theirs(norm: str, eps: float) -> tuple[Tensor, int]:
        counted = Counted(model)
        attack = torchattacks.Square(counted, norm="Linf" if norm == "inf" else "L2", eps=eps,
                                     n_queries=args.queries, p_init=args.p_init, seed=0)
        return attack(x, y), counted.inputs

    load = os.getloadavg()
    name = "1-layer linear" if args.tiny else "digits-cnn"
    print(f"{name}, {args.n} test inputs, {args.queries} queries, p_init {args.p_init}, 1 thread, "
          f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("\n| setting | library | robust acc | inputs forwarded | CPU s | wall s | CPU us / query "
          "| CPU ms / iteration | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    libraries = [("attackgen", ours), ("attackgen draws=autoattack", ours_aa)]
    if torchattacks is not None:
        libraries.append(("torchattacks", theirs))
    base = "torchattacks" if torchattacks is not None else "attackgen"
    settings = [s for s in (("inf", 0.1, 0.002), ("2", 1.5, 0.02)) if s[0] in args.norms.split(",")]
    for norm, eps_attack, eps_none in settings:
        for setting, eps in (("attack", eps_attack), ("no success", eps_none)):
            runs: dict[str, list[tuple[float, float, int, float]]] = {name: [] for name, _ in libraries}
            for _ in range(args.repeats):
                for name, fn in libraries:
                    wall, cpu = time.perf_counter(), time.process_time()
                    x_adv, inputs = fn(norm, eps)
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    with torch.no_grad():
                        robust = float((model(x_adv.clamp(0, 1)).argmax(1) == y).float().mean())
                    runs[name].append((cpu, wall, inputs, robust))
            per_query = {k: statistics.median(c / q for c, _, q, _ in v) for k, v in runs.items()}
            for name, values in runs.items():
                cpu = statistics.median(v[0] for v in values)
                wall = statistics.median(v[1] for v in values)
                ratio = per_query[name] / per_query[base]
                per_iteration = cpu / args.queries * 1e3  # meaningful where no input stops early
                print(f"| {'Linf' if norm == 'inf' else 'L2'} {eps} ({setting}) | {name} | {values[0][3]:.1%} | "
                      f"{values[0][2]} | {cpu:.1f} | {wall:.1f} | {per_query[name] * 1e6:.0f} | {per_iteration:.2f} | "
                      f"{ratio:.2f} |", flush=True)
    load = os.getloadavg()
    print(f"\nload after {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
