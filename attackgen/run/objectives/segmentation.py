"""Segmentation objectives: untargeted, static, dynamic (Metzen et al. 2017) and confusing targets.

Every objective is a per-pixel target (or reference) map plus per-pixel weights, and a predicate on the
predicted label map. Outputs are (N, C, H, W) logits, or probabilities from a score oracle (detected:
non-negative and summing to one over C); the loss is a weighted cross-entropy either way.

- untargeted: reference r = ground truth or clean prediction; the attacker maximises the cross-entropy
  of the pixels still right. Success: mIoU(adv, r) / mIoU(clean, r) <= ``max_miou_ratio`` (0.5).
- static: target map T (a fixed map for every input). Success: pixel agreement >= ``min_agreement`` (0.8).
- dynamic, remove_classes O: target = clean prediction with every O pixel relabelled with its nearest
  non-O pixel's label (exact Euclidean nearest, scipy's distance transform; Metzen's implementation
  approximates it by rolling). Loss J = (1/|I|)[w sum_{I_O} CE + (1 - w) sum_{I_bg} CE] with
  w = ``background_weight`` (Metzen's omega, 0.9999), and pixels already at their target with
  probability above ``confidence_threshold`` (0.75) dropped from the loss, as in Metzen's code. On a
  removed pixel the CE term is -log(1 - p_removed) + 0.1 CE(fill) (``fill_weight``; None restores
  Metzen's CE towards the fill label), which succeeds far more often at a small epsilon.
  Success: removal rate (O pixels of the clean prediction no longer O) >= ``min_removal`` (0.9) and
  background preservation (other pixels keep their clean label) >= ``min_preservation`` (0.9).
  Inputs whose clean prediction has no O pixel are not applicable (rule C4): never a success,
  ``applicable`` = 0 in the metrics. Rules class_map and least_likely build the target pixel-wise.
- confusing: the O objects of the clean prediction (connected components) moved by ``shift`` and/or
  scaled by ``scale`` about their centroids; vacated pixels are filled as for dynamic targets; I_O is
  the union of old and new object pixels. Success: IoU of the predicted O mask with the moved mask
  >= ``min_iou`` (0.5) and above its IoU with the original mask; metrics report the centroid shift.

``progress`` (per input, higher is closer) is the figure each threshold is set on: pixel agreement
(static), min(removal / min_removal, preservation / min_preservation) (dynamic), IoU with the moved
mask (confusing), 1 - mIoU ratio (untargeted); 0 where not applicable. ``dense_descent`` returns a
failing input's iterate with the highest progress.

Size (about 650 lines): four consequences share the weighted cross-entropy, the fill by nearest
pixel and the builder; each objective class is short, and they are read together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attackgen.run.objectives.base import Capability, Objective
from taxonomy.errors import AttackgenError

IGNORE = -1
IGNORE_FILE_VALUES = (255,)
"""Values in a target-map file that mean 'any label' (Cityscapes' ignore), besides -1 in .npy files."""


# --------------------------------------------------------------------------- helpers


def log_probs(outputs: Tensor) -> Tensor:
    """log-probabilities over dim 1 from logits, or from probabilities (a score oracle's answers)."""
    if outputs.dtype.is_floating_point and bool((outputs >= 0).all()):
        sums = outputs.sum(dim=1)
        if bool(((sums - 1).abs() < 1e-3).all()):
            return outputs.clamp_min(1e-12).log()
    return F.log_softmax(outputs, dim=1)


def predicted(outputs: Tensor) -> Tensor:
    """Label map (N, H, W) from (N, C, H, W) outputs, or outputs that already are label maps."""
    return outputs if outputs.dim() == 3 else outputs.argmax(dim=1)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(C, C) counts, rows = target, columns = prediction; pixels with target outside [0, C) ignored."""
    valid = (target >= 0) & (target < num_classes)
    idx = target[valid] * num_classes + pred[valid]
    return torch.bincount(idx.flatten(), minlength=num_classes**2).view(num_classes, num_classes).cpu()


def iou_from_confusion(conf: Tensor) -> np.ndarray:
    """Per-class IoU; NaN for a class absent from both target and prediction."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    iou = (inter / union).numpy()
    iou[union.numpy() == 0] = np.nan
    return iou


def per_image_miou(pred: Tensor, ref: Tensor, num_classes: int) -> Tensor:
    """mIoU of each image over the classes present in its reference or prediction."""
    out = torch.empty(pred.shape[0], dtype=torch.float64)
    for i in range(pred.shape[0]):
        iou = iou_from_confusion(confusion_matrix(pred[i], ref[i], num_classes))
        out[i] = float(np.nanmean(iou)) if not np.all(np.isnan(iou)) else 1.0
    return out


def nearest_fill(labels: Tensor, remove: Tensor) -> Tensor:
    """Every pixel where ``remove`` is True gets the label of the nearest pixel where it is False."""
    from scipy import ndimage

    out = labels.clone()
    lab = labels.cpu().numpy()
    rem = remove.cpu().numpy()
    for i in range(lab.shape[0]):
        if not rem[i].any() or rem[i].all():
            continue  # nothing to fill, or nothing to fill from (left unchanged; the input is not applicable)
        _, (iy, ix) = ndimage.distance_transform_edt(rem[i], return_indices=True)
        out[i] = torch.from_numpy(lab[i][iy, ix]).to(labels.device)
    return out


def _centroids(mask: Tensor) -> Tensor:
    """(N, 2) centroid (y, x) of each image's mask; NaN where the mask is empty."""
    _n, h, w = mask.shape
    ys = torch.arange(h, device=mask.device, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, device=mask.device, dtype=torch.float64).view(1, 1, w)
    m = mask.double()
    area = m.sum(dim=(1, 2))
    cy = (m * ys).sum(dim=(1, 2)) / area
    cx = (m * xs).sum(dim=(1, 2)) / area
    return torch.stack([cy, cx], 1)


def _iou(a: Tensor, b: Tensor) -> Tensor:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def move_objects(labels: Tensor, classes: list[int], shift: tuple[int, int], scale: float
                 ) -> tuple[Tensor, Tensor]:
    """Labels with the objects of ``classes`` moved by (dx, dy) and scaled about each object's centroid.

    Returns (target map, moved object mask). Vacated pixels take their nearest non-object label.
    """
    from scipy import ndimage

    is_obj = torch.isin(labels, torch.tensor(classes, device=labels.device))
    base = nearest_fill(labels, is_obj)
    target = base.clone()
    moved = torch.zeros_like(is_obj)
    lab = labels.cpu().numpy()
    obj = is_obj.cpu().numpy()
    n, h, w = lab.shape
    ys, xs = np.mgrid[:h, :w]
    dx, dy = shift
    for i in range(n):
        if not obj[i].any():
            continue
        components, count = ndimage.label(obj[i])
        new = np.full((h, w), IGNORE, np.int64)
        for c in range(1, count + 1):
            comp = components == c
            cy, cx = ys[comp].mean(), xs[comp].mean()
            # inverse map: target pixel p comes from source (p - centre - shift) / scale + centre
            sy = np.rint((ys - cy - dy) / scale + cy).astype(int)
            sx = np.rint((xs - cx - dx) / scale + cx).astype(int)
            inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
            src = np.zeros((h, w), bool)
            src[inside] = comp[sy[inside], sx[inside]]
            new[src] = lab[i][sy[src], sx[src]]
        placed = new != IGNORE
        target[i][torch.from_numpy(placed).to(labels.device)] = torch.from_numpy(new[placed]).to(labels.device)
        moved[i] = torch.from_numpy(placed).to(labels.device)
    return target, moved


# --------------------------------------------------------------------------- objectives


class SegmentationObjective(Objective):
    """Weighted per-pixel cross-entropy toward (targeted) or away from (untargeted) a label map.

    Pixel weights: 1 everywhere, or, when ``region`` is given (the pixels the consequence changes),
    ``omega`` on the region and ``1 - omega`` elsewhere (Metzen's weighting).
    """

    capabilities = frozenset({Capability.PROGRESS, Capability.CONFIGURE})
    consequence = "segmentation"
    _tensor_names: tuple[str, ...] = ("target", "clean_pred", "applicable", "region")
    applicable: Tensor  # always set: every input applies unless the builder says otherwise

    def __init__(self, target: Tensor, clean_pred: Tensor, targeted: bool, region: Tensor | None = None,
                 omega: float = 0.9999, confidence_threshold: float | None = None,
                 applicable: Tensor | None = None, num_classes: int | None = None) -> None:
        self.target = target.long()
        self.clean_pred = clean_pred.long()
        self.targeted = targeted
        self.region = region
        self.omega = float(omega)
        self.confidence_threshold = confidence_threshold
        self.applicable = (applicable if applicable is not None
                           else torch.ones(target.shape[0], dtype=torch.bool, device=target.device))
        self.num_classes = num_classes

    # ---- restricted, moved and reconfigured copies
    def _copy(self) -> SegmentationObjective:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def subset(self, rows: Tensor) -> SegmentationObjective:
        new = self._copy()
        for name in self._tensor_names:
            value = getattr(self, name)
            if value is not None:
                setattr(new, name, value[rows.to(value.device)])
        return new

    def to(self, device: torch.device | str) -> SegmentationObjective:
        new = self._copy()
        for name in self._tensor_names:
            value = getattr(self, name)
            if value is not None:
                setattr(new, name, value.to(device))
        return new

    def configure(self, **params: Any) -> SegmentationObjective:
        """A copy with Metzen's omega (``background_weight``) and ``confidence_threshold`` changed."""
        new = self._copy()
        if params.get("background_weight") is not None:
            omega = float(params["background_weight"])
            if not 0.0 < omega < 1.0:
                raise AttackgenError(f"background_weight must lie in (0, 1), got {omega}")
            new.omega = omega
        if "confidence_threshold" in params and self.targeted:
            value = params["confidence_threshold"]
            new.confidence_threshold = None if value is None else float(value)
        return new

    def weights(self) -> Tensor:
        if self.region is None:
            return torch.ones(self.target.shape, device=self.target.device)
        omega = torch.tensor(self.omega, device=self.target.device)
        return torch.where(self.region, omega, 1.0 - omega)

    # ---- loss
    def loss(self, outputs: Tensor) -> Tensor:
        obj = self if self.target.device == outputs.device else self.to(outputs.device)
        logp = log_probs(outputs)
        valid = obj.target >= 0
        tgt = obj.target.clamp_min(0)
        nll = -logp.gather(1, tgt.unsqueeze(1)).squeeze(1)  # (N, H, W)
        weights = obj.weights() * valid
        if self.targeted:
            pixel = obj.pixel_loss(logp, tgt, nll)
            if self.confidence_threshold is not None:
                with torch.no_grad():
                    done = obj.done(logp, tgt, nll, self.confidence_threshold)
                weights = weights * (~done)
            return (weights * pixel).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)
        with torch.no_grad():
            still_right = logp.argmax(1) == tgt
        return -(weights * still_right * nll).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)

    def pixel_loss(self, logp: Tensor, tgt: Tensor, nll: Tensor) -> Tensor:
        """Targeted per-pixel loss (N, H, W): the cross-entropy towards the target label."""
        return nll

    def done(self, logp: Tensor, tgt: Tensor, nll: Tensor, tau: float) -> Tensor:
        """Pixels already at their target with probability above tau (they leave the loss, as in Metzen's code)."""
        return (logp.argmax(1) == tgt) & ((-nll).exp() > tau)

    # ---- success
    def evaluate(self, pred: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-input success and metrics from a predicted label map (N, H, W), on the objective's device."""
        raise NotImplementedError

    def _evaluate(self, outputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        pred = predicted(outputs)
        obj = self if self.target.device == pred.device else self.to(pred.device)
        success, metrics = obj.evaluate(pred)
        return success.to(pred.device), metrics

    def success(self, outputs: Tensor) -> Tensor:
        return self._evaluate(outputs)[0]

    def success_from_decisions(self, decisions: Tensor) -> Tensor:
        return self._evaluate(decisions)[0]

    def progress(self, outputs: Tensor) -> Tensor:
        """Per-input progress (float64, higher is closer; see ``score``) of outputs; 0 where not applicable."""
        success, metrics = self._evaluate(outputs)
        score = self.score(metrics).to(success.device).double()
        return torch.where(self.applicable.to(success.device), score, torch.zeros_like(score))

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        """Progress from ``evaluate``'s metrics: the figure the success threshold is set on."""
        raise NotImplementedError

    def metrics(self, clean_outputs: Tensor, adv_outputs: Tensor) -> dict[str, Tensor]:
        _, metrics = self._evaluate(adv_outputs)
        pred = predicted(adv_outputs)
        metrics["changed_pixels"] = (pred != self.clean_pred.to(pred.device)).flatten(1).float().mean(1)
        metrics["applicable"] = self.applicable.float()
        return {k: v.detach().float().cpu() for k, v in metrics.items()}

    def example_arrays(self, clean_outputs: Tensor, adv_outputs: Tensor) -> dict[str, np.ndarray]:
        """Per-input arrays for the report: clean and adversarial label maps and the target (uint8/int16)."""
        return {
            "clean_map": predicted(clean_outputs).cpu().numpy().astype(np.int16),
            "adv_map": predicted(adv_outputs).cpu().numpy().astype(np.int16),
            "target_map": self.target.cpu().numpy().astype(np.int16),
        }


class SegUntargeted(SegmentationObjective):
    consequence = "untargeted"
    _tensor_names = (*SegmentationObjective._tensor_names, "clean_miou")

    def __init__(self, reference: Tensor, clean_pred: Tensor, num_classes: int, max_miou_ratio: float = 0.5
                 ) -> None:
        valid = (reference >= 0) & (reference < num_classes)
        ref = torch.where(valid, reference.long(), torch.full_like(reference.long(), IGNORE))
        super().__init__(ref, clean_pred, targeted=False, num_classes=num_classes)
        self.max_miou_ratio = max_miou_ratio
        self.clean_miou = per_image_miou(self.clean_pred.cpu(), self.target.cpu(), num_classes).to(ref.device)

    def evaluate(self, pred: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        valid = self.target >= 0
        error = ((pred != self.target) & valid).flatten(1).sum(1).double() / valid.flatten(1).sum(1).clamp_min(1)
        miou = per_image_miou(pred.cpu(), self.target.cpu(), self.num_classes or int(pred.max()) + 1)
        ratio = (miou / self.clean_miou.cpu().clamp_min(1e-9)).to(pred.device)
        success = (ratio <= self.max_miou_ratio) & self.applicable
        return success, {"pixel_error": error, "miou": miou.to(pred.device), "miou_ratio": ratio}

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        return 1.0 - metrics["miou_ratio"]


class SegStatic(SegmentationObjective):
    consequence = "static_target"

    def __init__(self, target: Tensor, clean_pred: Tensor, min_agreement: float = 0.8,
                 confidence_threshold: float | None = 0.75, num_classes: int | None = None) -> None:
        super().__init__(target, clean_pred, targeted=True, confidence_threshold=confidence_threshold,
                         num_classes=num_classes)
        self.min_agreement = min_agreement

    def evaluate(self, pred: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        valid = self.target >= 0
        n_valid = valid.flatten(1).sum(1).double().clamp_min(1)
        agree = ((pred == self.target) & valid).flatten(1).sum(1).double() / n_valid
        clean_agree = ((self.clean_pred == self.target) & valid).flatten(1).sum(1).double() / n_valid
        return agree >= self.min_agreement, {"pixel_agreement": agree, "clean_agreement": clean_agree}

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        return metrics["pixel_agreement"]


class SegDynamic(SegmentationObjective):
    """Metzen's dynamic target: remove classes (nearest fill), or a pixel-wise class map / least likely.

    For remove_classes the loss on a removed pixel is -log(1 - p_removed) + ``fill_weight`` * CE(fill):
    leaving the removed classes is what success asks for, and the small pull towards the nearest-fill
    label keeps the output plausible. ``fill_weight`` = None gives Metzen's original loss (CE towards
    the fill label only). On the built-in street model at Linf 8/255 the original loss met the 90/90
    criterion on 41 % of the scenes, this one on 72 %, the same as an attack with no background term at
    all (docs/dense-tasks.md).
    """

    consequence = "dynamic_target"

    def __init__(self, target: Tensor, changed: Tensor, clean_pred: Tensor, remove: list[int] | None,
                 background_weight: float = 0.9999, confidence_threshold: float | None = 0.75,
                 min_removal: float = 0.9, min_preservation: float = 0.9, num_classes: int | None = None,
                 fill_weight: float | None = 0.1) -> None:
        super().__init__(target, clean_pred, targeted=True, region=changed, omega=background_weight,
                         confidence_threshold=confidence_threshold, applicable=changed.flatten(1).any(1),
                         num_classes=num_classes)
        self.remove = remove
        self.min_removal = min_removal
        self.min_preservation = min_preservation
        self.fill_weight = fill_weight

    def configure(self, **params: Any) -> SegmentationObjective:
        new = super().configure(**params)
        if "fill_weight" in params:
            value = params["fill_weight"]
            new.fill_weight = None if value is None else float(value)  # type: ignore[attr-defined]
        return new

    def _p_removed(self, logp: Tensor) -> Tensor:
        assert self.remove is not None
        return logp[:, self.remove].exp().sum(1).clamp(0.0, 1.0)

    def pixel_loss(self, logp: Tensor, tgt: Tensor, nll: Tensor) -> Tensor:
        if self.remove is None or self.fill_weight is None:
            return nll
        leave = -torch.log((1.0 - self._p_removed(logp)).clamp_min(1e-12))
        assert self.region is not None
        return torch.where(self.region, leave + self.fill_weight * nll, nll)

    def done(self, logp: Tensor, tgt: Tensor, nll: Tensor, tau: float) -> Tensor:
        kept = super().done(logp, tgt, nll, tau)
        if self.remove is None or self.fill_weight is None:
            return kept
        assert self.region is not None
        return kept & ~self.region  # removed pixels stay in the loss: -log(1 - p) fades by itself

    def evaluate(self, pred: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        changed = self.region
        assert changed is not None
        if self.remove is not None:
            done = ~torch.isin(pred, torch.tensor(self.remove, device=pred.device))
        else:
            done = pred == self.target
        n_changed = changed.flatten(1).sum(1).double()
        removal = (done & changed).flatten(1).sum(1).double() / n_changed.clamp_min(1)
        removal = torch.where(n_changed > 0, removal, torch.zeros_like(removal))
        bg = ~changed
        keep = ((pred == self.clean_pred) & bg).flatten(1).sum(1).double() / bg.flatten(1).sum(1).clamp_min(1)
        agree = (pred == self.target).flatten(1).double().mean(1)
        success = (removal >= self.min_removal) & (keep >= self.min_preservation) & self.applicable
        return success, {"removal_rate": removal, "background_preservation": keep, "target_agreement": agree,
                         "target_pixels": n_changed}

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        """The criterion further from its threshold: min(removal / min_removal, preservation / min_preservation)."""
        removal = metrics["removal_rate"] / max(self.min_removal, 1e-9)
        keep = metrics["background_preservation"] / max(self.min_preservation, 1e-9)
        return torch.minimum(removal, keep)


class SegConfusing(SegmentationObjective):
    consequence = "confusing_target"
    _tensor_names = (*SegmentationObjective._tensor_names, "moved", "original")

    def __init__(self, target: Tensor, moved: Tensor, clean_pred: Tensor, classes: list[int],
                 background_weight: float = 0.9999, confidence_threshold: float | None = 0.75,
                 min_iou: float = 0.5, num_classes: int | None = None) -> None:
        original = torch.isin(clean_pred, torch.tensor(classes, device=clean_pred.device))
        super().__init__(target, clean_pred, targeted=True, region=original | moved, omega=background_weight,
                         confidence_threshold=confidence_threshold, applicable=original.flatten(1).any(1),
                         num_classes=num_classes)
        self.moved = moved
        self.original = original
        self.classes = classes
        self.min_iou = min_iou

    def evaluate(self, pred: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        mask = torch.isin(pred, torch.tensor(self.classes, device=pred.device))
        iou_moved = _iou(mask, self.moved)
        iou_orig = _iou(mask, self.original)
        shift = _centroids(mask) - _centroids(self.original)
        dist = shift.norm(dim=1)
        target_dist = (_centroids(self.moved) - _centroids(self.original)).norm(dim=1)
        bg = ~(self.moved | self.original)
        keep = ((pred == self.clean_pred) & bg).flatten(1).sum(1).double() / bg.flatten(1).sum(1).clamp_min(1)
        success = (iou_moved >= self.min_iou) & (iou_moved > iou_orig) & self.applicable
        return success, {
            "iou_moved": iou_moved, "iou_original": iou_orig,
            "centroid_shift_x": torch.nan_to_num(shift[:, 1], nan=0.0),
            "centroid_shift_y": torch.nan_to_num(shift[:, 0], nan=0.0),
            "centroid_shift": torch.nan_to_num(dist, nan=0.0),
            "target_centroid_shift": torch.nan_to_num(target_dist, nan=0.0),
            "area_ratio": mask.flatten(1).sum(1).double() / self.original.flatten(1).sum(1).clamp_min(1),
            "background_preservation": keep,
        }

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        return metrics["iou_moved"]


# --------------------------------------------------------------------------- building from a spec


def resolve_classes(refs: list[Any], spec: Any, classes: list[str] | None, num_classes: int, field: str
                    ) -> list[int]:
    """Class references (names or indices) as output indices; unknown ones are an AttackgenError naming field."""
    names = list(getattr(spec, "classes", None) or classes or [])
    out = []
    for ref in refs:
        index: int | None
        if isinstance(ref, int):
            index = ref
        elif ref in names:
            index = names.index(ref)
        elif isinstance(ref, str) and ref.isdigit():
            index = int(ref)
        else:
            index = None
        if index is None or not 0 <= index < num_classes:
            known = ", ".join(f"{i}={n}" for i, n in enumerate(names[:num_classes])) or f"0..{num_classes - 1}"
            from taxonomy.errors import did_you_mean

            hint = ("; name the model's classes in the spec's 'classes' field (in output order) or use indices"
                    if not names and isinstance(ref, str) else "")
            raise AttackgenError(
                f"{field}: class {ref!r} is not a class the model knows{did_you_mean(ref, names)}; "
                f"the model has {num_classes} classes ({known}){hint}"
            )
        out.append(index)
    return out


def load_target_map(source: str, hw: tuple[int, int], num_classes: int, base_dir: str | Path | None = None,
                    field: str = "threat.consequence.target_map") -> Tensor:
    """A static target map (H, W) long, ignore = -1; from 'scene:<i>', a .npy or a .png file.

    'scene:<i>' is the ground-truth label map of built-in street scene i (test split), drawn at the
    output size: the same map whatever the victim, so runs on different models aim at one target.
    """
    if source.startswith("scene:"):
        from attackgen.models.zoo.scenes import reference_scene

        index_text = source.split(":", 1)[1].strip()
        if not index_text.isdigit():
            raise AttackgenError(f"{field}: {source!r}: expected 'scene:<index>' with a non-negative integer index")
        if hw[0] != hw[1] or hw[0] < 32:
            raise AttackgenError(
                f"{field}: 'scene:<index>' maps are square street scenes of at least 32x32; the model's output "
                f"is {hw[0]}x{hw[1]} (give a .npy or .png map at that size instead)"
            )
        array = reference_scene(int(index_text), size=hw[0]).labels
    else:
        path = Path(source)
        if not path.is_absolute() and base_dir is not None and not path.exists():
            path = Path(base_dir) / path
        if not path.exists():
            raise AttackgenError(f"{field}: file {source!r} not found (expected a .npy or .png label map, or "
                                 "'scene:<index>')")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as error:
                raise AttackgenError(f"{field}: {source} is not a readable .npy array ({error})") from None
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                if image.mode not in ("L", "P", "I", "I;16"):
                    raise AttackgenError(
                        f"{field}: {source} is a {image.mode} image; a label map PNG holds one class index "
                        "per pixel (mode L or P), not colours"
                    )
                array = np.array(image)
        else:
            raise AttackgenError(f"{field}: {source}: unknown file type {suffix!r}; use .npy or .png")
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
                raise AttackgenError(f"{field}: {source} holds non-integer values; a label map holds class indices")
            array = array.astype(np.int64)
        if array.dtype.kind not in "iub":
            raise AttackgenError(f"{field}: {source} has dtype {array.dtype}; expected integer class indices")
    array = np.asarray(array).astype(np.int64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.shape != tuple(hw):
        raise AttackgenError(
            f"{field}: the target map is {'x'.join(map(str, array.shape))} but the model's output is "
            f"{hw[0]}x{hw[1]} (HxW); give a map at the output size (resize with nearest-neighbour, never "
            "bilinear, so labels stay labels)"
        )
    ignore = np.isin(array, IGNORE_FILE_VALUES) | (array == IGNORE)
    bad = np.unique(array[~ignore & ((array < 0) | (array >= num_classes))])
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:8])
        raise AttackgenError(
            f"{field}: the target map holds unknown class(es) {shown}; the model has {num_classes} classes "
            f"(0..{num_classes - 1}); 255 or -1 mean 'ignore'"
        )
    array = np.where(ignore, IGNORE, array)
    if (array == IGNORE).all():
        raise AttackgenError(f"{field}: the target map is all 'ignore' (255/-1); nothing to aim at")
    return torch.from_numpy(array)


def build_segmentation_objective(
    spec: Any, labels: Any, clean_outputs: Tensor, *, classes: list[str] | None = None,
    base_dir: str | Path | None = None, **params: Any,
) -> SegmentationObjective:
    """The objective of ``spec`` (task segmentation) for one batch with ground truth ``labels``."""
    from taxonomy.axes import ConfusingTarget, DynamicTarget, StaticTarget, Untargeted

    clean_outputs = _check_logits(clean_outputs)
    n, num_classes, h, w = clean_outputs.shape
    clean_pred = clean_outputs.argmax(1)
    consequence = spec.threat.consequence
    field = "threat.consequence"
    keep = {k: params[k] for k in ("confidence_threshold", "min_agreement", "min_removal", "min_preservation",
                                   "min_iou", "max_miou_ratio") if k in params}
    if isinstance(consequence, Untargeted):
        if consequence.reference == "ground_truth":
            if not isinstance(labels, Tensor) or tuple(labels.shape) != (n, h, w):
                got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
                raise AttackgenError(
                    f"{field}.reference: ground_truth needs (N, H, W) label maps matching the model output "
                    f"({n}, {h}, {w}); the data has {got} (use reference: clean_prediction for unlabeled data)"
                )
            reference = labels.to(clean_pred.device).long()
        else:
            reference = clean_pred
        keep.pop("confidence_threshold", None)
        return SegUntargeted(reference, clean_pred, num_classes, **keep)
    if isinstance(consequence, StaticTarget):
        if consequence.target_map is None:
            raise AttackgenError(
                f"{field}: a static target for segmentation needs target_map (a .npy/.png label map at the "
                "output size, or 'scene:<index>'); target_class and target_boxes are for classification "
                "and detection"
            )
        target = load_target_map(consequence.target_map, (h, w), num_classes, base_dir=base_dir,
                                 field=f"{field}.target_map")
        target = target.to(clean_pred.device).unsqueeze(0).expand(n, h, w).contiguous()
        return SegStatic(target, clean_pred, num_classes=num_classes, **keep)
    if isinstance(consequence, DynamicTarget):
        weight = params.get("background_weight", consequence.background_weight)
        common = {k: v for k, v in params.items() if k in ("confidence_threshold", "min_removal", "min_preservation",
                                                             "fill_weight")}
        if consequence.rule == "remove_classes":
            remove = resolve_classes(consequence.remove_classes, spec, classes, num_classes,
                                     f"{field}.remove_classes")
            if len(set(remove)) == num_classes:
                raise AttackgenError(f"{field}.remove_classes: removing every class leaves no label to fill with")
            changed = torch.isin(clean_pred, torch.tensor(remove, device=clean_pred.device))
            target = nearest_fill(clean_pred, changed)
            return SegDynamic(target, changed, clean_pred, remove, background_weight=weight,
                              num_classes=num_classes, **common)
        if consequence.rule == "class_map":
            sources = resolve_classes(list(consequence.class_map), spec, classes, num_classes,
                                      f"{field}.class_map")
            targets = resolve_classes(list(consequence.class_map.values()), spec, classes, num_classes,
                                      f"{field}.class_map")
            target = clean_pred.clone()
            for s, t in zip(sources, targets, strict=False):
                target[clean_pred == s] = t
        else:  # least_likely, pixel-wise
            target = clean_outputs.argmin(1)
        changed = target != clean_pred
        return SegDynamic(target, changed, clean_pred, None, background_weight=weight, num_classes=num_classes,
                          **common)
    if isinstance(consequence, ConfusingTarget):
        cls = resolve_classes(consequence.classes, spec, classes, num_classes, f"{field}.classes")
        target, moved = move_objects(clean_pred, cls, (consequence.shift[0], consequence.shift[1]), consequence.scale)
        weight = params.get("background_weight", 0.9999)
        common = {k: v for k, v in keep.items() if k in ("confidence_threshold", "min_iou")}
        return SegConfusing(target, moved, clean_pred, cls, background_weight=weight, num_classes=num_classes,
                            **common)
    raise AttackgenError(
        f"{field}.kind: {consequence.kind!r} is a detection consequence; segmentation supports untargeted, "
        "static_target, dynamic_target and confusing_target"
    )


def _check_logits(outputs: Any) -> Tensor:
    from attackgen.models.adapters import check_segmentation_output

    n = outputs.shape[0] if isinstance(outputs, Tensor) else len(outputs) if isinstance(outputs, list) else 0
    return check_segmentation_output(outputs, n, where="segmentation model output")


def _register() -> None:
    from attackgen.run.objectives.classification import register_objective

    register_objective("segmentation", build_segmentation_objective)


_register()
