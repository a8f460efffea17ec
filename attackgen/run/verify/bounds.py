"""One class per kind of bound a verified candidate must satisfy.

A bound answers, per input, "does this candidate stay within me?" from the clean input, the clipped
candidate and its re-measured norms (``measure``). Budget bounds (Lp, mask, SSIM, Wasserstein) make a
candidate that fools the model outside them an out-of-budget failure; screens (a detector) are checked
after the budget and make a candidate that fools the model within budget but is flagged a failure too,
counted apart. A new bound is one subclass here plus a line in ``bounds_for``. Printability
(``PrintabilityBound``) is a budget: an artefact a printer cannot reproduce is not the stated threat.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from attackgen.run.verify.measure import NORM_COLUMN, SSIM_COLUMN


@dataclass
class BoundCheck:
    """Per input: within the bound; and figures worth reporting per input (name -> (N,) tensor)."""

    ok: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Bound(ABC):
    """A constraint on a candidate, checked on the clipped candidate and its re-measured norms."""

    screen: ClassVar[bool] = False
    """False: a budget (fooling outside it is ``over_budget``). True: a screen checked after the budget
    (fooling within budget but caught is ``detected``; its metric is reported for those inputs only)."""

    @abstractmethod
    def check(self, x: Tensor, candidate: Tensor, norms: Tensor) -> BoundCheck:
        """Which candidates stay within this bound (bool, shape N, on x's device)."""


@dataclass(frozen=True)
class LpBound(Bound):
    """||candidate - x||_p <= epsilon, in input units, with a tolerance of the input range (none for L0)."""

    norm: str
    epsilon: float
    tol: float = 0.0

    def check(self, x: Tensor, candidate: Tensor, norms: Tensor) -> BoundCheck:
        slack = 0.0 if self.norm == "0" else self.tol + 1e-6 * self.epsilon
        return BoundCheck(norms[:, NORM_COLUMN[self.norm]] <= self.epsilon + slack)


@dataclass(frozen=True)
class MaskBound(Bound):
    """No change outside the mask (1 where change is allowed; a patch, a box or a mask file)."""

    mask: Tensor
    tol: float = 0.0

    def check(self, x: Tensor, candidate: Tensor, norms: Tensor) -> BoundCheck:
        outside = ((candidate - x).abs() * (1 - self.mask)).flatten(1).amax(dim=1)
        return BoundCheck(outside <= self.tol)


@dataclass(frozen=True)
class SsimBound(Bound):
    """SSIM(x, candidate) >= floor (images only: elsewhere SSIM is NaN and nothing passes)."""

    floor: float

    def check(self, x: Tensor, candidate: Tensor, norms: Tensor) -> BoundCheck:
        return BoundCheck(norms[:, SSIM_COLUMN] >= self.floor - 1e-6)


@dataclass(frozen=True)
class WassersteinBound(Bound):
    """The exact transport cost (attackgen.run.wasserstein) within the radius; the cost is reported."""

    radius: float
    kernel: int = 5

    def check(self, x: Tensor, candidate: Tensor, norms: Tensor) -> BoundCheck:
        from attackgen.run.wasserstein import wasserstein_distance

        cost = wasserstein_distance(x, candidate, self.kernel, 2.0).to(x.device)
        return BoundCheck(cost <= self.radius * (1 + 1e-6), {"wasserstein": cost.double()})


@dataclass(frozen=True)
class PrintabilityBound(Bound):
    """The printed pixels (those the candidate changed) within the spec's printability bounds: non-printability
    score against the colour set <= max_nps, total variation per printed pixel <= max_tv (Sharif et al. 2016;
    attackgen.run.printability). Both figures are reported per input."""

    colours: tuple[tuple[float, ...], ...] | None
    max_nps: float | None
    max_tv: float | None
    input_bounds: tuple[float, float] = (0.0, 1.0)
    tol: float = 0.0

    def check(self, x: Tensor, candidate: Tensor, norms: Tensor) -> BoundCheck:
        from attackgen.run import printability as pr

        region = pr.printed(x, candidate, max(self.tol, 1e-6 * (self.input_bounds[1] - self.input_bounds[0])))
        palette = pr.palette_of(self.colours, x.shape[1], self.input_bounds).to(x.device)
        ok = torch.ones(len(x), dtype=torch.bool, device=x.device)
        metrics: dict[str, Tensor] = {}
        if self.max_nps is not None:
            metrics["nps"] = pr.nps(candidate, region, palette)
            ok &= metrics["nps"] <= self.max_nps + 1e-9
        if self.max_tv is not None:
            metrics["tv"] = pr.tv(candidate, region)
            ok &= metrics["tv"] <= self.max_tv * (1 + 1e-6) + 1e-9
        return BoundCheck(ok, metrics)


def printability_bound(capability: Any, input_bounds: tuple[float, float], tol: float) -> PrintabilityBound | None:
    """The bound a spec's ``threat.capability.printability`` states, if it states one."""
    stated = capability.printability_bounds
    if stated is None:
        return None
    colours = tuple(tuple(float(v) for v in c) for c in stated.colours) if stated.colours is not None else None
    return PrintabilityBound(colours, stated.max_nps, stated.max_tv, input_bounds, tol)


@dataclass(frozen=True)
class DetectorBound(Bound):
    """None of the calibrated detectors (attackgen.run.detectors) flags the candidate."""

    screen: ClassVar[bool] = True
    detectors: tuple[Any, ...]

    def check(self, x: Tensor, candidate: Tensor, norms: Tensor) -> BoundCheck:
        flagged = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for detector in self.detectors:
            flagged |= detector.detect(candidate).to(x.device)
        return BoundCheck(~flagged, {"detected": flagged.double()})


def bounds_for(
    norm: str | None,
    epsilon: float | None,
    *,
    tol: float,
    mask: Tensor | None = None,
    extra: Sequence[tuple[str, float]] = (),
    ssim_floor: float | None = None,
    wasserstein_radius: float | None = None,
    wasserstein_kernel: int = 5,
    detectors: Sequence[Any] = (),
    printability: PrintabilityBound | None = None,
) -> list[Bound]:
    """The bounds of one plan item over one batch, budgets first, screens last."""
    bounds: list[Bound] = []
    if norm is not None and epsilon is not None:
        bounds.append(LpBound(norm, epsilon, tol))
    if mask is not None:
        bounds.append(MaskBound(mask, tol))
    bounds += [LpBound(n, e, tol) for n, e in extra]
    if ssim_floor is not None:
        bounds.append(SsimBound(ssim_floor))
    if wasserstein_radius is not None:
        bounds.append(WassersteinBound(wasserstein_radius, wasserstein_kernel))
    if printability is not None:
        bounds.append(printability)
    if detectors:
        bounds.append(DetectorBound(tuple(detectors)))
    return bounds
