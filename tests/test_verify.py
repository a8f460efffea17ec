"""Verification on its own (attackgen.run.verify), called directly as any runner would: a candidate
counts only after cleaning, clipping, a re-run of the victim and a re-measure against every bound."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from attackgen.run.attacks.base import Budget
from attackgen.run.objectives.classification import ClassificationObjective
from attackgen.run.verify import (
    Bound,
    BoundCheck,
    DetectorBound,
    LpBound,
    MaskBound,
    SsimBound,
    bounds_for,
    measure,
    verify,
)

BOUNDS = (0.0, 1.0)
TOL = 1e-6


@pytest.fixture(scope="module")
def broken(victim, test_set):
    """16 digits and candidates from 20 signed-gradient steps in an Linf ball of 0.3: nearly all fool the
    victim, with perturbations far above 0.05."""
    x, y = test_set[0][:16], test_set[1][:16]
    adv = x.clone()
    for _ in range(20):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(victim(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = (x + (adv.detach() + 0.03 * grad.sign() - x).clamp(-0.3, 0.3)).clamp(*BOUNDS)
    fooled = victim(adv).argmax(dim=1) != y
    assert int(fooled.sum()) >= 12
    return x[fooled], y[fooled], adv[fooled]


def check(victim, x, y, candidate, bounds, **kwargs):
    return verify(victim, x, candidate, ClassificationObjective(y), bounds, input_bounds=BOUNDS, tol=TOL, **kwargs)


def test_candidates_that_fool_within_their_linf_ball_are_successes(victim, broken):
    x, y, adv = broken
    out = check(victim, x, y, adv, [LpBound("inf", 0.3, TOL)])
    assert bool(out.success.all()) and bool(out.hit.all()) and out.counts["over_budget"] == 0
    assert torch.allclose(out.norms, measure(x, adv, 1.0))
    assert float(out.norms[:, 3].max()) <= 0.3 + 1e-6


def test_a_candidate_outside_the_linf_ball_is_refused(victim, broken):
    x, y, adv = broken
    out = check(victim, x, y, adv, [LpBound("inf", 0.05, TOL)])
    assert bool(out.hit.all())  # it fools the model ...
    assert not bool(out.within.any()) and not bool(out.success.any())  # ... only outside its budget
    assert out.counts["over_budget"] == len(x)


def test_a_candidate_outside_the_mask_is_refused(victim, broken):
    x, y, adv = broken
    left = torch.zeros(1, 1, *x.shape[-2:])
    left[..., : x.shape[-1] // 2] = 1.0
    inside = x + (adv - x) * left  # the same perturbation kept to the left half
    out = check(victim, x, y, adv, [MaskBound(left, TOL)])
    assert not bool(out.success.any()) and not bool(out.within.any())
    kept = check(victim, x, y, inside, [MaskBound(left, TOL)])
    assert bool(kept.within.all())
    assert bool((kept.success == kept.hit).all())  # inside the mask, success is the re-run's verdict alone


def test_a_candidate_below_the_ssim_floor_is_refused(victim, broken):
    x, y, adv = broken
    ssim = measure(x, adv, 1.0)[:, 4]
    floor = float(ssim.median())
    out = check(victim, x, y, adv, [SsimBound(floor)])
    assert bool((out.within == (ssim >= floor - 1e-6)).all())
    assert not bool(out.success[ssim < floor - 1e-6].any()) and bool((~out.within).any())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_candidates_become_the_clean_input_and_never_succeed(victim, broken, bad):
    x, y, adv = broken
    poisoned = adv.clone()
    poisoned[0, 0, 0, 0] = bad
    out = check(victim, x, y, poisoned, [LpBound("inf", 0.3, TOL)])
    assert torch.equal(out.candidate[0], x[0]) and not bool(out.success[0]) and not bool(out.hit[0])
    assert out.counts["non_finite"] == 1 and bool(out.success[1:].all())
    assert float(out.norms[0, 3]) == 0.0


def test_missing_or_misshapen_candidates_are_failures(victim, broken):
    x, y, adv = broken
    for candidate, counted in ((None, None), (adv[:, :, :-1], "bad_shape")):
        out = check(victim, x, y, candidate, [])
        assert not bool(out.success.any()) and torch.equal(out.candidate, x)
        assert (out.counts.get("bad_shape") == len(x)) if counted else "bad_shape" not in out.counts


def test_success_is_decided_on_the_clipped_and_quantised_input(victim, broken):
    x, y, adv = broken
    seen: list[Tensor] = []

    def recording(batch: Tensor) -> Tensor:
        seen.append(batch.clone())
        return victim(batch)

    budget = Budget(bounds=BOUNDS, norm="inf", epsilon=0.3)
    overshoot = adv + (adv - x).sign() * 0.5  # outside [0, 1] wherever it moved up from 0.6 or down from 0.4
    out = check(recording, x, y, overshoot, [LpBound("inf", 0.3, TOL)], quantize_to=budget)
    [rerun] = seen
    assert torch.equal(rerun, out.candidate)  # the model judged exactly what is reported
    assert float(rerun.min()) >= 0.0 and float(rerun.max()) <= 1.0 and out.counts["outside_bounds"] > 0
    assert bool((out.hit == (victim(rerun).argmax(dim=1) != y)).all())
    assert not bool(out.success.any())  # clipped, it is still far outside the ball
    seen.clear()
    out = check(recording, x, y, adv, [LpBound("inf", 0.3, TOL)], quantize_to=budget)
    [rerun] = seen
    changed = (rerun - x).abs() > 1e-6
    grid = rerun[changed] * 255  # every changed element on the 8-bit grid, none past epsilon
    assert bool(changed.any()) and torch.allclose(grid, grid.round(), atol=1e-3)
    assert float((rerun - x).abs().max()) <= 0.3 + 1e-6 and bool(out.within.all())
    assert bool((out.success == (victim(rerun).argmax(dim=1) != y)).all())


def test_a_detector_screen_counts_flagged_successes_apart(victim, broken):
    x, y, adv = broken

    @dataclass
    class FlagsFirstHalf:
        def detect(self, batch: Tensor) -> Tensor:
            return torch.arange(len(batch)) < len(batch) // 2

    out = check(victim, x, y, adv, bounds_for("inf", 0.3, tol=TOL, detectors=[FlagsFirstHalf()]))
    half = len(x) // 2
    assert isinstance(bounds_for("inf", 0.3, tol=TOL, detectors=[FlagsFirstHalf()])[-1], DetectorBound)
    assert not bool(out.success[:half].any()) and bool(out.success[half:].all())
    assert bool(out.within.all()) and out.counts["detected"] == half and out.counts["over_budget"] == 0
    assert out.metrics["detected"][:half].eq(1).all() and out.metrics["detected"][half:].eq(0).all()


def test_a_new_bound_is_one_class(victim, broken):
    """What docs/adding-an-attack.md promises: a bound is a Bound subclass, and verify applies it."""
    x, y, adv = broken

    @dataclass(frozen=True)
    class MaxChangedPixels(Bound):
        pixels: int

        def check(self, x: Tensor, candidate: Tensor, norms: Tensor) -> BoundCheck:
            return BoundCheck(norms[:, 0] <= self.pixels, {"changed": norms[:, 0]})

    out = check(victim, x, y, adv, [MaxChangedPixels(10)])
    assert not bool(out.success.any()) and out.counts["over_budget"] == int(out.hit.sum())
    assert torch.equal(out.metrics["changed"], out.norms[:, 0])
