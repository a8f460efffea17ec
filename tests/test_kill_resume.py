"""A run killed outright (SIGKILL: no handler, no partial results written) resumes to exactly the results of a
run that was never stopped: the checkpoint written after each batch is all that survives, and it suffices.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attackgen.plan.document import save_plan
from attackgen.plan.planner import plan as make_plan
from attackgen.results import RunResult
from taxonomy.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def _plan(tmp_path: Path) -> Path:
    plan = make_plan(load_spec(ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml"), max_primary=1)
    for item in plan.items:  # short attacks, many batches: the kill lands inside the run
        for key, value in (("steps", 10), ("n_queries", 60), ("restarts", 1)):
            if key in item.params:
                item.params[key] = value
    return save_plan(plan, tmp_path / "plan.yaml")


def _run(plan: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "attackgen", "run", str(plan), "--model", "digits-cnn", "--limit", "16",
               "--batch-size", "4", "-q", "-o", str(out), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _outcomes(out: Path) -> list[dict[str, object]]:
    """Every field a run measured, per item and input (timings left out)."""
    result = RunResult.model_validate_json((out / "results.json").read_text())
    assert result.complete
    return [item.model_dump(exclude={"time_s"}) for item in result.items]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_results_of_an_unstopped_run(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    whole = _run(plan, tmp_path / "whole")
    assert whole.wait(600) == 0, whole.stderr.read().decode() if whole.stderr else ""

    out = tmp_path / "killed"
    first = _run(plan, out)
    checkpoint = out / "checkpoint.pt"
    deadline = time.monotonic() + 600
    saves = 0
    last = None
    while time.monotonic() < deadline and saves < 4 and first.poll() is None:  # kill after a few batches
        stamp = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
        if stamp is not None and stamp != last:
            saves, last = saves + 1, stamp
        time.sleep(0.02)
    assert first.poll() is None, "the run finished before it could be killed; give it more batches"
    first.send_signal(signal.SIGKILL)
    assert first.wait(60) == -signal.SIGKILL
    assert checkpoint.exists() and not (out / "results.json").exists()  # SIGKILL: nothing but the checkpoint

    resumed = _run(plan, out, "--resume")
    assert resumed.wait(600) == 0, resumed.stderr.read().decode() if resumed.stderr else ""
    assert _outcomes(out) == _outcomes(tmp_path / "whole")
