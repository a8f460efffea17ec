"""The evaluation fixtures of the zoo: three gradient-masking wrappers of digits-cnn and an adversarially trained CNN.

Each fixture is only useful if it has the property an evaluation is tested against: the logit-scaled model
decides exactly as the unscaled one, the quantised model's input gradients are exactly zero, and the
randomised model answers differently from call to call.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from attackgen.models.loading import load_model
from attackgen.models.zoo import BUILTIN_MODELS, load_builtin_data, load_builtin_model
from attackgen.models.zoo.models import WEIGHTS_DIR, model_info

MASKING = ("digits-cnn-scaled", "digits-cnn-quantized", "digits-cnn-randomized")


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def digits():
    data = load_builtin_data("digits")
    return data.x, data.y


def test_fixtures_are_built_ins_with_their_own_data():
    for name in MASKING:
        assert name in BUILTIN_MODELS
    for name in MASKING:
        assert model_info(name).data == "digits" and model_info(name).wraps == "digits-cnn"
    summary = json.loads((WEIGHTS_DIR / "models.json").read_text())
    assert summary["digits-cnn-scaled"]["wraps"] == "digits-cnn"


def test_logit_scaled_model_decides_exactly_as_the_unscaled_one(digits):
    x, y = digits
    base, scaled = load_builtin_model("digits-cnn"), load_builtin_model("digits-cnn-scaled")
    with torch.no_grad():
        logits, big = base(x), scaled(x)
    assert torch.equal(big.argmax(1), logits.argmax(1))
    torch.testing.assert_close(big, logits * 1000)
    # the point of the fixture: the softmax saturates, so most cross-entropy gradients are exactly zero
    x_grad = x[:64].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(scaled(x_grad), y[:64], reduction="sum"), x_grad)
    assert int((grad.flatten(1).abs().sum(1) == 0).sum()) >= 32


def test_quantized_model_has_zero_input_gradients(digits):
    x, y = digits
    model = load_builtin_model("digits-cnn-quantized")
    assert accuracy(model, x, y) >= 0.97
    x_grad = x[:64].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_grad), y[:64]), x_grad)
    assert torch.count_nonzero(grad) == 0
    # piecewise constant: moving every pixel by less than half a level (1/14) changes no output
    levels = torch.round(x[:64] * 7) / 7
    with torch.no_grad():
        assert torch.equal(model(x[:64]), model((levels + 0.03).clamp(0, 1)))


def test_randomized_model_varies_between_calls_and_repeats_under_a_seed(digits):
    x, y = digits
    model = load_builtin_model("digits-cnn-randomized")
    with torch.no_grad():
        torch.manual_seed(0)
        first = model(x[:64])
        second = model(x[:64])
        torch.manual_seed(0)
        again = model(x[:64])
    assert not torch.allclose(first, second)
    assert torch.equal(first, again)
    assert accuracy(model, x, y) >= 0.9


def test_fixtures_load_by_name_as_the_cli_does():
    for name in MASKING:
        model = load_model(name)
        assert not model.training


def test_adversarially_trained_fixture_resists_pgd_where_the_plain_model_breaks():
    """mnist5k-cnn-at is only a useful fixture if its robust accuracy at its epsilon is well above zero
    while the plainly trained model of the same architecture falls to the same attack."""
    from attackgen.models.zoo.train import robust_accuracy

    data = load_builtin_data("mnist5k")
    x, y = data.x[:128], data.y[:128]
    robust = load_builtin_model("mnist5k-cnn-at")
    plain = load_builtin_model("mnist5k-cnn")
    assert accuracy(robust, x, y) >= 0.9
    assert robust_accuracy(robust, x, y, 0.2, steps=20) >= 0.6
    assert robust_accuracy(plain, x, y, 0.2, steps=20) <= 0.2
    summary = json.loads((WEIGHTS_DIR / "models.json").read_text())
    assert summary["mnist5k-cnn-at"]["adversarial_training"]["epsilon"] == 0.2
