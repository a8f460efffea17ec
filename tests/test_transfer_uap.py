"""A universal perturbation fitted on a surrogate and evaluated by transfer (Moosavi-Dezfooli et al. 2017,
arXiv:1610.08401, cross-model transfer of UAPs; Papernot et al. 2017 substitute models): the full black-box
universal threat, which was a gap."""

from __future__ import annotations

from pathlib import Path

import torch

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.document import Infeasible
from attackgen.plan.planner import plan
from attackgen.run.access import NoAccess
from attackgen.run.attacks.base import AttackEnv, Budget
from attackgen.run.attacks.universal import TransferUniversalPerturbation
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.feasibility import answer
from taxonomy.spec import load_spec

SPEC = Path(__file__).resolve().parents[1] / "examples" / "specs" / "transfer-digits-universal-black-box.yaml"


def test_black_box_universal_plans_transfer_uap() -> None:
    spec = load_spec(SPEC)
    assert answer(spec).runnable == ("transfer_uap",)
    result = plan(spec)
    assert not isinstance(result, Infeasible)
    assert [i.attack for i in result.items] == ["transfer_uap"] and result.items[0].role == "transfer"


def test_surrogate_fitted_universal_perturbation_transfers() -> None:
    victim, surrogate = load_builtin_model("digits-cnn"), load_builtin_model("digits-mlp").requires_grad_(False)
    train, test = load_builtin_data("digits-train"), load_builtin_data("digits")
    budget = Budget(norm="inf", epsilon=0.2)
    attack = TransferUniversalPerturbation(epochs=3)
    attack.fit(NoAccess(surrogate, 600), train.x[:600], ClassificationObjective(train.y[:600]), budget,
               AttackEnv(surrogate=None))
    held = attack.apply(test.x, budget)
    assert float((held - test.x).abs().max()) <= 0.2 + 1e-6
    with torch.no_grad():
        ok = victim(test.x).argmax(1) == test.y
        fooled = float((victim(held).argmax(1)[ok] != test.y[ok]).float().mean())
    assert fooled >= 0.4, fooled  # random stripes of the same size fool 0.03
