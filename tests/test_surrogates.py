"""The surrogate model basis is built as the spec describes it: ensembles, trained and distilled members.

The victim is the digits CNN; transfer figures are verified on it (clipped candidates re-run through
the victim), as the executor verifies them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attackgen.cli.main import run_in_process as cli
from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.run.access import LabelOracle, NoAccess, QueryBudgetExceeded, ScoreOracle
from attackgen.run.attacks.base import AttackEnv, Budget
from attackgen.run.attacks.transfer import TransferMIFGSM
from attackgen.run.objectives.classification import ClassificationObjective
from attackgen.run.surrogates import (
    LogitEnsemble,
    SurrogateError,
    SurrogateRequest,
    build_surrogate,
    distill_rounds,
    jacobian_augmentation,
)
from taxonomy.errors import SpecError
from taxonomy.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "examples" / "specs"


@pytest.fixture(scope="module")
def trained_ensemble():
    """trained_on_data, ensemble 2, nothing named: the built-in digits-mlp plus a CNN trained here."""
    train = load_builtin_data("digits-train")
    return build_surrogate(SurrogateRequest("trained_on_data", (), 2), input_shape=(1, 16, 16), classes=10,
                           basis=(train.x, train.y), seed=0)


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


# ---------------------------------------------------------------------- the spec field


def spec_with(basis):
    return {"name": "s", "task": "classification",
            "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
                       "model_knowledge": "full_black_box", "data_knowledge": "surrogate"},
            "strategy": {"model_basis": basis}}


def test_model_may_name_several_members_and_ensemble_defaults_to_their_number():
    basis = parse_spec(spec_with({"kind": "surrogate", "model": ["digits-mlp", "cnn"]})).strategy.model_basis
    assert basis.model == ["digits-mlp", "cnn"] and basis.ensemble == 2
    assert parse_spec(spec_with({"kind": "surrogate"})).strategy.model_basis.ensemble == 1
    three = parse_spec(spec_with({"kind": "surrogate", "model": "digits-mlp", "ensemble": 3}))
    assert three.strategy.model_basis.ensemble == 3  # one named, two trained at run time
    with pytest.raises(SpecError, match=r"strategy\.model_basis\.ensemble: ensemble 1 is smaller than the 2 models"):
        parse_spec(spec_with({"kind": "surrogate", "model": ["digits-mlp", "digits-cnn"], "ensemble": 1}))
    with pytest.raises(SpecError, match=r"strategy\.model_basis\.model: an empty list"):
        parse_spec(spec_with({"kind": "surrogate", "model": []}))


# ---------------------------------------------------------------------- ensembles and trained members


def test_an_ensemble_of_two_averages_the_members_logits(test_set):
    request = SurrogateRequest.resolve({"source": "pretrained", "model": ["digits-mlp", "digits-cnn"]})
    built = build_surrogate(request, input_shape=(1, 16, 16), classes=10)
    assert isinstance(built.model, LogitEnsemble) and len(built.model.members) == 2
    x = test_set[0][:64]
    mlp, cnn = load_builtin_model("digits-mlp"), load_builtin_model("digits-cnn")
    with torch.no_grad():
        assert torch.allclose(built.model(x), (mlp(x) + cnn(x)) / 2, atol=1e-5)
        assert not torch.allclose(built.model(x), mlp(x), atol=1e-2)  # not just the first member
    assert [m["name"] for m in built.describe()["members"]] == ["digits-mlp", "digits-cnn"]
    with pytest.raises(SurrogateError, match=r"pretrained ensemble of 3 needs 3 named"):
        build_surrogate(SurrogateRequest("pretrained", ("digits-mlp",), 3), input_shape=(1, 16, 16), classes=10)
    with pytest.raises(SurrogateError, match=r"pretrained surrogate has to be named"):
        build_surrogate(SurrogateRequest("pretrained", (), 1), input_shape=(1, 16, 16), classes=10)


def test_trained_member_learns_the_data_basis(trained_ensemble, test_set):
    members = trained_ensemble.describe()["members"]
    assert [m["name"] for m in members] == ["digits-mlp", "cnn#2"]
    assert "trained on the data basis (1285 inputs" in members[1]["how"]
    trained = trained_ensemble.model.members[1]
    assert accuracy(trained, *test_set) > 0.8  # measured 0.99 (10 epochs, about 3 s on one thread)
    with pytest.raises(SurrogateError, match=r"strategy\.data_basis: 1 of the 2 surrogate members must be trained"):
        build_surrogate(SurrogateRequest("trained_on_data", (), 2), input_shape=(1, 16, 16), classes=10)


def test_ensemble_transfers_at_the_spec_epsilon(trained_ensemble, victim, test_set):
    """MI-FGSM (10 steps) at Linf 0.1 on 128 correctly classified test digits, verified on the victim."""
    x, y = test_set[0][:128], test_set[1][:128]
    rates = {}
    for name, model in (("digits-mlp", trained_ensemble.model.members[0]), ("ensemble", trained_ensemble.model)):
        out = TransferMIFGSM(seed=0, steps=10).run(NoAccess(model, len(x)), x, ClassificationObjective(y),
                                                   Budget(epsilon=0.1), AttackEnv())
        assert float((out.x_adv - x).abs().max()) <= 0.1 + 1e-6
        with torch.no_grad():
            rates[name] = float((victim(out.x_adv.clamp(0, 1)).argmax(dim=1) != y).float().mean())
    print("transfer success at Linf 0.1:", rates)
    assert rates["ensemble"] > 0.2 and rates["digits-mlp"] > 0.2


# ---------------------------------------------------------------------- distillation


class Counting(torch.nn.Module):
    """The victim, counting every input it is asked about."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.model(x)


def test_distillation_spends_queries_within_the_budget_and_the_oracle_refuses_past_it(victim, test_set):
    x = test_set[0][:16]
    counting = Counting(victim)
    oracle = LabelOracle(counting, len(x), budget=8)
    _, points, labels = jacobian_augmentation(oracle, x, "mlp", 10, rounds=3, step=0.1, bounds=(0.0, 1.0),
                                              seed=0, epochs=3)
    assert points.shape[0] == 16 * 8 and labels.shape[0] == 16 * 8
    assert oracle.queries.tolist() == [8] * 16 and counting.seen == 128  # every answer went through the oracle
    assert float((points - x.repeat(8, 1, 1, 1)).abs().max()) <= 3 * 0.1 + 1e-6  # 3 steps of lambda at most
    with pytest.raises(QueryBudgetExceeded):
        oracle(x[:1], torch.tensor([0]))
    with pytest.raises(QueryBudgetExceeded):  # one more round than the budget allows
        jacobian_augmentation(LabelOracle(victim, len(x), budget=8), x, "mlp", 10, 4, 0.1, (0.0, 1.0), 0, epochs=1)
    assert distill_rounds(16, 8) == 3 and distill_rounds(16, 10) == 3 and distill_rounds(16, None) == 5
    assert distill_rounds(512, None) == 3  # at most 4096 labelled points

    knowledge = parse_spec({**spec_with({"kind": "surrogate", "source": "distilled_from_queries"}),
                            "threat": {**spec_with(None)["threat"], "model_knowledge":
                                       {"kind": "query_limited", "query_budget": 6}}}).threat.model_knowledge
    counting.seen = 0
    built = build_surrogate(SurrogateRequest("distilled_from_queries", ("mlp",), 2), input_shape=(1, 16, 16),
                            classes=10, victim=counting, knowledge=knowledge, inputs=x, query_budget=6, seed=0)
    info = built.describe()
    assert info["victim_queries"] == 16 * 4 == counting.seen and info["victim_queries_per_input"] == 4
    assert [m["name"] for m in info["members"]] == ["mlp#1", "cnn#2"] and isinstance(built.model, LogitEnsemble)
    with pytest.raises(SurrogateError, match=r"threat.model_knowledge is full_black_box"):
        build_surrogate(SurrogateRequest("distilled_from_queries", (), 1), input_shape=(1, 16, 16), classes=10,
                        victim=victim, knowledge=parse_spec(spec_with(None)).threat.model_knowledge, inputs=x)


def test_score_oracle_distillation_uses_the_top_1(victim, test_set):
    x = test_set[0][:8]
    oracle = ScoreOracle(victim, len(x), "top_k", k=3, budget=2)
    _, _, labels = jacobian_augmentation(oracle, x, "mlp", 10, 1, 0.1, (0.0, 1.0), 0, epochs=1)
    with torch.no_grad():
        assert torch.equal(labels[:8], victim(x).argmax(dim=1))


# ---------------------------------------------------------------------- the example specs, end to end


@pytest.mark.parametrize("name", ["digits-transfer-full-black-box", "digits-distilled-surrogate"])
def test_example_specs_build_what_they_describe(name, tmp_path, capsys):
    plan, out = tmp_path / "plan.yaml", tmp_path / "run"
    assert cli("plan", SPECS / f"{name}.yaml", "-o", plan) == 0
    assert cli("run", plan, "--model", "digits-cnn", "--data", "digits", "--limit", 32, "-q", "-o", out) == 0
    result = json.loads((out / "results.json").read_text())
    built = [item["params"]["surrogate_built"] for item in result["items"]]
    assert all(b == built[0] for b in built)  # one surrogate for the whole plan
    members = [m["name"] for m in built[0]["members"]]
    if name == "digits-transfer-full-black-box":
        assert members == ["digits-mlp", "cnn#2"] and built[0]["combine"] == "mean of logits"
        assert built[0]["victim_queries"] == 0
    else:
        assert members == ["cnn#1"] and built[0]["source"] == "distilled_from_queries"
        assert built[0]["victim_queries"] == 32 * 32 and built[0]["victim_queries_per_input"] == 32
    assert any(f["check"] == "surrogate.built" for f in result["flags"])
    assert "surrogate.built" in (out / "report.md").read_text()
    rates = [item["success_rate"] for item in result["items"]]
    print(name, members, "success rates per item:", rates, "robust accuracy:", result["robust_accuracy"])
    assert rates[0] > 0.2  # verified on the victim
