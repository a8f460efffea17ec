"""ZOO-Newton: zeroth-order coordinate-wise Newton steps from score queries (Chen et al. 2017, arXiv:1708.03999).

Each iteration picks ``coordinates`` input elements per input (a random order per input, cycled), and
for each estimates the first and second derivative of the objective's margin loss by symmetric finite
differences, f(x + h e_i) and f(x - h e_i) with the current f(x):

    g_i = (f+ - f-) / 2h,    h_i = (f+ - 2 f + f-) / h^2,    step_i = -lr * g_i / h_i  (h_i > 0)
                                                            step_i = -lr * g_i        (else)

(ZOO's Algorithm 3). The coordinate steps are applied together, clipped to ``max_step`` and projected
into the Lp ball, mask and bounds; one more query scores the new point. An iteration costs
2 * coordinates + 1 queries per input through the counted score oracle; no gradient of the victim is
read. A probe that already succeeds is kept. The attack is the second-order optimiser from scores that
rule A10 names; its first-order sibling (ZOO-ADAM) and the importance sampling / hierarchical resizing of
the paper are left out: on 16x16 digits they do not matter, on large images ``coordinates`` should grow.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import live, query_budget, score, with_loss
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective
from taxonomy.params import ZOONewtonParams


class ZOONewton(Attack[ZOONewtonParams]):
    """Coordinate-wise Newton from score queries; Linf or L2 ball (fixed epsilon)."""

    access = "scores"
    params_model = ZOONewtonParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        n = x.shape[0]
        dim = x[0].numel()
        coords = self.params.coordinates
        h = self.params.fd_step
        lr = self.params.lr
        eps = budget.epsilon
        default_cap = float(eps) if eps is not None and budget.norm == "inf" else 0.1
        max_step = self.params.max_step or default_cap
        objective = with_loss(objective, "margin")
        rows = torch.arange(n, device=x.device)
        cap = query_budget(access, rows, self.params.max_queries)
        orders = self.row_random(x).randperm(dim)  # per-input streams: an input's order does not depend on its batch

        x_adv = x.clone()
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        it = torch.zeros(n, dtype=torch.long, device=x.device)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        loss = torch.zeros(n, dtype=torch.float64, device=x.device)
        first = live(access, rows) & (cap > 0)
        if bool(first.any()):
            idx = first.nonzero().squeeze(1)
            loss[idx], done[idx], _ = score(access, objective, x[idx], idx)
            used[idx] += 1
        seen = first.clone()

        while True:
            room = torch.minimum(access.remaining(rows).to(x.device).clamp(max=2**40), cap - used)
            active = ~done & seen & (room >= 3)
            if not bool(active.any()):
                break
            idx = active.nonzero().squeeze(1)
            b = max(1, min(coords, (int(room[idx].min()) - 1) // 2))  # 2b probes + 1 step fit every row
            k = idx.numel()
            pick = (it[idx, None] + torch.arange(b, device=x.device)[None, :]) % dim  # (k, b) positions in the order
            chosen = orders[idx[:, None], pick]  # (k, b) flat element indices
            it[idx] += b
            base = x_adv[idx].flatten(1)
            probes = base[:, None, :].repeat(1, 2 * b, 1)  # (k, 2b, dim): +h then -h per coordinate
            arange_b = torch.arange(b, device=x.device)
            probes[:, arange_b, :] = probes[:, arange_b, :].scatter_add(
                2, chosen[:, :, None], torch.full((k, b, 1), h, device=x.device, dtype=x.dtype))
            probes[:, b + arange_b, :] = probes[:, b + arange_b, :].scatter_add(
                2, chosen[:, :, None], torch.full((k, b, 1), -h, device=x.device, dtype=x.dtype))
            probe_rows = idx.repeat_interleave(2 * b)
            cand = budget.project(x[probe_rows], probes.reshape(k * 2 * b, *x.shape[1:]))
            f, hit, _ = score(access, objective, cand, probe_rows)
            used[idx] += 2 * b
            f = f.view(k, 2 * b)
            hit = hit.view(k, 2 * b)
            f_plus, f_minus = f[:, :b], f[:, b:]
            grad = (f_plus - f_minus) / (2 * h)
            hess = (f_plus - 2 * loss[idx, None] + f_minus) / (h * h)
            step = torch.where(hess > 0, -lr * grad / hess.clamp_min(1e-12), -lr * grad)
            step = step.clamp(-max_step, max_step).to(x.dtype)
            won = hit.any(dim=1)
            if bool(won.any()):  # a probe already realises the consequence: keep it
                first_hit = hit.to(torch.int8).argmax(dim=1)
                w = won.nonzero().squeeze(1)
                x_adv[idx[w]] = cand.view(k, 2 * b, *x.shape[1:])[w, first_hit[w]]
                done[idx[w]] = True
            go = (~won).nonzero().squeeze(1)
            if go.numel() == 0:
                continue
            moved = base[go].scatter_add(1, chosen[go], step[go])
            sel = idx[go]
            new = budget.project(x[sel], moved.view(go.numel(), *x.shape[1:]))
            new_loss, success, _ = score(access, objective, new, sel)
            used[sel] += 1
            x_adv[sel] = new
            loss[sel] = new_loss
            done[sel] |= success
        return AttackOutput(x_adv, {"queries": used.tolist(), "success_in_attack": done.tolist()})
