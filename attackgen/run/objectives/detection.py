"""Detection objectives: vanishing, fabrication, mislabelling, untargeted, static and confusing boxes.

Outputs are torchvision-format detections (a list of per-image dicts with ``boxes`` xyxy, ``scores``,
``labels``; see attackgen.models.adapters), carrying the detector's ``score_threshold``: a detection counts
when its score is at or above it. Losses act on the scores of the candidates the detector returns,
including those below the threshold (TOG, Chow et al. 2020, attacks the candidates before
thresholding), so they stay differentiable; box matching uses IoU computed without gradient.

- vanishing (classes O, empty = every class): loss sum -log(1 - s) over O candidates scoring above
  half the threshold. Success: at most ``1 - min_vanish`` (80% gone) of the clean O detections remain
  (counted at the threshold). Metrics: clean/adversarial counts, vanish rate (clean O detections with
  no adversarial O detection at IoU >= 0.5), preservation of the other classes' detections.
  A dynamic target with remove_classes on a detector is vanishing of those classes.
- fabrication (classes F, count k): loss -log s over the top (clean F count + k) F candidates.
  Success: at least k more F detections than on the clean input.
- mislabel (from_classes, to_class t): for each clean detection of a from-class, push up the t
  candidate that best covers it and pull its box onto the clean box (L1), and push down candidates
  of the original class there.
  Success: >= ``min_mislabel`` (80%) of those boxes are detected as t (IoU >= 0.5) and no longer as
  their own class.
- untargeted (reference ground truth or clean prediction): suppress the candidates that match a
  reference object. Success: at least ``min_lost`` (50%) of the reference objects found on the clean
  input are lost (missed or mislabelled) on the adversarial one. Metrics: recall and AP@0.5 per image.
- static (target_boxes) and confusing (O boxes shifted/scaled, others kept): boxes to produce; loss
  pulls the best overlapping candidate of the right class up and pushes every other candidate above
  half the threshold down. Success: >= ``min_matched`` (80%) of the target boxes found at IoU >= 0.5
  with their class, and no more than ``max_extra`` (0) other detections.
Inputs where there is nothing to act on (vanishing or mislabel with no clean detection of the class)
are not applicable (rule C4): never a success, ``applicable`` = 0 in the metrics.

Size (about 640 lines): five consequences share the matching (IoU), the candidate handling and the
builder; each objective class is under 60 lines, and splitting them would scatter the shared helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attackgen.models.adapters import DetectionOutput, check_detection_output
from attackgen.run.objectives.base import Capability, Objective
from taxonomy.errors import AttackgenError

EPS = 1e-6

# --------------------------------------------------------------------------- box utilities


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(A, B) IoU of xyxy boxes."""
    if a.numel() == 0 or b.numel() == 0:
        return torch.zeros(a.shape[0], b.shape[0], device=a.device if a.numel() else b.device)
    b = b.to(a.device, a.dtype)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp_min(EPS)


def kept(item: dict[str, Tensor], threshold: float) -> dict[str, Tensor]:
    """The detections of one image at or above the threshold (all of them when there are no scores)."""
    if "scores" not in item:
        return item
    keep = item["scores"] >= threshold
    return {k: v[keep] for k, v in item.items()}


def match(dets: dict[str, Tensor], refs: dict[str, Tensor], iou: float = 0.5, same_label: bool = True
          ) -> Tensor:
    """Bool per reference box: matched by a distinct detection (greedy by score) with IoU >= iou."""
    n_ref = refs["boxes"].shape[0]
    found = torch.zeros(n_ref, dtype=torch.bool)
    if n_ref == 0 or dets["boxes"].shape[0] == 0:
        return found
    order = torch.argsort(dets["scores"].detach(), descending=True) if "scores" in dets else torch.arange(
        dets["boxes"].shape[0])
    ious = box_iou(dets["boxes"].detach().float(), refs["boxes"].float()).cpu()
    d_lab = dets["labels"].cpu()
    r_lab = refs["labels"].cpu()
    for j in order.tolist():
        cand = ious[j].clone()
        if same_label:
            cand[r_lab != d_lab[j]] = -1
        cand[found] = -1
        best = int(cand.argmax())
        if cand[best] >= iou:
            found[best] = True
    return found


def average_precision(outputs: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]], cls: int,
                      iou: float = 0.5) -> float:
    """VOC-style all-point AP of one class over a data set (all candidates, ranked by score)."""
    records: list[tuple[float, bool]] = []
    n_gt = 0
    for det, gt in zip(outputs, targets, strict=False):
        g = gt["boxes"][gt["labels"] == cls].float()
        n_gt += g.shape[0]
        sel = det["labels"] == cls
        boxes, scores = det["boxes"][sel].detach().float(), det["scores"][sel].detach()
        used = torch.zeros(g.shape[0], dtype=torch.bool)
        ious = box_iou(boxes, g).cpu() if g.shape[0] else torch.zeros(boxes.shape[0], 0)
        for j in torch.argsort(scores, descending=True).tolist():
            hit = False
            if g.shape[0]:
                cand = ious[j].clone()
                cand[used] = -1
                best = int(cand.argmax())
                if cand[best] >= iou:
                    used[best] = True
                    hit = True
            records.append((float(scores[j]), hit))
    if n_gt == 0:
        return float("nan")
    records.sort(key=lambda r: -r[0])
    hits = np.array([r[1] for r in records], dtype=float)
    tp = np.cumsum(hits)
    fp = np.cumsum(1 - hits)
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1e-9)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def detection_counts(outputs: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]],
                     threshold: float, iou: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) at a score threshold, same-label matching."""
    tp = fp = fn = 0
    for det, gt in zip(outputs, targets, strict=False):
        d = kept(det, threshold)
        found = match(d, gt, iou)
        tp += int(found.sum())
        fn += int((~found).sum())
        fp += int(d["boxes"].shape[0]) - int(found.sum())
    return tp, fp, fn


def image_ap(det: dict[str, Tensor], ref: dict[str, Tensor], iou: float = 0.5) -> float:
    """Mean over the reference's classes of AP@iou on one image (1.0 for an empty reference)."""
    classes = sorted(set(ref["labels"].tolist()))
    if not classes:
        return 1.0
    return float(np.mean([average_precision([det], [ref], c, iou) for c in classes]))


def _as_detections(outputs: Any, n: int | None = None) -> DetectionOutput:
    if isinstance(outputs, DetectionOutput):
        return outputs
    return check_detection_output(outputs, len(outputs) if n is None and isinstance(outputs, list) else (n or 0),
                                  where="detector output")


def decisions_of(outputs: Any) -> DetectionOutput:
    """What a label-only detector reveals: the boxes and labels it outputs at its own threshold, with no
    confidence (every score reads 1), so a decision-based attack sees exactly what a user of the system sees."""
    dets = _as_detections(outputs).kept()
    return dets._like([{"boxes": d["boxes"], "labels": d["labels"], "scores": torch.ones_like(d["scores"])}
                       for d in dets])


def _empty_like(device: torch.device | None = None) -> dict[str, Tensor]:
    return {"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.long, device=device)}


def _select(item: dict[str, Tensor], classes: Sequence[int] | None, invert: bool = False) -> dict[str, Tensor]:
    if classes is None:
        sel = torch.ones(item["labels"].shape[0], dtype=torch.bool, device=item["labels"].device)
    else:
        sel = torch.isin(item["labels"], torch.tensor(list(classes), device=item["labels"].device))
    if invert:
        sel = ~sel
    return {k: v[sel] for k, v in item.items()}


def _detach(item: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in item.items()}


# --------------------------------------------------------------------------- objectives


class DetectionObjective(Objective):
    """Per-image reference detections and a score threshold; subclasses define loss and predicate."""

    capabilities = frozenset({Capability.PROGRESS})
    consequence = "detection"
    targets: list[dict[str, Tensor]] | None = None  # static box targets (DetBoxTargets), for the report
    applicable: Tensor  # always set: the images whose consequence can apply

    def __init__(self, clean: DetectionOutput, threshold: float | None = None, **params: Any) -> None:
        self.threshold = float(threshold if threshold is not None else clean.score_threshold)
        self.clean = [_detach(kept(item, self.threshold)) for item in clean]
        self.params = params
        self.applicable = torch.ones(len(self.clean), dtype=torch.bool)

    # per-image lists and tensors that subset() restricts
    _lists: tuple[str, ...] = ("clean",)

    def subset(self, rows: Tensor) -> DetectionObjective:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        index = rows.tolist()
        for name in self._lists:
            setattr(new, name, [getattr(self, name)[i] for i in index])
        new.applicable = self.applicable[rows.cpu()]
        return new

    def _threshold(self, outputs: Any) -> float:
        return float(getattr(outputs, "score_threshold", self.threshold))

    def loss(self, outputs: Any) -> Tensor:
        dets = _as_detections(outputs)
        if len(dets) != len(self.clean):
            raise AttackgenError(f"detector output: {len(dets)} images, objective holds {len(self.clean)}")
        return torch.stack([self.image_loss(i, item) for i, item in enumerate(dets)])

    def image_loss(self, i: int, item: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def evaluate(self, dets: Sequence[dict[str, Tensor]], threshold: float) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def success(self, outputs: Any) -> Tensor:
        dets = _as_detections(outputs)
        device = dets[0]["boxes"].device if len(dets) else torch.device("cpu")
        return self.evaluate(dets, self._threshold(dets))[0].to(device)

    def success_from_decisions(self, decisions: Any) -> Tensor:
        return self.evaluate(list(decisions), self.threshold)[0]

    def progress(self, outputs: Any) -> Tensor:
        """Per-input progress (float64, higher is closer; see ``score``); 0 where not applicable."""
        dets = _as_detections(outputs)
        device = dets[0]["boxes"].device if len(dets) else torch.device("cpu")
        _, metrics = self.evaluate(dets, self._threshold(dets))
        score = self.score(metrics).double().cpu()
        return torch.where(self.applicable.cpu(), score, torch.zeros_like(score)).to(device)

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        """Progress from ``evaluate``'s metrics: the figure the success threshold is set on."""
        raise NotImplementedError

    def metrics(self, clean_outputs: Any, adv_outputs: Any) -> dict[str, Tensor]:
        dets = _as_detections(adv_outputs)
        _, metrics = self.evaluate(dets, self._threshold(dets))
        metrics["applicable"] = self.applicable.float()
        return {k: v.detach().float().cpu() for k, v in metrics.items()}

    @staticmethod
    def _zero(item: dict[str, Tensor]) -> Tensor:
        return item["scores"].sum() * 0.0

    def example_arrays(self, clean_outputs: Any, adv_outputs: Any) -> dict[str, np.ndarray]:
        """Per-input detections for the report: (N, MAX_SHOWN, 6) rows x0, y0, x1, y1, score, label (NaN pad)."""
        clean = _as_detections(clean_outputs)
        adv = _as_detections(adv_outputs)
        arrays = {"clean_boxes": _pad([kept(d, self._threshold(clean)) for d in clean]),
                  "adv_boxes": _pad([kept(d, self._threshold(adv)) for d in adv]),
                  "score_threshold": np.full(len(clean), self._threshold(adv), np.float32)}
        if self.targets is not None:
            arrays["target_boxes"] = _pad(self.targets)
        return arrays


MAX_SHOWN = 16


def _pad(items: Sequence[dict[str, Tensor]]) -> np.ndarray:
    out = np.full((len(items), MAX_SHOWN, 6), np.nan, np.float32)
    for i, item in enumerate(items):
        k = min(item["boxes"].shape[0], MAX_SHOWN)
        if not k:
            continue
        out[i, :k, :4] = item["boxes"][:k].detach().float().cpu().numpy()
        out[i, :k, 4] = item["scores"][:k].detach().float().cpu().numpy() if "scores" in item else 1.0
        out[i, :k, 5] = item["labels"][:k].cpu().numpy()
    return out


def _suppress(scores: Tensor) -> Tensor:
    return -torch.log((1 - scores).clamp_min(EPS)).sum()


def _promote(scores: Tensor) -> Tensor:
    return -torch.log(scores.clamp_min(EPS)).sum()


class DetVanishing(DetectionObjective):
    consequence = "vanishing"

    def __init__(self, clean: DetectionOutput, classes: list[int] | None, min_vanish: float = 0.8,
                 threshold: float | None = None, **params: Any) -> None:
        super().__init__(clean, threshold, **params)
        self.classes = classes
        self.min_vanish = min_vanish
        self.applicable = torch.tensor([_select(c, classes)["boxes"].shape[0] > 0 for c in self.clean])

    def image_loss(self, i: int, item: dict[str, Tensor]) -> Tensor:
        sel = _select(item, self.classes)
        scores = sel["scores"][sel["scores"] > 0.5 * self.threshold]
        return _suppress(scores) if scores.numel() else self._zero(item)

    def evaluate(self, dets: Sequence[dict[str, Tensor]], threshold: float) -> tuple[Tensor, dict[str, Tensor]]:
        clean_n, adv_n, vanish, others = [], [], [], []
        for clean, det in zip(self.clean, dets, strict=False):
            d = kept(det, threshold)
            c_sel, d_sel = _select(clean, self.classes), _select(d, self.classes)
            clean_n.append(c_sel["boxes"].shape[0])
            adv_n.append(d_sel["boxes"].shape[0])
            found = match(d_sel, c_sel, 0.5)
            vanish.append(1.0 - float(found.float().mean()) if found.numel() else 0.0)
            c_other = _select(clean, self.classes, invert=True)
            kept_other = match(_select(d, self.classes, invert=True), c_other, 0.5)
            others.append(float(kept_other.float().mean()) if kept_other.numel() else 1.0)
        clean_t = torch.tensor(clean_n, dtype=torch.float64)
        adv_t = torch.tensor(adv_n, dtype=torch.float64)
        allowed = torch.floor((1.0 - self.min_vanish) * clean_t + 1e-9)
        success = (adv_t <= allowed) & self.applicable
        return success, {"clean_detections": clean_t, "adversarial_detections": adv_t,
                         "vanish_rate": torch.tensor(vanish, dtype=torch.float64),
                         "other_classes_kept": torch.tensor(others, dtype=torch.float64)}

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        """Share of the clean detections of the classes no longer counted (1 when none is left)."""
        clean, adv = metrics["clean_detections"], metrics["adversarial_detections"]
        return (1.0 - adv / clean.clamp_min(1)).clamp_min(0.0)


class DetFabrication(DetectionObjective):
    consequence = "fabrication"

    def __init__(self, clean: DetectionOutput, classes: list[int], count: int = 1,
                 threshold: float | None = None, **params: Any) -> None:
        super().__init__(clean, threshold, **params)
        self.classes = classes
        self.count = count

    def image_loss(self, i: int, item: dict[str, Tensor]) -> Tensor:
        sel = _select(item, self.classes)
        want = _select(self.clean[i], self.classes)["boxes"].shape[0] + self.count
        if sel["scores"].numel() == 0:
            return self._zero(item)
        top = sel["scores"].topk(min(want, sel["scores"].numel())).values
        return _promote(top)

    def evaluate(self, dets: Sequence[dict[str, Tensor]], threshold: float) -> tuple[Tensor, dict[str, Tensor]]:
        clean_n = torch.tensor([_select(c, self.classes)["boxes"].shape[0] for c in self.clean], dtype=torch.float64)
        adv_n = torch.tensor([_select(kept(d, threshold), self.classes)["boxes"].shape[0] for d in dets],
                             dtype=torch.float64)
        success = (adv_n >= clean_n + self.count) & self.applicable
        return success, {"clean_detections": clean_n, "adversarial_detections": adv_n,
                         "fabricated": (adv_n - clean_n).clamp_min(0)}

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        return (metrics["fabricated"] / max(self.count, 1)).clamp_max(1.0)


class DetMislabel(DetectionObjective):
    consequence = "mislabel"

    def __init__(self, clean: DetectionOutput, from_classes: list[int] | None, to_class: int,
                 min_mislabel: float = 0.8, threshold: float | None = None, **params: Any) -> None:
        super().__init__(clean, threshold, **params)
        self.to_class = to_class
        self.from_classes = from_classes
        self.sources = []
        for c in self.clean:
            sel = _select(c, from_classes)
            sel = {k: v[sel["labels"] != to_class] for k, v in sel.items()}
            self.sources.append(sel)
        self.applicable = torch.tensor([s["boxes"].shape[0] > 0 for s in self.sources])
        self.min_mislabel = min_mislabel

    _lists = ("clean", "sources")

    def image_loss(self, i: int, item: dict[str, Tensor]) -> Tensor:
        src = self.sources[i]
        if src["boxes"].shape[0] == 0 or item["boxes"].shape[0] == 0:
            return self._zero(item)
        ious = box_iou(item["boxes"].detach(), src["boxes"])  # (K, S)
        total = self._zero(item)
        to = item["labels"] == self.to_class
        for s in range(src["boxes"].shape[0]):
            if to.any():  # the new-class candidate that best covers the box: score up, box onto it
                rank = torch.where(to, ious[:, s] + 0.1 * item["scores"].detach(), torch.full_like(ious[:, s], -1))
                j = int(rank.argmax())
                total = total - torch.log(item["scores"][j].clamp_min(EPS))
                total = total + (item["boxes"][j] - src["boxes"][s].to(item["boxes"])).abs().sum() / 16.0
            own = ((ious[:, s] >= 0.3) & (item["labels"] == src["labels"][s])
                   & (item["scores"] > 0.5 * self.threshold))
            if own.any():
                total = total + _suppress(item["scores"][own])
        return total

    def evaluate(self, dets: Sequence[dict[str, Tensor]], threshold: float) -> tuple[Tensor, dict[str, Tensor]]:
        rates = []
        for src, det in zip(self.sources, dets, strict=False):
            if src["boxes"].shape[0] == 0:
                rates.append(0.0)
                continue
            d = kept(det, threshold)
            relabelled = match({**d, "labels": d["labels"]}, {**src, "labels": torch.full_like(src["labels"],
                                                                                               self.to_class)}, 0.5)
            still = match(d, src, 0.5)
            rates.append(float((relabelled & ~still).float().mean()))
        rate = torch.tensor(rates, dtype=torch.float64)
        return (rate >= self.min_mislabel) & self.applicable, {"mislabel_rate": rate}

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        return metrics["mislabel_rate"]


class DetUntargeted(DetectionObjective):
    consequence = "untargeted"

    def __init__(self, clean: DetectionOutput, reference: list[dict[str, Tensor]] | None, min_lost: float = 0.5,
                 threshold: float | None = None, **params: Any) -> None:
        super().__init__(clean, threshold, **params)
        self.reference = [_detach(r) for r in reference] if reference is not None else self.clean
        self.found_clean = [match(c, r, 0.5) for c, r in zip(self.clean, self.reference, strict=False)]
        self.applicable = torch.tensor([bool(f.any()) for f in self.found_clean])
        self.min_lost = min_lost

    _lists = ("clean", "reference", "found_clean")

    def image_loss(self, i: int, item: dict[str, Tensor]) -> Tensor:
        ref = self.reference[i]
        if ref["boxes"].shape[0] == 0 or item["boxes"].shape[0] == 0:
            return self._zero(item)
        ious = box_iou(item["boxes"].detach(), ref["boxes"])
        same = item["labels"].view(-1, 1) == ref["labels"].to(item["labels"].device).view(1, -1)
        hit = ((ious >= 0.3) & same).any(1) & (item["scores"] > 0.5 * self.threshold)
        return _suppress(item["scores"][hit]) if hit.any() else self._zero(item)

    def evaluate(self, dets: Sequence[dict[str, Tensor]], threshold: float) -> tuple[Tensor, dict[str, Tensor]]:
        lost, recall, ap = [], [], []
        for ref, found_clean, det in zip(self.reference, self.found_clean, dets, strict=False):
            d = kept(det, threshold)
            found = match(d, ref, 0.5)
            n = int(found_clean.sum())
            lost.append(float((found_clean & ~found).sum()) / n if n else 0.0)
            recall.append(float(found.float().mean()) if found.numel() else 1.0)
            ap.append(image_ap(det, ref) if "scores" in det else float("nan"))
        lost_t = torch.tensor(lost, dtype=torch.float64)
        return (lost_t >= self.min_lost) & self.applicable, {
            "lost_fraction": lost_t, "recall": torch.tensor(recall, dtype=torch.float64),
            "ap50": torch.tensor(ap, dtype=torch.float64)}

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        return metrics["lost_fraction"]


class DetBoxTargets(DetectionObjective):
    """Produce given boxes (static target, or the clean boxes moved: confusing target) and nothing else."""

    consequence = "static_target"

    def __init__(self, clean: DetectionOutput, targets: list[dict[str, Tensor]], min_matched: float = 0.8,
                 max_extra: int = 0, threshold: float | None = None, moved: list[Tensor] | None = None,
                 **params: Any) -> None:
        super().__init__(clean, threshold, **params)
        self.targets: list[dict[str, Tensor]] = targets
        self.min_matched = min_matched
        self.max_extra = max_extra
        # which target boxes are the moved ones (confusing); all of them for a static target
        self.moved = moved if moved is not None else [torch.ones(t["boxes"].shape[0], dtype=torch.bool)
                                                      for t in targets]
        self.applicable = torch.tensor([bool(m.any()) for m in self.moved])

    _lists = ("clean", "targets", "moved")

    def image_loss(self, i: int, item: dict[str, Tensor]) -> Tensor:
        tgt = self.targets[i]
        total = self._zero(item)
        if item["boxes"].shape[0] == 0:
            return total
        ious = box_iou(item["boxes"].detach(), tgt["boxes"]) if tgt["boxes"].shape[0] else None
        claimed = torch.zeros(item["boxes"].shape[0], dtype=torch.bool, device=item["boxes"].device)
        for t in range(tgt["boxes"].shape[0]):
            same = item["labels"] == tgt["labels"][t]
            if not same.any():
                continue
            assert ious is not None
            # the candidate of the right class that best combines score and overlap takes this box
            rank = torch.where(same, ious[:, t] + 0.1 * item["scores"].detach(), torch.full_like(ious[:, t], -1))
            j = int(rank.argmax())
            claimed[j] = True
            total = total - torch.log(item["scores"][j].clamp_min(EPS))
            total = total + (item["boxes"][j] - tgt["boxes"][t].to(item["boxes"])).abs().sum() / 16.0
        others = ~claimed & (item["scores"] > 0.5 * self.threshold)
        if others.any():
            total = total + _suppress(item["scores"][others])
        return total

    def evaluate(self, dets: Sequence[dict[str, Tensor]], threshold: float) -> tuple[Tensor, dict[str, Tensor]]:
        matched, extra, moved_rate = [], [], []
        for tgt, moved, det in zip(self.targets, self.moved, dets, strict=False):
            d = kept(det, threshold)
            found = match(d, tgt, 0.5)
            matched.append(float(found.float().mean()) if found.numel() else 1.0)
            moved_rate.append(float(found[moved].float().mean()) if moved.any() else 0.0)
            extra.append(float(d["boxes"].shape[0] - int(found.sum())))
        matched_t = torch.tensor(matched, dtype=torch.float64)
        moved_t = torch.tensor(moved_rate, dtype=torch.float64)
        extra_t = torch.tensor(extra, dtype=torch.float64)
        success = (matched_t >= self.min_matched) & (moved_t >= self.min_matched) & (extra_t <= self.max_extra)
        return success & self.applicable, {"target_boxes_matched": matched_t, "moved_boxes_matched": moved_t,
                                           "extra_detections": extra_t}

    def score(self, metrics: dict[str, Tensor]) -> Tensor:
        """Boxes matched (the lower of all and moved), shrunk by every extra detection."""
        matched = torch.minimum(metrics["target_boxes_matched"], metrics["moved_boxes_matched"])
        return matched / (1.0 + (metrics["extra_detections"] - self.max_extra).clamp_min(0))


# --------------------------------------------------------------------------- building from a spec


def move_boxes(boxes: Tensor, shift: tuple[int, int], scale: float, hw: tuple[int, int] | None = None) -> Tensor:
    """Boxes shifted by (dx, dy) and scaled about their centres; clipped to the image when hw is given."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + shift[0]
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + shift[1]
    w = (boxes[:, 2] - boxes[:, 0]) * scale
    h = (boxes[:, 3] - boxes[:, 1]) * scale
    out = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    if hw is not None:
        out[:, 0::2] = out[:, 0::2].clamp(0, hw[1])
        out[:, 1::2] = out[:, 1::2].clamp(0, hw[0])
    return out


def build_detection_objective(spec: Any, labels: Any, clean_outputs: Any, *, classes: list[str] | None = None,
                              num_classes: int | None = None, image_hw: tuple[int, int] | None = None,
                              **params: Any) -> DetectionObjective:
    """The objective of ``spec`` (task detection) for one batch; ``labels`` are per-image box dicts."""
    from attackgen.run.objectives.segmentation import resolve_classes
    from taxonomy.axes import (
        ConfusingTarget,
        DynamicTarget,
        Fabrication,
        Mislabel,
        StaticTarget,
        Untargeted,
        Vanishing,
    )

    n = len(clean_outputs) if isinstance(clean_outputs, list) else (
        clean_outputs.shape[0] if isinstance(clean_outputs, Tensor) else 0)
    clean = check_detection_output(clean_outputs, n, where="detector output on the clean inputs")
    names = list(getattr(spec, "classes", None) or classes or clean.classes or [])
    if clean.classes is not None and getattr(spec, "classes", None) and list(spec.classes) != clean.classes:
        raise AttackgenError(
            f"classes: the spec lists {list(spec.classes)} but the detector's label indices refer to "
            f"{clean.classes}; use the detector's list (or leave 'classes' out)"
        )
    # without class names the detector's label set is unknown: any index is taken as given
    k = num_classes or (len(names) if names else 2**31)
    # A detection counts at the detector's own operating point unless the caller overrides it.
    threshold = params.get("score_threshold") or clean.score_threshold
    consequence = spec.threat.consequence
    field = "threat.consequence"

    def cls(refs: list[Any], where: str) -> list[int]:
        return resolve_classes(refs, spec, names, k, f"{field}.{where}")

    if isinstance(consequence, Vanishing):
        chosen = cls(consequence.classes, "classes") if consequence.classes else None
        return DetVanishing(clean, chosen, threshold=threshold, **_pick(params, "min_vanish"))
    if isinstance(consequence, DynamicTarget):
        if consequence.rule != "remove_classes":
            raise AttackgenError(
                f"{field}.rule: a detector supports dynamic targets with rule remove_classes (vanishing); "
                f"{consequence.rule!r} is for classification and segmentation"
            )
        return DetVanishing(clean, cls(consequence.remove_classes, "remove_classes"), threshold=threshold,
                            **_pick(params, "min_vanish"))
    if isinstance(consequence, Fabrication):
        return DetFabrication(clean, cls(consequence.classes, "classes"), consequence.count, threshold=threshold)
    if isinstance(consequence, Mislabel):
        sources = cls(consequence.from_classes, "from_classes") if consequence.from_classes else None
        to = cls([consequence.to_class], "to_class")[0]
        return DetMislabel(clean, sources, to, threshold=threshold, **_pick(params, "min_mislabel"))
    if isinstance(consequence, Untargeted):
        reference = None
        if consequence.reference == "ground_truth":
            if not isinstance(labels, list) or len(labels) != n or not all(
                    isinstance(t, dict) and "boxes" in t and "labels" in t for t in labels):
                raise AttackgenError(
                    f"{field}.reference: ground_truth needs per-image dicts with boxes and labels "
                    "(use reference: clean_prediction for unlabeled data)"
                )
            reference = [{"boxes": t["boxes"].float(), "labels": t["labels"].long()} for t in labels]
        return DetUntargeted(clean, reference, threshold=threshold, **_pick(params, "min_lost"))
    if isinstance(consequence, StaticTarget):
        if consequence.target_boxes is None:
            raise AttackgenError(
                f"{field}: a static target for detection needs target_boxes (the boxes the detector must "
                "output); target_map is for segmentation, target_class for classification"
            )
        boxes = torch.tensor([[b.x0, b.y0, b.x1, b.y1] for b in consequence.target_boxes], dtype=torch.float32)
        labs = torch.tensor(cls([b.label for b in consequence.target_boxes], "target_boxes.label"))
        if image_hw is not None:
            h, w = image_hw
            outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h)
            if bool(outside.any()):
                raise AttackgenError(
                    f"{field}.target_boxes: box {int(outside.nonzero()[0])} lies outside the {w}x{h} input "
                    "(boxes are in input pixels, xyxy)"
                )
        targets = [{"boxes": boxes, "labels": labs} for _ in range(n)]
        return DetBoxTargets(clean, targets, threshold=threshold, **_pick(params, "min_matched", "max_extra"))
    if isinstance(consequence, ConfusingTarget):
        chosen = cls(consequence.classes, "classes")
        targets, moved = [], []
        base = DetectionObjective(clean, threshold)
        for c in base.clean:
            sel = torch.isin(c["labels"], torch.tensor(chosen, device=c["labels"].device))
            b = c["boxes"].clone()
            if sel.any():
                shift = (consequence.shift[0], consequence.shift[1])
                b[sel] = move_boxes(c["boxes"][sel], shift, consequence.scale, image_hw)
            targets.append({"boxes": b, "labels": c["labels"]})
            moved.append(sel.cpu())
        return DetBoxTargets(clean, targets, threshold=threshold, moved=moved,
                             **_pick(params, "min_matched", "max_extra"))
    raise AttackgenError(f"{field}.kind: {consequence.kind!r} is not defined for detection")


def _pick(params: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: params[k] for k in names if k in params}


def _register() -> None:
    from attackgen.run.objectives.classification import register_objective

    register_objective("detection", build_detection_objective)


_register()
