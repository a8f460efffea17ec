"""Adversarial patch with EOT (Brown et al. 2017, arXiv:1712.09665).

The patch is a square of pixels that *replaces* the image where it lands (visible by design; its
imperceptibility is the small area, rule D8). It is trained once on the fitting split to make every
input the target class (or any wrong class), in expectation over where and how it lands:

    min_P  E_{x ~ X, t ~ T} [ loss(f(A(P, x, t))) ] + tv_weight * TV(P) + nps_weight * NPS(P)

A is ``EOTSampler.render_patch``: location (anywhere the patch fits, or a fixed corner with the spec's
``translate`` jitter), rotation, scale, brightness and noise from ``capability.transformations``; T is
sampled ``samples`` times per input and step. TV is the total variation (smooth patches print and
photograph better, Sharif et al. 2016); NPS is the non-printability score against a palette of
printable colours (Sharif et al. 2016), on when ``capability.printability`` is set.

Area: the patch side (floored to whole pixels) is chosen so that at the largest scale it covers at
most ``area_fraction`` of the image; any rendering that still exceeds it (pixel rounding under
rotation) is shrunk until it fits, so every applied patch, and the ``region`` mask returned with it,
stays within the promised area.

Where the executor gives a ``Budget.mask`` (the spec's ``capability.spatial`` of kind patch: one
square per input, at a seeded random place or a fixed one), the patch is fitted for that placement
(random anywhere, or the fixed square with the spec's translate jitter) and applied inside each
input's square, clipped to it: nothing outside the mask changes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks.base import AttackEnv, AttackOutput, Budget, UniversalAttack
from attackgen.run.attacks.transfer import model_handle
from attackgen.run.eot import EOTSampler, TransformParams
from attackgen.run.objectives.base import Objective
from attackgen.run.printability import in_printer_colours, palette_of
from taxonomy.errors import AttackgenError
from taxonomy.params import PatchParams

# ---------------------------------------------------------------------- regularisers


def total_variation(patch: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels (anisotropic TV), a scalar."""
    dh = (patch[..., 1:, :] - patch[..., :-1, :]).abs().mean()
    dw = (patch[..., :, 1:] - patch[..., :, :-1]).abs().mean()
    return dh + dw


def non_printability(patch: Tensor, palette: Tensor) -> Tensor:
    """Sharif et al. 2016: mean over pixels of the product of distances to each printable colour."""
    pixels = patch.flatten(1).t()  # (P*P, C)
    dist = torch.cdist(pixels, palette.to(patch))  # (P*P, K)
    return dist.clamp_min(1e-6).log().sum(dim=1).exp().mean()


# ---------------------------------------------------------------------- the attack


def _mask4(mask: Tensor) -> Tensor:
    """A mask as (N or 1, 1, H, W) float 0/1: a pixel may change when any channel allows it."""
    m = mask.detach() != 0
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m.any(dim=0)[None, None]
    else:
        m = m.any(dim=1, keepdim=True)
    return m.float()


def mask_boxes(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per mask: the centre (cx, cy) of its bounding box in pixels and the box's shorter side, shape (N,)."""
    m = _mask4(mask)[:, 0] != 0
    height, width = m.shape[-2:]
    rows, cols = m.any(dim=2), m.any(dim=1)  # (N, H), (N, W)
    ar_h = torch.arange(height, device=m.device)
    ar_w = torch.arange(width, device=m.device)
    top = torch.where(rows, ar_h, height).amin(dim=1)
    bottom = torch.where(rows, ar_h + 1, 0).amax(dim=1)
    left = torch.where(cols, ar_w, width).amin(dim=1)
    right = torch.where(cols, ar_w + 1, 0).amax(dim=1)
    side = torch.minimum(bottom - top, right - left).clamp_min(1)
    return (left + right).float() / 2, (top + bottom).float() / 2, side.float()


class AdversarialPatch(UniversalAttack[PatchParams]):
    """A square patch, trained with EOT over placement, rotation, scale, brightness and noise.

    Parameters: ``area_fraction`` (0.05; the planner passes the spec's ``capability.spatial``),
    ``placement`` ("random" anywhere / "fixed" at ``location``; a mask from the executor decides),
    ``location`` (top-left corner as fractions of width and height, as in the spec; default centred),
    ``transformations`` (the EOT distribution, the spec's ``capability.transformations``; default:
    none, a digital patch),
    ``eot_samples`` (per input and step; default the distribution's ``samples``), ``steps`` (500),
    ``stepsize`` (Adam learning rate in input units, 0.01), ``batch_size`` (32), ``tv_weight`` (0.01),
    ``printability`` (False) with ``nps_weight`` (0.01) and ``palette`` ((K, C) printable colours).
    """

    access = "gradients"
    params_model = PatchParams

    def __init__(self, seed: int = 0, **params: Any) -> None:
        super().__init__(seed, **params)  # area_fraction, placement and location are checked by PatchParams
        self.area_fraction = self.params.area_fraction
        self.placement = self.params.placement
        spec_tf = self.params.transformations
        self.sampler = EOTSampler.identity() if spec_tf is None else EOTSampler.from_spec(spec_tf)
        self.location: tuple[float, float] | None = self.params.location

    def fixed_centre(self, height: int, width: int, side: float) -> tuple[float, float]:
        """Centre in pixels of the fixed patch: its top-left corner at ``location`` (fractions), or centred."""
        if self.location is None:  # the executor's centred square: corner at (size - side) // 2
            return (width - side) // 2 + side / 2, (height - side) // 2 + side / 2
        return self.location[0] * width + side / 2, self.location[1] * height + side / 2

    # -------------------------------------------------------------- geometry

    def geometry(self, shape: tuple[int, ...], box_side: float | None = None) -> tuple[int, float, int]:
        """(patch resolution P, nominal side in pixels, largest area in pixels) for inputs of ``shape``.

        The nominal side is what the patch measures at scale 1: small enough that at the largest scale
        it still fits the area budget, or the mask's square (``box_side``; the mask then bounds the
        area, since every rendering is clipped to it).
        """
        height, width = shape[-2:]
        if box_side is None:
            max_pixels = self.area_fraction * height * width
            limit, field = math.sqrt(max_pixels), f"spatial.area_fraction: {self.area_fraction} of"
        else:
            max_pixels, limit, field = float(height * width), box_side, f"spatial: a {box_side:g}-pixel square in"
        side = limit / max(1.0, self.sampler.scale[1])
        if side < 1.0 - 1e-9:
            raise AttackgenError(
                f"threat.capability.{field} a {height}x{width} input at scale up to {self.sampler.scale[1]} "
                f"leaves a patch side of {side:.2f} pixels; a patch needs at least one pixel (enlarge the patch "
                "or lower transformations.scale)"
            )
        whole = max(1, math.floor(side + 1e-9))  # floored: a rounded-up side would overshoot the area
        return whole, float(whole), math.floor(max_pixels + 1e-6)

    def _centres(self, shape: tuple[int, ...], side: float,
                 fixed_at: tuple[float, float] | None) -> tuple[tuple[float, float], tuple[float, float]]:
        """Ranges the patch centre is drawn from: anywhere it fits, or around a fixed point +- translate."""
        height, width = shape[-2:]
        half = min(side * self.sampler.scale[1] / 2, height / 2, width / 2)
        if fixed_at is None:
            return (half, width - half), (half, height - half)
        jitter_x, jitter_y = self.sampler.translate * width, self.sampler.translate * height
        cx = min(max(fixed_at[0], half), width - half)
        cy = min(max(fixed_at[1], half), height - half)
        return ((max(half, cx - jitter_x), min(width - half, cx + jitter_x)),
                (max(half, cy - jitter_y), min(height - half, cy + jitter_y)))

    def _render(self, x: Tensor, patch: Tensor, side: float, params: TransformParams, gen: torch.Generator,
                budget: Budget, max_pixels: int, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Render, clip the region to the mask, and shrink any rendering over the area budget until it fits.

        Centres are snapped to the pixel grid (an upright patch of integer side then covers exactly
        side x side pixels instead of straddling a row and a column more). With an Linf epsilon in the
        budget, the change inside the region is clipped to it (a faint patch rather than a sticker).
        """
        bounds = budget.bounds
        whole = float(max(1, round(side)))
        params = TransformParams(params.angle, params.scale, torch.round(params.cx - whole / 2) + whole / 2,
                                 torch.round(params.cy - whole / 2) + whole / 2, params.brightness, params.noise_std)
        out, region = self.sampler.render_patch(x, patch, side, params, gen, bounds)
        for _ in range(30):
            if mask is not None:
                region = region * mask.to(region.dtype)
                out = x * (1 - region) + out * region
            over = region.flatten(1).sum(dim=1) > max_pixels
            if not bool(over.any()):
                break
            params = TransformParams(params.angle, torch.where(over, params.scale * 0.95, params.scale),
                                     params.cx, params.cy, params.brightness, params.noise_std)
            out, region = self.sampler.render_patch(x, patch, side, params, gen, bounds)
        if budget.norm == "inf" and budget.epsilon is not None:
            out = (x + (out - x).clamp(-budget.epsilon, budget.epsilon)).clamp(*bounds)
        return out, region

    # -------------------------------------------------------------- fit / apply

    def fit(
        self, access: Access, x_fit: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> Tensor:
        self.require_inputs(x_fit, "the patch")
        model = model_handle(access, env)
        height, width = x_fit.shape[-2:]
        fixed_at: tuple[float, float] | None = None
        box_side = None
        if budget.mask is not None:  # the executor's squares decide the placement and the size
            cx, cy, sides = mask_boxes(budget.mask)
            box_side = float(sides.min())
            if _mask4(budget.mask).shape[0] == 1:
                fixed_at = (float(cx[0]), float(cy[0]))
        resolution, side, max_pixels = self.geometry(tuple(x_fit.shape), box_side)
        if budget.mask is None and self.placement == "fixed":
            fixed_at = self.fixed_centre(height, width, side)
        self.side = side
        steps = self.params.steps
        lr = self.params.stepsize
        batch_size = self.params.batch_size
        samples = self.params.eot_samples or self.sampler.samples
        tv_weight = self.params.tv_weight
        nps_weight = self.params.nps_weight if self.params.printability else 0.0
        lo, hi = budget.bounds
        channels = x_fit.shape[1]
        palette = palette_of(self.params.palette, channels, budget.bounds).to(x_fit.device, x_fit.dtype)
        gen = self.generator(x_fit.device)
        patch = lo + (hi - lo) * torch.rand((channels, resolution, resolution), generator=gen, device=x_fit.device)
        patch.requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=lr * (hi - lo))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        centres = self._centres(tuple(x_fit.shape), side, fixed_at)
        n = x_fit.shape[0]
        for _ in range(steps):
            rows = torch.randint(0, n, (min(batch_size, n),), generator=gen, device=x_fit.device).repeat(samples)
            params = self.sampler.sample(rows.numel(), gen, x_fit.device, centres)
            x_p, _ = self._render(x_fit[rows], patch, side, params, gen, budget, max_pixels, None)
            loss = objective.subset(rows).loss(model(x_p, rows)).mean()
            if tv_weight:
                loss = loss + tv_weight * total_variation(patch)
            if nps_weight:
                loss = loss + nps_weight * non_printability(patch, palette)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            with torch.no_grad():
                patch.clamp_(lo, hi)
        self.fitted = patch.detach()
        return self.fitted

    def apply(self, x: Tensor, budget: Budget) -> Tensor:
        x_adv, _ = self.apply_with_region(x, budget)
        return x_adv

    @torch.no_grad()
    def apply_with_region(self, x: Tensor, budget: Budget, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """The patched inputs, each under one transformation from the distribution, and the regions.

        With a mask, each patch is centred on its input's square, sized to fit it at the largest scale,
        and clipped to it. Seeded (``seed``, default the attack's seed + 1) so evaluation is reproducible
        and differs from the draws seen while fitting.
        """
        if self.fitted is None:
            raise RuntimeError("fit the patch before applying it")
        gen = torch.Generator(device=x.device)
        gen.manual_seed(self.seed + 1 if seed is None else seed)
        n, _, height, width = x.shape
        patch = self.fitted.to(x.device, x.dtype)
        mask = _mask4(budget.mask).to(x.device) if budget.mask is not None else None
        if mask is not None:
            cx, cy, sides = mask_boxes(mask)
            _, side, max_pixels = self.geometry(tuple(x.shape), float(sides.min()))
            params = self.sampler.sample(n, gen, x.device, ((0.0, 0.0), (0.0, 0.0)))
            params = TransformParams(params.angle, params.scale, cx.expand(n).to(x.dtype).clone(),
                                     cy.expand(n).to(x.dtype).clone(), params.brightness, params.noise_std)
        else:
            _, side, max_pixels = self.geometry(tuple(x.shape))
            fixed_at = self.fixed_centre(height, width, side) if self.placement == "fixed" else None
            params = self.sampler.sample(n, gen, x.device, self._centres(tuple(x.shape), side, fixed_at))
        return self._render(x, patch, side, params, gen, budget, max_pixels, mask)

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if self.fitted is None:
            raise RuntimeError("a universal attack must be fitted before it is applied")
        x_adv, region = self.apply_with_region(x, budget)
        if self.params.snap_colours:  # printability bound max_nps 0: every printed pixel a printer colour
            x_adv = in_printer_colours(x, x_adv, self.params.palette, budget.bounds)
        return AttackOutput(x_adv, {"universal": True, "patch": True, "mask": region,
                                    "area_fraction": self.area_fraction})
