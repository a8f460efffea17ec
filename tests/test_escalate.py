"""Adaptive escalation on the zoo's masking fixtures: what a user relies on when a soundness flag fires.

The logit-scaled model decides exactly as digits-cnn, so its true robust accuracy is the unscaled one's;
cross-entropy PGD cannot see that (saturated softmax), the DLR escalation can. The quantised model's
gradients are zero, BPDA through the located rounding breaks it. The randomised model gets EOT. Small
runs (few inputs, a short plan): the escalation items themselves run at their real settings.
"""

from __future__ import annotations

import json

import torch

from attackgen.plan.document import ItemContext, Plan, PlanItem
from attackgen.report.run_report import write_report
from attackgen.results import Flag
from attackgen.run.escalate import BPDA, choose, escalation_setting, locate_nondifferentiable
from attackgen.run.executor import Executor, RunOptions
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
    assert all(item.params.get("eot_iter") == 20 for item in result.items[1:])
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
