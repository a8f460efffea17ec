"""FGSM (Goodfellow et al. 2015): one gradient step of size epsilon; FGM for an L2 budget."""

from __future__ import annotations

from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import LoopConfig, gradient_attack, require_epsilon, require_norm
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective
from taxonomy.params import FGSMParams


class FGSM(Attack[FGSMParams]):
    """One step: x + eps * sign(grad) (Linf) or x + eps * grad / ||grad|| (L2); optional random start."""

    access = "gradients"
    params_model = FGSMParams

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        norm = require_norm(budget, ("inf", "2"), "fgsm")
        eps = require_epsilon(budget, "fgsm")
        random_start = self.params.random_start
        cfg = LoopConfig(steps=1, step_size=self.params.step_size or eps, norm=norm,
                         random_start=random_start)
        x_adv, info = gradient_attack(access, x, objective, budget, cfg, self.row_random(x), eps)
        return AttackOutput(x_adv, info)
