"""Box-constrained L-BFGS (Szegedy et al. 2014, arXiv:1312.6199): the first adversarial-example attack.

Szegedy et al. find, for a target label l, the smallest r with f(x + r) = l and x + r in the box, by
minimising ``c * |r|^2 + loss_f(x + r, l)`` with box-constrained L-BFGS and a line search over c for
the largest c (smallest perturbation) that still succeeds. Here:

- the inner problem is solved by SciPy's L-BFGS-B (``scipy.optimize.minimize(method="L-BFGS-B")``),
  a quasi-Newton method that builds curvature from the gradient history; its bounds are exact, so the
  input box, a fixed Linf ball and a spatial mask (zero-width bounds outside it) all hold exactly;
- the batch is solved as one separable problem (the sum of per-input objectives), so one L-BFGS-B run
  serves every input;
- c is searched per input by bisection in log space (``binary_search_steps``): success raises c
  (smaller perturbation), failure lowers it; the smallest successful perturbation is kept.

The loss is the objective's (a static or dynamic target, or untargeted). Where the objective offers a
logit margin (classification), the margin floored at -confidence is used instead of cross-entropy: the
batch is one joint problem, and an untargeted cross-entropy, unbounded below, lets a few inputs run
away with the shared line search (measured: 0.44 of untargeted inputs fooled instead of 1.0).
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import on_device
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.transfer import model_handle
from attackgen.run.objectives.base import Objective
from attackgen.run.ssim import ssim
from taxonomy.params import LBFGSParams, LBFGSSSIMParams


class LBFGS(Attack[LBFGSParams]):
    """Minimal-L2 attack by box-constrained L-BFGS with a search over the penalty constant c.

    Parameters: ``binary_search_steps`` (5), ``max_iter`` (L-BFGS-B iterations per c, 100),
    ``initial_const`` (c, 0.01), ``confidence`` (0.5: the margin floor). With a fixed Linf epsilon the
    box is intersected with the ball.
    """

    access = "gradients"
    params_model = LBFGSParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        model = model_handle(access, env)
        kappa = self.params.confidence
        # The batch is one joint problem, so no input's loss may run off to -infinity (an untargeted
        # cross-entropy does, and then drags the shared line search along): use the logit margin,
        # floored at -confidence, as C&W do, where the objective offers it.
        objective = objective.with_loss("margin")  # unchanged where the objective offers no loss choice
        objective = on_device(objective, x.device)
        searches = self.params.binary_search_steps
        max_iter = self.params.max_iter
        const = torch.full((x.shape[0],), self.params.initial_const, dtype=torch.float64)
        lo_c = torch.zeros_like(const)
        hi_c = torch.full_like(const, float("inf"))
        rows = torch.arange(x.shape[0], device=x.device)
        shape, dtype, device = x.shape, x.dtype, x.device

        low = torch.full_like(x, budget.bounds[0]) - x
        high = torch.full_like(x, budget.bounds[1]) - x
        if budget.epsilon is not None and budget.norm == "inf":
            low, high = low.clamp_min(-budget.epsilon), high.clamp_max(budget.epsilon)
        if budget.mask is not None:
            keep = (budget.mask.expand_as(x) != 0)
            low, high = torch.where(keep, low, 0.0), torch.where(keep, high, 0.0)
        bounds = np.stack([low.flatten().cpu().double().numpy(), high.flatten().cpu().double().numpy()], axis=1)

        best = x.clone()
        best_norm = torch.full((x.shape[0],), float("inf"), device=device)
        start = np.zeros(x.numel())
        for _ in range(searches):
            c = const.to(device=device, dtype=dtype)

            def fun(flat: np.ndarray, c: Tensor = c) -> tuple[float, np.ndarray]:
                delta = torch.from_numpy(flat).to(device=device, dtype=dtype).view(shape).requires_grad_(True)
                out = model(x + delta, rows)
                total = (c * delta.flatten(1).pow(2).sum(dim=1) + objective.loss(out).clamp_min(-kappa)
                         + self.penalty(x, x + delta, budget)).sum()
                (grad,) = torch.autograd.grad(total, delta)
                return float(total.detach()), grad.flatten().double().cpu().numpy()

            result = minimize(fun, start, jac=True, method="L-BFGS-B", bounds=bounds,
                              options={"maxiter": max_iter})
            delta = torch.from_numpy(result.x).to(device=device, dtype=dtype).view(shape)
            x_adv = budget.project(x, x + delta)
            with torch.no_grad():
                ok = objective.success(model(x_adv, rows)).cpu() & self.admissible(x, x_adv, budget).cpu()
            norm = (x_adv - x).flatten(1).norm(dim=1)
            better = ok.to(device) & (norm < best_norm)
            best[better] = x_adv[better]
            best_norm = torch.where(better, norm, best_norm)
            # bisection on c in log space: success -> try a larger c, failure -> a smaller one
            lo_c = torch.where(ok, const, lo_c)
            hi_c = torch.where(ok, hi_c, const)
            const = torch.where(torch.isinf(hi_c), const * 10, torch.sqrt(lo_c.clamp_min(1e-12) * hi_c))
            const = torch.where((lo_c == 0) & ~ok, hi_c / 10, const)
            start = result.x  # warm start: the next c begins where this one ended
        failed = torch.isinf(best_norm)
        best[failed] = x_adv[failed]  # no success for these: the last iterate (the executor will say so)
        return AttackOutput(best, {"const": const.float()})

    def penalty(self, x: Tensor, x_adv: Tensor, budget: Budget) -> Tensor:
        """Per-input extra term of the inner objective (none for plain L-BFGS)."""
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def admissible(self, x: Tensor, x_adv: Tensor, budget: Budget) -> Tensor:
        """Per-input: does the candidate meet the bounds the projection cannot hold (all, for plain L-BFGS)."""
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)


class SSIMLBFGS(LBFGS):
    """L-BFGS in penalty form under an SSIM floor: the inner objective adds ``ssim_penalty`` *
    max(0, floor + margin - SSIM(x, x + r)) (Lagrangian form: SSIM has no projection, rule D3), and a
    candidate counts only when its SSIM, re-measured, is at least the floor. Second-order (quasi-Newton
    curvature from the gradient history) under a perceptual bound; Szegedy et al. 2014 with the SSIM of
    Wang et al. 2004."""

    params_model = LBFGSSSIMParams

    def _floor(self, budget: Budget) -> float | None:
        return None if budget.ssim_floor is None else float(budget.ssim_floor)

    def penalty(self, x: Tensor, x_adv: Tensor, budget: Budget) -> Tensor:
        floor = self._floor(budget)
        if floor is None:
            return super().penalty(x, x_adv, budget)
        params = cast(LBFGSSSIMParams, self.params)
        weight = params.ssim_penalty
        margin = params.margin
        span = budget.bounds[1] - budget.bounds[0]
        return weight * (floor + margin - ssim(x, x_adv, data_range=span)).clamp_min(0)

    def admissible(self, x: Tensor, x_adv: Tensor, budget: Budget) -> Tensor:
        floor = self._floor(budget)
        if floor is None:
            return super().admissible(x, x_adv, budget)
        return ssim(x, x_adv, data_range=budget.bounds[1] - budget.bounds[0]) >= floor
