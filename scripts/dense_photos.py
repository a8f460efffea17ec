"""Qualitative pictures: the street segmentation model and the dense attacks on real photographs.

scikit-image ships a few photographs (astronaut, coffee, chelsea the cat, a rocket). They are nothing
like the synthetic street scenes street-seg was trained on, so its clean "segmentation" of them is
whatever colours and shapes suggest; the point is what the attacks do to it at Linf 8/255: the
untargeted attack scrambles the map, the static target forces the empty-street layout (test scene
101) onto a photo. Every adversarial map is the model's prediction on the clipped, 8-bit-rounded
input, as the executor verifies it; the pixel agreement with the target is printed and drawn.

    python scripts/dense_photos.py [--out docs/img/dense-photos.png] [--steps 200] [--size 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
EPS = 8 / 255


def load_photos(size: int) -> torch.Tensor:
    """The bundled photographs, centre-cropped square and resized to size x size, in [0, 1]."""
    from skimage import data

    images = []
    for name in PHOTOS:
        image = np.asarray(getattr(data, name)(), dtype=np.float32) / 255.0
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = torch.from_numpy(image[top : top + side, left : left + side, :3]).permute(2, 0, 1)[None]
        images.append(F.interpolate(crop, size=(size, size), mode="area"))
    return torch.cat(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/dense-photos.png"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attackgen.models.zoo.dense_models import load_street_seg
    from attackgen.models.zoo.scenes import CLASSES
    from attackgen.report.dense import colour_map
    from attackgen.run.access import WhiteBoxAccess
    from attackgen.run.attacks.base import Budget
    from attackgen.run.attacks.metzen import MetzenIterative
    from attackgen.run.objectives import build_objective
    from taxonomy.spec import parse_spec

    model = load_street_seg().eval()
    x = load_photos(args.size)

    def spec(consequence: dict) -> object:
        return parse_spec({"name": "photos", "task": "segmentation", "classes": CLASSES,
                           "threat": {"consequence": consequence,
                                      "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": EPS}],
                                      "model_knowledge": "white_box"}})

    def verified(candidate: torch.Tensor) -> torch.Tensor:
        q = torch.round(candidate.clamp(0, 1) * 255) / 255
        q = torch.minimum(torch.maximum(q, (x - EPS).clamp(0, 1)), (x + EPS).clamp(0, 1))
        with torch.no_grad():
            return model(q).argmax(1)

    with torch.no_grad():
        clean = model(x)
    labels = clean.argmax(1)
    attack = MetzenIterative(steps=args.steps, step_size=2 / 255, final_step_size=0.1 / 255)
    columns = {}
    for title, consequence in (("untargeted", {"kind": "untargeted", "reference": "clean_prediction"}),
                               ("static target: empty street", {"kind": "static_target", "target_map": "scene:101"})):
        objective = build_objective(spec(consequence), labels, clean)
        candidate = attack.run(WhiteBoxAccess(model, len(x)), x, objective, Budget(epsilon=EPS)).x_adv
        columns[title] = (verified(candidate), objective)

    static_target = columns["static target: empty street"][1].target
    fig, axes = plt.subplots(len(PHOTOS), 5, figsize=(10, 2.1 * len(PHOTOS)))
    for i, name in enumerate(PHOTOS):
        untargeted = columns["untargeted"][0][i]
        forced = columns["static target: empty street"][0][i]
        changed = float((untargeted != labels[i]).float().mean())
        agreement = float((forced == static_target[i]).float().mean())
        before = float((labels[i] == static_target[i]).float().mean())
        print(f"{name}: untargeted changes {changed:.0%} of the pixels; static target agreement "
              f"{before:.0%} -> {agreement:.0%}")
        panels = [(x[i].permute(1, 2, 0).numpy(), name), (colour_map(labels[i].numpy()), "clean prediction"),
                  (colour_map(untargeted.numpy()), f"untargeted: {changed:.0%} changed"),
                  (colour_map(static_target[i].numpy()), "target: empty street"),
                  (colour_map(forced.numpy()), f"static: {agreement:.0%} agree ({before:.0%} before)")]
        for ax, (picture, caption) in zip(axes[i], panels, strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(caption, fontsize=7)
            ax.axis("off")
    from matplotlib.patches import Patch

    from attackgen.report.dense import PALETTE

    fig.legend(handles=[Patch(color=PALETTE[k] / 255.0, label=name) for k, name in enumerate(CLASSES)],
               loc="lower center", ncol=len(CLASSES), fontsize=7, frameon=False)
    fig.suptitle(f"street-seg on scikit-image photographs, Linf 8/255, metzen_seg {args.steps} steps "
                 "(maps after clipping and 8-bit rounding)", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
