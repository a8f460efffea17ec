"""`torchrun -m attackgen run` on CPU with the gloo backend: 2 ranks give the per-input outcomes of one
process, a killed rank resumes without redoing finished inputs, and bad launches stop with a message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from attackgen.cli.main import run_in_process as cli
from attackgen.plan.document import save_plan
from attackgen.plan.planner import plan as make_plan
from attackgen.run.distributed import CRASH_ENV, PARTS, Launch, claim_folder, done_chunks, identity_mismatch
from attackgen.run.executor import RunError, RunOptions
from attackgen.run.lock import LOCK, FolderBusy, FolderLock
from taxonomy.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "examples" / "specs"
LIMIT, BATCH = "24", "4"  # 6 chunks of 4 inputs


def quick(plan):
    for item in plan.items:
        for key, value in (("steps", 10), ("n_queries", 60), ("restarts", 1), ("epochs", 2), ("min_steps", 10)):
            if key in item.params:
                item.params[key] = value
    return plan


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    plan = quick(make_plan(load_spec(SPECS / "digits-whitebox-linf.yaml"), max_primary=1))
    return save_plan(plan, tmp_path_factory.mktemp("plan") / "plan.yaml")


def torchrun(plan: Path, out: Path, *extra: str, nproc: int = 2, env: dict[str, str] | None = None,
             limit: str = LIMIT) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "attackgen", "run", str(plan), "--model", "digits-cnn", "--limit", limit, "-b", BATCH, "-q",
               "-o", str(out), *extra]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=600, cwd=out.parent)


def outcomes(out: Path) -> tuple[float, list[tuple]]:
    """Per item and input: index, verified success, adversarial label, Linf, queries."""
    result = json.loads((out / "results.json").read_text())
    assert result["complete"]
    return result["robust_accuracy"], [
        (item["attack"], item["epsilon"],
         [(r["index"], r["success"], r["adversarial_label"], round(r["norms"]["linf"], 6), r["queries"])
          for r in item["inputs"]])
        for item in result["items"]]


@pytest.fixture(scope="module")
def one_process(plan_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    assert cli("run", plan_file, "--model", "digits-cnn", "--limit", LIMIT, "-b", BATCH, "-q", "-o", out) == 0
    return outcomes(out)


def test_two_ranks_give_the_outcomes_of_one_process(plan_file, one_process, tmp_path):
    out = tmp_path / "two"
    done = torchrun(plan_file, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert outcomes(out) == one_process
    assert done_chunks(out / PARTS) == set(range(6))
    result = json.loads((out / "results.json").read_text())
    assert result["n_inputs"] == int(LIMIT) and result["metrics"]["world_size"] == 2.0
    for item in result["items"]:  # every input counted once: no padding, no duplicates
        indices = [r["index"] for r in item["inputs"]]
        assert len(indices) == len(set(indices)) == item["n_attacked"]
    assert (out / "report.html").exists() and not (out / LOCK).exists()


def test_a_killed_rank_resumes_without_redoing_finished_inputs(plan_file, one_process, tmp_path):
    out = tmp_path / "killed"
    crashed = torchrun(plan_file, out, env={CRASH_ENV: "1:1"})  # rank 1 dies holding its second chunk
    assert crashed.returncode != 0
    kept = {p.name: p.stat().st_mtime_ns for p in (out / PARTS).glob("chunk-*.pt")}
    assert 1 <= len(kept) < 6, crashed.stderr[-3000:]
    partial = json.loads((out / "results.json").read_text())
    assert partial["complete"] is False
    assert not (out / LOCK).exists()

    resumed = torchrun(plan_file, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {len(kept)} finished chunks" in resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / PARTS).glob("chunk-*.pt") if p.name in kept} == kept
    assert outcomes(out) == one_process


@pytest.mark.slow
def test_universal_fit_is_shared_by_the_ranks(tmp_path):
    """Rank 0 fits the universal perturbation and the others receive it: the same outcomes as one process."""
    plan = quick(make_plan(load_spec(SPECS / "digits-universal-training.yaml"), max_primary=1))
    plan_path = save_plan(plan, tmp_path / "plan.yaml")
    single = tmp_path / "single"
    assert cli("run", plan_path, "--model", "digits-cnn", "--limit", "40", "-b", BATCH, "-q", "-o", single) == 0
    out = tmp_path / "two"
    done = torchrun(plan_path, out, limit="40")
    assert done.returncode == 0, done.stderr[-3000:]
    assert outcomes(out) == outcomes(single)
    assert any(p.name.startswith("fitted-") for p in (out / PARTS).iterdir())


def test_more_ranks_than_inputs_is_refused(plan_file, tmp_path):
    done = torchrun(plan_file, tmp_path / "tiny", limit="1")
    assert done.returncode != 0
    assert "torchrun started 2 ranks for 1 inputs to attack" in done.stderr
    assert "exitcode  : 2" in done.stderr  # the ranks exit 2 (bad input); torchrun reports them failed


# ---------------------------------------------------------------------- pieces, without a launch


def test_launch_reads_torchrun_environment():
    assert Launch.from_env({}) is None
    assert Launch.from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Launch(4, 1, 1)
    with pytest.raises(RunError, match="outside WORLD_SIZE=2"):
        Launch.from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_ranks_with_different_seeds_or_plans_are_named():
    base = {"plan_hash": "a", "seed": 0}
    assert identity_mismatch([base, dict(base)]) is None
    problem = identity_mismatch([base, dict(base), {"plan_hash": "b", "seed": 1}])
    assert problem == "rank 2 has plan_hash 'b' (rank 0: 'a'), seed 1 (rank 0: 0)"


def test_folder_lock_names_its_holder_and_takes_over_dead_ones(tmp_path):
    first = FolderLock(tmp_path, "attackgen run, 2 ranks").acquire()
    with pytest.raises(FolderBusy, match=rf"attackgen run, 2 ranks, host {socket.gethostname()}, pid {os.getpid()}"):
        FolderLock(tmp_path, "another").acquire()
    first.release()
    assert not (tmp_path / LOCK).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": "x",
                                             "what": "killed run"}))
    with FolderLock(tmp_path, "new") as lock:
        assert lock.took_over is not None and lock.took_over["what"] == "killed run"
    (tmp_path / LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "x", "what": "node run"}))
    with pytest.raises(FolderBusy, match=r"delete .*run\.lock and run again with --resume"):
        FolderLock(tmp_path, "new").acquire()


def test_folder_of_another_run_is_refused(tmp_path):
    identity = {"plan_hash": "a", "spec_hash": "s", "model": "m", "data": "d", "seed": 0, "limit": 8,
                "batch_size": 4, "device_type": "cpu", "autocast": None}
    assert claim_folder(tmp_path, identity, RunOptions()) == (set(), "")
    with pytest.raises(RunError, match="pass --resume"):
        claim_folder(tmp_path, identity, RunOptions())
    with pytest.raises(RunError, match=r"seed 0 \(this run: 3\)\); cannot resume"):
        claim_folder(tmp_path, {**identity, "seed": 3}, RunOptions(resume=True))
    (tmp_path / PARTS / "chunk-000002.pt").write_bytes(b"")
    assert claim_folder(tmp_path, identity, RunOptions(resume=True))[0] == {2}
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "results.json").write_text("{}")
    with pytest.raises(RunError, match="holds a single-process run"):
        claim_folder(plain, identity, RunOptions(resume=True))
