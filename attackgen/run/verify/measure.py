"""Re-measuring a perturbation and putting a candidate on the 8-bit grid: the numbers bounds check."""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.attacks.base import Budget

NORM_COLUMN = {"0": 0, "1": 1, "2": 2, "inf": 3}
"""Column of each Lp norm in the (N, 5) table that ``measure`` returns."""
SSIM_COLUMN = 4


def measure(x: Tensor, candidate: Tensor, span: float) -> Tensor:
    """(N, 5) float64: L0 (elements changed by more than 1e-6 of the range), L1, L2, Linf, SSIM."""
    delta = (candidate - x).flatten(1).double()
    out = torch.empty(x.shape[0], 5, dtype=torch.float64, device=x.device)
    out[:, 0] = (delta.abs() > 1e-6 * span).sum(dim=1).double()
    out[:, 1] = delta.abs().sum(dim=1)
    out[:, 2] = delta.norm(dim=1)
    out[:, 3] = delta.abs().amax(dim=1) if delta.shape[1] else 0.0
    if x.dim() == 4:
        from attackgen.run.ssim import ssim

        with torch.no_grad():
            out[:, 4] = ssim(x.float(), candidate.float(), data_range=span).double()
    else:
        out[:, 4] = float("nan")
    return out


def quantize(candidate: Tensor, x: Tensor, budget: Budget) -> Tensor:
    """Round the changed elements to the 8-bit grid of the bounds; for Linf, never past epsilon."""
    lo, hi = budget.bounds
    step = (hi - lo) / 255.0
    q = lo + torch.round((candidate - lo) / step) * step
    if budget.norm == "inf" and budget.epsilon is not None:
        upper = torch.clamp(x + budget.epsilon, max=hi)
        lower = torch.clamp(x - budget.epsilon, min=lo)
        q = torch.where(q > upper, q - step, q)
        q = torch.where(q < lower, q + step, q)
    changed = (candidate - x).abs() > 1e-6 * (hi - lo)
    return torch.where(changed, q, x).clamp(lo, hi)
