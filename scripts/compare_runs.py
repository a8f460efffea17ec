"""Plan and run every runnable example spec with a fixed seed and a small --limit, and record what a user
relies on: clean and robust accuracy, the curve, and each item's per-input outcomes (success, budget,
norms, queries, adversarial label, task metrics). Timings are left out: they differ run to run.

Why: a refactoring of the executor must not change results. Record before and after, then compare:

    python scripts/compare_runs.py record before.json
    python scripts/compare_runs.py record after.json [--batch-size 3] [--only digits-]
    python scripts/compare_runs.py compare before.json after.json [--outcomes]

Each example's plan keeps all its items, with few steps and queries (QUICK), so all of them together run
in minutes on one CPU thread. Specs that need the user's own model are skipped; a spec that does not run
on the built-in model chosen for it is recorded with its exit code (that, too, must stay the same).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "specs"
OWN_MODEL = "YOUR OWN MODEL"
# Built-in model and data by the example's name prefix; everything else is classification on digits.
BY_PREFIX = {"seg-": ("street-seg", "street-scenes"), "det-": ("street-det", "street-scenes-det"),
             "fashion-": ("fashion-cnn", "fashion-mnist")}
LIMIT = {"det-mislabel-detector-aware": 24, "perceptual-digits-detector-aware": 24}
QUICK = {"steps": 3, "fit_size": 16, "n_queries": 30, "max_queries": 30, "initial_num_evals": 10,
         "max_num_evals": 20, "epochs": 1, "eot_samples": 1, "restarts": 1, "iterations": 3, "population": 8,
         "generations": 3}


def runnable() -> list[Path]:
    specs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        if path.stem.startswith("invalid-") or OWN_MODEL in path.read_text():
            continue
        specs.append(path)
    return specs


def model_for(name: str) -> tuple[str, str]:
    for prefix, pair in BY_PREFIX.items():
        if name.startswith(prefix):
            return pair
    return "digits-cnn", "digits"


def outcome(result: Any) -> dict[str, Any]:
    items = []
    for item in result.items:
        inputs = [{"index": r.index, "clean_correct": r.clean_correct, "success": r.success,
                   "within_budget": r.within_budget, "queries": r.queries, "adversarial_label": r.adversarial_label,
                   "norms": None if r.norms is None else r.norms.model_dump(), "metrics": r.metrics}
                  for r in item.inputs]
        items.append({"attack": item.attack, "epsilon": item.epsilon, "n_attacked": item.n_attacked,
                      "n_success": item.n_success, "robust_accuracy_after": item.robust_accuracy_after,
                      "metrics": item.metrics, "inputs": inputs})
    return {"clean_accuracy": result.clean_accuracy, "robust_accuracy": result.robust_accuracy,
            "curve": result.curve, "items": items, "flags": sorted(f.check for f in result.flags)}


def record(out: Path, batch_size: int | None, only: str | None) -> None:
    import torch

    from attackgen.cli.main import run_in_process as cli
    from attackgen.plan.document import load_plan, save_plan
    from attackgen.results import RunResult

    torch.set_num_threads(1)
    recorded: dict[str, Any] = {}
    for spec in runnable():
        if only and not spec.stem.startswith(only):
            continue
        model, data = model_for(spec.stem)
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                code = cli("plan", spec, "-o", tmp / "plan.yaml")
            if code != 0:
                recorded[spec.stem] = {"plan_exit": code}
                print(f"{spec.stem}: plan exit {code}", file=sys.stderr)
                continue
            plan = load_plan(tmp / "plan.yaml")
            for item in plan.items:
                for key, value in QUICK.items():
                    if key in item.params:
                        item.params[key] = value
            save_plan(plan, tmp / "quick.yaml")
            basis = ["--basis-data", data] if plan.strategy.get("data_basis") == "training" else []
            extra = ["--batch-size", batch_size] if batch_size else []
            args = ["run", tmp / "quick.yaml", "--model", model, "--data", data, "--limit",
                    LIMIT.get(spec.stem, 8), "--seed", 0, "-q", "-o", tmp / "run", *basis, *extra]
            sink = io.StringIO()
            with contextlib.chdir(ROOT), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                code = cli(*args)
            if code != 0:
                message = sink.getvalue().strip().replace(str(tmp), "TMP").splitlines()[-1:]
                recorded[spec.stem] = {"run_exit": code, "message": message}
                print(f"{spec.stem}: run exit {code}: {sink.getvalue().strip()[-200:]}", file=sys.stderr)
                continue
            result = RunResult.model_validate_json((tmp / "run" / "results.json").read_text())
            recorded[spec.stem] = outcome(result)
            print(f"{spec.stem}: {len(plan.items)} items, robust accuracy {result.robust_accuracy:.3f}",
                  file=sys.stderr)
    out.write_text(json.dumps(recorded, indent=1, sort_keys=True))


OUTCOME = ("index", "clean_correct", "success", "within_budget", "adversarial_label")
"""What --outcomes compares per input: the verdicts, not the last bits of norms and confidences (a forward
pass over a batch of 3 and one over 8 round differently)."""


def outcomes_only(run: dict[str, Any]) -> dict[str, Any]:
    if "items" not in run:
        return run
    return {"clean_accuracy": run["clean_accuracy"], "robust_accuracy": run["robust_accuracy"],
            "curve": run["curve"],
            "items": [{"attack": item["attack"], "epsilon": item["epsilon"], "n_success": item["n_success"],
                       "inputs": [{k: r[k] for k in OUTCOME} for r in item["inputs"]]} for item in run["items"]]}


def compare(before: Path, after: Path, outcomes: bool = False) -> int:
    a, b = (json.loads(re.sub(r"/tmp/tmp\w+", "TMP", path.read_text())) for path in (before, after))
    if outcomes:
        a, b = ({name: outcomes_only(run) for name, run in side.items()} for side in (a, b))
    differ = 0
    for name in sorted(set(a) | set(b)):
        if a.get(name) == b.get(name):
            print(f"same       {name}")
            continue
        differ += 1
        print(f"DIFFERENT  {name}")
        left, right = a.get(name) or {}, b.get(name) or {}
        for key in sorted(set(left) | set(right)):
            if left.get(key) != right.get(key) and key != "items":
                print(f"    {key}: {left.get(key)} -> {right.get(key)}")
        for i, (x, y) in enumerate(zip(left.get("items", []), right.get("items", []), strict=False)):
            for r, s in zip(x["inputs"], y["inputs"], strict=False):
                if r != s:
                    print(f"    items[{i}] {x['attack']} input {r['index']}: "
                          + ", ".join(f"{k} {r[k]} -> {s[k]}" for k in r if r[k] != s.get(k)))
    print(f"{len(set(a) | set(b)) - differ} same, {differ} different")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--batch-size", type=int)
    rec.add_argument("--only", help="only the examples whose name starts with this")
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    cmp.add_argument("--outcomes", action="store_true", help="compare per-input verdicts only (see OUTCOME)")
    args = parser.parse_args()
    if args.command == "record":
        record(args.out, args.batch_size, args.only)
        return 0
    return compare(args.before, args.after, args.outcomes)


if __name__ == "__main__":
    sys.exit(main())
