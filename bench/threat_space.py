#!/usr/bin/env python3
"""Enumerate the whole abstract threat space, validate and plan every cell, and print the time.

    python bench/threat_space.py              # counts, blocking rules, gaps, timings (target < 2 s)
    python bench/threat_space.py --full 300   # also build concrete plans for 300 sampled feasible cells
    python bench/threat_space.py --json       # the same figures as JSON

A cell is one value per threat axis with parameters abstracted ("Lp-inf", not "eps=0.03"). Each cell
is validated through the rules (``space.cell_verdict``) and every feasible one is planned at the cell
level (``planner.plan_cell``: realising attacks, ranked, with the gradient-free check); ``--full``
times the concrete planner (``planner.plan`` on the cell's representative spec) on a sample.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 2.0


def run(full: int = 0, seed: int = 0) -> dict:
    from attackgen.plan.document import Plan
    from attackgen.plan.planner import plan, plan_cell
    from taxonomy import space
    from taxonomy.catalog import CATALOG

    space.clear_caches()
    start = time.perf_counter()
    cells = list(space.enumerate_cells())
    enumerated = time.perf_counter()
    feasible_cells = []
    blockers: Counter[str] = Counter()
    for cell in cells:
        blocking = space.blocking_rules(cell)
        if blocking:
            blockers.update(b.split("-", 1)[0] for b in blocking)
        else:
            feasible_cells.append(cell)
    validated = time.perf_counter()
    planned = [plan_cell(cell, CATALOG) for cell in feasible_cells]
    done = time.perf_counter()

    runnable = sum(bool(p["items"]) for p in planned)
    catalogued = sum(bool(p["items"] or p["not_runnable"]) for p in planned)
    out = {
        "cells": len(cells),
        "feasible": len(feasible_cells),
        "infeasible": len(cells) - len(feasible_cells),
        "blocking_rules": dict(blockers.most_common()),
        "feasible_with_runnable_plan": runnable,
        "feasible_realised_by_catalogue": catalogued,
        "gaps_no_implementation": len(feasible_cells) - runnable,
        "gaps_not_catalogued": len(feasible_cells) - catalogued,
        "implemented_attacks": sum(d.implemented for d in CATALOG.values()),
        "catalogued_attacks": len(CATALOG),
        "seconds": {
            "enumerate": round(enumerated - start, 3),
            "validate": round(validated - enumerated, 3),
            "plan": round(done - validated, 3),
            "total": round(done - start, 3),
        },
    }
    if full:
        rng = random.Random(seed)
        sample = rng.sample(feasible_cells, min(full, len(feasible_cells)))
        t0 = time.perf_counter()
        plans = [plan(space.spec_for_cell(cell)) for cell in sample]
        elapsed = time.perf_counter() - t0
        out["full_plans"] = {
            "sampled": len(sample),
            "plans": sum(isinstance(p, Plan) for p in plans),
            "seconds": round(elapsed, 3),
            "ms_per_plan": round(1000 * elapsed / max(len(sample), 1), 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="validate and plan every abstract threat cell")
    parser.add_argument("--full", type=int, default=0, metavar="N",
                        help="also build concrete plans for N sampled feasible cells")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.full, args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s = result["seconds"]
    print(f"threat space: {result['cells']} cells = {result['feasible']} feasible + {result['infeasible']} infeasible")
    print("infeasible cells by blocking rule (a cell can have several): "
          + ", ".join(f"{k} {v}" for k, v in result["blocking_rules"].items()))
    print(f"feasible cells with a runnable plan: {result['feasible_with_runnable_plan']} "
          f"({result['implemented_attacks']} of {result['catalogued_attacks']} catalogued attacks implemented)")
    print(f"feasible cells some catalogued attack realises: {result['feasible_realised_by_catalogue']}; "
          f"not catalogued at all: {result['gaps_not_catalogued']}")
    verdict = "OK" if s["total"] < TARGET_SECONDS else "SLOW"
    print(f"time: enumerate {s['enumerate']}s, validate {s['validate']}s, plan {s['plan']}s, "
          f"total {s['total']}s [{verdict}: target < {TARGET_SECONDS}s]")
    if "full_plans" in result:
        f = result["full_plans"]
        print(f"concrete plans: {f['plans']} of {f['sampled']} sampled cells, {f['ms_per_plan']} ms per plan")
    return 0


if __name__ == "__main__":
    sys.exit(main())
