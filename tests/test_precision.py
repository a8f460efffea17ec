"""--autocast and --compile on CPU: attacks step in bf16, every success is still verified in float32;
a compiled model runs the same plan. (The GPU figures are in bench/bench_scale.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from attackgen.cli.main import run_in_process as cli
from attackgen.plan.document import save_plan
from attackgen.plan.planner import plan as make_plan
from attackgen.run.executor import RunOptions
from taxonomy.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml"


@pytest.fixture(scope="module")
def gradient_plan(tmp_path_factory):
    """The APGD-CE items of the demo plan only (10 steps): the gradient path that autocast and compile speed up."""
    plan = make_plan(load_spec(SPEC), max_primary=1)
    plan.items = [item for item in plan.items if item.attack == "apgd_ce"]
    assert plan.items, "the default white-box plan has no APGD-CE item"
    for item in plan.items:
        item.params.update(steps=10, restarts=1)
    return save_plan(plan, tmp_path_factory.mktemp("plan") / "plan.yaml")


def run(plan: Path, out: Path, *extra: str) -> dict:
    assert cli("run", plan, "--model", "digits-cnn", "--limit", "48", "-q", "-o", out, *extra) == 0
    return json.loads((out / "results.json").read_text())


def test_autocast_context_is_bf16_and_rejects_other_names():
    from types import SimpleNamespace

    from attackgen.run.steps import StepRunner

    runner = SimpleNamespace(ctx=SimpleNamespace(options=RunOptions(autocast="bf16"), device=torch.device("cpu")))
    conv = torch.nn.Conv2d(1, 2, 3)
    with StepRunner.autocast(runner):  # type: ignore[arg-type]
        assert conv(torch.rand(1, 1, 5, 5)).dtype == torch.bfloat16
    assert conv(torch.rand(1, 1, 5, 5)).dtype == torch.float32  # verification runs outside it
    runner.ctx.options.autocast = "fp8"
    with pytest.raises(Exception, match="--autocast fp8: expected bf16 or fp16"):
        StepRunner.autocast(runner)  # type: ignore[arg-type]


def test_bf16_attack_steps_are_verified_in_float32(gradient_plan, tmp_path):
    full = run(gradient_plan, tmp_path / "fp32")
    half = run(gradient_plan, tmp_path / "bf16", "--autocast", "bf16")
    assert "autocast" in half["versions"] and "autocast" not in full["versions"]
    assert abs(half["robust_accuracy"] - full["robust_accuracy"]) <= 0.1  # 48 inputs: within 5 of them
    for item in half["items"]:  # what is claimed holds in float32: re-run label differs, norm within budget
        for record in item["inputs"]:
            if record["success"]:
                assert record["adversarial_label"] != record["label"]
                assert record["norms"]["linf"] <= item["epsilon"] + 1e-6
    # a bf16 run is another run: the folder of the float32 run is not resumed with it
    shutil.rmtree(tmp_path / "bf16")
    assert cli("run", gradient_plan, "--model", "digits-cnn", "--limit", "48", "-q", "-o", tmp_path / "fp32",
               "--autocast", "bf16", "--resume") == 2


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own use of torch.jit
def test_compiled_model_gives_the_same_outcomes(gradient_plan, tmp_path):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler (inductor); none on PATH")
    plain = run(gradient_plan, tmp_path / "plain", "--limit", "16")
    compiled = run(gradient_plan, tmp_path / "compiled", "--limit", "16", "--compile")
    assert compiled["versions"]["compile"] == "torch.compile"
    assert [[r["success"] for r in i["inputs"]] for i in compiled["items"]] == \
        [[r["success"] for r in i["inputs"]] for i in plain["items"]]


@pytest.mark.parametrize("decay", [None, 1.0], ids=["pgd", "momentum"])
def test_looking_every_8_steps_gives_the_same_candidates(decay):
    """The CUDA setting (look at finished inputs every 8 steps, one host sync each) against the CPU one
    (every step): identical candidates and successes; only the passes spent on finished rows differ."""
    from attackgen.models.zoo import load_builtin_data, load_builtin_model
    from attackgen.run.access import WhiteBoxAccess
    from attackgen.run.attacks._gradient import LoopConfig, gradient_attack
    from attackgen.run.attacks.base import Budget
    from attackgen.run.objectives.classification import ClassificationObjective

    model = load_builtin_model("digits-cnn")
    data = load_builtin_data("digits").take(slice(0, 64))
    budget = Budget(norm="inf", epsilon=0.1)
    runs = {}
    for every in (1, 8):
        cfg = LoopConfig(steps=30, step_size=0.01, norm="inf", random_start=True, restarts=2, early_stop=True,
                         decay=decay, check_every=every)
        access = WhiteBoxAccess(model, len(data))
        best, info = gradient_attack(access, data.x, ClassificationObjective(data.y), budget, cfg,
                                     torch.Generator().manual_seed(0), 0.1)
        runs[every] = best, info["found_during_attack"], int(access.queries.sum())
    assert torch.equal(runs[1][0], runs[8][0])
    assert runs[1][1] == runs[8][1] > 10
    assert runs[8][2] > runs[1][2]  # finished rows ran up to 7 more steps before they were dropped


@pytest.mark.gpu
def test_cuda_bf16_run_verifies_in_float32(gradient_plan, tmp_path):
    full = run(gradient_plan, tmp_path / "fp32", "--device", "cuda")
    half = run(gradient_plan, tmp_path / "bf16", "--device", "cuda", "--autocast", "bf16")
    assert full["device"].startswith("cuda") and "autocast" in half["versions"]
    assert abs(half["robust_accuracy"] - full["robust_accuracy"]) <= 0.1


@pytest.mark.gpu
def test_two_gpu_ranks_complete_the_run(gradient_plan, tmp_path):
    import os
    import subprocess
    import sys

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    out = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "attackgen", "run", str(gradient_plan), "--model", "digits-cnn", "--limit", "48", "-b", "8", "-q", "-o",
               str(out)]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["complete"] and result["device"] == "cuda:0" and result["n_inputs"] == 48
