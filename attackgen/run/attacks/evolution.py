"""Few-pixel attack by differential evolution (Su, Vargas, Sakurai 2019, arXiv:1710.08864), L0.

Each candidate encodes ``pixels`` pixels as (row, column, value per channel); a candidate image is the
clean input with those pixels overwritten. The population evolves by DE/rand/1 (F = 0.5, no
crossover, as in the paper) with greedy one-to-one selection, the fitness being the objective's loss
on the oracle's scores. One query per candidate per generation, through the counted score oracle; an
input stops as soon as one candidate succeeds, and a generation evaluates only as many trials of an
input as it has queries left. An L0 epsilon counts changed elements, as the executor measures it, so
a pixel of C channels costs C and the attack changes epsilon // C pixels; without an L0 epsilon,
``pixels`` (default 1) is used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import left, population_slots, query_budget, score, with_loss
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import EvolutionParams


def paint(x: Tensor, genes: Tensor, bounds: tuple[float, float], box: Tensor | None = None) -> Tensor:
    """x (M, C, H, W) with each candidate's pixels set; genes (M, P, 2 + C) in [0, 1).

    ``box`` (M, 4) = (top, height, left, width) per candidate maps the position genes into a region
    (the bounding box of a mask); without it they span the whole image.
    """
    m, _, h, w = x.shape
    if box is None:
        box = torch.tensor([0, h, 0, w], device=x.device).expand(m, 4)
    top, height, left, width = (box[:, k : k + 1] for k in range(4))
    out = x.clone()
    lo, hi = bounds
    r = (top + (genes[..., 0] * height).long().clamp(max=height - 1)).clamp(0, h - 1)
    col = (left + (genes[..., 1] * width).long().clamp(max=width - 1)).clamp(0, w - 1)
    values = lo + genes[..., 2:] * (hi - lo)  # (M, P, C)
    at = torch.arange(m, device=x.device)
    for p in range(genes.shape[1]):
        out[at, :, r[:, p], col[:, p]] = values[:, p].to(x.dtype)
    return out


def mask_boxes(mask: Tensor | None, n: int, h: int, w: int) -> Tensor | None:
    """(n, 4) bounding boxes (top, height, left, width) of a mask broadcastable to (n, C, h, w)."""
    if mask is None:
        return None
    allowed = (mask != 0).expand(n, -1, h, w).any(dim=1)  # (n, h, w)
    rows_any, cols_any = allowed.any(dim=2), allowed.any(dim=1)
    idx_h = torch.arange(h, device=mask.device)
    idx_w = torch.arange(w, device=mask.device)
    big = max(h, w) + 1
    top = torch.where(rows_any, idx_h, big).amin(dim=1)
    bottom = torch.where(rows_any, idx_h, -1).amax(dim=1)
    left = torch.where(cols_any, idx_w, big).amin(dim=1)
    right = torch.where(cols_any, idx_w, -1).amax(dim=1)
    empty = ~rows_any.any(dim=1)
    top, left = torch.where(empty, 0, top), torch.where(empty, 0, left)
    height = torch.where(empty, 1, bottom - top + 1)
    width = torch.where(empty, 1, right - left + 1)
    return torch.stack([top, height, left, width], dim=1)


class DifferentialEvolution(Attack[EvolutionParams]):
    """One-pixel / few-pixel attack; access to scores only."""

    access = "scores"
    params_model = EvolutionParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if x.dim() != 4:
            raise AttackgenError(f"the pixel attack needs image batches (N, C, H, W); got shape {tuple(x.shape)}")
        channels = x.shape[1]
        if budget.norm == "0" and budget.epsilon is not None:
            pixels = int(budget.epsilon) // channels  # L0 counts changed elements: C per pixel
            if pixels < 1:
                raise AttackgenError(
                    f"threat.imperceptibility: an L0 epsilon of {budget.epsilon} changes fewer elements than one "
                    f"pixel of {channels} channels; the pixel attack needs an epsilon of at least {channels}"
                )
        else:
            pixels = self.params.pixels
        popsize = self.params.popsize
        maxiter = self.params.maxiter
        f_weight = self.params.mutation
        n, c, h, w = x.shape
        genes_dim = 2 + c
        boxes = mask_boxes(budget.mask, n, h, w)
        objective = with_loss(objective, "margin")
        rows = torch.arange(n, device=x.device)
        cap = query_budget(access, rows, self.params.max_queries)

        rng = self.row_random(x)  # per-input streams: an input's population does not depend on its batch
        pop = rng.rand(popsize, pixels, genes_dim)
        # extreme values are the useful ones on images; start half the values at the bounds
        extreme = rng.rand(popsize, pixels, c) < 0.5
        pop[..., 2:] = torch.where(extreme, pop[..., 2:].round(), pop[..., 2:])
        fitness = torch.full((n, popsize), float("inf"), device=x.device, dtype=torch.float64)
        best = x.clone()
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        used = torch.zeros(n, dtype=torch.long, device=x.device)

        def evaluate(trial: Tensor, active: Tensor) -> None:
            """Score trial (n, popsize, ...) for active inputs; greedy selection into pop in place."""
            i, j = population_slots(access, used, cap, popsize, active)
            if i.numel() == 0:
                return
            images = paint(x[i], trial[i, j], budget.bounds, None if boxes is None else boxes[i])
            if budget.mask is not None:  # a mask that is not a box: pixels outside it do not change
                region = budget.mask if budget.mask.shape[0] == 1 else budget.mask[i]
                images = torch.where(region != 0, images, x[i])
            loss, success, _ = score(access, objective, images, i)
            used.index_add_(0, i, torch.ones_like(i))
            value = torch.where(success, torch.full_like(loss, -float("inf")), loss)
            better = value <= fitness[i, j]
            pop[i[better], j[better]] = trial[i[better], j[better]]
            fitness[i[better], j[better]] = value[better]
            hit = success.nonzero().squeeze(1)
            if hit.numel():
                best[i[hit]] = images[hit]
                done[i[hit]] = True

        evaluate(pop, torch.ones(n, dtype=torch.bool, device=x.device))
        for _ in range(maxiter):
            active = ~done & (torch.minimum(left(access, rows), cap - used) > 0)
            if not bool(active.any()):
                break
            # DE/rand/1: three distinct random members per slot
            perm = rng.rand(popsize, popsize).argsort(dim=2)[..., :3]
            gather = perm[..., None, None].expand(n, popsize, 3, pixels, genes_dim)
            a, b, d = pop[:, None].expand(n, popsize, popsize, pixels, genes_dim).gather(2, gather).unbind(2)
            trial = (a + f_weight * (b - d)).clamp(0.0, 1.0 - 1e-6)
            evaluate(trial, active)

        # inputs not fooled: the fittest candidate (the executor verifies)
        still = (~done).nonzero().squeeze(1)
        if still.numel():
            top = fitness[still].argmin(dim=1)
            best[still] = paint(x[still], pop[still, top], budget.bounds, None if boxes is None else boxes[still])
        if budget.mask is not None:
            best = torch.where(budget.mask.expand_as(x) != 0, best, x)
        return AttackOutput(best, {"queries": used.tolist(), "success_in_attack": done.tolist(), "pixels": pixels})
