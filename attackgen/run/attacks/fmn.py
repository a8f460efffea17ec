"""FMN (Pintor et al. 2021), L0/L1/L2/Linf minimal-norm, through a thin adapter over foolbox 3.3.4.

foolbox sees a module that forwards to the white-box access (so its passes are counted) and, with a
spatial mask, only the masked part of the change (x + mask * (x' - x)). foolbox returns the minimal
adversarial it found; in fixed-epsilon mode it is clipped into the budget here (Linf, L2: the ball;
L1: scaled; L0: the largest changes kept). Success is still decided by the executor.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch import Tensor, nn

from attackgen.run.access import Access
from attackgen.run.attacks._gradient import as_mask, on_device, require_norm
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Capability, Objective
from taxonomy.params import FMNParams

FMN_CLASSES = {"0": "L0FMNAttack", "1": "L1FMNAttack", "2": "L2FMNAttack", "inf": "LInfFMNAttack"}


def import_foolbox() -> Any:
    """foolbox, imported without its known import-time traps (git binary, scipy.ndimage.filters)."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    try:
        import scipy.ndimage.filters  # removed in SciPy 2.0; foolbox imports it
    except ImportError:
        import scipy.ndimage

        sys.modules.setdefault("scipy.ndimage.filters", scipy.ndimage)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import foolbox
    return foolbox


class _AccessModule(nn.Module):
    """A module view of the access for foolbox: counts passes; applies the mask to the change."""

    def __init__(self, access: Access, x: Tensor, mask: Tensor | None) -> None:
        super().__init__()
        self.access, self.x, self.mask = access, x, mask
        self.rows = torch.arange(x.shape[0], device=x.device)

    def forward(self, xa: Tensor) -> Tensor:
        if self.mask is not None and xa.shape == self.x.shape:
            xa = self.x + self.mask * (xa - self.x)
        rows = self.rows if xa.shape[0] == self.rows.shape[0] else None
        return self.access(xa, rows)


def clip_to_budget(x: Tensor, x_adv: Tensor, budget: Budget, norm: str) -> Tensor:
    """x_adv inside the budget: Budget.project for Linf/L2 (and mask, bounds); L1 scaling; L0 top-k."""
    if budget.epsilon is None or norm in ("inf", "2"):
        return budget.project(x, x_adv)
    delta = (x_adv - x).flatten(1)
    if norm == "1":
        norms = delta.abs().sum(dim=1).clamp_min(1e-12)
        delta = delta * (budget.epsilon / norms).clamp(max=1.0).view(-1, 1)
    else:  # L0: keep the k largest changes
        k = int(budget.epsilon)
        if k < delta.shape[1]:
            keep = torch.zeros_like(delta, dtype=torch.bool)
            keep.scatter_(1, delta.abs().topk(k, dim=1).indices, True)
            delta = torch.where(keep, delta, torch.zeros_like(delta))
    plain = Budget(bounds=budget.bounds, norm=None, epsilon=None, mask=budget.mask)
    return plain.project(x, x + delta.view_as(x))


class FMN(Attack[FMNParams]):
    access = "gradients"
    params_model = FMNParams
    objective_needs = frozenset({Capability.GOAL})

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        norm = require_norm(budget, ("inf", "2", "1", "0"), "fmn")
        self.check_objective(objective)
        fb = import_foolbox()
        x = x.detach()
        objective = on_device(objective, x.device)
        module = _AccessModule(access, x, as_mask(budget, x)).eval()
        fmodel = fb.PyTorchModel(module, bounds=tuple(budget.bounds), device=x.device)
        goal = objective.goal()
        criterion = (fb.criteria.TargetedMisclassification(goal) if objective.targeted
                     else fb.criteria.Misclassification(goal))
        kwargs = self.params.planned()  # foolbox's own defaults for the fields left at None
        attack = getattr(fb.attacks, FMN_CLASSES[norm])(**kwargs)
        raw, _, _ = attack(fmodel, x, criterion, epsilons=None)
        if module.mask is not None:
            raw = x + module.mask * (raw - x)
        return AttackOutput(clip_to_budget(x, raw.detach(), budget, norm), {"norm": norm, "backend": "foolbox"})
