"""Threads per run: one signed-gradient step (forward + backward) on a batch, at 1 and 2 torch threads.

Measures the built-in digits CNN and user-style CNNs of growing cost, interleaving the thread counts so
that load changes hit both alike; prints the multiply-accumulates per input (what
``attackgen.run.threads`` decides on) and the median seconds per step. Run it on the machine you care
about: ``python bench/bench_threads.py``; on a loaded machine the ratios, not the seconds, are the result.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch import nn

from attackgen.models.zoo import load_builtin_model
from attackgen.run.threads import macs_per_input


def user_cnn(width: int, side: int) -> tuple[nn.Module, tuple[int, ...]]:
    """A plain VGG-style CNN on ``side``x``side`` RGB inputs, ``width`` channels in the first block."""
    layers: list[nn.Module] = []
    channels = 3
    for block in range(3):
        out = width * 2**block
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(), nn.Conv2d(out, out, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        channels = out
    layers += [nn.Flatten(), nn.Linear(channels * (side // 8) ** 2, 10)]
    return nn.Sequential(*layers).eval(), (3, side, side)


def step_time(model: nn.Module, shape: tuple[int, ...], batch: int, threads: int, repeats: int) -> float:
    torch.set_num_threads(threads)
    x = torch.rand(batch, *shape)
    y = torch.zeros(batch, dtype=torch.long)
    times = []
    for _ in range(repeats):
        adv = x.clone().requires_grad_(True)
        started = time.perf_counter()
        loss = nn.functional.cross_entropy(model(adv), y)
        torch.autograd.grad(loss, adv)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    models = {"digits-cnn": (load_builtin_model("digits-cnn").eval(), (1, 16, 16)),
              "user cnn 16ch 32px": user_cnn(16, 32), "user cnn 32ch 64px": user_cnn(32, 64),
              "user cnn 64ch 96px": user_cnn(64, 96)}
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; batch 32, median of 5 per round")
    for name, (model, shape) in models.items():
        model.requires_grad_(False)
        macs = macs_per_input(model, shape)
        rounds: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(3):
            for threads in (1, 2):
                rounds[threads].append(step_time(model, shape, 32, threads, 5))
        one, two = statistics.median(rounds[1]), statistics.median(rounds[2])
        print(f"{name:20s} {macs / 1e6:8.1f} M MAC/input   1 thread {one * 1e3:8.1f} ms   2 threads {two * 1e3:8.1f} ms"
              f"   2t/1t {two / one:5.2f}")


if __name__ == "__main__":
    main()
