"""EOT-PGD: projected gradient descent on the expected loss over a transformation set, for one input
seen in many views (Athalye, Engstrom, Ilyas, Kwok 2018, arXiv:1707.07397; the printed-photo threat of
Kurakin, Goodfellow, Bengio 2016, arXiv:1607.02533).

    delta <- Proj_ball( delta - alpha * sign( grad_delta  mean_{t ~ T} loss(f(t(x + delta))) ) )   (Linf)

T is the spec's ``capability.transformations`` (rotation, scale, shift, lighting, sensor noise: the
printer and camera between the adversary and the model), applied to the whole perturbed image by
``EOTSampler.transform`` (differentiable). The candidate returned is x + delta itself (what is printed);
the executor verifies it digitally, and the tests measure it under fresh transformations as well. On dense
tasks the model's outputs on each view (score maps, boxes) are mapped back into the input's frame
(``EOTSampler.to_input_frame``) before the objective compares them with references drawn on the input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import on_device, require_epsilon, require_norm
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.eot import EOTSampler
from attackgen.run.objectives.base import Objective
from attackgen.run.printability import nps, palette_of, tv
from taxonomy.params import EOTPGDParams


class EOTPGD(Attack[EOTPGDParams]):
    """PGD (Linf or L2) on the mean loss over ``eot_samples`` transformations per input and step.

    Parameters: ``steps`` (40), ``step_size`` (or ``rel_stepsize`` * epsilon, default 0.1), ``transformations``
    (the spec's EOT set; None: none, plain PGD), ``eot_samples`` (default the set's ``samples``).
    """

    access = "gradients"
    params_model = EOTPGDParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        norm = require_norm(budget, ("inf", "2"), "eot_pgd")
        eps = require_epsilon(budget, "eot_pgd")
        spec_tf = self.params.transformations
        sampler = EOTSampler.identity() if spec_tf is None else EOTSampler.from_spec(spec_tf)
        samples = self.params.eot_samples or sampler.samples
        steps = self.params.steps
        alpha = self.params.step_for(eps)
        gen = self.generator(x.device)
        objective = on_device(objective, x.device)
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)
        many = rows.repeat(samples)
        sub = objective.subset(many)
        if norm == "inf":  # the random start from per-input streams; the transformations are drawn batch-wide
            delta = (self.row_random(x).rand(*x.shape[1:], dtype=x.dtype) * 2 - 1) * eps
        else:
            delta = torch.zeros_like(x)
        x_adv = budget.project(x, x + delta)
        palette = palette_of(self.params.palette, x.shape[1], budget.bounds).to(x.device)
        whole = torch.ones((n, *x.shape[2:]), dtype=torch.bool, device=x.device)  # a photo is printed whole
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            views = sampler.sample(many.numel(), gen, x.device)
            viewed = sampler.transform(x_adv[many], views, gen, budget.bounds)
            outputs = sampler.to_input_frame(access(viewed, many), views, *x.shape[2:])  # maps and boxes move back
            loss = sub.loss(outputs).sum() / samples
            if self.params.printability:  # the printed photo: near the printer's colours, smooth
                loss = loss + (self.params.nps_weight * nps(x_adv, whole, palette)
                               + self.params.tv_weight * tv(x_adv, whole)).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                if budget.mask is not None:
                    grad = grad * budget.mask
                if norm == "inf":
                    move = grad.sign()
                else:
                    move = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
                x_adv = budget.project(x, x_adv - alpha * move)
        return AttackOutput(x_adv.detach(), {"eot_samples": samples, "steps": steps})
