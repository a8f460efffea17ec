"""Adaptive escalation on the zoo's masking fixtures: robust accuracy before and after, against digits-cnn.

The logit-scaled fixture decides exactly as digits-cnn, so after escalation its robust accuracy should be
within 1 point of digits-cnn's; the quantised and randomised fixtures should be flagged and escalated.
One run per model of the default white-box plan (``attackgen plan``) at Linf 0.1, one torch thread.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/bench_escalation.py --limit 256
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from attackgen.plan.planner import plan as make_plan
from attackgen.run.executor import Executor, RunOptions
from taxonomy.spec import parse_spec

MODELS = ("digits-cnn", "digits-cnn-scaled", "digits-cnn-quantized", "digits-cnn-randomized")
SPEC = {"name": "bench-escalation", "task": "classification", "classes": [str(i) for i in range(10)],
        "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
                   "model_knowledge": "white_box", "data_knowledge": "none", "capability": {"feed": "digital"}},
        "input_space": {"bounds": [0, 1], "layout": "NCHW", "normalization": "inside_model",
                        "epsilon_units": "input_scale"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    plan = make_plan(parse_spec(SPEC))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            started = time.perf_counter()
            result = Executor(plan, model, "digits", Path(tmp) / model,
                              RunOptions(limit=args.limit, progress=False, seed=0)).run()
            wall = time.perf_counter() - started
            esc = result.escalation
            before = result.robust_accuracy if esc is None else esc.robust_accuracy_before
            items = "" if esc is None else ", ".join(f"{i.attack}/{i.view} +{i.n_success}" for i in esc.items)
            flags = ", ".join(sorted({f.check for f in result.flags if f.severity != "info"})) or "none"
            esc_time = sum(i.time_s for i in result.items if i.escalated_for)
            rows.append(f"| {model} | {100 * result.clean_accuracy:.1f}% | {100 * before:.1f}% | "
                        f"{100 * result.robust_accuracy:.1f}% | {flags} | {items or '-'} | {esc_time:.1f} | "
                        f"{wall:.1f} |")
    print(f"digits, {args.limit} test inputs, Linf 0.1, default plan; load {os.getloadavg()[0]:.1f} at the end")
    print("| model | clean | robust before escalation | robust after | flags | escalation items (+broken) | "
          "escalation s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
