"""Universal and contextual perturbations: one delta, fitted on the data basis, added to every input.

Moosavi-Dezfooli et al. 2017 (arXiv:1610.08401) aggregate minimal per-input steps over the data set
and project the sum onto the Lp ball. This implementation keeps that structure with a projected
sign-gradient inner step, batched (the form Metzen et al. 2017 and ART's ``bim``/``pgd`` inner
attackers use), which is both faster and stronger on small models than an inner DeepFool:

    for each epoch, for each batch B of the fitting split:
        g = grad_delta  sum_{x in B, not yet fooled} loss(f(clip(x + delta)))
        delta <- Proj_ball(delta - alpha * sign(g))        (L2: alpha * g / ||g||)

Only inputs the current delta does not yet fool contribute (Moosavi-Dezfooli's "if the perturbation
does not fool x_i, add a step for x_i"), so the perturbation keeps working on the hard inputs rather
than pushing the already fooled ones further. The step size decays over the epochs; the delta with the
best fooling rate on the fitting split is kept.

Untargeted objectives give the classic UAP; a static-target objective gives the targeted variant
(every input pushed to one class). Contextual scope is the same attack fitted on the inputs of one
context (the executor selects them and evaluates in and out of context).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import on_device
from attackgen.run.attacks.base import AttackEnv, AttackOutput, Budget, P, UniversalAttack
from attackgen.run.attacks.transfer import model_handle
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import UAPParams


def project_delta(delta: Tensor, budget: Budget) -> Tensor:
    """A shared perturbation (1, C, H, W) into the mask and the Lp ball."""
    if budget.mask is not None:
        delta = delta * budget.mask
    if budget.epsilon is not None and budget.norm == "inf":
        delta = delta.clamp(-budget.epsilon, budget.epsilon)
    elif budget.epsilon is not None and budget.norm == "2":
        norm = delta.norm().clamp_min(1e-12)
        delta = delta * min(1.0, budget.epsilon / float(norm))
    return delta


class AdditiveUniversal(UniversalAttack[P]):
    """A universal attack whose artefact is one delta added to every input (a score-searched UAP, a lens layer):
    applied through the mask and the Lp ball, inside the input bounds. ``info`` names the kind in the output."""

    info: ClassVar[dict[str, Any]] = {"universal": True}

    def apply(self, x: Tensor, budget: Budget) -> Tensor:
        if self.fitted is None:
            raise RuntimeError(f"fit {type(self).__name__} before applying it")
        return (x + project_delta(self.fitted.to(x.device, x.dtype), budget)).clamp(*budget.bounds)

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if self.fitted is None:
            raise RuntimeError("a universal attack must be fitted before it is applied")
        return AttackOutput(self.apply(x, budget), dict(self.info))


class UniversalPerturbation(UniversalAttack[UAPParams]):
    """One Linf or L2 perturbation for all inputs (untargeted or one target class).

    Parameters: ``epochs`` (5), ``batch_size`` (64), ``step_size`` (the first step in input units,
    default 0.1 * epsilon; it decays linearly to a tenth), ``fit_size`` (cap on fitting inputs, 2000),
    ``min_steps`` (100: a small fitting set, such as one context, runs more epochs to get this many steps).
    """

    access = "gradients"
    params_model = UAPParams
    data_parallel_fit = True

    def fit(
        self, access: Access, x_fit: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> Tensor:
        if budget.epsilon is None or budget.norm not in ("inf", "2"):
            raise AttackgenError(
                "threat.imperceptibility: a universal perturbation needs a fixed Linf or L2 epsilon, "
                f"got norm={budget.norm!r} epsilon={budget.epsilon!r}"
            )
        self.require_inputs(x_fit, "the universal perturbation")
        if budget.mask is not None and budget.mask.dim() == x_fit.dim() and budget.mask.shape[0] > 1:
            raise AttackgenError("threat.capability.spatial: a universal perturbation takes one region for every "
                                 "input (kind mask or box), not a square per input (kind patch)")
        model = model_handle(access, env)
        objective = on_device(objective, x_fit.device)
        first_step = self.params.step_for(budget.epsilon)
        epochs = self.params.epochs
        batch_size = self.params.batch_size
        fit_size = self.params.fit_size
        min_steps = self.params.min_steps
        shard = env.shard if env is not None else None
        mine = (lambda rows: rows) if shard is None else shard.rows
        total = (lambda t: t) if shard is None else shard.total
        gen = self.generator(x_fit.device)
        rows_all = torch.arange(x_fit.shape[0], device=x_fit.device)
        if x_fit.shape[0] > fit_size:
            rows_all = torch.randperm(x_fit.shape[0], generator=gen, device=x_fit.device)[:fit_size]
        # a small context gives few batches per epoch: run enough epochs for min_steps steps in all
        epochs = max(epochs, math.ceil(min_steps / math.ceil(rows_all.numel() / batch_size)))
        delta = torch.zeros((1, *x_fit.shape[1:]), dtype=x_fit.dtype, device=x_fit.device)
        best, best_rate = delta.clone(), -1.0
        for epoch in range(epochs):
            alpha = first_step * (1.0 - 0.9 * epoch / max(epochs - 1, 1))
            order = rows_all[torch.randperm(rows_all.numel(), generator=gen, device=x_fit.device)]
            fooled = 0
            for i in range(0, order.numel(), batch_size):
                rows = mine(order[i : i + batch_size])
                sub = objective.subset(rows)
                delta.requires_grad_(True)
                x_adv = (x_fit[rows] + delta).clamp(*budget.bounds)
                out = model(x_adv, rows)
                done = sub.success(out).detach()
                n_done, n_left = total(torch.stack([done.sum(), (~done).sum()])).tolist()
                fooled += int(n_done)
                if n_left == 0:
                    delta = delta.detach()
                    continue
                loss = (sub.loss(out) * (~done).to(out.dtype)).sum()
                (grad,) = torch.autograd.grad(loss, delta, allow_unused=True, materialize_grads=True)
                grad = total(grad)
                step = grad.sign() if budget.norm == "inf" else grad / grad.norm().clamp_min(1e-12)
                delta = project_delta(delta.detach() - alpha * step, budget)
            rate = fooled / max(order.numel(), 1)  # fooling rate seen during the epoch (delta moving)
            if rate >= best_rate:
                best, best_rate = delta.detach().clone(), rate
        # the final choice is measured with a fixed delta, not the moving one of the last epoch
        final_rate = self._rate(model, x_fit, mine(rows_all), objective, delta.detach(), budget, batch_size, total,
                                rows_all.numel())
        best_fixed = self._rate(model, x_fit, mine(rows_all), objective, best, budget, batch_size, total,
                                rows_all.numel())
        self.fitted = delta.detach() if final_rate >= best_fixed else best
        self.fit_rate = max(final_rate, best_fixed)
        return self.fitted

    @staticmethod
    @torch.no_grad()
    def _rate(model, x_fit: Tensor, rows_all: Tensor, objective: Objective, delta: Tensor, budget: Budget,
              batch_size: int, total: Callable[[Tensor], Tensor], n_all: int) -> float:
        """The fooling rate of a fixed delta over the fitting inputs (this process's rows, summed over all)."""
        hits = torch.zeros((), dtype=torch.long, device=x_fit.device)
        for i in range(0, rows_all.numel(), 4 * batch_size):
            rows = rows_all[i : i + 4 * batch_size]
            out = model((x_fit[rows] + delta).clamp(*budget.bounds), rows)
            hits += objective.subset(rows).success(out).sum()
        return int(total(hits)) / max(n_all, 1)

    def apply(self, x: Tensor, budget: Budget) -> Tensor:
        if self.fitted is None:
            raise RuntimeError("fit the universal perturbation before applying it")
        return budget.project(x, x + self.fitted.to(x.device, x.dtype))


class TransferUniversalPerturbation(UniversalPerturbation):
    """The same fit on a surrogate model (its gradients; the victim is never queried while fitting), then
    applied to the victim unchanged: a universal perturbation evaluated by transfer (Moosavi-Dezfooli et al.
    2017 report that UAPs transfer across architectures; Papernot et al. 2017 for substitute models)."""

    access = "surrogate"
