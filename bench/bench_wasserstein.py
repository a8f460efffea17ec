"""Benchmark: Wasserstein PGD against ART's Wasserstein attack (the same algorithm, Wong et al. 2019).

Both attack the built-in digits CNN at one fixed radius (ART's epsilon growth switched off:
``eps_iter = steps + 1`` steps), with sign steps of 0.1, kernel 5, p = 2, the same number of steps; ART uses its
default regularisation (3000) and Sinkhorn iteration caps. Every candidate of both is clipped and
re-measured with attackgen's exact transport linear program (``attackgen.run.wasserstein``), twice: with
moves of at most 2 pixels (the kernel both attacks optimise over; what attackgen's executor checks)
and unrestricted (a kernel covering the whole 16x16 image: the true Wasserstein distance). A success
counts only when the model is fooled AND the unrestricted exact cost is within the radius.

Needs the peer environment (bench/setup_peers.sh builds .venv-bench with ART):

    .venv-bench/bin/python bench/bench_wasserstein.py [--n 32] [--radius 0.3] [--steps 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--radius", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from attackgen.models.zoo import load_builtin_data, load_builtin_model
    from attackgen.run.access import WhiteBoxAccess
    from attackgen.run.attacks.base import Budget
    from attackgen.run.attacks.wasserstein import WassersteinPGD
    from attackgen.run.objectives.classification import ClassificationObjective
    from attackgen.run.wasserstein import wasserstein_distance

    model = load_builtin_model("digits-cnn").eval().requires_grad_(False)
    data = load_builtin_data("digits")
    with torch.no_grad():
        correct = model(data.x).argmax(1) == data.y
    x, y = data.x[correct][: args.n], data.y[correct][: args.n]

    def score(name: str, x_adv: torch.Tensor, seconds: float, cpu: float) -> None:
        x_adv = x_adv.clamp(0, 1)
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != y
        local = wasserstein_distance(x, x_adv)
        cost = wasserstein_distance(x, x_adv, kernel=31)
        inside = cost <= args.radius * (1 + 1e-6)
        print(f"{name:>12}: fooled {float(fooled.float().mean()):.3f}; within the radius: unrestricted "
              f"{float(inside.float().mean()):.3f}, moves <= 2 px "
              f"{float((local <= args.radius * (1 + 1e-6)).float().mean()):.3f}; "
              f"verified success {float((fooled & inside).float().mean()):.3f}; exact cost median "
              f"{float(cost.median()):.4f} max {float(cost.max()):.4f}; {seconds:.1f} s wall, {cpu:.1f} s CPU",
              flush=True)

    c0, t0 = time.process_time(), time.perf_counter()
    ours = WassersteinPGD(steps=args.steps, seed=0).run(
        WhiteBoxAccess(model, len(x)), x, ClassificationObjective(y, None),
        Budget(norm=None, wasserstein_radius=args.radius)).x_adv
    score("attackgen", ours, time.perf_counter() - t0, time.process_time() - c0)

    try:
        from art.attacks.evasion import Wasserstein
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        print("ART is not installed here: run bench/setup_peers.sh and use .venv-bench/bin/python")
        return
    classifier = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    attack = Wasserstein(classifier, targeted=False, regularization=3000.0, p=2, kernel_size=5, eps_step=0.1,
                         norm="inf", ball="wasserstein", eps=args.radius, eps_iter=args.steps + 1, eps_factor=1.01,
                         max_iter=args.steps, batch_size=len(x), verbose=False)
    c0, t0 = time.process_time(), time.perf_counter()
    theirs = attack.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[y.numpy()])
    score("ART", torch.from_numpy(theirs).float(), time.perf_counter() - t0, time.process_time() - c0)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, one torch thread")


if __name__ == "__main__":
    main()
