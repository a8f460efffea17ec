"""A universal perturbation fitted from score queries alone (Co et al. 2019, arXiv:1810.00470: black-box
universal perturbations), on the built-in digits CNN through a counted, budgeted score oracle."""

from __future__ import annotations

import torch

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.document import Infeasible
from attackgen.plan.planner import plan
from attackgen.run.access import ScoreOracle
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.score_universal import ScoreUniversal
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.feasibility import answer
from taxonomy.spec import parse_spec


def test_score_universal_fools_held_out_digits_within_the_query_budget() -> None:
    model = load_builtin_model("digits-cnn").requires_grad_(False)
    train, test = load_builtin_data("digits-train"), load_builtin_data("digits")
    x, y = train.x[:300], train.y[:300]
    budget = Budget(norm="inf", epsilon=0.2)
    oracle = ScoreOracle(model, len(x), "probabilities", budget=100)
    attack = ScoreUniversal(iterations=300)
    attack.fit(oracle, x, ClassificationObjective(y), budget)
    assert int(oracle.queries.max()) <= 100
    held = attack.apply(test.x, budget)
    assert float((held - test.x).abs().max()) <= 0.2 + 1e-6
    with torch.no_grad():
        ok = model(test.x).argmax(1) == test.y
        fooled = float((model(held).argmax(1)[ok] != test.y[ok]).float().mean())
        stripes = (torch.randint(0, 2, (1, 1, 1, 16), generator=torch.Generator().manual_seed(1)) * 2 - 1).float()
        baseline = float((model((test.x + 0.2 * stripes).clamp(0, 1)).argmax(1)[ok] != test.y[ok]).float().mean())
    assert fooled >= 0.5 and fooled >= baseline + 0.4, (fooled, baseline)


def test_query_limited_universal_threat_is_runnable() -> None:
    """Co et al. 2019's threat: score queries and a data set, one perturbation for all inputs. It was a gap."""
    spec = parse_spec({
        "name": "co-uap", "task": "classification",
        "threat": {"consequence": "untargeted", "scope": "universal",
                   "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.2}],
                   "model_knowledge": {"kind": "query_limited", "query_budget": 100}, "data_knowledge": "training"},
    })
    assert answer(spec).verdict == "runnable"
    result = plan(spec)
    assert not isinstance(result, Infeasible)
    attacks = {i.attack: i for i in result.items}
    assert set(attacks) == {"score_uap", "transfer_uap"}  # the query attack and, from the same pool, transfer
    assert sum(i.expected_cost.queries for i in result.items) <= 100
