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

import functools
import math

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import as_outputs, bview, left, query_budget, with_loss
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
        # queries each input may make: the oracle's budget left now, and the attack's own cap
        room = left(access, rows).clamp(max=n_iters)

        rng = self.row_random(x)  # per-input streams: an input's squares do not depend on its batch
        x_best = budget.project(x, self._init(x, eps, gen, budget, rng))
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        # The working set: the inputs still searching, gathered once and compacted only when one stops
        # (success, or its queries spent). Per iteration the loop then costs one proposal, one query
        # and a few element-wise updates, with no scatter back into the full batch.
        idx = rows[room > 0]
        xs, best, sub, last, rows_rng = x[idx], x_best[idx], objective.subset(idx), room[idx] - 1, rng.subset(idx)
        loss_best = torch.full((idx.numel(),), float("inf"), device=x.device)
        skip_project = budget.mask is None and self.norm == "inf"  # a Linf proposal is in the ball and bounds
        for it in range(n_iters):
            if idx.numel() == 0:
                break
            if it == 0:
                x_new = best
            else:
                cand = self._propose(xs, best, eps, p_selection(p_init, it, n_iters), gen, budget, rows_rng)
                x_new = cand if skip_project else budget.project(xs, cand)
            # rows are distinct, so the oracle's own check refuses any query beyond an input's budget
            outputs = as_outputs(access, access(x_new, idx), sub)
            loss = sub.loss(outputs).detach().to(device=x.device, dtype=loss_best.dtype)
            success = sub.success(outputs).to(x.device).bool()
            better = (loss < loss_best) | success
            best = torch.where(bview(better, best), x_new, best)
            loss_best = torch.where(better, loss, loss_best)
            stop = success | (last <= it)  # last: the iteration of an input's final query
            if bool(stop.any()):  # write the stopping inputs back and shrink the working set
                x_best[idx] = best
                used[idx] = it + 1
                done[idx] |= success
                keep = ~stop
                idx, xs, best, loss_best, last = idx[keep], xs[keep], best[keep], loss_best[keep], last[keep]
                if idx.numel():
                    sub, rows_rng = objective.subset(idx), rows_rng.subset(keep.nonzero().squeeze(1))
        if idx.numel():
            x_best[idx] = best
            used[idx] = n_iters
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
        _, c, h, w = x.shape
        s = round(math.sqrt(p * h * w))
        s = min(max(s, 1), h - 1, w - 1) if min(h, w) > 1 else 1
        top = rng.randint(0, h - s + 1)
        left = rng.randint(0, w - s + 1)
        # one row of a per-side table per input (one op each) instead of comparing index ranges
        window = _spans(h, s, x.device)[top][:, None, :, None] & _spans(w, s, x.device)[left][:, None, None, :]
        signs = rng.randint(0, 2, c, 1, 1).to(x.dtype) * 2 - 1
        lo, hi = budget.bounds
        cand = torch.where(window, (x + eps * signs).clamp(lo, hi), x_best)
        # the reference redraws until the square changes something; flipping the signs always does
        same = (cand == x_best).flatten(1).all(dim=1)
        if bool(same.any()):
            cand[same] = torch.where(window[same], (x[same] - eps * signs[same]).clamp(lo, hi), x_best[same])
        return cand


@functools.lru_cache(maxsize=64)
def _spans(size: int, s: int, device: torch.device) -> Tensor:
    """(size - s + 1, size) bool: row t is True on the s positions t .. t + s - 1."""
    pos = torch.arange(size, device=device)
    start = torch.arange(size - s + 1, device=device)[:, None]
    return (pos >= start) & (pos < start + s)


@functools.lru_cache(maxsize=64)
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


@functools.lru_cache(maxsize=64)
def _halves(s: int, device: torch.device) -> Tensor:
    """The reference's meta_pseudo_gaussian_pert before its random transpose (cached: a function of s)."""
    delta = torch.zeros(s, s, device=device)
    delta[: s // 2] = _rect_bump(s // 2, s, device) if s // 2 > 0 else 0.0
    delta[s // 2 :] = -_rect_bump(s - s // 2, s, device)
    return delta / delta.norm().clamp_min(1e-12)


def _bump(s: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """The reference's meta_pseudo_gaussian_pert: two opposite-sign halves, randomly transposed."""
    delta = _halves(s, device)
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
        # window sums of squares on views of one squared tensor, not masked copies of the image
        sq = delta.square()
        in1 = sq[w1].sum(dim=(2, 3), keepdim=True)
        in_both = in1 + sq[w2].sum(dim=(2, 3), keepdim=True)
        top, bottom, left, right = max(r1, r2), min(r1, r2) + s, max(c1, c2), min(c1, c2) + s
        if top < bottom and left < right:  # the windows overlap: count the shared pixels once
            in_both = in_both - sq[:, :, top:bottom, left:right].sum(dim=(2, 3), keepdim=True)
        norm_window1 = in1.sqrt()
        norm_image = sq.sum(dim=(1, 2, 3), keepdim=True).sqrt()
        norm_windows = in_both.clamp_min(0).sqrt()

        signs = torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=x.device).to(x.dtype) * 2 - 1
        new = _bump(s, gen, x.device).view(1, 1, s, s) * signs
        new = new + delta[w1] / (1e-10 + norm_window1)
        new_norm = torch.linalg.vector_norm(new, dim=(2, 3), keepdim=True).clamp_min(1e-12)
        room = ((eps**2 - norm_image**2).clamp_min(0) / c + norm_windows**2).sqrt()
        delta[w2] = 0.0  # delta is this call's own tensor (x_best - x)
        delta[w1] = new / new_norm * room
        total = torch.linalg.vector_norm(delta, dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        return x + delta / total * eps
