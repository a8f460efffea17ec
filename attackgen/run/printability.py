"""Printability as the literature states it, measured on what is printed: the pixels an attack changed.

- Non-printability score (Sharif, Bhagavatula, Bauer, Reiter 2016, Accessorize to a crime, CCS; reused by
  RP2, Eykholt et al. 2018, arXiv:1707.08945): for each printed pixel p, the product over the printer's
  colours c of ||p - c||_2, averaged over the printed pixels. 0 exactly when every printed pixel is a
  colour of the set.
- Total variation (Sharif et al. 2016): sum over pixels of sqrt((p[i,j] - p[i+1,j])^2 + (p[i,j] - p[i,j+1])^2)
  (channels summed inside the root), over neighbour pairs that are both printed, divided by the number of
  printed pixels so that the bound does not grow with the artefact's area. Smooth artefacts survive the
  printer and the camera; high-frequency ones do not.
- The colour set: the printer's colours; ``snap`` projects printed pixels onto it (the attacks' projection
  when a spec asks for a non-printability score of 0).

Printed pixels are those where any channel of the candidate differs from the clean input by more than
``tol``: the patch or sticker region, or the whole image for a printed photo. Used by the attacks (as a
penalty and a projection) and by verification (``attackgen.run.verify.bounds.PrintabilityBound``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor


def palette_of(colours: Sequence[Sequence[float]] | None, channels: int, bounds: tuple[float, float]) -> Tensor:
    """The printer's colours (K, C): as stated, or the corners of the 10-90 % cube of the input range (a printer
    reaches neither pure black nor pure white): 8 colours for RGB, 2 for grey."""
    if colours:
        palette = torch.tensor([list(c) for c in colours], dtype=torch.float32)
        if palette.shape[1] != channels:
            raise ValueError(f"the printer colours have {palette.shape[1]} channels; the input has {channels}")
        return palette
    lo, hi = bounds
    levels = (lo + 0.1 * (hi - lo), lo + 0.9 * (hi - lo))
    return torch.tensor(list(itertools.product(levels, repeat=channels)), dtype=torch.float32)


def printed(x: Tensor, candidate: Tensor, tol: float) -> Tensor:
    """(N, H, W) bool: the pixels the candidate changed in any channel."""
    return ((candidate - x).abs() > tol).any(dim=1)


def nps(candidate: Tensor, region: Tensor, palette: Tensor) -> Tensor:
    """(N,) float64 non-printability score of the printed pixels (0 where nothing is printed)."""
    pixels = candidate.permute(0, 2, 3, 1).double()  # (N, H, W, C)
    dist = torch.cdist(pixels.flatten(1, 2), palette.to(pixels)[None].expand(len(pixels), -1, -1))  # (N, HW, K)
    per_pixel = dist.prod(dim=2) * region.flatten(1).to(dist)
    return per_pixel.sum(dim=1) / region.flatten(1).sum(dim=1).clamp_min(1).to(dist)


def tv(candidate: Tensor, region: Tensor) -> Tensor:
    """(N,) float64 total variation per printed pixel (pairs where both pixels are printed)."""
    c = candidate.double()
    dh = (c[:, :, 1:, :-1] - c[:, :, :-1, :-1]) ** 2  # vertical neighbour
    dw = (c[:, :, :-1, 1:] - c[:, :, :-1, :-1]) ** 2  # horizontal neighbour
    both = region[:, :-1, :-1] & region[:, 1:, :-1] & region[:, :-1, 1:]
    total = (((dh + dw).sum(dim=1) + 1e-12).sqrt() * both).flatten(1).sum(dim=1)  # eps: finite gradient at 0
    return total / region.flatten(1).sum(dim=1).clamp_min(1).double()


def snap(x: Tensor, candidate: Tensor, palette: Tensor, tol: float) -> Tensor:
    """The candidate with each printed pixel replaced by its nearest printer colour (projection onto the set)."""
    region = printed(x, candidate, tol)
    pixels = candidate.permute(0, 2, 3, 1)  # (N, H, W, C)
    pal = palette.to(candidate)
    nearest = pal[torch.cdist(pixels.flatten(1, 2), pal[None].expand(len(pixels), -1, -1)).argmin(dim=2)]
    nearest = nearest.view_as(pixels).permute(0, 3, 1, 2)
    return torch.where(region[:, None], nearest, candidate)


def in_printer_colours(x: Tensor, candidate: Tensor, colours: Sequence[Sequence[float]] | None,
                       bounds: tuple[float, float]) -> Tensor:
    """The candidate's printed pixels projected onto the printer's colours (the stated set, else the default)."""
    return snap(x, candidate, palette_of(colours, x.shape[1], bounds), 1e-6 * (bounds[1] - bounds[0]))
