"""Model adapters for dense tasks: one checked output format per task, whatever the user's model returns.

- Segmentation: ``(N, C, H, W)`` logits (or scores). A torchvision-style ``{"out": logits}`` dict is
  accepted and unwrapped; anything else is an AttackgenError that says what came back.
- Detection: torchvision's detection format, one dict per image with ``boxes`` (K, 4) float xyxy in
  input pixels, ``scores`` (K,) and ``labels`` (K,) int64. The adapter returns a ``DetectionOutput``: a
  plain list of those dicts that also carries the detector's ``score_threshold``, the operating point
  at which a detection counts. A torchvision detector (when torchvision is installed; attackgen never
  imports it) works as is: give ``score_threshold`` here, and set its own ``box_score_thresh`` low so
  the candidates below the operating point still come back with differentiable scores.

The checks run on every forward pass (they are cheap) so a malformed output fails on the first call
with a message naming the image, the key and the shape, never deep inside an attack.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from attackgen.models.errors import ModelLoadError
from taxonomy.errors import AttackgenError

DEFAULT_SCORE_THRESHOLD = 0.5


class DetectionOutput(list[dict[str, Tensor]]):
    """Per-image detection dicts (torchvision format), the score at which a detection counts, and
    optionally the class names its label indices refer to (``classes``)."""

    def __init__(self, items: Iterable[dict[str, Tensor]] = (), score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                 classes: list[str] | None = None):
        super().__init__(items)
        self.score_threshold = float(score_threshold)
        self.classes = list(classes) if classes is not None else None

    def _like(self, items: Iterable[dict[str, Tensor]]) -> DetectionOutput:
        return DetectionOutput(items, score_threshold=self.score_threshold, classes=self.classes)

    def detach(self) -> DetectionOutput:
        return self._like([{k: v.detach() for k, v in item.items()} for item in self])

    def take(self, rows: Any) -> DetectionOutput:
        index = rows.tolist() if isinstance(rows, Tensor) else list(rows)
        return self._like([self[i] for i in index])

    def kept(self) -> DetectionOutput:
        """Only the detections at or above the threshold (what a user of the detector sees)."""
        out = []
        for item in self:
            keep = item["scores"] >= self.score_threshold
            out.append({k: v[keep] for k, v in item.items()})
        return self._like(out)


class InvalidModelOutput(AttackgenError):
    """The model's output is not in the format its task needs."""


def check_segmentation_output(out: Any, n: int, hw: tuple[int, int] | None = None,
                              num_classes: int | None = None, where: str = "model output") -> Tensor:
    """Validate (N, C, H, W) logits; unwrap {'out': ...}; return the tensor."""
    if isinstance(out, dict) and "out" in out:
        out = out["out"]
    if not isinstance(out, Tensor):
        raise InvalidModelOutput(
            f"{where}: a segmentation model must return a (N, C, H, W) tensor of logits, got {type(out).__name__}"
            + (" (a list of dicts looks like a detector: use task: detection)" if isinstance(out, list) else "")
        )
    if out.dim() != 4:
        shape = tuple(out.shape)
        hint = " ((N, C) looks like a classifier: use task: classification)" if out.dim() == 2 else ""
        raise InvalidModelOutput(
            f"{where}: a segmentation model must return (N, C, H, W) logits, got shape {shape}{hint}"
        )
    if out.shape[0] != n:
        raise InvalidModelOutput(f"{where}: {n} images in, {out.shape[0]} label maps out")
    if not out.is_floating_point():
        raise InvalidModelOutput(f"{where}: logits must be floating point, got {out.dtype} (an argmax map?)")
    if num_classes is not None and out.shape[1] != num_classes:
        raise InvalidModelOutput(f"{where}: expected {num_classes} class channels, got {out.shape[1]}")
    if hw is not None and tuple(out.shape[-2:]) != tuple(hw):
        raise InvalidModelOutput(
            f"{where}: logits are {tuple(out.shape[-2:])} but the input is {tuple(hw)}; "
            "upsample to the input size inside the model (the adapter does not guess)"
        )
    return out


def check_detection_output(out: Any, n: int, where: str = "model output",
                           score_threshold: float | None = None) -> DetectionOutput:
    """Validate torchvision-format detections; return them as a DetectionOutput."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list):
        out = out[1]  # torchvision scripted detectors return (losses, detections)
    if not isinstance(out, list):
        kind = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise InvalidModelOutput(
            f"{where}: a detector must return a list with one dict per image "
            f"({{'boxes': (K, 4) xyxy, 'scores': (K,), 'labels': (K,)}}, torchvision's format), got {kind}"
        )
    if len(out) != n:
        raise InvalidModelOutput(f"{where}: {n} images in, {len(out)} detection dicts out")
    for i, item in enumerate(out):
        if not isinstance(item, dict):
            raise InvalidModelOutput(
                f"{where}[{i}]: expected a dict with boxes, scores, labels; got {type(item).__name__}"
            )
        missing = [k for k in ("boxes", "scores", "labels") if k not in item]
        if missing:
            raise InvalidModelOutput(
                f"{where}[{i}]: missing key(s) {', '.join(missing)}; a detection dict needs boxes, scores, labels "
                f"(got keys {sorted(item)})"
            )
        boxes, scores, labels = item["boxes"], item["scores"], item["labels"]
        for key, value in (("boxes", boxes), ("scores", scores), ("labels", labels)):
            if not isinstance(value, Tensor):
                raise InvalidModelOutput(f"{where}[{i}]['{key}']: expected a tensor, got {type(value).__name__}")
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise InvalidModelOutput(f"{where}[{i}]['boxes']: expected shape (K, 4) xyxy, got {tuple(boxes.shape)}")
        k = boxes.shape[0]
        if scores.shape != (k,) or labels.shape != (k,):
            raise InvalidModelOutput(
                f"{where}[{i}]: {k} boxes but scores {tuple(scores.shape)} and labels {tuple(labels.shape)}; "
                "each needs shape (K,)"
            )
        if not boxes.is_floating_point() or not scores.is_floating_point():
            raise InvalidModelOutput(f"{where}[{i}]: boxes and scores must be floating point")
        if labels.is_floating_point():
            raise InvalidModelOutput(f"{where}[{i}]['labels']: must be integer class indices, got {labels.dtype}")
        if k and bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
            raise InvalidModelOutput(
                f"{where}[{i}]['boxes']: some boxes have x1 < x0 or y1 < y0; boxes must be xyxy "
                "(convert xywh or cxcywh first)"
            )
    threshold = score_threshold
    if threshold is None:
        threshold = getattr(out, "score_threshold", DEFAULT_SCORE_THRESHOLD)
    if isinstance(out, DetectionOutput) and out.score_threshold == threshold:
        return out
    return DetectionOutput(out, score_threshold=threshold, classes=getattr(out, "classes", None))


class SegmentationAdapter(nn.Module):
    """Wraps a segmentation model; forward returns checked (N, C, H, W) logits."""

    task = "segmentation"

    def __init__(self, model: nn.Module, num_classes: int | None = None, same_size: bool = True) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.same_size = same_size

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        hw = (x.shape[-2], x.shape[-1]) if self.same_size else None
        return check_segmentation_output(out, x.shape[0], hw, self.num_classes)


class DetectorAdapter(nn.Module):
    """Wraps a detector; forward returns a checked DetectionOutput with the operating threshold."""

    task = "detection"

    def __init__(self, model: nn.Module, score_threshold: float | None = None) -> None:
        super().__init__()
        self.model = model
        if score_threshold is None:
            score_threshold = getattr(model, "score_threshold", DEFAULT_SCORE_THRESHOLD)
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise AttackgenError(f"score_threshold must lie in [0, 1], got {score_threshold}")
        self.score_threshold = float(score_threshold)

    def forward(self, x: Tensor) -> DetectionOutput:
        return check_detection_output(self.model(x), x.shape[0], score_threshold=self.score_threshold)


def adapt(model: nn.Module, task: str, **options: Any) -> nn.Module:
    """The model wrapped for its task (classification models pass through unchanged)."""
    if task == "segmentation":
        return model if isinstance(model, SegmentationAdapter) else SegmentationAdapter(model, **options)
    if task == "detection":
        return model if isinstance(model, DetectorAdapter) else DetectorAdapter(model, **options)
    return model


def detections_to_device(out: DetectionOutput, device: torch.device | str) -> DetectionOutput:
    return out._like([{k: v.to(device) for k, v in d.items()} for d in out])


def segmentation_output_check(outputs: Any, n: int, spec: Any, ref: str) -> int:
    """attackgen.models.loading's probe of a segmentation model: logits (N, classes, H, W); the class count."""
    logits = check_segmentation_output(outputs, n, where=f"--model {ref}")
    classes = int(logits.shape[1])
    if spec.classes is not None and len(spec.classes) != classes:
        raise ModelLoadError(
            f"--model {ref}: returns {classes} class channels but the spec's 'classes' field lists "
            f"{len(spec.classes)}."
        )
    return classes


def detection_output_check(outputs: Any, n: int, spec: Any, ref: str) -> None:
    """attackgen.models.loading's probe of a detector: scored boxes whose classes match the spec's."""
    dets = check_detection_output(outputs, n, where=f"--model {ref}")
    if dets.classes is not None and spec.classes is not None and list(spec.classes) != dets.classes:
        raise ModelLoadError(
            f"--model {ref}: its label indices refer to the classes {dets.classes}, but the spec's 'classes' "
            f"field lists {list(spec.classes)}; use the detector's list (or leave 'classes' out)."
        )


DENSE_OUTPUT_CHECKS = {"segmentation": segmentation_output_check, "detection": detection_output_check}
"""Registered by attackgen.models.loading (which imports this module, not the other way round)."""
