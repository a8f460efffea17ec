"""A lens sticker: one translucent layer in front of the camera, over every view of every scene (Li, Schmidt,
Kolter 2019, Adversarial camera stickers, arXiv:1904.00759).

The layer does not move with the scene: the camera sees the transformed scene, then the layer on its lens,

    min_delta  E_{x ~ X, t ~ T} [ loss(f(clip(t(x) + delta))) ],   ||delta||_inf <= epsilon

fitted by projected sign-gradient steps over batches of the data basis, each input under ``eot_samples``
fresh transformations from ``capability.transformations`` (the scenes move, the lens does not). The Linf
bound is the layer's translucency (Li et al. blend small dots of low opacity). Applied as x + delta and
verified digitally; the tests also measure it over fresh views.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import require_epsilon, require_norm
from attackgen.run.attacks.base import AttackEnv, Budget
from attackgen.run.attacks.transfer import model_handle
from attackgen.run.attacks.universal import AdditiveUniversal, project_delta
from attackgen.run.eot import EOTSampler
from attackgen.run.objectives.base import Objective
from taxonomy.params import LensParams


class LensOverlay(AdditiveUniversal[LensParams]):
    """Universal Linf layer added after the scene's transformations. Parameters: ``steps`` (200), ``batch_size``
    (32), ``rel_stepsize`` (0.05 of epsilon; decays to a tenth), ``eot_samples``, ``transformations``."""

    access = "gradients"
    params_model = LensParams
    info: ClassVar[dict[str, Any]] = {"universal": True, "overlay": True}

    def fit(
        self, access: Access, x_fit: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> Tensor:
        require_norm(budget, ("inf",), "lens_overlay")
        eps = require_epsilon(budget, "lens_overlay")
        self.require_inputs(x_fit, "the lens layer")
        spec_tf = self.params.transformations
        sampler = EOTSampler.identity() if spec_tf is None else EOTSampler.from_spec(spec_tf)
        samples = self.params.eot_samples or sampler.samples
        steps = self.params.steps
        batch = min(self.params.batch_size, x_fit.shape[0])
        alpha = self.params.step_for(eps)
        model = model_handle(access, env)
        gen = self.generator(x_fit.device)
        delta = torch.zeros((1, *x_fit.shape[1:]), device=x_fit.device, dtype=x_fit.dtype)
        n = x_fit.shape[0]
        for step in range(steps):
            rows = torch.randint(0, n, (batch,), generator=gen, device=x_fit.device).repeat(samples)
            views = sampler.sample(rows.numel(), gen, x_fit.device)
            with torch.no_grad():
                scenes = sampler.transform(x_fit[rows], views, gen, budget.bounds)
            delta.requires_grad_(True)
            outputs = model((scenes + delta).clamp(*budget.bounds), rows)
            # dense outputs back in each scene's own frame, where its references are drawn
            loss = objective.subset(rows).loss(sampler.to_input_frame(outputs, views, *x_fit.shape[2:])).mean()
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                decay = 1.0 - 0.9 * step / max(steps - 1, 1)
                delta = project_delta(delta - alpha * decay * grad.sign(), budget)
        self.fitted = delta.detach()
        return self.fitted
