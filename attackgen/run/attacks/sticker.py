"""A sticker in a fixed box (RP2, Eykholt et al. 2018, arXiv:1707.08945): a masked additive perturbation
fitted over many views of the object, with printability and smoothness terms.

RP2 optimises one perturbation delta, confined by a mask M to where the sticker sits on the object:

    min_delta  E_{x ~ X_V} [ loss(f(T(x + M * delta))) ] + tv_weight * TV(M * delta) + nps_weight * NPS(x + M * delta)

X_V are views of the object (here the data basis, or the context's inputs), T the transformation set
(``capability.transformations``, applied to the whole stickered image by ``EOTSampler.transform``: the
camera sees the sticker move, turn and change light with the object). The mask is the spec's
``capability.spatial`` box (the executor's ``Budget.mask``). Unlike the adversarial patch (which replaces
a square of pixels anywhere), the sticker adds to the object's own pixels inside the box and stays at
its place. With an Linf epsilon the change inside the box is bounded by it; without one (imperceptibility
``unrestricted``) only by the input range.

Applied digitally (``apply``: x + M * delta, clipped), so the executor verifies it bit for bit inside the
box; the EOT fit is what makes it survive the views (tests measure that under fresh transformations).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks.base import AttackEnv, AttackOutput, Budget, UniversalAttack
from attackgen.run.attacks.patch import non_printability, total_variation
from attackgen.run.attacks.transfer import model_handle
from attackgen.run.eot import EOTSampler
from attackgen.run.objectives.base import Objective
from attackgen.run.printability import in_printer_colours, palette_of
from taxonomy.errors import AttackgenError
from taxonomy.params import StickerParams


class BoxSticker(UniversalAttack[StickerParams]):
    """RP2-style sticker: one masked additive perturbation, fitted with EOT over whole-image transformations.

    Parameters: ``steps`` (300), ``stepsize`` (Adam learning rate in input units, 0.05), ``batch_size`` (32),
    ``transformations`` (the spec's EOT set; None: digital), ``eot_samples`` (per input and step), ``tv_weight``
    (0.01), ``printability`` (False) with ``nps_weight`` (0.01).
    """

    access = "gradients"
    params_model = StickerParams

    def __init__(self, seed: int = 0, **params: Any) -> None:
        super().__init__(seed, **params)
        spec_tf = self.params.transformations
        self.sampler = EOTSampler.identity() if spec_tf is None else EOTSampler.from_spec(spec_tf)

    @staticmethod
    def _region(budget: Budget, x: Tensor) -> Tensor:
        if budget.mask is None:
            raise AttackgenError("threat.capability.spatial: the box sticker needs a spatial constraint of kind "
                                 "box (or mask) that says where the sticker sits; got none")
        mask = (budget.mask != 0).to(x.dtype)
        if mask.dim() == 4 and mask.shape[0] != 1:
            mask = mask[:1]
        return mask

    def _stick(self, x: Tensor, delta: Tensor, mask: Tensor, budget: Budget) -> Tensor:
        change = delta * mask
        if budget.norm == "inf" and budget.epsilon is not None:
            change = change.clamp(-budget.epsilon, budget.epsilon)
        return (x + change).clamp(*budget.bounds)

    def fit(
        self, access: Access, x_fit: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> Tensor:
        self.require_inputs(x_fit, "the sticker")
        model = model_handle(access, env)
        mask = self._region(budget, x_fit)
        steps = self.params.steps
        lr = self.params.stepsize
        batch_size = self.params.batch_size
        samples = self.params.eot_samples or self.sampler.samples
        tv_weight = self.params.tv_weight
        nps_weight = self.params.nps_weight if self.params.printability else 0.0
        lo, hi = budget.bounds
        palette = palette_of(self.params.palette, x_fit.shape[1], budget.bounds).to(x_fit.device, x_fit.dtype)
        gen = self.generator(x_fit.device)
        delta = torch.zeros((1, *x_fit.shape[1:]), device=x_fit.device, dtype=x_fit.dtype, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr * (hi - lo))
        n = x_fit.shape[0]
        for _ in range(steps):
            rows = torch.randint(0, n, (min(batch_size, n),), generator=gen, device=x_fit.device).repeat(samples)
            stuck = self._stick(x_fit[rows], delta, mask, budget)
            viewed = self.sampler.transform(stuck, self.sampler.sample(rows.numel(), gen, x_fit.device), gen,
                                            budget.bounds)
            loss = objective.subset(rows).loss(model(viewed, rows)).mean()
            if tv_weight:
                loss = loss + tv_weight * total_variation(delta * mask)
            if nps_weight:  # the printed sticker is what the object shows inside the box
                inside = mask[0, 0] != 0
                loss = loss + nps_weight * non_printability(stuck[0][:, inside][:, :, None], palette)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                delta.clamp_(lo - hi, hi - lo)
        self.fitted = (delta.detach() * mask)
        return self.fitted

    def apply(self, x: Tensor, budget: Budget) -> Tensor:
        if self.fitted is None:
            raise RuntimeError("fit the sticker before applying it")
        return self._stick(x, self.fitted.to(x.device, x.dtype), self._region(budget, x).to(x.device), budget)

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if self.fitted is None:
            raise RuntimeError("a universal attack must be fitted before it is applied")
        x_adv = self.apply(x, budget)
        if self.params.snap_colours:  # printability bound max_nps 0: what the box shows is printer colours
            x_adv = in_printer_colours(x, x_adv, self.params.palette, budget.bounds)
        return AttackOutput(x_adv, {"universal": True, "sticker": True})
