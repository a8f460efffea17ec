"""Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004), differentiable, per input.

One implementation for the whole project: the SSIM-constrained attack optimises it, the executor
reports it for every adversarial input. It follows scikit-image's ``structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``: a Gaussian window, constants
K1 = 0.01 and K2 = 0.03 of the data range, and the mean SSIM over the positions where the whole window
fits inside the image (borders cropped), averaged over channels. The window shrinks (odd, at least 3)
on images smaller than it, so 8x8 and 16x16 inputs work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g)
    return window.expand(channels, 1, size, size).contiguous()


def ssim(
    x: Tensor, y: Tensor, data_range: float = 1.0, window: int = 7, sigma: float = 1.5, truncate: bool = True
) -> Tensor:
    """Per-input SSIM of two (N, C, H, W) batches, shape (N,); differentiable in both.

    ``window`` is the side of the Gaussian window (scikit-image uses 2 * round(3.5 * sigma) + 1 = 11
    for sigma 1.5 with ``truncate=3.5``; 7 keeps more valid positions on 16x16 inputs). ``truncate``
    crops the border positions where the window would leave the image, as scikit-image does.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) tensors of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    channels, height, width = x.shape[1:]
    size = min(window, height, width)
    if size % 2 == 0:
        size -= 1
    size = max(size, 1)
    w = _gaussian_window(size, sigma, channels, x)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    pad = 0 if truncate else size // 2

    def filt(t: Tensor) -> Tensor:
        if pad:
            t = F.pad(t, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(t, w, groups=channels)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(dim=1)


@torch.no_grad()
def ssim_batched(x: Tensor, y: Tensor, data_range: float = 1.0, batch_size: int = 1024) -> Tensor:
    """SSIM without gradients, in chunks (for reports over many inputs)."""
    parts = [ssim(x[i : i + batch_size], y[i : i + batch_size], data_range) for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else x.new_zeros(0)
