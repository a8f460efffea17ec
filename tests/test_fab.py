"""FAB-T and FAB on the digits model: they break inputs inside every norm's ball and the box, leave at
the first point within epsilon, keep the mask, hit a spec's own target; slow: the same robust accuracy
as the reference code (pyautoattack) with identical parameters."""

from __future__ import annotations

import pytest
import torch

from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.apgd import APGDCE
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.fab import FAB, FABT
from attackgen.run.objectives.classification import ClassificationObjective
from tests.test_apgd_crosscheck import reference

N = 64


@pytest.fixture(scope="module")
def batch(test_set):
    x, y = test_set
    return x[:N], y[:N]


def size(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return {"inf": flat.abs().amax(dim=1), "2": flat.norm(dim=1), "1": flat.abs().sum(dim=1)}[norm]


def attack(model, cls, x, objective, budget, **params):
    access = WhiteBoxAccess(model, x.shape[0])
    x_adv = cls(seed=0, **params).run(access, x, objective, budget).x_adv
    assert float(size(x_adv - x, budget.norm).max()) <= budget.epsilon * (1 + 1e-5), "left the epsilon ball"
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        return x_adv, model(x_adv).argmax(dim=1), access


@pytest.mark.parametrize(("norm", "eps", "most_left"), [("inf", 0.1, 8), ("2", 1.0, 12), ("1", 3.0, 40)])
def test_fab_t_breaks_most_inputs_inside_the_ball(victim, batch, norm: str, eps: float, most_left: int) -> None:
    """Clean accuracy is 100% on these inputs; FAB-T with 3 targets and 30 steps leaves few of them."""
    x, y = batch
    _, pred, access = attack(victim, FABT, x, ClassificationObjective(y), Budget(norm=norm, epsilon=eps), steps=30,
                             n_target_classes=3)
    left = int((pred == y).sum())
    assert left <= most_left, f"FAB-T L{norm} {eps} left {left}/{N}"
    broken = pred != y
    # an input leaves at its first point inside the ball: broken inputs cost fewer passes than the rest
    if bool((~broken).any()):
        assert float(access.queries[broken].float().mean()) < float(access.queries[~broken].float().mean())


def test_fab_t_finds_what_a_weak_apgd_left(victim, batch) -> None:
    x, y = batch
    budget = Budget(norm="inf", epsilon=0.1)
    _, pred, _ = attack(victim, APGDCE, x, ClassificationObjective(y), budget, steps=5)
    left = (pred == y).nonzero().squeeze(1)
    assert left.numel() > 0
    _, pred_t, _ = attack(victim, FABT, x[left], ClassificationObjective(y[left]), budget, steps=50)
    assert int((pred_t != y[left]).sum()) >= max(1, left.numel() // 2)


def test_unbroken_inputs_come_back_clean(victim, batch) -> None:
    """As in the reference, an input with no adversarial point within epsilon gets its clean input back."""
    x, y = batch
    x_adv, pred, _ = attack(victim, FABT, x[:16], ClassificationObjective(y[:16]), Budget(norm="inf", epsilon=0.01),
                            steps=10, n_target_classes=2)
    kept = pred == y[:16]
    assert bool(kept.any()) and torch.equal(x_adv[kept], x[:16][kept])


def test_mask_is_respected_and_targeted_specs_hit_their_target(victim, batch) -> None:
    x, y = batch
    mask = torch.zeros(1, 16, 16)
    mask[:, 3:13, 3:13] = 1
    keep = y != 3
    xs, ys = x[keep][:16], y[keep][:16]
    x_adv, pred, _ = attack(victim, FABT, xs, ClassificationObjective(ys, torch.full_like(ys, 3)),
                            Budget(norm="2", epsilon=3.0, mask=mask), steps=50)
    assert float(((x_adv - xs) * (1 - mask)).abs().max()) == 0.0
    assert int((pred == 3).sum()) >= 12


def test_untargeted_fab_with_restarts_breaks_inputs(victim, batch) -> None:
    x, y = batch
    _, pred, _ = attack(victim, FAB, x[:32], ClassificationObjective(y[:32]), Budget(norm="inf", epsilon=0.1),
                        steps=20, restarts=2)
    assert int((pred != y[:32]).sum()) >= 24


FAB_N = 128


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "eps"), [("inf", 0.05), ("1", 3.0)])
def test_fab_t_matches_the_reference_robust_accuracy(victim, test_set, norm: str, eps: float) -> None:
    """FAB-T, AutoAttack's settings (9 targets, 100 steps, alpha_max 0.1, eta 1.05, beta 0.9, no random start),
    on both sides: deterministic, so the robust accuracy agrees to within one input in 128."""
    if reference() is None:
        pytest.skip("the reference AutoAttack (pyautoattack) is not importable here")
    import importlib

    fab_pt = None
    for name in ("pyautoattack", "autoattack"):
        try:
            fab_pt = importlib.import_module(f"{name}.fab_pt")
            break
        except ImportError:
            continue
    assert fab_pt is not None
    x, y = test_set[0][:FAB_N], test_set[1][:FAB_N]
    ref = fab_pt.FABAttack_PT(victim, norm={"inf": "Linf", "1": "L1"}[norm], n_restarts=1, n_iter=100, eps=eps,
                              seed=0, targeted=True, n_target_classes=9, device="cpu")
    theirs = ref.perturb(x.clone(), y.clone()).detach()
    mine = FABT(seed=0).run(WhiteBoxAccess(victim, FAB_N), x, ClassificationObjective(y),
                            Budget(norm=norm, epsilon=eps)).x_adv
    with torch.no_grad():
        robust_ref = float((victim(theirs).argmax(1) == y).float().mean()) * 100
        robust_ours = float((victim(mine).argmax(1) == y).float().mean()) * 100
    assert float(size(mine - x, norm).max()) <= eps * (1 + 1e-5)
    assert abs(robust_ours - robust_ref) <= 1.0, f"L{norm}: ours {robust_ours:.1f}%, reference {robust_ref:.1f}%"
    assert robust_ours < 90.0  # both actually attack


def test_parallel_targets_break_at_least_what_the_sweep_breaks(victim, batch) -> None:
    x, y = batch
    budget = Budget(norm="inf", epsilon=0.05)
    _, seq, _ = attack(victim, FABT, x[:32], ClassificationObjective(y[:32]), budget, steps=20, n_target_classes=3)
    _, par, _ = attack(victim, FABT, x[:32], ClassificationObjective(y[:32]), budget, steps=20, n_target_classes=3,
                       parallel_targets=True)
    assert int((par != y[:32]).sum()) >= int((seq != y[:32]).sum()) >= 4
