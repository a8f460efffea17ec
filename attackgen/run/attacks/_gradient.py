"""The one gradient-step loop behind FGSM, BIM, ILLC, PGD (Linf, L2) and MI-FGSM.

Each step is one forward and one backward pass on the white-box access, and nothing else of that
size: the Linf ball is a per-element [lo, hi] box computed once per batch (one clamp per step), the
success of each iterate comes from the forward pass the step needed anyway, and there is no host sync
in the loop unless early stopping asks for one.

Every iterate is inside the budget (ball, mask, bounds). An input's returned candidate is its first
iterate the forward pass saw succeed, else the final iterate (verified later by the executor). With
``early_stop`` inputs leave the batch as soon as they succeed (survivors only); with ``restarts`` > 1
each restart runs on the inputs no earlier restart broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.attacks.syncs import sync_every
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError


def on_device(objective: Objective, device: torch.device) -> Objective:
    """The objective with its per-input tensors on device."""
    return objective.to(device)


def require_norm(budget: Budget, allowed: tuple[str, ...], attack: str) -> str:
    norm = budget.norm if budget.norm is not None else allowed[0]
    if norm not in allowed:
        shown = " or ".join(f"L{a}" for a in allowed)
        raise AttackgenError(f"{attack} needs an {shown} budget, got L{norm}")
    return norm


def require_epsilon(budget: Budget, attack: str) -> float:
    if budget.epsilon is None:
        raise AttackgenError(f"{attack} is a fixed-epsilon attack; the budget has no epsilon (minimal-norm mode)")
    return float(budget.epsilon)


@overload
def take_rows(t: Tensor, rows: Tensor, n: int) -> Tensor: ...
@overload
def take_rows(t: None, rows: Tensor, n: int) -> None: ...
def take_rows(t: Tensor | None, rows: Tensor, n: int) -> Tensor | None:
    """Per-input rows of a tensor that is per-input (leading dim n > 1); shared tensors pass through."""
    if t is None or t.dim() == 0 or t.shape[0] != n or n == 1:
        return t
    return t[rows]


def as_mask(budget: Budget, x: Tensor) -> Tensor | None:
    """The budget's mask as 0/1 in x's dtype and device, with x's number of dims (leading dim 1 or N)."""
    if budget.mask is None:
        return None
    mask = (budget.mask.to(device=x.device) > 0).to(x.dtype)
    return mask.view(*([1] * (x.dim() - mask.dim())), *mask.shape)


class Ball:
    """The feasible set of one batch: Lp ball around x, mask and bounds, with precomputed pieces."""

    def __init__(self, x: Tensor, budget: Budget, norm: str, epsilon: float) -> None:
        self.x, self.norm, self.epsilon, self.bounds = x, norm, float(epsilon), budget.bounds
        self.mask = as_mask(budget, x)
        if norm == "inf":
            radius = self.epsilon if self.mask is None else self.epsilon * self.mask
            self.lo = (x - radius).clamp_(*self.bounds)
            self.hi = (x + radius).clamp_(*self.bounds)

    def subset(self, rows: Tensor) -> Ball:
        n = self.x.shape[0]
        new = object.__new__(Ball)
        new.__dict__.update(self.__dict__)
        new.x, new.mask = self.x[rows], take_rows(self.mask, rows, n)
        if self.norm == "inf":
            new.lo, new.hi = self.lo[rows], self.hi[rows]
        return new

    def project(self, xa: Tensor) -> Tensor:
        if self.norm == "inf":
            return torch.clamp(xa, self.lo, self.hi)
        delta = xa - self.x
        if self.mask is not None:
            delta = delta * self.mask
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (self.epsilon / norms).clamp_(max=1.0)
        return (self.x + delta * factor.view(-1, *([1] * (delta.dim() - 1)))).clamp_(*self.bounds)

    def random_start(self, gen: torch.Generator | RowRandom) -> Tensor:
        """A uniform point of the ball per input; from each input's own stream when given a RowRandom."""
        x = self.x
        if self.norm == "inf":
            noise = gen.rand(*x.shape[1:], dtype=x.dtype) if isinstance(gen, RowRandom) else torch.rand(
                x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return self.project(x + (2 * noise - 1) * self.epsilon)
        # uniform in the L2 ball: gaussian direction, radius eps * u^(1/d)
        direction = gen.randn(*x.shape[1:], dtype=x.dtype) if isinstance(gen, RowRandom) else torch.randn(
            x.shape, generator=gen, device=x.device, dtype=x.dtype)
        if self.mask is not None:
            direction = direction * self.mask
        flat = direction.flatten(1)
        d = flat.shape[1]
        uniform = gen.rand(dtype=x.dtype) if isinstance(gen, RowRandom) else torch.rand(
            x.shape[0], generator=gen, device=x.device, dtype=x.dtype)
        radius = uniform.pow(1.0 / d)
        scale = self.epsilon * radius / flat.norm(dim=1).clamp_min(1e-12)
        return self.project(x + direction * scale.view(-1, *([1] * (x.dim() - 1))))


@dataclass
class LoopConfig:
    steps: int
    step_size: float
    norm: str  # "inf" (sign steps) or "2" (normalised gradient steps)
    random_start: bool = False
    restarts: int = 1
    early_stop: bool = False
    decay: float | None = None  # MI-FGSM momentum; None for plain steps
    check_every: int | None = None  # steps between looks at which inputs are done; None: syncs.sync_every


def _direction(grad: Tensor, cfg: LoopConfig, momentum: Tensor | None, mask: Tensor | None) -> Tensor:
    """The ascent step for one gradient (subtracted: losses are minimised); updates momentum in place."""
    if momentum is not None:
        l1 = grad.abs().flatten(1).mean(dim=1).clamp_min(1e-12)
        momentum.mul_(cfg.decay or 0.0).add_(grad / l1.view(-1, *([1] * (grad.dim() - 1))))
        grad = momentum
    if cfg.norm == "inf":
        return grad.sign().mul_(cfg.step_size)
    if mask is not None:
        grad = grad * mask
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad * (cfg.step_size / norms).view(-1, *([1] * (grad.dim() - 1)))


def _descend(access: Access, rows: Tensor, objective: Objective, ball: Ball, cfg: LoopConfig,
             gen: torch.Generator | RowRandom) -> tuple[Tensor, Tensor]:
    """One run of the loop on the inputs at batch rows ``rows``; returns (candidates, found)."""
    x = ball.x
    n = x.shape[0]
    shape = (-1, *([1] * (x.dim() - 1)))
    check_every = cfg.check_every or sync_every(x.device)  # attackgen.run.attacks.syncs
    xa = ball.random_start(gen) if cfg.random_start else x.clone()
    momentum = torch.zeros_like(x) if cfg.decay is not None else None
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    best = xa.clone() if not cfg.early_stop else torch.empty_like(x)
    pos = torch.arange(n, device=x.device)  # positions (within this run) of the inputs still active
    pending = torch.zeros(n, dtype=torch.bool, device=x.device)  # active rows that succeeded since the last look
    held = torch.empty_like(x) if cfg.early_stop else x  # their first successful iterate
    for step in range(cfg.steps):
        xa.requires_grad_(True)
        out = access(xa, rows if pos.shape[0] == n else rows[pos])
        (grad,) = torch.autograd.grad(objective.loss(out).sum(), xa)
        xa = xa.detach()
        with torch.no_grad():
            hit = objective.success(out)
            if cfg.early_stop:
                held = torch.where((hit & ~pending).view(shape), xa, held)
                pending |= hit
                if (step + 1) % check_every == 0 and bool(pending.any()):  # the loop's only sync
                    best[pos[pending]] = held[pending]
                    found[pos[pending]] = True
                    keep = (~pending).nonzero().squeeze(1)
                    if keep.numel() == 0:
                        return best, found
                    m = pos.shape[0]
                    pos, xa, grad, held = pos[keep], xa[keep], grad[keep], held[keep]
                    pending = pending[keep]
                    objective, ball = objective.subset(keep), ball.subset(keep)
                    momentum = take_rows(momentum, keep, m)
            else:
                best = torch.where((hit & ~found).view(shape), xa, best)
                found |= hit
            xa = ball.project(xa - _direction(grad, cfg, momentum, ball.mask))
    if cfg.early_stop:
        best[pos] = torch.where(pending.view(shape), held, xa)
        found[pos] |= pending
        return best, found
    return torch.where(found.view(shape), best, xa), found


def gradient_attack(access: Access, x: Tensor, objective: Objective, budget: Budget, cfg: LoopConfig,
                    gen: torch.Generator | RowRandom, epsilon: float) -> tuple[Tensor, dict[str, Any]]:
    """Run the loop (with restarts on the inputs not yet broken); returns candidates and info."""
    x = x.detach()
    objective = on_device(objective, x.device)
    ball = Ball(x, budget, cfg.norm, epsilon)
    rows = torch.arange(x.shape[0], device=x.device)
    best, found = _descend(access, rows, objective, ball, cfg, gen)
    restarts_run = 1
    for _ in range(1, cfg.restarts):
        todo = (~found).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        with torch.no_grad():  # the final iterates were never evaluated: do they succeed already?
            done = objective.subset(todo).success(access(best[todo], todo))
        found[todo[done]] = True
        todo = todo[~done]
        if todo.numel() == 0:
            break
        restart_gen = gen.subset(todo) if isinstance(gen, RowRandom) else gen
        cand, hit = _descend(access, todo, objective.subset(todo), ball.subset(todo), cfg, restart_gen)
        best[todo], found[todo] = cand, hit
        restarts_run += 1
    return best, {"steps": cfg.steps, "step_size": cfg.step_size, "restarts_run": restarts_run,
                  "found_during_attack": int(found.sum())}
