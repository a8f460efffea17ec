"""A universal perturbation from score queries alone: random search on one shared delta (after Co et al. 2019,
Procedural noise UAPs, arXiv:1810.00470, who search a universal perturbation's parameters with black-box
queries; here the search is Square-attack style, Andriushchenko et al. 2020, arXiv:1912.00049).

One Linf delta is shared by every input. Start: vertical stripes of +-epsilon. Each iteration re-draws a
random square window of the delta to +-epsilon per channel and keeps the change when the mean margin loss
over a random batch of fitting inputs drops (the current and the candidate delta are scored on the same
batch: 2 queries per batch input, through the counted score oracle, charged to that input). The window
shrinks as the search goes on. No gradient is read: the threat model is query access to scores (or
query-limited) plus a data basis to fit on. The executor fits on the fitting split and reports the
held-out fooling rate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import live, score, with_loss
from attackgen.run.attacks.base import AttackEnv, Budget
from attackgen.run.attacks.universal import AdditiveUniversal, project_delta
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import ScoreUAPParams


class ScoreUniversal(AdditiveUniversal[ScoreUAPParams]):
    """Random search for one Linf perturbation over the data basis, from score queries.

    Parameters: ``iterations`` (300), ``batch_size`` (32 inputs scored per iteration), ``p_init`` (0.1: the
    first window's share of the image area), ``fit_size`` (cap on fitting inputs, 500).
    """

    access = "scores"
    params_model = ScoreUAPParams

    def fit(
        self, access: Access, x_fit: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> Tensor:
        if budget.norm != "inf" or budget.epsilon is None:
            raise AttackgenError("threat.imperceptibility: the score-based universal perturbation needs a fixed "
                                 f"Linf epsilon; got norm {budget.norm!r}, epsilon {budget.epsilon!r}")
        n = min(x_fit.shape[0], self.params.fit_size)
        self.require_inputs(x_fit, "the perturbation")
        x_fit = x_fit[:n]
        eps = float(budget.epsilon)
        iterations = self.params.iterations
        batch = max(1, min(self.params.batch_size, n))
        p_init = self.params.p_init
        objective = with_loss(objective, "margin")
        gen = self.generator(x_fit.device)
        _, c, h, w = x_fit.shape
        stripes = torch.randint(0, 2, (1, c, 1, w), generator=gen, device=x_fit.device).to(x_fit.dtype) * 2 - 1
        delta = project_delta(eps * stripes.expand(1, c, h, w).clone(), budget)
        rows_all = torch.arange(n, device=x_fit.device)
        for it in range(iterations):
            ok = live(access, rows_all, need=2)
            if int(ok.sum()) < max(1, batch // 2):
                break  # the fitting inputs' query budgets are spent
            pool = rows_all[ok]
            rows = pool[torch.randperm(pool.numel(), generator=gen, device=x_fit.device)[:batch]]
            share = p_init * (1 - it / max(iterations, 1)) ** 2 + 1.0 / (h * w)
            side = max(1, min(h, w, round(math.sqrt(share * h * w))))
            top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
            cand = delta.clone()
            signs = torch.randint(0, 2, (1, c, 1, 1), generator=gen, device=x_fit.device).to(x_fit.dtype) * 2 - 1
            cand[..., top : top + side, left : left + side] = eps * signs
            cand = project_delta(cand, budget)
            x = x_fit[rows]
            both = torch.cat([(x + delta).clamp(*budget.bounds), (x + cand).clamp(*budget.bounds)])
            loss, _, _ = score(access, objective, both, torch.cat([rows, rows]))
            k = rows.numel()
            if float(loss[k:].mean()) < float(loss[:k].mean()):
                delta = cand
        self.fitted = delta.detach()
        return self.fitted
