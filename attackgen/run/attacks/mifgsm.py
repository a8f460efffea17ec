"""MI-FGSM (Dong et al. 2018): sign steps on an accumulated, L1-normalised gradient (momentum)."""

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
from taxonomy.params import MIFGSMParams


class MIFGSM(Attack[MIFGSMParams]):
    access = "gradients"
    params_model = MIFGSMParams

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        require_norm(budget, ("inf",), "mifgsm")
        eps = require_epsilon(budget, "mifgsm")
        cfg = LoopConfig(
            steps=self.params.steps,
            step_size=self.params.step_for(eps),
            norm="inf",
            decay=self.params.decay,
            early_stop=self.params.early_stop,
        )
        x_adv, info = gradient_attack(access, x, objective, budget, cfg, self.row_random(x), eps)
        return AttackOutput(x_adv, info)
