"""The box sticker (RP2, Eykholt et al. 2018, arXiv:1707.08945) on the built-in digits CNN.

RP2's threat model: white-box, a physical sticker at a fixed place on the object (``spatial: box``), many
views of the object (EOT), printable colours. Before this attack, `spatial: box` had no attack (a gap)
while a fixed-position patch had one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.document import Infeasible
from attackgen.plan.planner import plan
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.sticker import BoxSticker
from attackgen.run.eot import EOTSampler
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.feasibility import answer
from taxonomy.spec import load_spec

SPEC = Path(__file__).resolve().parents[1] / "examples" / "specs" / "physical-digits-sticker-box.yaml"
VIEWS = {"rotation_deg": (-10, 10), "scale": (0.95, 1.0), "translate": 0.03, "brightness": (-0.05, 0.05),
         "noise_std": 0.02, "samples": 2}


def test_rp2_box_spec_validates_and_plans_the_sticker() -> None:
    spec = load_spec(SPEC)
    assert answer(spec).verdict == "runnable"
    result = plan(spec)
    assert not isinstance(result, Infeasible)
    item = result.items[0]
    assert item.attack == "sticker_box"
    assert item.params["transformations"]["rotation_deg"] == [-10.0, 10.0] and item.params["printability"] is True


def test_sticker_stays_in_its_box_and_survives_the_views() -> None:
    model = load_builtin_model("digits-cnn").requires_grad_(False)
    train, test = load_builtin_data("digits-train"), load_builtin_data("digits")
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 2:8, 2:8] = 1  # the spec's box [0.125, 0.125, 0.5, 0.5] on a 16x16 digit
    budget = Budget(norm=None, epsilon=None, mask=mask)
    keep = train.y != 3
    x, y = train.x[keep][:256], train.y[keep][:256]
    sticker = BoxSticker(steps=150, transformations=VIEWS, printability=True)
    sticker.fit(WhiteBoxAccess(model, len(x)), x, ClassificationObjective(y, torch.full_like(y, 3)), budget)
    held = test.y != 3
    xt = test.x[held]
    stuck = sticker.apply(xt, budget)
    assert float(((stuck - xt).abs() * (1 - mask)).max()) == 0.0  # nothing outside the box changes
    gen = torch.Generator().manual_seed(7)
    sampler = EOTSampler.from_spec(VIEWS)
    with torch.no_grad():
        viewed = sampler.transform(stuck, sampler.sample(len(stuck), gen, stuck.device), gen)
        under_views = float((model(viewed).argmax(1) == 3).float().mean())
        noise = (xt + mask * (torch.rand(1, 1, 16, 16, generator=gen) * 2 - 1)).clamp(0, 1)
        random_sticker = float((model(noise).argmax(1) == 3).float().mean())
    assert under_views >= 0.3 and random_sticker <= 0.05, (under_views, random_sticker)


def test_sticker_without_a_box_is_a_clear_error() -> None:
    from taxonomy.errors import AttackgenError

    model = load_builtin_model("digits-cnn")
    x = torch.rand(4, 1, 16, 16)
    with pytest.raises(AttackgenError, match="spatial"):
        BoxSticker(steps=1).fit(WhiteBoxAccess(model, 4), x, ClassificationObjective(torch.zeros(4, dtype=torch.long)),
                                Budget(norm=None))
