"""ZOO-Newton on the built-in digits CNN through a counted score oracle (Chen et al. 2017, arXiv:1708.03999).

The threat model of the paper: scores only (no gradients), a per-input query budget, an Lp bound. Every
figure is re-measured on the clipped output with the model itself.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attackgen.models.zoo.data import load_digits_data
from attackgen.models.zoo.models import load_builtin_model
from attackgen.plan.document import Infeasible
from attackgen.plan.planner import plan
from attackgen.run.access import ScoreOracle
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.zoo_newton import ZOONewton
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.catalog import CATALOG
from taxonomy.feasibility import answer
from taxonomy.spec import parse_spec


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return load_builtin_model("digits-cnn")


@pytest.fixture(scope="module")
def batch(model: nn.Module) -> tuple[Tensor, Tensor]:
    data = load_digits_data("test")
    with torch.no_grad():
        ok = model(data.x).argmax(1) == data.y
    return data.x[ok][:12], data.y[ok][:12]


def predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x.clamp(0, 1)).argmax(1)


class Counting(ScoreOracle):
    """Fails the test on any answered query beyond the budget, counted here, not by the oracle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered = torch.zeros(self.queries.shape[0], dtype=torch.long)

    def __call__(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        out = super().__call__(x, rows)
        counted = torch.arange(x.shape[0]) if rows is None else rows.cpu()
        self.answered.index_add_(0, counted, torch.ones_like(counted))
        assert int(self.answered.max()) <= self.budget
        return out


def test_zoo_fools_within_the_linf_ball_and_budget(model: nn.Module, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    eps = 0.15
    oracle = Counting(model, len(x), "probabilities", budget=600)
    out = ZOONewton(max_queries=600).run(oracle, x, ClassificationObjective(y), Budget(norm="inf", epsilon=eps))
    x_adv = out.x_adv.clamp(0, 1)
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    fooled = float((predict(model, x_adv) != y).float().mean())
    # uniform sign noise of the same size is the query-free baseline: the Newton steps must beat it clearly
    noise = (x + eps * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
    baseline = float((predict(model, noise) != y).float().mean())
    assert fooled >= 0.75 and fooled >= baseline + 0.5, (fooled, baseline)
    assert int(oracle.answered.max()) <= 600


def test_zoo_targeted_l2_reaches_the_target(model: nn.Module, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    keep = y != 3
    x, y = x[keep][:8], y[keep][:8]
    target = torch.full_like(y, 3)
    oracle = ScoreOracle(model, len(x), "logits", budget=2000)
    out = ZOONewton(max_queries=2000).run(oracle, x, ClassificationObjective(y, target), Budget(norm="2", epsilon=2.0))
    x_adv = out.x_adv.clamp(0, 1)
    assert float((x_adv - x).flatten(1).norm(dim=1).max()) <= 2.0 + 1e-4
    assert float((predict(model, x_adv) == 3).float().mean()) >= 0.5


def test_second_order_from_scores_plans_zoo() -> None:
    """Rule A10 (Chen et al. 2017): second-order optimisation from scores is feasible; it used to be a gap."""
    spec = parse_spec({
        "name": "zoo", "task": "classification",
        "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
                   "model_knowledge": {"kind": "query_limited", "query_budget": 1000}},
        "strategy": {"optimizer": {"kind": "second_order", "gradient_source": "estimated_scores"}},
    })
    assert answer(spec).runnable == ("zoo_newton",)
    result = plan(spec)
    assert not isinstance(result, Infeasible)
    assert [i.attack for i in result.items] == ["zoo_newton"]
    assert result.items[0].expected_cost.queries <= 1000
    assert CATALOG["zoo_newton"].access == ZOONewton.access
