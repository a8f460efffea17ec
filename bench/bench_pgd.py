"""PGD Linf benchmark: our LinfPGD against the raw cost of its passes and against the peer libraries.

    python bench/bench_pgd.py                 # with .venv: ours, raw passes, foolbox
    .venv-bench/bin/python bench/bench_pgd.py # after bench/setup_peers.sh: + torchattacks and ART

Settings (the issue's): 512 test inputs, eps 0.1, 40 steps, step 0.01, one random start. Each method
gets one warm-up call, then 3 timed runs (seeds 0, 1, 2), interleaved across methods so load drift hits
all alike; the table shows the median wall time and the median CPU time of the process (steadier than
wall time on a shared machine; on CUDA only wall time means anything), each with its ratio to the raw
40 forward+backward passes, and the robust accuracy (mean over the seeds) measured by re-running the
model on each method's output.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.models.zoo.data import fashion_available
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.fmn import import_foolbox
from attackgen.run.attacks.pgd import LinfPGD
from attackgen.run.objectives.classification import ClassificationObjective

EPS, STEPS, STEP = 0.1, 40, 0.01
Method = Callable[[torch.Tensor, torch.Tensor, int], "torch.Tensor | None"]


def methods(model: torch.nn.Module, device: torch.device) -> dict[str, Method]:
    budget = Budget(norm="inf", epsilon=EPS)

    def raw(x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
        xa = x.clone()
        for _ in range(STEPS):
            xa.requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
            xa = xa.detach()

    def ours(early_stop: bool) -> Method:
        def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
            attack = LinfPGD(seed=seed, steps=STEPS, step_size=STEP, random_start=True, early_stop=early_stop)
            return attack.run(WhiteBoxAccess(model, len(x), device), x, ClassificationObjective(y), budget).x_adv

        return run

    table: dict[str, Method] = {
        "raw 40 x (forward + backward)": raw,
        "attackgen LinfPGD": ours(False),
        "attackgen LinfPGD, early stop": ours(True),
    }
    fb = import_foolbox()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    fb_attack = fb.attacks.LinfPGD(abs_stepsize=STEP, steps=STEPS, random_start=True)

    def foolbox(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return fb_attack(fmodel, x, y, epsilons=EPS)[1]

    table["foolbox 3.3.4 LinfPGD"] = foolbox
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=STEPS, random_start=True)

        def torchattacks_pgd(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
            torch.manual_seed(seed)
            return ta(x, y)

        table[f"torchattacks {torchattacks.__version__} PGD"] = torchattacks_pgd
    except ImportError:
        print("torchattacks not importable: run bench/setup_peers.sh and use .venv-bench/bin/python")
    try:
        import art
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        classifier = PyTorchClassifier(
            model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(model_input_shape[model]),
            nb_classes=10, clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu",
        )

        def art_pgd(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
            np.random.seed(seed)
            attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=EPS, eps_step=STEP, max_iter=STEPS,
                                              num_random_init=1, batch_size=len(x), verbose=False)
            out = attack.generate(x=x.cpu().numpy(), y=y.cpu().numpy())
            return torch.from_numpy(out).to(device)

        table[f"ART {art.__version__} ProjectedGradientDescent"] = art_pgd
    except ImportError:
        print("ART not importable: run bench/setup_peers.sh and use .venv-bench/bin/python")
    return table


model_input_shape: dict[torch.nn.Module, tuple[int, ...]] = {}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(model_name: str, data_name: str, device: torch.device, n: int, repeats: int) -> str:
    model = load_builtin_model(model_name).to(device)
    data = load_builtin_data(data_name).take(slice(0, n))
    x, y = data.x.to(device), data.y.to(device)
    model_input_shape[model] = tuple(x.shape[1:])
    table = methods(model, device)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    times: dict[str, list[float]] = {name: [] for name in table}
    cpu: dict[str, list[float]] = {name: [] for name in table}
    robust: dict[str, list[float]] = {name: [] for name in table}
    for run in table.values():  # warm-up
        run(x, y, 0)
    sync(device)
    for seed in range(repeats):
        for name, run in table.items():
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            out = run(x, y, seed)
            sync(device)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            if out is not None:
                assert float((out - x).abs().max()) <= EPS + 1e-5, name
                with torch.no_grad():
                    robust[name].append(float((model(out.clamp(0, 1)).argmax(1) == y).float().mean()))
    raw = "raw 40 x (forward + backward)"
    base, base_cpu = statistics.median(times[raw]), statistics.median(cpu[raw])
    lines = [
        f"### {model_name} on {data_name}: {n} inputs, clean accuracy {clean:.4f}, device {device}, "
        f"{torch.get_num_threads()} threads",
        "",
        "| method | wall (s) | x raw | CPU (s) | x raw | wall runs (s) | robust accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in table:
        med, med_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        acc = f"{statistics.mean(robust[name]):.4f}" if robust[name] else "–"
        runs = " / ".join(f"{t:.2f}" for t in times[name])
        lines.append(f"| {name} | {med:.3f} | {med / base:.2f} | {med_cpu:.3f} | {med_cpu / base_cpu:.2f} | {runs} "
                     f"| {acc} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["digits", "fashion"], default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    print(f"torch {torch.__version__}; PGD Linf eps {EPS}, {STEPS} steps, step {STEP}, random start\n")
    if args.only in (None, "digits"):
        print(bench("digits-cnn", "digits", device, args.n, args.repeats), "\n", flush=True)
    if args.only in (None, "fashion"):
        if fashion_available():
            print(bench("fashion-cnn", "fashion-mnist", device, args.n, args.repeats), "\n", flush=True)
        else:
            print("fashion-mnist not installed (apt-get install -y dataset-fashion-mnist): skipped")


if __name__ == "__main__":
    main()
