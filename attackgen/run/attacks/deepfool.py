"""DeepFool (Moosavi-Dezfooli et al. 2016), L2 and Linf: steps to the nearest linearised boundary.

Per step: one forward pass and one vectorised backward pass for the gradients of the margins to the
``candidates`` - 1 classes ranked highest on the clean input (foolbox does a forward and backward pass
per candidate). Inputs stop moving once they succeed. Given a targeted objective, the single
candidate is the target. In fixed-epsilon mode the result is projected into the ball.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import as_mask, on_device, require_norm, take_rows
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.syncs import looks_now
from attackgen.run.objectives.base import Capability, Objective
from taxonomy.params import DeepFoolParams


class DeepFool(Attack[DeepFoolParams]):
    access = "gradients"
    params_model = DeepFoolParams
    objective_needs = frozenset({Capability.GOAL})

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        norm = require_norm(budget, ("2", "inf"), "deepfool")
        self.check_objective(objective)
        steps = self.params.steps
        overshoot = self.params.overshoot
        x = x.detach()
        objective = on_device(objective, x.device)
        n = x.shape[0]
        shape = (-1, *([1] * (x.dim() - 1)))
        mask = as_mask(budget, x)
        rows = torch.arange(n, device=x.device)
        source = objective.goal()  # untargeted: the label to leave; targeted: the target

        with torch.no_grad():
            clean = access(x, rows)
        if objective.targeted:
            # move towards the target: margins of the target against the current top class
            others = source.view(-1, 1)
        else:
            k = min(self.params.candidates, clean.shape[1])
            ranked = clean.scatter(1, source.view(-1, 1), float("-inf")).argsort(dim=1, descending=True)
            others = ranked[:, : k - 1]
        n_others = others.shape[1]
        eye = torch.eye(n_others, device=x.device, dtype=x.dtype).view(n_others, 1, n_others)

        xa = x.clone()
        p_total = torch.zeros_like(x)
        # The working set (batch rows ``active``) shrinks only at a look, every K steps (attackgen.run.
        # attacks.syncs: K = 1 on the CPU); in between an input that succeeded is masked (``going``): it
        # stops moving, its passes are still made (and counted) until the next look.
        active = rows
        going = torch.ones(n, dtype=torch.bool, device=x.device)
        for it in range(steps):
            xi = xa[active].requires_grad_(True)
            out = access(xi, active)
            with torch.no_grad():
                hit = objective.subset(active).success(out)
                going = going & ~hit
            if looks_now(it, x.device) and not bool(going.any()):  # the loop's one sync
                break
            if objective.targeted:  # f_k = z_top - z_t for the current top class (negative when hit)
                top = out.detach().scatter(1, others[active], float("-inf")).argmax(dim=1, keepdim=True)
                f = out.gather(1, top) - out.gather(1, others[active])
            else:  # f_k = z_k - z_label
                f = out.gather(1, others[active]) - out.gather(1, source[active].view(-1, 1))
            (grads,) = torch.autograd.grad(
                f, xi, grad_outputs=eye.expand(n_others, xi.shape[0], n_others), is_grads_batched=True
            )
            with torch.no_grad():
                grads = grads.transpose(0, 1)  # (m, k, ...)
                if mask is not None:
                    grads = grads * take_rows(mask, active, n).unsqueeze(1)
                flat = grads.flatten(2)
                dual = flat.abs().sum(-1) if norm == "inf" else flat.norm(dim=-1)
                dist = f.detach().abs() / (dual + 1e-8)
                best = dist.argmin(dim=1)
                pick = torch.arange(xi.shape[0], device=x.device)
                d = dist[pick, best] + 1e-4
                g = grads[pick, best]
                if objective.targeted:
                    g = -g  # descend z_top - z_t
                if norm == "inf":
                    step = d.view(shape) * g.sign()
                else:
                    step = (d / (g.flatten(1).norm(dim=1) + 1e-8)).view(shape) * g
                p_total[active] += step
                moved = (x[active] + (1.0 + overshoot) * p_total[active]).clamp(*budget.bounds)
                xa[active] = torch.where(going.view(shape), moved, xa[active])
                if looks_now(it, x.device):
                    active, going = active[going], going[going]
        return AttackOutput(budget.project(x, xa), {"steps": steps, "norm": norm})
