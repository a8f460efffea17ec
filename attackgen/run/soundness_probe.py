"""Soundness probes on a model (torch): masked gradients and randomness, before trusting a robustness number.

The executor calls :func:`probe_model` at the end of every run; the checks follow AutoAttack's
``checks.py`` (zero gradients, randomised forward pass, probabilities instead of logits) and Carlini
et al. 2019, "On Evaluating Adversarial Robustness" (arXiv:1902.06705), sections 4.6 and 5.

The probe never changes the model's mode (train/eval) or its parameters, and needs only a small batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attackgen.results import Flag

MAX_INPUTS = 64
FORWARD_PASSES = 3
ZERO_FRACTION = 0.10  # "many inputs": at least this share of the probed inputs
RANDOM_RTOL = 1e-4  # outputs of identical calls may differ by this much (relative to their scale)

FIX_MASKING = (
    "gradient masking: do not trust gradient attacks alone. Add a gradient-free attack (square_linf, "
    "hopskipjump) to the plan, replace non-differentiable layers by a differentiable approximation in "
    "the backward pass (BPDA, Athalye et al. 2018), and use a margin loss (CW/DLR) instead of "
    "cross-entropy"
)
FIX_RANDOM = (
    "attack the expectation: average gradients over the randomness (EOT, about 20 samples per step; "
    "AutoAttack version='rand'), and report accuracy averaged over several passes; or evaluate the "
    "deterministic model (model.eval(), fixed seeds)"
)
FIX_PROBS = (
    "pass logits, not probabilities (drop the final softmax), or use a margin loss on log-probabilities; "
    "cross-entropy on saturated probabilities has vanishing gradients"
)


def margin_loss(outputs: Tensor, labels: Tensor) -> Tensor:
    """Per-input CW margin z_y - max_{j != y} z_j (what an untargeted attacker minimises); never saturates."""
    true = outputs.gather(1, labels.view(-1, 1)).squeeze(1)
    others = outputs.clone()
    others.scatter_(1, labels.view(-1, 1), float("-inf"))
    return true - others.amax(dim=1)


def _pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100.0 * n / max(total, 1):.0f}%)"


def _first_output(outputs: Any) -> Tensor | None:
    """The tensor to compare for a model that returns a tensor, a tuple/list or a dict of tensors."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], Tensor):
        return outputs[0]
    if isinstance(outputs, dict):
        for value in outputs.values():
            if isinstance(value, Tensor):
                return value
    return None


def check_randomness(model: nn.Module, x: Tensor, passes: int = FORWARD_PASSES) -> list[Flag]:
    """Flag a model whose output changes between identical calls (dropout left on, random defences)."""
    with torch.no_grad():
        maybe = [_first_output(model(x)) for _ in range(max(passes, 2))]
    outs = [o for o in maybe if o is not None]
    if len(outs) < len(maybe):
        return []
    first = outs[0].detach().float()
    if not bool(torch.isfinite(first).all()):
        bad = int((~torch.isfinite(first.flatten(1))).any(dim=1).sum()) if first.dim() > 1 else 1
        return [
            Flag(
                check="nonfinite_outputs",
                severity="error",
                evidence=f"the model returns NaN or inf on {_pct(bad, first.shape[0])} clean inputs",
                fix="fix the model or the input range before attacking it; every loss and success test on "
                "these inputs is meaningless",
            )
        ]
    scale = float(first.abs().max()) if first.numel() else 0.0
    diff = max(float((o.float() - first).abs().max()) for o in outs[1:])
    if diff <= RANDOM_RTOL * (1.0 + scale):
        return []
    changed = ""
    if first.dim() == 2:
        labels = [o.argmax(dim=1) for o in outs]
        n_changed = int(torch.stack([(lab != labels[0]) for lab in labels[1:]]).any(dim=0).sum())
        changed = f"; the top-1 label changed on {_pct(n_changed, first.shape[0])} inputs"
    return [
        Flag(
            check="randomized_output",
            severity="warning",
            evidence=f"{len(outs)} identical forward passes on {first.shape[0]} inputs differ by up to "
            f"{diff:.3g} (output scale {scale:.3g}){changed}",
            fix=FIX_RANDOM,
        )
    ]


def check_probabilities(outputs: Tensor) -> list[Flag]:
    """AutoAttack's softmax check: 2-D outputs in [0, 1] whose rows sum to 1 are probabilities, not logits."""
    if outputs.dim() != 2 or outputs.shape[1] < 2 or not bool(torch.isfinite(outputs).all()):
        return []
    inside = bool(((outputs >= 0) & (outputs <= 1)).all())
    sums = outputs.sum(dim=1)
    if inside and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
        return [
            Flag(
                check="probability_outputs",
                severity="warning",
                evidence=f"the model's outputs lie in [0, 1] and every row of {outputs.shape[1]} sums to 1: "
                "they are probabilities",
                fix=FIX_PROBS,
            )
        ]
    return []


def check_gradients(model: nn.Module, x: Tensor, y: Tensor | None, objective: Any = None) -> list[Flag]:
    """Flag zero or non-finite input gradients of the attack loss on many inputs (masked gradients).

    The loss is ``objective.loss(outputs)`` when an objective is given (per-input, what the attack
    minimises), else the margin loss of a classifier against ``y``. Inputs the objective already counts as
    successful are left out: a clamped loss is rightly flat there.
    """
    x_req = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        outputs = _first_output(model(x_req))
        if outputs is None:
            return []
        keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        if objective is not None:
            loss = objective.loss(outputs)
            try:
                keep = ~objective.success(outputs.detach()).to(x.device).bool().view(-1)
            except Exception:  # an objective without a usable success test: probe every input
                keep = torch.ones_like(keep)
        elif y is not None and outputs.dim() == 2:
            labels = y.to(outputs.device).long().view(-1)
            loss = margin_loss(outputs, labels)
            keep = (outputs.detach().argmax(dim=1) == labels).to(x.device)  # misclassified: nothing to attack
        else:
            loss = outputs.flatten(1).sum(dim=1)
        total = int(keep.sum())
        if total == 0:
            return []
        grad = None
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), x_req, allow_unused=True)
    what = "the objective's loss" if objective is not None else "the margin loss"
    if grad is None:
        return [
            Flag(
                check="zero_gradients",
                severity="error",
                evidence=f"{what} does not depend differentiably on the input: no gradient reaches it "
                f"({total} inputs probed; the forward pass detaches or runs under no_grad)",
                fix=FIX_MASKING,
            )
        ]
    flat = grad.detach().flatten(1)[keep]
    nonfinite = ~torch.isfinite(flat).all(dim=1)
    zero = (flat.abs().amax(dim=1) == 0) & ~nonfinite
    flags: list[Flag] = []
    n_nonfinite, n_zero = int(nonfinite.sum()), int(zero.sum())
    if n_nonfinite:
        flags.append(
            Flag(
                check="nonfinite_gradients",
                severity="error",
                evidence=f"input gradients of {what} are NaN or inf on {_pct(n_nonfinite, total)} of the "
                "probed inputs",
                fix="a numerically unstable layer or loss (log of 0, division): " + FIX_MASKING,
            )
        )
    if n_zero and n_zero >= ZERO_FRACTION * total:
        flags.append(
            Flag(
                check="zero_gradients",
                severity="error" if n_zero > total // 2 else "warning",
                evidence=f"input gradients of {what} are exactly zero on {_pct(n_zero, total)} of the "
                "probed inputs (a quantising, thresholding or otherwise non-differentiable layer)",
                fix=FIX_MASKING,
            )
        )
    return flags


def probe_model(model: nn.Module, x: Tensor, y: Tensor | None, objective: Any = None,
                randomness: list[Flag] | None = None) -> list[Flag]:
    """All probes on (at most 64 of) the clean inputs ``x`` with labels ``y``; returns the flags raised.

    ``objective`` is the run's :class:`attackgen.run.objectives.base.Objective` (its ``loss`` is what the
    attacks minimise); without one, a classifier's margin loss against ``y`` is probed. The model's mode
    and parameters are left as they are; parameter gradients are not touched. ``randomness``: the flags of
    :func:`check_randomness` on the same inputs when the run probed it already (before its attacks).
    """
    if x.shape[0] > MAX_INPUTS:
        x = x[:MAX_INPUTS]
        y = y[:MAX_INPUTS] if y is not None else None
        if objective is not None:
            objective = objective.subset(torch.arange(MAX_INPUTS, device=x.device))
    flags = list(randomness) if randomness is not None else check_randomness(model, x)
    with torch.no_grad():
        outputs = _first_output(model(x))
    if outputs is not None:
        flags += check_probabilities(outputs.float())
    from attackgen.models.onnx import find_oracle_only

    if find_oracle_only(model) is None:  # ONNX Runtime and endpoints have no gradients to probe (black-box only)
        flags += check_gradients(model, x, y, objective)  # autograd.grad w.r.t. x only: no parameter .grad written
    return flags
