"""The decision-based attack for dense outputs (Brendel, Rauber, Bethge 2018, arXiv:1712.04248, applied to a
segmentation map and to a detector's boxes): label-only vanishing and untargeted segmentation were gaps of the
taxonomy (defect class 5, "decision-based attacks on dense outputs (vanishing with a blank start)"); they
validate, plan and run on the built-in street models now, every query through the budgeted label oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from attackgen.models.zoo.scenes import load_street_scenes
from attackgen.run.access import LabelOracle
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.dense_boundary import DenseBoundary, blank, blurred
from attackgen.run.objectives import build_objective
from attackgen.run.objectives.detection import decisions_of
from taxonomy.feasibility import answer
from taxonomy.space import ThreatCell, cell_answer
from taxonomy.spec import load_spec, parse_spec

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"
CLASSES = ["road", "sidewalk", "sky", "building", "car", "person"]
PERSON = 5


def spec(task: str, consequence: Any, budget: int) -> Any:
    return parse_spec({"name": "dense-decisions", "task": task, "classes": CLASSES, "threat": {
        "consequence": consequence, "imperceptibility": [{"kind": "lp", "norm": 2, "mode": "minimal"}],
        "model_knowledge": {"kind": "label_only", "query_budget": budget}}})


def test_label_only_vanishing_is_runnable_not_a_gap() -> None:
    ans = answer(load_spec(SPECS / "det-street-vanishing-label-only.yaml"))
    assert ans.verdict == "runnable" and ans.runnable == ("dense_boundary",)
    cell = ThreatCell("detection", "vanishing", "individual", "lp:2", "label_only", "none", "digital", False)
    assert cell_answer(cell).verdict == "runnable"
    # a budget below the walk's minimum is infeasible by rule A8, not planned with a shrunken budget
    small = answer(spec("detection", {"kind": "vanishing", "classes": ["person"]}, 200))
    assert small.verdict == "infeasible" and "A8-query-budget-covers-attack" in small.blocking_ids


def test_detector_decisions_carry_no_scores() -> None:
    from attackgen.models.zoo.dense_models import load_street_det

    data = load_street_scenes("test", "detection", count=4)
    with torch.no_grad():
        out = load_street_det()(data.x)
    shown = decisions_of(out)
    for full, seen in zip(out.kept(), shown, strict=True):
        assert torch.equal(full["boxes"], seen["boxes"]) and torch.equal(full["labels"], seen["labels"])
        assert bool((seen["scores"] == 1).all())


@pytest.fixture(scope="module")
def people() -> tuple[Any, Any, Any]:
    from attackgen.models.zoo.dense_models import load_street_det

    model = load_street_det()
    data = load_street_scenes("test", "detection", count=32)
    with torch.no_grad():
        out = model(data.x)
    rows = [i for i in range(len(data)) if int((out.kept()[i]["labels"] == PERSON).sum()) >= 1][:3]
    data = data.take(rows)
    with torch.no_grad():
        clean = model(data.x)
    return model, data, clean


def test_people_vanish_from_label_queries_within_the_budget(people: tuple[Any, Any, Any]) -> None:
    model, data, clean = people
    budget = 300
    obj = build_objective(spec("detection", {"kind": "vanishing", "classes": ["person"]}, budget), data.y, clean)
    assert bool(obj.applicable.all())
    oracle = LabelOracle(model, len(data.x), budget, decide=decisions_of)
    out = DenseBoundary(max_queries=5000).run(oracle, data.x, obj, Budget(norm="2", epsilon=None))
    assert int(oracle.queries.max()) <= budget  # the oracle's budget, not the attack's own 5,000, stops it
    with torch.no_grad():
        assert bool(obj.success(model(out.x_adv)).all())  # verified on the detector's full output
    start = torch.minimum((blank(data.x) - data.x).flatten(1).norm(dim=1),
                          (blurred(data.x, 0.25) - data.x).flatten(1).norm(dim=1))
    walked = (out.x_adv - data.x).flatten(1).norm(dim=1)
    assert bool((walked < 0.8 * start).all()), (walked, start)


def test_segmentation_untargeted_from_label_maps() -> None:
    from attackgen.models.zoo.dense_models import load_street_seg

    model = load_street_seg()
    data = load_street_scenes("test", "segmentation", count=2)
    with torch.no_grad():
        clean = model(data.x)
    obj = build_objective(spec("segmentation", "untargeted", 150), data.y, clean)
    oracle = LabelOracle(model, len(data.x), 150)
    out = DenseBoundary().run(oracle, data.x, obj, Budget(norm="2", epsilon=None))
    assert int(oracle.queries.max()) <= 150
    with torch.no_grad():
        assert bool(obj.success(model(out.x_adv)).all())
        blur_ok = obj.success(model(blurred(data.x, 0.25)))
    start = torch.where(blur_ok, blurred(data.x, 0.25).sub(data.x).flatten(1).norm(dim=1),
                        blank(data.x).sub(data.x).flatten(1).norm(dim=1))  # the start the walk took
    assert bool(((out.x_adv - data.x).flatten(1).norm(dim=1) < 0.9 * start).all())
