"""The white-box attacks on the digits model: they work, stay in budget, respect masks, count passes.

Every figure is verified as the executor does it: the candidate is clipped to the bounds and re-run
through the model; the perturbation is re-measured.
"""

from __future__ import annotations

import pytest
import torch

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.bim import BIM, ILLC
from attackgen.run.attacks.cw import CarliniWagnerL2
from attackgen.run.attacks.deepfool import DeepFool
from attackgen.run.attacks.fgsm import FGSM
from attackgen.run.attacks.fmn import FMN
from attackgen.run.attacks.jsma import JSMA
from attackgen.run.attacks.mifgsm import MIFGSM
from attackgen.run.attacks.pgd import L2PGD, LinfPGD
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.errors import AttackgenError

N = 64
FAST_CW = {"binary_search_steps": 4, "steps": 100, "initial_const": 0.1}  # targeted needs 100 steps
QUICK_CW = {"binary_search_steps": 3, "steps": 50, "initial_const": 0.1}


@pytest.fixture(scope="module")
def model():
    return load_builtin_model("digits-cnn")


@pytest.fixture(scope="module")
def batch():
    data = load_builtin_data("digits").take(slice(0, N))
    return data.x, data.y


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(dim=1)


def attack(model, cls, x, objective, budget, **params):
    access = WhiteBoxAccess(model, x.shape[0])
    out = cls(seed=0, **params).run(access, x, objective, budget)
    assert out.x_adv.shape == x.shape
    assert int(access.queries.min()) >= 1  # every input's passes were counted
    x_adv = out.x_adv.clamp(*budget.bounds)
    assert torch.equal(x_adv, out.x_adv), "candidates must already lie inside the bounds"
    return x_adv


def check_budget(x, x_adv, budget):
    delta = (x_adv - x).flatten(1)
    if budget.epsilon is None:
        return
    if budget.norm == "inf":
        assert float(delta.abs().amax()) <= budget.epsilon + 1e-6
    elif budget.norm == "2":
        assert float(delta.norm(dim=1).amax()) <= budget.epsilon + 1e-6
    elif budget.norm == "0":
        assert int((delta != 0).sum(dim=1).amax()) <= budget.epsilon


LINF = Budget(norm="inf", epsilon=0.1)
L2 = Budget(norm="2", epsilon=1.0)
MINIMAL_L2 = Budget(norm="2")
UNTARGETED = [
    ("fgsm", FGSM, LINF, {}),
    ("fgm_l2", FGSM, Budget(norm="2", epsilon=1.5), {}),
    ("bim", BIM, LINF, {}),
    ("bim_l2", BIM, L2, {}),
    ("pgd_linf", LinfPGD, LINF, {}),
    ("pgd_l2", L2PGD, L2, {}),
    ("mifgsm", MIFGSM, LINF, {}),
    ("cw_l2", CarliniWagnerL2, MINIMAL_L2, QUICK_CW),
    ("deepfool_l2", DeepFool, MINIMAL_L2, {}),
    ("deepfool_linf", DeepFool, Budget(norm="inf"), {}),
    ("jsma", JSMA, Budget(norm="0", epsilon=40), {}),
    ("fmn_linf", FMN, Budget(norm="inf"), {"steps": 50}),
    ("fmn_l2", FMN, MINIMAL_L2, {"steps": 50}),
]


@pytest.mark.parametrize(("name", "cls", "budget", "params"), UNTARGETED, ids=[u[0] for u in UNTARGETED])
def test_untargeted_lowers_accuracy_by_half(model, batch, name, cls, budget, params):
    x, y = batch
    clean = float((predict(model, x) == y).float().mean())
    x_adv = attack(model, cls, x, ClassificationObjective(y), budget, **params)
    check_budget(x, x_adv, budget)
    robust = float((predict(model, x_adv) == y).float().mean())
    assert clean - robust >= 0.5, f"{name}: clean {clean:.3f} -> robust {robust:.3f}"


LINF_T = Budget(norm="inf", epsilon=0.3)
TARGETED = [
    ("bim", BIM, LINF_T, {}),
    ("pgd_linf", LinfPGD, LINF_T, {}),
    ("pgd_l2", L2PGD, Budget(norm="2", epsilon=3.0), {}),
    ("mifgsm", MIFGSM, LINF_T, {}),
    ("cw_l2", CarliniWagnerL2, MINIMAL_L2, FAST_CW),
    ("deepfool_l2", DeepFool, MINIMAL_L2, {}),
    ("jsma", JSMA, Budget(norm="0"), {}),
    ("fmn_l2", FMN, MINIMAL_L2, {"steps": 50}),
]


@pytest.mark.parametrize(("name", "cls", "budget", "params"), TARGETED, ids=[t[0] for t in TARGETED])
def test_targeted_hits_the_target(model, batch, name, cls, budget, params):
    x, y = batch
    target = (y + 1) % 10
    x_adv = attack(model, cls, x, ClassificationObjective(y, target), budget, **params)
    check_budget(x, x_adv, budget)
    hit = float((predict(model, x_adv) == target).float().mean())
    assert hit >= 0.9, f"{name}: target reached on {hit:.3f}"


def test_illc_reaches_the_least_likely_class(model, batch):
    x, y = batch
    with torch.no_grad():
        least = model(x).argmin(dim=1)
    # given an untargeted objective, ILLC derives the least-likely targets itself
    x_adv = attack(model, ILLC, x, ClassificationObjective(y), LINF_T)
    check_budget(x, x_adv, LINF_T)
    assert float((predict(model, x_adv) == least).float().mean()) >= 0.9
    # and it follows a least-likely objective built by the factory unchanged
    x_adv2 = attack(model, ILLC, x, ClassificationObjective(y, least), LINF_T)
    assert torch.equal(x_adv, x_adv2)


MASKED = [
    ("fgsm", FGSM, Budget(norm="inf", epsilon=0.3), {}),
    ("pgd_linf", LinfPGD, Budget(norm="inf", epsilon=0.3), {}),
    ("pgd_l2", L2PGD, Budget(norm="2", epsilon=2.0), {}),
    ("mifgsm", MIFGSM, Budget(norm="inf", epsilon=0.3), {}),
    ("cw_l2", CarliniWagnerL2, MINIMAL_L2, {"binary_search_steps": 3, "steps": 30}),
    ("deepfool", DeepFool, MINIMAL_L2, {}),
    ("jsma", JSMA, Budget(norm="0", epsilon=30), {}),
    ("fmn", FMN, MINIMAL_L2, {"steps": 20}),
]


@pytest.mark.parametrize(("name", "cls", "budget", "params"), MASKED, ids=[m[0] for m in MASKED])
def test_mask_is_respected(model, batch, name, cls, budget, params):
    x, y = batch
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :, 8:] = 1.0  # only the right half may change
    masked = Budget(norm=budget.norm, epsilon=budget.epsilon, mask=mask)
    x_adv = attack(model, cls, x, ClassificationObjective(y), masked, **params)
    check_budget(x, x_adv, masked)
    assert torch.equal(x_adv[..., :, :8], x[..., :, :8]), f"{name} changed pixels outside the mask"
    assert bool((x_adv != x).any()), f"{name} changed nothing"


def test_fixed_epsilon_mode_projects_minimal_norm_attacks(model, batch):
    x, y = batch
    cases = [(CarliniWagnerL2, Budget(norm="2", epsilon=0.3), {"binary_search_steps": 2, "steps": 20}),
             (DeepFool, Budget(norm="inf", epsilon=0.02), {}),
             (FMN, Budget(norm="inf", epsilon=0.02), {"steps": 20})]
    for cls, budget, params in cases:
        check_budget(x, attack(model, cls, x, ClassificationObjective(y), budget, **params), budget)


def test_early_stop_changes_cost_not_results(model, batch):
    x, y = batch
    objective = ClassificationObjective(y)
    runs = {}
    for early in (False, True):
        access = WhiteBoxAccess(model, N)
        out = LinfPGD(seed=3, steps=20, early_stop=early).run(access, x, objective, LINF)
        runs[early] = (predict(model, out.x_adv) != y, int(access.queries.sum()))
    assert torch.equal(runs[False][0], runs[True][0])
    assert runs[True][1] < runs[False][1] == 20 * N


def test_restarts_only_run_on_survivors_and_never_hurt(model, batch):
    x, y = batch
    objective = ClassificationObjective(y)
    one = attack(model, LinfPGD, x, objective, Budget(norm="inf", epsilon=0.05), steps=10)
    access = WhiteBoxAccess(model, N)
    out = LinfPGD(seed=0, steps=10, restarts=3).run(access, x, objective, Budget(norm="inf", epsilon=0.05))
    assert int((predict(model, out.x_adv) != y).sum()) >= int((predict(model, one) != y).sum())
    assert int(access.queries.sum()) < 3 * 10 * N


def test_seeded_runs_are_reproducible(model, batch):
    x, y = batch
    a = attack(model, LinfPGD, x, ClassificationObjective(y), LINF, steps=5)
    b = attack(model, LinfPGD, x, ClassificationObjective(y), LINF, steps=5)
    assert torch.equal(a, b)


def test_margin_loss_works_too(model, batch):
    x, y = batch
    objective = ClassificationObjective(y).with_loss("margin")
    x_adv = attack(model, LinfPGD, x, objective, LINF)
    assert float((predict(model, x_adv) == y).float().mean()) <= 0.3


def test_wrong_budget_is_a_clear_error(model, batch):
    x, y = batch
    with pytest.raises(AttackgenError, match="pgd_linf needs an Linf budget"):
        attack(model, LinfPGD, x, ClassificationObjective(y), L2)
    with pytest.raises(AttackgenError, match="fixed-epsilon attack"):
        attack(model, BIM, x, ClassificationObjective(y), Budget(norm="inf"))
    with pytest.raises(AttackgenError, match="jsma needs an L0 budget"):
        attack(model, JSMA, x, ClassificationObjective(y), LINF)
