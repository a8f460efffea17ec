"""HopSkipJump (Chen, Jordan, Wainwright 2020, arXiv:1904.02144): decision-based, L2 or Linf.

Only the label oracle is used: every query returns the top-1 label (or argmax map) and the objective's
``success_from_decisions`` turns it into adversarial / not. From an adversarial start (``_query.
decision_starts``: noise for untargeted, a data-basis input of the wanted class for targeted) each
iteration (1) binary-searches to the boundary, (2) estimates the sign of the boundary gradient from
``num_evals`` random label queries around the boundary point, (3) takes a geometric-progression step
along it and searches back to the boundary. Parameter names and update rules follow foolbox 3.3.4's
HopSkipJumpAttack (gamma, initial/max gradient evaluations, delta and step-size rules); the code is a
native batched port rather than a foolbox adapter, because foolbox queries the whole batch at every
step and cannot stop an input whose per-input budget is spent or whose distance already meets a
fixed epsilon. Rows stop when they meet the epsilon (fixed mode) or their budget is spent; a row that
cannot afford a full iteration keeps its best adversarial point. Every query path (start search,
boundary searches, gradient samples, step search) is held to ``room()``: the smaller of the oracle's
remaining budget and this attack's own ``max_queries``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import Allowance, boundary_search, bview, decide, decision_starts, lp_distance
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective
from taxonomy.params import HopSkipJumpParams


def decision_norm(budget: Budget) -> str:
    return "inf" if budget.norm == "inf" else "2"


def finish(x: Tensor, best: Tensor, found: Tensor, dist: Tensor, budget: Budget, norm: str,
           used: Tensor, name: str) -> AttackOutput:
    """Fixed epsilon: project into the ball (the executor verifies); minimal mode: the best point."""
    x_adv = torch.where(bview(found, x), best, x)
    x_adv = budget.project(x, x_adv) if budget.epsilon is not None else x_adv.clamp(*budget.bounds)
    distances = [float(d) if f else None for d, f in zip(dist.tolist(), found.tolist(), strict=True)]
    info = {"queries": used.tolist(), "start_found": found.tolist(), f"{name}_distance_l{norm}": distances}
    return AttackOutput(x_adv, info)


class HopSkipJump(Attack[HopSkipJumpParams]):
    """HopSkipJump with label-only access; L2 unless the budget's norm is Linf."""

    access = "labels"
    params_model = HopSkipJumpParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        norm = decision_norm(budget)
        steps = self.params.steps
        init_evals = self.params.initial_num_evals
        max_evals = self.params.max_num_evals
        gamma = self.params.gamma
        cap = self.params.max_queries
        lo, hi = budget.bounds
        n = x.shape[0]
        d = x[0].numel()
        theta = gamma / (d * d) if norm == "inf" else gamma / (d * math.sqrt(d))
        eps = float(budget.epsilon) if budget.epsilon is not None else None
        gen = self.generator(x.device)
        rows = torch.arange(n, device=x.device)
        allowance = Allowance(access, rows, None if cap is None else int(cap))
        spent, room = allowance.spent, allowance.room

        start, found = decision_starts(access, objective, x, rows, env, self.row_random(x), budget.bounds,
                                       noise_tries=self.params.init_tries, room=room())
        best = start.clone()
        dist = torch.full((n,), float("inf"), device=x.device)
        if bool(found.any()):
            idx = found.nonzero().squeeze(1)
            best[idx] = boundary_search(access, objective, x[idx], start[idx], rows[idx], norm, theta,
                                        room=room()[idx])
            dist[idx] = lp_distance(best[idx], x[idx], norm)
        cur = best.clone()
        cur_dist = dist.clone()
        # one iteration needs its gradient samples plus room for the step and boundary searches
        reserve = 2 * math.ceil(math.log2(1.0 / theta)) + 10

        for t in range(1, steps + 1):
            active = found & (room() > reserve)
            if eps is not None:
                active &= dist > eps
            if not bool(active.any()):
                break
            idx = active.nonzero().squeeze(1)
            k = idx.numel()
            num = min(int(init_evals * math.sqrt(t)), max_evals)
            n_eval = (room()[idx] - reserve).clamp(min=1, max=num)

            # (2) gradient-direction estimate at the boundary point
            xb = cur[idx]
            delta = (d * theta if norm == "inf" else math.sqrt(d) * theta) * cur_dist[idx]
            if t == 1:
                delta = torch.full_like(delta, 0.1)
            grad = self._estimate(access, objective, xb, rows[idx], delta, n_eval, num, norm, gen, budget.bounds)
            update = grad.sign() if norm == "inf" else grad / bview(
                grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)

            # (3) geometric progression: halve the step until the proposal stays adversarial
            step = cur_dist[idx] / math.sqrt(t)
            proposal = xb.clone()
            ok = torch.zeros(k, dtype=torch.bool, device=x.device)
            for _ in range(30):
                todo = ~ok & (room()[idx] > 0)
                if not bool(todo.any()):
                    break
                sel = todo.nonzero().squeeze(1)
                cand = (xb[sel] + bview(step[sel], xb[sel]) * update[sel]).clamp(lo, hi)
                adv_now = decide(access, objective, cand, rows[idx][sel])
                proposal[sel[adv_now]] = cand[adv_now]
                ok[sel[adv_now]] = True
                step[sel[~adv_now]] /= 2

            # (1) back to the boundary
            if bool(ok.any()):
                moved = idx[ok]
                cur[moved] = boundary_search(access, objective, x[moved], proposal[ok], rows[moved], norm, theta,
                                             room=room()[moved])
                cur_dist[moved] = lp_distance(cur[moved], x[moved], norm)
                better = cur_dist[moved] < dist[moved]
                best[moved[better]] = cur[moved[better]]
                dist[moved[better]] = cur_dist[moved[better]]
        return finish(x, best, found, dist, budget, norm, spent(), "hsj")

    @staticmethod
    def _estimate(access: Access, objective: Objective, xb: Tensor, rows: Tensor, delta: Tensor, n_eval: Tensor,
                  num: int, norm: str, gen: torch.Generator, bounds: tuple[float, float]) -> Tensor:
        """Monte-Carlo estimate of the boundary normal at xb from n_eval[i] label queries per row.

        sum_b (phi_b - mean phi) u_b, with phi = +1 adversarial / -1 not (the baseline is skipped when
        all samples agree); samples are drawn in chunks of about 2^24 elements to bound memory.
        """
        k = xb.shape[0]
        ones = [1] * (xb.dim() - 1)
        s_phi_u = torch.zeros_like(xb)
        s_u = torch.zeros_like(xb)
        s_phi = torch.zeros(k, device=xb.device)
        chunk = max(1, (1 << 24) // max(1, xb.numel()))
        for first in range(0, num, chunk):
            m = min(chunk, num - first)
            shape = (m, *xb.shape)
            rv = torch.rand(shape, generator=gen, device=xb.device) * 2 - 1 if norm == "inf" else torch.randn(
                shape, generator=gen, device=xb.device)
            rv = rv / rv.flatten(2).norm(dim=2).clamp_min(1e-12).view(m, k, *ones)
            probes = (xb[None] + delta.view(1, k, *ones) * rv).clamp(*bounds)
            rv = (probes - xb[None]) / delta.view(1, k, *ones)
            use = (first + torch.arange(m, device=xb.device))[:, None] < n_eval[None, :]  # (m, k)
            which = use.nonzero()
            if which.numel() == 0:
                break
            adv = decide(access, objective, probes[which[:, 0], which[:, 1]], rows[which[:, 1]]).float() * 2 - 1
            phi = torch.zeros(m, k, device=xb.device)
            phi[which[:, 0], which[:, 1]] = adv
            s_phi_u += (phi.view(m, k, *ones) * rv).sum(dim=0)
            s_u += (use.float().view(m, k, *ones) * rv).sum(dim=0)
            s_phi += phi.sum(dim=0)
        mean = s_phi / n_eval.clamp_min(1).float()
        baseline = torch.where(mean.abs() == 1, torch.zeros_like(mean), mean)
        return s_phi_u - bview(baseline, xb) * s_u
