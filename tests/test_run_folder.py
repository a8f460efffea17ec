"""The run folder across versions: a checkpoint written by the executor before it was split (commit
b5701a6, tests/data/checkpoint_b5701a6: a run of two items over 8 digits in chunks of 4, stopped after
item 1 and half of item 2) resumes with today's code to the same results as an uninterrupted run; a
checkpoint of another format is refused with a message, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from attackgen.plan.document import load_plan
from attackgen.run.executor import CHECKPOINT, Executor, RunError, RunOptions

OLD = Path(__file__).parent / "data" / "checkpoint_b5701a6"
OPTIONS = {"limit": 8, "batch_size": 4, "progress": False}


def records(result):
    return [[(r.index, r.success, r.within_budget, r.norms, r.queries, r.adversarial_label) for r in item.inputs]
            for item in result.items]


def test_a_run_stopped_before_the_split_resumes_to_the_same_results(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(OLD / CHECKPOINT, out / CHECKPOINT)
    plan = load_plan(OLD / "plan.yaml")
    said: list[str] = []
    resumed = Executor(plan, "digits-cnn", "digits", out, RunOptions(resume=True, **OPTIONS), echo=said.append).run()
    assert "resuming: 3 finished batches are kept, not run again" in said
    straight = Executor(load_plan(OLD / "plan.yaml"), "digits-cnn", "digits", tmp_path / "straight",
                        RunOptions(**OPTIONS)).run()
    assert resumed.complete and records(resumed) == records(straight)
    assert resumed.robust_accuracy == straight.robust_accuracy and resumed.curve == straight.curve


def test_a_checkpoint_of_another_version_is_refused_with_a_message(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    checkpoint = torch.load(OLD / CHECKPOINT, weights_only=True)
    checkpoint["version"] = 99
    torch.save(checkpoint, out / CHECKPOINT)
    plan = load_plan(OLD / "plan.yaml")
    with pytest.raises(RunError, match="checkpoint is from another version or data size; use --force"):
        Executor(plan, "digits-cnn", "digits", out, RunOptions(resume=True, **OPTIONS)).run()
    (out / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match=r"cannot be read .*not written by attackgen; use --force"):
        Executor(plan, "digits-cnn", "digits", out, RunOptions(resume=True, **OPTIONS)).run()
