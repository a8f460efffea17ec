"""Boundary attack on dense outputs (segmentation maps, detections) from a blank start, label-only.

Brendel, Rauber, Bethge 2018 (arXiv:1712.04248) need only an adversarial starting point and a decision: the
walk then moves towards the clean input while the decision stays adversarial. On a dense output the
decision is the task's own success criterion read from what the system shows: a segmentation's argmax map
(mIoU against the reference below the spec's ratio, pixels relabelled, a target map reached) or a detector's
boxes and labels at its threshold, without confidences (the objects of the chosen classes vanished). Uniform
noise, the classification start, rarely realises such a criterion on a scene, and the data basis holds few
inputs whose map or boxes are the wanted ones; the scene with its content removed does: the blank start
(every pixel the image's mean colour: nothing left to detect or segment) and the blurred start (a box blur
over a quarter of the side: small objects dissolve into their surroundings, the layout stays, so the walk
starts closer). Each candidate start costs one label query; inputs none of them serves fall back to noise
and the data basis (``decision_starts``). The walk itself is BoundaryAttack's, unchanged; every query goes
through the label oracle and its per-input budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import Allowance, decide, decision_starts, live
from attackgen.run.attacks.base import AttackEnv, Budget
from attackgen.run.attacks.boundary import BoundaryAttack
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.objectives.base import Objective
from taxonomy.params import DenseBoundaryParams


def blank(x: Tensor) -> Tensor:
    """Each image flattened to its own mean colour per channel: a scene with nothing in it."""
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()


def blurred(x: Tensor, fraction: float) -> Tensor:
    """A box blur over ``fraction`` of the shorter side (odd kernel, edges replicated)."""
    k = max(3, round(min(x.shape[-2:]) * fraction) | 1)
    padded = F.pad(x, (k // 2,) * 4, mode="replicate")
    return F.avg_pool2d(padded, k, stride=1)


class DenseBoundary(BoundaryAttack):
    """The boundary walk on segmentation and detection decisions, started from a blurred or blank scene."""

    access = "labels"
    params_model = DenseBoundaryParams
    params: DenseBoundaryParams
    name = "dense_boundary"

    def starts(self, access: Access, objective: Objective, x: Tensor, rows: Tensor, env: AttackEnv | None,
               rng: RowRandom, budget: Budget, allowance: Allowance) -> tuple[Tensor, Tensor]:
        lo, hi = budget.bounds
        start = x.clone()
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for kind in self.params.starts:
            want = ~found & live(access, rows) & (allowance.room() >= 1)
            if not bool(want.any()):
                break
            idx = want.nonzero().squeeze(1)
            cand = blank(x[idx]) if kind == "blank" else blurred(x[idx], self.params.blur_fraction)
            cand = cand.clamp(lo, hi)
            ok = decide(access, objective, cand, rows[idx])
            start[idx[ok]] = cand[ok]
            found[idx[ok]] = True
        rest = (~found).nonzero().squeeze(1)
        if rest.numel() and self.params.fallback:
            more, got = decision_starts(access, objective, x[rest], rows[rest], env, rng.subset(rest), budget.bounds,
                                        noise_tries=self.params.init_tries, room=allowance.room()[rest])
            start[rest[got]] = more[got]
            found[rest[got]] = True
        return start, found
