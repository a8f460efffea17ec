"""The Python API: evaluate a model in a notebook or script, the way AutoAttack users call
``AutoAttack(model, norm='Linf', eps=8/255).run_standard_evaluation(x, y)``.

``evaluate`` is ``attackgen plan`` + ``attackgen run --save-adversarial`` in one call: the same spec
checks, planner, presets and rules, the same executor (access objects, query budgets, verification of
every success on the final clipped input, soundness flags, escalation), and a run folder (temporary
unless ``out`` is given). Nothing here attacks or judges on its own; it only builds the inputs of those
parts and reads back what the run wrote, so the API cannot report what the CLI would not.
"""

from __future__ import annotations

import math
import numbers
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attackgen.results import Escalation, Flag, RunResult
from taxonomy.errors import AttackgenError

__all__ = ["ArgumentError", "Evaluation", "PlanError", "evaluate"]


class ArgumentError(AttackgenError, ValueError):
    """An argument of ``evaluate`` is malformed; ``argument`` names it."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"evaluate({argument}=...): {message}")


class PlanError(AttackgenError):
    """The spec (or preset) has no plan: infeasible by rule, or a gap no implemented attack fills."""


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate`` measured. Every figure comes from the run's results.json (``result``); x_adv and
    success from its adversarial.npz."""

    clean_accuracy: float
    robust_accuracy: float  # per-input worst case over the plan (and escalation), at the headline epsilon
    x_adv: Tensor = field(repr=False)  # per input: first verified success (final, clipped), else x; x's dtype, device
    success: Tensor = field(repr=False)  # bool per input: x_adv is a verified success (False: misclassified clean)
    per_attack: dict[str, int]  # attack id -> inputs it broke (verified; each input counts for one item only)
    flags: tuple[Flag, ...]  # soundness checks that fired, with evidence and fix
    escalation: Escalation | None  # robust accuracy before/after adaptive escalation (None: nothing called for it)
    complete: bool
    incomplete_reason: str | None  # why the figures cover less than every input (None when complete)
    run_folder: Path | None  # the run folder when ``out`` was given (else it was temporary and is gone)
    plan: tuple[str, ...]  # the plan's items as "attack eps=..." in run order
    result: RunResult = field(repr=False)  # the whole results.json

    def summary(self) -> str:
        """A few readable lines: accuracies, the attacks that broke inputs, escalation, flags."""
        n = self.result.n_inputs
        headline = self.result.metrics.get("headline_epsilon")
        at = f" at epsilon {headline:g}" if headline else ""
        lines = [f"{n} inputs: clean accuracy {100 * self.clean_accuracy:.1f}%, robust accuracy{at} "
                 f"{100 * self.robust_accuracy:.1f}% ({int(self.success.sum())} verified adversarial inputs)"]
        if not self.complete:
            lines.append(f"partial: {self.incomplete_reason}")
        lines.append("plan: " + ", ".join(self.plan))
        broke = [f"{attack} {count}" for attack, count in self.per_attack.items() if count]
        lines.append("broken by: " + (", ".join(broke) if broke else "none"))
        esc = self.escalation
        if esc is not None and esc.ran:
            lines.append(f"escalation: robust accuracy {100 * esc.robust_accuracy_before:.1f}% before, "
                         f"{100 * esc.robust_accuracy_after:.1f}% after ({len(esc.items)} item(s))")
        elif esc is not None and esc.disabled:
            lines.append(f"escalation: {esc.disabled}")
        lines += [f"{flag.severity} {flag.check}: {flag.evidence}" for flag in self.flags if flag.severity != "info"]
        if self.run_folder is not None:
            lines.append(f"run folder: {self.run_folder}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def evaluate(
    model: nn.Module | str,
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    *,
    epsilon: float | Sequence[float] | None = None,
    norm: str | float = "inf",
    preset: str | None = None,
    spec: str | Path | Mapping[str, Any] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    device: str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    out: str | Path | None = None,
    escalate: bool | None = None,
    progress: bool = False,
    resume: bool = False,
    force: bool = False,
) -> Evaluation:
    """Attack ``model`` on (x, y) under a threat model and return the verified figures and adversarial inputs.

    Without ``spec``: a white-box, untargeted, individual, digital-feed spec at ``epsilon`` (one value, or
    several for a robustness curve) in ``norm`` (inf, 2, 1, 0; "Linf"/"L2" too) within ``bounds``. With
    ``spec`` (a YAML/JSON path or a dict): that threat model, and epsilon/norm/bounds must be left out.
    ``preset``: an ``attackgen plan --preset`` name (e.g. autoattack-standard) instead of the planner.
    ``escalate``: None runs adaptive escalation except for preset plans (as ``attackgen run``).
    ``device``: None = where the model's parameters are (else x's device). The model is put in eval mode
    and moved there for the run; its training mode and requires_grad flags are restored afterwards.
    Raises AttackgenError subclasses (ArgumentError, PlanError, SpecError, RunError) with one clear message.
    """
    from attackgen.models.data import LabeledData
    from attackgen.models.trust import trusting
    from attackgen.run.executor import Executor, RunOptions

    x_t, y_t = _tensors(x, y)
    parsed, plan = _plan(spec, preset, epsilon, norm, bounds, _classes(model, x_t))
    if device is None:
        device = _device_of(model, x_t)
    if batch_size is not None and batch_size < 1:
        raise ArgumentError("batch_size", f"{batch_size}: expected a positive number of inputs per batch.")
    if not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ArgumentError("seed", f"{seed!r}: expected a whole number from 0 to 2**63-1.")
    if (resume or force) and out is None:
        raise ArgumentError("resume" if resume else "force", "needs out=: a temporary run folder has nothing "
                            "to resume or replace.")
    data = LabeledData(name="evaluate", x=x_t.detach().cpu(), y=y_t.detach().cpu(),
                       classes=list(parsed.classes or []))
    options = RunOptions(device=device, batch_size=batch_size, seed=seed, progress=progress, escalate=escalate,
                         save_adversarial=True, resume=resume, force=force)
    given = model if isinstance(model, nn.Module) else None
    # the references name the run (a kept folder holding another model or other inputs is refused on resume)
    model_ref = str(model) if given is None else (
        f"python:{type(given).__name__} sha256:{_digest(list(given.state_dict().values()))}")
    data_ref = f"python:evaluate(x, y) sha256:{_digest([x_t, y_t])}"
    kept = _model_state(given)
    with tempfile.TemporaryDirectory(prefix="attackgen-evaluate-") as tmp:
        folder = Path(out) if out is not None else Path(tmp) / "run"
        echo = _stderr if progress else None
        try:
            with trusting(False, given=(model_ref,)):
                executor = Executor(plan, model_ref, data_ref, folder, options,
                                    plan_source="evaluate()", model=given, data=data, echo=echo)
                result = executor.run()
        finally:
            _restore(given, kept)
        if out is not None:
            from attackgen.report.run_report import write_report

            write_report(folder)
        with np.load(folder / "adversarial.npz") as saved:
            x_adv = torch.from_numpy(saved["x_adv"]).to(device=x_t.device, dtype=x_t.dtype)
            success = torch.from_numpy(saved["success"]).to(x_t.device)
    per_attack: dict[str, int] = {}
    for item in result.items:
        per_attack[item.attack] = per_attack.get(item.attack, 0) + item.n_success
    return Evaluation(
        clean_accuracy=result.clean_accuracy, robust_accuracy=result.robust_accuracy, x_adv=x_adv, success=success,
        per_attack=per_attack, flags=tuple(result.flags), escalation=result.escalation, complete=result.complete,
        incomplete_reason=result.partial_note(), run_folder=Path(out) if out is not None else None,
        plan=tuple(item.attack + ("" if item.epsilon is None else f" eps={item.epsilon:g}") for item in plan.items),
        result=result)


# ---------------------------------------------------------------------------- arguments


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def _tensors(x: Any, y: Any) -> tuple[Tensor, Tensor]:
    """x as a floating tensor (N, ...), y as (N,) class indices; numpy arrays are taken as they are."""
    try:
        x_t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as error:
        raise ArgumentError("x", f"cannot be read as a tensor ({error}); expected a float tensor or array "
                            "(N, C, H, W).") from None
    try:
        y_t = y if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y))
    except (TypeError, ValueError, RuntimeError) as error:
        raise ArgumentError("y", f"cannot be read as a tensor ({error}); expected class indices (N,).") from None
    if not x_t.is_floating_point() or x_t.dim() < 2:
        raise ArgumentError("x", f"dtype {x_t.dtype}, shape {tuple(x_t.shape)}: expected a floating-point "
                            "batch (N, C, H, W) in the input bounds.")
    if y_t.dim() != 1 or y_t.is_floating_point() or y_t.dtype == torch.bool:
        raise ArgumentError("y", f"dtype {y_t.dtype}, shape {tuple(y_t.shape)}: expected integer class indices "
                            "of shape (N,).")
    if len(x_t) != len(y_t):
        raise ArgumentError("y", f"{len(y_t)} labels for {len(x_t)} inputs in x: expected one label per input.")
    if len(x_t) == 0:
        raise ArgumentError("x", "holds no inputs.")
    return x_t, y_t.long()


def _digest(tensors: Sequence[Any]) -> str:
    """A short hash of tensors' shapes and bytes: what the run folder's identity records for a Python object."""
    import hashlib

    digest = hashlib.sha256()
    for tensor in tensors:
        if isinstance(tensor, Tensor):
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _device_of(model: Any, x: Tensor) -> str:
    if isinstance(model, nn.Module):
        for tensor in list(model.parameters()) + list(model.buffers()):
            return str(tensor.device)
    return str(x.device)


def _classes(model: nn.Module | str, x: Tensor) -> int | None:
    """The number of classes the model outputs (for a generated spec's class names); None: not known here."""
    if not isinstance(model, nn.Module):
        return None
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(x[:1].to(_device_of(model, x)))
    except Exception as error:  # the run's own checks name the problem better; say it here all the same
        raise ArgumentError("model", f"fails on x[:1]: {type(error).__name__}: {str(error)[:200]}") from None
    finally:
        model.train(was_training)
    if isinstance(out, Tensor) and out.dim() == 2:
        return int(out.shape[1])
    return None


def _model_state(model: nn.Module | None) -> tuple[bool, list[bool]] | None:
    if model is None:
        return None
    return model.training, [p.requires_grad for p in model.parameters()]


def _restore(model: nn.Module | None, kept: tuple[bool, list[bool]] | None) -> None:
    """The executor puts the model in eval mode without parameter gradients; give the caller's back."""
    if model is None or kept is None:
        return
    training, flags = kept
    model.train(training)
    for parameter, flag in zip(model.parameters(), flags, strict=False):
        parameter.requires_grad_(flag)


def _norm(norm: Any) -> str:
    from taxonomy.axes import _norm_name

    name = _norm_name(norm)
    if isinstance(norm, bool) or name not in ("0", "1", "2", "inf"):
        raise ArgumentError("norm", f"{norm!r}: expected one of 'inf' (or 'Linf', float('inf')), 2 ('L2'), 1 ('L1'), "
                            "0 ('L0').")
    return str(name)


def _epsilons(epsilon: Any) -> float | list[float]:
    if epsilon is None:
        raise ArgumentError("epsilon", "missing: give the perturbation budget (e.g. epsilon=8/255), or a spec=.")
    values = list(epsilon) if isinstance(epsilon, list | tuple) else [epsilon]
    if not values:
        raise ArgumentError("epsilon", "an empty list: give one value, or several for a robustness curve.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ArgumentError("epsilon", f"{value!r}: expected a finite number greater than 0 (in input units).")
    return float(values[0]) if len(values) == 1 else [float(v) for v in values]


def _bounds(bounds: Any) -> list[float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ArgumentError("bounds", f"{bounds!r}: expected (low, high), e.g. (0.0, 1.0).") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ArgumentError("bounds", f"{bounds!r}: expected finite low < high.")
    return [lo, hi]


def spec_data(epsilon: Any, norm: Any, bounds: Any, classes: int | None) -> dict[str, Any]:
    """The spec ``evaluate`` builds without ``spec``: white-box, untargeted, individual, digital feed."""
    data: dict[str, Any] = {
        "name": "evaluate",
        "task": "classification",
        "threat": {
            "consequence": "untargeted",
            "scope": "individual",
            "imperceptibility": [{"kind": "lp", "norm": _norm(norm), "epsilon": _epsilons(epsilon)}],
            "model_knowledge": "white_box",
            "data_knowledge": "none",
            "capability": {"feed": "digital"},
        },
        "input_space": {"bounds": _bounds(bounds), "layout": "NCHW", "normalization": "inside_model",
                        "epsilon_units": "input_scale"},
    }
    if classes:
        data["classes"] = [str(i) for i in range(classes)]
    return data


def _plan(spec: Any, preset: str | None, epsilon: Any, norm: Any, bounds: Any, classes: int | None) -> tuple[Any, Any]:
    """(parsed spec, plan), through the same parser, planner, presets and rules as ``attackgen plan``."""
    from attackgen.plan.document import Infeasible
    from attackgen.plan.planner import plan as make_plan
    from attackgen.plan.presets import PRESETS, plan_preset
    from taxonomy.spec import load_spec, parse_spec

    if spec is None:
        parsed = parse_spec(spec_data(epsilon, norm, bounds, classes), "evaluate() spec")
    else:
        defaults = {"epsilon": (epsilon, None), "norm": (norm, "inf"), "bounds": (tuple(bounds), (0.0, 1.0))}
        clash = [name for name, (value, default) in defaults.items() if value != default]
        if clash:
            raise ArgumentError(clash[0], "given together with spec=; the spec's threat model decides it: "
                                "leave it out, or edit the spec.")
        if isinstance(spec, Mapping):
            parsed = parse_spec(dict(spec), "evaluate(spec=...)")
        elif isinstance(spec, str | Path):
            parsed = load_spec(spec)
        else:
            raise ArgumentError("spec", f"{type(spec).__name__}: expected a path to a YAML/JSON spec or a dict.")
    if preset is not None and preset not in PRESETS:
        from taxonomy.errors import did_you_mean

        raise ArgumentError("preset", f"{preset!r}: unknown{did_you_mean(preset, PRESETS)}; expected one of "
                            f"{', '.join(PRESETS)}.")
    result = plan_preset(parsed, preset) if preset else make_plan(parsed)
    if isinstance(result, Infeasible):
        with_preset = f" with preset {preset}" if preset else ""
        raise PlanError(f"'{result.spec_name}' is infeasible: no plan{with_preset}: "
                        + "; ".join(note.line() for note in result.blocking))
    if not result.items:
        raise PlanError(f"'{result.spec_name}' is a gap: feasible, but no implemented attack realises it.")
    return parsed, result
