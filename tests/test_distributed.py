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
def test_universal_plan_on_two_ranks_gives_the_outcomes_of_one_process(tmp_path):
    """The universal perturbation is fitted data-parallel over the 2 ranks: the same outcomes as one process."""
    plan = quick(make_plan(load_spec(SPECS / "digits-universal-training.yaml"), max_primary=1))
    plan_path = save_plan(plan, tmp_path / "plan.yaml")
    single = tmp_path / "single"
    assert cli("run", plan_path, "--model", "digits-cnn", "--limit", "40", "-b", BATCH, "-q", "-o", single) == 0
    out = tmp_path / "two"
    done = torchrun(plan_path, out, limit="40")
    assert done.returncode == 0, done.stderr[-3000:]
    assert outcomes(out) == outcomes(single)
    assert any(p.name.startswith("fitted-") for p in (out / PARTS).iterdir())


@pytest.mark.slow
def test_patch_fitted_on_rank_0_gives_the_outcomes_of_one_process(tmp_path):
    """The patch fit is not data-parallel: rank 0 fits it and sends it to the other rank."""
    plan = make_plan(load_spec(SPECS / "cls-physical-patch.yaml"), max_primary=1)
    for item in plan.items:
        item.params.update(steps=20, fit_size=64)
    plan_path = save_plan(plan, tmp_path / "plan.yaml")
    single = tmp_path / "single"
    assert cli("run", plan_path, "--model", "digits-cnn", "--limit", "40", "-b", BATCH, "-q", "-o", single) == 0
    out = tmp_path / "two"
    done = torchrun(plan_path, out, limit="40")
    assert done.returncode == 0, done.stderr[-3000:]
    assert outcomes(out) == outcomes(single)


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


FIT_SCRIPT = """
import sys, torch, torch.distributed as dist
from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.base import AttackEnv, Budget, Shard
from attackgen.run.attacks.metzen import MetzenUniversal
from attackgen.run.attacks.universal import UniversalPerturbation
from attackgen.run.distributed import all_reduce_sum
from attackgen.run.objectives.classification import ClassificationObjective

dist.init_process_group("gloo")
model = load_builtin_model("digits-cnn").eval().requires_grad_(False)
data = load_builtin_data("digits").take(slice(0, 150))
extra = {"min_steps": 10} if sys.argv[2] == "uap" else {}  # Metzen's fit has no minimum step count
attack = {"uap": UniversalPerturbation, "metzen": MetzenUniversal}[sys.argv[2]](seed=5, epochs=3, batch_size=32,
                                                                             **extra)
shard = Shard(dist.get_rank(), dist.get_world_size(), all_reduce_sum)
fitted = attack.fit(WhiteBoxAccess(model, len(data)), data.x, ClassificationObjective(data.y),
                    Budget(norm="inf", epsilon=0.2), AttackEnv(shard=shard))
torch.save({"fitted": fitted, "rate": getattr(attack, "fit_rate", None)}, sys.argv[1] + f"-{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


@pytest.mark.parametrize("name", ["uap", "metzen"])
def test_data_parallel_universal_fit_equals_the_one_process_fit(tmp_path, name):
    """2 gloo ranks, each with its share of every batch and the updates summed: the one-process fit."""
    import torch

    from attackgen.models.zoo import load_builtin_data, load_builtin_model
    from attackgen.run.access import WhiteBoxAccess
    from attackgen.run.attacks.base import Budget
    from attackgen.run.attacks.metzen import MetzenUniversal
    from attackgen.run.attacks.universal import UniversalPerturbation
    from attackgen.run.objectives.classification import ClassificationObjective

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    ranks = [subprocess.Popen([sys.executable, "-c", FIT_SCRIPT, str(tmp_path / "fit"), name],
                              env={**env, "RANK": str(r)}, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for rank in ranks:
        _, err = rank.communicate(timeout=300)
        assert rank.returncode == 0, err[-3000:]
    model = load_builtin_model("digits-cnn").eval().requires_grad_(False)
    data = load_builtin_data("digits").take(slice(0, 150))
    extra = {"min_steps": 10} if name == "uap" else {}  # Metzen's fit has no minimum step count
    attack = {"uap": UniversalPerturbation, "metzen": MetzenUniversal}[name](seed=5, epochs=3, batch_size=32,
                                                                          **extra)
    single = attack.fit(WhiteBoxAccess(model, len(data)), data.x, ClassificationObjective(data.y),
                        Budget(norm="inf", epsilon=0.2))
    parts = [torch.load(tmp_path / f"fit-{r}.pt") for r in range(2)]
    assert torch.equal(parts[0]["fitted"], parts[1]["fitted"])  # the ranks hold one perturbation
    assert torch.allclose(parts[0]["fitted"], single, atol=1e-5)
    assert 0.05 < float(single.abs().max()) <= 0.2 + 1e-6  # it learned a perturbation, inside the ball
    if name == "uap":
        assert parts[0]["rate"] == pytest.approx(attack.fit_rate) and attack.fit_rate > 0.1  # it fools some inputs


def test_two_ranks_escalate_as_one_process(tmp_path):
    """The logit-scaled model masks cross-entropy gradients: the flags fire over the merged plan (rank 0),
    every rank gets them, the DLR counterpart runs on each rank's share of the survivors, and the result
    is the one-process run's, escalation included."""
    from attackgen.plan.document import ItemContext, Plan, PlanItem
    from taxonomy.spec import parse_spec

    spec = parse_spec({"name": "escalate", "task": "classification", "classes": [str(i) for i in range(10)],
                       "threat": {"consequence": "untargeted", "model_knowledge": "white_box",
                                  "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}]}})
    item = PlanItem(attack="apgd_ce", epsilon=0.1, params={"steps": 10, "loss": "ce"},
                    context=ItemContext(norm="inf", mode="fixed"))
    plan = Plan(spec_name=spec.name, spec_hash=spec.spec_hash(), spec=spec.model_dump(mode="json"), epsilons=[0.1],
                items=[item])
    plan_path = save_plan(plan, tmp_path / "plan.yaml")
    args = ("--model", "digits-cnn-scaled", "--limit", LIMIT, "-b", BATCH, "-q")
    single = tmp_path / "single"
    assert cli("run", plan_path, *args, "-o", single) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "attackgen", "run", str(plan_path), *args, "-o", str(tmp_path / "two")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("single", "two"))
    assert outcomes(tmp_path / "two") == outcomes(single)
    assert two["escalation"]["ran"] and [i["attack"] for i in two["escalation"]["items"]] == ["apgd_dlr"]
    assert two["escalation"] == one["escalation"]
    assert two["robust_accuracy"] < two["escalation"]["robust_accuracy_before"]
    assert [f.get("escalation") for f in two["flags"]] == [f.get("escalation") for f in one["flags"]]
    assert sorted(p.name for p in (tmp_path / "two" / PARTS).glob("escalation-*.pt")) == [
        f"escalation-001-{c:06d}.pt" for c in range(6)]  # stage 1's first step follows the plan's one item
