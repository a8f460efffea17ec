"""The counted oracles: what each returns, how queries are counted, and that budgets hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attackgen.run.access import LabelOracle, QueryBudgetExceeded, ScoreOracle
from attackgen.run.attacks._query import as_outputs, ask


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return Linear().eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(4, 1, 3, 4, generator=torch.Generator().manual_seed(1))


def test_score_granularities(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        logits = model(x)
    assert torch.allclose(ScoreOracle(model, 4, "logits")(x), logits)
    probs = ScoreOracle(model, 4, "probabilities")(x)
    assert torch.allclose(probs, logits.softmax(1)) and torch.allclose(probs.sum(1), torch.ones(4))
    top = ScoreOracle(model, 4, "top_k", k=2)(x)
    assert ((top > 0).sum(1) == 2).all()
    kept = logits.softmax(1).topk(2, dim=1)
    assert torch.allclose(top.gather(1, kept.indices), kept.values)
    with pytest.raises(ValueError, match="granularity"):
        ScoreOracle(model, 4, "entropy")


def test_scores_carry_no_gradient(model: nn.Module, x: torch.Tensor) -> None:
    out = ScoreOracle(model, 4, "logits")(x.clone().requires_grad_(True))
    assert not out.requires_grad


def test_queries_are_counted_per_input_and_budget_refuses(model: nn.Module, x: torch.Tensor) -> None:
    oracle = ScoreOracle(model, 4, "probabilities", budget=2)
    oracle(x[[0, 2]], torch.tensor([0, 2]))
    oracle(x[[2]], torch.tensor([2]))
    assert oracle.queries.tolist() == [1, 0, 2, 0]
    assert oracle.remaining().tolist() == [1, 2, 0, 2]
    with pytest.raises(QueryBudgetExceeded):
        oracle(x[[1, 2]], torch.tensor([1, 2]))
    assert oracle.queries.tolist() == [1, 0, 2, 0]  # a refused call is not counted


def test_label_oracle_returns_labels_only(model: nn.Module, x: torch.Tensor) -> None:
    oracle = LabelOracle(model, 4, budget=3)
    labels = oracle(x)
    with torch.no_grad():
        assert torch.equal(labels, model(x).argmax(1))
    assert labels.dtype == torch.long and labels.shape == (4,)
    public = {name for name in dir(oracle) if not name.startswith("_")}
    # nothing that hands out scores or the model (the Access contract's surrogate slot is empty;
    # input_ids: the data indices of the rows, for a remote model's query log; overdrawn and
    # check_overdraft: whether a masked score query asked beyond its budget)
    assert public == {"budget", "input_ids", "kind", "queries", "remaining", "granularity", "surrogate",
                      "overdrawn", "check_overdraft"}
    assert oracle.surrogate is None
    assert not any(isinstance(v, nn.Module) for v in vars(oracle).values())


def test_ask_refuses_a_row_named_more_often_than_it_has_queries(model: nn.Module, x: torch.Tensor) -> None:
    oracle = LabelOracle(model, 4, budget=3)
    ask(oracle, x[[0, 0, 1]], torch.tensor([0, 0, 1]))
    with pytest.raises(QueryBudgetExceeded):
        ask(oracle, x[[0, 0]], torch.tensor([0, 0]))  # row 0 has one query left, not two
    assert oracle.queries.tolist() == [2, 1, 0, 0]
    ask(oracle, x[[0]], torch.tensor([0]))
    assert oracle.remaining().tolist() == [0, 2, 3, 3]


def test_oracle_refuses_repeated_rows_beyond_budget(model: nn.Module, x: torch.Tensor) -> None:
    oracle = ScoreOracle(model, 4, budget=2)
    with pytest.raises(QueryBudgetExceeded):
        oracle(x[[0, 0, 0]], torch.tensor([0, 0, 0]))


def test_as_outputs_gives_logit_equivalents(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        logits = model(x)
    for granularity in ("logits", "probabilities"):
        oracle = ScoreOracle(model, 4, granularity)
        out = as_outputs(oracle, oracle(x))
        # margins are the same on logits and on log-probabilities
        assert torch.allclose(out - out[:, :1], logits - logits[:, :1], atol=1e-4)
