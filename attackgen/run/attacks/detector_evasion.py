"""Detector-aware PGD: an adaptive attack that fools the model and keeps named detectors quiet.

Carlini and Wagner (2017, arXiv:1705.07263) showed that detectors tested only against attacks that
ignore them give a false sense of security: an attacker who knows the detector adds its score to the
loss. Here, for each detector d with threshold tau_d:

    loss_i = objective.loss(f(x'_i)) + w_i * sum_d max(0, score_d(x'_i) / tau_d - (1 - margin))

and PGD runs on it within the Lp ball (sign steps for Linf, normalised steps for L2). The weight w_i
is per input and adapts as in a Lagrangian: it grows (x ``weight_growth``) while the input fools the
model but a detector fires, and shrinks while the model still holds, so each input gets as much
detector pressure as it needs and no more. The detector's score is differentiable by BPDA where it
quantises (see ``attackgen.run.detectors``). An input stops at its first iterate that both succeeds and
stays below every threshold; the others return their last iterate. The detectors come from the
parameters (``detector_objects``: calibrated ``Detector`` instances) or are built by name
(``detectors``: names from the spec) and calibrated on the data basis (or, without one, on the clean
batch) at ``fpr`` (5 %).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import Ball, on_device
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.transfer import model_handle
from attackgen.run.detectors import Detector, build_detector
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import DetectorAwareParams


class DetectorAwarePGD(Attack[DetectorAwareParams]):
    """PGD on task loss + detector penalty.

    Parameters: ``steps`` (100), ``step_size`` (input units; default 0.05 * epsilon),
    ``detector_weight`` (initial w, 0.3), ``weight_growth`` (1.5), ``margin`` (0.1: aim below 90 % of
    each threshold), ``detectors`` (names; default feature_squeezing), ``fpr`` (0.05), ``random_start`` (False);
    see taxonomy.params.DetectorAwareParams.
    """

    access = "gradients"
    params_model = DetectorAwareParams

    def detectors_for(self, model, x: Tensor, budget: Budget, env: AttackEnv | None) -> list[Detector]:
        names = self.params.detectors or ["feature_squeezing"]
        clean = env.data_x if env is not None and env.data_x is not None else x
        net = model.model
        return [build_detector(str(name), net, clean.to(x.device), self.params.fpr,
                               budget.bounds) for name in names]

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if budget.epsilon is None or budget.norm not in ("inf", "2"):
            raise AttackgenError("threat.imperceptibility: detector-aware PGD needs a fixed Linf or L2 epsilon "
                                 "besides the detector bound")
        model = model_handle(access, env)
        detectors = self.detectors_for(model, x, budget, env)
        steps = self.params.steps
        alpha = self.params.step_for(budget.epsilon)
        objective = on_device(objective, x.device)
        weights = torch.full((x.shape[0],), self.params.detector_weight, device=x.device)
        adapt = self.params.weight_growth
        aim = 1.0 - self.params.margin
        rows = torch.arange(x.shape[0], device=x.device)
        view = (-1,) + (1,) * (x.dim() - 1)

        ball = Ball(x, budget, budget.norm, budget.epsilon)
        x_adv = ball.random_start(self.row_random(x)) if self.params.random_start else x.clone()
        live = rows  # inputs without an undetected success yet
        for step in range(steps + 1):
            xa = x_adv[live].requires_grad_(True)
            out = model(xa, live)
            sub = objective.subset(live)
            task = sub.loss(out)
            quiet = torch.ones(live.numel(), dtype=torch.bool, device=x.device)
            penalty = torch.zeros_like(task)
            for det in detectors:
                score = det.score(xa)
                threshold = det.threshold
                if threshold is None:
                    raise AttackgenError(f"detector {det.name!r} was not calibrated (no threshold)")
                quiet &= (score <= threshold).detach()
                penalty = penalty + (score / max(threshold, 1e-12) - aim).clamp_min(0.0)
            total = task + weights[live] * penalty
            with torch.no_grad():
                fooled = sub.success(out)
                hit = fooled & quiet
                # per-input weight: up when the detector catches a success, down while the model holds
                weights[live] = torch.where(fooled & ~quiet, weights[live] * adapt,
                                            torch.where(fooled, weights[live], weights[live] / adapt ** 0.5))
            if step == steps or bool(hit.all()):
                break
            (grad,) = torch.autograd.grad(total.sum(), xa)
            keep = ~hit
            grad, xa, live = grad[keep], xa.detach()[keep], live[keep]
            if budget.norm == "inf":
                direction = grad.sign()
            else:
                direction = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
            x_adv[live] = ball.subset(live).project(xa - alpha * direction)
        return AttackOutput(x_adv.detach(), {"detectors": [d.name for d in detectors],
                                            "thresholds": [d.threshold for d in detectors]})

