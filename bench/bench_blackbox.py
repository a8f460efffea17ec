"""Benchmark: the query-based and evolutionary attacks on the built-in digits CNN, figures printed.

Every figure is re-measured by running the model on the clipped output. Rows:

- Square Linf 0.1 / 1000 queries, on the first N test inputs (misclassified ones included): clean and
  robust accuracy, the drop, queries per input;
- Square L2 and SimBA (DCT) at L2 1.5 / 1000 queries;
- HopSkipJump (label-only, L2, minimal norm, 25 steps / 5000 queries) and the Boundary attack (10000
  queries) against foolbox's L2CarliniWagnerAttack (5 x 200 steps, white-box) on the same correctly
  classified inputs: median L2 and the ratio to C&W;
- few-pixel differential evolution (L0 = 5, 2000 queries);
- CPPN EA Fool: one image per class, queries until the model is 99 % confident.

    python bench/bench_blackbox.py [--n 64] [--threads 2] [--skip-slow]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="test inputs (default 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-slow", action="store_true", help="skip C&W, HopSkipJump and Boundary")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from attackgen.models.zoo.data import load_digits_data
    from attackgen.models.zoo.models import load_builtin_model
    from attackgen.run.access import LabelOracle, ScoreOracle
    from attackgen.run.attacks.base import Budget
    from attackgen.run.attacks.boundary import BoundaryAttack
    from attackgen.run.attacks.cppn import CPPNEAFool
    from attackgen.run.attacks.evolution import DifferentialEvolution
    from attackgen.run.attacks.hopskipjump import HopSkipJump
    from attackgen.run.attacks.simba import SimBA
    from attackgen.run.attacks.square import SquareL2, SquareLinf
    from attackgen.run.objectives.classification import ClassificationObjective

    model = load_builtin_model("digits-cnn")
    data = load_digits_data("test")
    x_all, y_all = data.x[: args.n], data.y[: args.n]

    def predict(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model(x.clamp(0, 1)).argmax(1)

    ok = predict(x_all) == y_all
    x, y = x_all[ok], y_all[ok]
    rows: list[tuple[str, ...]] = []
    print(f"digits-cnn, {args.n} test inputs ({int(ok.sum())} correctly classified), {args.threads} threads")

    def score_row(name: str, attack: Any, budget: Budget, queries: int, xs: Tensor, ys: Tensor) -> None:
        oracle = ScoreOracle(model, len(xs), "probabilities", budget=queries)
        out, secs = timed(lambda: attack.run(oracle, xs, ClassificationObjective(ys), budget))
        clean = float((predict(xs) == ys).float().mean())
        robust = float((predict(out.x_adv) == ys).float().mean())
        q = oracle.queries.float()
        rows.append((name, f"{clean:.3f}", f"{robust:.3f}", f"{clean - robust:+.3f}", f"{q.median():.0f}",
                     f"{q.mean():.0f}", f"{int(q.max())}", f"{secs:.1f}"))

    score_row("square_linf eps 0.1", SquareLinf(n_queries=1000), Budget(norm="inf", epsilon=0.1), 1000,
              x_all, y_all)
    score_row("square_l2 eps 1.5", SquareL2(n_queries=1000), Budget(norm="2", epsilon=1.5), 1000, x_all, y_all)
    score_row("simba_dct eps 1.5", SimBA(basis="dct", max_queries=1000), Budget(norm="2", epsilon=1.5), 1000,
              x_all, y_all)
    score_row("differential_evolution L0 5", DifferentialEvolution(popsize=20, maxiter=99),
              Budget(norm="0", epsilon=5), 2000, x_all, y_all)
    print("\n| attack | clean acc | robust acc | drop | median q | mean q | max q | time s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")

    # CPPN: one fooling image per class
    classes = torch.arange(10)
    oracle = ScoreOracle(model, 10, "probabilities", budget=None)
    out, secs = timed(lambda: CPPNEAFool().run(
        oracle, torch.zeros(10, 1, 16, 16), ClassificationObjective(classes, classes), Budget(norm=None)))
    with torch.no_grad():
        conf = model(out.x_adv).softmax(1).gather(1, classes[:, None]).squeeze(1)
    print(f"\nCPPN EA Fool, one image per class: {int((conf >= 0.99).sum())}/10 at >= 0.99 confidence, "
          f"min {float(conf.min()):.4f}; queries median {oracle.queries.float().median():.0f}, "
          f"max {int(oracle.queries.max())}; {secs:.1f} s")

    if args.skip_slow:
        return
    import foolbox as fb

    def l2(adv: Tensor) -> Tensor:
        return (adv.clamp(0, 1) - x).flatten(1).norm(dim=1)

    (_, cw_adv, cw_ok), cw_s = timed(lambda: fb.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=200)(
        fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None))
    cw = float(l2(cw_adv)[cw_ok].median())
    print(f"\nminimal L2 on {len(x)} correctly classified inputs:")
    print("| attack | access | success | median L2 | / C&W | median q | time s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| foolbox C&W L2 (5 x 200) | gradients | {float(cw_ok.float().mean()):.3f} | {cw:.3f} | 1.00 | - | "
          f"{cw_s:.1f} |")
    for name, attack in (("hopskipjump (25 steps, 5000 q)", HopSkipJump()),
                         ("boundary (10000 q)", BoundaryAttack())):
        oracle = LabelOracle(model, len(x), budget=None)
        out, secs = timed(lambda attack=attack, oracle=oracle: attack.run(
            oracle, x, ClassificationObjective(y), Budget(norm="2", epsilon=None)))
        hit = predict(out.x_adv) != y
        med = float(l2(out.x_adv)[hit].median())
        print(f"| {name} | labels | {float(hit.float().mean()):.3f} | {med:.3f} | {med / cw:.2f} | "
              f"{oracle.queries.float().median():.0f} | {secs:.1f} |")


if __name__ == "__main__":
    main()
