"""Exact projections onto sets cut by the input box, shared by APGD-L1 and FAB.

Ported from the reference AutoAttack code (fra31/auto-attack, BSD-3-Clause, Croce & Hein): the L1 ball
intersected with the box (``L1_projection`` in autopgd_base.py, Croce & Hein 2021 "Mind the box") and the
projections of a point onto a hyperplane intersected with the box in Linf, L2 and L1 (fab_projections.py,
Croce & Hein 2020, FAB). The reference assumes the box [0, 1]; here every function takes the box's bounds
and works in unit coordinates ((x - lo) / (hi - lo)), where every Lp distance is the original one divided
by the span, so the results equal the reference's on [0, 1] inputs. Batched, no host syncs but the
data-dependent ``any`` guards the reference has, device-agnostic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def l1_box_delta(x: Tensor, y: Tensor, eps: Tensor | float, bounds: tuple[float, float]) -> Tensor:
    """delta with ||y + delta||_1 <= eps and lo <= x + y + delta <= hi, the smallest such change (per row).

    x is the ball's centre, y the current perturbation (x + y the point to project); any shape with the
    batch first; ``eps`` a float or one radius per row.
    """
    lo, hi = bounds
    span = hi - lo
    shape = x.shape
    xs = ((x - lo) / span).flatten(1).float()
    ys = (y / span).flatten(1).float()
    radius = (torch.as_tensor(eps, device=x.device, dtype=torch.float32) / span).expand(xs.shape[0])
    sigma = ys.sign()
    u = torch.minimum(torch.minimum(1 - xs - ys, xs + ys), torch.zeros_like(ys))
    low = -ys.abs()
    bs, indbs = torch.sort(-torch.cat((u, low), 1), dim=1)
    bs2 = torch.cat((bs[:, 1:], torch.zeros(bs.shape[0], 1, device=bs.device)), 1)
    inu = 2 * (indbs < u.shape[1]).float() - 1
    size1 = inu.cumsum(dim=1)
    s1 = -u.sum(dim=1)
    c = radius - ys.abs().sum(dim=1)
    outside = s1 + c < 0  # rows whose clipped point is still outside the ball: the search moves them
    s = s1.unsqueeze(-1) + torch.cumsum((bs2 - bs) * size1, dim=1)
    # The reference searches only the rows outside (a nonzero, a host sync per call); here every row is
    # searched and the others keep u by a mask: row by row the same arithmetic, so the same result.
    lb = torch.zeros(xs.shape[0], device=x.device)
    ub = torch.full_like(lb, bs.shape[1] - 1)
    for _ in range(math.ceil(math.log2(bs.shape[1]))):
        mid = torch.floor((lb + ub) / 2)
        below = s.gather(1, mid.long().unsqueeze(1)).squeeze(1) + c < 0
        lb = torch.where(below, mid, lb)
        ub = torch.where(below, ub, mid)
    lb2 = lb.long().unsqueeze(1)
    alpha = (-s.gather(1, lb2).squeeze(1) - c) / size1.gather(1, lb2 + 1).squeeze(1) + bs2.gather(1, lb2).squeeze(1)
    searched = -torch.minimum(torch.maximum(-u, alpha.unsqueeze(-1)), -low)
    d = torch.where(outside.unsqueeze(1), searched, u)
    return (sigma * d * span).view(shape).to(x.dtype)


def hyperplane_box(norm: str, t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """The minimal-``norm`` step d with <w, t + d> = b and t + d in [0, 1] (rows of flat unit-box points)."""
    if norm == "inf":
        return _linf(t, w, b)
    if norm == "2":
        return _l2(t, w, b)
    return _l1(t, w, b)


def _linf(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    device = t.device
    w, b = w.clone(), b.clone()
    sign = 2 * ((w * t).sum(1) - b >= 0) - 1
    w.mul_(sign.unsqueeze(1))
    b.mul_(sign)
    a = (w < 0).float()
    d = (a - t) * (w != 0).float()
    p = a - t * (2 * a - 1)
    indp = torch.argsort(p, dim=1)
    b = b - (w * t).sum(1)
    b0 = (w * d).sum(1)
    indp2 = indp.flip((1,))
    ws = w.gather(1, indp2)
    bs2 = -ws * d.gather(1, indp2)
    s = torch.cumsum(ws.abs(), dim=1)
    sb = torch.cumsum(bs2, dim=1) + b0.unsqueeze(1)
    b2 = sb[:, -1] - s[:, -1] * p.gather(1, indp[:, 0:1]).squeeze(1)
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & (~c_l)
    lb = torch.zeros(int(c2.sum()), device=device)
    ub = torch.full_like(lb, w.shape[1] - 1)
    indp_, sb_, s_, p_, b_ = indp[c2], sb[c2], s[c2], p[c2], b[c2]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lb + ub) / 2)
        mid2 = mid.long().unsqueeze(1)
        indcurr = indp_.gather(1, indp_.size(1) - 1 - mid2)
        b2 = (sb_.gather(1, mid2) - s_.gather(1, mid2) * p_.gather(1, indcurr)).squeeze(1)
        c = b_ - b2 > 0
        lb = torch.where(c, mid, lb)
        ub = torch.where(c, ub, mid)
    lb = lb.long()
    if c_l.any():
        lmbd = torch.clamp_min((b[c_l] - sb[c_l, -1]) / (-s[c_l, -1]), min=0).unsqueeze(-1)
        d[c_l] = (2 * a[c_l] - 1) * lmbd
    lmbd = torch.clamp_min((b[c2] - sb[c2, lb]) / (-s[c2, lb]), min=0).unsqueeze(-1)
    d[c2] = torch.min(lmbd, d[c2]) * a[c2] + torch.max(-lmbd, d[c2]) * (1 - a[c2])
    return d * (w != 0).float()


def _l2(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    device = t.device
    w = w.clone()
    c = (w * t).sum(1) - b
    ind2 = 2 * (c >= 0) - 1
    w.mul_(ind2.unsqueeze(1))
    c.mul_(ind2)
    r = torch.max(t / w, (t - 1) / w).clamp(min=-1e12, max=1e12)
    r.masked_fill_(w.abs() < 1e-8, 1e12)
    r[r == -1e12] *= -1
    rs, indr = torch.sort(r, dim=1)
    rs2 = F.pad(rs[:, 1:], (0, 1))
    rs.masked_fill_(rs == 1e12, 0)
    rs2.masked_fill_(rs2 == 1e12, 0)
    w3s = (w ** 2).gather(1, indr)
    w5 = w3s.sum(dim=1, keepdim=True)
    ws = w5 - torch.cumsum(w3s, dim=1)
    d = -(r * w)
    d.mul_((w.abs() > 1e-8).float())
    s = torch.cat((-w5 * rs[:, 0:1], torch.cumsum((-rs2 + rs) * ws, dim=1) - w5 * rs[:, 0:1]), 1)
    c4 = s[:, 0] + c < 0
    c3 = (d * w).sum(dim=1) + c > 0
    c2 = ~(c4 | c3)
    lb = torch.zeros(int(c2.sum()), device=device)
    ub = torch.full_like(lb, w.shape[1] - 1)
    s_, c_ = s[c2], c[c2]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lb + ub) / 2)
        above = s_.gather(1, mid.long().unsqueeze(1)).squeeze(1) + c_ > 0
        lb = torch.where(above, mid, lb)
        ub = torch.where(above, ub, mid)
    lb = lb.long()
    if c4.any():
        alpha = c[c4] / w5[c4].squeeze(-1)
        d[c4] = -alpha.unsqueeze(-1) * w[c4]
    if c2.any():
        alpha = (s[c2, lb] + c[c2]) / ws[c2, lb] + rs[c2, lb]
        alpha[ws[c2, lb] == 0] = 0
        c5 = (alpha.unsqueeze(-1) > r[c2]).float()
        d[c2] = d[c2] * c5 - alpha.unsqueeze(-1) * w[c2] * (1 - c5)
    return d * (w.abs() > 1e-8).float()


def _l1(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    device = t.device
    w = w.clone()
    c = (w * t).sum(1) - b
    ind2 = 2 * (c >= 0) - 1
    w.mul_(ind2.unsqueeze(1))
    c.mul_(ind2)
    r = (1 / w).abs().clamp_max(1e12)
    indr = torch.argsort(r, dim=1)
    indr_rev = torch.argsort(indr)
    c6 = (w < 0).float()
    d = (-t + c6) * (w != 0).float()
    ds = torch.min(-w * t, w * (1 - t)).gather(1, indr)
    ds2 = torch.cat((c.unsqueeze(-1), ds), 1)
    s = torch.cumsum(ds2, dim=1)
    c2 = s[:, -1] < 0
    lb = torch.zeros(int(c2.sum()), device=device)
    ub = torch.full_like(lb, s.shape[1])
    s_ = s[c2]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lb + ub) / 2)
        above = s_.gather(1, mid.long().unsqueeze(1)).squeeze(1) > 0
        lb = torch.where(above, mid, lb)
        ub = torch.where(above, ub, mid)
    lb2 = lb.long()
    if c2.any():
        indr = indr[c2].gather(1, lb2.unsqueeze(1)).squeeze(1)
        u = torch.arange(0, w.shape[0], device=device).unsqueeze(1)
        u2 = torch.arange(0, w.shape[1], device=device, dtype=torch.float).unsqueeze(0)
        alpha = -s[c2, lb2] / w[c2, indr]
        c5 = u2 < lb.unsqueeze(-1)
        u3 = c5[u[:c5.shape[0]], indr_rev[c2]]
        d[c2] = d[c2] * u3.float()
        d[c2, indr] = alpha
    return d * (w.abs() > 1e-8).float()


__all__ = ["hyperplane_box", "l1_box_delta"]
