"""APGD (Croce & Hein 2020, arXiv:2003.01690): PGD without a step size to tune, Linf, L2 and L1.

Each run starts at a random point on the sphere of radius epsilon and takes momentum steps (alpha 0.75)
of size 2*epsilon, halved per input at the paper's checkpoints (after 22% of the steps, then at
intervals shrinking by 3% of the steps down to 6%) when the loss rose in fewer than rho = 75% of the
steps since the last checkpoint, or when the step was not halved last time and the best loss has not
improved; a halving restarts that input from its best (highest-loss) point and gradient. This is the
schedule of the reference code (fra31/auto-attack, autopgd_base.py), so the figures compare.

Losses: cross-entropy (APGD-CE), DLR (APGD-DLR: scale-free, so saturated logits do not starve it) and,
for APGD-T, the targeted DLR towards each of the clean prediction's top-k other classes in turn
(k = 9 in AutoAttack), each target run only on the inputs no earlier target broke.

L1 (Croce & Hein 2021, "Mind the box", arXiv:2103.01208): the sparse sign step over the gradient's
largest entries with the adaptive sparsity and step of the reference, the exact projection onto the L1
ball intersected with the box, and AutoAttack's schedule of radii 3, 2, 1 x epsilon (``large_eps``);
see ``apgd_l1_run``.

Beyond the reference: survivors only at every level (restarts and targets run on the inputs still
unbroken, and inside a run an input leaves the batch at its first successful iterate, so a broken
input costs no further passes), device-agnostic, seeded from the attack's generator. An input's
candidate is its first successful iterate, else its highest-loss point; the executor verifies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._boxproj import l1_box_delta
from attackgen.run.attacks._gradient import Ball, on_device, require_epsilon, require_norm
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.attacks.syncs import looks_now
from attackgen.run.objectives.base import Capability, Objective
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.errors import AttackgenError
from taxonomy.params import APGDDLRParams, APGDParams, APGDTParams, AttackParams

ALPHA = 0.75
"""Momentum weight of the new step (the reference's ``a``)."""


@dataclass
class APGDConfig:
    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    eot_iter: int = 1  # gradients averaged over this many passes (randomised models, AutoAttack 'rand')
    eot_batched: bool = True  # the eot_iter passes of a step as copies in one call (see _eot_batched)
    eot_copies_checked: bool = False  # the first batched call found the copies drawn apart (checked once a run)
    confirm: int = 1  # Linf/L2: consecutive successful steps before an input leaves (CONFIRM_STEPS, random model)
    keep_copies: int = 0  # copies per input (APGD-T's parallel targets) kept after the first checkpoint; 0: all
    large_eps: bool = True  # L1 only: radii 3, 2, 1 x epsilon over 30/30/40% of the steps (AutoAttack's L1)

    @property
    def first_checkpoint(self) -> int:
        return max(int(0.22 * self.steps), 1)

    @property
    def min_interval(self) -> int:
        return max(int(0.06 * self.steps), 1)

    @property
    def interval_decrease(self) -> int:
        return max(int(0.03 * self.steps), 1)


class BatchStream:
    """One generator for the whole batch, drawn as the reference code draws its random starts
    (``torch.rand(x.shape)`` per run on the inputs still unbroken): with ``batch_start`` and the same seed
    the starts, and so the results, match fra31/auto-attack's exactly (tests/test_apgd_crosscheck.py).
    Not the default: a draw then depends on the batch, which per-input streams (row_random) avoid."""

    def __init__(self, gen: torch.Generator, n: int) -> None:
        self.gen, self.n = gen, n

    def subset(self, rows: Tensor) -> BatchStream:
        return BatchStream(self.gen, rows.numel())

    def rand(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        return torch.rand((self.n, *shape), generator=self.gen, device=self.gen.device, dtype=dtype)

    def randn(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        return torch.randn((self.n, *shape), generator=self.gen, device=self.gen.device, dtype=dtype)


Stream = RowRandom | BatchStream


def _unit(t: Tensor, norm: str) -> Tensor:
    """t scaled to unit Linf or L2 norm per input."""
    flat = t.flatten(1)
    size = flat.abs().amax(dim=1) if norm == "inf" else flat.norm(dim=1)
    return t / (size.view(-1, *([1] * (t.dim() - 1))) + 1e-12)


CONFIRM_STEPS = 10
"""A randomised model without EOT (the plan's plain APGD items): an input leaves the run once this many
consecutive steps, each a fresh draw of the randomness, were successes, and its candidate is the last of
them. Stopping at the first success keeps a point one draw happened to put across the boundary. On the
randomised digits CNN (100 inputs, default plan, two seeds) the final inputs' mean accuracy over 10 fresh
passes went from 25.5 and 25.1 % (first success) to 20.9 and 21.9 % (5 steps) and 18.5 and 19.1 % (10
steps), the run's time unchanged within the noise (2.5-3.0 CPU s): the EOT items then have fewer inputs left."""

FREEZE_ZERO_GRADIENTS = True
"""Whether APGD drops rows frozen at an exactly zero gradient (tests switch it off to compare)."""


class _Run:
    """The state of one APGD run on the active inputs; ``keep(rows)`` drops the others."""

    x: Tensor
    xa: Tensor
    x_old: Tensor
    grad: Tensor
    x_best: Tensor
    grad_best: Tensor
    best: Tensor
    step: Tensor
    best_at_check: Tensor
    halved_at_check: Tensor
    history: Tensor  # (checks so far, inputs)
    topk: Tensor  # L1: the fraction of the gradient's entries a step moves
    sp_old: Tensor  # L1: the best point's number of changed entries at the last checkpoint

    def __init__(self, **tensors: Tensor) -> None:
        self.__dict__.update(tensors)

    def keep(self, rows: Tensor) -> None:
        for name, value in list(self.__dict__.items()):
            self.__dict__[name] = value[:, rows] if name == "history" else value[rows]


EOT_BATCH_VALUES = 2**21
"""EOT: the most input values (copies x values per input) one call carries; a step's eot_iter passes go in
as few calls as fit (all 20 for up to 1,600 digits of 8x8; one pass per call, as without batching, from
14 ImageNet-size inputs of 3x224x224 up, where a call is large enough anyway). On a CPU 20
calls of 17 digits cost 2.2-2.5x one call of 340 (the per-call overhead dominates small batches)."""

EOT_HIT = 1.0
"""EOT: an input leaves the run (its iterate held as its candidate) only when this share of the step's passes
decide against the label; otherwise it keeps climbing the averaged loss and its candidate is its best point.
EOT attacks the expectation over the randomness and the executor verifies over several fresh passes: an
iterate that fooled some of the 20 passes is borderline: on the randomised digits CNN (100 inputs) the
autoattack-rand preset's final inputs, re-measured over 10 passes, kept 28.4 % mean accuracy when an
input left at half of the passes fooled, 19.1 % at every pass, and the reference's (every step run) 18.1 %."""


def _loss_and_grad(access: Access, xa: Tensor, rows: Tensor, objective: Objective, success: Objective,
                   cfg: APGDConfig) -> tuple[Tensor, Tensor, Tensor]:
    """(gain to maximise, its gradient, success) at xa from the same passes; eot_iter passes averaged."""
    if cfg.eot_iter > 1 and cfg.eot_batched:
        return _eot_batched(access, xa, rows, objective, success, cfg)
    grad = torch.zeros_like(xa)
    gain = torch.zeros(xa.shape[0], device=xa.device, dtype=xa.dtype)
    wins = torch.zeros(xa.shape[0], dtype=torch.long, device=xa.device)
    for _ in range(cfg.eot_iter):
        xg = xa.detach().requires_grad_(True)
        out = access(xg, rows)
        value = -objective.loss(out)  # objectives are minimised; APGD ascends
        (g,) = torch.autograd.grad(value.sum(), xg)
        grad += g
        gain += value.detach()
        wins += success.success(out.detach()).long()
    if cfg.eot_iter > 1:
        grad /= cfg.eot_iter
        gain /= cfg.eot_iter
    return gain, grad, wins >= max(1, math.ceil(EOT_HIT * cfg.eot_iter))


def _eot_batched(access: Access, xa: Tensor, rows: Tensor, objective: Objective, success: Objective,
                 cfg: APGDConfig) -> tuple[Tensor, Tensor, Tensor]:
    """EOT with the passes of a step as copies of the inputs in one call (or a few, EOT_BATCH_VALUES).

    Valid only when the model draws its randomness per input (random transforms, dropout): the first call
    of the run checks it, and a model whose copies come out identical (one draw per call) gets the passes one call
    at a time from then on (``cfg.eot_batched`` turns off), the passes of that first call still counted.
    """
    n, k = xa.shape[0], cfg.eot_iter
    per_call = max(1, min(k, EOT_BATCH_VALUES // max(xa.numel(), 1)))
    xg = xa.detach().requires_grad_(True)
    grad = torch.zeros_like(xa)
    gain = torch.zeros(n, device=xa.device, dtype=xa.dtype)
    wins = torch.zeros(n, dtype=torch.long, device=xa.device)
    done = 0
    while done < k:
        m = min(per_call, k - done)
        idx = torch.arange(n, device=xa.device).repeat(m)
        out = access(xg.repeat(m, *([1] * (xa.dim() - 1))), rows[idx.to(rows.device)])
        if m > 1 and n and not cfg.eot_copies_checked:  # once a run: the one host sync this check costs
            if bool((out.view(m, n, -1) == out[:n].reshape(1, n, -1)).all()):
                cfg.eot_batched = False  # one draw per call (or none): copies in a batch would share it
                return _loss_and_grad(access, xa, rows, objective, success, cfg)
            cfg.eot_copies_checked = True
        value = -objective.subset(idx).loss(out)
        (g,) = torch.autograd.grad(value.sum(), xg)  # the copies' gradients, summed
        grad += g
        gain += value.detach().view(m, n).sum(0)
        wins += success.subset(idx).success(out.detach()).view(m, n).long().sum(0)
        done += m
    return gain / k, grad / k, wins >= max(1, math.ceil(EOT_HIT * k))


def apgd_run(access: Access, rows: Tensor, objective: Objective, success: Objective, ball: Ball,
             cfg: APGDConfig, rng: Stream, owner: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One APGD run on the inputs at batch rows ``rows``; returns (candidates, found) per owner.

    ``objective`` gives the loss; ``success`` decides when an input is broken (they differ for APGD-T,
    whose loss targets one class while any misclassification counts). ``owner`` maps each row to the
    input it is a copy of (APGD-T with all targets in one batch): when one copy succeeds, every copy of
    that input leaves the run. Without it each row is its own input.
    """
    if ball.norm == "1":
        return apgd_l1_run(access, rows, objective, success, ball, cfg, rng, owner)
    x = ball.x
    n = x.shape[0]
    owner = torch.arange(n, device=x.device) if owner is None else owner.to(x.device)
    owners = int(owner.max()) + 1 if n else 0
    shape = (-1, *([1] * (x.dim() - 1)))
    # the start: one draw per input from its own stream, so it does not depend on the batch
    noise = (rng.rand(*x.shape[1:], dtype=x.dtype) * 2 - 1 if ball.norm == "inf"
             else rng.randn(*x.shape[1:], dtype=x.dtype))
    if ball.mask is not None:
        noise = noise * ball.mask
    xa = ball.project(x + ball.epsilon * _unit(noise, ball.norm))
    out = torch.empty((owners, *x.shape[1:]), device=x.device, dtype=x.dtype)  # candidates, per owner
    found = torch.zeros(owners, dtype=torch.bool, device=x.device)
    pos = torch.arange(n, device=x.device)

    gain, grad, hit = _loss_and_grad(access, xa, rows, objective, success, cfg)
    s = _Run(x=x, xa=xa, x_old=xa.clone(), grad=grad, x_best=xa.clone(), grad_best=grad.clone(),
             best=gain.clone(), step=torch.full((n,), 2.0 * ball.epsilon, device=x.device, dtype=x.dtype),
             best_at_check=gain.clone(), halved_at_check=torch.ones(n, dtype=torch.bool, device=x.device),
             history=gain.view(1, -1).clone())

    # Rows that succeed are held (their first successful iterate) and leave the run at the next look,
    # every K steps (attackgen.run.attacks.syncs: K = 1 on the CPU, so at once), the loop's one sync.
    pending = torch.zeros(n, dtype=torch.bool, device=x.device)
    held = torch.empty_like(x)
    streak = torch.zeros(n, dtype=torch.long, device=x.device)  # consecutive successes (cfg.confirm)

    def frozen() -> Tensor:
        """Rows that can never move again: a gradient that is exactly zero everywhere (a saturated softmax,
        a rounding layer) at a point equal to the last iterate and to the best one, so neither the step,
        the momentum nor a checkpoint's return to the best point changes it. With one gradient pass per
        step (a deterministic model) the rest of the run would only repeat the same passes."""
        if cfg.eot_iter != 1 or not FREEZE_ZERO_GRADIENTS:
            return torch.zeros_like(pending)
        return ((s.grad.flatten(1).abs().amax(1) == 0) & (s.xa == s.x_old).flatten(1).all(1)
                & (s.xa == s.x_best).flatten(1).all(1))

    def retire(hit: Tensor, look: bool = True) -> bool:
        """Inputs that succeeded leave the run (at a look), and rows frozen at a zero gradient with them
        (their best point is their result); True when none is left."""
        nonlocal pos, objective, success, ball, pending, held, streak
        if cfg.confirm > 1:
            streak = torch.where(hit, streak + 1, torch.zeros_like(streak))
            hit = streak >= cfg.confirm
        held = torch.where((hit & ~pending).view(shape), s.xa, held)
        pending = pending | hit
        if not look:
            return False
        stuck = frozen() & ~pending
        if not bool((pending | stuck).any()):  # the one sync of a look
            return False
        out[owner[pos[stuck]]] = s.x_best[stuck]  # a copy of the input still running may overwrite it later
        out[owner[pos[pending]]] = held[pending]
        found[owner[pos[pending]]] = True
        keep = (~found[owner[pos]] & ~stuck).nonzero().squeeze(1)
        pos, pending, held, streak = pos[keep], pending[keep], held[keep], streak[keep]
        s.keep(keep)
        objective, success = objective.subset(keep), success.subset(keep)
        ball = ball.subset(keep)
        return keep.numel() == 0

    if retire(hit):
        return out, found
    interval, since_check = cfg.first_checkpoint, 0
    for i in range(cfg.steps):
        with torch.no_grad():
            a = ALPHA if i > 0 else 1.0
            momentum = s.xa - s.x_old
            s.x_old = s.xa
            if ball.norm == "inf":
                z = ball.project(s.xa + s.step.view(shape) * s.grad.sign())
            else:
                g = s.grad if ball.mask is None else s.grad * ball.mask
                z = ball.project(s.xa + s.step.view(shape) * _unit(g, "2"))
            s.xa = ball.project(s.xa + a * (z - s.xa) + (1 - a) * momentum)
        active = rows[pos]
        gain, s.grad, hit = _loss_and_grad(access, s.xa, active, objective, success, cfg)
        with torch.no_grad():
            better = gain > s.best
            s.x_best = torch.where(better.view(shape), s.xa, s.x_best)
            s.grad_best = torch.where(better.view(shape), s.grad, s.grad_best)
            s.best = torch.where(better, gain, s.best)
            s.history = torch.cat([s.history, gain.view(1, -1)])
            since_check += 1
            if since_check == interval:
                recent = s.history[-(interval + 1):]
                rises = (recent[1:] > recent[:-1]).sum(dim=0)
                halve = (rises <= interval * cfg.rho) | (~s.halved_at_check & (s.best_at_check >= s.best))
                s.halved_at_check, s.best_at_check = halve, s.best.clone()
                s.step = torch.where(halve, s.step / 2, s.step)  # no sync: unchanged where not halved
                s.xa = torch.where(halve.view(shape), s.x_best, s.xa)
                s.grad = torch.where(halve.view(shape), s.grad_best, s.grad)
                interval = max(interval - cfg.interval_decrease, cfg.min_interval)
                since_check = 0
        if retire(hit, looks_now(i, x.device)):
            return out, found
        if cfg.keep_copies and i + 1 == cfg.first_checkpoint and pos.numel():
            keep = _most_promising(owner[pos], s.best, cfg.keep_copies, owners)
            keep = torch.unique(torch.cat([keep, pending.nonzero().squeeze(1)]))  # held successes stay
            if keep.numel() < pos.numel():  # every input keeps at least one copy: its candidate comes from those
                pos, pending, held, streak = pos[keep], pending[keep], held[keep], streak[keep]
                s.keep(keep)
                objective, success, ball = objective.subset(keep), success.subset(keep), ball.subset(keep)
    if retire(torch.zeros_like(pending)):  # the held successes since the last look
        return out, found
    out[owner[pos]] = s.x_best
    return out, found


def _most_promising(owner: Tensor, gain: Tensor, k: int, owners: int) -> Tensor:
    """Positions of the ``k`` highest-gain copies of each input (A3-like pruning: Liu et al. 2022 drop the
    runs whose loss shows the least progress), in their original order."""
    order = torch.argsort(gain, descending=True, stable=True)
    order = order[torch.argsort(owner[order], stable=True)]
    counts = torch.bincount(owner, minlength=owners)
    rank = torch.arange(owner.numel(), device=owner.device) - (counts.cumsum(0) - counts)[owner[order]]
    return order[rank < k].sort().values


def _l0(t: Tensor) -> Tensor:
    return (t != 0).flatten(1).sum(1).to(t.dtype)


def apgd_l1_run(access: Access, rows: Tensor, objective: Objective, success: Objective, ball: Ball,
                cfg: APGDConfig, rng: Stream, owner: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """L1-APGD (Croce & Hein 2021, "Mind the box"), as the reference's ``attack_single_run`` for L1.

    Each step moves along the sign of the gradient's largest entries (the top ``topk`` fraction, adapted
    to the sparsity of the best point so far), scaled to L1 length ``step``, and projects exactly onto the
    L1 ball intersected with the box. At every checkpoint (every 4% of the steps) the step is reset to
    epsilon and the run restarts from its best point where that point got sparser (by 5%), else the step
    shrinks by 1.5 (down to epsilon / 10). No momentum, as in the reference. With ``cfg.large_eps`` the
    steps are split 30/30/40% over the radii 3, 2 and 1 times epsilon, each stage starting at the last
    one's best point; only the final stage, at epsilon, breaks inputs. Same arguments and result as
    ``apgd_run``.
    """
    x = ball.x
    n = x.shape[0]
    owner = torch.arange(n, device=x.device) if owner is None else owner.to(x.device)
    owners = int(owner.max()) + 1 if n else 0
    out = torch.empty((owners, *x.shape[1:]), device=x.device, dtype=x.dtype)
    found = torch.zeros(owners, dtype=torch.bool, device=x.device)
    eps = ball.epsilon
    noise = rng.randn(*x.shape[1:], dtype=x.dtype)
    if ball.mask is not None:
        noise = noise * ball.mask
    if cfg.large_eps:
        radii = [3.0 * eps, 2.0 * eps, eps]
        steps = [math.ceil(0.3 * cfg.steps), math.ceil(0.3 * cfg.steps)]
        steps.append(cfg.steps - sum(steps))
        start = x + noise
        start = start + l1_box_delta(x, start - x, radii[0], ball.bounds)
    else:
        radii, steps = [eps], [cfg.steps]
        start = x + noise + l1_box_delta(x, noise, eps, ball.bounds)
    pos = torch.arange(n, device=x.device)
    done = 0  # steps of the earlier stages: keep_copies prunes at the run's first checkpoint, whatever the stage
    for stage, (radius, count) in enumerate(zip(radii, steps, strict=True)):
        if pos.numel() == 0 or count <= 0:
            continue
        final = stage == len(radii) - 1
        if cfg.large_eps:
            start = start + l1_box_delta(ball.x, start - ball.x, radius, ball.bounds)
        start, pos, objective, success, ball = _l1_stage(
            access, rows, objective, success, ball, cfg, start, radius, count, sparse_start=not cfg.large_eps,
            final=final, pos=pos, owner=owner, out=out, found=found, done=done)
        done += count
    if pos.numel():
        out[owner[pos]] = start
    return out, found


def _l1_stage(access: Access, rows: Tensor, objective: Objective, success: Objective, ball: Ball,
              cfg: APGDConfig, start: Tensor, radius: float, steps: int, *, sparse_start: bool, final: bool,
              pos: Tensor, owner: Tensor, out: Tensor, found: Tensor, done: int = 0
              ) -> tuple[Tensor, Tensor, Objective, Objective, Ball]:
    """One L1-APGD run of ``steps`` at ``radius`` from ``start`` on the rows ``pos`` still active.

    Returns (best point per remaining row, remaining rows, and the objectives and ball cut to them); when
    ``final``, inputs leave at their first successful iterate, recorded in ``out``/``found`` by owner.
    ``done``: the run's steps before this stage; with ``cfg.keep_copies`` each input keeps its most
    promising copies after the run's step ``cfg.first_checkpoint`` (22%, in the first stage with
    ``large_eps``), the rule and the moment of ``apgd_run``, so the catalogue's cost model holds on L1 too.
    """
    owners = int(owner.max()) + 1 if owner.numel() else 0
    x = ball.x
    shape = (-1, *([1] * (x.dim() - 1)))
    n_fts = x[0].numel()
    u = torch.arange(x.shape[0], device=x.device)
    xa = start.clamp(*ball.bounds)
    gain, grad, hit = _loss_and_grad(access, xa, rows[pos], objective, success, cfg)
    grad = grad if ball.mask is None else grad * ball.mask
    if sparse_start:
        topk = torch.full((x.shape[0],), 0.2, device=x.device, dtype=x.dtype)
        sp_old = torch.full_like(topk, float(n_fts))
    else:
        sp_old = _l0(xa - x)
        topk = sp_old / n_fts / 1.5
    s = _Run(x=x, xa=xa, grad=grad, x_best=xa.clone(), grad_best=grad.clone(), best=gain.clone(),
             step=torch.full((x.shape[0],), radius, device=x.device, dtype=x.dtype), topk=topk, sp_old=sp_old)

    # As in apgd_run: in the final stage a row that succeeds is held (its first successful iterate) and
    # leaves at the next look, every K steps (attackgen.run.attacks.syncs; K = 1 on the CPU), the loop's
    # one sync; earlier stages break no input and never look.
    pending = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    held = torch.empty_like(x)

    def retire(hit: Tensor, look: bool = True) -> bool:
        nonlocal pos, objective, success, ball, u, pending, held
        if not final:
            return False
        held = torch.where((hit & ~pending).view(shape), s.xa, held)
        pending = pending | hit
        if not look or not bool(pending.any()):  # the one sync of a look
            return False
        out[owner[pos[pending]]] = held[pending]
        found[owner[pos[pending]]] = True
        keep = (~found[owner[pos]]).nonzero().squeeze(1)
        pos, pending, held = pos[keep], pending[keep], held[keep]
        s.keep(keep)
        objective, success, ball = objective.subset(keep), success.subset(keep), ball.subset(keep)
        u = torch.arange(keep.numel(), device=x.device)
        return keep.numel() == 0

    if retire(hit):
        return s.x_best, pos, objective, success, ball
    interval, since_check = max(int(0.04 * steps), 1), 0
    for i in range(steps):
        with torch.no_grad():
            ordered = s.grad.abs().flatten(1).sort(dim=1)[0]
            kth = ((1.0 - s.topk) * n_fts).clamp(0, n_fts - 1).long()
            threshold = ordered[u, kth].view(shape)
            direction = (s.grad * (s.grad.abs() >= threshold)).sign()
            moved = s.xa + s.step.view(shape) * direction / (direction.abs().flatten(1).sum(1).view(shape) + 1e-10)
            delta = moved - ball.x
            s.xa = ball.x + delta + l1_box_delta(ball.x, delta, radius, ball.bounds)
        gain, grad, hit = _loss_and_grad(access, s.xa, rows[pos], objective, success, cfg)
        with torch.no_grad():
            s.grad = grad if ball.mask is None else grad * ball.mask
            better = gain > s.best
            s.x_best = torch.where(better.view(shape), s.xa, s.x_best)
            s.grad_best = torch.where(better.view(shape), s.grad, s.grad_best)
            s.best = torch.where(better, gain, s.best)
            since_check += 1
            if since_check == interval:
                sp_curr = _l0(s.x_best - ball.x)
                sparser = (sp_curr / s.sp_old) < 0.95
                s.topk = sp_curr / n_fts / 1.5
                s.step = torch.where(sparser, torch.full_like(s.step, radius), s.step / 1.5)
                s.step = s.step.clamp(radius / 10.0, radius)
                s.sp_old = sp_curr
                s.xa = torch.where(sparser.view(shape), s.x_best, s.xa)
                s.grad = torch.where(sparser.view(shape), s.grad_best, s.grad)
                since_check = 0
        if retire(hit, looks_now(i, x.device)):
            return s.x_best, pos, objective, success, ball
        if cfg.keep_copies and done + i + 1 == cfg.first_checkpoint and pos.numel():
            keep = _most_promising(owner[pos], s.best, cfg.keep_copies, owners)
            keep = torch.unique(torch.cat([keep, pending.nonzero().squeeze(1)]))  # held successes stay
            if keep.numel() < pos.numel():  # every input keeps at least one copy
                pos, pending, held = pos[keep], pending[keep], held[keep]
                s.keep(keep)
                objective, success, ball = objective.subset(keep), success.subset(keep), ball.subset(keep)
                u = torch.arange(keep.numel(), device=x.device)
    retire(torch.zeros_like(pending))  # the held successes since the last look
    return s.x_best, pos, objective, success, ball


def apgd(access: Access, x: Tensor, objective: Objective, budget: Budget, cfg: APGDConfig, norm: str,
         epsilon: float, rng: Stream, targets: int = 0,
         parallel: bool = False) -> tuple[Tensor, dict[str, Any]]:
    """APGD with restarts (``targets`` = 0), or APGD-T over the top ``targets`` other classes.

    Every restart and every target runs only on the inputs not yet broken. ``parallel`` runs the
    targets of APGD-T side by side in one batch (one copy per input and target, all copies of an input
    leaving at its first success) instead of one after the other: the same passes or fewer per broken
    input in far fewer, larger batches (wall time), at the price of running targets the reference would
    have skipped for an input a previous target broke.
    """
    x = x.detach()
    objective = on_device(objective, x.device)
    ball = Ball(x, budget, norm, epsilon)
    n = x.shape[0]
    best = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    runs = 0
    schedule: list[int | None] = [None] * cfg.restarts
    if targets:
        schedule = [t for t in range(targets) for _ in range(cfg.restarts)]
    if targets and parallel:  # every target in one batch: one copy of each input per target
        schedule = [None] * cfg.restarts
    for target_rank in schedule:
        todo = (~found).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        if targets and parallel:
            cand, hit = _all_targets(access, x, todo, objective, ball, cfg, rng, targets)
            best[todo], found[todo] = cand, hit
            runs += 1
            continue
        success = objective.subset(todo)
        loss_objective = success if target_rank is None else _targeted(access, x[todo], todo, success, target_rank)
        if loss_objective is None:  # fewer classes than targets asked for
            break
        cand, hit = apgd_run(access, todo, loss_objective, success, ball.subset(todo), cfg, rng.subset(todo))
        best[todo] = cand
        found[todo] = hit
        runs += 1
    return best, {"steps": cfg.steps, "restarts": cfg.restarts, "targets": targets, "runs": runs,
                  "found_during_attack": int(found.sum())}


def _all_targets(access: Access, x: Tensor, todo: Tensor, objective: Objective, ball: Ball, cfg: APGDConfig,
                 rng: Stream, targets: int) -> tuple[Tensor, Tensor]:
    """APGD-T with all top-``targets`` classes at once on the inputs ``todo``; (candidates, found) per input."""
    success = objective.subset(todo)
    with torch.no_grad():
        clean = access(x[todo], todo)
    _need_four(clean)
    k = min(targets, clean.shape[1] - 1)
    order = clean.argsort(dim=1, descending=True)[:, 1:k + 1]
    copy = torch.arange(todo.numel(), device=x.device).repeat_interleave(k)
    copies = success.subset(copy)
    loss = _sweepable(copies).towards(order.reshape(-1), "dlr")
    return apgd_run(access, todo[copy], loss, copies, ball.subset(todo[copy]), cfg, rng.subset(todo[copy]),
                    owner=copy)


def _sweepable(objective: Objective) -> ClassificationObjective:
    """The objective, when a target sweep can aim it at other classes (an untargeted classification one)."""
    if not isinstance(objective, ClassificationObjective) or objective.targeted:
        raise AttackgenError("apgd_t sweeps target classes on an untargeted classification objective")
    return objective


def _need_four(clean: Tensor) -> None:
    if clean.shape[1] < 4:
        raise AttackgenError(
            "C18-dlr-needs-enough-classes: APGD-T's targeted DLR loss reads the 4 largest logits and the "
            f"model has {clean.shape[1]} classes; use apgd_ce on this model")


def _targeted(access: Access, x: Tensor, rows: Tensor, objective: Objective, rank: int) -> Objective | None:
    """The targeted-DLR objective towards each input's (rank+2)-th most likely clean class (None: no such class)."""
    sweep = _sweepable(objective)
    with torch.no_grad():
        clean = access(x, rows)
    _need_four(clean)
    if rank + 1 >= clean.shape[1]:
        return None
    order = clean.argsort(dim=1, descending=True)
    return sweep.towards(order[:, rank + 1], "dlr")


class _APGD(Attack[APGDParams]):
    access = "gradients"
    params_model: ClassVar[type[AttackParams]] = APGDParams
    loss = "ce"
    targeted_sweep = False

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        name = self.__class__.__name__.lower()
        self.check_objective(objective)
        norm = require_norm(budget, ("inf", "2", "1"), name)
        eps = require_epsilon(budget, name)
        p = self.params
        cfg = APGDConfig(steps=p.steps, restarts=p.restarts, rho=p.rho, eot_iter=p.eot_iter, large_eps=p.large_eps,
                         keep_copies=p.keep_targets if isinstance(p, APGDTParams) and p.parallel_targets else 0,
                         confirm=CONFIRM_STEPS if env is not None and env.random_outputs and p.eot_iter == 1 else 1)
        loss = p.loss
        targets = 0
        if self.targeted_sweep and not objective.targeted:
            targets = p.n_target_classes if isinstance(p, APGDTParams) else 9
            if env is not None and env.num_classes is not None:
                targets = min(targets, env.num_classes - 1)
        else:
            objective = objective.with_loss("dlr" if loss == "dlr-targeted" else loss)  # targeted DLR is DLR
        rng: Stream = (BatchStream(self.generator(x.device), x.shape[0]) if p.batch_start
                       else self.row_random(x))
        x_adv, info = apgd(access, x, objective, budget, cfg, norm, eps, rng, targets,
                           parallel=isinstance(p, APGDTParams) and p.parallel_targets)
        info.update(norm=norm, loss="dlr-targeted" if targets else loss)
        return AttackOutput(x_adv, info)


class APGDCE(_APGD):
    """APGD on the cross-entropy (AutoAttack's first attack)."""

    loss = "ce"
    params_model = APGDParams


class APGDDLR(_APGD):
    """APGD on the DLR loss (scale-free; AutoAttack plus and rand)."""

    loss = "dlr"
    params_model = APGDDLRParams
    objective_needs = frozenset({Capability.LOSS_CHOICE})


class APGDT(_APGD):
    """APGD-T: targeted DLR towards each of the top-k other classes in turn, survivors only."""

    loss = "dlr"
    params_model = APGDTParams
    targeted_sweep = True
    objective_needs = frozenset({Capability.GOAL, Capability.LOSS_CHOICE})


__all__ = ["APGDCE", "APGDDLR", "APGDT", "APGDConfig", "apgd", "apgd_run"]
