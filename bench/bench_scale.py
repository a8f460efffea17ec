"""Scale-out and GPU benchmark (issue #12).

    python bench/bench_scale.py cpu                     # inputs/s, 1 process vs 2 torchrun ranks, 1 thread each
    python bench/bench_scale.py cpu --limit 16 -b 4     # smoke test (seconds)
    python bench/bench_scale.py gpu                     # needs CUDA: PGD vs raw passes, fp32 vs bf16
    python bench/bench_scale.py gpu --trace trace.json  # + a profiler trace of one PGD call, sync counts

cpu: the built-in digits CNN, for two plans: PGD alone (Linf eps 0.1, 40 steps, one start) and the
default white-box plan of examples/specs/digits-whitebox-linf.yaml (what `attackgen plan` gives). Each
is run with `python -m attackgen run` (1 process) and `torchrun --nproc-per-node 2 -m attackgen run`
(2 ranks), each process with one torch thread, the same --batch-size and seed; the table gives wall
time of the whole command (process start included), inputs per second, the speed-up, whether the
per-input outcomes are identical, the fixed cost of a launch (the same command on one input per rank)
and the speed-up of the rest (wall minus that fixed cost). Target (issue #12): 2 ranks >= 1.7x 1
process on a 2-core machine.
Measure on a quiet machine: other work on the cores makes the ratio meaningless (`uptime` is printed).

gpu: ResNet-18 at 32x32 (batch 512) and ResNet-50 at 224x224 (batch 128), random weights
(bench/resnets.py). For float32 and bf16 autocast: the raw cost of STEPS forward+backward passes, our
LinfPGD for STEPS steps (no early stop, so it needs exactly those passes), their ratio (target <= 1.05),
and the share of inputs whose float32-verified outcome agrees between bf16 and float32. Random weights
make the robust accuracy itself meaningless; the agreement is what bf16 may change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPEC = ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml"


# --------------------------------------------------------------------------- CPU: 1 process vs 2 ranks


def make_plans(folder: Path) -> dict[str, Path]:
    from attackgen.plan.document import save_plan
    from attackgen.plan.planner import plan as make_plan
    from taxonomy.spec import load_spec

    spec = load_spec(SPEC)
    full = make_plan(spec)
    pgd = make_plan(spec, max_primary=1)
    # the planner schedules APGD, not PGD: one PGD item in place of APGD-CE at epsilon 0.1
    base = next(item for item in pgd.items if item.attack == "apgd_ce" and abs((item.epsilon or 0) - 0.1) < 1e-9)
    pgd.items = [base.model_copy(update={"attack": "pgd_linf", "params": {"steps": 40, "restarts": 1}})]
    return {"pgd": save_plan(pgd, folder / "pgd.yaml"), "default white-box plan": save_plan(full, folder / "full.yaml")}


def run_cli(plan: Path, out: Path, ranks: int, limit: int, batch: int) -> float:
    base = ["-m", "attackgen", "run", str(plan), "--model", "digits-cnn", "--limit", str(limit), "-b", str(batch),
            "-q", "--threads", "1", "-o", str(out)]
    command = [sys.executable, *base] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), *base]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return wall


def outcomes(out: Path) -> list:
    result = json.loads((out / "results.json").read_text())
    return [[(r["index"], r["success"], r["adversarial_label"]) for r in item["inputs"]] for item in result["items"]]


def bench_cpu(args: argparse.Namespace) -> None:
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores; limit {args.limit}, "
          f"batch {args.batch_size}, 1 torch thread per process")
    print(f"{'plan':<24} {'ranks':>5} {'wall s':>8} {'inputs/s':>9} {'speed-up':>9} {'same per input':>15} "
          f"{'startup s':>9} {'work speed-up':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, plan in make_plans(folder).items():
            if args.plans and not any(p in name for p in args.plans):
                continue
            base_wall, base_out, base_work = None, None, None
            for ranks in args.ranks:
                out = folder / f"{plan.stem}-{ranks}"
                # the fixed cost of a launch (interpreters, imports, model, process group, merge): the same
                # command on one input per rank; what the rest takes is the work that scales
                startup = run_cli(plan, folder / f"{plan.stem}-{ranks}-startup", ranks, ranks, 1)
                wall = run_cli(plan, out, ranks, args.limit, args.batch_size)
                work = max(wall - startup, 1e-9)
                same = "-" if base_out is None else str(outcomes(out) == outcomes(base_out))
                speed = "-" if base_wall is None else f"{base_wall / wall:.2f}x"
                work_speed = "-" if base_work is None else f"{base_work / work:.2f}x"
                print(f"{name:<24} {ranks:>5} {wall:>8.1f} {args.limit / wall:>9.1f} {speed:>9} {same:>15} "
                      f"{startup:>9.1f} {work_speed:>13}", flush=True)
                if base_wall is None:
                    base_wall, base_out, base_work = wall, out, work
    print(f"load after: {os.getloadavg()[0]:.2f}")


# --------------------------------------------------------------------------- GPU: PGD vs raw passes


def bench_gpu(args: argparse.Namespace) -> None:
    import torch

    from attackgen.run.attacks.base import Budget
    from bench.resnets import resnet18_cifar, resnet50

    if not torch.cuda.is_available():
        print("gpu: skipped, CUDA is not available on this machine (not run)")
        return
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, steps {args.steps}")
    print(f"{'model':<22} {'dtype':<5} {'raw s':>7} {'pgd s':>7} {'pgd/raw':>8} {'inputs/s':>9} {'agree':>6}")
    cases = [("resnet18 32x32", resnet18_cifar(10), 32, args.batch_18),
             ("resnet50 224x224", resnet50(1000), 224, args.batch_50)]
    for name, model, side, batch in cases:
        model = model.to(device).eval().requires_grad_(False)
        if args.compile:
            model = torch.compile(model)
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(batch, 3, side, side, device=device, generator=gen)
        y = model(x).argmax(1)  # random weights: start from the model's own labels (all "correct")
        budget = Budget(norm="inf", epsilon=8 / 255)
        verdicts = {}
        for dtype in ("fp32", "bf16"):
            times, verdicts[dtype] = time_case(model, x, y, budget, dtype, args)
            agree = "-" if dtype == "fp32" else f"{float((verdicts['fp32'] == verdicts['bf16']).float().mean()):.3f}"
            print(f"{name:<22} {dtype:<5} {times['raw']:>7.3f} {times['pgd']:>7.3f} "
                  f"{times['pgd'] / times['raw']:>8.3f} {batch / times['pgd']:>9.1f} {agree:>6}")
        if args.trace:
            trace(model, x, y, budget, args, Path(args.trace).with_stem(Path(args.trace).stem + "-" + name.split()[0]))


def time_case(model, x, y, budget, dtype: str, args: argparse.Namespace) -> tuple[dict[str, float], object]:
    """Median wall times of the raw passes and of PGD, and PGD's float32-verified verdict per input."""
    import torch
    import torch.nn.functional as F

    from attackgen.run.access import WhiteBoxAccess
    from attackgen.run.attacks.pgd import LinfPGD
    from attackgen.run.objectives.classification import ClassificationObjective

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16")

    def raw() -> None:
        xa = x.clone()
        for _ in range(args.steps):
            xa.requires_grad_(True)
            with autocast():
                loss = F.cross_entropy(model(xa), y)
            (grad,) = torch.autograd.grad(loss, xa)
            xa = (xa.detach() + 0.001 * grad.sign()).clamp(0, 1)

    def pgd() -> torch.Tensor:
        attack = LinfPGD(seed=0, steps=args.steps, rel_stepsize=0.25, random_start=True, early_stop=False)
        with autocast():
            return attack.run(WhiteBoxAccess(model, len(x), x.device), x, ClassificationObjective(y), budget).x_adv

    times = {}
    for label, fn in (("raw", raw), ("pgd", pgd)):
        fn()  # warm-up (cudnn autotune, compile)
        torch.cuda.synchronize()
        samples = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            samples.append(time.perf_counter() - started)
        times[label] = sorted(samples)[len(samples) // 2]
    candidate = pgd().float()
    with torch.no_grad():  # verification in float32, as the executor does
        verdict = model(candidate).argmax(1) != y
    return times, verdict


def trace(model, x, y, budget, args: argparse.Namespace, path: Path) -> None:
    """A Chrome trace of one PGD call and the count of device->host syncs in it."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from attackgen.run.access import WhiteBoxAccess
    from attackgen.run.attacks.pgd import LinfPGD
    from attackgen.run.objectives.classification import ClassificationObjective

    attack = LinfPGD(seed=0, steps=args.steps, rel_stepsize=0.25, random_start=True, early_stop=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        attack.run(WhiteBoxAccess(model, len(x), x.device), x, ClassificationObjective(y), budget)
        torch.cuda.synchronize()
    prof.export_chrome_trace(str(path))
    syncs = {e.key: e.count for e in prof.key_averages()
             if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "aten::item",
                          "aten::_local_scalar_dense")}
    print(f"  trace {path}: {syncs} over {args.steps} steps (early stop on)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    cpu = sub.add_parser("cpu")
    cpu.add_argument("--limit", type=int, default=512)
    cpu.add_argument("-b", "--batch-size", type=int, default=32)
    cpu.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    cpu.add_argument("--plans", nargs="*", default=None, help="substrings of plan names (pgd, default)")
    gpu = sub.add_parser("gpu")
    gpu.add_argument("--steps", type=int, default=40)
    gpu.add_argument("--repeats", type=int, default=3)
    gpu.add_argument("--batch-18", type=int, default=512)
    gpu.add_argument("--batch-50", type=int, default=128)
    gpu.add_argument("--compile", action="store_true")
    gpu.add_argument("--trace", default=None, help="write Chrome traces (one per model) with this stem")
    args = parser.parse_args()
    bench_cpu(args) if args.what == "cpu" else bench_gpu(args)


if __name__ == "__main__":
    main()
