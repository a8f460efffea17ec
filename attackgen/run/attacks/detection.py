"""Attacks on object detectors: TOG-style iterative gradient attacks and a detector patch with EOT.

``DetectionPGD`` (Chow et al. 2020, TOG, arXiv:2004.04320): projected gradient steps on a detection
objective (vanishing, fabrication, mislabelling, untargeted, static or confusing boxes), whose losses
act on the scores of every candidate the detector returns, including those below its threshold.
Linf (sign steps) or L2 (normalised steps); every iterate stays in the ball, the mask and the bounds,
and each input gets its last iterate that realises the consequence at the detector's threshold
(``attacks.metzen.dense_descent``: the first one is marginal and often lost to 8-bit rounding).

``DetectorPatch`` (Thys et al. 2019, arXiv:1904.08653; DPatch, Liu et al. 2019, arXiv:1806.02299): one
square patch trained over the fitting scenes, in expectation over where it lands and how (rotation,
scale, brightness, noise from ``capability.transformations``), to make the chosen classes vanish (or
appear). It is the project's EOT patch (``attackgen.run.attacks.patch.AdversarialPatch``) with the
detection objective: the loss there is the objective's, so nothing detector-specific is needed beyond
defaults suited to a detector (no total-variation smoothing by default: small patches on 64x64 scenes
need their full texture). Because a patch can also hide an object by covering it, report it against
an occlusion control: the same renderings with a random patch (``occlusion_control``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import require_epsilon, require_norm
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.metzen import dense_descent
from attackgen.run.attacks.patch import AdversarialPatch
from attackgen.run.objectives.base import Objective
from taxonomy.params import DetectionParams, DetectorPatchParams


class DetectionPGD(Attack[DetectionParams]):
    """Iterative gradient attack on a detector's candidate scores (Linf or L2)."""

    access = "gradients"
    params_model = DetectionParams

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        norm = require_norm(budget, ("inf", "2"), "det_vanishing")
        eps = require_epsilon(budget, "det_vanishing")
        final = self.params.final_step_size
        x_adv, info = dense_descent(
            access, x, objective, budget, norm, eps, steps=self.params.steps,
            alpha=self.params.step_for(eps), gen=self.row_random(x),
            random_start=self.params.random_start,
            final_alpha=None if final is None else float(final),
        )
        return AttackOutput(x_adv, info)


class DetectorPatch(AdversarialPatch):
    """The EOT patch with detector defaults: Adam on the patch, no smoothing, a few hundred steps."""

    params_model = DetectorPatchParams

    def occlusion_control(self, x: Tensor, budget: Budget, seed: int | None = None) -> Tensor:
        """The same renderings as ``apply`` (same seed) with a uniformly random patch instead."""
        if self.fitted is None:
            raise RuntimeError("fit the patch before applying it")
        fitted = self.fitted
        gen = torch.Generator(device=fitted.device)
        gen.manual_seed(self.seed + 7)
        lo, hi = budget.bounds
        self.fitted = lo + (hi - lo) * torch.rand(fitted.shape, generator=gen, device=fitted.device)
        try:
            out, _ = self.apply_with_region(x, budget, seed)
        finally:
            self.fitted = fitted
        return out
