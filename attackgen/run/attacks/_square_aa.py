"""Square's ``draws: autoattack`` mode: the reference code's random stream and proposals, literally.

The reference (fra31/auto-attack ``square.py``, PyPI ``pyautoattack``, ``SquareAttack.attack_single_run``)
reseeds torch's global CPU generator with its seed (0 in AutoAttack) at each ``perturb`` call, i.e. per
batch, and then draws, in this order: the initial point (Linf: one sign per input, channel and column;
L2/L1: per tile of the init grid one transpose draw and one sign per input and channel), then per
iteration the window corners (Linf: one window; L2/L1: two), the per-channel signs (Linf: one vector
shared by the batch; L2/L1: the bump's transpose draw, then one sign per surviving input and channel).
Here the same uniforms come from a dedicated CPU ``torch.Generator`` (the global one is left alone),
taken from one buffer: torch's CPU ``rand`` stream is the same whether it is drawn in one call or in
many (checked by tests/test_square_draws.py), so buffering does not change a number. The arithmetic
of each proposal is the reference's, op for op, so results are equal to the reference's bit for bit
on the CPU on the same batch. Everything else (the counted, budgeted oracle, per-input query budgets,
masks, verification) is attackgen's.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from attackgen.run.attacks._boxproj import l1_box_delta

SEED = 0
"""AutoAttack's default seed, which it passes to Square at each batch."""

_BUFFER = 4096


class Stream:
    """The reference's uniforms, in its order, from a CPU generator seeded like the reference's."""

    def __init__(self, seed: int = SEED) -> None:
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.buf = torch.empty(0)
        self.at = 0

    def take(self, k: int) -> Tensor:
        """The next k uniforms (float32, CPU)."""
        if self.at + k > self.buf.numel():
            rest = self.buf[self.at :]
            more = torch.rand(max(k, _BUFFER), generator=self.gen)
            self.buf, self.at = torch.cat([rest, more]), 0
        out = self.buf[self.at : self.at + k]
        self.at += k
        return out

    def signs(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """The reference's ``random_choice``: sign(2u - 1)."""
        return torch.sign(2 * self.take(math.prod(shape)).view(shape) - 1).to(device)

    def integer(self, high: int) -> int:
        """The reference's ``random_int(0, high)``: int(high * u) in float32, in [0, high - 1] (0 if high is 0)."""
        return int((0 + high * self.take(1)).long())

    def transposed(self) -> bool:
        """The reference's ``torch.rand([1]) > 0.5`` in ``eta``: whether the bump is transposed."""
        return bool(self.take(1) > 0.5)


def side(p: float, c: int, h: int, w: int, smallest: int) -> int:
    """The reference's square side at fraction p (Linf: at least 1; L2/L1: at least 3 and odd)."""
    n_features = c * h * w
    s = max(round(math.sqrt(p * n_features / c)), smallest)
    if smallest == 3 and s % 2 == 0:
        s += 1
    return min(s, min(h, w))


@functools.lru_cache(maxsize=64)
def _rectangles(a: int, b: int, power: int, device: torch.device) -> Tensor:
    """The reference's ``eta_rectangles``: nested rings weighted 1/(k+1)^power (2: L2, 4: L1), normalised."""
    delta = torch.zeros([a, b], device=device)
    x_c, y_c = a // 2 + 1, b // 2 + 1
    r, c = x_c - 1, y_c - 1
    for counter in range(max(x_c, y_c)):
        delta[max(r, 0) : min(r + (2 * counter + 1), a), max(0, c) : min(c + (2 * counter + 1), b)] += \
            1.0 / (torch.Tensor([counter + 1]).view(1, 1).to(device) ** power)
        r -= 1
        c -= 1
    if power == 2:
        return delta / (delta**2).sum(dim=(0, 1), keepdim=True).sqrt()
    return delta / delta.abs().sum(dim=(), keepdim=True)


@functools.lru_cache(maxsize=64)
def eta_base(s: int, power: int, device: torch.device) -> Tensor:
    """The reference's ``eta`` before its random transpose (a function of s and the norm only)."""
    delta = torch.zeros([s, s], device=device)
    delta[: s // 2] = _rectangles(s // 2, s, power, device)
    delta[s // 2 :] = -1.0 * _rectangles(s - s // 2, s, power, device)
    if power == 2:
        return delta / (delta**2).sum(dim=(0, 1), keepdim=True).sqrt()
    return delta / delta.abs().sum(dim=(), keepdim=True)


def eta(s: int, power: int, stream: Stream, device: torch.device) -> Tensor:
    """The reference's ``eta``: the pseudo-Gaussian bump, transposed on its draw."""
    delta = eta_base(s, power, device)
    return delta.permute([1, 0]) if stream.transposed() else delta


def init_linf(x: Tensor, eps: float, lo: float, hi: float, stream: Stream) -> Tensor:
    """Vertical stripes: one sign per input, channel and column."""
    n, c, _, w = x.shape
    return torch.clamp(x + eps * stream.signs((n, c, 1, w), x.device), lo, hi)


def init_tiles(x: Tensor, power: int, stream: Stream) -> Tensor:
    """The L2/L1 initial perturbation (before scaling): a grid of bumps with random signs."""
    n, c, h, w = x.shape
    delta_init = torch.zeros_like(x)
    s = h // 5
    sp_init = (h - s * 5) // 2
    vh = sp_init + 0
    for _ in range(h // s):
        vw = sp_init + 0
        for _ in range(w // s):
            bump = eta(s, power, stream, x.device).view(1, 1, s, s)
            delta_init[:, :, vh : vh + s, vw : vw + s] += bump * stream.signs((n, c, 1, 1), x.device)
            vw += s
        vh += s
    return delta_init


def normalize_l2(x: Tensor) -> Tensor:
    t = (x**2).view(x.shape[0], -1).sum(-1).sqrt()
    return x / (t.view(-1, *([1] * (x.dim() - 1))) + 1e-12)


def init_l2(x: Tensor, eps: float, lo: float, hi: float, stream: Stream) -> Tensor:
    return torch.clamp(x + normalize_l2(init_tiles(x, 2, stream)) * eps, lo, hi)


def propose_linf(x: Tensor, x_best: Tensor, eps: float, p: float, stream: Stream, lo_eps: Tensor, hi_eps: Tensor,
                 lo: float, hi: float) -> Tensor:
    """One window and one sign per channel for the whole batch; the window's values go to x +- eps."""
    _, c, h, w = x.shape
    s = side(p, c, h, w, 1)
    vh, vw = stream.integer(h - s), stream.integer(w - s)
    signs = stream.signs((c, 1, 1), x.device)
    win = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
    x_new = x_best.clone()  # outside the window x_best + 0 is x_best, already in the ball and the bounds
    x_new[win] = torch.clamp(torch.min(torch.max(x_best[win] + 2.0 * eps * signs, lo_eps[win]), hi_eps[win]), lo, hi)
    return x_new


Window = tuple[slice, slice, slice, slice]


def _two_windows(x: Tensor, s: int, stream: Stream) -> tuple[Window, Window, Tensor]:
    """The L2/L1 proposals' two windows of side s (drawn in the reference's order: the first's corner,
    then the second's) and the mask of their union."""
    _, _, h, w = x.shape
    vh, vw = stream.integer(h - s), stream.integer(w - s)
    vh2, vw2 = stream.integer(h - s), stream.integer(w - s)
    win1 = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
    win2 = (slice(None), slice(None), slice(vh2, vh2 + s), slice(vw2, vw2 + s))
    mask_image = torch.zeros_like(x)
    mask_image[win1] = 1.0
    mask_image[win2] = 1.0
    return win1, win2, mask_image


def propose_l2(x: Tensor, x_best: Tensor, eps: float, p: float, stream: Stream, lo: float, hi: float) -> Tensor:
    """Mass moved from a second window into the first (bump + sign per input and channel), norm kept at eps."""
    n, c, h, w = x.shape
    delta_curr = x_best - x
    s = side(p, c, h, w, 3)
    win1, win2, mask_image = _two_windows(x, s, stream)
    norms_window_1 = (delta_curr[win1] ** 2).sum(dim=(-2, -1), keepdim=True).sqrt()
    norms_image = (delta_curr**2).view(n, -1).sum(-1).sqrt().view(-1, 1, 1, 1)
    norms_windows = ((delta_curr * mask_image) ** 2).sum(dim=(-2, -1), keepdim=True).sqrt()
    new_deltas = torch.ones([n, c, s, s], device=x.device)
    new_deltas *= eta(s, 2, stream, x.device).view(1, 1, s, s) * stream.signs((n, c, 1, 1), x.device)
    new_deltas += delta_curr[win1] / (1e-12 + norms_window_1)
    new_deltas = new_deltas / (1e-12 + (new_deltas**2).sum(dim=(-2, -1), keepdim=True).sqrt()) * (torch.max(
        (eps * torch.ones_like(new_deltas)) ** 2 - norms_image**2, torch.zeros_like(new_deltas)) / c
        + norms_windows**2).sqrt()
    delta_curr[win2] = 0.0
    delta_curr[win1] = new_deltas + 0
    return torch.clamp(x + normalize_l2(delta_curr) * eps, lo, hi)


def _l1_projection(x: Tensor, delta: Tensor, eps: float, lo: float, hi: float) -> Tensor:
    """The reference's ``L1_projection(x, delta, eps * (1 - 1e-6))``: the change that puts x + delta in the
    L1 ball and the box (attackgen.run.attacks._boxproj, the port APGD-L1 uses)."""
    return l1_box_delta(x, delta, eps * (1.0 - 1e-6), (lo, hi))


def init_l1(x: Tensor, eps: float, lo: float, hi: float, stream: Stream) -> Tensor:
    delta_init = init_tiles(x, 4, stream)
    return x + delta_init + _l1_projection(x, delta_init, eps, lo, hi)


def propose_l1(x: Tensor, x_best: Tensor, eps: float, p: float, stream: Stream, lo: float, hi: float) -> Tensor:
    """As in L2 with L1 norms per window and channel, then the L1-and-box projection."""
    n, c, h, w = x.shape
    delta_curr = x_best - x
    s = side(p, c, h, w, 3)
    win1, win2, mask_image = _two_windows(x, s, stream)
    norms_window_1 = delta_curr[win1].abs().sum(dim=(-2, -1), keepdim=True)
    norms_image = delta_curr.abs().view(n, -1).sum(dim=-1).view(-1, 1, 1, 1)
    norms_windows = (delta_curr * mask_image).abs().sum(dim=(-2, -1), keepdim=True)
    new_deltas = torch.ones([n, c, s, s], device=x.device)
    new_deltas *= eta(s, 4, stream, x.device).view(1, 1, s, s) * stream.signs((n, c, 1, 1), x.device)
    new_deltas += delta_curr[win1] / (1e-12 + norms_window_1)
    new_deltas = new_deltas / (1e-12 + new_deltas.abs().sum(dim=(-2, -1), keepdim=True)) * (torch.max(
        eps * torch.ones_like(norms_image) - norms_image, torch.zeros_like(norms_image)) / c + norms_windows) * c
    delta_curr[win2] = 0.0
    delta_curr[win1] = new_deltas + 0
    return x + delta_curr + _l1_projection(x, delta_curr, eps, lo, hi)
