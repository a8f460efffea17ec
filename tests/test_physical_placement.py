"""Physical threats beyond patches: the printed photo (Kurakin, Goodfellow, Bengio 2016, arXiv:1607.02533;
Athalye et al. 2018, EOT, arXiv:1707.07397) and the lens sticker (Li, Schmidt, Kolter 2019,
arXiv:1904.00759). Both were rejected by rules that assumed every physical perturbation is an image-agnostic
patch in a region of the scene (defect class 4); now they validate, plan and run on the digits CNN with EOT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.document import Infeasible
from attackgen.plan.planner import plan
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.eot_pgd import EOTPGD
from attackgen.run.attacks.lens import LensOverlay
from attackgen.run.attacks.pgd import LinfPGD
from attackgen.run.eot import EOTSampler
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.errors import SpecError
from taxonomy.feasibility import answer
from taxonomy.spec import load_spec, parse_spec

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"
VIEWS = {"rotation_deg": (-10, 10), "scale": (0.95, 1.0), "translate": 0.05, "brightness": (-0.05, 0.05),
         "noise_std": 0.02, "samples": 4}


@pytest.fixture(scope="module")
def model() -> Any:
    return load_builtin_model("digits-cnn").requires_grad_(False)


def fooled_under_views(model: Any, x: torch.Tensor, y: torch.Tensor, seed: int, overlay: Any = None) -> float:
    """Share of inputs misclassified under fresh transformations (4 draws each); an overlay is added after them."""
    sampler, gen = EOTSampler.from_spec(VIEWS), torch.Generator().manual_seed(seed)
    rates = []
    with torch.no_grad():
        for _ in range(4):
            seen = sampler.transform(x, sampler.sample(len(x), gen, x.device), gen)
            if overlay is not None:
                seen = (seen + overlay).clamp(0, 1)
            rates.append(float((model(seen).argmax(1) != y).float().mean()))
    return sum(rates) / len(rates)


def test_printed_photo_validates_and_plans_eot_pgd() -> None:
    spec = load_spec(SPECS / "physical-digits-printed-photo.yaml")
    ans = answer(spec)
    assert ans.verdict == "runnable" and "eot_pgd" in ans.runnable
    result = plan(spec)
    assert not isinstance(result, Infeasible)
    item = result.items[0]
    assert item.attack == "eot_pgd" and item.params["eot_samples"] == 4
    assert item.params["transformations"]["translate"] == 0.05


def test_eot_pgd_survives_the_views_where_pgd_does_not(model: Any) -> None:
    test = load_builtin_data("digits")
    with torch.no_grad():
        ok = model(test.x).argmax(1) == test.y
    x, y = test.x[ok][:32], test.y[ok][:32]
    budget = Budget(norm="inf", epsilon=0.1)
    photo = EOTPGD(steps=30, transformations=VIEWS).run(WhiteBoxAccess(model, len(x)), x, ClassificationObjective(y),
                                                       budget).x_adv
    plain = LinfPGD(steps=30, early_stop=False).run(WhiteBoxAccess(model, len(x)), x, ClassificationObjective(y),
                                                     budget).x_adv
    assert float((photo - x).abs().max()) <= 0.1 + 1e-6
    eot, pgd = fooled_under_views(model, photo, y, 9), fooled_under_views(model, plain, y, 9)
    assert eot >= 0.6 and eot >= pgd + 0.3, (eot, pgd)


def test_lens_sticker_validates_plans_and_fools_views(model: Any) -> None:
    spec = load_spec(SPECS / "physical-digits-lens-sticker.yaml")
    assert answer(spec).runnable == ("lens_overlay",)
    result = plan(spec)
    assert not isinstance(result, Infeasible) and result.items[0].attack == "lens_overlay"
    train, test = load_builtin_data("digits-train"), load_builtin_data("digits")
    budget = Budget(norm="inf", epsilon=0.2)
    lens = LensOverlay(steps=100, transformations={**VIEWS, "samples": 2})
    lens.fit(WhiteBoxAccess(model, 300), train.x[:300], ClassificationObjective(train.y[:300]), budget)
    assert float(lens.fitted.abs().max()) <= 0.2 + 1e-6
    with torch.no_grad():
        ok = model(test.x).argmax(1) == test.y
    x, y = test.x[ok], test.y[ok]
    stripes = (torch.randint(0, 2, (1, 1, 1, 16), generator=torch.Generator().manual_seed(2)) * 2 - 1) * 0.2
    with_lens = fooled_under_views(model, x, y, 4, lens.fitted)
    random_layer = fooled_under_views(model, x, y, 4, stripes.float())
    assert with_lens >= 0.6 and with_lens >= random_layer + 0.3, (with_lens, random_layer)


def base(**capability: Any) -> dict[str, Any]:
    return {"name": "phys", "task": "classification",
            "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
                       "model_knowledge": "white_box", "data_knowledge": "training",
                       "capability": {"feed": "physical", "transformations": {}, "printability": True, **capability}}}


def test_physical_rules_by_placement() -> None:
    """Pixel noise with no placement stays infeasible (E2, E3 as before); a lens layer for one input is
    infeasible by E3 (Li et al. 2019: the lens sits in front of every scene); a printed photo for one input
    is feasible (Kurakin et al. 2016)."""
    old = answer(parse_spec(base()))
    assert {"E2-physical-needs-scene-artefact", "E3-physical-needs-shared-artefact"} <= set(old.blocking_ids)
    lens_one = answer(parse_spec(base(placement="overlay")))
    assert lens_one.blocking_ids == ("E3-physical-needs-shared-artefact",)
    assert answer(parse_spec(base(placement="everywhere"))).verdict == "runnable"


@pytest.mark.parametrize("capability", [{"placement": "box"}, {"placement": "everywhere",
                                                               "spatial": {"kind": "patch", "area_fraction": 0.1}}])
def test_placement_must_fit_the_spatial_constraint(capability: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="S5-placement-fits-spatial"):
        parse_spec(base(**capability))
