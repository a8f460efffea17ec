"""Report panels for segmentation and detection runs (registered with attackgen.report.run_report.register_panel).

Segmentation: per example, the clean input, the clean prediction, the target, the adversarial input,
the adversarial prediction and the perturbation amplified to the full range; masks coloured by class
with one legend. Detection: the clean and the adversarial input with the detections at the model's
threshold drawn (class-coloured boxes, score), and the target boxes dashed where the consequence has
them. A table lists the per-consequence metrics (removal rate, background preservation, pixel
agreement, IoU with the moved mask, vanish rate...) averaged over the attacked inputs of each item.

The pictures come from examples.npz, which holds, for dense tasks, the arrays the objective hands the
executor (``example_arrays``: clean_map / adv_map / target_map, or clean_boxes / adv_boxes /
target_boxes). Without them only the inputs are shown.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from attackgen.report.run_report import Figure, Section, _png, load_examples, mpl_text, register_panel, table
from attackgen.results import RunResult

PALETTE = np.array([(128, 64, 128), (244, 35, 232), (70, 130, 180), (70, 70, 70), (0, 0, 142), (220, 20, 60),
                    (107, 142, 35), (250, 170, 30), (220, 220, 0), (152, 251, 152), (0, 60, 100),
                    (119, 11, 32)], np.uint8)
"""Cityscapes-like colours, one per class index (cycled past 12 classes); the street scenes' six first."""

METRIC_ORDER = ("removal_rate", "background_preservation", "target_agreement", "pixel_agreement",
                "clean_agreement", "iou_moved", "iou_original", "centroid_shift", "target_centroid_shift",
                "pixel_error", "miou_ratio", "vanish_rate", "other_classes_kept", "clean_detections",
                "adversarial_detections", "fabricated", "mislabel_rate", "lost_fraction", "recall", "ap50",
                "target_boxes_matched", "moved_boxes_matched", "extra_detections", "changed_pixels")


def colour_map(labels: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8; negative (ignore) is black."""
    lab = np.asarray(labels).astype(int)
    out = PALETTE[np.mod(np.clip(lab, 0, None), len(PALETTE))]
    out[lab < 0] = 0
    return out


def _image(x: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    lo, hi = bounds
    img = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    return img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))


def _names(examples: dict[str, np.ndarray]) -> list[str]:
    return [str(c) for c in examples.get("classes", [])]


def _legend(fig: Any, names: list[str], used: set[int]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=PALETTE[i % len(PALETTE)] / 255.0, label=mpl_text(names[i]) if i < len(names) else str(i))
               for i in sorted(used) if i >= 0]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=7, frameon=False)


def segmentation_figure(examples: dict[str, np.ndarray]) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    n = len(examples["index"])
    bounds = (float(examples["bounds"][0]), float(examples["bounds"][1]))
    has_maps = all(k in examples for k in ("clean_map", "adv_map", "target_map"))
    titles = (["clean input", "clean prediction", "target", "adversarial input", "adversarial prediction",
               "perturbation"] if has_maps else ["clean input", "adversarial input", "perturbation"])
    fig = MplFigure(figsize=(1.5 * len(titles) + 0.4, 1.55 * n + 0.7))
    used: set[int] = set()
    for j in range(n):
        clean, adv = examples["clean"][j], examples["adversarial"][j]
        delta = adv - clean
        scale = float(np.abs(delta).max()) or 1.0
        panels: list[tuple[np.ndarray, str]] = [(_image(clean, bounds), f"#{int(examples['index'][j])}")]
        if has_maps:
            for key in ("clean_map", "target_map"):
                used |= set(np.unique(examples[key][j]).tolist())
            used |= set(np.unique(examples["adv_map"][j]).tolist())
            panels += [(colour_map(examples["clean_map"][j]), ""), (colour_map(examples["target_map"][j]), "")]
        panels.append((_image(adv, bounds), str(examples["attack"][j])))
        if has_maps:
            panels.append((colour_map(examples["adv_map"][j]), ""))
        panels.append((_image(0.5 + 0.5 * delta / scale, (0.0, 1.0)), f"Linf {scale:.3g}"))
        for i, (img, note) in enumerate(panels):
            ax = fig.add_subplot(n, len(panels), j * len(panels) + i + 1)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1 if img.dtype != np.uint8 else 255,
                      interpolation="nearest")
            ax.set_title(mpl_text((titles[i] + ("\n" + note if note else "")) if j == 0 else note), fontsize=7)
            ax.axis("off")
    _legend(fig, _names(examples), used)
    caption = ("Clean input, its prediction, the target, the verified adversarial input, its prediction, and the "
               "perturbation amplified to the full range (grey = unchanged). Masks are coloured by class."
               if has_maps else "Clean and verified adversarial inputs, and the amplified perturbation.")
    return Figure("dense-examples", _png(fig), caption)


def _draw_boxes(ax: Any, boxes: np.ndarray, names: list[str], dashed: bool = False) -> set[int]:
    from matplotlib.patches import Rectangle

    used = set()
    for x0, y0, x1, y1, score, label in boxes:
        if np.isnan(x0):
            continue
        k = int(label)
        used.add(k)
        colour = PALETTE[k % len(PALETTE)] / 255.0
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                               linewidth=1.0, linestyle="--" if dashed else "-"))
        if not dashed:
            name = names[k] if k < len(names) else str(k)
            ax.text(x0, y0 - 1, mpl_text(f"{name} {score:.2f}"), color=colour, fontsize=5, va="bottom")
    return used


def detection_figure(examples: dict[str, np.ndarray]) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    n = len(examples["index"])
    bounds = (float(examples["bounds"][0]), float(examples["bounds"][1]))
    names = _names(examples)
    has_boxes = "clean_boxes" in examples and "adv_boxes" in examples
    fig = MplFigure(figsize=(1.9 * 3 + 0.4, 1.9 * n + 0.7))
    used: set[int] = set()
    for j in range(n):
        clean, adv = examples["clean"][j], examples["adversarial"][j]
        delta = adv - clean
        scale = float(np.abs(delta).max()) or 1.0
        thr = float(examples["score_threshold"][j]) if "score_threshold" in examples else None
        for i, (img, title) in enumerate(((clean, "clean detections"), (adv, "adversarial detections"),
                                          (0.5 + 0.5 * delta / scale, f"perturbation, Linf {scale:.3g}"))):
            ax = fig.add_subplot(n, 3, j * 3 + i + 1)
            ax.imshow(_image(img, bounds if i < 2 else (0.0, 1.0)), interpolation="nearest")
            if has_boxes and i == 0:
                used |= _draw_boxes(ax, examples["clean_boxes"][j], names)
            if has_boxes and i == 1:
                used |= _draw_boxes(ax, examples["adv_boxes"][j], names)
                if "target_boxes" in examples:
                    used |= _draw_boxes(ax, examples["target_boxes"][j], names, dashed=True)
            note = f"#{int(examples['index'][j])} {examples['attack'][j]}" if i == 0 else ""
            ax.set_title(mpl_text(((title + (f" (score >= {thr:.2f})" if thr is not None and i < 2 else "")) if j == 0
                                   else "") + ("\n" + note if note else "")), fontsize=6)
            ax.axis("off")
    _legend(fig, names, used)
    return Figure("detections", _png(fig), "Detections at the model's score threshold on the clean and the verified "
                  "adversarial input (dashed: the target boxes), and the amplified perturbation.")


def metrics_section(result: RunResult) -> Section | None:
    names = [m for m in METRIC_ORDER if any(m in item.metrics for item in result.items)]
    if not names:
        return None
    rows = [[n, item.attack, item.n_attacked, *[item.metrics.get(m) for m in names]]
            for n, item in enumerate(result.items, 1)]
    md, htm = table(["#", "attack", "attacked", *names], rows)
    note = ("Per-consequence metrics, averaged over the inputs each attack ran on (re-run of the clipped "
            "adversarial input). Removal rate: share of the removed classes' pixels (clean prediction) no "
            "longer predicted as them; background preservation: share of the other pixels that keep their clean "
            "label; vanish rate: share of the chosen class's detections gone at the model's threshold.")
    return Section("Dense-task metrics", f"{note}\n\n{md}", f"<p>{html.escape(note)}</p>{htm}")


def _panel(result: RunResult, out_dir: Path, figure: Any) -> list[Section]:
    out = []
    section = metrics_section(result)
    if section:
        out.append(section)
    examples = load_examples(out_dir)
    if not examples or not len(examples["index"]):
        text = "No input was broken, so there is no adversarial example to show."
        return [*out, Section("Examples", text, f"<p>{text}</p>")]
    text = (f"{len(examples['index'])} verified adversarial examples "
            "(the first broken inputs, per attack in plan order).")
    out.append(Section("Examples", text, f"<p>{html.escape(text)}</p>", [figure(examples)]))
    return out


def segmentation_panel(result: RunResult, out_dir: Path) -> list[Section]:
    return _panel(result, out_dir, segmentation_figure)


def detection_panel(result: RunResult, out_dir: Path) -> list[Section]:
    return _panel(result, out_dir, detection_figure)


register_panel("segmentation", segmentation_panel)
register_panel("detection", detection_panel)
