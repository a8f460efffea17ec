"""NewtonFool (Jang, Wu, Jha 2017, ACSAC, doi:10.1145/3134600.3134635): Newton steps on the top probability.

Let l be the class the model gives the clean input and F(x) = softmax(f(x))_l. NewtonFool lowers F to
the level of a uniform guess (1/K) by Newton's root-finding step on the linearisation of F:

    delta_i = min(eta * ||x_0|| * ||grad F(x_i)||,  F(x_i) - 1/K) / ||grad F(x_i)||^2 * grad F(x_i)
    x_{i+1} = clip(x_i - delta_i)

The first term caps the step at eta times the input's norm (a trust region); the second is the Newton
step to 1/K. Each input stops as soon as the objective reports success. Untargeted only: the method is
defined on the clean class's probability. Steps follow the mask and, in fixed mode, the L2 ball.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import as_mask, take_rows
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.transfer import model_handle
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import NewtonFoolParams


class NewtonFool(Attack[NewtonFoolParams]):
    """Untargeted small-L2 attack by Newton root-finding; parameters ``steps`` (100), ``stepsize`` (eta, 0.01)."""

    access = "gradients"
    params_model = NewtonFoolParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if objective.targeted:
            raise AttackgenError("threat.consequence: NewtonFool is untargeted only (it lowers the clean class's "
                                 "probability); use lbfgs or a first-order attack for a target")
        model = model_handle(access, env)
        steps = self.params.steps
        eta = self.params.stepsize
        rows = torch.arange(x.shape[0], device=x.device)
        view = (-1,) + (1,) * (x.dim() - 1)
        with torch.no_grad():
            logits = model(x, rows)
        label = logits.argmax(dim=1)
        classes = logits.shape[1]
        norm_x0 = x.flatten(1).norm(dim=1)
        x_adv = x.clone()
        live = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(steps):
            idx = rows[live]
            if idx.numel() == 0:
                break
            xi = x_adv[idx].clone().requires_grad_(True)
            out = model(xi, idx)
            done = objective.subset(idx).success(out).detach()
            prob = out.softmax(dim=1).gather(1, label[idx, None])[:, 0]
            (grad,) = torch.autograd.grad(prob.sum(), xi)
            mask = take_rows(as_mask(budget, x), idx, x.shape[0])
            if mask is not None:
                grad = grad * mask
            gnorm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
            theta = torch.minimum(eta * norm_x0[idx] * gnorm, prob.detach() - 1.0 / classes).clamp_min(0.0)
            step = (theta / gnorm**2).view(view) * grad
            moved = Budget(budget.bounds, budget.norm, budget.epsilon, mask).project(x[idx], xi.detach() - step)
            x_adv[idx] = torch.where(done.view(view), x_adv[idx], moved)
            live[idx] = ~done
        return AttackOutput(x_adv.detach())
