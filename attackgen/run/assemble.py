"""Result assembly: from the steps' states to ItemResult and RunResult, with the robustness curve.

A successful candidate counts for every budget it satisfies: the robust accuracy at epsilon e is the
share of evaluation inputs that are clean-correct and have no verified candidate of norm <= e. That
gives the robustness curve when a spec lists several epsilons; the headline is the largest epsilon.
Pure functions of the context and the states: nothing here runs the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attackgen import __version__
from attackgen.results import Flag, InputResult, ItemResult, Norms, RunResult
from attackgen.run.context import RunContext, package_versions
from attackgen.run.items import Step, detector_items, spec_floor
from attackgen.run.steps import CleanPass, StepState, broken_by


def robust(ctx: RunContext, clean: CleanPass, broken: Tensor, rows: Tensor | None = None) -> float:
    """Share of the evaluation inputs (``rows``: those finished) the consequence applies to that are
    clean-correct and not broken. Inputs it does not apply to (a targeted run's inputs already of the
    target class) are neither robust nor broken: they are left out and counted apart."""
    rows = ctx.eval_rows if rows is None else rows
    rows = rows[clean.applicable[rows]]
    return float((clean.correct[rows] & ~broken[rows]).float().mean()) if len(rows) else 0.0


def finished(ctx: RunContext, states: Sequence[StepState]) -> Tensor:
    """Per input: every step has finished it (its chunk is done, or the step attacked it)."""
    done = torch.ones(ctx.n, dtype=torch.bool)
    chunks = torch.split(ctx.eval_rows, ctx.chunk_size)
    for state in states:
        covered = state.attacked.clone()
        for chunk_id in state.done:
            if chunk_id < len(chunks):
                covered[chunks[chunk_id]] = True
        done &= covered
    return done


def primary(ctx: RunContext) -> tuple[str | None, list[float]]:
    """The headline norm and its epsilons in input units (the plan's, else the spec's first Lp budget)."""
    budgets = ctx.spec.lp_budgets
    if not budgets:
        return None, []
    epsilons = [float(e) for e in ctx.plan.epsilons or []]
    if not epsilons:
        epsilons = [ctx.spec.input_space.to_input_scale(e) for e in budgets[0].epsilons]
    return budgets[0].norm, sorted(set(epsilons))


def assemble(ctx: RunContext, clean: CleanPass, states: Sequence[StepState], flags: Sequence[Flag],
             started: str, complete: bool) -> RunResult:
    all_flags = list(flags)
    for step, state in zip(ctx.steps, states, strict=True):
        all_flags += verification_flags(ctx, step, state)
    norm, epsilons = primary(ctx)
    floor = spec_floor(ctx.spec)
    headline = broken_by(clean, states, norm, max(epsilons) if norm is not None and epsilons else None, floor,
                         ctx.tol)
    rows = ctx.eval_rows
    # a stopped run: the headline is over the inputs every item finished, never over unattacked ones
    # (counted robust they made a stopped run look far more robust than it is); with none finished, it is
    # an upper bound from the items that did run, and says so
    measured = rows if complete else rows[finished(ctx, states)[rows]]
    n_finished = len(measured)
    if not complete and n_finished == 0:
        measured = rows
    items = [item_result(ctx, clean, states, step, measured) for step in ctx.steps]
    curve = []
    if norm is not None and len(epsilons) > 1:
        curve = [{"epsilon": e,
                  "robust_accuracy": robust(ctx, clean, broken_by(clean, states, norm, e, floor, ctx.tol), measured)}
                 for e in epsilons]
    metrics: dict[str, float] = {"chunk_size": float(ctx.chunk_size), "threads": float(ctx.threads[0])}
    if ctx.verify_passes > 1:
        metrics["verify_passes"] = float(ctx.verify_passes)
    if not complete:
        metrics["n_finished"] = float(n_finished)
        metrics["items_finished"] = float(sum(all(i in s.done for i in range(len(torch.split(rows, ctx.chunk_size))))
                                              for s in states))
        if n_finished == 0:
            metrics["robust_upper_bound"] = 1.0
    not_applicable = int((~clean.applicable[rows]).sum())
    if not_applicable:
        metrics["n_not_applicable"] = float(not_applicable)
    if ctx.options.limit is not None:
        metrics["limit"] = float(ctx.options.limit)
    if ctx.fit_rows is not None:
        metrics["n_fit"] = float(len(ctx.fit_rows))
    if norm is not None and epsilons:
        metrics["headline_epsilon"] = max(epsilons)
    return RunResult(
        attackgen_version=__version__,
        spec=ctx.spec.model_dump(mode="json"),
        spec_hash=ctx.plan.spec_hash,
        plan_hash=ctx.identity()["plan_hash"],
        task=ctx.task,
        model=ctx.model_ref,
        data=ctx.data_ref,
        device=str(ctx.device),
        seed=ctx.options.seed,
        versions={**package_versions(ctx.device), **precision(ctx.options),
                  "threads": f"{ctx.threads[0]} ({ctx.threads[1]})"},
        started=started,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds") if complete else None,
        complete=complete,
        n_inputs=len(rows),
        clean_accuracy=float(clean.correct[rows].float().mean()),
        robust_accuracy=robust(ctx, clean, headline, measured),
        curve=curve,
        items=items,
        flags=all_flags,
        metrics=metrics,
    )


def item_result(ctx: RunContext, clean: CleanPass, states: Sequence[StepState], step: Step,
                measured: Tensor | None = None) -> ItemResult:
    """One item's record; its 'robust after' is over ``measured`` (a stopped run: the inputs it finished)."""
    state = states[step.index]
    rows = ctx.eval_rows[state.attacked[ctx.eval_rows]]
    y = ctx.data.y
    labels = y if isinstance(y, Tensor) and y.dim() == 1 else None
    inputs = []
    for i in rows.tolist():
        norms = state.norms[i].tolist()
        inputs.append(InputResult(
            index=i,
            label=int(labels[i]) if labels is not None else None,
            clean_correct=bool(clean.correct[i]),
            success=bool(state.success[i]),
            within_budget=bool(state.within[i]),
            norms=Norms(l0=norms[0], l1=norms[1], l2=norms[2], linf=norms[3],
                        ssim=None if math.isnan(norms[4]) else norms[4]),
            queries=int(state.queries[i]),
            adversarial_label=int(state.adv_label[i]) if state.adv_label[i] >= 0 else None,
            metrics=input_metrics(state, i),
        ))
    n_attacked, n_success = len(rows), int(state.success[rows].sum())
    metrics = {name: float(np.nanmean(column[rows].numpy())) for name, column in state.metrics.items()
               if n_attacked and not bool(torch.isnan(column[rows]).all())}
    if "detected" in metrics:  # among candidates that fooled the model within budget, before the filter
        metrics["detected_rate"] = metrics.pop("detected")
    if n_success:
        won = rows[state.success[rows]]
        for key, column in (("median_linf", 3), ("median_l2", 2), ("median_ssim", 4)):
            values = state.norms[won, column]
            if not bool(torch.isnan(values).all()):
                metrics[key] = float(np.nanmedian(values.numpy()))
    if step.universal:
        if step.queries:
            metrics["fit_queries"] = float(state.fit_queries)
        if ctx.in_context is not None and n_attacked:
            inside = ctx.in_context[rows]
            for name, part in (("in_context", inside), ("out_of_context", ~inside)):
                metrics[f"n_{name}"] = float(part.sum())
                if bool(part.any()):
                    metrics[f"success_rate_{name}"] = float(state.success[rows][part].float().mean())
    if ctx.in_context is not None:
        for record in inputs:
            record.metrics["in_context"] = float(bool(ctx.in_context[record.index]))
    queries = state.queries[rows].double()
    after = broken_by(clean, states[: step.index + 1], step.norm, step.epsilon, step.ssim_floor, ctx.tol)
    return ItemResult(
        attack=step.attack,
        params=dict(step.params),
        epsilon=step.epsilon,
        n_attacked=n_attacked,
        n_success=n_success,
        robust_accuracy_after=robust(ctx, clean, after, measured),
        success_rate=n_success / n_attacked if n_attacked else 0.0,
        median_queries=float(queries.median()) if step.queries and n_attacked else None,
        time_s=round(state.time_s, 4),
        transfer_estimate=step.access == "surrogate",
        metrics=metrics,
        inputs=inputs,
    )


def input_metrics(state: StepState, i: int) -> dict[str, float]:
    out = {}
    for name, column in state.metrics.items():
        value = float(column[i])
        if not math.isnan(value):
            out[name] = value
    return out


def verification_flags(ctx: RunContext, step: Step, state: StepState) -> list[Flag]:
    """What verification refused in this step, as flags that say what the attack should fix."""
    flags = []
    where = f"item {step.index + 1} ({step.attack})"
    counts = state.counts
    if counts.get("over_budget"):
        flags.append(Flag(check="verification.out_of_budget", severity="error",
                          evidence=f"{where}: {counts['over_budget']} candidates fooled the model only outside "
                          f"their budget (L{step.norm} <= {step.epsilon}, mask, SSIM floor); counted as failures",
                          fix="the attack must project into its Budget (budget.project) before returning"))
    if counts.get("detected"):
        names = ", ".join(sorted({n for _, item in detector_items(ctx.spec) for n in item.detectors}))
        flags.append(Flag(check="verification.detected", severity="info",
                          evidence=f"{where}: {counts['detected']} candidates fooled the model within budget "
                          f"but the detector ({names}) flagged them; counted as failures",
                          fix="use a detector-aware attack (detector_aware_pgd) to keep the detector quiet"))
    if counts.get("outside_bounds"):
        flags.append(Flag(check="verification.outside_bounds", severity="warning",
                          evidence=f"{where}: {counts['outside_bounds']} candidates left the input bounds "
                          f"{list(ctx.bounds)}; they were clipped and re-run, and only the re-run counts",
                          fix="clip to budget.bounds inside the attack"))
    if counts.get("non_finite"):
        flags.append(Flag(check="verification.non_finite", severity="error",
                          evidence=f"{where}: {counts['non_finite']} candidates held NaN or infinite values; "
                          "counted as failures", fix="check the attack's step sizes and divisions"))
    if counts.get("non_finite_output"):
        flags.append(Flag(check="verification.non_finite_output", severity="error",
                          evidence=f"{where}: the model returned NaN or infinite outputs on "
                          f"{counts['non_finite_output']} candidates; they are not counted as successes",
                          fix="check the model on such inputs (overflow, log of zero, division)"))
    if counts.get("bad_shape"):
        flags.append(Flag(check="verification.shape", severity="error",
                          evidence=f"{where}: returned candidates of the wrong shape for {counts['bad_shape']} "
                          "inputs; counted as failures", fix="return x_adv with the shape of x"))
    return flags


def precision(options: Any) -> dict[str, str]:
    """--autocast and --compile, recorded with the versions: they change how the attacks computed."""
    out = {}
    if options.autocast:
        out["autocast"] = f"{options.autocast} (attack steps; every success re-verified in float32)"
    if options.compile:
        out["compile"] = "torch.compile"
    return out
