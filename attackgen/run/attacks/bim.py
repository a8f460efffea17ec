"""BIM (Kurakin et al. 2017): iterated FGSM steps from the clean input; ILLC targets the least-likely class."""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import (
    LoopConfig,
    gradient_attack,
    on_device,
    require_epsilon,
    require_norm,
)
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import BIMParams


class BIM(Attack[BIMParams]):
    """steps x (step_size * sign(grad)), projected; no random start. Linf or L2."""

    access = "gradients"
    params_model = BIMParams
    norms: tuple[str, ...] = ("inf", "2")
    name = "bim"

    def _objective(self, access: Access, x: Tensor, objective: Objective) -> Objective:
        return objective

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        norm = require_norm(budget, self.norms, self.name)
        eps = require_epsilon(budget, self.name)
        cfg = LoopConfig(
            steps=self.params.steps,
            step_size=self.params.step_for(eps),
            norm=norm,
            early_stop=self.params.early_stop,
        )
        objective = self._objective(access, x, on_device(objective, x.device))
        x_adv, info = gradient_attack(access, x, objective, budget, cfg, self.row_random(x), eps)
        return AttackOutput(x_adv, info)


class ILLC(BIM):
    """BIM towards each input's least-likely class under the clean model (Kurakin et al. 2017).

    A spec with dynamic_target rule least_likely already gives that objective; given an untargeted
    classification objective, ILLC derives the targets itself from one clean forward pass.
    """

    norms = ("inf",)
    name = "illc"

    def _objective(self, access: Access, x: Tensor, objective: Objective) -> Objective:
        if objective.targeted:
            return objective
        from attackgen.run.objectives.classification import ClassificationObjective

        if not isinstance(objective, ClassificationObjective):
            raise AttackgenError("illc needs a classification objective (least-likely class per input)")
        with torch.no_grad():
            targets = access(x).argmin(dim=1)
        return ClassificationObjective(objective.labels, targets, loss_kind=objective.loss_kind,
                                       consequence="dynamic_target:least_likely")
