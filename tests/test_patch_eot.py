"""The physical patch with EOT, the transformation sampler, and masks that confine every gradient attack."""

from __future__ import annotations

import math

import pytest
import torch

from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.run.access import NoAccess, WhiteBoxAccess
from attackgen.run.attacks.base import AttackEnv, Budget
from attackgen.run.attacks.detector_evasion import DetectorAwarePGD
from attackgen.run.attacks.lbfgs import LBFGS
from attackgen.run.attacks.newtonfool import NewtonFool
from attackgen.run.attacks.patch import AdversarialPatch, mask_boxes, non_printability, total_variation
from attackgen.run.attacks.pgd import LinfPGD
from attackgen.run.attacks.ssim import SSIMConstrainedPGD
from attackgen.run.attacks.transfer import TransferDIFGSM, TransferMIFGSM
from attackgen.run.attacks.universal import UniversalPerturbation
from attackgen.run.eot import EOTSampler, TransformParams
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.axes import Transformations
from taxonomy.errors import AttackgenError

PHYSICAL = {"rotation_deg": (-15, 15), "scale": (0.9, 1.0), "translate": 0.05, "brightness": (-0.05, 0.05),
            "noise_std": 0.02, "samples": 2}


@pytest.fixture(scope="module")
def model():
    return load_builtin_model("digits-cnn").requires_grad_(False)


@pytest.fixture(scope="module")
def digits():
    test, train = load_builtin_data("digits"), load_builtin_data("digits-train")
    return train.x, train.y, test.x, test.y


# ---------------------------------------------------------------------- the sampler


def test_render_patch_changes_only_its_region():
    sampler = EOTSampler.from_spec(Transformations(rotation_deg=(-30, 30), scale=(0.8, 1.2)))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 16, 16, generator=gen)
    params = sampler.sample(64, gen, torch.device("cpu"), ((3.0, 13.0), (3.0, 13.0)))
    patch = torch.rand(1, 5, 5, generator=gen)
    out, region = sampler.render_patch(x, patch, 5.0, params, gen)
    assert out.shape == x.shape and region.shape == (64, 1, 16, 16)
    assert torch.equal(out * (1 - region), x * (1 - region))  # untouched outside, bit for bit
    areas = region.flatten(1).sum(dim=1)
    assert float(areas.min()) > 0 and float(areas.max()) <= math.ceil((5 * 1.2 + 1.5) ** 2)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_upright_patch_lands_exactly():
    sampler = EOTSampler.identity()
    params = TransformParams(torch.zeros(1), torch.ones(1), torch.tensor([5.5]), torch.tensor([10.5]),
                             torch.zeros(1), 0.0)
    patch = torch.arange(25.0).view(1, 5, 5) / 25
    out, region = sampler.render_patch(torch.zeros(1, 1, 16, 16), patch, 5.0, params, None)
    expected = torch.zeros(16, 16)
    expected[8:13, 3:8] = 1
    assert torch.equal(region[0, 0], expected)
    assert torch.allclose(out[0, 0, 8:13, 3:8], patch[0], atol=1e-6)  # pixel for pixel at scale 1, angle 0


def test_whole_image_transform_identity_and_shapes():
    x = torch.rand(4, 3, 12, 20)
    gen = torch.Generator().manual_seed(1)
    same = EOTSampler.identity()
    assert torch.allclose(same.transform(x, same.sample(4, gen, x.device), gen), x, atol=1e-6)
    moved = EOTSampler(rotation_deg=(10, 10), scale=(1, 1), translate=0.0, brightness=(0, 0), noise_std=0)
    assert not torch.allclose(moved.transform(x, moved.sample(4, gen, x.device), gen), x)


def test_impossible_transformations_are_rejected():
    with pytest.raises(AttackgenError, match=r"transformations.scale: the lower end"):
        EOTSampler(scale=(1.2, 0.8))
    with pytest.raises(AttackgenError, match=r"transformations.scale: must stay above 0"):
        EOTSampler(scale=(0.0, 1.0))
    with pytest.raises(AttackgenError, match=r"transformations: unknown fields"):
        EOTSampler.from_spec({"rotation": (0, 1)})
    # a patch that cannot exist or cannot fit once scaled
    with pytest.raises(AttackgenError, match=r"spatial.area_fraction: .* leaves a patch side"):
        AdversarialPatch(area_fraction=0.001).geometry((1, 1, 16, 16))
    with pytest.raises(AttackgenError, match=r"area_fraction: 0.1 of a 16x16 input at scale up to 20.0 leaves"):
        AdversarialPatch(area_fraction=0.1, transformations={"scale": (20.0, 20.0)}).geometry((1, 1, 16, 16))
    with pytest.raises(AttackgenError, match=r"params.area_fraction \(attack 'AdversarialPatch'\): input should be "
                       r"less than or equal to 1 \(got 1.5\)"):
        AdversarialPatch(area_fraction=1.5)


def test_regularisers():
    flat = torch.full((1, 4, 4), 0.5)
    assert float(total_variation(flat)) == 0
    assert float(total_variation(torch.rand(1, 4, 4))) > 0
    palette = torch.tensor([[0.5]])
    assert float(non_printability(flat, palette)) < 1e-5
    assert float(non_printability(torch.zeros(1, 4, 4), palette)) > 0.4


# ---------------------------------------------------------------------- the patch


def hit_rate(model, x, target):
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == target).float().mean())


TOP_LEFT = (2 / 16, 2 / 16)  # top-left corner of the 5x5 square at rows 2-6, columns 2-6


def test_patch_at_ten_percent_area_makes_half_the_target(model, digits):
    """A 5x5 patch (25 px = 9.8 % of a 16x16 digit) fixed near the top left, fitted on the training split.

    Measured on the held-out test digits not already 3: 0.61 become 3 (a random patch at the same
    place: 0.00). Where the patch sits matters on this CNN: a scan over all 144 places of a 5x5 patch
    (200 steps each) found the best place reaching 0.67 (target 7), 0.58 (5), 0.57 (3), 0.49 (6),
    0.46 (0), 0.43 (2), 0.33 (4), 0.31 (1); a patch placed anywhere at random reached at most 0.11
    (targets 0, 2, 8).
    """
    x_fit, y_fit, x, y = digits
    patch = AdversarialPatch(seed=0, area_fraction=0.1, placement="fixed", location=TOP_LEFT, steps=300,
                             stepsize=0.05)
    patch.fit(WhiteBoxAccess(model, len(x_fit)), x_fit, ClassificationObjective(y_fit, torch.full_like(y_fit, 3)),
              Budget(norm=None))
    others = y != 3
    out = patch.run(WhiteBoxAccess(model, int(others.sum())), x[others],
                    ClassificationObjective(y[others], torch.full_like(y[others], 3)), Budget(norm=None))
    region = out.info["mask"]
    assert float(region.flatten(1).sum(dim=1).max()) <= 0.1 * 256
    assert torch.equal(out.x_adv * (1 - region), x[others] * (1 - region))
    rate = hit_rate(model, out.x_adv, 3)
    fitted = patch.fitted
    patch.fitted = torch.rand(fitted.shape, generator=torch.Generator().manual_seed(3))
    random_rate = hit_rate(model, patch.apply(x[others], Budget(norm=None)), 3)
    assert rate >= 0.5, rate
    assert rate >= random_rate + 0.3


def test_physical_patch_with_eot_and_printability(model, digits):
    """The same place and area, fitted in expectation over rotation, scale, light and noise (with the
    non-printability term) and evaluated under fresh draws. Measured: 0.55 (seeds 0-3: 0.54-0.55)."""
    x_fit, y_fit, x, y = digits
    physical = {"rotation_deg": (-10, 10), "scale": (0.95, 1.0), "translate": 0.03, "brightness": (-0.05, 0.05),
                "noise_std": 0.02, "samples": 2}
    patch = AdversarialPatch(seed=0, area_fraction=0.1, placement="fixed", location=TOP_LEFT,
                             transformations=physical, steps=300, stepsize=0.05, printability=True)
    patch.fit(WhiteBoxAccess(model, len(x_fit)), x_fit, ClassificationObjective(y_fit, torch.full_like(y_fit, 3)),
              Budget(norm=None))
    others = y != 3
    x_adv, region = patch.apply_with_region(x[others], Budget(norm=None))
    areas = region.flatten(1).sum(dim=1)
    assert float(areas.max()) <= 0.1 * 256
    pasted = x_adv * region
    assert not torch.equal(pasted[0], pasted[1])  # each rendering has its own rotation, light and noise
    assert hit_rate(model, x_adv, 3) >= 0.45


def test_patch_follows_the_executors_mask(model, digits):
    """Given per-input squares (placement random), the patch lands in each square and nowhere else."""
    x_fit, y_fit, x, _ = digits
    gen = torch.Generator().manual_seed(0)
    masks = torch.zeros(len(x), 1, 16, 16)
    corners = torch.randint(0, 12, (len(x), 2), generator=gen)
    for i, (top, left) in enumerate(corners.tolist()):
        masks[i, :, top : top + 5, left : left + 5] = 1
    patch = AdversarialPatch(seed=0, area_fraction=0.1, transformations=PHYSICAL, steps=5)
    patch.fit(WhiteBoxAccess(model, 64), x_fit[:64], ClassificationObjective(y_fit[:64], torch.zeros(64).long()),
              Budget(norm=None, mask=masks[:64]))
    x_adv = patch.apply(x, Budget(norm=None, mask=masks))
    assert torch.equal(x_adv * (1 - masks), x * (1 - masks))
    assert bool(((x_adv - x).abs() * masks).flatten(1).amax(dim=1).gt(0).float().mean() > 0.9)
    cx, cy, side = mask_boxes(masks[:2])
    assert side.tolist() == [5.0, 5.0]
    assert cx[0] == corners[0, 1] + 2.5 and cy[0] == corners[0, 0] + 2.5


# ---------------------------------------------------------------------- masks confine every gradient attack


def _box() -> torch.Tensor:
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 2:9] = 1.0
    return mask


MASKED = [
    ("pgd", LinfPGD, Budget(epsilon=0.2), {"steps": 10}),
    ("transfer_mifgsm", TransferMIFGSM, Budget(epsilon=0.2), {"steps": 5}),
    ("transfer_difgsm", TransferDIFGSM, Budget(epsilon=0.2), {"steps": 5}),
    ("detector_aware_pgd", DetectorAwarePGD, Budget(epsilon=0.2), {"steps": 5}),
    ("ssim_pgd", SSIMConstrainedPGD, Budget(epsilon=0.2, ssim_floor=0.8), {"steps": 5}),
    ("newtonfool", NewtonFool, Budget(norm="2", epsilon=None), {"steps": 10}),
    ("lbfgs", LBFGS, Budget(norm="2", epsilon=None), {"binary_search_steps": 2, "max_iter": 10}),
]


def _squares(n: int) -> torch.Tensor:
    """One 6x6 square per input, at seeded places (the executor's masks for a patch region)."""
    masks = torch.zeros(n, 1, 16, 16)
    corners = torch.randint(0, 10, (n, 2), generator=torch.Generator().manual_seed(1))
    for i, (top, left) in enumerate(corners.tolist()):
        masks[i, :, top : top + 6, left : left + 6] = 1.0
    return masks


@pytest.mark.parametrize("per_input", [False, True], ids=["box", "square_per_input"])
@pytest.mark.parametrize("name,cls,budget,params", MASKED, ids=[m[0] for m in MASKED])
def test_mask_confines_gradient_attacks(model, digits, name, cls, budget, params, per_input):
    x_fit, _, x, y = digits
    x, y = x[:16], y[:16]
    mask = _squares(len(x)) if per_input else _box()
    masked = Budget(norm=budget.norm, epsilon=budget.epsilon, mask=mask, ssim_floor=budget.ssim_floor)
    access = NoAccess(model, len(x)) if cls.access == "surrogate" else WhiteBoxAccess(model, len(x))
    env = AttackEnv(data_x=x_fit[:200])  # the detector is calibrated on the data basis
    x_adv = cls(seed=0, **params).run(access, x, ClassificationObjective(y), masked, env).x_adv
    assert torch.equal(x_adv * (1 - mask), x * (1 - mask)), f"{name} changed pixels outside the mask"
    assert float(((x_adv - x).abs() * mask).max()) > 0, f"{name} changed nothing at all"


def test_mask_confines_universal_perturbation(model, digits):
    x_fit, y_fit, x, _ = digits
    mask = _box()
    budget = Budget(epsilon=0.2, mask=mask)
    uap = UniversalPerturbation(seed=0, epochs=1)
    uap.fit(WhiteBoxAccess(model, 256), x_fit[:256], ClassificationObjective(y_fit[:256]), budget)
    x_adv = uap.apply(x, budget)
    assert torch.equal(x_adv * (1 - mask), x * (1 - mask))
    with pytest.raises(AttackgenError, match=r"threat.capability.spatial: a universal perturbation takes one"):
        uap.fit(WhiteBoxAccess(model, 16), x_fit[:16], ClassificationObjective(y_fit[:16]),
                Budget(epsilon=0.2, mask=_squares(16)))
