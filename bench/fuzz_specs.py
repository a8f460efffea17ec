"""Fuzz the readers: mutated example specs (validate, plan, plan round trip), plans and results files (audit).

    python bench/fuzz_specs.py                 # 10,000 specs, 1,000 plans, 1,000 audit suites
    python bench/fuzz_specs.py --specs 500 --plans 0 --audits 0 --seed 3

Prints how many cases raised anything other than the project's typed error (AttackgenError), how
many took over a second of CPU time (CPU, not wall: on a shared machine the wall clock measures the
other jobs), how many hung (stopped after --hang seconds, so one hang cannot stall the
campaign), and the first few of each with the mutated file saved under --keep.
The same mutations run at a small size in tests/test_fuzz_*.py. Target: 0, 0 and 0.
"""

from __future__ import annotations

import argparse
import collections
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import fuzzing  # noqa: E402


class Hang(BaseException):
    """Raised by the timer in a case that runs past --hang seconds (not an Exception: nothing catches it)."""


def _hang(signum: int, frame: object) -> None:
    raise Hang


def campaign(name: str, n: int, sources: list[Path], check: object, seed: int, keep: Path,
             hang_s: float) -> tuple[int, int, int]:
    rng = random.Random(seed)
    texts = [p.read_text(encoding="utf-8") for p in sources]
    errors: collections.Counter[str] = collections.Counter()
    slow = failed = hung = 0
    worst = worst_cpu = 0.0
    signal.signal(signal.SIGALRM, _hang)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for text in texts[:1]:  # warm up: imports and the constraint graph are not the reader's time
            fuzzing.first_failure(lambda text=text: check(text, folder))  # type: ignore[operator,misc]
        for case in range(n):
            source = rng.randrange(len(texts))
            text = fuzzing.mutate(texts[source], rng)
            started, cpu = time.perf_counter(), time.process_time()
            signal.setitimer(signal.ITIMER_REAL, hang_s)
            try:
                error = fuzzing.first_failure(lambda text=text: check(text, folder))  # type: ignore[operator,misc]
                stuck = False
            except Hang:
                error, stuck = None, True
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            took, took_cpu = time.perf_counter() - started, time.process_time() - cpu
            worst, worst_cpu = max(worst, took), max(worst_cpu, took_cpu)
            bad = error is not None or stuck
            if stuck:
                hung += 1
                print(f"  {name} case {case} ({sources[source].name}): hung past {hang_s:g} s", file=sys.stderr)
            elif took_cpu > 1.0:
                slow += 1
                bad = True
            if error is not None:
                failed += 1
                key = f"{type(error).__name__}: {str(error)[:90]}"
                errors[key] += 1
                if errors[key] == 1:
                    print(f"  {name} case {case} ({sources[source].name}): {key}", file=sys.stderr)
                    traceback.print_exception(error, limit=-3, file=sys.stderr)
            if bad:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{name}-{case:05d}.txt").write_text(text, encoding="utf-8", errors="surrogatepass")
            if (case + 1) % 1000 == 0:
                print(f"  {name}: {case + 1}/{n}, {failed} raised, {slow} slow, {hung} hung", file=sys.stderr)
    print(f"{name}: {n} cases, {failed} raised something other than AttackgenError, {slow} took over 1 s of CPU, "
          f"{hung} hung past {hang_s:g} s (slowest finished: {worst_cpu:.2f} s CPU, {worst:.2f} s wall)")
    for key, count in errors.most_common(10):
        print(f"  {count:5d}  {key}")
    return failed, slow, hung


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=10_000)
    parser.add_argument("--plans", type=int, default=1_000)
    parser.add_argument("--audits", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang", type=float, default=10.0, help="Seconds after which a case counts as hung.")
    parser.add_argument("--keep", type=Path, default=Path("runs/fuzz-findings"),
                        help="Where the files of failing or slow cases are written.")
    args = parser.parse_args()
    if args.keep.exists():
        shutil.rmtree(args.keep)
    started = time.perf_counter()
    total = [0, 0, 0]
    runs = [
        ("specs", args.specs, fuzzing.SPEC_FILES, fuzzing.check_spec_text),
        ("plans", args.plans, fuzzing.PLAN_FILES, fuzzing.check_plan_text),
        ("audit-results", args.audits // 2, fuzzing.RESULTS_FILES,
         lambda text, folder: fuzzing.check_audit_text(text, folder, "results.json", recheck=len(text) % 2 == 0)),
        ("audit-plans", args.audits - args.audits // 2, fuzzing.PLAN_FILES,
         lambda text, folder: fuzzing.check_audit_text(text, folder, "plan.yaml")),
    ]
    for name, n, sources, check in runs:
        if n:
            for i, count in enumerate(campaign(name, n, sources, check, args.seed, args.keep, args.hang)):
                total[i] += count
    print(f"total: {total[0]} raised, {total[1]} slow, {total[2]} hung, in {time.perf_counter() - started:.0f} s")
    return 1 if any(total) else 0


if __name__ == "__main__":
    sys.exit(main())
