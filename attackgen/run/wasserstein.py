"""The Wasserstein distance between two images, and the projection onto a Wasserstein ball.

One definition for the whole project (the attack projects with it, the executor verifies with it),
following Wong, Schmidt and Kolter 2019 (arXiv:1902.07906): an image is a distribution of intensity
mass over pixel positions, mass moves only within its channel, and moving mass m from pixel i to
pixel j costs m * ||i - j||_2 ** p (p = 2 as in their code, so the radius is in pixels squared).
Masses are normalised: each channel of x and of y is divided by its own total and weighted by its
share of x's total mass, so a radius of 0.1 means, for example, a tenth of the image's intensity
moved by one pixel.

- ``wasserstein_distance`` is what the executor reports and checks against the budget. It solves the
  transport linear program exactly (scipy's HiGHS) over moves of at most ``kernel // 2`` pixels in
  each direction. Restricting the moves can only raise the cost, so the figure is an upper bound on
  the unrestricted distance: a candidate it accepts is inside the ball.
- ``project`` is Wong et al.'s projected Sinkhorn: the entropy-regularised projection of a point
  onto the ball around x by block coordinate ascent on the dual (local transport as a convolution,
  Lambert W for the quadratic term, a Newton step for the cost multiplier). It is approximate; the
  attack re-measures its candidates with ``wasserstein_distance`` and shrinks any that overshoot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

LOG_FLOOR = -1e4  # log of zero mass: exp() of it is 0 without producing inf - inf


def cost_kernel(kernel: int, p: float, like: Tensor) -> Tensor:
    """(kernel, kernel) transport cost ||offset||_2 ** p of moving mass by each offset."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"the transport kernel must be an odd number of pixels, got {kernel}")
    r = torch.arange(kernel, dtype=like.dtype, device=like.device) - kernel // 2
    return (r.view(-1, 1) ** 2 + r.view(1, -1) ** 2).sqrt() ** p


# --------------------------------------------------------------------------- exact distance


def _channel_lp(a: np.ndarray, b: np.ndarray, kernel: int, p: float) -> float:
    """Exact optimal transport cost between two (H, W) mass maps of equal total, moves within kernel."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    h, w = a.shape
    half = kernel // 2
    src = np.flatnonzero(a.ravel() > 0)
    dst_ok = b.ravel() > 0
    if src.size == 0:
        return 0.0 if not dst_ok.any() else math.inf
    move_cost = cost_kernel(kernel, p, torch.zeros((), dtype=torch.float64)).numpy()
    rows_i, cols_j, costs = [], [], []
    si, sj = np.divmod(src, w)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            ti, tj = si + dy, sj + dx
            inside = (ti >= 0) & (ti < h) & (tj >= 0) & (tj < w)
            target = np.where(inside, ti * w + tj, 0)
            keep = inside & dst_ok[target]
            rows_i.append(np.flatnonzero(keep))
            cols_j.append(target[keep])
            costs.append(np.full(int(keep.sum()), move_cost[dy + half, dx + half]))
    source_row = np.concatenate(rows_i)
    target_pixel = np.concatenate(cols_j)
    cost = np.concatenate(costs)
    dst = np.flatnonzero(dst_ok)
    dst_index = np.full(h * w, -1)
    dst_index[dst] = np.arange(dst.size)
    n_var = cost.size
    var = np.arange(n_var)
    constraint = np.concatenate([source_row, src.size + dst_index[target_pixel]])
    a_eq = coo_matrix((np.ones(2 * n_var), (constraint, np.concatenate([var, var]))),
                      shape=(src.size + dst.size, n_var)).tocsr()
    # masses scaled to a mean of one per pixel, and no presolve: HiGHS's presolve declares feasible
    # problems with masses of 1e-17 next to 1e-2 infeasible
    scale = float(h * w)
    b_eq = np.concatenate([a.ravel()[src], b.ravel()[dst]]) * scale
    result = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs", options={"presolve": False})
    return float(result.fun) / scale if result.status == 0 else math.inf


def wasserstein_distance(x: Tensor, y: Tensor, kernel: int = 5, p: float = 2.0) -> Tensor:
    """Per-input transport cost (N,) from x to y (N, C, H, W), non-negative images; inf where mass cannot
    be moved within the kernel (or a channel is empty in one image and not the other)."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"wasserstein_distance needs two (N, C, H, W) tensors of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    xs = x.detach().double().clamp_min(0).cpu().numpy()
    ys = y.detach().double().clamp_min(0).cpu().numpy()
    out = np.zeros(x.shape[0])
    for n in range(x.shape[0]):
        total = xs[n].sum()
        if total <= 0:
            out[n] = 0.0 if ys[n].sum() <= 0 else math.inf
            continue
        if np.array_equal(xs[n], ys[n]):
            continue
        cost = 0.0
        for c in range(x.shape[1]):
            mass_x, mass_y = xs[n, c].sum(), ys[n, c].sum()
            if mass_x <= 0 or mass_y <= 0:
                cost += 0.0 if mass_x == mass_y else math.inf
                continue
            share = mass_x / total
            cost += share * _channel_lp(xs[n, c] / mass_x, ys[n, c] / mass_y, kernel, p)
        out[n] = cost
    return torch.from_numpy(out)


# --------------------------------------------------------------------------- projected Sinkhorn


def _local(weights: Tensor, v: Tensor) -> Tensor:
    """sum over offsets o of weights[n, j, o] * v[n, c, i + o]: local transport, kernels per input.

    ``weights`` is (N, J, k, k): J kernels at once (one grouped convolution); the result is
    (N, J, C, H, W), or (N, C, H, W) when ``weights`` is (N, k, k).
    """
    single = weights.dim() == 3
    if single:
        weights = weights.unsqueeze(1)
    n, c, h, w = v.shape
    j, k = weights.shape[1], weights.shape[-1]
    kern = weights.unsqueeze(2).expand(n, j, c, k, k).transpose(1, 2).reshape(n * c * j, 1, k, k)
    out = F.conv2d(v.reshape(1, n * c, h, w), kern, padding=k // 2, groups=n * c)  # (1, N*C*J, H, W)
    out = out.view(n, c, j, h, w).transpose(1, 2)
    return out[:, 0] if single else out


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1)


def lambert_w_exp(log_z: Tensor, iterations: int = 6) -> Tensor:
    """W(exp(log_z)), the principal Lambert W of a positive argument given by its logarithm.

    Newton on w + log w = log_z, which is concave in w, so from a start above the root the iterates
    decrease monotonically to it (six reach double precision from log_z - log log_z for large
    arguments, from softplus for small ones); working with the logarithm avoids overflowing exp(lambda * y).
    """
    big = log_z > 2
    w = torch.where(big, log_z - log_z.clamp_min(2).log() + 0.5, F.softplus(log_z)).clamp_min(1e-30)
    for _ in range(iterations):
        w = (w - (w + w.log() - log_z) / (1 + 1 / w)).clamp_min(1e-30)
    return w


@dataclass
class SinkhornState:
    """The dual variables of a projection, to warm-start the next one around the same x."""

    beta: Tensor
    psi: Tensor


def project(x: Tensor, z: Tensor, epsilon: Tensor, kernel: int = 5, p: float = 2.0, lam: float = 1000.0,
            iterations: int = 100, tolerance: float = 1e-4, state: SinkhornState | None = None
            ) -> tuple[Tensor, SinkhornState]:
    """Approximately the closest point to z (L2) within transport cost epsilon (N,) of x; both (N, C, H, W).

    Wong et al.'s projected Sinkhorn on mass normalised by x's total (the returned image is scaled
    back). ``lam`` is the entropy regularisation's inverse weight: larger is closer to the exact
    projection and slower to converge. Iterations stop early once the cost multiplier has settled;
    ``state`` (returned by the previous call for the same x) warm-starts them, which an attack's
    consecutive projections, with nearby z, converge from in a few iterations.
    The point returned is where the final transport plan delivers x's mass (its column sums, which
    equal beta / lam + z at convergence): it is reachable from x within the kernel by construction,
    at the plan's cost.
    """
    dtype = x.dtype
    x64, z64 = x.double().clamp_min(0), z.double()
    scale = x64.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    a, y = x64 / scale, z64 / scale
    eps = epsilon.to(x64).view(-1)
    cost = cost_kernel(kernel, p, x64)
    log_a = torch.where(a > 0, a.clamp_min(1e-300).log(), torch.full_like(a, LOG_FLOOR))
    if state is None:
        beta = torch.full_like(a, math.log(1.0 / a[0].numel()))
        psi = torch.ones(a.shape[0], dtype=x64.dtype, device=x64.device)
    else:
        beta, psi = state.beta.to(x64), state.psi.to(x64)
    moments = torch.stack([cost, cost * cost])  # (2, k, k): the Newton step's two local sums at once
    for _ in range(iterations):
        gibbs = torch.exp(-psi.view(-1, 1, 1) * cost - 1)  # (N, k, k)
        alpha = _local(gibbs, torch.exp(-beta)).clamp_min(1e-300).log() - log_a
        exp_alpha = torch.exp(-alpha)
        log_arg = math.log(lam) + lam * y + _local(gibbs, exp_alpha).clamp_min(1e-300).log()
        beta = lambert_w_exp(log_arg) - lam * y
        exp_beta = torch.exp(-beta)
        sums = _local(moments * gibbs.unsqueeze(1), exp_beta)  # (N, 2, C, H, W)
        grad = -eps + _dot(exp_alpha, sums[:, 0])
        hess = (-_dot(exp_alpha, sums[:, 1])).clamp_max(-1e-300)
        delta = grad / hess
        step = torch.ones_like(psi)
        for _ in range(8):  # halve the Newton step where it would make psi negative
            negative = psi - step * delta < 0
            if not negative.any():
                break
            step = torch.where(negative, step / 2, step)
        previous, psi = psi, (psi - step * delta).clamp_min(0)
        if bool(((psi - previous).abs() <= tolerance * (1 + psi.abs())).all()):
            break
    gibbs = torch.exp(-psi.view(-1, 1, 1) * cost - 1)
    alpha = _local(gibbs, torch.exp(-beta)).clamp_min(1e-300).log() - log_a
    w = torch.exp(-beta) * _local(gibbs, torch.exp(-alpha))  # where the plan delivers: transportable exactly
    return (w * scale).to(dtype), SinkhornState(beta, psi)
