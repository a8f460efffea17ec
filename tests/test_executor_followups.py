"""Executor follow-ups: detector imperceptibility verified during a run, patch sides that never exceed
the area budget, and a fixed patch location."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from attackgen.plan.document import ItemContext, Plan, PlanItem
from attackgen.plan.planner import plan as make_plan
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.patch import AdversarialPatch
from attackgen.run.executor import Executor, RunError, RunOptions, patch_side
from taxonomy.errors import AttackgenError
from taxonomy.spec import parse_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "specs"

DETECTOR = {"kind": "detector", "detectors": ["feature_squeezing"], "access": "white_box", "max_detection_rate": 0.1}
LINF = {"kind": "lp", "norm": "inf", "epsilon": 0.1}


def spec_for(imperceptibility: list[dict], **threat: object):
    data = {"name": "followups", "task": "classification", "classes": [str(i) for i in range(10)],
            "threat": {"consequence": "untargeted", "imperceptibility": imperceptibility,
                       "model_knowledge": "white_box", **threat}}
    return parse_spec(data)


def executor(tmp_path, spec, items: list[PlanItem], limit: int = 48, folder: str = "out") -> Executor:
    plan = Plan(spec_name=spec.name, spec_hash=spec.spec_hash(), spec=spec.model_dump(mode="json"),
                epsilons=[], items=items)
    return Executor(plan, "digits-cnn", "digits", tmp_path / folder, RunOptions(limit=limit, progress=False))


def pgd(name: str, **params: object) -> PlanItem:
    return PlanItem(attack=name, epsilon=0.1, params={"steps": 40, **params}, context=ItemContext(norm="inf"))


def test_detector_flags_count_as_failures_and_the_aware_attack_is_detected_less(tmp_path):
    spec = spec_for([DETECTOR, LINF])
    items = [pgd("pgd_linf", step_size=0.01),
             pgd("detector_aware_pgd", step_size=0.005, detectors=["feature_squeezing"])]
    run = executor(tmp_path, spec, items)
    result = run.run()
    plain, aware = result.items
    # plain PGD fools the model on nearly every input, but the detector flags most of those candidates
    assert plain.metrics["detected_rate"] > 0.5
    assert run.states[0].counts["detected"] > 0
    # no flagged candidate is a success: the kept successes, re-checked by the verifier's own detector
    detector = run.resources.detectors()[0]
    with np.load(tmp_path / "out" / "examples.npz") as examples:
        adversarial = torch.as_tensor(examples["adversarial"])
    assert len(adversarial) > 0 and not bool(detector.detect(adversarial).any())
    assert all(r.metrics.get("detected") == 0.0 for item in (plain, aware) for r in item.inputs if r.success)
    fooled = sum(1 for r in plain.inputs if r.metrics.get("detected") is not None)
    assert plain.n_success == fooled - run.states[0].counts["detected"]
    assert any(f.check == "verification.detected" for f in result.flags)
    # On the same inputs (not only on plain PGD's survivors, a handful of hard inputs whose figures swing
    # with the random starts), the aware attack is flagged less and succeeds more.
    alone = executor(tmp_path, spec, items[1:], folder="aware").run().items[0]
    assert alone.n_attacked == plain.n_attacked
    assert alone.metrics["detected_rate"] < plain.metrics["detected_rate"] - 0.2
    assert alone.n_success > plain.n_success


def test_unknown_detector_names_the_field(tmp_path):
    spec = spec_for([{**DETECTOR, "detectors": ["feature_squeezing", "magnet"]}, LINF])
    with pytest.raises(RunError, match=r"threat\.imperceptibility\[0\]\.detectors\[1\]: unknown detector 'magnet'"):
        executor(tmp_path, spec, [pgd("pgd_linf")])


@pytest.mark.parametrize("size", [16, 28])
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5])
def test_patch_area_never_exceeds_the_fraction(size, fraction):
    limit = fraction * size * size
    side = patch_side(fraction, size, size)
    assert side * side <= limit and (side + 1) ** 2 > limit  # the largest square within the area
    resolution, nominal, _ = AdversarialPatch(area_fraction=fraction).geometry((1, 1, size, size))
    assert resolution * resolution <= limit and nominal == resolution
    patch = AdversarialPatch(area_fraction=fraction, placement="fixed", location=(0.3, 0.6))
    patch.fitted = torch.rand(1, resolution, resolution, generator=torch.Generator().manual_seed(0))
    x = torch.zeros(3, 1, size, size)
    x_adv, region = patch.apply_with_region(x, Budget(norm=None))
    assert float(region.flatten(1).sum(dim=1).max()) <= limit
    assert int((x_adv != x).flatten(1).sum(dim=1).max()) <= limit


def test_ten_percent_of_28x28_is_an_8_pixel_side():
    assert patch_side(0.1, 28, 28) == 8  # round() gave 9: 81 pixels, 10.3 %
    assert patch_side(0.25, 16, 16) == 8  # an exact square stays exact


def test_fixed_location_places_the_patch_at_its_top_left_corner(tmp_path):
    spatial = {"kind": "patch", "area_fraction": 0.1, "placement": "fixed", "location": [0.125, 0.125]}
    spec = spec_for([LINF], capability={"spatial": spatial})
    run = executor(tmp_path, spec, [pgd("pgd_linf")], limit=8)
    mask = run.prepare().mask(torch.arange(4))
    rows, cols = mask[0, 0].nonzero(as_tuple=True)
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (2, 6, 2, 6)
    overhang = spec_for([LINF], capability={"spatial": {**spatial, "location": [1.0, 0.0]}})
    run = executor(tmp_path, overhang, [pgd("pgd_linf")], limit=8, folder="overhang")
    rows, cols = run.prepare().mask(torch.arange(1))[0, 0].nonzero(as_tuple=True)
    assert (int(rows.min()), int(cols.min()), int(cols.max())) == (0, 11, 15)  # moved inside
    # the attack on its own puts the same square there; without a location it is centred
    x = torch.zeros(1, 1, 16, 16)
    for location, corner in (((0.125, 0.125), (2, 2)), (None, (5, 5))):
        patch = AdversarialPatch(area_fraction=0.1, placement="fixed", location=location)
        patch.fitted = torch.ones(1, 5, 5)
        _, region = patch.apply_with_region(x, Budget(norm=None))
        rows, cols = region[0, 0].nonzero(as_tuple=True)
        assert (int(rows.min()), int(cols.min())) == corner and int(region.sum()) == 25


def test_location_validation_and_planner_pass_through():
    fixed = {"kind": "patch", "area_fraction": 0.1, "placement": "fixed", "location": [0.0, 0.5]}
    with pytest.raises(AttackgenError, match="location needs placement: fixed"):
        spec_for([LINF], capability={"spatial": {**fixed, "placement": "random"}})
    with pytest.raises(AttackgenError, match=r"location must be fractions in \[0, 1\]"):
        spec_for([LINF], capability={"spatial": {**fixed, "location": [0.2, 1.5]}})
    with pytest.raises(AttackgenError, match=r"params\.location \(attack 'AdversarialPatch'\): expected \(x, y\) "
                       r"fractions in \[0, 1\], got \[-0\.1, 0\.0\]"):
        AdversarialPatch(location=(-0.1, 0.0))
    spec = parse_spec(yaml.safe_load((EXAMPLES / "physical-digits-patch.yaml").read_text()))
    patches = [i for i in make_plan(spec).items if i.attack == "patch_eot"]
    assert patches and patches[0].params["location"] == [0.125, 0.125]
    assert patches[0].params["placement"] == "fixed"
