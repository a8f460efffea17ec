"""The run folder across versions: a checkpoint written by the executor before it was split (commit
b5701a6, tests/data/checkpoint_b5701a6: a run of two items over 8 digits in chunks of 4, stopped after
item 1 and half of item 2) resumes with today's code, keeping what it finished (the rest runs with the
per-input random streams, so it is not bit-equal to an uninterrupted old run; before that change it was
equal, see the commit that split the executor); a checkpoint of another format is refused with a
message, never a traceback."""

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


def test_a_run_stopped_before_the_split_resumes_and_keeps_what_it_finished(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(OLD / CHECKPOINT, out / CHECKPOINT)
    old = torch.load(OLD / CHECKPOINT, weights_only=True)
    said: list[str] = []
    resumed = Executor(load_plan(OLD / "plan.yaml"), "digits-cnn", "digits", out,
                       RunOptions(resume=True, **OPTIONS), echo=said.append).run()
    assert "resuming: 3 finished batches are kept, not run again" in said
    assert resumed.complete and resumed.n_inputs == 8 and [len(s["done"]) for s in old["steps"]] == [2, 1]
    # what the old run finished is reported as it was (item 1 whole, item 2's first chunk), not re-run
    for item, state in zip(resumed.items, old["steps"], strict=True):
        by_index = {r.index: r for r in item.inputs}
        for i in state["attacked"].nonzero().flatten().tolist():
            record = by_index[i]
            assert record.success == bool(state["success"][i]) and record.queries == int(state["queries"][i])
            assert record.norms.linf == float(state["norms"][i, 3])
    # and item 2's second chunk (inputs 4-7) ran now, on the inputs item 1 left unbroken
    first, second = resumed.items
    left = {r.index for r in first.inputs if not r.success and r.index >= 4}
    assert left and {r.index for r in second.inputs if r.index >= 4} == left


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
