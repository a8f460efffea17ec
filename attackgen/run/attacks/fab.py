"""FAB and FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack", arXiv:1907.02044): AutoAttack's third attack, ported from the reference code
(fra31/auto-attack, fab_base.py, fab_pt.py) to batched torch.

Each iteration linearises the decision boundary at the current point: for FAB-T the boundary between the
true class and one target class (one backward pass), for FAB the nearest boundary among all classes (one
backward pass per class). It projects both the current point and the clean input onto that hyperplane
intersected with the box (exact Linf, L2 or L1 projections, attackgen/run/attacks/_boxproj.py), mixes the
two steps with a weight alpha <= alpha_max that favours the clean input when the current point is far
(a bias towards small perturbations), overshoots by eta, and, on reaching the other side, records the
point when it is the smallest so far and steps back towards the clean input by beta. The reference's
parameters: 100 iterations, alpha_max 0.1, eta 1.05, beta 0.9; FAB-T sweeps the clean prediction's 2nd to
10th most likely classes, each on the inputs no earlier target broke, without a random start (AutoAttack
runs FAB-T with one restart); FAB restarts from random points at half the radius after its first run.
With ``parallel_targets`` FAB-T runs every target side by side in one batch (one copy of each input per
target, all copies leaving at the input's first success): fewer, larger batches (wall time), at the price
of running targets the sweep would have skipped; off in the AutoAttack presets.

Fixed epsilon, as AutoAttack uses it: an input counts as broken when the smallest adversarial point found
is within epsilon, so here an input leaves the run at the first such point (survivors only, per-input
early stop; the reference goes on shrinking it, which changes the point but not the robust accuracy).
An input with no adversarial point within epsilon gets its clean input back, as in the reference. The
box is the budget's bounds (the reference assumes [0, 1]); a mask zeroes the hyperplane's weights
outside it, so the projections never move those entries. Device-agnostic; draws from the attack's seed.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._boxproj import hyperplane_box
from attackgen.run.attacks._gradient import as_mask, on_device, require_epsilon, require_norm
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.objectives.base import Capability, Objective
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.errors import AttackgenError
from taxonomy.params import AttackParams, FABParams, FABTParams


def _norm(t: Tensor, norm: str) -> Tensor:
    flat = t.flatten(1)
    if norm == "inf":
        return flat.abs().amax(dim=1)
    if norm == "2":
        return flat.norm(dim=1)
    return flat.abs().sum(dim=1)


def _dual(t: Tensor, norm: str) -> Tensor:
    """The dual norm over the last dims of (batch, classes, ...): how far a unit step moves a logit."""
    flat = t.flatten(2)
    if norm == "inf":
        return flat.abs().sum(dim=-1)
    if norm == "2":
        return flat.norm(dim=-1)
    return flat.abs().amax(dim=-1)


def _differences(access: Access, x1: Tensor, rows: Tensor, labels: Tensor,
                 targets: Tensor | None) -> tuple[Tensor, Tensor]:
    """(f_k - f_label, its gradient) per input: towards ``targets`` (one class), else every class (df of
    the label's own column set to 1e10 so it is never the nearest boundary)."""
    xg = x1.detach().requires_grad_(True)
    with torch.enable_grad():
        out = access(xg, rows)
        u = torch.arange(x1.shape[0], device=x1.device)
        if targets is not None:
            diff = out[u, targets] - out[u, labels]
            (grad,) = torch.autograd.grad(diff.sum(), xg)
            return diff.detach().unsqueeze(1), grad.unsqueeze(1)
        grads = []
        for k in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[:, k].sum(), xg, retain_graph=k + 1 < out.shape[1])
            grads.append(g)
    jac = torch.stack(grads, dim=1)
    df = out.detach() - out.detach()[u, labels].unsqueeze(1)
    dg = jac - jac[u, labels].unsqueeze(1)
    df[u, labels] = 1e10
    return df, dg


def fab_run(access: Access, rows: Tensor, x: Tensor, objective: ClassificationObjective, norm: str, epsilon: float,
            bounds: tuple[float, float], mask: Tensor | None, targets: Tensor | None, steps: int, alpha_max: float,
            eta: float, beta: float, start: Tensor | None = None,
            owner: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One FAB run on the inputs x (batch rows ``rows``); returns (candidates, found within epsilon).

    ``targets``: FAB-T towards these classes (one per input), else untargeted FAB. ``start``: the random
    start (restarts), else the clean input. ``owner``: the input each row is a copy of (all targets side
    by side), results per owner; every copy of an input leaves at its first success.
    """
    lo, hi = bounds
    span = hi - lo
    n = x.shape[0]
    shape = (-1, *([1] * (x.dim() - 1)))
    labels = objective.labels.clamp_min(0)
    owner = torch.arange(n, device=x.device) if owner is None else owner.to(x.device)
    owners = int(owner.max()) + 1 if n else 0
    first = torch.full((owners,), max(n - 1, 0), dtype=torch.long, device=x.device).scatter_reduce_(
        0, owner, torch.arange(n, device=x.device), "amin")  # a row of each owner
    out = x[first].clone()  # each owner's clean input until it is broken
    found = torch.zeros(owners, dtype=torch.bool, device=x.device)
    pos = torch.arange(n, device=x.device)
    im2, x1 = x, (x.clone() if start is None else start.clamp(lo, hi))
    m = None if mask is None else mask.flatten(1)
    if m is not None and m.shape[0] == 1:
        m = m.expand(n, -1)
    success = objective
    for _ in range(steps):
        if pos.numel() == 0:
            break
        bs = pos.numel()
        with torch.no_grad():
            tgt = None if targets is None else targets[pos]
            df, dg = _differences(access, x1, rows[pos], labels[pos], tgt)
            index = _dual(dg, norm).add_(1e-12).reciprocal_().mul_(df.abs()).argmin(dim=1)
            u = torch.arange(bs, device=x.device)
            w = dg[u, index].flatten(1)
            if m is not None:
                w = w * m[pos]
            b = -df[u, index] + (w * x1.flatten(1)).sum(dim=1)
            # unit-box coordinates: <w, lo + span z> = b  <=>  <span w, z> = b - lo sum(w)
            wu, bu = w * span, b - lo * w.sum(dim=1)
            points = torch.cat(((x1.flatten(1) - lo) / span, (im2.flatten(1) - lo) / span), 0)
            d3 = hyperplane_box(norm, points, torch.cat((wu, wu), 0), torch.cat((bu, bu), 0)) * span
            d1, d2 = d3[:bs].view_as(x1), d3[bs:].view_as(x1)
            a0 = _norm(d3, norm).clamp_min(1e-8)
            a1, a2 = a0[:bs], a0[bs:]
            alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max).view(shape)
            x1 = ((x1 + eta * d1) * (1 - alpha) + (im2 + d2 * eta) * alpha).clamp(lo, hi)
            if m is not None:  # the mixing rounds masked entries by an ulp; put them back exactly
                x1 = im2 + (x1 - im2) * m[pos].view_as(x1)
            hit = success.success(access(x1, rows[pos]))
            size = _norm(x1 - im2, norm)
            done = hit & (size <= epsilon)
            reached = x1
            x1 = torch.where(hit.view(shape), im2 + (x1 - im2) * beta, x1)
            if bool(done.any()):
                out[owner[pos[done]]] = reached[done]
                found[owner[pos[done]]] = True
                keep = (~found[owner[pos]]).nonzero().squeeze(1)
                pos, x1, im2, success = pos[keep], x1[keep], im2[keep], success.subset(keep)
    return out, found


class _FAB(Attack[FABParams]):
    access = "gradients"
    params_model: ClassVar[type[AttackParams]] = FABParams
    targeted_sweep = False

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        name = type(self).__name__.lower()
        self.check_objective(objective)
        norm = require_norm(budget, ("inf", "2", "1"), name)
        eps = require_epsilon(budget, name)
        if not isinstance(objective, ClassificationObjective):
            raise AttackgenError(f"{name} needs a classification objective (a class per input)")
        x = x.detach()
        obj = cast(ClassificationObjective, on_device(objective, x.device))
        p = self.params
        mask = as_mask(budget, x)
        best = x.clone()
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        rng = self.row_random(x)
        schedule: list[tuple[int | None, int]]
        if obj.targeted:  # a targeted spec: towards its own target
            schedule = [(None, r) for r in range(p.restarts)]
        elif self.targeted_sweep:
            k = p.n_target_classes if isinstance(p, FABTParams) else 9
            schedule = [(rank, r) for rank in range(k) for r in range(p.restarts)]
        else:
            schedule = [(None, r) for r in range(p.restarts)]
        runs = 0
        if self.targeted_sweep and not obj.targeted and isinstance(p, FABTParams) and p.parallel_targets:
            for restart in range(p.restarts):
                todo = (~found).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                with torch.no_grad():
                    clean = access(x[todo], todo)
                k = min(p.n_target_classes, clean.shape[1] - 1)
                order = clean.sort(dim=-1)[1].flip(1)[:, 1:k + 1]  # the 2nd .. (k+1)-th class, as the sweep
                copy = torch.arange(todo.numel(), device=x.device).repeat_interleave(k)
                rows_c = todo[copy]
                start = _random_start(x[rows_c], rng.subset(rows_c), norm, eps) if restart > 0 else None
                sub_mask = mask if mask is None or mask.shape[0] == 1 else mask[rows_c]
                cand, hit = fab_run(access, rows_c, x[rows_c], obj.subset(rows_c), norm, eps, budget.bounds, sub_mask,
                                    order.reshape(-1), p.steps, p.alpha_max, p.eta, p.beta, start, owner=copy)
                best[todo[hit]] = cand[hit]
                found[todo[hit]] = True
                runs += 1
            schedule = []  # done: all targets ran side by side
        for rank, restart in schedule:
            todo = (~found).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            part = obj.subset(todo)
            targets: Tensor | None = None
            if obj.targeted:
                targets = part.targets
            elif rank is not None:
                with torch.no_grad():
                    clean = access(x[todo], todo)
                if clean.shape[1] < 2 + rank:
                    break
                targets = clean.sort(dim=-1)[1][:, -(rank + 2)]  # the reference's order: 2nd, 3rd, ... class
            start = None
            if restart > 0:
                start = _random_start(x[todo], rng.subset(todo), norm, eps)
            sub_mask = mask if mask is None or mask.shape[0] == 1 else mask[todo]
            cand, hit = fab_run(access, todo, x[todo], part, norm, eps, budget.bounds, sub_mask, targets, p.steps,
                                p.alpha_max, p.eta, p.beta, start)
            best[todo[hit]] = cand[hit]
            found[todo[hit]] = True
            runs += 1
        info: dict[str, Any] = {"runs": runs, "found_during_attack": int(found.sum()), "norm": norm,
                                "steps": p.steps, "restarts": p.restarts}
        if self.targeted_sweep:
            info["targets"] = p.n_target_classes if isinstance(p, FABTParams) else 9
        return AttackOutput(best, info)


def _random_start(x: Tensor, rng: RowRandom, norm: str, eps: float) -> Tensor:
    """The reference's restart point: a random direction at half the radius (before the box clamp)."""
    shape = (-1, *([1] * (x.dim() - 1)))
    t = 2 * rng.rand(*x.shape[1:], dtype=x.dtype) - 1 if norm == "inf" else rng.randn(*x.shape[1:], dtype=x.dtype)
    return x + eps * t / _norm(t, norm).clamp_min(1e-12).view(shape) * 0.5


class FAB(_FAB):
    """Untargeted FAB: the nearest linearised boundary among all classes (one backward pass per class)."""

    params_model = FABParams
    objective_needs = frozenset({Capability.GOAL})


class FABT(_FAB):
    """FAB-T: FAB towards each of the clean prediction's top-k other classes in turn, survivors only."""

    params_model = FABTParams
    targeted_sweep = True
    objective_needs = frozenset({Capability.GOAL})


__all__ = ["FAB", "FABT", "fab_run"]
