"""What a run claims is what it measured: stopped runs say what finished, targeted runs leave out the
inputs already of the target, edited items cannot step outside the spec, NaN outputs are no success."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_executor import CALLS, CATALOG, LIMIT, TinyPGD, descriptor, item, make_plan, spec_data
from torch import nn

from attackgen.cli.execute import report_stopped
from attackgen.models.zoo import load_builtin_data
from attackgen.results import RunResult
from attackgen.run.attacks.base import Attack, AttackOutput
from attackgen.run.executor import Executor, RunError, RunOptions
from taxonomy.spec import parse_spec

SWITCH = {"nan": False}


class StrongPGD(TinyPGD):
    """TinyPGD under another name: a second attack that breaks the inputs the first one left."""


class WholeImage(Attack):
    """Cheats whatever its item says: replaces the input by its inverse (Linf up to 1)."""

    access = "gradients"

    def run(self, access, x, objective, budget, env=None):
        return AttackOutput(1.0 - x)


class NaNSwitch(Attack):
    """Returns the clean input unchanged after turning the victim's outputs to NaN."""

    access = "gradients"

    def run(self, access, x, objective, budget, env=None):
        SWITCH["nan"] = True
        return AttackOutput(x.clone())


class NaNAfterSwitch(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return out * float("nan") if SWITCH["nan"] else out


HERE = {name: dataclasses.replace(descriptor(name), implementation=f"test_executor_honesty:{name}")
        for name in ("WholeImage", "NaNSwitch", "StrongPGD")}
CAT = {**CATALOG, **HERE}


def run(tmp_path, items, spec=None, folder="out", model="digits-cnn", **options):
    spec = spec or parse_spec(spec_data())
    options.setdefault("limit", LIMIT)
    options.setdefault("progress", False)
    given = options.pop("model_module", None)
    return Executor(make_plan(spec, items), model, "digits", tmp_path / folder, RunOptions(**options), catalog=CAT,
                    model=given).run()


# --------------------------------------------------------------------------- partial runs


def test_a_stopped_run_reports_only_the_inputs_it_finished(tmp_path, capsys):
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [item("Interrupting")], batch_size=12)  # Ctrl-C in the third batch of 12
    stopped = RunResult.model_validate_json((tmp_path / "out" / "results.json").read_text())
    assert not stopped.complete and stopped.metrics["n_finished"] == 24
    reference = run(tmp_path, [item("TinyPGD")], folder="first24", batch_size=12, limit=24)
    # over the 24 inputs that finished, as a run of those 24 alone; not over all 48 (unattacked as robust)
    assert stopped.robust_accuracy == pytest.approx(reference.robust_accuracy)
    assert stopped.robust_accuracy < stopped.clean_accuracy - 0.2
    assert stopped.items[0].robust_accuracy_after == pytest.approx(stopped.robust_accuracy)  # same inputs
    assert stopped.partial_note().startswith(f"partial: 24 of {LIMIT} inputs")
    report_stopped(tmp_path / "out")
    printed = capsys.readouterr()
    assert f"partial: 24 of {LIMIT} inputs" in printed.out and "--resume" in printed.err
    for name in ("report.md", "report.html"):
        assert f"partial: 24 of {LIMIT} inputs" in (tmp_path / "out" / name).read_text()


def test_a_stopped_runs_examples_come_from_every_attack_that_broke_inputs(tmp_path):
    """Before: examples.npz kept the first 8 verified successes in plan order, all from the first attack,
    so the report of a stopped (or finished) run never showed the other attacks' examples."""
    import numpy as np

    from attackgen.report.run_report import load_examples

    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [item("TinyPGD", steps=1), item("StrongPGD", steps=20), item("Interrupting")], batch_size=12)
    stopped = RunResult.model_validate_json((tmp_path / "out" / "results.json").read_text())
    broke = [i.attack for i in stopped.items if i.n_success]
    assert not stopped.complete and broke[:2] == ["TinyPGD", "StrongPGD"]
    assert stopped.items[0].n_success > 8  # the first attack alone could fill the examples
    saved = load_examples(tmp_path / "out")
    attacks = [str(a) for a in saved["attack"]]
    assert set(attacks) == set(broke) and attacks[: len(broke)] == broke  # one of each before seconds
    assert len(set(saved["index"].tolist())) == len(attacks)  # one example per input
    assert np.isfinite(saved["adversarial"]).all()
    report_stopped(tmp_path / "out")
    assert f"taken in turn from each attack that broke inputs ({', '.join(broke)})" in (
        tmp_path / "out" / "report.md").read_text()


def test_a_stop_in_a_later_item_counts_inputs_that_finished_every_item(tmp_path):
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [item("TinyPGD"), item("Interrupting")], batch_size=12)
    stopped = json.loads((tmp_path / "out" / "results.json").read_text())
    assert stopped["metrics"]["items_finished"] == 1 and 12 <= stopped["metrics"]["n_finished"] < LIMIT
    assert "robust_upper_bound" not in stopped["metrics"]


def test_a_stop_before_any_input_finished_says_upper_bound(tmp_path):
    CALLS.clear()
    CALLS["Interrupting"] = 2  # Ctrl-C in the first batch
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [item("Interrupting")], batch_size=12)
    stopped = RunResult.model_validate_json((tmp_path / "out" / "results.json").read_text())
    assert stopped.metrics["n_finished"] == 0 and stopped.metrics["robust_upper_bound"] == 1
    assert stopped.partial_note().startswith(f"partial: 0 of {LIMIT} inputs finished every attack")


def test_a_stop_before_any_input_finished_says_upper_bound_on_every_curve_point(tmp_path, capsys):
    """Before: 'epsilon 0.1: robust accuracy 62.5%' for an epsilon no attack had finished at."""
    CALLS.clear()
    CALLS["Interrupting"] = 2  # Ctrl-C in the first batch of the second epsilon's item
    spec = parse_spec(spec_data(imperceptibility=[{"kind": "lp", "norm": "inf", "epsilon": [0.05, 0.1]}]))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [item("TinyPGD", eps=0.05), item("Interrupting", eps=0.1)], spec=spec, batch_size=12)
    report_stopped(tmp_path / "out")
    printed = capsys.readouterr().out
    stopped = RunResult.model_validate_json((tmp_path / "out" / "results.json").read_text())
    assert stopped.metrics["robust_upper_bound"] == 1 and len(stopped.curve) == 2
    assert "robust accuracy at epsilon 0.1 at most" in printed
    for point in stopped.curve:
        assert f"epsilon {point['epsilon']:g}: robust accuracy at most {100 * point['robust_accuracy']:.1f}%" in printed
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| epsilon | robust accuracy (upper bound) |" in report
    assert "| robust accuracy (epsilon 0.1), upper bound |" in report


# --------------------------------------------------------------------------- targeted runs


def test_a_targeted_run_leaves_out_the_inputs_already_of_the_target(tmp_path):
    spec = parse_spec(spec_data(consequence={"kind": "static_target", "target_class": "7"}))
    result = run(tmp_path, [item("TinyPGD")], spec=spec)
    labels = load_builtin_data("digits").y[:LIMIT]
    sevens = int((labels == 7).sum())
    assert sevens > 0 and result.metrics["n_not_applicable"] == sevens
    attacked = {r.index for r in result.items[0].inputs}
    assert not any(int(labels[i]) == 7 for i in attacked)
    won = sum(r.success and r.clean_correct for r in result.items[0].inputs)
    correct = sum(r.clean_correct for r in result.items[0].inputs)  # every non-seven input is attacked
    assert result.robust_accuracy == pytest.approx((correct - won) / (LIMIT - sevens))
    assert f"{sevens} of {LIMIT} inputs already of the target class 7" in result.excluded_note()


# --------------------------------------------------------------------------- verification against the spec


def test_an_edited_item_may_not_switch_the_norm(tmp_path):
    with pytest.raises(RunError, match=r"items\[0\].params.norm: L2 is not a norm of the spec .*Linf"):
        run(tmp_path, [item("TinyPGD", 1000.0, norm="2")])


def test_the_spec_budget_holds_whatever_the_item_says(tmp_path):
    minimal = item("WholeImage", None, mode="minimal")  # an edited item: no epsilon of its own
    result = run(tmp_path, [minimal])
    only = result.items[0]
    assert only.n_attacked > 0 and only.n_success == 0
    assert result.robust_accuracy == result.clean_accuracy
    assert any(f.check == "verification.out_of_budget" for f in result.flags)


def test_nan_outputs_are_never_a_success(tmp_path):
    from attackgen.models.zoo import load_builtin_model

    SWITCH["nan"] = False
    try:
        result = run(tmp_path, [item("NaNSwitch")], model_module=NaNAfterSwitch(load_builtin_model("digits-cnn")),
                     limit=16)
    finally:
        SWITCH["nan"] = False
    assert result.items[0].n_attacked > 0 and result.items[0].n_success == 0
    flag = next(f for f in result.flags if f.check == "verification.non_finite_output")
    assert flag.severity == "error" and "not counted as successes" in flag.evidence
    assert torch.isfinite(torch.tensor(result.robust_accuracy))


# --------------------------------------------------------------------------- progress


def test_progress_eta_from_the_share_done():
    from attackgen.run.progress import RunProgress, eta_text

    now = [0.0]
    lines: list[str] = []
    progress = RunProgress(2, 100, "lines", lines.append, interval=10, clock=lambda: now[0])
    progress.start_item(0, "square_linf eps=0.1")
    now[0] = 10.0
    progress.within(100, 0.25)  # a quarter of the only batch's expected queries, in 10 s
    assert progress.item_eta() == pytest.approx(30.0) and progress.overall_eta() == pytest.approx(70.0)
    assert lines == ["progress: item 1/2 square_linf eps=0.1: 25/100 inputs, ETA 30s; overall 12%, ETA 1m10s"]
    now[0] = 15.0
    progress.within(100, 0.5)
    assert len(lines) == 1  # at most one line per interval
    assert eta_text(3725) == "1h02m" and eta_text(None) == "?"


def test_progress_moves_within_a_batch_not_once_per_batch(tmp_path, monkeypatch):
    """One batch of 16 inputs: progress lines show inputs' worth of it done before it ends."""
    import attackgen.run.progress as progress_module
    from taxonomy.catalog_types import Cost

    monkeypatch.setattr(progress_module, "LINE_INTERVAL", 0.0)
    lines: list[str] = []
    counted = dataclasses.replace(CAT["TinyPGD"], cost=lambda p: Cost(forward=p.steps))
    spec = parse_spec(spec_data())
    Executor(make_plan(spec, [item("TinyPGD", steps=8)]), "digits-cnn", "digits", tmp_path / "o",
             RunOptions(limit=16, batch_size=16, progress=True), catalog={**CAT, "TinyPGD": counted},
             echo=lines.append).run()
    done = [int(line.split(": ")[2].split("/")[0]) for line in lines if line.startswith("progress: item 1/1")]
    assert any(0 < k < 16 for k in done), lines  # moved within the batch
    assert any("ETA" in line and "ETA ?" not in line for line in lines)
