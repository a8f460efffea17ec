"""Printability as bounds (Sharif, Bhagavatula, Bauer, Reiter 2016, Accessorize to a crime: non-printability
score and total variation; Eykholt et al. 2018, RP2, arXiv:1707.08945, which reuses both for a sticker): a
threat model could only say `printability: true` (defect class 4: "printability and smoothness can only be
'unrestricted'"). Now it states a colour set, a largest non-printability score and a largest total variation;
the attacks enforce them and verification re-measures them, so an artefact a printer cannot make is not
counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.planner import plan
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.sticker import BoxSticker
from attackgen.run.objectives.classification import ClassificationObjective
from attackgen.run.printability import nps, palette_of, printed, snap, tv
from attackgen.run.verify import PrintabilityBound, printability_bound, verify
from taxonomy.errors import SpecError
from taxonomy.feasibility import answer
from taxonomy.spec import parse_spec

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"
GREYS = [[0.1], [0.9]]


def spec_with(name: str, printability: Any) -> Any:
    data = yaml.safe_load((SPECS / name).read_text())
    data["threat"]["capability"]["printability"] = printability
    return parse_spec(data)


def test_a_printability_bound_must_bound_something() -> None:
    with pytest.raises(SpecError, match="S7-printability-states-a-bound"):
        spec_with("physical-digits-sticker-box.yaml", {"colours": GREYS})
    with pytest.raises(SpecError, match="S7-printability-states-a-bound"):
        spec_with("physical-digits-sticker-box.yaml", {"colours": [[0.1], [0.9, 0.9]], "max_nps": 0})


def test_bounds_plan_the_projection_and_rule_out_an_attack_that_cannot_print() -> None:
    sticker = spec_with("physical-digits-sticker-box.yaml", {"colours": GREYS, "max_nps": 0, "max_tv": 0.5})
    assert answer(sticker).runnable == ("sticker_box",)
    item = plan(sticker).items[0]  # type: ignore[union-attr]
    assert item.params["snap_colours"] is True and item.params["palette"] == GREYS
    # the lens layer has no printability term: with bounds stated it is not the stated threat (rule E13)
    lens = spec_with("physical-digits-lens-sticker.yaml", {"max_nps": 0.01})
    ans = answer(lens)
    assert ans.verdict == "infeasible" and ans.blocking_ids == ("E13-attack-enforces-printability",)
    assert answer(spec_with("physical-digits-lens-sticker.yaml", True)).verdict == "runnable"  # penalty only


def test_measures_follow_the_definitions() -> None:
    x = torch.zeros(1, 1, 4, 4)
    cand = x.clone()
    cand[..., :2, :2] = torch.tensor([[0.1, 0.9], [0.9, 0.1]])
    region = printed(x, cand, 1e-6)
    assert int(region.sum()) == 4
    palette = palette_of(GREYS, 1, (0.0, 1.0))
    assert float(nps(cand, region, palette)) == pytest.approx(0.0, abs=1e-12)
    # the top-left pixel has both neighbours printed: sqrt(0.8^2 + 0.8^2) over 4 printed pixels
    assert float(tv(cand, region)) == pytest.approx((2 * 0.64) ** 0.5 / 4, rel=1e-4)
    grey = cand.clone()
    grey[..., :2, :2] = 0.5
    assert float(nps(grey, region, palette)) == pytest.approx(0.4 * 0.4)
    assert torch.equal(snap(x, grey - torch.tensor(0.01), palette, 1e-6)[..., :2, :2].unique(), torch.tensor([0.1]))


def test_verification_does_not_count_an_unprintable_success() -> None:
    model = load_builtin_model("digits-cnn").requires_grad_(False)
    data = load_builtin_data("digits")
    x, y = data.x[:64], data.y[:64]
    noise = (x + 0.6 * (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5)).clamp(0, 1)
    objective = ClassificationObjective(y)
    bound = PrintabilityBound(tuple(map(tuple, GREYS)), 0.0, None)
    free = verify(model, x, noise, objective, [], input_bounds=(0.0, 1.0), tol=1e-6)
    bounded = verify(model, x, noise, objective, [bound], input_bounds=(0.0, 1.0), tol=1e-6)
    assert int(free.success.sum()) > 0 and int(bounded.success.sum()) == 0
    assert bounded.counts["over_budget"] == int(free.success.sum())
    snapped = verify(model, x, snap(x, noise, palette_of(GREYS, 1, (0.0, 1.0)), 1e-6), objective, [bound],
                     input_bounds=(0.0, 1.0), tol=1e-6)
    assert bool((snapped.metrics["nps"] == 0).all()) and bool((snapped.within).all())


def test_sticker_in_printer_colours_still_fools_and_verifies() -> None:
    """RP2's sticker with its colours projected onto two printer greys: every candidate is within the stated
    bound as re-measured, and the sticker still turns digits into 3s (measured 0.47; a random sticker in the
    same greys: 0.03)."""
    model = load_builtin_model("digits-cnn").requires_grad_(False)
    spec = spec_with("physical-digits-sticker-box.yaml", {"colours": GREYS, "max_nps": 0})
    params = plan(spec).items[0].params  # type: ignore[union-attr]
    train, test = load_builtin_data("digits-train"), load_builtin_data("digits")
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 2:8, 2:8] = 1
    budget = Budget(norm=None, epsilon=None, mask=mask)
    keep = train.y != 3
    x, y = train.x[keep][:256], train.y[keep][:256]
    taken = {k: v for k, v in params.items() if k in BoxSticker.params_model.model_fields}
    sticker = BoxSticker(**{**taken, "steps": 150, "fit_size": 256})
    sticker.fit(WhiteBoxAccess(model, len(x)), x, ClassificationObjective(y, torch.full_like(y, 3)), budget)
    xt, yt = test.x[test.y != 3], test.y[test.y != 3]
    out = sticker.run(WhiteBoxAccess(model, len(xt)), xt, ClassificationObjective(yt, torch.full_like(yt, 3)), budget)
    bound = printability_bound(spec.threat.capability, (0.0, 1.0), 1e-6)
    assert bound is not None
    checked = verify(model, xt, out.x_adv, ClassificationObjective(yt, torch.full_like(yt, 3)), [bound],
                     input_bounds=(0.0, 1.0), tol=1e-6)
    assert bool(checked.within.all())
    noise = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    random_sticker = snap(xt, (xt + mask * noise).clamp(0, 1),
                          palette_of(GREYS, 1, (0.0, 1.0)), 1e-6)
    with torch.no_grad():
        chance = float((model(random_sticker).argmax(1) == 3).float().mean())
    rate = float(checked.success.float().mean())
    print(f"printer-colour sticker: {rate:.3f} of held-out digits become 3; random sticker {chance:.3f}")
    assert rate >= 0.3 and chance <= 0.1, (rate, chance)
