"""The executor: survivors-only worst case, verification that cheating attacks cannot pass, enforced
access, checkpoints and resume, out-of-memory back-off, universal and contextual scopes, output folders."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import Field
from torch import nn

from attackgen.plan.document import CONTEXT_KEYS, ItemContext, Plan, PlanItem
from attackgen.report.run_report import write_report
from attackgen.results import RunResult
from attackgen.run.access import NoAccess, ScoreOracle, WhiteBoxAccess
from attackgen.run.attacks.base import Attack, AttackOutput, UniversalAttack
from attackgen.run.executor import CHECKPOINT, Executor, RunError, RunOptions, measure, quantize
from taxonomy.catalog_types import AttackDescriptor
from taxonomy.params import AttackParams
from taxonomy.spec import parse_spec

LIMIT = 48


def spec_data(**threat):
    base = {
        "consequence": "untargeted",
        "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
        "model_knowledge": "white_box",
    }
    base.update(threat)
    return {"name": "exec-test", "task": "classification", "classes": [str(i) for i in range(10)], "threat": base}


def make_plan(spec, items, epsilons=None):
    return Plan(spec_name=spec.name, spec_hash=spec.spec_hash(), spec=spec.model_dump(mode="json"),
                epsilons=epsilons or [], items=items)


def descriptor(name, access="gradients", scopes=("individual",)):
    return AttackDescriptor(
        id=name, title=name, implementation=f"test_executor:{name}", reference="test stand-in",
        tasks=frozenset({"classification"}), consequences=frozenset({"untargeted"}), scopes=frozenset(scopes),
        imperceptibility=frozenset({"lp:inf"}), budget_modes=frozenset({"fixed"}), access=access,
        optimizer="first_order", gradient_source="analytic", data_bases=frozenset({"none"}), params=TinyParams,
    )


CALLS: dict[str, int] = {}


class TinyParams(AttackParams):
    steps: int = Field(5, ge=1)


class TinyPGD(Attack[TinyParams]):
    """A few signed-gradient steps inside the budget (the honest reference)."""

    access = "gradients"
    params_model = TinyParams

    def run(self, access, x, objective, budget, env=None):
        CALLS["TinyPGD"] = CALLS.get("TinyPGD", 0) + 1
        assert isinstance(access, WhiteBoxAccess)
        eps, steps = budget.epsilon, self.params.steps
        gen = self.generator(x.device)
        x_adv = budget.project(x, x + (torch.rand(x.shape, generator=gen) * 2 - 1) * eps)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective.loss(access(x_adv)).sum(), x_adv)
            x_adv = budget.project(x, x_adv.detach() - 2.5 * eps / steps * grad.sign())
        return AttackOutput(x_adv.detach())


class OverBudget(Attack):
    """Cheats: a large perturbation, clipped to the bounds but five times epsilon."""

    access = "gradients"

    def run(self, access, x, objective, budget, env=None):
        noise = torch.randn(x.shape, generator=self.generator(x.device)).sign()
        return AttackOutput((x + 5 * budget.epsilon * noise).clamp(*budget.bounds))


class Unclipped(Attack):
    """Cheats: stays within epsilon but leaves the bounds, which fools MaxModel only when not clipped."""

    access = "gradients"

    def run(self, access, x, objective, budget, env=None):
        return AttackOutput(x + budget.epsilon)


class Interrupting(TinyPGD):
    """Behaves like TinyPGD, then a Ctrl-C arrives during its third batch."""

    def run(self, access, x, objective, budget, env=None):
        CALLS["Interrupting"] = CALLS.get("Interrupting", 0) + 1
        if CALLS["Interrupting"] == 3:
            raise KeyboardInterrupt
        return super().run(access, x, objective, budget, env)


class OOM(TinyPGD):
    """Runs out of (pretend) device memory on batches above 8 inputs."""

    def run(self, access, x, objective, budget, env=None):
        if len(x) > 8:
            raise torch.cuda.OutOfMemoryError("pretend")
        CALLS["OOM"] = max(CALLS.get("OOM", 0), len(x))
        return super().run(access, x, objective, budget, env)


class ScoreSpender(Attack):
    """Random search through the score oracle until its per-input budget is spent."""

    access = "scores"

    def run(self, access, x, objective, budget, env=None):
        assert isinstance(access, ScoreOracle) and not hasattr(access, "model")
        rows = torch.arange(len(x))
        best = x.clone()
        gen = self.generator(x.device)
        while bool((access.remaining(rows) > 0).any()):
            live = rows[access.remaining(rows) > 0]
            trial = budget.project(x[live], x[live] + (torch.rand(x[live].shape, generator=gen) * 2 - 1) * 1.0)
            won = objective.subset(live).success(access(trial, live))
            best[live[won]] = trial[won]
        return AttackOutput(best)


class SurrogateOnly(TinyPGD):
    access = "surrogate"

    def run(self, access, x, objective, budget, env=None):
        assert isinstance(access, NoAccess)
        return super().run(access.surrogate, x, objective, budget, env)


class TinyUniversal(UniversalAttack):
    """One signed-mean-gradient perturbation fitted on the fitting split."""

    access = "gradients"

    def fit(self, access, x_fit, objective, budget, env=None):
        CALLS["fit"] = len(x_fit)
        delta = torch.zeros_like(x_fit[:1])
        for _ in range(5):
            x_adv = (x_fit + delta).clamp(*budget.bounds).requires_grad_(True)
            (grad,) = torch.autograd.grad(objective.loss(access(x_adv)).sum(), x_adv)
            delta = (delta - 0.5 * budget.epsilon * grad.mean(0, keepdim=True).sign()).clamp(-budget.epsilon,
                                                                                            budget.epsilon)
        self.fitted = delta
        return delta

    def apply(self, x, budget):
        return (x + self.fitted).clamp(*budget.bounds)


CATALOG = {name: descriptor(name) for name in ("TinyPGD", "OverBudget", "Unclipped", "Interrupting", "OOM")}
CATALOG["ScoreSpender"] = descriptor("ScoreSpender", access="scores")
CATALOG["SurrogateOnly"] = descriptor("SurrogateOnly", access="surrogate")
CATALOG["TinyUniversal"] = descriptor("TinyUniversal", scopes=("universal", "contextual"))


def item(name, eps=0.1, **params):
    context = {k: params.pop(k) for k in list(params) if k in CONTEXT_KEYS}
    return PlanItem(attack=name, epsilon=eps, params=params, context=ItemContext(**{"norm": "inf", **context}))


def run(tmp_path, items, spec=None, folder="out", model="digits-cnn", data="digits", epsilons=None, **options):
    spec = spec or parse_spec(spec_data())
    options.setdefault("limit", LIMIT)
    options.setdefault("progress", False)
    executor = Executor(make_plan(spec, items, epsilons), model, data, tmp_path / folder, RunOptions(**options),
                        catalog=CATALOG)
    return executor.run()


def records(result: RunResult):
    return [[(r.index, r.success, r.within_budget, r.norms.linf, r.queries) for r in i.inputs] for i in result.items]


# --------------------------------------------------------------------------- worst case and consistency


def test_survivors_only_worst_case_and_consistent_records(tmp_path):
    result = run(tmp_path, [item("TinyPGD", 0.05), item("TinyPGD", 0.1), item("TinyPGD", 0.1, steps=10)],
                 epsilons=[0.05, 0.1], batch_size=16)
    assert result.complete and result.n_inputs == LIMIT
    assert result.robust_accuracy <= result.clean_accuracy - 0.3
    first, second, third = result.items
    assert first.n_attacked == round(result.clean_accuracy * LIMIT)  # clean failures are not attacked
    broken_at_01 = {r.index for i in (first, second) for r in i.inputs if r.success}
    assert {r.index for r in third.inputs}.isdisjoint(broken_at_01)  # survivors only
    assert {r.index for r in second.inputs} == {r.index for r in first.inputs if not r.success}
    for it in result.items:
        assert it.n_attacked == len(it.inputs) and it.n_success == sum(r.success for r in it.inputs)
        for r in it.inputs:
            assert r.norms.linf <= it.epsilon + 1e-6 or not r.success
            assert r.success == (r.within_budget and r.adversarial_label != r.label)
    broken = {r.index for it in result.items for r in it.inputs if r.success}
    correct = round(result.clean_accuracy * LIMIT)
    assert result.robust_accuracy == pytest.approx((correct - len(broken)) / LIMIT)
    assert [p["epsilon"] for p in result.curve] == [0.05, 0.1]
    assert result.curve[0]["robust_accuracy"] == pytest.approx(first.robust_accuracy_after)
    assert result.curve[1]["robust_accuracy"] == pytest.approx(result.robust_accuracy)
    saved = RunResult.model_validate_json((tmp_path / "out" / "results.json").read_text())
    assert saved.spec_hash == result.spec_hash and records(saved) == records(result)
    assert {"torch", "numpy", "foolbox", "attackgen", "python"} <= set(saved.versions)


# --------------------------------------------------------------------------- verification


def test_out_of_budget_candidates_never_count(tmp_path):
    result = run(tmp_path, [item("OverBudget", 0.05)])
    only = result.items[0]
    assert only.n_success == 0 and result.robust_accuracy == result.clean_accuracy
    assert any(not r.within_budget and r.norms.linf > 0.2 for r in only.inputs)
    flag = next(f for f in result.flags if f.check == "verification.out_of_budget")
    assert flag.severity == "error" and "counted as failures" in flag.evidence


class MaxModel(nn.Module):
    """Class 1 when some value exceeds 1.01, else class 0: only an unclipped input reaches class 1."""

    def forward(self, x):
        top = x.flatten(1).amax(dim=1)
        return torch.stack([torch.full_like(top, 0.01), top - 1.0], dim=1)


def test_unclipped_candidates_are_clipped_before_the_rerun(tmp_path):
    spec = parse_spec({**spec_data(), "classes": ["a", "b"]})
    executor = Executor(make_plan(spec, [item("Unclipped", 0.1)]), "max", "const", tmp_path / "o",
                        RunOptions(progress=False), catalog=CATALOG, model=MaxModel(),
                        data=_const_data())
    result = executor.run()
    assert result.clean_accuracy == 1.0 and result.items[0].n_success == 0 and result.robust_accuracy == 1.0
    assert any(f.check == "verification.outside_bounds" for f in result.flags)


def _const_data():
    from attackgen.models.data import LabeledData

    return LabeledData("const", torch.full((6, 1, 4, 4), 0.95), torch.zeros(6, dtype=torch.long), ["a", "b"])


def test_measure_and_quantize():
    from attackgen.run.attacks.base import Budget

    x = torch.full((2, 1, 8, 8), 0.5)
    adv = x.clone()
    adv[0, 0, 0, 0] += 0.1
    adv[1] += 0.02
    norms = measure(x, adv, 1.0)
    assert norms[0, :4].tolist() == pytest.approx([1, 0.1, 0.1, 0.1], abs=1e-6)
    assert norms[1, 0] == 64 and norms[1, 3] == pytest.approx(0.02, abs=1e-6)
    assert norms[0, 4] < 1.0 and measure(x, x, 1.0)[0, 4] == pytest.approx(1.0)
    budget = Budget(norm="inf", epsilon=0.1)
    x = torch.rand(4, 1, 8, 8)
    q = quantize(budget.project(x, x + 0.1 * torch.randn_like(x).sign()), x, budget)
    changed = (q - x).abs() > 1e-6
    assert torch.allclose((q[changed] * 255).round(), q[changed] * 255, atol=1e-4)  # on the 8-bit grid
    assert float((q - x).abs().max()) <= 0.1 + 1e-6  # and still inside epsilon


# --------------------------------------------------------------------------- enforced access


def test_score_oracle_budget_is_shared_within_an_epsilon_group(tmp_path):
    spec = parse_spec(spec_data(model_knowledge={"kind": "query_limited", "query_budget": 30}))
    result = run(tmp_path, [item("ScoreSpender", 0.02), item("ScoreSpender", 0.02)], spec=spec, limit=16)
    spent: dict[int, int] = {}
    for it in result.items:
        for r in it.inputs:
            spent[r.index] = spent.get(r.index, 0) + r.queries
    assert spent and max(spent.values()) <= 30
    assert result.items[0].median_queries is not None


def test_plan_may_not_grant_more_than_the_spec(tmp_path):
    spec = parse_spec(spec_data(model_knowledge="label_only"))
    with pytest.raises(RunError, match=r"items\[0\]: attack 'TinyPGD' needs gradients access but .* label_only"):
        run(tmp_path, [item("TinyPGD")], spec=spec)
    with pytest.raises(RunError, match=r"epsilon 0.3 .* exceeds the spec's largest Linf epsilon 0.1"):
        run(tmp_path, [item("TinyPGD", 0.3)])
    with pytest.raises(RunError, match=r"items\[0\].attack: unknown attack 'TinyPDG' \(did you mean 'TinyPGD'"):
        run(tmp_path, [item("TinyPDG")])


def test_surrogate_attack_sees_only_the_surrogate(tmp_path):
    spec = parse_spec(spec_data(model_knowledge="full_black_box", data_knowledge="training"))
    result = run(tmp_path, [item("SurrogateOnly", 0.1)], spec=spec, limit=32)
    assert result.items[0].transfer_estimate and result.items[0].n_success > 0


# --------------------------------------------------------------------------- checkpoints, resume, memory


def test_resume_after_ctrl_c_redoes_no_finished_batch(tmp_path):
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [item("Interrupting")], batch_size=12)
    stopped = json.loads((tmp_path / "out" / "results.json").read_text())
    assert stopped["complete"] is False and stopped["items"][0]["n_attacked"] > 0
    assert (tmp_path / "out" / CHECKPOINT).exists()
    markdown, _ = write_report(tmp_path / "out")  # a stopped run still gets its report
    assert "the run was stopped" in markdown.read_text()
    with pytest.raises(RunError, match="already holds a stopped run of this plan; pass --resume"):
        run(tmp_path, [item("Interrupting")], batch_size=12)
    CALLS.clear()
    CALLS["Interrupting"] = 10  # no more interruptions
    resumed = run(tmp_path, [item("Interrupting")], batch_size=12, resume=True)
    assert CALLS["Interrupting"] == 10 + 2  # 4 batches of 12: two were finished before Ctrl-C
    straight = run(tmp_path, [item("TinyPGD")], folder="straight", batch_size=12)
    assert resumed.complete and records(resumed) == records(straight)
    assert resumed.robust_accuracy == straight.robust_accuracy


def test_saved_adversarial_inputs_say_partial_and_survive_resume(tmp_path):
    """--save-adversarial: a stopped run's file says it is partial; resumed, it equals a straight run's."""
    import numpy as np

    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [item("Interrupting")], batch_size=12, save_adversarial=True)
    stopped = json.loads((tmp_path / "out" / "results.json").read_text())
    with np.load(tmp_path / "out" / "adversarial.npz") as saved:
        assert not bool(saved["complete"]) and int(saved["success"].sum()) == stopped["items"][0]["n_success"] > 0
    assert "partial run" in stopped["files"]["adversarial.npz"]
    CALLS.clear()
    CALLS["Interrupting"] = 10
    run(tmp_path, [item("Interrupting")], batch_size=12, resume=True, save_adversarial=True)
    straight = run(tmp_path, [item("TinyPGD")], folder="straight", batch_size=12, save_adversarial=True)
    with np.load(tmp_path / "out" / "adversarial.npz") as resumed, \
            np.load(tmp_path / "straight" / "adversarial.npz") as whole:
        assert bool(resumed["complete"]) and int(resumed["success"].sum()) == straight.items[0].n_success
        for key in ("x_adv", "success", "item", "adv_pred"):
            assert np.array_equal(resumed[key], whole[key]), key


def test_out_of_memory_backs_off(tmp_path):
    CALLS.clear()
    result = run(tmp_path, [item("OOM")], batch_size=32, limit=32)
    reference = run(tmp_path, [item("TinyPGD")], folder="ref", batch_size=8, limit=32)
    assert CALLS["OOM"] == 8 and records(result) == records(reference)


def test_output_folder_of_another_run_is_refused(tmp_path):
    run(tmp_path, [item("TinyPGD")], limit=8)
    with pytest.raises(RunError, match=r"holds another run \(plan_hash .*refusing to mix two runs.*--force"):
        run(tmp_path, [item("TinyPGD", steps=2)], limit=8)
    with pytest.raises(RunError, match="cannot resume it"):
        run(tmp_path, [item("TinyPGD", steps=2)], limit=8, resume=True)
    forced = run(tmp_path, [item("TinyPGD", steps=2)], limit=8, force=True)
    assert forced.complete and forced.items[0].params["steps"] == 2


# --------------------------------------------------------------------------- universal and contextual scopes


def test_universal_is_fitted_on_one_split_and_evaluated_on_the_other(tmp_path):
    CALLS.clear()
    spec = parse_spec(spec_data(scope={"kind": "universal", "heldout_fraction": 0.5}, data_knowledge="training"))
    result = run(tmp_path, [item("TinyUniversal", 0.1)], spec=spec, limit=40)
    assert CALLS["fit"] == 20 and result.n_inputs == 20 and result.metrics["n_fit"] == 20
    assert {r.index for r in result.items[0].inputs} <= set(range(40))


def test_contextual_reports_in_and_out_of_context(tmp_path):
    CALLS.clear()
    scope = {"kind": "contextual", "context": {"field": "label", "in": [1, 7]}, "heldout_fraction": 0.5}
    spec = parse_spec(spec_data(scope=scope, data_knowledge="training"))
    result = run(tmp_path, [item("TinyUniversal", 0.1)], spec=spec, limit=80)
    metrics = result.items[0].metrics
    assert 0 < CALLS["fit"] < 40 and metrics["n_in_context"] + metrics["n_out_of_context"] == result.items[0].n_attacked
    assert all("in_context" in r.metrics for r in result.items[0].inputs)
    empty = {"kind": "contextual", "context": {"field": "label", "equals": 42}}
    with pytest.raises(RunError, match=r"threat.scope.context: the predicate label == 42 selects none"):
        run(tmp_path, [item("TinyUniversal")], spec=parse_spec(spec_data(scope=empty)), folder="empty")
    unknown = {"kind": "contextual", "context": {"field": "lighting", "equals": "night"}}
    with pytest.raises(RunError, match=r"threat.scope.context.field: 'lighting' is not a field"):
        run(tmp_path, [item("TinyUniversal")], spec=parse_spec(spec_data(scope=unknown)), folder="unknown")


def test_box_mask_confines_verification(tmp_path):
    spec = parse_spec(spec_data(capability={"spatial": {"kind": "box", "box": [0, 0, 0.5, 0.5]}}))
    honest = run(tmp_path, [item("TinyPGD", 0.1)], spec=spec, limit=16)
    for r in honest.items[0].inputs:
        assert r.norms.l0 <= 64  # a quarter of 16x16
    cheat = run(tmp_path, [item("OverBudget", 0.1)], spec=spec, limit=16, folder="cheat")
    assert cheat.items[0].n_success == 0


def test_random_patches_and_8_bit_quantisation(tmp_path):
    import numpy as np

    capability = {"spatial": {"kind": "patch", "area_fraction": 0.25, "placement": "random"}, "quantize": True}
    spec = parse_spec(spec_data(capability=capability))
    result = run(tmp_path, [item("TinyPGD", 0.1, steps=10)], spec=spec, limit=16)
    won = [r for r in result.items[0].inputs if r.success]
    assert won and all(r.norms.l0 <= 64 and r.norms.linf <= 0.1 + 1e-6 for r in won)  # an 8x8 patch
    with np.load(tmp_path / "out" / "examples.npz") as examples:
        adv, clean = examples["adversarial"], examples["clean"]
    changed = np.abs(adv - clean) > 1e-6
    assert np.allclose(np.round(adv[changed] * 255), adv[changed] * 255, atol=1e-3)  # changed pixels on the grid
    corners = {tuple(np.argwhere(c[0]).min(0)) for c in changed}
    assert len(corners) > 1  # the patch moves from input to input
