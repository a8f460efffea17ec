"""Attack loops make at most one host<->device sync look every K iterations (attackgen.run.attacks.syncs),
counted under torch.profiler on the CPU with the schedule a GPU gets (bench/bench_syncs.py); a stray
``.item()`` or ``bool(tensor)`` per iteration fails here. Looking every K iterations instead of every
one changes no result: a finished input is frozen (its first success kept) until the look."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.run.access import QueryBudgetExceeded, ScoreOracle, WhiteBoxAccess
from attackgen.run.attacks import syncs
from attackgen.run.objectives.classification import ClassificationObjective

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_syncs import budget_for, cases, syncs_per_iteration

# Per loop iteration, with one look every K = 8: the steady loop (nothing breaks) may sync only at the
# looks (1/8), plus, for the score-based attacks, nothing per query. A look that shrinks the working set
# costs a few syncs (which rows, gathering them), still well under one per iteration.
STEADY = {"pgd_linf": 0.125, "apgd_ce": 0.125, "apgd_l1": 0.125, "deepfool": 0.125, "cw_l2": 0.125,
          "square_linf": 0.125, "square_l2": 0.125}
BREAKING = 1.0
KNOWN = {"simba"}  # SimBA still syncs per query (its coordinate bookkeeping): not yet converted


@pytest.fixture(scope="module")
def digits():
    model = load_builtin_model("digits-cnn").eval().requires_grad_(False)
    data = load_builtin_data("digits").take(slice(0, 48))
    return model, data.x, data.y


@pytest.mark.parametrize("case", [c for c in cases() if c.name not in KNOWN], ids=lambda c: c.name)
def test_attack_loops_sync_once_per_look_at_most(case, digits):
    model, x, y = digits
    steady, _, _ = syncs_per_iteration(case, model, x, y, torch.device("cpu"), 8, "resists")
    assert steady <= STEADY[case.name], f"{case.name}: {steady} syncs per iteration in the steady loop"
    if not case.minimal:
        breaking, _, _ = syncs_per_iteration(case, model, x, y, torch.device("cpu"), 8, "breaks")
        assert breaking <= BREAKING, f"{case.name}: {breaking} syncs per iteration while inputs break"


def _run(case_name: str, every: int, digits) -> tuple[torch.Tensor, torch.Tensor]:
    model, x, y = digits
    case = next(c for c in cases() if c.name == case_name)
    with syncs.every(every):
        if case.access == "white_box":
            access = WhiteBoxAccess(model, len(x))
        else:
            access = ScoreOracle(model, len(x), "logits", budget=60)
        out = case.build(40 if case.access == "white_box" else 60).run(access, x, ClassificationObjective(y),
                                                                      budget_for(case, "breaks"))
    return out.x_adv, access.queries


@pytest.mark.parametrize("name", ["pgd_linf", "apgd_ce", "apgd_l1", "deepfool", "square_linf", "square_l2"])
def test_looking_every_k_iterations_changes_no_result(name, digits):
    x1, q1 = _run(name, 1, digits)
    x8, q8 = _run(name, 8, digits)
    assert torch.equal(x1, x8)
    if name.startswith("square"):  # the queries charged are the same too: a stopped input is not charged
        assert torch.equal(q1, q8)


def test_a_live_query_beyond_the_budget_is_refused_unanswered_and_raised_after(digits):
    model, x, _ = digits
    oracle = ScoreOracle(model, 4, "logits", budget=1)
    rows = torch.arange(4)
    first = oracle.query_live(x[:4], rows, torch.tensor([True, True, False, True]))
    assert first[2].isnan().all() and not first[[0, 1, 3]].isnan().any()
    assert oracle.queries.tolist() == [1, 1, 0, 1]
    second = oracle.query_live(x[:4], rows, torch.ones(4, dtype=torch.bool))
    assert second[[0, 1, 3]].isnan().all() and not second[2].isnan().any()  # only input 2 had a query left
    assert oracle.queries.tolist() == [1, 1, 1, 1]
    with pytest.raises(QueryBudgetExceeded, match="refused, not answered"):
        oracle.check_overdraft()
    oracle.check_overdraft()  # raised once

