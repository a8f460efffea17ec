"""SimBA, the Simple Black-box Attack (Guo, Gardner, You, Wilson, Weinberger 2019, arXiv:1905.07121).

Each iteration takes the next direction q of an orthonormal basis (pixels, or low-frequency-first 2D
DCT basis images), tries x + step*q and, if the objective's loss does not drop, x - step*q: at most two
queries per iteration, through the counted score oracle. Every input has its own random order of
directions. With an Lp budget the candidate is projected back into the ball (SimBA's own norm grows as
step * sqrt(accepted steps)); without one it runs until success or the query budget.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import live, query_budget, score, with_loss
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import SimBAParams


def dct_matrix(n: int, device: torch.device) -> Tensor:
    """Orthonormal DCT-II matrix D (n x n): row u is the u-th cosine; D @ D.T = I."""
    k = torch.arange(n, device=device, dtype=torch.float32)
    d = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def low_frequency_order(c: int, h: int, w: int, freq_dims: int, stride: int, rng: RowRandom,
                        device: torch.device) -> Tensor:
    """(N, c*h*w) coefficient indices (c, u, v) flattened, one order per stream of ``rng``: the
    freq_dims x freq_dims block first, then rings of width ``stride``, each group in random order
    (the reference's ``block_order``)."""
    u = torch.arange(h, device=device)[:, None].expand(h, w)
    v = torch.arange(w, device=device)[None, :].expand(h, w)
    ring = torch.maximum(u, v)
    group = torch.where(ring < freq_dims, torch.zeros_like(ring), 1 + (ring - freq_dims) // max(stride, 1))
    group = group[None].expand(c, h, w).flatten()
    noise = rng.rand(group.numel(), dtype=torch.float32)
    return torch.argsort(group.to(torch.float32) * 2 + noise, dim=1)


class SimBA(Attack[SimBAParams]):
    """SimBA with the pixel ("pixel") or DCT ("dct") basis; access to scores only."""

    access = "scores"
    params_model = SimBAParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if x.dim() != 4:
            raise AttackgenError(f"SimBA needs image batches (N, C, H, W); got shape {tuple(x.shape)}")
        basis = self.params.basis
        if basis not in ("dct", "pixel"):
            raise AttackgenError(f"simba: unknown basis {basis!r}; expected 'dct' or 'pixel'")
        n, c, h, w = x.shape
        dim = c * h * w
        eps = budget.epsilon
        if self.params.step is not None:
            step = self.params.step
        elif eps is not None and budget.norm == "2":
            step = self.params.rel_stepsize * float(eps)
        elif eps is not None and budget.norm == "inf":
            step = float(eps)  # a pixel step of eps stays in the Linf ball
        else:
            step = 0.2
        objective = with_loss(objective, "margin")
        rows = torch.arange(n, device=x.device)
        cap = query_budget(access, rows, self.params.max_queries)

        freq_dims = self.params.freq_dims or max(2, math.ceil(h / 4))
        freq_dims = min(freq_dims, h, w)
        stride = self.params.stride or max(1, h // 8)
        if basis == "dct":
            orders = low_frequency_order(c, h, w, freq_dims, stride, self.row_random(x), x.device)
            dh, dw = dct_matrix(h, x.device), dct_matrix(w, x.device)
        else:
            orders = self.row_random(x).randperm(dim)

        def direction(idx: Tensor, it: Tensor) -> Tensor:
            coef = orders[idx, it % dim]
            q = torch.zeros(idx.numel(), c, h, w, device=x.device, dtype=x.dtype)
            ch, uv = coef // (h * w), coef % (h * w)
            u, v = uv // w, uv % w
            if basis == "pixel":
                q[torch.arange(idx.numel(), device=x.device), ch, u, v] = 1.0
            else:
                img = dh[u][:, :, None] * dw[v][:, None, :]  # (k, h, w) outer products of cosines
                q[torch.arange(idx.numel(), device=x.device), ch] = img.to(x.dtype)
            return q

        x_adv = x.clone()
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        it = torch.zeros(n, dtype=torch.long, device=x.device)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        loss = torch.full((n,), float("inf"), device=x.device, dtype=torch.float64)

        first = live(access, rows)
        if bool(first.any()):
            idx = first.nonzero().squeeze(1)
            loss[idx], done[idx], _ = score(access, objective, x[idx], idx)
            used[idx] += 1

        while True:
            active = ~done & live(access, rows) & (used > 0) & (used < cap)
            if not bool(active.any()):
                break
            idx = active.nonzero().squeeze(1)
            q = direction(idx, it[idx])
            it[idx] += 1
            pending = torch.ones(idx.numel(), dtype=torch.bool, device=x.device)
            for sign in (1.0, -1.0):
                can = pending & live(access, rows[idx]) & (used[idx] < cap)
                if not bool(can.any()):
                    break
                sel = idx[can]
                cand = budget.project(x[sel], x_adv[sel] + sign * step * q[can])
                new_loss, success, _ = score(access, objective, cand, sel)
                used[sel] += 1
                better = (new_loss < loss[sel]) | success
                win = sel[better]
                x_adv[win] = cand[better]
                loss[win] = new_loss[better]
                done[sel] |= success
                pending[can.nonzero().squeeze(1)[better]] = False
        return AttackOutput(x_adv, {"queries": used.tolist(), "success_in_attack": done.tolist()})
