"""Synthetic street scenes: seeded 64x64 RGB images with label maps, boxes and context fields.

Each scene is drawn from its own index (``numpy.random.default_rng((seed, index))``), so scene 17 is
the same picture whichever batch, split or machine asks for it, and a few thousand are generated on
the fly in about a second. A scene is a street in perspective: sky above a horizon, buildings along
it and down both sides, a road converging to a vanishing point with lane marks, sidewalks beside it,
cars on the road and pedestrians on the sidewalks (some crossing), drawn far to near so nearer
objects occlude farther ones. Context fields: ``lighting`` (day, dusk, night) and ``weather`` (clear,
fog, rain) change colours, contrast and texture; they are in the metadata for contextual scopes.

Labels: one class per pixel from CLASSES (no ignore label), and per object a tight box around its
visible pixels, in input pixels (x0, y0, x1, y1) with x1/y1 exclusive, labelled with the same class
indices (car 4, person 5). Objects with fewer than MIN_VISIBLE visible pixels get no box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from attackgen.models.data import LabeledData
from taxonomy.errors import AttackgenError

CLASSES = ["road", "sidewalk", "sky", "building", "car", "person"]
ROAD, SIDEWALK, SKY, BUILDING, CAR, PERSON = range(6)
OBJECT_CLASSES = (CAR, PERSON)
"""The classes that have instances and boxes (the detector's classes)."""

LIGHTING = ("day", "dusk", "night")
WEATHER = ("clear", "fog", "rain")
SIZE = 64
MIN_VISIBLE = 6
SEED = 0

# Fixed, disjoint index ranges: a split is a range of scene indices, not a sample.
SPLITS: dict[str, tuple[int, int]] = {
    "train": (0, 4000),
    "val": (500_000, 500_256),
    "test": (1_000_000, 1_000_256),
}

# Colour palettes (RGB in [0, 1]) before lighting.
_SKY = {"day": ((0.45, 0.65, 0.95), (0.75, 0.85, 1.0)), "dusk": ((0.35, 0.25, 0.5), (0.95, 0.6, 0.35)),
        "night": ((0.02, 0.03, 0.1), (0.1, 0.12, 0.25))}
_LIGHT = {"day": (1.0, (1.0, 1.0, 1.0)), "dusk": (0.72, (1.08, 0.9, 0.8)), "night": (0.38, (0.75, 0.85, 1.2))}
_CAR_COLOURS = np.array([(0.8, 0.1, 0.1), (0.1, 0.25, 0.75), (0.9, 0.9, 0.9), (0.15, 0.15, 0.15),
                         (0.95, 0.8, 0.1), (0.2, 0.6, 0.3), (0.6, 0.6, 0.65)])
_CLOTHES = np.array([(0.9, 0.2, 0.2), (0.2, 0.3, 0.8), (0.95, 0.6, 0.1), (0.1, 0.6, 0.5), (0.55, 0.2, 0.6),
                     (0.85, 0.85, 0.2), (0.3, 0.8, 0.3)])
_SKIN = np.array([(0.96, 0.8, 0.69), (0.8, 0.6, 0.45), (0.55, 0.38, 0.26), (0.36, 0.24, 0.16)])


@dataclass
class Scene:
    """One scene: image (3, H, W) float32 in [0, 1], labels (H, W) int64, boxes and context."""

    image: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray  # (K, 4) float32 xyxy, x1/y1 exclusive
    box_labels: np.ndarray  # (K,) int64, CAR or PERSON
    meta: dict[str, Any] = field(default_factory=dict)


def _paint(img: np.ndarray, lab: np.ndarray, inst: np.ndarray, mask: np.ndarray, colour: Any, label: int,
           instance: int = 0) -> None:
    img[mask] = colour
    lab[mask] = label
    inst[mask] = instance


def _rect(h: int, w: int, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
    ys, xs = np.ogrid[:h, :w]
    return (ys >= round(y0)) & (ys < round(y1)) & (xs >= round(x0)) & (xs < round(x1))


def generate_scene(index: int, size: int = SIZE, seed: int = SEED) -> Scene:
    """Scene number ``index`` of the generator with ``seed``; the same arguments give the same scene."""
    if size < 32:
        raise AttackgenError(f"street scenes need size >= 32 pixels, got {size}")
    rng = np.random.default_rng((seed, index))
    h = w = size
    f = size / 64.0
    lighting = LIGHTING[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    weather = WEATHER[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    img = np.zeros((h, w, 3), np.float32)
    lab = np.full((h, w), SKY, np.int64)
    inst = np.zeros((h, w), np.int32)
    ys, xs = np.mgrid[:h, :w].astype(np.float32)

    # Sky: vertical gradient.
    horizon = int(rng.integers(int(18 * f), int(30 * f) + 1))
    top, bottom = (np.array(c, np.float32) for c in _SKY[lighting])
    t = np.clip(ys / max(horizon, 1), 0, 1)[..., None]
    img[:] = top * (1 - t) + bottom * t

    # Ground geometry: road and sidewalk trapezoids converging to a vanishing point on the horizon.
    vx = float(rng.uniform(0.3, 0.7) * w)
    road_half = float(rng.uniform(0.28, 0.45) * w)  # half width at the bottom row
    walk_extra = float(rng.uniform(0.12, 0.3) * w)  # sidewalk width at the bottom row
    cx_bottom = float(vx + rng.uniform(-0.12, 0.12) * w)
    depth = np.clip((ys - horizon) / max(h - horizon, 1), 0, 1)  # 0 at the horizon, 1 at the bottom
    centre = vx + (cx_bottom - vx) * depth
    below = ys >= horizon
    road = below & (np.abs(xs - centre) <= 0.6 + road_half * depth)
    walk = below & ~road & (np.abs(xs - centre) <= 0.6 + (road_half + walk_extra) * depth)
    facade = below & ~road & ~walk

    # Buildings: a skyline along the horizon, and facades down both sides of the street.
    x = 0
    skyline = np.zeros((h, w), bool)
    while x < w:
        bw = int(rng.integers(int(5 * f), int(16 * f) + 1))
        bh = int(rng.integers(int(4 * f), max(horizon - int(2 * f), int(5 * f)) + 1))
        base = np.array(rng.uniform(0.25, 0.65, 3), np.float32) * np.array([1.0, 0.95, 0.9], np.float32)
        m = _rect(h, w, horizon - bh, horizon + 1, x, x + bw)
        _paint(img, lab, inst, m, base, BUILDING)
        skyline |= m
        # windows: a grid of small squares, lit at night
        lit = lighting == "night"
        for wy in range(horizon - bh + 2, horizon - 1, 4):
            for wx in range(x + 1, x + bw - 1, 3):
                if rng.random() < 0.7:
                    colour = (0.95, 0.85, 0.4) if (lit and rng.random() < 0.6) else base * 0.55
                    img[wy : wy + 2, wx : wx + 1] = colour
        x += bw
    facade_colour = np.array(rng.uniform(0.3, 0.6, 3), np.float32)
    shade = (0.8 + 0.2 * np.sin(xs * 0.9) * (rng.random() < 0.5))[..., None]
    img[facade] = (facade_colour * shade)[facade]
    lab[facade] = BUILDING

    road_colour = np.array([0.3, 0.3, 0.32], np.float32) * rng.uniform(0.8, 1.2)
    img[road] = road_colour + rng.normal(0, 0.02, (int(road.sum()), 3)).astype(np.float32)
    lab[road] = ROAD
    # dashed lane marks along the centre line (still labelled road)
    dash = road & (np.abs(xs - centre) <= 0.3 + 0.8 * depth) & ((ys.astype(int) // max(int(3 * f), 1)) % 2 == 0)
    dash &= depth > 0.15
    img[dash] = (0.92, 0.92, 0.85)
    walk_colour = np.array([0.62, 0.58, 0.52], np.float32) * rng.uniform(0.85, 1.15)
    tiles = 0.92 + 0.08 * ((xs.astype(int) // 3 + ys.astype(int) // 2) % 2)[..., None]
    img[walk] = (walk_colour * tiles)[walk]
    lab[walk] = SIDEWALK

    # Objects: cars on the road, pedestrians on the sidewalks (a few crossing), drawn far to near.
    objects: list[tuple[float, int, dict[str, float]]] = []
    n_cars = int(rng.choice([0, 1, 1, 2, 2, 3, 4]))
    n_people = int(rng.choice([0, 1, 1, 2, 2, 3, 3, 4]))
    for _ in range(n_cars):
        d = float(rng.uniform(0.2, 1.0))
        yb = horizon + d * (h - horizon)
        cw = (3 + d * rng.uniform(13, 22)) * f
        lane = rng.uniform(-0.8, 0.8) * road_half * d
        cx = vx + (cx_bottom - vx) * d + lane
        objects.append((yb, CAR, {"cx": cx, "yb": yb, "w": cw, "h": cw * rng.uniform(0.5, 0.65)}))
    for _ in range(n_people):
        d = float(rng.uniform(0.2, 1.0))
        yb = horizon + d * (h - horizon)
        ph = (4 + d * rng.uniform(9, 15)) * f
        side = rng.choice([-1.0, 1.0])
        if rng.random() < 0.2:  # crossing the road
            off = rng.uniform(-0.8, 0.8) * road_half * d
        else:
            off = side * (road_half + rng.uniform(0.15, 0.85) * walk_extra) * d
        cx = vx + (cx_bottom - vx) * d + off
        objects.append((yb, PERSON, {"cx": cx, "yb": yb, "w": max(ph * rng.uniform(0.3, 0.4), 2.0), "h": ph}))
    objects.sort(key=lambda item: item[0])
    drawn: list[tuple[int, int, int]] = []  # (instance id, class, drawn pixel count)
    for number, (_, cls, g) in enumerate(objects, start=1):
        x0, x1, y1 = g["cx"] - g["w"] / 2, g["cx"] + g["w"] / 2, g["yb"]
        y0 = y1 - g["h"]
        if cls == CAR:
            body = _rect(h, w, y0 + 0.35 * g["h"], y1 - 0.15 * g["h"], x0, x1)
            cabin = _rect(h, w, y0, y0 + 0.4 * g["h"], x0 + 0.2 * g["w"], x1 - 0.2 * g["w"])
            wheels = (_rect(h, w, y1 - 0.25 * g["h"], y1, x0 + 0.08 * g["w"], x0 + 0.32 * g["w"])
                      | _rect(h, w, y1 - 0.25 * g["h"], y1, x1 - 0.32 * g["w"], x1 - 0.08 * g["w"]))
            colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))].astype(np.float32)
            _paint(img, lab, inst, body, colour, CAR, number)
            _paint(img, lab, inst, cabin, colour * 0.9, CAR, number)
            glass = _rect(h, w, y0 + 0.08 * g["h"], y0 + 0.38 * g["h"], x0 + 0.26 * g["w"], x1 - 0.26 * g["w"])
            _paint(img, lab, inst, glass & cabin, (0.25, 0.35, 0.45), CAR, number)
            _paint(img, lab, inst, wheels, (0.05, 0.05, 0.05), CAR, number)
            if lighting != "day":  # lights
                lamp = _rect(h, w, y1 - 0.45 * g["h"], y1 - 0.3 * g["h"], x0, x0 + 0.15 * g["w"] + 1)
                lamp |= _rect(h, w, y1 - 0.45 * g["h"], y1 - 0.3 * g["h"], x1 - 0.15 * g["w"] - 1, x1)
                _paint(img, lab, inst, lamp & body, (1.0, 0.95, 0.7), CAR, number)
            mask = body | cabin | wheels
        else:
            head_r = max(g["w"] * 0.42, 0.9)
            head = (ys - (y0 + head_r)) ** 2 + (xs - g["cx"]) ** 2 <= head_r**2
            torso = _rect(h, w, y0 + 1.6 * head_r, y0 + 0.6 * g["h"], x0, x1)
            legs = (_rect(h, w, y0 + 0.6 * g["h"], y1, x0, g["cx"] - 0.1 * g["w"])
                    | _rect(h, w, y0 + 0.6 * g["h"], y1, g["cx"] + 0.1 * g["w"], x1))
            _paint(img, lab, inst, torso, _CLOTHES[rng.integers(len(_CLOTHES))], PERSON, number)
            _paint(img, lab, inst, legs, np.array(rng.uniform(0.1, 0.4, 3), np.float32), PERSON, number)
            _paint(img, lab, inst, head, _SKIN[rng.integers(len(_SKIN))], PERSON, number)
            mask = head | torso | legs
        drawn.append((number, cls, int(mask.sum())))

    # Lighting and weather, then sensor noise.
    gain, tint = _LIGHT[lighting]
    sky_mask = lab == SKY
    img[~sky_mask] = img[~sky_mask] * gain * np.array(tint, np.float32)
    if lighting == "night":
        img[(img > 0.85).all(-1)] = (1.0, 0.95, 0.7)  # lamps and lit windows stay bright
    if weather == "fog":
        strength = float(rng.uniform(0.3, 0.55))
        fog = strength * (1 - 0.6 * depth)[..., None]
        img = img * (1 - fog) + fog * np.float32(0.75 * gain)
    elif weather == "rain":
        img = img * 0.85
        streaks = rng.random((h, w)) < 0.02
        for k in range(3):
            img[np.roll(streaks, k, axis=0)] += 0.12
    img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)

    boxes, box_labels = [], []
    for number, cls, total in drawn:
        visible = inst == number
        count = int(visible.sum())
        if count < MIN_VISIBLE or count < 0.3 * max(total, 1):
            continue
        rows, cols = np.nonzero(visible)
        boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
        box_labels.append(cls)
    meta = {
        "lighting": lighting,
        "weather": weather,
        "n_cars": sum(1 for c in box_labels if c == CAR),
        "n_persons": sum(1 for c in box_labels if c == PERSON),
        "has_person": bool((lab == PERSON).any()),
    }
    return Scene(
        image=np.ascontiguousarray(img.transpose(2, 0, 1)),
        labels=lab,
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        box_labels=np.array(box_labels, np.int64),
        meta=meta,
    )


def generate_scenes(indices: range | list[int], size: int = SIZE, seed: int = SEED) -> list[Scene]:
    return [generate_scene(int(i), size, seed) for i in indices]


def scenes_to_data(scenes: list[Scene], name: str, task: str = "segmentation") -> LabeledData:
    """Scenes as a LabeledData: y is (N, H, W) label maps (segmentation) or per-image box dicts (detection)."""
    x = torch.from_numpy(np.stack([s.image for s in scenes])) if scenes else torch.zeros(0, 3, SIZE, SIZE)
    if task == "segmentation":
        y: Any = torch.from_numpy(np.stack([s.labels for s in scenes])) if scenes else torch.zeros(0, SIZE, SIZE)
    elif task == "detection":
        y = [{"boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.box_labels)} for s in scenes]
    else:
        raise AttackgenError(f"street scenes have segmentation and detection labels, not {task!r}")
    keys = scenes[0].meta.keys() if scenes else []
    meta = {k: [s.meta[k] for s in scenes] for k in keys}
    return LabeledData(name, x, y, list(CLASSES), meta)


def split_indices(split: str, count: int | None = None) -> range:
    if split not in SPLITS:
        raise AttackgenError(f"unknown split {split!r} of street-scenes; expected one of {', '.join(SPLITS)}")
    start, stop = SPLITS[split]
    if count is not None:
        stop = min(stop, start + count)
    return range(start, stop)


@lru_cache(maxsize=8)
def _cached(split: str, count: int | None, size: int) -> list[Scene]:
    return generate_scenes(split_indices(split, count), size)


def load_street_scenes(split: str = "test", task: str = "segmentation", count: int | None = None,
                       size: int = SIZE) -> LabeledData:
    """The built-in street scenes of one split (train 4000, val 256, test 256) as a LabeledData."""
    scenes = _cached(split, count, size)
    name = "street-scenes" + ("-det" if task == "detection" else "") + ("" if split == "test" else f"-{split}")
    return scenes_to_data(scenes, name, task)


def load_street_segmentation(split: str = "test") -> LabeledData:
    """Built-in data 'street-scenes': images with (N, H, W) label maps."""
    return load_street_scenes(split, "segmentation")


def load_street_detection(split: str = "test") -> LabeledData:
    """Built-in data 'street-scenes-det': the same images with per-image boxes and labels."""
    return load_street_scenes(split, "detection")


def reference_scene(index: int, size: int = SIZE) -> Scene:
    """Scene 'scene:<index>' of a static target: scene number ``index`` of the test split."""
    if index < 0:
        raise AttackgenError(f"scene index must be >= 0, got {index}")
    start, _ = SPLITS["test"]
    return generate_scene(start + index, size)


def colourise(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """A label map (H, W) as an RGB uint8 image with one fixed colour per class (for reports)."""
    lab = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    out = np.zeros((*lab.shape, 3), np.uint8)
    for cls, colour in enumerate(PALETTE):
        out[lab == cls] = colour
    out[(lab < 0) | (lab >= len(PALETTE))] = (0, 0, 0)
    return out


PALETTE = [(128, 64, 128), (244, 35, 232), (70, 130, 180), (70, 70, 70), (0, 0, 142), (220, 20, 60)]
"""Cityscapes colours for road, sidewalk, sky, building, car, person."""
