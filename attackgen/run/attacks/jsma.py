"""JSMA (Papernot et al. 2016): greedy L0 attack changing two features per iteration (native torch).

Per iteration one forward pass and one vectorised backward pass give, for every feature, alpha (the
gradient of the target logit) and beta (the gradient of the other logits' sum); the pair (p, q) with
alpha_p + alpha_q > 0, beta_p + beta_q < 0 and the largest -(alpha)(beta) is pushed by theta (theta
= 1: to the upper bound) and leaves the search domain. Logits, not softmax (Carlini & Wagner 2017).
Untargeted objectives aim at each input's runner-up class and stop at any misclassification.

Budget: L0; epsilon is the number of features that may change (a value below 1 is a fraction of
them); without epsilon, at most 2 * max_iter features change. A mask restricts the domain.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import as_mask, on_device, require_norm
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Capability, Objective
from taxonomy.params import JSMAParams

PAIR_CHUNK = 1 << 24  # pair-score elements per chunk (64 MB in float32)


def _best_pairs(alpha: Tensor, beta: Tensor, domain: Tensor, increase: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Per row the feature pair maximising -(a_p + a_q)(b_p + b_q) under the sign conditions."""
    m, f = alpha.shape
    sign = 1.0 if increase else -1.0
    rows_per_chunk = max(1, PAIR_CHUNK // (f * f))
    eye = torch.eye(f, dtype=torch.bool, device=alpha.device)
    firsts: list[Tensor] = []
    seconds: list[Tensor] = []
    valids: list[Tensor] = []
    for start in range(0, m, rows_per_chunk):
        a, b, d = (t[start : start + rows_per_chunk] for t in (alpha, beta, domain))
        aa = a.unsqueeze(2) + a.unsqueeze(1)
        bb = b.unsqueeze(2) + b.unsqueeze(1)
        ok = (sign * aa > 0) & (sign * bb < 0) & d.unsqueeze(2) & d.unsqueeze(1) & ~eye
        score = torch.where(ok, -aa * bb, torch.full_like(aa, -1.0))
        flat = score.flatten(1).argmax(dim=1)
        firsts.append(flat // f)
        seconds.append(flat % f)
        valids.append(ok.flatten(1).any(dim=1))
    p, q, valid = torch.cat(firsts), torch.cat(seconds), torch.cat(valids)
    if not bool(valid.all()):
        # no pair meets the sign conditions: fall back to the two features with the best
        # alpha - beta (ART's single-feature saliency), so the search keeps moving
        score = torch.where(domain, sign * (alpha - beta), torch.full_like(alpha, float("-inf")))
        top = score.topk(2, dim=1)
        fallback = ~valid & top.values[:, 1].isfinite()
        p = torch.where(valid, p, top.indices[:, 0])
        q = torch.where(valid, q, top.indices[:, 1])
        valid = valid | fallback
    return p, q, valid


class JSMA(Attack[JSMAParams]):
    access = "gradients"
    params_model = JSMAParams
    objective_needs = frozenset({Capability.GOAL})

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        require_norm(budget, ("0",), "jsma")
        self.check_objective(objective)
        theta = self.params.theta
        max_iter = self.params.max_iter
        x = x.detach()
        objective = on_device(objective, x.device)
        n = x.shape[0]
        features = x[0].numel()
        if budget.epsilon is None:
            max_changed = 2 * max_iter
        elif budget.epsilon < 1:
            max_changed = math.floor(budget.epsilon * features)
        else:
            max_changed = math.floor(budget.epsilon + 1e-9)
        lo, hi = budget.bounds
        rows = torch.arange(n, device=x.device)

        with torch.no_grad():
            clean = access(x, rows)
        if objective.targeted:
            targets = objective.goal()
        else:  # the runner-up class: usually the nearest one
            targets = clean.scatter(1, objective.goal().view(-1, 1), float("-inf")).argmax(dim=1)
        increase = theta > 0
        movable = (x < hi) if increase else (x > lo)
        mask = as_mask(budget, x)
        if mask is not None:
            movable = movable & (mask > 0)
        domain = movable.flatten(1).clone()
        xa = x.clone().flatten(1)
        changed = torch.zeros(n, dtype=torch.long, device=x.device)
        active = rows
        for _ in range(max_iter):
            if active.numel() == 0:
                break
            xi = xa[active].view(-1, *x.shape[1:]).requires_grad_(True)
            out = access(xi, active)
            with torch.no_grad():
                hit = objective.subset(active).success(out)
            t = targets[active].view(-1, 1)
            z_t = out.gather(1, t).squeeze(1)
            stacked = torch.stack([z_t, out.sum(dim=1) - z_t])  # (2, m)
            (grads,) = torch.autograd.grad(
                stacked, xi, grad_outputs=_selectors(xi.shape[0], out.dtype, x.device), is_grads_batched=True
            )
            with torch.no_grad():
                alpha, beta = grads[0].flatten(1), grads[1].flatten(1)
                p, q, valid = _best_pairs(alpha, beta, domain[active], increase)
                room = changed[active] + 2 <= max_changed
                go = ~hit & valid & room
                idx = active[go]
                for feat in (p[go], q[go]):
                    xa[idx, feat] = (xa[idx, feat] + theta * (hi - lo)).clamp(lo, hi)
                    domain[idx, feat] = False
                changed[idx] += 2
                active = idx
        info = {"max_changed": max_changed, "median_changed": float(changed.float().median())}
        return AttackOutput(xa.view_as(x), info)


def _selectors(m: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """grad_outputs for is_grads_batched over the two stacked rows (2, m): one-hot row selectors."""
    sel = torch.zeros(2, 2, m, dtype=dtype, device=device)
    sel[0, 0] = 1.0
    sel[1, 1] = 1.0
    return sel
