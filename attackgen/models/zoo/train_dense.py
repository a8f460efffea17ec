"""Retrain the built-in street models and rewrite their weights and weights/dense_models.json.

    python -m attackgen.models.zoo.train_dense [seg] [det] [--quick]

``seg`` and ``det`` may run as two processes side by side (each merges its entry into the JSON file).

``--quick`` trains for two epochs on 400 scenes into a temporary folder (a smoke test; the shipped
weights are left alone). ``--evaluate`` only re-measures the test figures of the shipped weights.

Seeded (torch, the scenes and the shuffling), CPU, two threads: the same machine gives the same
weights. Training scenes are generated on the fly (the first 3000 scenes of the street-scenes train split, with
horizontal flips); the operating score threshold of the detector is chosen on the 'val' split; the
figures written to dense_models.json (mIoU per class, AP@0.5 per class) are measured on the 'test'
split after the float16 round trip, i.e. on the weights that ship.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attackgen.models.zoo.dense_models import (
    DET_WEIGHTS,
    SEG_WEIGHTS,
    WEIGHTS_DIR,
    ChannelNormalize,
    StreetDetector,
    StreetSegNet,
    _load,
    save_half,
)
from attackgen.models.zoo.scenes import CLASSES, OBJECT_CLASSES, load_street_scenes
from attackgen.run.objectives.detection import average_precision, detection_counts
from attackgen.run.objectives.segmentation import confusion_matrix, iou_from_confusion

SEED = 0
SEG_EPOCHS = 8
DET_EPOCHS = 14
TRAIN_SCENES = 3000


def _set_norm(model: nn.Module, x: Tensor) -> None:
    norm = model.norm
    assert isinstance(norm, ChannelNormalize), "the street models start with a ChannelNormalize layer"
    norm.mean.copy_(x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1))
    norm.std.copy_(x.std(dim=(0, 2, 3)).view(1, -1, 1, 1))


def segmentation_scores(model: nn.Module, x: Tensor, y: Tensor, batch: int = 128) -> dict[str, Any]:
    conf = torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(x), batch):
            pred = model(x[i : i + batch]).argmax(1)
            conf += confusion_matrix(pred, y[i : i + batch], len(CLASSES))
    iou = iou_from_confusion(conf)
    return {
        "miou": round(float(np.nanmean(iou)), 4),
        "pixel_accuracy": round(float(conf.diag().sum() / conf.sum()), 4),
        "iou": {c: round(float(v), 4) for c, v in zip(CLASSES, iou, strict=False)},
    }


def train_seg(epochs: int = SEG_EPOCHS, n_train: int = TRAIN_SCENES, log: bool = True,
              path: Path = SEG_WEIGHTS) -> dict[str, Any]:
    torch.manual_seed(SEED)
    train = load_street_scenes("train", "segmentation", count=n_train)
    test = load_street_scenes("test", "segmentation")
    model = StreetSegNet()
    _set_norm(model, train.x)
    freq = torch.bincount(train.y.flatten(), minlength=len(CLASSES)).float() / train.y.numel()
    weight = freq.clamp_min(1e-4).pow(-0.5)
    weight = weight / weight.mean()
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    steps_per_epoch = (len(train) + 31) // 32
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for i in range(0, len(order), 32):
            rows = order[i : i + 32]
            x, y = train.x[rows], train.y[rows]
            flip = torch.rand(len(rows), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
            loss = F.cross_entropy(model(x), y, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(rows)
        if log:
            print(f"  seg epoch {epoch + 1}/{epochs}: loss {total / len(train):.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    save_half(model.eval(), path)
    shipped = _load(StreetSegNet(), path, cached=False)
    scores = segmentation_scores(shipped, test.x, test.y)
    return {
        "kind": "segmentation",
        "data": "street-scenes",
        "input_shape": [3, 64, 64],
        "classes": CLASSES,
        "train_size": len(train),
        "test_size": len(test),
        "epochs": epochs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        "test": scores,
        "weights": path.name,
        "bytes": path.stat().st_size,
        "sha256_16": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
    }


def detection_targets(boxes: list[Tensor], labels: list[Tensor], grid: tuple[int, int], stride: int
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CenterNet targets: Gaussian heat maps (N, K, h, w), log sizes and offsets at centres, centre mask."""
    n = len(boxes)
    gh, gw = grid
    k = len(OBJECT_CLASSES)
    heat = torch.zeros(n, k, gh, gw)
    size = torch.zeros(n, 2, gh, gw)
    offset = torch.zeros(n, 2, gh, gw)
    centre = torch.zeros(n, gh, gw, dtype=torch.bool)
    ys = torch.arange(gh).float().view(-1, 1)
    xs = torch.arange(gw).float().view(1, -1)
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=False)):
        for box, cls in zip(b.tolist(), lab.tolist(), strict=False):
            x0, y0, x1, y1 = box
            w, h = x1 - x0, y1 - y0
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            ix, iy = min(int(cx), gw - 1), min(int(cy), gh - 1)
            sigma = max(0.5, (w * h) ** 0.5 / stride / 3)
            g = torch.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
            c = OBJECT_CLASSES.index(cls)
            heat[i, c] = torch.maximum(heat[i, c], g)
            size[i, :, iy, ix] = torch.tensor([np.log(max(w, 1.0) / stride), np.log(max(h, 1.0) / stride)])
            offset[i, :, iy, ix] = torch.tensor([cx - ix, cy - iy]).clamp(0.02, 0.98)
            centre[i, iy, ix] = True
    return heat, size, offset, centre


def centernet_loss(model: StreetDetector, x: Tensor, targets: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    heat_t, size_t, off_t, centre = targets
    heat_logits, size, offset = model.raw(x)
    p = heat_logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = heat_t.eq(1.0).float()
    neg = 1.0 - pos
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - heat_t) ** 4 * neg).sum()
    n_pos = pos.sum().clamp_min(1.0)
    mask = centre.unsqueeze(1).float()
    n_centre = mask.sum().clamp_min(1.0)
    size_loss = ((size - size_t).abs() * mask).sum() / n_centre
    off_loss = ((offset.sigmoid() - off_t).abs() * mask).sum() / n_centre
    return (pos_loss + neg_loss) / n_pos + 0.5 * size_loss + off_loss


def _flip_boxes(boxes: Tensor, width: int) -> Tensor:
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def detection_scores(model: StreetDetector, x: Tensor, y: list[dict[str, Tensor]], threshold: float | None = None,
                     batch: int = 128) -> dict[str, Any]:
    outputs: list[dict[str, Tensor]] = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outputs.extend(model(x[i : i + batch]).detach())
    ap = {CLASSES[c]: round(average_precision(outputs, y, c), 4) for c in OBJECT_CLASSES}
    thr = model.score_threshold if threshold is None else threshold
    tp, fp, fn = detection_counts(outputs, y, thr)
    return {
        "map50": round(float(np.mean(list(ap.values()))), 4),
        "ap50": ap,
        "score_threshold": round(thr, 4),
        "precision": round(tp / max(tp + fp, 1), 4),
        "recall": round(tp / max(tp + fn, 1), 4),
    }


def train_det(epochs: int = DET_EPOCHS, n_train: int = TRAIN_SCENES, log: bool = True,
              path: Path = DET_WEIGHTS) -> dict[str, Any]:
    torch.manual_seed(SEED)
    train = load_street_scenes("train", "detection", count=n_train)
    val = load_street_scenes("val", "detection")
    test = load_street_scenes("test", "detection")
    model = StreetDetector()
    _set_norm(model, train.x)
    side = train.x.shape[-1]
    grid = (train.x.shape[-2] // model.stride, side // model.stride)
    flipped_boxes = [_flip_boxes(t["boxes"], side) for t in train.y]
    targets = detection_targets([t["boxes"] for t in train.y], [t["labels"] for t in train.y], grid, model.stride)
    targets_f = detection_targets(flipped_boxes, [t["labels"] for t in train.y], grid, model.stride)
    steps_per_epoch = (len(train) + 31) // 32
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for i in range(0, len(order), 32):
            rows = order[i : i + 32]
            flip = torch.rand(len(rows), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), train.x[rows].flip(-1), train.x[rows])
            batch_t = tuple(torch.where(flip.view(-1, *([1] * (a.dim() - 1))), b[rows], a[rows])
                            for a, b in zip(targets, targets_f, strict=False))
            loss = centernet_loss(model, x, batch_t)  # type: ignore[arg-type]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(rows)
        if log:
            print(f"  det epoch {epoch + 1}/{epochs}: loss {total / len(train):.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    # Operating point: the threshold with the best F1 on the validation scenes.
    best = (0.0, 0.5)
    for thr in np.arange(0.2, 0.71, 0.05):
        s = detection_scores(model, val.x, val.y, float(thr))
        f1 = 2 * s["precision"] * s["recall"] / max(s["precision"] + s["recall"], 1e-9)
        best = max(best, (f1, round(float(thr), 2)))
    model.score_threshold_.fill_(best[1])
    save_half(model, path)
    shipped = _load(StreetDetector(), path, cached=False)
    return {
        "kind": "detection",
        "data": "street-scenes-det",
        "input_shape": [3, 64, 64],
        "classes": [CLASSES[c] for c in OBJECT_CLASSES],
        "label_ids": list(OBJECT_CLASSES),
        "train_size": len(train),
        "test_size": len(test),
        "epochs": epochs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        "val_f1_at_threshold": round(best[0], 4),
        "test": detection_scores(shipped, test.x, test.y),
        "weights": path.name,
        "bytes": path.stat().st_size,
        "sha256_16": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
    }


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in args
    names = [a for a in args if not a.startswith("--")] or ["seg", "det"]
    unknown = [n for n in names if n not in ("seg", "det")]
    if unknown:
        print(f"unknown model(s) {unknown}; expected seg and/or det", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    path = WEIGHTS_DIR / "dense_models.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    if "--evaluate" in args:
        if "seg" in names and "street-seg" in summary:
            test = load_street_scenes("test", "segmentation")
            seg = _load(StreetSegNet(), SEG_WEIGHTS, False)
            summary["street-seg"]["test"] = segmentation_scores(seg, test.x, test.y)
            print(f"street-seg: {summary['street-seg']['test']}")
        if "det" in names and "street-det" in summary:
            test = load_street_scenes("test", "detection")
            det = _load(StreetDetector(), DET_WEIGHTS, False)
            summary["street-det"]["test"] = detection_scores(det, test.x, test.y)
            print(f"street-det: {summary['street-det']['test']}")
        path.write_text(json.dumps(dict(sorted(summary.items())), indent=2) + "\n")
        return 0
    n_train = 400 if quick else TRAIN_SCENES
    out = Path(tempfile.mkdtemp(prefix="attackgen-dense-")) if quick else WEIGHTS_DIR
    if "seg" in names:
        summary["street-seg"] = train_seg(2 if quick else SEG_EPOCHS, n_train, path=out / SEG_WEIGHTS.name)
        test = summary["street-seg"]["test"]
        print(f"street-seg: test mIoU {test['miou']:.4f}, pixel accuracy {test['pixel_accuracy']:.4f} "
              f"({summary['street-seg']['train_seconds']} s, {summary['street-seg']['bytes'] // 1024} KB)")
    if "det" in names:
        summary["street-det"] = train_det(2 if quick else DET_EPOCHS, n_train, path=out / DET_WEIGHTS.name)
        test = summary["street-det"]["test"]
        print(f"street-det: test mAP@0.5 {test['map50']:.4f} {test['ap50']}, threshold {test['score_threshold']} "
              f"({summary['street-det']['train_seconds']} s, {summary['street-det']['bytes'] // 1024} KB)")
    if not quick:  # re-read first: a seg run and a det run may go on side by side
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update({k: summary[k] for k in ("street-seg", "street-det") if k in summary and
                       ((k == "street-seg" and "seg" in names) or (k == "street-det" and "det" in names))})
        path.write_text(json.dumps(dict(sorted(merged.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
