"""Carlini & Wagner L2 (2017): Adam on a tanh-reparametrised input, binary search over the constant c.

Minimises ||x' - x||^2 + c * max(margin + confidence, 0) per input, where the margin is the
objective's logit margin (negative once the input is misclassified, or classified as the target).
Keeps, per input, the smallest successful perturbation over all constants. In fixed-epsilon mode the
result is projected into the L2 ball (success there means the minimal norm fits the budget).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import as_mask, on_device, require_norm
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Capability, Objective
from taxonomy.params import CWParams


class CarliniWagnerL2(Attack[CWParams]):
    access = "gradients"
    params_model = CWParams
    objective_needs = frozenset({Capability.MARGIN})

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        require_norm(budget, ("2",), "cw_l2")
        self.check_objective(objective)
        p = self.params
        search_steps = p.binary_search_steps
        steps = p.steps
        lr = p.stepsize
        kappa = p.confidence
        abort_early = p.abort_early
        x = x.detach()
        objective = on_device(objective, x.device)
        n = x.shape[0]
        shape = (-1, *([1] * (x.dim() - 1)))
        lo_b, hi_b = budget.bounds
        center, half = (hi_b + lo_b) / 2, (hi_b - lo_b) / 2
        w0 = torch.atanh(((x - center) / half).clamp(-1, 1) * 0.999999)
        recon = torch.tanh(w0) * half + center
        mask = as_mask(budget, x)
        rows = torch.arange(n, device=x.device)

        consts = torch.full((n,), p.initial_const, device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(consts)
        upper = torch.full_like(consts, math.inf)
        best = x.clone()
        best_norm = torch.full_like(consts, math.inf)
        last = x
        check_every = max(1, math.ceil(steps / 10))
        for search in range(search_steps):
            if search == search_steps - 1 and search_steps >= 10:
                consts = upper.clamp(max=1e10)
            delta = torch.zeros_like(x)
            m1, m2 = torch.zeros_like(x), torch.zeros_like(x)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = math.inf
            for step in range(steps):
                delta.requires_grad_(True)
                d = delta if mask is None else delta * mask
                xa = torch.tanh(w0 + d) * half + center
                out = access(xa, rows)
                margin = objective.margin(out)
                sq = (xa - recon).flatten(1).square().sum(dim=1)
                loss = (consts * (margin + kappa).clamp_min(0)).sum() + sq.sum()
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    delta = delta.detach()
                    t = step + 1  # Adam, as in the paper and foolbox
                    m1.mul_(0.9).add_(grad, alpha=0.1)
                    m2.mul_(0.999).addcmul_(grad, grad, value=0.001)
                    delta -= lr * (m1 / (1 - 0.9**t)) / ((m2 / (1 - 0.999**t)).sqrt() + 1e-8)
                    xa = xa.detach()
                    hit = objective.success(out) & (margin <= -kappa)
                    found |= hit
                    norms = (xa - x).flatten(1).norm(dim=1)
                    better = hit & (norms < best_norm)
                    best = torch.where(better.view(shape), xa, best)
                    best_norm = torch.where(better, norms, best_norm)
                    last = xa
                    if abort_early and step % check_every == 0:
                        value = float(loss)
                        if not value <= 0.9999 * previous:
                            break
                        previous = value
            upper = torch.where(found, consts, upper)
            lower = torch.where(found, lower, consts)
            consts = torch.where(upper.isinf(), consts * 10, (lower + upper) / 2)
        found_any = best_norm.isfinite()
        x_adv = torch.where(found_any.view(shape), best, last)
        return AttackOutput(budget.project(x, x_adv), {"found_during_attack": int(found_any.sum()),
                                                       "binary_search_steps": search_steps, "steps": steps})
