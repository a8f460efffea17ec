"""Second-order optimisation under an SSIM floor, in penalty form (Szegedy et al. 2014 L-BFGS; Wang et al.
2004 SSIM; rule D3: no projection onto an SSIM ball, so a Lagrangian term), on the digits CNN."""

from __future__ import annotations

import torch

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.document import Infeasible
from attackgen.plan.planner import plan
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.lbfgs import LBFGS, SSIMLBFGS
from attackgen.run.objectives.classification import ClassificationObjective
from attackgen.run.ssim import ssim
from taxonomy.spec import parse_spec


def test_ssim_floor_holds_where_plain_lbfgs_breaks_it() -> None:
    model = load_builtin_model("digits-cnn").requires_grad_(False)
    test = load_builtin_data("digits")
    with torch.no_grad():
        ok = model(test.x).argmax(1) == test.y
    x, y = test.x[ok][:6], test.y[ok][:6]
    budget = Budget(norm=None, epsilon=None, ssim_floor=0.97)
    rates = {}
    for cls in (SSIMLBFGS, LBFGS):
        out = cls(binary_search_steps=3, max_iter=40).run(WhiteBoxAccess(model, len(x)), x,
                                                         ClassificationObjective(y), budget).x_adv
        with torch.no_grad():
            within = (model(out).argmax(1) != y) & (ssim(x, out) >= 0.97)
        rates[cls.__name__] = float(within.float().mean())
    assert rates["SSIMLBFGS"] >= 0.6 and rates["SSIMLBFGS"] >= rates["LBFGS"] + 0.25, rates


def test_second_order_under_ssim_floor_plans_lbfgs_ssim() -> None:
    spec = parse_spec({"name": "ssim-2nd", "task": "classification",
                       "threat": {"consequence": "untargeted",
                                  "imperceptibility": [{"kind": "perceptual", "metric": "ssim", "threshold": 0.97}],
                                  "model_knowledge": "white_box"},
                       "strategy": {"optimizer": "second_order"}})
    result = plan(spec)
    assert not isinstance(result, Infeasible)
    assert [i.attack for i in result.items if i.role == "primary"] == ["lbfgs_ssim"]
    assert result.items[0].context.ssim_floor == 0.97
