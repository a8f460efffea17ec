"""Expectation over Transformation (Athalye et al. 2018, arXiv:1707.07397): the transformation sampler.

A physical attack must survive what happens between the attacker and the camera: where the sticker
lands, its rotation, its distance (scale), the lighting and the sensor noise. ``EOTSampler`` draws
those transformations from the spec's ``capability.transformations`` and applies them with
``F.affine_grid`` / ``F.grid_sample`` (pure torch, differentiable in the image content):

- ``render_patch`` places a square patch on a batch of images under random location, rotation and
  scale, lit and noised; pixels outside the rendered square are left exactly as they were;
- ``transform`` applies the same family of transformations to whole images (EOT for full-image
  perturbations).

Geometry is in pixels: a rotation of theta degrees turns the patch about its centre, a scale s
multiplies its side, and ``translate`` is the largest shift as a fraction of the image side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taxonomy.errors import AttackgenError


@dataclass(frozen=True)
class TransformParams:
    """One transformation per image of a batch (all shape (N,))."""

    angle: Tensor  # radians
    scale: Tensor
    cx: Tensor  # centre, pixels from the left edge (patch) or shift in pixels (whole image)
    cy: Tensor
    brightness: Tensor  # additive, input units
    noise_std: float


class EOTSampler:
    """Draws transformations from the spec's distribution; seeded through the generator it is given."""

    def __init__(
        self,
        rotation_deg: tuple[float, float] = (-20.0, 20.0),
        scale: tuple[float, float] = (0.9, 1.1),
        translate: float = 0.1,
        brightness: tuple[float, float] = (-0.1, 0.1),
        noise_std: float = 0.02,
        samples: int = 8,
    ) -> None:
        where = "threat.capability.transformations"
        for name, (lo, hi) in (("rotation_deg", rotation_deg), ("scale", scale), ("brightness", brightness)):
            if lo > hi:
                raise AttackgenError(f"{where}.{name}: the lower end {lo} is above the upper end {hi}")
        if scale[0] <= 0:
            raise AttackgenError(f"{where}.scale: must stay above 0, got {scale}")
        if not 0.0 <= translate <= 1.0:
            raise AttackgenError(f"{where}.translate: must lie in [0, 1], got {translate}")
        if noise_std < 0 or samples < 1:
            raise AttackgenError(f"{where}: noise_std must be >= 0 and samples >= 1")
        self.rotation_deg = (float(rotation_deg[0]), float(rotation_deg[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.translate = float(translate)
        self.brightness = (float(brightness[0]), float(brightness[1]))
        self.noise_std = float(noise_std)
        self.samples = int(samples)

    @classmethod
    def from_spec(cls, transformations: Any | None) -> EOTSampler:
        """From a taxonomy ``Transformations`` model, a mapping with its fields, or None (the defaults)."""
        if transformations is None:
            return cls()
        if isinstance(transformations, cls):
            return transformations
        if hasattr(transformations, "model_dump"):
            transformations = transformations.model_dump()
        if not isinstance(transformations, Mapping):
            raise AttackgenError(f"threat.capability.transformations: expected a mapping, got {transformations!r}")
        known = {"rotation_deg", "scale", "translate", "brightness", "noise_std", "samples"}
        unknown = set(transformations) - known
        if unknown:
            raise AttackgenError(f"threat.capability.transformations: unknown fields {sorted(unknown)}")
        given: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in transformations.items()}
        return cls(**given)

    @classmethod
    def identity(cls) -> EOTSampler:
        """No transformation at all (digital feed): fixed angle, scale 1, no light change, no noise."""
        return cls((0.0, 0.0), (1.0, 1.0), 0.0, (0.0, 0.0), 0.0, 1)

    # ------------------------------------------------------------------ sampling

    @staticmethod
    def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)

    def sample(
        self,
        n: int,
        gen: torch.Generator,
        device: torch.device,
        centre_range: tuple[tuple[float, float], tuple[float, float]] | None = None,
        scale: tuple[float, float] | None = None,
    ) -> TransformParams:
        """n transformations. ``centre_range`` ((x_lo, x_hi), (y_lo, y_hi)) in pixels draws a patch centre
        there; without it cx, cy are whole-image shifts within +-translate (in fractions of the side)."""
        lo, hi = self.rotation_deg
        angle = self._uniform(n, lo, hi, gen, device) * (math.pi / 180.0)
        s_lo, s_hi = scale or self.scale
        scale_t = self._uniform(n, s_lo, s_hi, gen, device)
        if centre_range is None:
            cx = self._uniform(n, -self.translate, self.translate, gen, device)
            cy = self._uniform(n, -self.translate, self.translate, gen, device)
        else:
            (x_lo, x_hi), (y_lo, y_hi) = centre_range
            cx = self._uniform(n, x_lo, x_hi, gen, device)
            cy = self._uniform(n, y_lo, y_hi, gen, device)
        b_lo, b_hi = self.brightness
        brightness = self._uniform(n, b_lo, b_hi, gen, device)
        return TransformParams(angle, scale_t, cx, cy, brightness, self.noise_std)

    # ------------------------------------------------------------------ rendering

    def render_patch(
        self,
        x: Tensor,
        patch: Tensor,
        side: float,
        params: TransformParams,
        gen: torch.Generator | None,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> tuple[Tensor, Tensor]:
        """Paste ``patch`` (C, P, P) onto every image of x (N, C, H, W); returns (x_patched, region).

        The patch is drawn as a square of ``side * scale`` pixels centred at (cx, cy), rotated by angle;
        its content is resampled bilinearly (differentiable in ``patch``), lit by the brightness offset
        and noised. ``region`` (N, 1, H, W) is 1 on the pixels the patch replaced; every other pixel of
        the result equals x exactly.
        """
        n, _, height, width = x.shape
        grid = _patch_grid(params, side, height, width, x.dtype)
        content = F.grid_sample(patch.unsqueeze(0).expand(n, -1, -1, -1), grid, mode="bilinear",
                                padding_mode="border", align_corners=False)
        ones = torch.ones((n, 1, *patch.shape[1:]), dtype=x.dtype, device=x.device)
        cover = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        region = (cover > 0.5).to(x.dtype)
        content = content + params.brightness.view(-1, 1, 1, 1)
        if params.noise_std > 0 and gen is not None:
            content = content + params.noise_std * torch.randn(content.shape, generator=gen, device=x.device,
                                                               dtype=x.dtype)
        content = content.clamp(*bounds)
        return x * (1 - region) + content * region, region

    def transform(self, x: Tensor, params: TransformParams, gen: torch.Generator | None,
                  bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
        """Whole-image EOT: rotate, scale and shift each image (zeros padding = bounds[0]), then light and noise."""
        theta = _view_theta(params, x.shape[2], x.shape[3], x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x - bounds[0], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + bounds[0] + params.brightness.view(-1, 1, 1, 1)
        if params.noise_std > 0 and gen is not None:
            out = out + params.noise_std * torch.randn(out.shape, generator=gen, device=x.device, dtype=x.dtype)
        return out.clamp(*bounds)


    @staticmethod
    def to_input_frame(outputs: Any, params: TransformParams, height: int, width: int) -> Any:
        """A model's outputs on transformed views, mapped back into the frame of the untransformed input, so a
        dense objective compares them with references drawn on the input: score maps (N, C, h, w) are resampled
        through the inverse transformation (edges replicated), detection boxes have their corners mapped back
        (the box around them, clipped to the image). Class scores (N, C) are returned as they are."""
        if isinstance(outputs, Tensor):
            if outputs.dim() != 4:
                return outputs
            theta = _view_theta(params, height, width, outputs.dtype)
            inverse = torch.linalg.inv(torch.cat([theta, _last_row(theta)], dim=1))[:, :2]
            grid = F.affine_grid(inverse, list(outputs.shape), align_corners=False)
            return F.grid_sample(outputs, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict) and "boxes" in outputs[0]:
            theta = _view_theta(params, height, width, outputs[0]["boxes"].dtype)
            mapped = []
            for i, item in enumerate(outputs):
                boxes = item["boxes"]
                if boxes.numel() == 0:
                    mapped.append(item)
                    continue
                x0, y0, x1, y1 = boxes.unbind(dim=1)
                corners = torch.stack([torch.stack([x0, y0], 1), torch.stack([x1, y0], 1), torch.stack([x0, y1], 1),
                                       torch.stack([x1, y1], 1)], dim=1)  # (K, 4, 2) in view pixels
                scale = corners.new_tensor([width, height])
                norm = corners / scale * 2 - 1
                back = norm @ theta[i, :, :2].T + theta[i, :, 2]  # view -> input, as grid_sample reads it
                pix = (back + 1) / 2 * scale
                lo = pix.amin(dim=1)
                hi = pix.amax(dim=1)
                box = torch.cat([lo[:, :1].clamp(0, width), lo[:, 1:].clamp(0, height),
                                 hi[:, :1].clamp(0, width), hi[:, 1:].clamp(0, height)], dim=1)
                mapped.append({**item, "boxes": box})
            like = getattr(outputs, "_like", None)
            return like(mapped) if like is not None else mapped
        return outputs


def _view_theta(params: TransformParams, height: int, width: int, dtype: torch.dtype) -> Tensor:
    """(N, 2, 3) affine_grid matrices of whole-image views: each view pixel's place in the input (normalised)."""
    n = params.angle.shape[0]
    cos, sin = torch.cos(params.angle), torch.sin(params.angle)
    aspect = height / width
    theta = torch.zeros(n, 2, 3, dtype=dtype, device=params.angle.device)
    # output -> input sampling: inverse rotation and scale, in a square-pixel frame.
    theta[:, 0, 0] = cos / params.scale
    theta[:, 0, 1] = sin / params.scale * aspect
    theta[:, 1, 0] = -sin / params.scale / aspect
    theta[:, 1, 1] = cos / params.scale
    theta[:, 0, 2] = -2 * params.cx
    theta[:, 1, 2] = -2 * params.cy
    return theta


def _last_row(theta: Tensor) -> Tensor:
    row = torch.zeros(theta.shape[0], 1, 3, dtype=theta.dtype, device=theta.device)
    row[:, 0, 2] = 1
    return row


def _patch_grid(params: TransformParams, side: float, height: int, width: int, dtype: torch.dtype) -> Tensor:
    """affine_grid mapping each output pixel (image frame) to the patch's normalised frame.

    With align_corners=False, image pixel p_pix = (p_norm + 1) / 2 * (W, H); the patch frame is
    q_norm = 2 / (side * s) * R(-angle) (p_pix - c).
    """
    n = params.angle.shape[0]
    cos, sin = torch.cos(params.angle), torch.sin(params.angle)
    k = 2.0 / (side * params.scale)
    half_w, half_h = width / 2.0, height / 2.0
    # R(-a) = [[cos, sin], [-sin, cos]]
    a11, a12 = k * cos * half_w, k * sin * half_h
    a21, a22 = -k * sin * half_w, k * cos * half_h
    dx, dy = half_w - params.cx, half_h - params.cy
    theta = torch.stack(
        [
            torch.stack([a11, a12, k * (cos * dx + sin * dy)], dim=1),
            torch.stack([a21, a22, k * (-sin * dx + cos * dy)], dim=1),
        ],
        dim=1,
    ).to(dtype)
    return F.affine_grid(theta, [n, 1, height, width], align_corners=False)
