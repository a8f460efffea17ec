"""A randomised model (the zoo's digits CNN behind a random resize-and-pad): what a user relies on.

Its successes are verified over several passes (one lucky draw of the randomness is not a success), the
run says so in results.json, the EOT escalation breaks inputs plain APGD left, within the budget, and
the EOT passes of a step go in one call only where the model draws per input.
"""

from __future__ import annotations

import json

import torch
from torch import Tensor, nn

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.report.run_report import write_report
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.apgd import APGDConfig, _loss_and_grad
from attackgen.run.escalate import EOT_SAMPLES, EOT_STEPS
from attackgen.run.executor import RANDOM_VERIFY_PASSES, Executor, RunOptions
from attackgen.run.objectives import build_objective
from attackgen.run.verify import verify
from taxonomy.spec import parse_spec
from tests.test_escalate import SPEC, plan


class FooledOnce(nn.Module):
    """Decides class 0 on its first call only, class 1 (the label below) on every later one."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        out = torch.zeros(x.shape[0], 3)
        out[:, 0 if self.calls == 1 else 1] = 5.0
        return out


def test_one_lucky_pass_of_a_random_model_is_no_success_with_several_passes():
    spec = parse_spec({**SPEC, "classes": ["a", "b", "c"]})
    x, y = torch.rand(4, 1, 8, 8), torch.ones(4, dtype=torch.long)
    cand = (x + 0.05).clamp(0, 1)

    def check(passes: int) -> Tensor:
        model = FooledOnce()
        objective = build_objective(spec, y, torch.eye(3)[1].repeat(4, 1) * 5)
        return verify(model, x, cand, objective, [], input_bounds=(0.0, 1.0), tol=1e-6, passes=passes).hit

    assert bool(check(1).all())  # one pass: the lucky draw counts
    assert not bool(check(RANDOM_VERIFY_PASSES).any())  # 1 fooled pass of 10: no success


class SharedDraw(nn.Module):
    """One random draw per call, shared by the whole batch (copies in one call would see the same draw)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, :4] * 10 + torch.randn(1)


def test_eot_passes_go_in_one_call_only_where_the_model_draws_per_input():
    x = load_builtin_data("digits").x[:6]
    spec = parse_spec(SPEC)
    for model, batched in ((load_builtin_model("digits-cnn-randomized"), True), (SharedDraw(), False)):
        rows = torch.arange(6)
        with torch.no_grad():
            out = model(x)
        y = out.argmax(1)
        objective = build_objective(parse_spec({**spec.model_dump(mode="json"), "classes": [str(i) for i in range(
            out.shape[1])]}), y, out)
        access = WhiteBoxAccess(model, 6)
        cfg = APGDConfig(eot_iter=8)
        gain, grad, _ = _loss_and_grad(access, x, rows, objective, objective, cfg)
        assert cfg.eot_batched is batched
        assert grad.shape == x.shape and bool(torch.isfinite(gain).all())
        # every pass is counted per input: 8 (and 8 more when a shared draw sent it back to one call each)
        assert access.queries.tolist() == [8 if batched else 16] * 6


def test_default_escalation_on_the_randomised_model_verifies_over_passes_and_breaks_what_apgd_left(tmp_path):
    options = RunOptions(limit=40, progress=False)
    result = Executor(plan(), "digits-cnn-randomized", "digits", tmp_path / "out", options).run()
    assert any(f.check == "randomized_output" for f in result.flags)
    assert result.metrics["verify_passes"] == RANDOM_VERIFY_PASSES
    esc = result.escalation
    assert esc is not None and esc.ran
    eot = result.items[1:]
    assert [(i.attack, i.params["eot_iter"], i.params["steps"]) for i in eot] == [
        ("apgd_ce", EOT_SAMPLES, EOT_STEPS), ("apgd_dlr", EOT_SAMPLES, EOT_STEPS)]
    assert sum(i.n_success for i in eot) >= 1  # EOT breaks inputs the plain APGD item left
    assert esc.robust_accuracy_after < esc.robust_accuracy_before
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["metrics"]["verify_passes"] == RANDOM_VERIFY_PASSES
    md, _ = write_report(tmp_path / "out")
    assert f"re-run {RANDOM_VERIFY_PASSES} times" in md.read_text()
    assert all("5 passes" in e["why"] and "50 steps" in e["why"] for e in saved["escalation"]["items"])
    wins = [row for item in saved["items"] for row in item["inputs"] if row["success"]]
    assert len(wins) >= 20 and all(row["norms"]["linf"] <= 0.1 + 1e-6 for row in wins)  # the budget holds


def test_plain_apgd_on_a_random_model_keeps_going_until_successes_repeat():
    """Without EOT, an input leaves APGD on a randomised model only after CONFIRM_STEPS successful steps in a
    row: its candidate fools fresh passes far more often than the first point one draw put across."""
    from attackgen.run.attacks.apgd import APGDCE
    from attackgen.run.attacks.base import AttackEnv, Budget

    model = load_builtin_model("digits-cnn-randomized").requires_grad_(False)
    data = load_builtin_data("digits").take(slice(0, 48))
    x, y = data.x, data.y
    with torch.no_grad():
        clean = model(x)
    objective = build_objective(parse_spec(SPEC), y, clean)
    budget = Budget(norm="inf", epsilon=0.1)

    def fooled(random_outputs: bool) -> float:
        torch.manual_seed(0)
        attack = APGDCE(seed=0, steps=50)
        out = attack.run(WhiteBoxAccess(model, len(x)), x, objective, budget,
                         AttackEnv(num_classes=10, random_outputs=random_outputs)).x_adv
        rates = []
        for seed in range(1, 11):
            torch.manual_seed(seed)
            with torch.no_grad():
                rates.append(float((model(out).argmax(1) != y).float().mean()))
        return sum(rates) / len(rates)

    first, confirmed = fooled(False), fooled(True)
    assert confirmed >= first + 0.05, (first, confirmed)
