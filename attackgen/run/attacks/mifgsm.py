"""MI-FGSM (Dong et al. 2018): sign steps on an accumulated, L1-normalised gradient (momentum)."""

from __future__ import annotations

from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import (
    LoopConfig,
    gradient_attack,
    require_epsilon,
    require_norm,
    step_size,
)
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective


class MIFGSM(Attack):
    access = "gradients"

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        require_norm(budget, ("inf",), "mifgsm")
        eps = require_epsilon(budget, "mifgsm")
        cfg = LoopConfig(
            steps=int(self.params.get("steps", 10)),
            step_size=step_size(self.params, eps, 0.1),
            norm="inf",
            decay=float(self.params.get("decay", 1.0)),
            early_stop=bool(self.params.get("early_stop", True)),
        )
        x_adv, info = gradient_attack(access, x, objective, budget, cfg, self.row_random(x), eps)
        return AttackOutput(x_adv, info)
