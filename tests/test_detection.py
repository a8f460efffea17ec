"""Detection: output format and adapter, box utilities, objectives per consequence, attacks on the shipped detector."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from attackgen.models.adapters import DetectionOutput, DetectorAdapter, InvalidModelOutput, check_detection_output
from attackgen.models.zoo.scenes import CAR, CLASSES, PERSON, load_street_scenes
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.detection import DetectionPGD, DetectorPatch
from attackgen.run.objectives import build_objective
from attackgen.run.objectives.detection import (
    DetVanishing,
    average_precision,
    box_iou,
    match,
    move_boxes,
)
from taxonomy.errors import AttackgenError
from taxonomy.spec import parse_spec

EPS = 8 / 255


def spec(consequence: dict[str, Any], classes: list[str] | None = CLASSES) -> Any:
    body: dict[str, Any] = {
        "name": "t", "task": "detection",
        "threat": {"consequence": consequence,
                   "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": EPS}],
                   "model_knowledge": "white_box"},
    }
    if classes is not None:
        body["classes"] = classes
    return parse_spec(body)


def dets(*items: list[tuple[float, float, float, float, float, int]], threshold: float = 0.5) -> DetectionOutput:
    out = []
    for rows in items:
        t = torch.tensor([r[:5] for r in rows], dtype=torch.float32).reshape(-1, 5)
        out.append({"boxes": t[:, :4], "scores": t[:, 4], "labels": torch.tensor([r[5] for r in rows],
                                                                                  dtype=torch.long)})
    return DetectionOutput(out, score_threshold=threshold)


CLEAN = dets([(10, 10, 14, 22, 0.9, PERSON), (30, 30, 45, 40, 0.8, CAR), (50, 5, 53, 12, 0.2, PERSON)])


# --------------------------------------------------------------------------- utilities


def test_box_iou_and_matching() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]])
    iou = box_iou(a, a)
    assert torch.allclose(iou.diag(), torch.ones(2)) and iou[0, 1] == pytest.approx(25 / 175)
    found = match(CLEAN[0], {"boxes": torch.tensor([[10.0, 10, 14, 22], [30, 30, 45, 40]]),
                             "labels": torch.tensor([PERSON, PERSON])})
    assert found.tolist() == [True, False]  # the car does not match a person


def test_average_precision_is_one_for_perfect_ranking() -> None:
    gt = [{"boxes": torch.tensor([[10.0, 10, 14, 22]]), "labels": torch.tensor([PERSON])}]
    assert average_precision(CLEAN, gt, PERSON) == pytest.approx(1.0)
    worse = dets([(50, 5, 53, 12, 0.95, PERSON), (10, 10, 14, 22, 0.9, PERSON)])
    assert average_precision(worse, gt, PERSON) == pytest.approx(0.5)


def test_move_boxes() -> None:
    moved = move_boxes(torch.tensor([[10.0, 10, 20, 30]]), (5, -2), 2.0)
    assert moved.tolist() == [[10.0, -2.0, 30.0, 38.0]]


# --------------------------------------------------------------------------- adapter


def test_detection_output_checks() -> None:
    good = [{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.long)}]
    assert check_detection_output(good, 1, score_threshold=0.3).score_threshold == 0.3
    cases = [
        (torch.zeros(1, 5), "got a tensor of shape (1, 5)"),
        ([{"boxes": torch.zeros(1, 4)}], "missing key(s) scores, labels"),
        ([{"boxes": torch.zeros(1, 5), "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.long)}],
         "expected shape (K, 4)"),
        ([{"boxes": torch.zeros(2, 4), "scores": torch.ones(1), "labels": torch.ones(2, dtype=torch.long)}],
         "2 boxes but scores (1,)"),
        ([{"boxes": torch.tensor([[5.0, 5, 2, 8]]), "scores": torch.ones(1), "labels": torch.ones(1).long()}],
         "xyxy"),
        ([{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1)}], "integer class"),
        (good + good, "1 images in, 2 detection dicts out"),
    ]
    for output, message in cases:
        with pytest.raises(InvalidModelOutput) as error:
            check_detection_output(output, 1)
        assert message in str(error.value)


def test_detector_adapter_wraps_a_torchvision_style_model() -> None:
    class TV(torch.nn.Module):  # what a torchvision detector returns in eval mode
        def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
            s = x.mean(dim=(1, 2, 3))
            return [{"boxes": torch.tensor([[1.0, 1, 5, 5]]), "scores": s[i : i + 1],
                     "labels": torch.tensor([1])} for i in range(x.shape[0])]

    adapter = DetectorAdapter(TV(), score_threshold=0.25)
    out = adapter(torch.rand(3, 3, 8, 8))
    assert isinstance(out, DetectionOutput) and len(out) == 3 and out.score_threshold == 0.25
    with pytest.raises(AttackgenError, match="score_threshold"):
        DetectorAdapter(TV(), score_threshold=2.0)


def test_bad_detector_output_fails_building_the_objective() -> None:
    with pytest.raises(InvalidModelOutput, match="detector output on the clean inputs"):
        build_objective(spec({"kind": "vanishing"}), None, torch.zeros(2, 6))


# --------------------------------------------------------------------------- objectives on exact outputs


def test_vanishing_counts_detections_at_the_threshold() -> None:
    obj = build_objective(spec({"kind": "vanishing", "classes": ["person"]}), None, CLEAN)
    assert isinstance(obj, DetVanishing) and obj.applicable.tolist() == [True]
    assert not obj.success(CLEAN).any()
    gone = dets([(10, 10, 14, 22, 0.4, PERSON), (30, 30, 45, 40, 0.8, CAR)])
    assert obj.success(gone).all()
    m = obj.metrics(CLEAN, gone)
    assert m["clean_detections"][0] == 1 and m["adversarial_detections"][0] == 0
    assert m["vanish_rate"][0] == 1 and m["other_classes_kept"][0] == 1
    assert obj.loss(CLEAN)[0] > obj.loss(gone)[0]
    assert obj.progress(CLEAN).tolist() == [0.0] and obj.progress(gone).tolist() == [1.0]
    # the dynamic 'remove classes' consequence on a detector is vanishing
    dyn = build_objective(spec({"kind": "dynamic_target", "remove_classes": ["person"]}), None, CLEAN)
    assert isinstance(dyn, DetVanishing) and dyn.success(gone).all()


def test_fabrication_mislabel_untargeted_and_boxes() -> None:
    fab = build_objective(spec({"kind": "fabrication", "classes": ["car"], "count": 1}), None, CLEAN)
    more = dets([*[(10, 10, 14, 22, 0.9, PERSON), (30, 30, 45, 40, 0.8, CAR), (2, 40, 12, 46, 0.7, CAR)]])
    assert not fab.success(CLEAN).any() and fab.success(more).all()
    assert fab.progress(CLEAN).tolist() == [0.0] and fab.progress(more).tolist() == [1.0]

    mis = build_objective(spec({"kind": "mislabel", "from_classes": ["car"], "to_class": "person"}), None, CLEAN)
    relabelled = dets([(10, 10, 14, 22, 0.9, PERSON), (30, 30, 45, 40, 0.8, PERSON)])
    assert not mis.success(CLEAN).any() and mis.success(relabelled).all()
    assert mis.progress(CLEAN).tolist() == [0.0] and mis.progress(relabelled).tolist() == [1.0]

    gt = [{"boxes": torch.tensor([[10.0, 10, 14, 22], [30, 30, 45, 40]]), "labels": torch.tensor([PERSON, CAR])}]
    unt = build_objective(spec({"kind": "untargeted"}), gt, CLEAN)
    assert not unt.success(CLEAN).any() and unt.success(dets([])).all()
    assert unt.metrics(CLEAN, CLEAN)["recall"][0] == 1.0
    half = dets([(10, 10, 14, 22, 0.9, PERSON)])
    assert unt.progress(CLEAN).tolist() == [0.0] and unt.progress(half).tolist() == [0.5]

    target = {"kind": "static_target", "target_boxes": [{"x0": 2, "y0": 2, "x1": 12, "y1": 8, "label": "car"}]}
    static = build_objective(spec(target), None, CLEAN)
    assert static.success(dets([(2, 2, 12, 8, 0.9, CAR)])).all() and not static.success(CLEAN).any()
    assert static.progress(dets([(2, 2, 12, 8, 0.9, CAR)])).tolist() == [1.0]
    # the box found, plus two extra detections: a third of the way
    extra = dets([(2, 2, 12, 8, 0.9, CAR), (10, 10, 14, 22, 0.9, PERSON), (30, 30, 45, 40, 0.8, CAR)])
    assert static.progress(extra).tolist() == [1 / 3]

    conf = build_objective(spec({"kind": "confusing_target", "classes": ["car"], "shift": [8, 0]}), None, CLEAN)
    moved = dets([(10, 10, 14, 22, 0.9, PERSON), (38, 30, 53, 40, 0.8, CAR)])
    assert conf.success(moved).all() and not conf.success(CLEAN).any()


def test_unknown_classes_name_the_field() -> None:
    with pytest.raises(AttackgenError, match=r"threat.consequence.classes: class 'bus'"):
        build_objective(spec({"kind": "vanishing", "classes": ["bus"]}), None, CLEAN)
    with pytest.raises(AttackgenError, match=r"threat\.consequence\.to_class"):
        build_objective(spec({"kind": "mislabel", "to_class": "tram"}), None, CLEAN)
    with pytest.raises(AttackgenError, match=r"threat\.consequence\.rule"):
        build_objective(spec({"kind": "dynamic_target", "rule": "least_likely"}), None, CLEAN)


# --------------------------------------------------------------------------- attacks on the shipped detector


@pytest.fixture(scope="module")
def street() -> tuple[torch.nn.Module, Any, DetectionOutput]:
    from attackgen.models.zoo.dense_models import load_street_det

    data = load_street_scenes("test", "detection", count=48)
    model = load_street_det()
    with torch.no_grad():
        out = model(data.x)
    rows = [i for i in range(len(data)) if int((out.kept()[i]["labels"] == PERSON).sum()) >= 1][:3]
    data = data.take(rows)
    with torch.no_grad():
        clean = model(data.x)
    return model, data, clean


def test_detection_pgd_makes_pedestrians_vanish(street: tuple[torch.nn.Module, Any, DetectionOutput]) -> None:
    model, data, clean = street
    obj = build_objective(spec({"kind": "vanishing", "classes": ["person"]}), data.y, clean)
    assert obj.applicable.all()
    out = DetectionPGD(steps=20, rel_stepsize=0.1).run(WhiteBoxAccess(model, len(data)), data.x, obj,
                                                       Budget(epsilon=EPS))
    assert (out.x_adv - data.x).abs().max() <= EPS + 1e-6
    with torch.no_grad():
        adv = model(out.x_adv.clamp(0, 1))
    assert bool(obj.success(adv).all()), obj.metrics(clean, adv)


def test_detector_patch_fits_with_eot(street: tuple[torch.nn.Module, Any, DetectionOutput]) -> None:
    model, data, clean = street
    obj = build_objective(spec({"kind": "vanishing", "classes": ["person"]}), data.y, clean)
    patch = DetectorPatch(steps=3, batch_size=3, eot_samples=2, area_fraction=0.04)
    budget = Budget(norm=None, epsilon=None)
    fitted = patch.fit(WhiteBoxAccess(model, len(data)), data.x, obj, budget)
    assert fitted.shape[0] == 3 and float(fitted.min()) >= 0 and float(fitted.max()) <= 1
    x_adv = patch.run(WhiteBoxAccess(model, len(data)), data.x, obj, budget).x_adv
    changed = (x_adv != data.x).any(1).flatten(1).sum(1)
    assert (changed <= 0.04 * 64 * 64 + 1).all() and (changed > 0).all()
    control = patch.occlusion_control(data.x, budget)
    assert torch.equal((control != data.x).any(1), (x_adv != data.x).any(1))
