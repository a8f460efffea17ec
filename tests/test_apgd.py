"""APGD-CE, APGD-DLR, APGD-T and the targeted FMN sweep on the digits model: they break it, beat PGD at
equal steps, hit targets, stay in budget, and refuse DLR on too few classes with the rule's id."""

from __future__ import annotations

import pytest
import torch

from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.apgd import APGDCE, APGDDLR, APGDT
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.fmn_t import TargetedFMNSweep
from attackgen.run.attacks.pgd import LinfPGD
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.errors import AttackgenError

N = 128
LINF = Budget(norm="inf", epsilon=0.1)


@pytest.fixture(scope="module")
def batch(test_set):
    x, y = test_set
    return x[:N], y[:N]


def run(model, cls, x, objective, budget, **params):
    access = WhiteBoxAccess(model, x.shape[0])
    x_adv = cls(seed=0, **params).run(access, x, objective, budget).x_adv
    assert x_adv.shape == x.shape and int(access.queries.min()) >= 1
    delta = (x_adv - x).flatten(1)
    limit = budget.epsilon * (1 + 1e-5)
    size = {"inf": delta.abs().amax(dim=1), "2": delta.norm(dim=1), "1": delta.abs().sum(dim=1)}[budget.norm]
    assert float(size.max()) <= limit, "a candidate left the epsilon ball"
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        return x_adv, model(x_adv).argmax(dim=1), access


def test_apgd_ce_breaks_most_inputs_and_beats_pgd_at_equal_steps(victim, batch):
    x, y = batch
    _, pred, _ = run(victim, APGDCE, x, ClassificationObjective(y), LINF, steps=20)
    _, pgd_pred, _ = run(victim, LinfPGD, x, ClassificationObjective(y), LINF, steps=20)
    apgd_robust, pgd_robust = int((pred == y).sum()), int((pgd_pred == y).sum())
    assert apgd_robust <= 0.2 * N, f"APGD-CE left {apgd_robust}/{N} correct at Linf 0.1"
    assert apgd_robust < pgd_robust, f"APGD-CE {apgd_robust} vs PGD {pgd_robust} robust inputs at 20 steps"


def test_survivors_leave_early_so_broken_inputs_cost_fewer_passes(victim, batch):
    x, y = batch
    _, pred, access = run(victim, APGDCE, x, ClassificationObjective(y), LINF, steps=40)
    broken = pred != y
    assert bool(broken.any()) and bool((~broken).any())
    assert float(access.queries[broken].float().mean()) < float(access.queries[~broken].float().mean())
    assert int(access.queries.max()) <= 40 + 1  # one pass per step plus the start, no more


def test_inputs_frozen_at_a_zero_gradient_leave_at_once_with_the_same_result(victim, batch, monkeypatch):
    """On the logit-scaled model the softmax saturates, so many inputs get exactly zero cross-entropy
    gradients: they can never move, and APGD-CE stops spending passes on them. The candidates are those
    of a run that kept stepping them (the same points), so robust accuracy does not change."""
    from attackgen.models.zoo.models import LogitScale
    from attackgen.run.attacks import apgd as apgd_module

    x, y = batch
    scaled = LogitScale(victim).eval()
    x_adv, pred, access = run(scaled, APGDCE, x, ClassificationObjective(y), LINF, steps=40)
    monkeypatch.setattr(apgd_module, "FREEZE_ZERO_GRADIENTS", False)  # keep stepping them, as the reference
    x_slow, slow_pred, slow_access = run(scaled, APGDCE, x, ClassificationObjective(y), LINF, steps=40)
    frozen = (access.queries <= 1) & (slow_access.queries == 41)  # left at the start, not broken there
    assert int(frozen.sum()) >= N // 4, "expected many inputs frozen at a saturated softmax"
    assert torch.equal(pred, slow_pred)
    assert torch.equal(x_adv[frozen], x_slow[frozen])
    assert int(access.queries.sum()) < int(slow_access.queries.sum()) // 2


def test_apgd_t_breaks_inputs_apgd_ce_left(victim, batch):
    x, y = batch
    _, pred, _ = run(victim, APGDCE, x, ClassificationObjective(y), LINF, steps=30)
    left = (pred == y).nonzero().squeeze(1)
    assert left.numel() > 0
    for parallel in (False, True):
        _, pred_t, _ = run(victim, APGDT, x[left], ClassificationObjective(y[left]), LINF, steps=30,
                           parallel_targets=parallel)
        assert int((pred_t != y[left]).sum()) >= 1, f"APGD-T (parallel={parallel}) broke none of {left.numel()}"


def test_apgd_t_keeping_the_most_promising_targets_costs_less_and_breaks_as_much(victim, batch):
    """keep_targets (the default plan's cost-aware APGD-T): after the first checkpoint each input keeps its
    best target runs only; the inputs APGD-CE left fall as with all 9 targets, in fewer passes."""
    x, y = batch
    _, pred, _ = run(victim, APGDCE, x, ClassificationObjective(y), LINF, steps=30)
    left = (pred == y).nonzero().squeeze(1)
    assert left.numel() > 0
    results = {}
    for keep in (0, 2):
        _, pred_t, access = run(victim, APGDT, x[left], ClassificationObjective(y[left]), LINF, steps=30,
                                keep_targets=keep)
        results[keep] = (int((pred_t != y[left]).sum()), int(access.queries.sum()))
    (all_broken, all_passes), (kept_broken, kept_passes) = results[0], results[2]
    assert kept_broken >= all_broken - 1 and kept_broken >= 1
    assert kept_passes < all_passes


def test_apgd_t_hits_a_static_target(victim, batch):
    x, y = batch
    keep = y != 3
    x, y = x[keep][:32], y[keep][:32]
    targets = torch.full_like(y, 3)
    _, pred, _ = run(victim, APGDT, x, ClassificationObjective(y, targets), Budget(norm="inf", epsilon=0.2), steps=50)
    assert float((pred == 3).float().mean()) >= 0.8


def test_l2_budget_holds_and_dlr_breaks_inputs(victim, batch):
    x, y = batch
    _, pred, _ = run(victim, APGDDLR, x[:64], ClassificationObjective(y[:64]), Budget(norm="2", epsilon=1.5), steps=30)
    assert int((pred != y[:64]).sum()) >= 32


def test_mask_is_respected(victim, batch):
    x, y = batch
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1
    budget = Budget(norm="inf", epsilon=0.2, mask=mask)
    x_adv, _, _ = run(victim, APGDCE, x[:32], ClassificationObjective(y[:32]), budget, steps=10)
    outside = (x_adv - x[:32]) * (1 - mask)
    assert float(outside.abs().max()) == 0.0


def test_dlr_loss_ignores_the_scale_of_the_logits(victim, batch):
    x, y = batch
    with torch.no_grad():
        logits = victim(x[:16])
    for objective in (ClassificationObjective(y[:16], loss_kind="dlr"),
                      ClassificationObjective(y[:16], (y[:16] + 1) % 10, loss_kind="dlr")):
        assert torch.allclose(objective.loss(logits), objective.loss(1000 * logits), atol=1e-4)


def test_dlr_on_too_few_classes_is_refused_by_rule_id():
    logits = torch.randn(4, 2)
    with pytest.raises(AttackgenError, match="C18-dlr-needs-enough-classes"):
        ClassificationObjective(torch.zeros(4), loss_kind="dlr").loss(logits)
    with pytest.raises(AttackgenError, match="C18-dlr-needs-enough-classes"):
        ClassificationObjective(torch.zeros(4), torch.ones(4), loss_kind="dlr").loss(torch.randn(4, 3))


def test_l1_apgd_breaks_inputs_within_the_l1_ball_and_beats_dense_steps(victim, batch):
    """L1-APGD (sparse steps, exact L1-and-box projection) at L1 3.0 on 16x16 digits: most inputs fall,
    far more than L2 APGD inside the same L1 ball finds (its L2 radius 3.0 / sqrt(256) keeps it in the
    L1 ball but moves every pixel a little, which is what the L1 geometry punishes)."""
    x, y = batch
    x_adv, pred, _ = run(victim, APGDCE, x[:64], ClassificationObjective(y[:64]), Budget(norm="1", epsilon=3.0),
                         steps=30)
    l1_robust = int((pred == y[:64]).sum())
    _, pred2, _ = run(victim, APGDCE, x[:64], ClassificationObjective(y[:64]), Budget(norm="2", epsilon=3.0 / 16),
                      steps=30)
    assert l1_robust <= 48, f"L1-APGD left {l1_robust}/64"
    assert l1_robust < int((pred2 == y[:64]).sum()) - 8
    changed = ((x_adv - x[:64]).abs() > 1e-6).flatten(1).sum(dim=1).float()
    assert float(changed.median()) < 0.5 * 256, "L1 steps should be sparse"


def test_apgd_t_on_l1_honours_keep_targets_at_the_first_checkpoint(victim, batch):
    """keep_targets on L1 prunes as on Linf/L2 (same rule, same step), so it costs fewer passes and the
    catalogue prices what runs. The planner does not ask for it on L1 (it costs strength there: see
    attackgen.plan.planner.KEEP_TARGETS), but a hand-edited plan gets what it says."""
    x, y = batch
    x, y = x[:32], y[:32]
    results = {}
    for keep in (0, 9, 2):
        _, pred, access = run(victim, APGDT, x, ClassificationObjective(y), Budget(norm="1", epsilon=4.0), steps=30,
                              keep_targets=keep)
        results[keep] = (pred, int(access.queries.sum()))
    assert int((results[0][0] != y).sum()) >= 4, "APGD-T on L1 4.0 broke too few to compare"
    assert torch.equal(results[9][0], results[0][0]) and results[9][1] == results[0][1]  # 9 of 9 kept: no-op
    assert results[2][1] < 0.6 * results[0][1], f"keep 2 saved too little: {results[2][1]} vs {results[0][1]}"


class _Counted(torch.nn.Module):
    """The model, counting input rows per pass: with a gradient (a backward follows) or without."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.backward, self.forward_only = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.backward += x.shape[0]
        else:
            self.forward_only += x.shape[0]
        return self.model(x)


@pytest.mark.parametrize(("norm", "keep", "parallel", "steps"), [
    ("1", 2, True, 20), ("1", 0, True, 20), ("1", 2, True, 9), ("1", 0, False, 10), ("inf", 2, True, 20),
    ("2", 0, True, 20)])
def test_apgd_t_cost_model_counts_the_passes_a_run_without_success_makes(victim, batch, norm, keep, parallel, steps):
    """The catalogue's price of APGD-T (what the planner shows and ranks by) is the passes a run makes when
    no input breaks (a tiny epsilon): on L1 the three stages' starting passes, the pruning with keep_targets
    (at steps 9 the first checkpoint ends the first stage), the clean passes."""
    from taxonomy.catalog import CATALOG

    x, y = batch
    x, y = x[:8], y[:8]
    model = _Counted(victim)
    params = {"steps": steps, "keep_targets": keep, "parallel_targets": parallel}
    _, pred, _ = run(model, APGDT, x, ClassificationObjective(y), Budget(norm=norm, epsilon=0.01), **params)
    assert bool((pred == y).all()), "an input broke: the run stopped early and the count is not the maximum"
    cost = CATALOG["apgd_t"].model_cost(params, norm)
    forward_only = model.forward_only - 8  # less the helper's look at the result
    assert (model.backward / 8, (model.backward + forward_only) / 8) == (cost.backward, cost.forward)


def test_l1_mask_is_respected(victim, batch):
    x, y = batch
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1
    x_adv, _, _ = run(victim, APGDT, x[:16], ClassificationObjective(y[:16]), Budget(norm="1", epsilon=4.0,
                      mask=mask), steps=10, n_target_classes=2)
    assert float(((x_adv - x[:16]) * (1 - mask)).abs().max()) == 0.0


def test_l0_budget_is_a_clear_error(victim, batch):
    x, y = batch
    with pytest.raises(AttackgenError, match="L0"):
        APGDCE(seed=0).run(WhiteBoxAccess(victim, 4), x[:4], ClassificationObjective(y[:4]),
                           Budget(norm="0", epsilon=5))


def test_seeded_runs_are_reproducible(victim, batch):
    x, y = batch
    first, _, _ = run(victim, APGDCE, x[:32], ClassificationObjective(y[:32]), LINF, steps=10)
    second, _, _ = run(victim, APGDCE, x[:32], ClassificationObjective(y[:32]), LINF, steps=10)
    assert torch.equal(first, second)


def test_targeted_fmn_sweep_breaks_inputs_within_budget(victim, batch):
    x, y = batch
    _, pred, _ = run(victim, TargetedFMNSweep, x[:16], ClassificationObjective(y[:16]), LINF, steps=30,
                     n_target_classes=3)
    assert int((pred != y[:16]).sum()) >= 8
