"""Square Attack (Andriushchenko, Croce, Flammarion, Hein 2020, arXiv:1912.00049), Linf, L2 and L1.

Random search over square-shaped updates, accepted when they lower the objective's loss on the scores
the oracle returns (logits, probabilities or top-k; see ``_query.as_outputs``). One query per input
per iteration, through the counted score oracle; an input stops on success or when its budget is
spent. The side of the square follows the paper's schedule ``p_selection``, scaled to the number of
queries the input can actually make. Ported from the authors' code to batched torch, with a choice of
random draws (``draws``). ``per_input`` (the default) draws windows, signs and bumps per input from
each input's own stream (``RowRandom``), so an input's search does not depend on its batch; this is
*not* what the reference does. ``autoattack`` reproduces the reference (fra31/auto-attack): one window
and one sign vector per iteration shared by the batch, from its seeded stream (see ``_square_aa``), for
the AutoAttack presets. In per_input mode, per query the loop does a fixed,
small number of tensor ops for the whole working set (no per-input Python): the uniforms of 32 queries
are hashed at once, a window is one lookup in a cached table of window positions (L2: its bump too,
placed at every corner, so a proposal is gathers and arithmetic), and the Linf values x +- eps are
clamped once per attack.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks import _square_aa as aa
from attackgen.run.attacks._boxproj import l1_box_delta
from attackgen.run.attacks._query import as_outputs, bview, left, query_budget, with_loss
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.attacks.syncs import looks_now, sync_every
from attackgen.run.objectives.base import Capability, Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import SquareL1Params, SquareL2Params, SquareLinfParams


def p_selection(p_init: float, it: int, n_iters: int | None) -> float:
    """Fraction of pixels changed at iteration ``it`` of ``n_iters`` (the paper's halving schedule, laid
    out for 10,000 iterations); ``n_iters`` None: not rescaled (the reference's ``resc_schedule=False``)."""
    if n_iters is not None:
        it = int(it / max(n_iters, 1) * 10000)
    for limit, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                       (6000, 128), (8000, 256), (10000, 512)):
        if it <= limit:
            return p_init / div
    return p_init


class _Square(Attack[SquareLinfParams]):
    access = "scores"
    params_model = SquareLinfParams
    norm = "inf"

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if budget.epsilon is None:
            raise AttackgenError(
                f"threat.imperceptibility: the Square attack ({type(self).__name__}) needs a fixed epsilon "
                "(mode: fixed); for minimal-norm questions use a decision-based attack"
            )
        if x.dim() != 4:
            raise AttackgenError(f"the Square attack needs image batches (N, C, H, W); got shape {tuple(x.shape)}")
        eps = float(budget.epsilon)
        p_init = self.params.p_init
        # the paper: margin loss untargeted, cross-entropy targeted
        objective = with_loss(objective, "ce" if objective.targeted else "margin")
        if self.params.draws == "autoattack":
            return self._run_autoattack(access, x, objective, budget, eps)
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)
        n_iters = query_budget(access, rows, self.params.n_queries)
        # queries each input may make: the oracle's budget left now, and the attack's own cap
        room = left(access, rows).clamp(max=n_iters)

        rng = self.row_random(x)  # per-input streams: an input's squares do not depend on its batch
        x_best = budget.project(x, self._init(x, eps, budget, rng))
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        # The working set: the inputs still searching, gathered once. An input that stops (success, or its
        # queries spent) is masked out at once (``going``: no longer charged, answered or changed) and the
        # set is compacted at the next look, every K iterations (attackgen.run.attacks.syncs: K = 1 on the
        # CPU, so the set shrinks at once; on a GPU the loop syncs once per K queries). An oracle without
        # ``query_live`` gets a look every iteration.
        idx = rows[room > 0]
        xs, best, sub, last, rows_rng = x[idx], x_best[idx], objective.subset(idx), room[idx] - 1, rng.subset(idx)
        fixed = self._fixed(xs, eps, budget)  # per-input tensors every proposal reads (Linf: x +- eps, clamped)
        loss_best = torch.full((idx.numel(),), float("inf"), device=x.device)
        going = torch.ones(idx.numel(), dtype=torch.bool, device=x.device)
        stopped_at = torch.zeros(idx.numel(), dtype=torch.long, device=x.device)
        won = torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)
        skip_project = budget.mask is None and self.norm == "inf"  # a Linf proposal is in the ball and bounds
        # with a look every iteration (the CPU) every row queried is live: the plain query is cheaper
        query_live = getattr(access, "query_live", None) if sync_every(x.device) > 1 else None
        # The uniforms of up to DRAW_BLOCK queries with the same square size are drawn at once (the same
        # numbers as one draw per query, see RowRandom.rand_block) and turned into per-query pieces
        # (window positions, signs) for the whole block: per query the loop then only selects them.
        draws = self._draws(x.shape[1])
        h, w = x.shape[2:]
        scale = n_iters if self.params.rescale_schedule else None
        sides = [self._side(p_selection(p_init, it, scale), h, w) for it in range(n_iters)]
        pieces: tuple[Tensor, ...] = ()
        at, end = 0, 1  # the first proposal (iteration 1) starts a block
        for it in range(n_iters):
            if idx.numel() == 0:
                break
            if it == 0:
                x_new = best
            else:
                if it == end:  # a new block: up to DRAW_BLOCK queries on, ending where the side changes
                    end = it + 1
                    while end < min(n_iters, it + DRAW_BLOCK) and sides[end] == sides[it]:
                        end += 1
                    pieces = self._prepare(rows_rng.rand_block(end - it, draws), sides[it], h, w, x.device)
                    at = 0
                cand = self._propose(xs, best, eps, sides[it], budget, tuple(t[:, at] for t in pieces), fixed)
                at += 1
                x_new = cand if skip_project else budget.project(xs, cand)
            # rows are distinct, so the oracle's own check refuses any query beyond an input's budget
            scores = query_live(x_new, idx, going) if query_live is not None else access(x_new, idx)
            outputs = as_outputs(access, scores, sub)
            loss = sub.loss(outputs).detach().to(device=x.device, dtype=loss_best.dtype)
            success = sub.success(outputs).to(x.device).bool()
            better = (loss < loss_best) | success
            stop = success | (last <= it)  # last: the iteration of an input's final query
            if query_live is not None:  # stopped rows (NaN answers) neither win nor stop again
                success, better, stop = success & going, better & going, stop & going
            best = torch.where(bview(better, best), x_new, best)
            loss_best = torch.where(better, loss, loss_best)
            stopped_at = torch.where(stop, it + 1, stopped_at)
            won |= success
            going &= ~stop
            if (query_live is None or looks_now(it, x.device)) and not bool(going.all()):
                # the loop's one sync: write the stopped inputs back and shrink the working set
                x_best[idx] = best
                used[idx] = stopped_at
                done[idx] |= won
                keep = going
                idx, xs, best, loss_best, last = idx[keep], xs[keep], best[keep], loss_best[keep], last[keep]
                going, stopped_at, won = going[keep], stopped_at[keep], won[keep]
                fixed = tuple(t[keep] for t in fixed)
                if idx.numel():
                    sub, rows_rng = objective.subset(idx), rows_rng.subset(keep.nonzero().squeeze(1))
                    pieces = tuple(t[keep] for t in pieces)
        if idx.numel():
            x_best[idx] = best
            used[idx] = torch.where(going, n_iters, stopped_at)
            done[idx] |= won
        return AttackOutput(x_best, {"queries": used.tolist(), "success_in_attack": done.tolist()})

    def _run_autoattack(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
                        eps: float) -> AttackOutput:
        """The reference's loop (draws: autoattack): the initial point, then ``n_queries`` proposals drawn
        from the reference's stream for the inputs whose margin is still positive, in index order. The
        working set shrinks every iteration (the L2 signs drawn depend on how many inputs are left, so
        this mode looks at the device once per query, as the reference does)."""
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)
        n_queries = self.params.n_queries
        scale = n_queries if self.params.rescale_schedule else None
        # the reference's budget: the initial point plus n_queries proposals; the oracle's budget caps it
        room = left(access, rows).clamp(max=n_queries + 1)
        stream = aa.Stream()
        lo, hi = budget.bounds
        x_best = self._aa_init(x, eps, float(lo), float(hi), stream)
        if budget.mask is not None:
            x_best = budget.project(x, x_best)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        idx = rows[room > 0]
        xs, best, sub, last = x[idx], x_best[idx], objective.subset(idx), room[idx]
        fixed = self._aa_fixed(xs, eps)
        has_margin = Capability.MARGIN in objective.capabilities
        loss_best = torch.zeros(0)
        for it in range(n_queries + 1):
            if idx.numel() == 0:
                break
            if it == 0:
                x_new = best
            else:
                x_new = self._aa_propose(xs, best, eps, p_selection(self.params.p_init, it - 1, scale), stream,
                                         fixed, float(lo), float(hi))
                if budget.mask is not None:
                    x_new = budget.project(xs, x_new)
            outputs = as_outputs(access, access(x_new, idx), sub)
            loss = sub.loss(outputs).detach().to(x.device)
            # the reference stops an input at margin <= 0 (a tie included; verification then judges it)
            hit = sub.success(outputs).to(x.device).bool()
            if has_margin:
                hit = hit | (sub.margin(outputs).to(x.device) <= 0)
            if it == 0:
                loss_best, better = loss, hit
            else:
                lower = loss < loss_best
                loss_best = torch.where(lower, loss, loss_best)
                better = lower | hit
            best = torch.where(bview(better, best), x_new, best)
            stop = hit | (last <= it + 1)
            if bool(stop.any()):
                x_best[idx] = best
                used[idx] = torch.where(stop, it + 1, used[idx])
                done[idx] |= hit
                keep = ~stop
                idx, xs, best, loss_best, last = idx[keep], xs[keep], best[keep], loss_best[keep], last[keep]
                fixed = tuple(t[keep] for t in fixed)
                if idx.numel():
                    sub = objective.subset(idx)
        if idx.numel():
            x_best[idx] = best
            used[idx] = n_queries + 1
        return AttackOutput(x_best, {"queries": used.tolist(), "success_in_attack": done.tolist()})

    def _aa_init(self, x: Tensor, eps: float, lo: float, hi: float, stream: aa.Stream) -> Tensor:
        raise NotImplementedError

    def _aa_fixed(self, x: Tensor, eps: float) -> tuple[Tensor, ...]:
        return ()

    def _aa_propose(self, x: Tensor, x_best: Tensor, eps: float, p: float, stream: aa.Stream,
                    fixed: tuple[Tensor, ...], lo: float, hi: float) -> Tensor:
        raise NotImplementedError

    def _init(self, x: Tensor, eps: float, budget: Budget, rng: RowRandom) -> Tensor:
        raise NotImplementedError

    def _draws(self, channels: int) -> int:
        """Uniforms one proposal reads per input."""
        raise NotImplementedError

    def _side(self, p: float, h: int, w: int) -> int:
        """The square's side at the fraction p of the pixels."""
        raise NotImplementedError

    def _fixed(self, x: Tensor, eps: float, budget: Budget) -> tuple[Tensor, ...]:
        """Per-input tensors computed once per attack and read by every proposal."""
        return ()

    def _prepare(self, u: Tensor, s: int, h: int, w: int, device: torch.device) -> tuple[Tensor, ...]:
        """Per-query pieces for a block of queries from their uniforms u (N, queries, draws): tensors with
        the queries on dim 1; a proposal gets each one's column."""
        return (u,)

    def _propose(self, x: Tensor, x_best: Tensor, eps: float, s: int, budget: Budget, pieces: tuple[Tensor, ...],
                 fixed: tuple[Tensor, ...]) -> Tensor:
        """A proposal per input of x from this query's ``pieces`` (see ``_prepare``)."""
        raise NotImplementedError


class SquareLinf(_Square):
    """Square attack in the Linf ball: vertical-stripe start, then +-eps squares per channel."""

    norm = "inf"

    def _init(self, x: Tensor, eps: float, budget: Budget, rng: RowRandom) -> Tensor:
        _, c, _, w = x.shape
        signs = rng.randint(0, 2, c, 1, w).to(x.dtype) * 2 - 1
        return x + eps * signs

    def _draws(self, channels: int) -> int:
        return 2 + channels  # the window's corner, then one sign per channel

    def _aa_init(self, x: Tensor, eps: float, lo: float, hi: float, stream: aa.Stream) -> Tensor:
        return aa.init_linf(x, eps, lo, hi, stream)

    def _aa_fixed(self, x: Tensor, eps: float) -> tuple[Tensor, ...]:
        return x - eps, x + eps

    def _aa_propose(self, x: Tensor, x_best: Tensor, eps: float, p: float, stream: aa.Stream,
                    fixed: tuple[Tensor, ...], lo: float, hi: float) -> Tensor:
        return aa.propose_linf(x, x_best, eps, p, stream, fixed[0], fixed[1], lo, hi)

    def _side(self, p: float, h: int, w: int) -> int:
        s = round(math.sqrt(p * h * w))
        return min(max(s, 1), h - 1, w - 1) if min(h, w) > 1 else 1

    def _fixed(self, x: Tensor, eps: float, budget: Budget) -> tuple[Tensor, ...]:
        lo, hi = budget.bounds
        return (x + eps).clamp(lo, hi), (x - eps).clamp(lo, hi)

    def _prepare(self, u: Tensor, s: int, h: int, w: int, device: torch.device) -> tuple[Tensor, ...]:
        top, left = _corner(u[..., 0], h - s), _corner(u[..., 1], w - s)
        if _windows(h, w, s, device) is not None:
            return top * (w - s + 1) + left, u[..., 2:] >= 0.5  # a window's row in the table; + signs
        return top, left, u[..., 2:] >= 0.5

    def _propose(self, x: Tensor, x_best: Tensor, eps: float, s: int, budget: Budget, pieces: tuple[Tensor, ...],
                 fixed: tuple[Tensor, ...]) -> Tensor:
        h, w = x.shape[2:]
        up, down = fixed
        table = _windows(h, w, s, x.device)
        if table is not None:
            window = table[pieces[0]][:, None]
        else:
            window = _spans(h, s, x.device)[pieces[0]][:, None, :, None] & \
                _spans(w, s, x.device)[pieces[1]][:, None, None, :]
        plus = pieces[-1][:, :, None, None]  # +eps where the channel's uniform is >= 0.5
        cand = torch.where(window, torch.where(plus, up, down), x_best)
        # The reference redraws until the square changes something; flipping the signs always does.
        # On an accelerator done for every row and selected (no host sync); on the CPU, where a look at
        # the flag costs nothing, only when some square changed nothing (rare after the first queries).
        same = (cand == x_best).flatten(1).all(dim=1)
        if _looks_free(x.device) and not bool(same.any()):
            return cand
        return torch.where(window, torch.where(plus ^ same[:, None, None, None], up, down), x_best)


def _looks_free(device: torch.device) -> bool:
    """Whether reading a flag on the host costs nothing here (the CPU, where the sync budget of
    attackgen.run.attacks.syncs looks every iteration): then Square skips work no row needs."""
    return sync_every(device) == 1


DRAW_BLOCK = 32
"""Queries whose uniforms Square draws at once."""

WINDOW_TABLE_MAX = 1 << 22
"""Largest table of every window position (bools) kept for one square size; above it, windows are built."""


def _window(top: Tensor, left: Tensor, h: int, w: int, s: int, device: torch.device) -> Tensor:
    """(N, 1, h, w) bool: each input's s x s window at (top, left)."""
    table = _windows(h, w, s, device)
    if table is not None:
        return table[top * (w - s + 1) + left][:, None]
    return _spans(h, s, device)[top][:, None, :, None] & _spans(w, s, device)[left][:, None, None, :]


@functools.lru_cache(maxsize=64)
def _windows(h: int, w: int, s: int, device: torch.device) -> Tensor | None:
    """((h - s + 1) * (w - s + 1), h, w) bool: every s x s window, row-major by corner; None when too big."""
    if (h - s + 1) * (w - s + 1) * h * w > WINDOW_TABLE_MAX:
        return None
    rows, cols = _spans(h, s, device), _spans(w, s, device)
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(-1, h, w)


@functools.lru_cache(maxsize=64)
def _spans(size: int, s: int, device: torch.device) -> Tensor:
    """(size - s + 1, size) bool: row t is True on the s positions t .. t + s - 1."""
    pos = torch.arange(size, device=device)
    start = torch.arange(size - s + 1, device=device)[:, None]
    return (pos >= start) & (pos < start + s)


@functools.lru_cache(maxsize=64)
def _rect_bump(a: int, b: int, device: torch.device) -> Tensor:
    """The reference's pseudo-Gaussian rectangle: nested rings with weights 1/(k+1)^2, unit L2 norm."""
    delta = torch.zeros(a, b, device=device)
    ca, cb = a // 2 + 1, b // 2 + 1
    r0, c0 = ca - 1, cb - 1
    for k in range(max(ca, cb)):
        delta[max(r0, 0) : min(r0 + 2 * k + 1, a), max(c0, 0) : min(c0 + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        r0 -= 1
        c0 -= 1
    return delta / delta.norm().clamp_min(1e-12)


@functools.lru_cache(maxsize=64)
def _halves(s: int, device: torch.device) -> Tensor:
    """The reference's meta_pseudo_gaussian_pert before its random transpose (cached: a function of s)."""
    delta = torch.zeros(s, s, device=device)
    delta[: s // 2] = _rect_bump(s // 2, s, device) if s // 2 > 0 else 0.0
    delta[s // 2 :] = -_rect_bump(s - s // 2, s, device)
    return delta / delta.norm().clamp_min(1e-12)


def _l1_box(x: Tensor, delta: Tensor, eps: float, budget: Budget) -> Tensor:
    """The change putting x + delta in the L1 ball (radius eps * (1 - 1e-6), the reference's margin) and
    the input box."""
    lo, hi = budget.bounds
    return l1_box_delta(x, delta, eps * (1.0 - 1e-6), (float(lo), float(hi)))


def _corner(u: Tensor, last: int) -> Tensor:
    """Integers in [0, last] from uniforms in [0, 1) (float rounding of u * (last + 1) clamped)."""
    return (u * (last + 1)).long().clamp_(max=last)


def _place(bumps: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Each row's (s, s) bump placed at its own corner in an (h, w) image, by gathering (no per-row
    loop); returns (N, 1, h, w) images, zero outside the window, and the window masks."""
    n, s = bumps.shape[0], bumps.shape[-1]
    rr = torch.arange(h, device=bumps.device)[None, :] - top[:, None]  # (N, h): offset inside the window
    cc = torch.arange(w, device=bumps.device)[None, :] - left[:, None]
    inside = ((rr >= 0) & (rr < s))[:, :, None] & ((cc >= 0) & (cc < s))[:, None, :]
    picked = bumps[torch.arange(n, device=bumps.device)[:, None, None], rr.clamp(0, s - 1)[:, :, None],
                   cc.clamp(0, s - 1)[:, None, :]]
    return (picked * inside)[:, None], inside[:, None]


@functools.lru_cache(maxsize=64)
def _window_values(h: int, w: int, s: int, device: torch.device, dtype: torch.dtype) -> Tensor | None:
    """``_windows`` as 0/1 values of ``dtype``."""
    table = _windows(h, w, s, device)
    return None if table is None else table.to(dtype)


@functools.lru_cache(maxsize=64)
def _placed_bumps(h: int, w: int, s: int, device: torch.device, power: int = 2) -> Tensor | None:
    """(2 * windows, h, w): the bump placed at every corner (row-major, as ``_windows``), row ``2 * corner
    + transpose``; the same values ``_place`` computes per query. None when the tables are too big."""
    table = _windows(h, w, s, device)
    if table is None or 2 * table.numel() > WINDOW_TABLE_MAX:
        return None
    corners = torch.arange(table.shape[0], device=device).repeat_interleave(2)
    transpose = torch.arange(2, device=device).repeat(table.shape[0]).bool()
    placed, _ = _place(_bumps(s, transpose, power), corners // (w - s + 1), corners % (w - s + 1), h, w)
    return placed[:, 0]


def _bumps(s: int, transpose: Tensor, power: int = 2) -> Tensor:
    """(N, s, s): the reference's meta_pseudo_gaussian_pert per row (power 2: L2's, unit L2 norm; 4: L1's
    ``eta``, unit L1 norm), transposed where ``transpose``."""
    delta = _halves(s, transpose.device) if power == 2 else aa.eta_base(s, power, transpose.device)
    return torch.where(transpose[:, None, None], delta.t(), delta)


class SquareL2(_Square):
    """Square attack in the L2 ball: moves mass between two windows, keeping the norm at epsilon."""

    norm = "2"
    params_model = SquareL2Params

    power = 2
    """The bumps' weights 1/(k+1)^power (L2: 2, L1: 4, as the reference)."""

    def _init(self, x: Tensor, eps: float, budget: Budget, rng: RowRandom) -> Tensor:
        delta = self._tiles(x, rng)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return x + delta / bview(norms, x) * eps

    def _tiles(self, x: Tensor, rng: RowRandom) -> Tensor:
        """The reference's tiling of pseudo-Gaussian bumps with random signs, drawn per input."""
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        delta = torch.zeros_like(x)
        start = (h - s * 5) // 2 if h >= 5 * s else 0
        tiles = [(start + i * s, start + j * s) for i in range(h // s) for j in range(w // s)]
        u = rng.rand(len(tiles), 1 + c, dtype=torch.float32)
        signs = torch.where(u[:, :, 1:] < 0.5, -1.0, 1.0).to(x.dtype)  # (N, tiles, c)
        for k, (top, lft) in enumerate(tiles):  # a loop over the 25 tiles, not over inputs
            bump = _bumps(s, u[:, k, 0] < 0.5, self.power).to(x.dtype) if s > 1 else \
                torch.ones(n, 1, 1, device=x.device)
            delta[:, :, top : top + s, lft : lft + s] += (bump[:, None] * signs[:, k, :, None, None])[
                ..., : h - top, : w - lft]
        return delta

    def _draws(self, channels: int) -> int:
        return 5 + channels  # two windows' corners, the bump's transpose, one sign per channel

    def _aa_init(self, x: Tensor, eps: float, lo: float, hi: float, stream: aa.Stream) -> Tensor:
        return aa.init_l2(x, eps, lo, hi, stream)

    def _aa_propose(self, x: Tensor, x_best: Tensor, eps: float, p: float, stream: aa.Stream,
                    fixed: tuple[Tensor, ...], lo: float, hi: float) -> Tensor:
        return aa.propose_l2(x, x_best, eps, p, stream, lo, hi)

    def _side(self, p: float, h: int, w: int) -> int:
        s = max(round(math.sqrt(p * h * w)), 3)
        if s % 2 == 0:
            s += 1
        return min(s, h - 1 if h > 3 else h, w - 1 if w > 3 else w)

    def _prepare(self, u: Tensor, s: int, h: int, w: int, device: torch.device) -> tuple[Tensor, ...]:
        # per input (as in the reference) two windows, the bump's transpose, signs; with the tables (small
        # images) a block's windows and bumps become rows of cached tables, read by one gather per query
        if _placed_bumps(h, w, s, device, self.power) is None:
            return (u,)
        first = _corner(u[..., 0], h - s) * (w - s + 1) + _corner(u[..., 1], w - s)
        second = _corner(u[..., 2], h - s) * (w - s + 1) + _corner(u[..., 3], w - s)
        signs = torch.where(u[..., 5:] < 0.5, -1.0, 1.0)
        return first * 2 + (u[..., 4] < 0.5), first, second, signs

    def _propose(self, x: Tensor, x_best: Tensor, eps: float, s: int, budget: Budget, pieces: tuple[Tensor, ...],
                 fixed: tuple[Tensor, ...]) -> Tensor:
        c = x.shape[1]
        bump, signs, in1, in2, one1, both = self._windows_and_bump(x, s, pieces)
        delta = x_best - x
        sq = delta.square()
        norm_window1 = (sq * one1).sum(dim=(2, 3), keepdim=True).sqrt()  # per channel, as the reference
        norm_windows = (sq * both).sum(dim=(2, 3), keepdim=True).sqrt()
        norm_image = sq.sum(dim=(1, 2, 3), keepdim=True).sqrt()
        new = (bump * signs + delta / (1e-10 + norm_window1)) * one1
        new_norm = new.square().sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        room = ((eps**2 - norm_image**2).clamp_min(0) / c + norm_windows**2).sqrt()
        delta = torch.where(in1, new / new_norm * room, torch.where(in2, 0.0, delta))
        total = torch.linalg.vector_norm(delta, dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        return x + delta / total * eps

    def _windows_and_bump(self, x: Tensor, s: int, pieces: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """This query's bump (placed in the first window) and signs, the two windows (bool) and the first
        and the union as 0/1 in x's dtype; (N, 1, h, w) each but the signs (N, c, 1, 1)."""
        h, w = x.shape[2:]
        if len(pieces) == 4:  # rows of the tables (see _prepare), read with index_select (the cheap gather)
            bumps, masks = _placed_bumps(h, w, s, x.device, self.power), _windows(h, w, s, x.device)
            values = _window_values(h, w, s, x.device, x.dtype)
            assert bumps is not None and masks is not None and values is not None
            bump = bumps.index_select(0, pieces[0]).to(x.dtype)[:, None]
            in1, in2 = masks.index_select(0, pieces[1])[:, None], masks.index_select(0, pieces[2])[:, None]
            # the windows as 0/1 in x's dtype: a product with them equals the product with the bool mask
            # (promoted to 0/1), without a bool-to-float conversion per query
            one1 = values.index_select(0, pieces[1])[:, None]
            both = torch.maximum(one1, values.index_select(0, pieces[2])[:, None])
            signs = pieces[3].to(x.dtype)[:, :, None, None]
        else:
            u = pieces[0]
            r1, c1, r2, c2 = _corner(u[:, 0], h - s), _corner(u[:, 1], w - s), _corner(u[:, 2], h - s), \
                _corner(u[:, 3], w - s)
            signs = torch.where(u[:, 5:] < 0.5, -1.0, 1.0).to(x.dtype)[:, :, None, None]
            bump, in1 = _place(_bumps(s, u[:, 4] < 0.5, self.power).to(x.dtype), r1, c1, h, w)
            in2 = _window(r2, c2, h, w, s, x.device)
            one1, both = in1.to(x.dtype), (in1 | in2).to(x.dtype)
        return bump, signs, in1, in2, one1, both


class SquareL1(SquareL2):
    """Square attack in the L1 ball (the reference's ``norm='L1'``): L2's two-window move with L1 norms
    per window and channel and the L1 bumps (weights 1/(k+1)^4), then the exact projection onto the L1
    ball cut by the input box (``l1_box_delta``, as the reference's ``L1_projection``). Both draw modes:
    per_input (windows, bumps and signs from each input's stream, as SquareL2) and autoattack."""

    norm = "1"
    params_model = SquareL1Params  # type: ignore[assignment]
    power = 4

    def _init(self, x: Tensor, eps: float, budget: Budget, rng: RowRandom) -> Tensor:
        delta = self._tiles(x, rng)  # unscaled, then projected (the reference's L1 start)
        return x + delta + _l1_box(x, delta, eps, budget)

    def _propose(self, x: Tensor, x_best: Tensor, eps: float, s: int, budget: Budget, pieces: tuple[Tensor, ...],
                 fixed: tuple[Tensor, ...]) -> Tensor:
        c = x.shape[1]
        bump, signs, in1, in2, one1, both = self._windows_and_bump(x, s, pieces)
        delta = x_best - x
        size = delta.abs()
        norm_window1 = (size * one1).sum(dim=(2, 3), keepdim=True)  # per channel, as the reference
        norm_windows = (size * both).sum(dim=(2, 3), keepdim=True)
        norm_image = size.sum(dim=(1, 2, 3), keepdim=True)
        new = (bump * signs + delta / (1e-12 + norm_window1)) * one1
        new_norm = new.abs().sum(dim=(2, 3), keepdim=True)
        # the reference's mass for the window: what the ball has left, per channel, plus what both held
        mass = ((eps - norm_image).clamp_min(0) / c + norm_windows) * c
        delta = torch.where(in1, new / (1e-12 + new_norm) * mass, torch.where(in2, 0.0, delta))
        return x + delta + _l1_box(x, delta, eps, budget)

    def _aa_init(self, x: Tensor, eps: float, lo: float, hi: float, stream: aa.Stream) -> Tensor:
        return aa.init_l1(x, eps, lo, hi, stream)

    def _aa_propose(self, x: Tensor, x_best: Tensor, eps: float, p: float, stream: aa.Stream,
                    fixed: tuple[Tensor, ...], lo: float, hi: float) -> Tensor:
        return aa.propose_l1(x, x_best, eps, p, stream, lo, hi)
