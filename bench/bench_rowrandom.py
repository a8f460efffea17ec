"""Per-draw cost of the per-input streams (attackgen.run.attacks.randomness) against one torch.Generator
per input stacked (the implementation before issue #12's counter-based streams), for 256 inputs.

    OMP_NUM_THREADS=1 python bench/bench_rowrandom.py [--n 256] [--repeat 30]

Prints milliseconds per draw for the draws the attacks make: Square Linf's three per query (two window
corners and the channel signs), a PGD random start over 1x28x28 digits, a randn of the same size, and a
SimBA order (randperm of 784). Ratios within one run are what to compare on a loaded machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from attackgen.run.attacks.randomness import RowRandom, row_seeds_for


def per_generator_draws(seeds: list[int]) -> dict[str, Callable[[], object]]:
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return {
        "square query (3 randint)": lambda: [torch.stack([torch.randint(0, 20, (), generator=g) for g in gens]),
                                             torch.stack([torch.randint(0, 20, (), generator=g) for g in gens]),
                                             torch.stack([torch.randint(0, 2, (1, 1, 1), generator=g) for g in gens])],
        "rand 1x28x28": lambda: torch.stack([torch.rand((1, 28, 28), generator=g) for g in gens]),
        "randn 1x28x28": lambda: torch.stack([torch.randn((1, 28, 28), generator=g) for g in gens]),
        "randperm 784": lambda: torch.stack([torch.randperm(784, generator=g) for g in gens]),
    }


def counter_draws(seeds: list[int]) -> dict[str, Callable[[], object]]:
    rng = RowRandom(seeds, "cpu")
    return {
        "square query (3 randint)": lambda: [rng.randint(0, 20), rng.randint(0, 20), rng.randint(0, 2, 1, 1, 1)],
        "rand 1x28x28": lambda: rng.rand(1, 28, 28),
        "randn 1x28x28": lambda: rng.randn(1, 28, 28),
        "randperm 784": lambda: rng.randperm(784),
    }


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = row_seeds_for(0, args.n)
    before, after = per_generator_draws(seeds), counter_draws(seeds)
    print(f"{args.n} inputs, one torch thread; ms per draw")
    print(f"{'draw':28s} {'generator per input':>20s} {'counter-based':>14s} {'ratio':>6s}")
    for name in before:
        b, a = timed(before[name], args.repeat), timed(after[name], args.repeat)
        print(f"{name:28s} {b:20.2f} {a:14.2f} {b / a:6.1f}x")


if __name__ == "__main__":
    main()
