"""Run a plan over a model and data: enforced access, survivors-only, verified results, checkpoints.

The order of work is item-major: each plan item (one "step" per item) runs over the evaluation inputs
in fixed chunks, and each chunk is checkpointed when it is finished. A step attacks only the inputs of
its chunk that are still unbroken under its own budget (clean failures count as broken), so the
per-input worst case over the plan is kept as AutoAttack keeps it.

This module only orchestrates; each part has its own module:

- ``items``: plan items -> Steps, checked against the spec (access, epsilon, floor, queries);
- ``context``: the RunContext, built once and frozen (model, data, device, splits, masks, batch sizes);
- ``resources``: access objects, surrogates, data bases, detectors, flags (built on demand, kept);
- ``steps``: the step runner (chunks, survivors, out-of-memory back-off) and its StepState;
- ``verify``: clip, re-run, re-measure, one class per bound (the only judge of success);
- ``assemble``: ItemResult / RunResult and the robustness curve;
- ``folder``: the output folder, checkpoint, resume and --force.

What an attack gets is built from its catalogue descriptor and the spec, never more: gradients ->
WhiteBoxAccess (the spec must be white-box), scores -> ScoreOracle (the spec's granularity and per-input
query budget), labels -> LabelOracle (budgeted), surrogate -> NoAccess (a surrogate model only). Query
budgets are per input and shared by the items of one epsilon group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attackgen.models.data import LabeledData
from attackgen.results import Flag, RunResult
from attackgen.run.assemble import assemble
from attackgen.run.context import RunContext, RunOptions, load_context, patch_side, run_identity
from attackgen.run.escalate import EscalationPlan, Resumed, escalation_setting, mark_disabled, run_escalation
from attackgen.run.folder import CHECKPOINT, OUTPUT_FILES, RESULTS, RunFolder
from attackgen.run.items import RunError, Step, check_detector_names, resolve_steps
from attackgen.run.lock import FolderLock
from attackgen.run.progress import Mode, RunProgress
from attackgen.run.resources import FlagLog, RunResources
from attackgen.run.steps import StepRunner, StepState
from attackgen.run.verify import measure, quantize
from taxonomy.errors import AttackgenError

__all__ = ["CHECKPOINT", "OUTPUT_FILES", "RESULTS", "Executor", "RunError", "RunOptions", "execute", "measure",
           "patch_side", "quantize"]


class Executor:
    """One run of one plan. ``run()`` returns the RunResult and writes results.json in ``out_dir``."""

    def __init__(
        self,
        plan: Any,
        model_ref: str,
        data_ref: str,
        out_dir: str | Path,
        options: RunOptions | None = None,
        catalog: Mapping[str, Any] | None = None,
        plan_source: str = "plan",
        model: nn.Module | None = None,
        data: LabeledData | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        if catalog is None:
            from taxonomy.catalog import CATALOG

            catalog = CATALOG
        self.plan = plan
        self.spec = plan.parsed_spec()
        self.model_ref, self.data_ref = model_ref, data_ref
        self.folder = RunFolder(out_dir)
        self.options = options or RunOptions()
        self.echo = echo or (lambda message: None)
        self._model_given, self._data_given = model, data
        lo, hi = self.spec.input_space.bounds
        check_detector_names(self.spec)
        self.steps: list[Step] = resolve_steps(plan, self.spec, catalog, plan_source, 1e-6 * max(1.0, hi - lo))
        self.flags = FlagLog()
        self.states: list[StepState] = []
        self._context: RunContext | None = None
        self._resources: RunResources | None = None
        self._randomness: list[Flag] | None = None  # the randomness probe's flags, run before the attacks

    @property
    def context(self) -> RunContext:
        """The frozen context (``prepare`` builds it)."""
        if self._context is None:
            raise RuntimeError("the run context is built by prepare() or run()")
        return self._context

    @property
    def resources(self) -> RunResources:
        if self._resources is None:
            raise RuntimeError("the run resources are built by prepare() or run()")
        return self._resources

    def prepare(self, chunk_size: int | None = None) -> RunContext:
        """Load model and data and build the context and resources (run() does this after claiming the folder)."""
        ctx = load_context(self.plan, self.steps, self.model_ref, self.data_ref, self.options,
                           self._model_given, self._data_given, chunk_size)
        self._context, self._randomness = random_verification(ctx)
        self._resources = RunResources(self._context, self.flags, self.echo)
        return self._context

    def run(self) -> RunResult:
        """Claim the output folder (its lock, then its contents) and run the plan; the lock is held to the end."""
        out = self.folder.out
        if out.exists() and not out.is_dir():
            raise RunError(f"-o {out}: exists and is not a folder.")
        with FolderLock(out, "attackgen run") as lock:
            if lock.took_over is not None:
                self.echo(f"note: took over the lock of a run that is gone (pid {lock.took_over.get('pid')}, "
                          f"started {lock.took_over.get('started')})")
            return self._run_locked()

    def _run_locked(self) -> RunResult:
        identity = run_identity(self.plan, self.model_ref, self.data_ref, self.options)
        checkpoint = self.folder.claim(identity, self.options)
        ctx = self.prepare(None if checkpoint is None else int(checkpoint["chunk_size"]))
        for step in ctx.steps:  # a missing surrogate is a bad input: say so before any attack runs
            if step.access == "surrogate":
                self.resources.surrogate(step)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.states = [StepState.empty(ctx.n) for _ in ctx.steps]
        resumed = None
        if checkpoint is not None:
            started, self.states, flags = self.folder.restore(checkpoint, ctx.n)
            if self.options.save_adversarial and any(s.adversarial is None and bool(s.attacked.any())
                                                     for s in self.states):
                raise RunError(f"-o {self.folder.out}: this run was started without --save-adversarial, so its "
                               "finished batches kept no adversarial inputs; resume it without "
                               "--save-adversarial, or pass --force to run it again with it.")
            self.flags.items = flags
            if checkpoint.get("escalation") is not None:  # stopped during escalation: its items' states follow
                resumed = Resumed(EscalationPlan.from_dict(checkpoint["escalation"]), self.states[len(ctx.steps):])
            self.states = self.states[: len(ctx.steps)]
            finished = sum(len(s.done) for s in self.states)
            self.echo(f"resuming: {finished} finished batches are kept, not run again")

        def save(complete: bool = False) -> None:
            self.folder.save_checkpoint(ctx, self.states, self.flags.items, started, complete)

        runner = StepRunner(ctx, self.resources, self.flags, save, self.echo)
        torch.manual_seed(self.options.seed)
        try:
            clean = runner.clean_pass()
        except Exception as error:
            if isinstance(error, AttackgenError):
                raise
            raise RunError(runner.failure(error)) from None
        runner.check_gradients()
        try:
            with self._progress(ctx) as progress:
                for step in ctx.steps:
                    runner.run(step, self.states, clean, progress)
        except (KeyboardInterrupt, AttackgenError):
            self._save_partial(ctx, clean, started, save)
            raise
        except Exception as error:
            self._save_partial(ctx, clean, started, save)
            raise RunError(f"{runner.failure(error)}; the finished batches are saved in {self.folder.out} "
                           "(continue with --resume once it is fixed).") from None
        result = assemble(ctx, clean, self.states, self.flags.items, started, True)
        sound = self._soundness(ctx, result)
        save(complete=True)
        disabled = escalation_setting(self.options, self.plan)
        written_ctx, written = ctx, self.states
        if disabled is None:
            plan_only = result
            last: list[EscalationPlan] = []

            def save_escalation(ctx2: RunContext, states: list[StepState], plan: EscalationPlan) -> None:
                last[:] = [plan]
                self.folder.save_checkpoint(ctx2, states, self.flags.items, started, False, plan.to_dict())

            try:
                with self._progress(ctx) as progress:
                    written_ctx, written, result = run_escalation(ctx, self.resources, self.flags, clean,
                                                                  self.states, sound, result, started, progress,
                                                                  self.echo, save_escalation, resumed)
                if last:
                    self.folder.save_checkpoint(written_ctx, written, self.flags.items, started, True,
                                                last[0].to_dict())
            except (AttackgenError, RuntimeError) as error:  # an add-on: the plan's verified result stands, and
                # the flags say why nothing was added (e.g. no gradient reaches the input at all)
                self.echo(f"escalation failed: {error}")
                written_ctx, written, result = ctx, self.states, plan_only
                mark_disabled(result, sound, f"failed: {error}")
        else:
            mark_disabled(result, sound, disabled)
        result.flags.extend(sound)
        self.folder.write(result, written_ctx, clean, written)
        return result

    def _save_partial(self, ctx: RunContext, clean: Any, started: str, save: Callable[[], None]) -> None:
        """Checkpoint and write results.json (complete: false) for a run that stops early."""
        save()
        self.folder.write(assemble(ctx, clean, self.states, self.flags.items, started, False), ctx, clean,
                          self.states)

    def _progress(self, ctx: RunContext) -> RunProgress:
        """A rich display on a terminal, a plain line every 10 s to a file or pipe, nothing with --quiet."""
        import sys

        mode: Mode = "off"
        if self.options.progress:
            mode = "rich" if sys.stderr.isatty() else "lines"
        return RunProgress(len(ctx.steps), len(ctx.eval_rows), mode, self.echo)

    def _soundness(self, ctx: RunContext, result: RunResult) -> list[Flag]:
        """Flags on the result (attackgen.audit.soundness) and probes of the model (gradient masking...)."""
        from attackgen.audit.soundness import run_flags
        from attackgen.run.objectives import build_objective
        from attackgen.run.soundness_probe import probe_model

        flags = run_flags(result)
        rows = ctx.eval_rows[:64]
        x, y = ctx.inputs(rows)
        objective = build_objective(ctx.spec, y, ctx.forward(x))
        flags += probe_model(ctx.model, x, y if isinstance(y, torch.Tensor) else None, objective, self._randomness)
        return flags


RANDOM_VERIFY_PASSES = 10
"""Passes a success on a randomised model is verified over (a strict majority must realise it)."""


def random_verification(ctx: RunContext) -> tuple[RunContext, list[Flag] | None]:
    """A model whose outputs change between identical calls (a random defence, dropout left on) gets every
    success verified over RANDOM_VERIFY_PASSES passes, decided before any attack runs: verified by a single
    pass, an input would count as broken whenever one draw of the randomness happened to fool the model
    (on the randomised digits CNN 5 % robust by one pass, 27 % when the same inputs are re-measured over
    10 passes). Three passes of the first 64 inputs decide it (the model sees them before the clean pass);
    the flags are returned for the end-of-run probe, which reuses them instead of probing again (None: not
    probed)."""
    from attackgen.run.soundness_probe import check_randomness

    if ctx.task != "classification":
        return ctx, None
    x, _ = ctx.inputs(ctx.eval_rows[:64])
    cuda = [ctx.device.index if ctx.device.index is not None else torch.cuda.current_device()] \
        if ctx.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):  # the run's draws stay as they were
            torch.manual_seed(ctx.options.seed)  # and the probe's evidence repeats with the seed
            flags = check_randomness(ctx.model, x)
    except Exception:  # a model that fails here fails in the clean pass next, which names the inputs
        return ctx, None
    if any(f.check == "randomized_output" for f in flags):
        return dataclasses.replace(ctx, verify_passes=RANDOM_VERIFY_PASSES), flags
    return ctx, flags


def execute(
    plan_path: str | Path,
    model_ref: str,
    data_ref: str,
    out_dir: str | Path,
    options: RunOptions | None = None,
    echo: Callable[[str], None] | None = None,
) -> RunResult:
    """Load a plan file and run it; the entry point of `attackgen run`."""
    return build_executor(plan_path, model_ref, data_ref, out_dir, options, echo).run()


def build_executor(
    plan_path: str | Path,
    model_ref: str,
    data_ref: str,
    out_dir: str | Path,
    options: RunOptions | None = None,
    echo: Callable[[str], None] | None = None,
) -> Executor:
    """Load and check a plan file (a distributed rank builds its executor here too, then runs its chunks)."""
    from attackgen.plan.document import load_plan
    from taxonomy.graph import validate

    # A spec that breaks a rule (an edited plan: say a confusing target on a classifier) is named by its
    # rule, before the per-item checks would only say that no item realises it.
    broken = [v for v in validate(load_plan(plan_path, check_rules=False).parsed_spec()) if v.severity == "error"]
    if broken:
        raise RunError(
            f"{plan_path}: the embedded spec breaks {len(broken)} rule(s), so nothing can run: "
            + "; ".join(f"{v.id} at {v.field}: {v.reason} ({v.detail}) Fix: {v.fix}" for v in broken)
        )
    plan = load_plan(plan_path)
    return Executor(plan, model_ref, data_ref, out_dir, options, plan_source=str(plan_path), echo=echo)
