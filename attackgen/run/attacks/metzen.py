"""Metzen et al. 2017 (arXiv:1704.05712): targeted attacks on semantic segmentation.

``MetzenIterative`` is the single-image attack: targeted sign steps xi <- clip_eps(xi - alpha *
sign(grad J)) on the segmentation objective (static, dynamic or confusing target, or untargeted),
where J is the objective's weighted cross-entropy (Metzen's omega weighting and confidence trick live
in the objective; ``background_weight``, ``confidence_threshold`` and ``fill_weight`` given here
override them). Every iterate is in the ball, the mask and the bounds (the shared ``Ball`` of the
FGSM/BIM/PGD loop). Unlike that loop it does not stop at the first success: dense consequences are
thresholds on pixel shares, so it returns each input's last successful iterate, which keeps its
success after clipping and 8-bit rounding far more often than the first, and for an input that never
succeeds its iterate with the highest ``objective.progress`` (pixel agreement, removal rate...).

``MetzenUniversal`` is the universal variant: one perturbation xi for every input, fitted on the data
basis (or the inputs of a context) and evaluated on held-out inputs. Each update is a sign step on
the loss gradient summed over a mini-batch of fitting inputs (Metzen's stochastic variant), with
every input's own target (dynamic targets are rebuilt from each input's clean prediction, rule F1).
The step size follows a cosine schedule from ``rel_stepsize`` * epsilon down to a tenth of it, which
settles the sign oscillation of the last epochs. ``tile`` (pixels) optionally fits a smaller tile
repeated periodically over the image, as TUBSRobustCheck does for large inputs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import Ball, on_device, require_epsilon, require_norm
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget, UniversalAttack
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.objectives.base import Objective
from taxonomy.params import MetzenParams, MetzenUAPParams

OBJECTIVE_PARAMS = ("background_weight", "confidence_threshold", "fill_weight")


def configured(objective: Objective, params: MetzenParams | MetzenUAPParams) -> Objective:
    """The objective with the attack's Metzen parameters applied (objectives without them: unchanged)."""
    given = {k: getattr(params, k) for k in OBJECTIVE_PARAMS if getattr(params, k) is not None}
    return objective.configure(**given) if given else objective


def dense_descent(access: Access, x: Tensor, objective: Objective, budget: Budget, norm: str, epsilon: float,
                  steps: int, alpha: float, gen: torch.Generator | RowRandom, random_start: bool = False,
                  final_alpha: float | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Sign (Linf) or normalised (L2) steps for ``steps`` iterations; each input's candidate is its *last*
    iterate that realised the consequence, else its iterate with the highest ``objective.progress``
    (the latest of equals; the final iterate when the objective has no progress score).

    Dense consequences are thresholds on shares of pixels or detections: the first iterate over the
    line is marginal and often falls back under it once clipped and rounded to 8 bits, so the attack
    keeps optimising and returns the latest success (with the most margin). An input that never gets
    there oscillates near its best share under sign steps, so the final iterate is an arbitrary point
    of that oscillation; the best one is what the report should show. ``final_alpha`` gives a cosine
    decay of the step from ``alpha`` to it.
    """
    x = x.detach()
    objective = on_device(objective, x.device)
    ball = Ball(x, budget, norm, epsilon)
    rows = torch.arange(x.shape[0], device=x.device)
    shape = (-1, *([1] * (x.dim() - 1)))
    xa = ball.random_start(gen) if random_start else x.clone()
    best = x.clone()
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    first = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    closest: Tensor | None = None  # each failing input's iterate with the highest progress so far
    top = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    for step in range(steps + 1):
        xa.requires_grad_(step < steps)
        out = access(xa, rows)
        with torch.no_grad():
            hit = objective.success(out).to(x.device).bool()
            best = torch.where(hit.view(shape), xa.detach(), best)
            first = torch.where(hit & ~found, torch.full_like(first, step), first)
            found |= hit
            score = objective.progress(out)
            if score is not None:
                score = score.to(x.device, torch.float64)
                closer = ~found & (score >= top)
                closest = torch.where(closer.view(shape), xa.detach(), x if closest is None else closest)
                top = torch.where(closer, score, top)
        if step == steps:
            break
        (grad,) = torch.autograd.grad(objective.loss(out).sum(), xa)
        a = alpha
        if final_alpha is not None and steps > 1:
            a = final_alpha + (alpha - final_alpha) * 0.5 * (1 + math.cos(math.pi * step / (steps - 1)))
        with torch.no_grad():
            if norm == "inf":
                direction = grad.sign()
            else:
                g = grad if ball.mask is None else grad * ball.mask
                direction = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
            xa = ball.project(xa.detach() - a * direction)
    fallback = xa.detach() if closest is None else closest
    candidate = torch.where(found.view(shape), best, fallback)
    info: dict[str, Any] = {"steps": steps, "step_size": alpha, "found_during_attack": int(found.sum()),
                            "first_success_step": first.tolist()}
    if closest is not None:  # the progress of each failing input's candidate (None for successes)
        info["best_progress"] = [None if f else round(float(t), 4) for f, t in zip(found.tolist(), top.tolist(),
                                                                                   strict=True)]
    return candidate, info


class MetzenIterative(Attack[MetzenParams]):
    """Targeted (or untargeted) iterative sign steps on a dense objective; Linf.

    Parameters: ``steps`` (50), ``step_size`` (input units; else ``rel_stepsize`` * epsilon, 0.05),
    ``final_step_size`` (cosine decay to it; default constant), ``random_start`` (False), and the
    objective's ``background_weight``, ``confidence_threshold`` and ``fill_weight``.
    """

    access = "gradients"
    params_model = MetzenParams

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        require_norm(budget, ("inf",), "metzen_seg")
        eps = require_epsilon(budget, "metzen_seg")
        final = self.params.final_step_size
        x_adv, info = dense_descent(
            access, x, configured(objective, self.params), budget, "inf", eps,
            steps=self.params.steps, alpha=self.params.step_for(eps),
            gen=self.row_random(x), random_start=self.params.random_start,
            final_alpha=None if final is None else float(final),
        )
        return AttackOutput(x_adv, info)


def _forward(access: Access, env: AttackEnv | None) -> Any:
    """The model the universal attack optimises against: the white-box access (or a surrogate's)."""
    return access.surrogate if access.surrogate is not None else access


class MetzenUniversal(UniversalAttack[MetzenUAPParams]):
    """One Linf perturbation (optionally a repeated tile) for all inputs, Metzen's stochastic sign steps."""

    access = "gradients"
    params_model = MetzenUAPParams
    data_parallel_fit = True

    def _tiled(self, xi: Tensor, shape: tuple[int, ...]) -> Tensor:
        h, w = shape[-2:]
        if xi.shape[-2:] == (h, w):
            return xi
        reps = (1, 1, math.ceil(h / xi.shape[-2]), math.ceil(w / xi.shape[-1]))
        return xi.repeat(*reps)[..., :h, :w]

    def fit(self, access: Access, x_fit: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> Tensor:
        require_norm(budget, ("inf",), "metzen_uap")
        eps = require_epsilon(budget, "metzen_uap")
        self.require_inputs(x_fit, "the universal perturbation")
        objective = configured(objective, self.params)
        epochs = self.params.epochs
        batch = self.params.batch_size
        alpha0 = self.params.step_for(eps)
        fit_size = self.params.fit_size
        shard = env.shard if env is not None else None
        gen = self.generator(x_fit.device)
        n = x_fit.shape[0]
        pool = torch.arange(n, device=x_fit.device)
        if fit_size is not None and int(fit_size) < n:
            pool = pool[torch.randperm(n, generator=gen, device=x_fit.device)[: int(fit_size)]]
        c, h, w = x_fit.shape[1:]
        tile = self.params.tile
        th, tw = (int(tile), int(tile)) if tile else (h, w)
        xi = torch.zeros(1, c, th, tw, device=x_fit.device, dtype=x_fit.dtype)
        mask = budget.mask.to(x_fit.device, x_fit.dtype) if budget.mask is not None else None
        model = _forward(access, env)
        steps_per_epoch = max(1, math.ceil(len(pool) / batch))
        total = epochs * steps_per_epoch
        lo, hi = budget.bounds
        history: list[float] = []
        step = 0
        for _ in range(epochs):
            order = pool[torch.randperm(len(pool), generator=gen, device=x_fit.device)]
            running = 0.0
            for start in range(0, len(order), batch):
                rows = order[start : start + batch]
                if shard is not None:  # this rank's share; the sums below are over all ranks
                    rows = shard.rows(rows)
                xi.requires_grad_(True)
                delta = self._tiled(xi, x_fit.shape)
                if mask is not None:
                    delta = delta * (mask if mask.shape[0] == 1 else mask[rows])
                x_adv = (x_fit[rows] + delta).clamp(lo, hi)
                loss = objective.subset(rows).loss(model(x_adv, rows)).sum()
                (grad,) = torch.autograd.grad(loss, xi, allow_unused=True, materialize_grads=True)
                if shard is not None:
                    grad, loss = shard.total(grad), shard.total(loss.detach())
                alpha = alpha0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(total - 1, 1))))
                with torch.no_grad():
                    xi = (xi - alpha * grad.sign()).clamp(-eps, eps)
                running += float(loss.detach())
                step += 1
            history.append(running / len(pool))
        self.fitted = self._tiled(xi.detach(), x_fit.shape)[0]
        self.info = {"epochs": epochs, "fit_inputs": len(pool), "updates": step, "loss_per_epoch": history}
        return self.fitted

    def apply(self, x: Tensor, budget: Budget) -> Tensor:
        if self.fitted is None:
            raise RuntimeError("fit the universal perturbation before applying it")
        delta = self.fitted.to(x.device, x.dtype).unsqueeze(0)
        if budget.mask is not None:
            delta = delta * budget.mask.to(x.device, x.dtype)
        if budget.epsilon is not None:
            delta = delta.clamp(-budget.epsilon, budget.epsilon)
        return (x + delta).clamp(*budget.bounds)
