"""Adaptive escalation on the zoo's masking fixtures: what a user relies on when a soundness flag fires.

The logit-scaled model decides exactly as digits-cnn, so its true robust accuracy is the unscaled one's;
cross-entropy PGD cannot see that (saturated softmax), the DLR escalation can. The quantised model's
gradients are zero, BPDA through the located rounding breaks it. The randomised model gets EOT. A
quantiser BPDA cannot locate (a custom autograd function with a zero backward) gets the transfer from a
smooth surrogate. Small runs (few inputs, a short plan): the escalation items themselves run at their
real settings.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.document import ItemContext, Plan, PlanItem
from attackgen.report.run_report import write_report
from attackgen.results import Flag
from attackgen.run.escalate import (
    BPDA,
    EOT_SAMPLES,
    EOT_STEPS,
    EscalationPlan,
    builtin_surrogates,
    choose,
    escalation_setting,
    find_surrogate,
    locate_nondifferentiable,
)
from attackgen.run.executor import Executor, RunOptions
from attackgen.run.folder import CHECKPOINT
from attackgen.run.objectives import build_objective
from attackgen.run.steps import StepRunner
from taxonomy.spec import parse_spec

SPEC = {"name": "escalate-test", "task": "classification", "classes": [str(i) for i in range(10)],
        "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
                   "model_knowledge": "white_box"}}


def plan(steps: int = 10, preset: str | None = None) -> Plan:
    spec = parse_spec(SPEC)
    item = PlanItem(attack="apgd_ce", epsilon=0.1, params={"steps": steps, "loss": "ce"},
                    context=ItemContext(norm="inf", mode="fixed"))
    return Plan(spec_name=spec.name, spec_hash=spec.spec_hash(), spec=spec.model_dump(mode="json"), epsilons=[0.1],
                items=[item], preset=preset)


def run(tmp_path, model: str, limit: int, escalate: bool | None = None, folder: str = "out"):
    options = RunOptions(limit=limit, progress=False, escalate=escalate)
    return Executor(plan(), model, "digits", tmp_path / folder, options).run()


def test_logit_scaled_model_escalates_to_the_unscaled_robust_accuracy(tmp_path):
    unscaled = run(tmp_path, "digits-cnn", 32, folder="plain")
    off = run(tmp_path, "digits-cnn-scaled", 32, escalate=False, folder="off")
    on = run(tmp_path, "digits-cnn-scaled", 32, folder="on")
    assert unscaled.escalation is None  # nothing fired on the plain model
    # cross-entropy on saturated logits breaks (almost) nothing; the flag says escalation was off
    assert off.robust_accuracy >= unscaled.robust_accuracy + 0.5
    assert off.escalation is not None and not off.escalation.ran and "no-escalate" in off.escalation.disabled
    assert [i.attack for i in off.items] == ["apgd_ce"]
    # with escalation: DLR (scale-free) on the survivors reaches the unscaled model's figure
    esc = on.escalation
    assert esc is not None and esc.ran
    assert esc.robust_accuracy_before >= unscaled.robust_accuracy + 0.5
    assert esc.robust_accuracy_after == on.robust_accuracy <= unscaled.robust_accuracy + 1 / 32 + 1e-9
    assert [(i.attack, i.view) for i in esc.items] == [("apgd_dlr", "victim")]
    assert on.items[-1].escalated_for == ["zero_gradients"]
    flag = next(f for f in on.flags if f.check == "zero_gradients")
    assert flag.escalation and flag.escalation.startswith("escalated")
    md, _ = write_report(tmp_path / "on")
    text = md.read_text()
    assert "Adaptive escalation" in text and "before escalation" in text


def test_bpda_breaks_the_quantised_model_where_plain_gradients_do_not(tmp_path):
    off = run(tmp_path, "digits-cnn-quantized", 24, escalate=False, folder="off")
    on = run(tmp_path, "digits-cnn-quantized", 24, folder="on")
    esc = on.escalation
    assert esc is not None and esc.ran
    assert esc.located == ["round in InputQuantize"]
    assert {i.view for i in esc.items} == {"bpda"}
    assert off.robust_accuracy >= 0.8  # zero gradients: APGD alone breaks (almost) nothing
    assert on.robust_accuracy <= off.robust_accuracy - 0.5
    broken = sum(i.n_success for i in on.items[1:])
    assert broken >= 12 and broken == sum(i.n_success for i in esc.items)
    saved = json.loads((tmp_path / "on" / "results.json").read_text())
    assert saved["escalation"]["robust_accuracy_before"] > saved["escalation"]["robust_accuracy_after"]


def test_eot_escalation_runs_on_the_randomised_model_and_reports_before_and_after(tmp_path):
    torch.manual_seed(0)
    result = run(tmp_path, "digits-cnn-randomized", 12)
    esc = result.escalation
    assert esc is not None and esc.ran
    assert {(i.attack, i.view, i.reasons[0]) for i in esc.items} == {("apgd_ce", "victim", "randomized_output"),
                                                                      ("apgd_dlr", "victim", "randomized_output")}
    assert all(item.params.get("eot_iter") == EOT_SAMPLES and item.params.get("steps") == EOT_STEPS
               for item in result.items[1:])
    assert esc.robust_accuracy_after <= esc.robust_accuracy_before
    assert esc.robust_accuracy_after == result.robust_accuracy


def test_bpda_keeps_outputs_exact_and_gives_gradients_through_rounding():
    from attackgen.models.zoo import load_builtin_data, load_builtin_model

    model = load_builtin_model("digits-cnn-quantized")
    x = load_builtin_data("digits").x[:8].clone().requires_grad_(True)
    view = BPDA(model)
    assert torch.equal(view(x).detach(), model(x).detach())
    (grad,) = torch.autograd.grad(view(x).sum(), x)
    assert float(grad.abs().sum()) > 0
    assert locate_nondifferentiable(load_builtin_model("digits-cnn"), x.detach()) == []


def flag(check: str) -> Flag:
    return Flag(check=check, evidence="e", fix="f")


def test_choice_follows_the_flags():
    budgets = [("inf", 0.1)]
    assert choose([flag("curve_rises")], budgets, [], [], 10).items == []
    probs = choose([flag("probability_outputs")], budgets, [], [], 10)
    assert {(i.attack, i.view) for i in probs.items} == {("apgd_dlr", "log_probabilities"),
                                                         ("apgd_t", "log_probabilities")}
    two = choose([flag("zero_gradients")], budgets, [], [], 2)  # DLR needs 3 classes: nothing, and it is said
    assert two.items == [] and two.unanswered == ["zero_gradients"] and "C18" in two.notes[0]
    l1 = choose([flag("zero_gradients")], [("1", 5.0)], [], [], 10)
    assert l1.items == [] and l1.unanswered == ["zero_gradients"]


def test_preset_plans_run_exactly_unless_asked():
    assert escalation_setting(RunOptions(), plan(preset="autoattack-standard")) is not None
    assert escalation_setting(RunOptions(escalate=True), plan(preset="autoattack-standard")) is None
    assert escalation_setting(RunOptions(), plan()) is None
    assert escalation_setting(RunOptions(escalate=False), plan()) == "turned off (--no-escalate)"


# --------------------------------------------------------------------------- transfer from a smooth surrogate


class _HiddenRound(torch.autograd.Function):
    """Rounding to 8 grey levels that BPDA cannot locate: floor division (not a listed operation) inside a
    custom autograd function whose backward is zero."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.div(x.clamp(0, 1) * 7 + 0.5, 1, rounding_mode="floor") / 7

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)


class HiddenQuantize(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(_HiddenRound.apply(x))


class Opaque(nn.Module):
    """The same quantised model with its CNN hidden from named_modules: no submodule to unwrap."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.hidden = [model]

    def forward(self, x: Tensor) -> Tensor:
        return self.hidden[0](_HiddenRound.apply(x))


def hidden_run(tmp_path, limit: int, escalate: bool | None = None, folder: str = "out", resume: bool = False):
    model = HiddenQuantize(load_builtin_model("digits-cnn")).eval()
    data = load_builtin_data("digits").take(slice(0, limit))
    options = RunOptions(progress=False, escalate=escalate, batch_size=8, resume=resume)
    return Executor(plan(), "hidden-quantized", "digits", tmp_path / folder, options, model=model, data=data).run()


def test_transfer_from_the_unwrapped_model_breaks_a_quantiser_bpda_cannot_locate(tmp_path):
    off = hidden_run(tmp_path, 24, escalate=False, folder="off")
    on = hidden_run(tmp_path, 24)
    assert off.robust_accuracy >= 0.9  # zero gradients: APGD-CE breaks (almost) nothing
    esc = on.escalation
    assert esc is not None and esc.ran and esc.located == []  # nothing for BPDA
    views = [(i.attack, i.view) for i in esc.items]
    assert views == [("apgd_dlr", "victim"), ("apgd_ce", "surrogate"), ("apgd_t", "surrogate")]
    assert esc.items[0].n_success == 0  # DLR on the real (zero) gradients cannot move either
    assert esc.surrogate and "submodule model (SmallCNN)" in esc.surrogate
    assert on.robust_accuracy <= 0.1 and esc.robust_accuracy_after == on.robust_accuracy
    assert sum(i.n_success for i in esc.items) == sum(i.n_success for i in on.items[1:]) >= 20
    # the gradients of the real model are still zero: the flag stays, and says what was done
    assert "zero_gradients" in esc.remaining
    flag = next(f for f in on.flags if f.check == "zero_gradients")
    assert flag.escalation and flag.escalation.startswith("escalated") and "remains" in flag.escalation
    md, _ = write_report(tmp_path / "out")
    assert "surrogate" in md.read_text()


def test_a_model_without_a_submodule_to_unwrap_gets_a_builtin_surrogate_of_its_task():
    quantised = Opaque(load_builtin_model("digits-cnn")).eval()
    x, y = load_builtin_data("digits").x[:64], load_builtin_data("digits").y[:64]
    spec = parse_spec(SPEC)
    objective = build_objective(spec, y, quantised(x))
    assert find_surrogate(quantised, x, y, objective, 10) is None  # no built-ins offered: none
    found = find_surrogate(quantised, x, y, objective, 10, builtin_surrogates)
    assert found is not None and found.source.startswith("builtin:digits-") and found.agreement >= 0.75
    # a model whose gradients already work is never its own surrogate, nor is a masking layer
    scaled = load_builtin_model("digits-cnn-scaled")
    inner = find_surrogate(scaled, x, y, build_objective(spec, y, scaled(x)), 10)
    assert inner is not None and inner.source == "submodule:model"


def test_a_run_stopped_during_escalation_resumes_without_redoing_finished_escalation_work(tmp_path, monkeypatch):
    straight = hidden_run(tmp_path, 24, folder="straight")
    calls: list[tuple[int, int]] = []
    original = StepRunner.attack_survivors

    def counting(self: StepRunner, step: Any, state: Any, *args: Any) -> None:
        calls.append((step.index, len(state.done)))
        if stop and step.role == "escalation" and step.model_view is not None and len(state.done) == 1 \
                and step.index == 2:
            raise KeyboardInterrupt  # in the first transfer item, its first chunk finished
        original(self, step, state, *args)

    stop = True
    monkeypatch.setattr(StepRunner, "attack_survivors", counting)
    with pytest.raises(KeyboardInterrupt):
        hidden_run(tmp_path, 24)
    checkpoint = torch.load(tmp_path / "out" / CHECKPOINT, weights_only=True)
    saved = EscalationPlan.from_dict(checkpoint["escalation"])
    assert [e.attack for e in saved.entries] == ["apgd_dlr", "apgd_ce", "apgd_t"]
    assert not checkpoint["complete"] and len(checkpoint["steps"]) == 1 + 3
    assert len(checkpoint["steps"][1]["done"]) == 3 and len(checkpoint["steps"][2]["done"]) == 1
    stop = False
    calls.clear()
    resumed = hidden_run(tmp_path, 24, resume=True)
    ran = {index for index, _ in calls}
    assert 0 not in ran and 1 not in ran  # the plan item and the finished DLR item: not run again
    assert [done for index, done in calls if index == 2] == [1, 2]  # the transfer item's last two chunks only
    assert resumed.robust_accuracy == straight.robust_accuracy
    assert [(i.n_attacked, i.n_success) for i in resumed.items] == [(i.n_attacked, i.n_success) for i in straight.items]
    assert torch.load(tmp_path / "out" / CHECKPOINT, weights_only=True)["complete"]
