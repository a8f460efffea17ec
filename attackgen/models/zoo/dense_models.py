"""Built-in dense models for the street scenes: a small segmentation net and a small detector.

Both take inputs in [0, 1] (N, 3, 64, 64) and normalise inside (per-channel mean/std buffers saved
with the weights), so ``input_space.normalization`` is ``inside_model``.

- ``StreetSegNet`` (about 45k parameters): a U-shaped encoder-decoder (strides 1, 2, 4 and back with
  skips) that returns (N, 6, H, W) logits over ``scenes.CLASSES``.
- ``StreetDetector`` (about 30k parameters): an anchor-free CenterNet-style detector (Zhou et al. 2019,
  arXiv:1904.07850) on a stride-4 grid with a heat map per object class, a box size and a centre
  offset per cell. ``forward`` returns torchvision's detection format: one dict per image with
  ``boxes`` (K, 4) xyxy in input pixels, ``scores`` (K,) and ``labels`` (K,) in the scenes' class
  indices (car 4, person 5). Like torchvision's detectors it returns candidates at the top
  ``max_detections`` heat-map peaks, one per class at each place, including low-scoring ones, with
  scores that stay differentiable; the model's own
  operating point is ``score_threshold`` (a buffer chosen on validation scenes at training time),
  and the list it returns carries it as ``.score_threshold``.

Weights ship in float16 (``weights/seg_street.pt``, ``weights/det_street.pt``) and load as float32;
``python -m attackgen.models.zoo.train_dense`` retrains both.
"""

# no `from __future__ import annotations`: TorchScript must resolve the buffer annotations below

from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attackgen.models.adapters import DetectionOutput
from attackgen.models.zoo.scenes import CLASSES, OBJECT_CLASSES
from taxonomy.errors import AttackgenError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SEG_WEIGHTS = WEIGHTS_DIR / "seg_street.pt"
DET_WEIGHTS = WEIGHTS_DIR / "det_street.pt"
M = TypeVar("M", bound=nn.Module)


class ChannelNormalize(nn.Module):
    """(x - mean[c]) / std[c] with per-channel buffers."""

    mean: Tensor  # buffers, declared for the type checker
    std: Tensor

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 0.25))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)
    )


class StreetSegNet(nn.Module):
    """A small U-Net-style segmentation network: (N, 3, H, W) in [0, 1] -> (N, C, H, W) logits.

    Full resolution stem, encoder at strides 2 and 4 (dilated at stride 4 for context), 1x1 decoder
    fusions at stride 2 and with the stem features at full resolution.
    """

    classes = CLASSES

    def __init__(self, num_classes: int = len(CLASSES), width: int = 16) -> None:
        super().__init__()
        w1, w2, w3 = width, width * 3 // 2, 2 * width
        self.norm = ChannelNormalize()
        self.enc1 = _conv(3, w1)
        self.enc2 = nn.Sequential(_conv(w1, w2, stride=2), _conv(w2, w2))
        self.enc3 = nn.Sequential(_conv(w2, w3, stride=2), _conv(w3, w3, dilation=2), _conv(w3, w3, dilation=4))
        self.dec2 = nn.Sequential(nn.Conv2d(w3 + w2, w2, 1), nn.ReLU(inplace=True))
        self.dec1 = nn.Sequential(nn.Conv2d(w2 + w1, w1, 1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(w1, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(self.norm(x))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        return self.head(d1)


class StreetDetector(nn.Module):
    """CenterNet-style detector on a stride-4 grid; forward returns torchvision-format detections."""

    stride = 4
    classes = CLASSES
    score_threshold_: Tensor  # buffers, declared for the type checker
    label_ids: Tensor
    object_classes = OBJECT_CLASSES

    def __init__(self, width: int = 16, max_detections: int = 32) -> None:
        super().__init__()
        w1, w2, w3 = width, width * 3 // 2, 2 * width
        self.norm = ChannelNormalize()
        self.backbone = nn.Sequential(
            _conv(3, w1, stride=2), _conv(w1, w2), _conv(w2, w3, stride=2),
            _conv(w3, w3, dilation=2), _conv(w3, w3, dilation=4),
        )
        k = len(OBJECT_CLASSES)
        self.head = nn.Sequential(_conv(w3, w2), nn.Conv2d(w2, k + 4, 1))
        self.max_detections = max_detections
        self.register_buffer("score_threshold_", torch.tensor(0.5))
        self.register_buffer("label_ids", torch.tensor(OBJECT_CLASSES, dtype=torch.long))
        with torch.no_grad():  # heat map prior: objects are rare (CenterNet's bias initialisation)
            last = self.head[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None  # the 1x1 output convolution
            last.bias[:k].fill_(-2.19)

    @property
    def score_threshold(self) -> float:
        return float(self.score_threshold_)

    def raw(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Dense outputs: heat-map logits (N, K, h, w), log box size (N, 2, h, w), centre offset (N, 2, h, w)."""
        out = self.head(self.backbone(self.norm(x)))
        k = len(OBJECT_CLASSES)
        return out[:, :k], out[:, k : k + 2], out[:, k + 2 : k + 4]

    def decode(self, heat_logits: Tensor, size: Tensor, offset: Tensor, image_hw: tuple[int, int]) -> DetectionOutput:
        """Candidates at the top ``max_detections`` peaks of the heat maps, one per class at each place.

        Like a torchvision detector, which scores every class for each proposal, each selected place
        gives one candidate per class. A class whose heat map does not peak there gets a score scaled
        by 1e-3 (never a detection, but its gradient is the heat's: -log s and its gradient do not
        depend on the scale), so an attack can raise a class at a place where another one is detected
        (mislabelling). The candidates at the peaks keep exactly their heat-map scores.
        """
        n, k, gh, gw = heat_logits.shape
        heat = heat_logits.sigmoid()
        with torch.no_grad():
            peaks = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
            flat_peaks = (heat * peaks).flatten(1)  # (N, K*h*w): non-peaks 0
            top = min(self.max_detections, flat_peaks.shape[1])
            order = flat_peaks.topk(top, dim=1).indices
            cells = order % (gh * gw)  # (N, top) places, possibly repeated across classes
        result = []
        hgt, wid = image_hw
        for i in range(n):
            cell = torch.unique(cells[i])  # the selected places of image i
            cls = torch.arange(k, device=heat.device).repeat_interleave(cell.numel())
            place = cell.repeat(k)
            flat_index = cls * gh * gw + place
            raw = heat[i].flatten()[flat_index]
            is_peak = peaks[i].flatten()[flat_index]
            scores = raw * torch.where(is_peak, 1.0, 1e-3)
            cy, cx = (place // gw).float(), (place % gw).float()
            wh = size[i].flatten(1)[:, place].exp() * self.stride  # (2, M)
            off = offset[i].flatten(1)[:, place].sigmoid()
            px = (cx + off[0]) * self.stride
            py = (cy + off[1]) * self.stride
            boxes = torch.stack([
                (px - wh[0] / 2).clamp(0, wid), (py - wh[1] / 2).clamp(0, hgt),
                (px + wh[0] / 2).clamp(0, wid), (py + wh[1] / 2).clamp(0, hgt),
            ], dim=-1)
            rank = torch.argsort(scores.detach(), descending=True)
            result.append({"boxes": boxes[rank], "scores": scores[rank], "labels": self.label_ids[cls[rank]]})
        return DetectionOutput(result, score_threshold=self.score_threshold, classes=list(CLASSES))

    def forward(self, x: Tensor) -> DetectionOutput:
        heat, size, offset = self.raw(x)
        return self.decode(heat, size, offset, (x.shape[-2], x.shape[-1]))


@cache
def _state(path: Path) -> dict[str, Tensor]:
    if not path.exists():
        raise AttackgenError(
            f"the weights of a built-in street model are missing ({path}); "
            "retrain them with 'python -m attackgen.models.zoo.train_dense'"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def _load(model: M, path: Path, cached: bool = True) -> M:
    raw = _state(path) if cached else torch.load(path, map_location="cpu", weights_only=True)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in raw.items()}
    model.load_state_dict(state)
    return model.eval()


def load_street_seg() -> StreetSegNet:
    """Built-in model 'street-seg' with its shipped weights, in eval mode, on the CPU."""
    return _load(StreetSegNet(), SEG_WEIGHTS)


def load_street_det() -> StreetDetector:
    """Built-in model 'street-det' with its shipped weights, in eval mode, on the CPU."""
    return _load(StreetDetector(), DET_WEIGHTS)


def save_half(model: nn.Module, path: Path) -> None:
    """The state dict with float tensors stored as float16 (half the size; loads back as float32)."""
    state: dict[str, Any] = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).clone().contiguous()
        for k, v in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
