"""PGD (Madry et al. 2018), Linf and L2: random start in the ball, projected steps, restarts.

Default early stopping is on: an input leaves the batch at its first successful iterate, which is the
candidate it would get without early stopping too, so it only saves passes. Restarts run only on the
inputs no earlier restart broke.
"""

from __future__ import annotations

from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import (
    LoopConfig,
    gradient_attack,
    require_epsilon,
    require_norm,
)
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective
from taxonomy.params import PGDParams


class _PGD(Attack[PGDParams]):
    access = "gradients"
    params_model = PGDParams
    norm = "inf"

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        name = f"pgd_l{self.norm}"
        require_norm(budget, (self.norm,), name)
        eps = require_epsilon(budget, name)
        cfg = LoopConfig(
            steps=self.params.steps,
            step_size=self.params.step_for(eps),
            norm=self.norm,
            random_start=self.params.random_start,
            restarts=self.params.restarts,
            early_stop=self.params.early_stop,
        )
        x_adv, info = gradient_attack(access, x, objective, budget, cfg, self.row_random(x), eps)
        return AttackOutput(x_adv, info)


class LinfPGD(_PGD):
    norm = "inf"


class L2PGD(_PGD):
    norm = "2"
