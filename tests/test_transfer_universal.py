"""Transfer through a surrogate, and universal / contextual perturbations, on the digits models.

Every figure is verified as the executor verifies it: the candidate is clipped and re-run through the
victim (the digits CNN), which the transfer attack itself never touches.
"""

from __future__ import annotations

import pytest
import torch

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.run.access import NoAccess, ScoreOracle, WhiteBoxAccess
from attackgen.run.attacks.base import AttackEnv, Budget
from attackgen.run.attacks.transfer import TransferDIFGSM, TransferMIFGSM, input_diversity, train_surrogate
from attackgen.run.attacks.universal import UniversalPerturbation
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.errors import AttackgenError


@pytest.fixture(scope="module")
def surrogate():
    return load_builtin_model("digits-mlp").requires_grad_(False)


@pytest.fixture(scope="module")
def train_set():
    data = load_builtin_data("digits-train")
    return data.x, data.y


def fooled(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv.clamp(0, 1)).argmax(dim=1) != y


# ---------------------------------------------------------------------- transfer


class Victim(torch.nn.Module):
    """A victim that fails the test if anything calls it."""

    def forward(self, x):  # pragma: no cover - must never run
        raise AssertionError("the transfer attack queried the victim")


@pytest.mark.parametrize("cls", [TransferMIFGSM, TransferDIFGSM])
def test_transfer_rates_surrogate_to_victim(cls, victim, surrogate, test_set):
    """digits-mlp -> digits-cnn. Measured on these 256 correctly classified test digits (10 steps):
    MI-FGSM 0.43 at Linf 0.1 and 0.94 at 0.2; DI-FGSM 0.30 and 0.95 (all 508: 0.49/0.96, 0.36/0.96)."""
    x, y = test_set[0][:256], test_set[1][:256]
    rates = {}
    for eps in (0.1, 0.2):
        access = NoAccess(surrogate, len(x))
        env = AttackEnv(surrogate=None)
        out = cls(seed=0, steps=10).run(access, x, ClassificationObjective(y), Budget(epsilon=eps), env)
        assert out.info["transfer"] is True and out.info["victim_queries"] == 0
        assert float((out.x_adv - x).abs().max()) <= eps + 1e-6
        assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1
        rates[eps] = float(fooled(victim, out.x_adv, y).float().mean())
    assert rates[0.1] >= 0.25, rates
    assert rates[0.2] >= 0.85, rates
    assert rates[0.2] > rates[0.1]


def test_transfer_uses_env_surrogate_and_never_the_victim(surrogate, test_set):
    """With white-box access to a victim and a surrogate in the environment, the surrogate is used."""
    x, y = test_set[0][:16], test_set[1][:16]
    access = WhiteBoxAccess(Victim(), len(x))
    out = TransferMIFGSM(seed=0, steps=3).run(access, x, ClassificationObjective(y), Budget(epsilon=0.1),
                                              AttackEnv(surrogate=surrogate))
    assert int(access.queries.sum()) == 0
    assert out.x_adv.shape == x.shape


def test_transfer_without_gradients_is_a_clear_error(victim, test_set):
    x, y = test_set[0][:4], test_set[1][:4]
    oracle = ScoreOracle(victim, len(x), budget=10)
    with pytest.raises(AttackgenError, match=r"strategy.model_basis"):
        TransferMIFGSM().run(oracle, x, ClassificationObjective(y), Budget(epsilon=0.1))


def test_input_diversity_keeps_shape_and_shrinks():
    x = torch.ones(3, 1, 16, 16)
    gen = torch.Generator().manual_seed(0)
    outs = [input_diversity(x, gen, prob=1.0, resize_rate=0.8) for _ in range(8)]
    assert all(o.shape == x.shape for o in outs)
    assert any(float(o.sum()) < float(x.sum()) for o in outs)  # some were shrunk and padded
    assert torch.equal(input_diversity(x, gen, prob=0.0, resize_rate=0.8), x)


def test_train_surrogate_learns_the_data_basis(train_set, test_set):
    x, y = train_set
    model = train_surrogate(x[:600], y[:600], "mlp", epochs=8, seed=0)
    with torch.no_grad():
        accuracy = float((model(test_set[0]).argmax(1) == test_set[1]).float().mean())
    assert accuracy >= 0.85
    with pytest.raises(AttackgenError, match=r"unknown surrogate architecture"):
        train_surrogate(x[:10], y[:10], "resnet")


# ---------------------------------------------------------------------- universal / contextual


def test_universal_perturbation_fools_half_of_heldout_digits(victim, train_set, test_set):
    """Fitted on the training split, applied unchanged to held-out digits. Measured: 0.84 at Linf 0.2."""
    x_fit, y_fit = train_set
    budget = Budget(epsilon=0.2)
    uap = UniversalPerturbation(seed=0, epochs=5)
    delta = uap.fit(WhiteBoxAccess(victim, len(x_fit)), x_fit, ClassificationObjective(y_fit), budget)
    assert delta.shape == (1, 1, 16, 16)
    assert float(delta.abs().max()) <= 0.2 + 1e-6
    x, y = test_set
    out = uap.run(WhiteBoxAccess(victim, len(x)), x, ClassificationObjective(y), budget)
    assert out.info["universal"] is True
    assert torch.allclose(out.x_adv, (x + delta).clamp(0, 1))  # the same delta for every input
    rate = float(fooled(victim, out.x_adv, y).float().mean())
    assert rate >= 0.5, f"held-out fooling rate {rate:.3f}"


def test_targeted_universal_perturbation(victim, train_set, test_set):
    """One delta that sends digits to class 8 (a static target). Measured: 0.65 of held-out digits."""
    x_fit, y_fit = train_set
    budget = Budget(epsilon=0.2)
    target = torch.full_like(y_fit, 8)
    uap = UniversalPerturbation(seed=0, epochs=5)
    uap.fit(WhiteBoxAccess(victim, len(x_fit)), x_fit, ClassificationObjective(y_fit, target), budget)
    x, y = test_set
    keep = y != 8
    with torch.no_grad():
        hit = victim(uap.apply(x[keep], budget)).argmax(1) == 8
    assert float(hit.float().mean()) >= 0.3


def test_contextual_perturbation_is_specific_to_its_context(victim, train_set, test_set):
    """Fitted on the digits labelled 3 only: it fools held-out 3s more than the other digits."""
    x_fit, y_fit = train_set
    context = y_fit == 3
    budget = Budget(epsilon=0.15)
    uap = UniversalPerturbation(seed=0, epochs=10)
    uap.fit(WhiteBoxAccess(victim, int(context.sum())), x_fit[context], ClassificationObjective(y_fit[context]),
            budget)
    x, y = test_set
    rate_in = float(fooled(victim, uap.apply(x[y == 3], budget), y[y == 3]).float().mean())
    rate_out = float(fooled(victim, uap.apply(x[y != 3], budget), y[y != 3]).float().mean())
    assert rate_in >= 0.5
    assert rate_in > rate_out + 0.2, (rate_in, rate_out)


def test_universal_needs_inputs_and_a_fixed_epsilon(victim, train_set):
    x, y = train_set
    with pytest.raises(AttackgenError, match=r"threat.scope"):
        UniversalPerturbation().fit(WhiteBoxAccess(victim, 0), x[:0], ClassificationObjective(y[:0]),
                                    Budget(epsilon=0.1))
    with pytest.raises(AttackgenError, match=r"threat.imperceptibility"):
        UniversalPerturbation().fit(WhiteBoxAccess(victim, 4), x[:4], ClassificationObjective(y[:4]),
                                    Budget(norm="2", epsilon=None))
    with pytest.raises(RuntimeError, match=r"fitted"):
        UniversalPerturbation().run(WhiteBoxAccess(victim, 4), x[:4], ClassificationObjective(y[:4]),
                                    Budget(epsilon=0.1))
