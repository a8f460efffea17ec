"""SSIM-constrained PGD: a perceptual ("attention-based") bound instead of, or on top of, an Lp ball.

The attacker minimises the objective's loss while the structural similarity to the clean input stays
at or above the spec's floor (``threat.imperceptibility: {kind: perceptual, metric: ssim, threshold}``).
Two mechanisms, as in Laidlaw et al. 2021 (arXiv:2006.12655) for perceptual bounds:

- a penalty ``penalty * max(0, floor + margin - SSIM(x, x_adv))`` in the loss steers the sign steps
  towards changes SSIM tolerates (edges and texture rather than flat background);
- a backtracking projection keeps every iterate feasible: when a step would fall below the floor, the
  step is shortened by bisection between the last feasible iterate and the proposal.

Every returned candidate is re-measured with ``attackgen.run.ssim.ssim`` (the one the executor reports)
after clipping; a candidate below the floor is replaced by the last feasible iterate, so the floor
holds for every output. An Linf (or L2) budget, when given, is enforced by projection; without one,
``max_linf`` bounds the step scale and the change per pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import Ball, on_device
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.transfer import model_handle
from attackgen.run.objectives.base import Objective
from attackgen.run.ssim import ssim
from taxonomy.errors import AttackgenError
from taxonomy.params import SSIMParams


class SSIMConstrainedPGD(Attack[SSIMParams]):
    """PGD whose iterates all keep SSIM >= floor.

    Parameters: ``steps`` (100), ``step_size`` (input units; default 0.05 * epsilon), ``penalty``
    (10.0), ``max_linf`` (0.1: the Linf bound when the budget has none), ``margin`` (0.002: kept above
    the floor so 8-bit quantisation cannot push a candidate under it), ``backtrack`` (bisection steps, 8).
    """

    access = "gradients"
    params_model = SSIMParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        floor = budget.ssim_floor
        if floor is None:
            raise AttackgenError("threat.imperceptibility: SSIM-constrained PGD needs a perceptual bound "
                                 "{kind: perceptual, metric: ssim, threshold: ...}")
        model = model_handle(access, env)
        steps = self.params.steps
        penalty = self.params.penalty
        margin = self.params.margin
        backtrack = self.params.backtrack
        span = budget.bounds[1] - budget.bounds[0]
        if budget.epsilon is not None and budget.norm in ("inf", "2"):
            ball = Ball(x, budget, budget.norm, budget.epsilon)
            scale = budget.epsilon if budget.norm == "inf" else budget.epsilon / x[0].numel() ** 0.5
        else:
            scale = self.params.max_linf
            ball = Ball(x, budget, "inf", scale)
        alpha = self.params.step_for(scale)
        objective = on_device(objective, x.device)
        goal = floor + margin
        view = (-1,) + (1,) * (x.dim() - 1)

        x_adv = x.clone()
        live = torch.arange(x.shape[0], device=x.device)  # inputs not yet fooled
        for _ in range(steps):
            xa = x_adv[live].requires_grad_(True)
            out = model(xa, live)
            sub = objective.subset(live)
            with torch.no_grad():
                fooled = sub.success(out)
            sim = ssim(x[live], xa, data_range=span)
            loss = sub.loss(out) + penalty * (goal - sim).clamp_min(0.0)
            (grad,) = torch.autograd.grad(loss.sum(), xa)
            keep = ~fooled  # a fooled input keeps its iterate
            live, xa, grad = live[keep], xa.detach()[keep], grad[keep]
            if live.numel() == 0:
                break
            proposal = ball.subset(live).project(xa - alpha * grad.sign())
            x_adv[live] = self._backtrack(x[live], xa, proposal, goal, span, backtrack, view)
        # verification: every candidate clipped, re-measured, and kept only if it holds the floor
        x_adv = x_adv.clamp(*budget.bounds)
        with torch.no_grad():
            final = ssim(x, x_adv, data_range=span)
            bad = final < floor
            x_adv[bad] = x[bad]
            final = torch.where(bad, torch.ones_like(final), final)
        return AttackOutput(x_adv, {"ssim": final.detach().cpu(), "ssim_floor": floor})

    @staticmethod
    @torch.no_grad()
    def _backtrack(x: Tensor, feasible: Tensor, proposal: Tensor, goal: float, span: float, steps: int,
                   view: tuple[int, ...]) -> Tensor:
        """Per input, the point furthest along feasible -> proposal whose SSIM to x is still >= goal."""
        ok = ssim(x, proposal, data_range=span) >= goal
        if bool(ok.all()):
            return proposal
        lo = torch.zeros(feasible.shape[0], device=feasible.device, dtype=feasible.dtype)
        hi = torch.ones_like(lo)
        for _ in range(steps):
            mid = (lo + hi) / 2
            good = ssim(x, feasible + mid.view(view) * (proposal - feasible), data_range=span) >= goal
            lo = torch.where(good, mid, lo)
            hi = torch.where(good, hi, mid)
        t = torch.where(ok, torch.ones_like(lo), lo)
        return feasible + t.view(view) * (proposal - feasible)
