"""Boundary attack (Brendel, Rauber, Bethge 2018, arXiv:1712.04248): decision-based, L2, minimal norm.

A random walk that starts adversarial and stays adversarial: each step draws a Gaussian direction
orthogonal to the line towards the clean input, takes a spherical step (same distance) and a step
towards the clean input, and keeps the candidate if the label oracle still says adversarial. Step
sizes adapt to the recent success rates (spherical steps checked every ``update_every`` steps), as in
foolbox 3.3.4's BoundaryAttack, whose proposal rule this ports to batched torch. Why not foolbox
itself: it queries every input of the batch at every step (done or not, over budget or not), moves
the batch through numpy each step, and takes no per-input query budget; here each step queries only
inputs with queries left that have not met the epsilon. Label-only: the LabelOracle is all it touches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import Allowance, boundary_search, decide, decision_starts, left, lp_distance
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.hopskipjump import finish
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.objectives.base import Objective
from taxonomy.params import BoundaryParams


class BoundaryAttack(Attack[BoundaryParams]):
    """Brendel et al.'s boundary attack with label-only access (L2)."""

    access = "labels"
    params_model = BoundaryParams
    name = "boundary"  # the key of the distances in the output's info

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        n = x.shape[0]
        rng = self.row_random(x)  # per-input streams: an input's walk does not depend on its batch
        rows = torch.arange(n, device=x.device)
        allowance = Allowance(access, rows, self.params.max_queries)
        start, found = self.starts(access, objective, x, rows, env, rng, budget, allowance)
        return self.walk(access, objective, x, rows, start, found, budget, rng, allowance)

    def starts(self, access: Access, objective: Objective, x: Tensor, rows: Tensor, env: AttackEnv | None,
               rng: RowRandom, budget: Budget, allowance: Allowance) -> tuple[Tensor, Tensor]:
        """An adversarial start per input (uniform noise, or a data-basis input for targeted consequences)."""
        return decision_starts(access, objective, x, rows, env, rng, budget.bounds,
                               noise_tries=self.params.init_tries, room=allowance.room())

    def walk(self, access: Access, objective: Objective, x: Tensor, rows: Tensor, start: Tensor, found: Tensor,
             budget: Budget, rng: RowRandom, allowance: Allowance) -> AttackOutput:
        """Brendel et al.'s walk from the adversarial starts: closer to x while the oracle says adversarial."""
        cap = self.params.max_queries
        spherical_step = self.params.spherical_step
        source_step = self.params.source_step
        adapt = self.params.step_adaptation
        update_every = self.params.update_stats_every
        window_sph, window_src = 100, 30
        lo, hi = budget.bounds
        eps = float(budget.epsilon) if budget.epsilon is not None and budget.norm == "2" else None
        n = x.shape[0]
        spent, room = allowance.spent, allowance.room
        best = start.clone()
        if bool(found.any()):
            idx = found.nonzero().squeeze(1)
            best[idx] = boundary_search(access, objective, x[idx], start[idx], rows[idx], "2", 1e-3,
                                        room=room()[idx])
        dist = lp_distance(best, x, "2")

        sph = torch.full((n,), spherical_step, device=x.device)
        src = torch.full((n,), source_step, device=x.device)
        # success histories: rolling windows, NaN = not yet filled
        hist_sph = torch.full((n, window_sph), float("nan"), device=x.device)
        hist_src = torch.full((n, window_src), float("nan"), device=x.device)
        step = 0
        while True:
            step += 1
            check = step % update_every == 0
            need = 2 if check else 1
            active = found & (left(access, rows) >= need) & (spent() + need <= cap) & (src >= 1e-7)
            if eps is not None:
                active &= dist > eps
            if not bool(active.any()):
                break
            idx = active.nonzero().squeeze(1)
            xo, xa = x[idx], best[idx]
            unnorm = (xo - xa).flatten(1)
            norms = unnorm.norm(dim=1).clamp_min(1e-12)
            direction = unnorm / norms[:, None]
            eta = rng.subset(idx).randn(unnorm.shape[1])
            eta = eta - (direction * eta).sum(dim=1, keepdim=True) * direction
            eta = eta * (sph[idx] * norms / eta.norm(dim=1).clamp_min(1e-12))[:, None]
            spherical = xo.flatten(1) + (eta - unnorm) / (sph[idx] ** 2 + 1).sqrt()[:, None]
            spherical = spherical.clamp(lo, hi)
            towards = xo.flatten(1) - spherical
            towards_norm = towards.norm(dim=1).clamp_min(1e-12)
            length = (src[idx] * norms + towards_norm - norms).clamp_min(0) / towards_norm
            cand = (spherical + length[:, None] * towards).clamp(lo, hi).view_as(xa)
            spherical = spherical.view_as(xa)

            adv = decide(access, objective, cand, rows[idx])
            if check:
                sph_adv = decide(access, objective, spherical, rows[idx])
                # foolbox tracks p(step adversarial) unconditionally, on the checked steps
                hist_sph[idx] = torch.cat([hist_sph[idx, 1:], sph_adv.float()[:, None]], dim=1)
                hist_src[idx] = torch.cat([hist_src[idx, 1:], adv.float()[:, None]], dim=1)
            new_dist = lp_distance(cand, xo, "2")
            better = adv & (new_dist < dist[idx])
            best[idx[better]] = cand[better]
            dist[idx[better]] = new_dist[better]

            if check:
                self._adapt(idx, hist_sph, sph, src, adapt, 0.5, 0.2, both=True)
                self._adapt(idx, hist_src, sph, src, adapt, 0.25, 0.1, both=False)
        return finish(x, best, found, dist, budget, "2", spent(), self.name)

    @staticmethod
    def _adapt(idx: Tensor, hist: Tensor, sph: Tensor, src: Tensor, factor: float, high: float, low: float,
               both: bool) -> None:
        """Grow the steps where the full window's success rate is above ``high``, shrink below ``low``."""
        full = ~hist[idx].isnan().any(dim=1)
        rate = hist[idx].nan_to_num(0.0).mean(dim=1)
        up, down = idx[full & (rate > high)], idx[full & (rate < low)]
        for steps in (sph, src) if both else (src,):
            steps[up] *= factor
            steps[down] /= factor
        hist[torch.cat([up, down])] = float("nan")
