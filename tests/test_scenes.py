"""The synthetic street scenes and the built-in dense models: seeded, consistent, registered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attackgen.models.adapters import DetectionOutput
from attackgen.models.zoo.scenes import (
    CAR,
    CLASSES,
    LIGHTING,
    PERSON,
    WEATHER,
    colourise,
    generate_scene,
    load_street_scenes,
)


def test_scenes_are_seeded_by_index() -> None:
    a, b, c = generate_scene(17), generate_scene(17), generate_scene(18)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.boxes, b.boxes) and a.meta == b.meta
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(generate_scene(17, seed=1).image, a.image)


def test_scene_content_is_consistent() -> None:
    for index in range(40):
        s = generate_scene(index)
        assert s.image.shape == (3, 64, 64) and s.image.dtype == np.float32
        assert s.image.min() >= 0.0 and s.image.max() <= 1.0
        assert s.labels.shape == (64, 64) and set(np.unique(s.labels)) <= set(range(len(CLASSES)))
        assert s.meta["lighting"] in LIGHTING and s.meta["weather"] in WEATHER
        assert s.meta["n_persons"] == int((s.box_labels == PERSON).sum())
        for (x0, y0, x1, y1), label in zip(s.boxes.astype(int), s.box_labels, strict=False):
            assert label in (CAR, PERSON)
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert (s.labels[y0:y1, x0:x1] == label).sum() >= 6  # the box holds its object's pixels


def test_scene_statistics_cover_every_class_and_context() -> None:
    scenes = [generate_scene(i) for i in range(200)]
    labels = np.stack([s.labels for s in scenes])
    assert np.all(np.bincount(labels.ravel(), minlength=6) > 0)
    assert np.mean([s.meta["has_person"] for s in scenes]) > 0.6
    assert {s.meta["lighting"] for s in scenes} == set(LIGHTING)
    assert {s.meta["weather"] for s in scenes} == set(WEATHER)


def test_loader_gives_labeled_data_for_both_tasks() -> None:
    seg = load_street_scenes("test", "segmentation", count=8)
    det = load_street_scenes("test", "detection", count=8)
    assert seg.x.shape == (8, 3, 64, 64) and seg.y.shape == (8, 64, 64) and seg.y.dtype == torch.int64
    assert torch.equal(seg.x, det.x) and seg.classes == CLASSES
    assert isinstance(det.y, list) and set(det.y[0]) == {"boxes", "labels"}
    assert set(seg.metadata) >= {"lighting", "weather", "has_person"}
    assert len(seg.take([1, 3])) == 2 and seg.take([1, 3]).metadata["lighting"][0] == seg.metadata["lighting"][1]
    train = load_street_scenes("train", "segmentation", count=4)
    assert not torch.equal(train.x, seg.x[:4])  # disjoint index ranges


def test_builtin_registries_know_the_street_models_and_data() -> None:
    from attackgen.models.zoo import BUILTIN_DATA, BUILTIN_MODELS, load_builtin_data, load_builtin_model

    assert {"street-seg", "street-det"} <= set(BUILTIN_MODELS)
    assert {"street-scenes", "street-scenes-det"} <= set(BUILTIN_DATA)
    data = load_builtin_data("street-scenes")
    assert data.y.shape[1:] == (64, 64) and len(data) == 256
    seg = load_builtin_model("street-seg")
    det = load_builtin_model("street-det")
    with torch.no_grad():
        logits = seg(data.x[:2])
        dets = det(data.x[:2])
    assert logits.shape == (2, len(CLASSES), 64, 64)
    assert isinstance(dets, DetectionOutput) and 0 < dets.score_threshold < 1
    assert set(dets[0]) == {"boxes", "scores", "labels"}
    assert set(dets[0]["labels"].tolist()) <= {CAR, PERSON}


def test_shipped_weights_are_small_and_accurate() -> None:
    import json

    from attackgen.models.zoo.dense_models import DET_WEIGHTS, SEG_WEIGHTS, WEIGHTS_DIR

    assert SEG_WEIGHTS.stat().st_size + DET_WEIGHTS.stat().st_size < 400_000
    summary = json.loads((WEIGHTS_DIR / "dense_models.json").read_text())
    assert summary["street-seg"]["test"]["miou"] > 0.6
    assert summary["street-det"]["test"]["map50"] > 0.5


def test_colourise_maps_each_class_to_its_colour() -> None:
    lab = np.arange(6).reshape(2, 3)
    rgb = colourise(lab)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert len({tuple(c) for c in rgb.reshape(-1, 3)}) == 6


@pytest.mark.parametrize("size", [48, 96])
def test_other_sizes_scale_the_scene(size: int) -> None:
    s = generate_scene(3, size=size)
    assert s.image.shape == (3, size, size) and s.labels.shape == (size, size)
