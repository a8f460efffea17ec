"""Square Attack (Andriushchenko, Croce, Flammarion, Hein 2020, arXiv:1912.00049), Linf and L2.

Random search over square-shaped updates, accepted when they lower the objective's loss on the scores
the oracle returns (logits, probabilities or top-k; see ``_query.as_outputs``). One query per input
per iteration, through the counted score oracle; an input stops on success or when its budget is
spent. The side of the square follows the paper's schedule ``p_selection``, scaled to the number of
queries the input can actually make. Ported from the authors' reference code (numpy) to batched torch:
the Linf windows are drawn per input as in the reference, the L2 windows are shared by the batch
within one iteration, also as in the reference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import bview, live, query_budget, score, with_loss
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import SquareL2Params, SquareLinfParams


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels changed at iteration ``it`` of ``n_iters`` (the paper's halving schedule)."""
    it = int(it / max(n_iters, 1) * 10000)
    for limit, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                       (6000, 128), (8000, 256), (10000, 512)):
        if it <= limit:
            return p_init / div
    return p_init


class _Square(Attack[SquareLinfParams]):
    access = "scores"
    params_model = SquareLinfParams
    norm = "inf"

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if budget.epsilon is None:
            raise AttackgenError(
                f"threat.imperceptibility: the Square attack ({type(self).__name__}) needs a fixed epsilon "
                "(mode: fixed); for minimal-norm questions use a decision-based attack"
            )
        if x.dim() != 4:
            raise AttackgenError(f"the Square attack needs image batches (N, C, H, W); got shape {tuple(x.shape)}")
        eps = float(budget.epsilon)
        p_init = self.params.p_init
        # the paper: margin loss untargeted, cross-entropy targeted
        objective = with_loss(objective, "ce" if objective.targeted else "margin")
        gen = self.generator(x.device)
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)
        n_iters = query_budget(access, rows, self.params.n_queries)

        rng = self.row_random(x)  # per-input streams: an input's squares do not depend on its batch
        x_best = budget.project(x, self._init(x, eps, gen, budget, rng))
        loss_best = torch.full((n,), float("inf"), device=x.device, dtype=torch.float64)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        for it in range(n_iters):
            active = ~done & live(access, rows) & (used == it)  # an input that missed a query is out
            if not bool(active.any()):
                break
            idx = active.nonzero().squeeze(1)
            if it == 0:
                x_new = x_best[idx]
            else:
                p = p_selection(p_init, it, n_iters)
                x_new = budget.project(x[idx], self._propose(x[idx], x_best[idx], eps, p, gen, budget,
                                                             rng.subset(idx)))
            loss, success, _ = score(access, objective, x_new, idx)
            used[idx] += 1
            better = (loss < loss_best[idx]) | success
            x_best[idx[better]] = x_new[better]
            loss_best[idx[better]] = loss[better]
            done[idx] |= success
        return AttackOutput(x_best, {"queries": used.tolist(), "success_in_attack": done.tolist()})

    def _init(self, x: Tensor, eps: float, gen: torch.Generator, budget: Budget, rng: RowRandom) -> Tensor:
        raise NotImplementedError

    def _propose(self, x: Tensor, x_best: Tensor, eps: float, p: float, gen: torch.Generator,
                 budget: Budget, rng: RowRandom) -> Tensor:
        """A proposal per input of x; ``gen`` is shared by the batch, ``rng`` has one stream per input."""
        raise NotImplementedError


class SquareLinf(_Square):
    """Square attack in the Linf ball: vertical-stripe start, then +-eps squares per channel."""

    norm = "inf"

    def _init(self, x: Tensor, eps: float, gen: torch.Generator, budget: Budget, rng: RowRandom) -> Tensor:
        _, c, _, w = x.shape
        signs = rng.randint(0, 2, c, 1, w).to(x.dtype) * 2 - 1
        return x + eps * signs

    def _propose(self, x: Tensor, x_best: Tensor, eps: float, p: float, gen: torch.Generator,
                 budget: Budget, rng: RowRandom) -> Tensor:
        n, c, h, w = x.shape
        s = round(math.sqrt(p * h * w))
        s = min(max(s, 1), h - 1, w - 1) if min(h, w) > 1 else 1
        top = rng.randint(0, h - s + 1)
        left = rng.randint(0, w - s + 1)
        hh = torch.arange(h, device=x.device)
        ww = torch.arange(w, device=x.device)
        in_h = (hh[None] >= top[:, None]) & (hh[None] < top[:, None] + s)
        in_w = (ww[None] >= left[:, None]) & (ww[None] < left[:, None] + s)
        window = (in_h[:, None, :, None] & in_w[:, None, None, :]).expand(n, c, h, w)
        signs = rng.randint(0, 2, c, 1, 1).to(x.dtype) * 2 - 1
        lo, hi = budget.bounds
        cand = torch.where(window, (x + eps * signs).clamp(lo, hi), x_best)
        # the reference redraws until the square changes something; flipping the signs always does
        same = ((cand - x_best).abs() < 1e-7).flatten(1).all(dim=1)
        if bool(same.any()):
            cand[same] = torch.where(window[same], (x[same] - eps * signs[same]).clamp(lo, hi), x_best[same])
        return cand


def _rect_bump(a: int, b: int, device: torch.device) -> Tensor:
    """The reference's pseudo-Gaussian rectangle: nested rings with weights 1/(k+1)^2, unit L2 norm."""
    delta = torch.zeros(a, b, device=device)
    ca, cb = a // 2 + 1, b // 2 + 1
    r0, c0 = ca - 1, cb - 1
    for k in range(max(ca, cb)):
        delta[max(r0, 0) : min(r0 + 2 * k + 1, a), max(c0, 0) : min(c0 + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        r0 -= 1
        c0 -= 1
    return delta / delta.norm().clamp_min(1e-12)


def _bump(s: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """The reference's meta_pseudo_gaussian_pert: two opposite-sign halves, randomly transposed."""
    delta = torch.zeros(s, s, device=device)
    delta[: s // 2] = _rect_bump(s // 2, s, device) if s // 2 > 0 else 0.0
    delta[s // 2 :] = -_rect_bump(s - s // 2, s, device)
    delta = delta / delta.norm().clamp_min(1e-12)
    if bool(torch.rand(1, generator=gen, device=device).item() > 0.5):
        delta = delta.t()
    return delta


class SquareL2(_Square):
    """Square attack in the L2 ball: moves mass between two windows, keeping the norm at epsilon."""

    norm = "2"
    params_model = SquareL2Params

    def _init(self, x: Tensor, eps: float, gen: torch.Generator, budget: Budget, rng: RowRandom) -> Tensor:
        # The L2 windows are drawn once per batch (as in the reference), so an input's L2 squares still
        # depend on its batch: per-input windows are the remaining step for issue #12.
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        delta = torch.zeros_like(x)
        start = (h - s * 5) // 2 if h >= 5 * s else 0
        top = start
        for _ in range(h // s):
            left = start
            for _ in range(w // s):
                bump = _bump(s, gen, x.device) if s > 1 else torch.ones(1, 1, device=x.device)
                signs = torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=x.device).to(x.dtype) * 2 - 1
                delta[:, :, top : top + s, left : left + s] += bump.view(1, 1, s, s)[..., : h - top, : w - left] \
                    * signs
                left += s
            top += s
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return x + delta / bview(norms, x) * eps

    def _propose(self, x: Tensor, x_best: Tensor, eps: float, p: float, gen: torch.Generator,
                 budget: Budget, rng: RowRandom) -> Tensor:
        n, c, h, w = x.shape
        s = max(round(math.sqrt(p * h * w)), 3)
        if s % 2 == 0:
            s += 1
        s = min(s, h - 1 if h > 3 else h, w - 1 if w > 3 else w)
        delta = x_best - x
        r1, c1 = (int(torch.randint(0, d - s + 1, (1,), generator=gen, device=x.device)) for d in (h, w))
        r2, c2 = (int(torch.randint(0, d - s + 1, (1,), generator=gen, device=x.device)) for d in (h, w))
        w1 = (slice(None), slice(None), slice(r1, r1 + s), slice(c1, c1 + s))
        w2 = (slice(None), slice(None), slice(r2, r2 + s), slice(c2, c2 + s))
        mask1 = torch.zeros(1, 1, h, w, device=x.device)
        mask1[w1] = 1.0
        mask2 = torch.zeros_like(mask1)
        mask2[w2] = 1.0
        norm_window1 = (delta * mask1).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
        norm_image = delta.flatten(1).norm(dim=1).view(n, 1, 1, 1)
        norm_windows = (delta * torch.maximum(mask1, mask2)).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()

        signs = torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=x.device).to(x.dtype) * 2 - 1
        new = _bump(s, gen, x.device).view(1, 1, s, s) * signs
        new = new + delta[w1] / (1e-10 + norm_window1)
        new_norm = new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        room = ((eps**2 - norm_image**2).clamp_min(0) / c + norm_windows**2).sqrt()
        delta = delta.clone()
        delta[w2] = 0.0
        delta[w1] = new / new_norm * room
        total = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return x + delta / bview(total, x) * eps
