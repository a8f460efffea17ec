"""The step runner: one plan item over the chunks of the evaluation inputs, survivors only.

For each chunk it attacks only the inputs still unbroken under the step's own budget (clean failures
and earlier verified successes within that budget count as broken), in sub-batches that halve on a
device out-of-memory error, verifies every candidate (attackgen.run.verify) and records the outcome in
the step's StepState, which the run folder checkpoints after each chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attackgen.run.access import QueryBudgetExceeded
from attackgen.run.attacks.base import Attack, AttackEnv, UniversalAttack
from attackgen.run.context import RunContext, derive_seed
from attackgen.run.items import RunError, Step
from attackgen.run.objectives import build_objective
from attackgen.run.objectives.base import MissingCapability, Objective
from attackgen.run.progress import RunProgress
from attackgen.run.resources import FlagLog, RunResources
from attackgen.run.verify import NORM_COLUMN, SSIM_COLUMN, Verified, bounds_for, printability_bound, verify

MAX_EXAMPLES = 8
LISTEN_EVERY_S = 0.5
"""On an accelerator the progress listener reads the query counters at most this often (a device sync)."""
ROW_STREAM = 0x5EED
"""Salt of the per-input seeds (derive_seed(seed, item, ROW_STREAM, index))."""


@dataclass
class StepState:
    """What one step produced so far, per input of the data (after --limit); saved in the checkpoint."""

    attacked: Tensor
    success: Tensor  # verified: the re-run realises the consequence and the budget holds
    hit: Tensor  # the re-run realises the consequence (budget not considered)
    within: Tensor
    norms: Tensor  # (N, 5) float64: l0, l1, l2, linf, ssim; NaN where not attacked
    queries: Tensor
    adv_label: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    time_s: float = 0.0
    fitted: Tensor | None = None
    fit_queries: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    adversarial: list[tuple[Tensor, Tensor]] | None = None
    """--save-adversarial: (input indices, verified candidates) of each recorded batch's successes, on the CPU
    in the input dtype; None when the run keeps none (a row recorded twice keeps its last entry)."""

    @classmethod
    def empty(cls, n: int) -> StepState:
        return cls(
            attacked=torch.zeros(n, dtype=torch.bool),
            success=torch.zeros(n, dtype=torch.bool),
            hit=torch.zeros(n, dtype=torch.bool),
            within=torch.ones(n, dtype=torch.bool),
            norms=torch.full((n, 5), float("nan"), dtype=torch.float64),
            queries=torch.zeros(n, dtype=torch.long),
            adv_label=torch.full((n,), -1, dtype=torch.long),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepState:
        return cls(**data)

    def count(self, name: str, value: int) -> None:
        if value:
            self.counts[name] = self.counts.get(name, 0) + int(value)

    def column(self, name: str) -> Tensor:
        """A per-input metric column, NaN until measured."""
        n = len(self.attacked)
        return self.metrics.setdefault(name, torch.full((n,), float("nan"), dtype=torch.float64))


@dataclass(frozen=True)
class CleanPass:
    """The model on the clean inputs: correct, already broken (consequence realised), applicable."""

    correct: Tensor
    broken: Tensor
    applicable: Tensor
    pred: Tensor  # classification: the clean top-1 label (-1 elsewhere)


def _leaves(value: Any) -> list[Any]:
    """The values inside nested lists, tuples and dicts (a detector's outputs)."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def broken_by(clean: CleanPass, states: Sequence[StepState], norm: str | None, epsilon: float | None,
              floor: float | None, tol: float) -> Tensor:
    """Inputs broken clean or by a verified candidate of ``states`` that satisfies (norm <= epsilon, SSIM floor)."""
    broken = clean.broken.clone()
    for state in states:
        ok = state.success.clone()
        if norm is not None and epsilon is not None:
            ok &= state.norms[:, NORM_COLUMN[norm]] <= epsilon + tol + 1e-6 * epsilon
        if floor is not None:
            ok &= state.norms[:, SSIM_COLUMN] >= floor - 1e-6
        broken |= ok
    return broken


class StepRunner:
    """Runs steps over a RunContext; ``save`` is called after each finished chunk (the checkpoint)."""

    def __init__(self, ctx: RunContext, resources: RunResources, flags: FlagLog, save: Callable[[], None],
                 echo: Callable[[str], None]) -> None:
        self.ctx, self.resources, self.flags, self.save, self.echo = ctx, resources, flags, save, echo
        self.sub_batch = ctx.sub_batch
        self.where = "the clean pass"
        self.current: Tensor | None = None  # the inputs being worked on (named when something fails)
        self.progress: RunProgress = RunProgress(len(ctx.steps), len(ctx.eval_rows))

    # ------------------------------------------------------------------ batching with out-of-memory back-off

    def in_sub_batches(self, rows: Tensor, work: Callable[[Tensor], None]) -> None:
        start = 0
        while start < len(rows):
            part = rows[start : start + self.sub_batch]
            self.current = part
            try:
                work(part)
            except torch.cuda.OutOfMemoryError:
                if self.sub_batch == 1:
                    raise RunError(
                        f"the device ran out of memory even with one input per batch on {self.ctx.device}; "
                        "use --device cpu or a smaller model."
                    ) from None
                self.sub_batch = max(1, self.sub_batch // 2)
                if self.ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.echo(f"out of memory: batch size backs off to {self.sub_batch}")
                continue
            start += len(part)

    # ------------------------------------------------------------------ failures of the model

    def failure(self, error: BaseException) -> str:
        """What failed, where, on which inputs: the model (or an attack) raised ``error``."""
        rows = self.current
        which = ""
        if rows is not None and len(rows):
            first, last = int(rows.min()), int(rows.max())
            which = f" on inputs {first}..{last} ({len(rows)} inputs; input indices of --data)"
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        return f"{self.where} failed{which}: {type(error).__name__}: {reason}"

    def check_gradients(self) -> None:
        """A white-box item needs the model's gradient: refuse a model without one before any attack runs."""
        if not any(step.access == "gradients" for step in self.ctx.steps):
            return
        x, _ = self.ctx.inputs(self.ctx.eval_rows[:1])
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = self.ctx.model(x)
        tensors = [out] if isinstance(out, Tensor) else [v for v in _leaves(out) if isinstance(v, Tensor)]
        if not any(t.requires_grad for t in tensors):
            raise RunError(
                f"--model {self.ctx.model_ref}: its outputs carry no gradient with respect to the input "
                "(torch.no_grad, .detach() or numpy inside forward?), but the plan has white-box items that need "
                "it; fix the model or use a spec whose threat.model_knowledge is output_transparent or label_only."
            )

    # ------------------------------------------------------------------ clean pass

    def clean_pass(self) -> CleanPass:
        ctx = self.ctx
        n = ctx.n
        clean = CleanPass(correct=torch.zeros(n, dtype=torch.bool), broken=torch.zeros(n, dtype=torch.bool),
                          applicable=torch.ones(n, dtype=torch.bool), pred=torch.full((n,), -1, dtype=torch.long))

        def work(rows: Tensor) -> None:
            x, y = ctx.inputs(rows)
            out = ctx.forward(x)
            objective = build_objective(ctx.spec, y, out)
            clean.broken[rows] = objective.success(out).bool().cpu()
            applicable = objective.applicable
            if applicable is not None:
                clean.applicable[rows] = applicable.bool().cpu()
            if ctx.task == "classification":
                pred = out.argmax(dim=1).cpu()
                clean.pred[rows] = pred
                finite = torch.isfinite(out.reshape(len(rows), -1)).all(dim=1).cpu()  # NaN is no decision
                clean.correct[rows] = (pred == y.cpu()) & finite
                clean.broken[rows] &= finite
            else:  # dense tasks: "correct" means the consequence is not realised already
                clean.correct[rows] = ~clean.broken[rows]

        self.in_sub_batches(torch.arange(n), work)
        return clean

    # ------------------------------------------------------------------ one step

    def run(self, step: Step, states: Sequence[StepState], clean: CleanPass, progress: Any) -> None:
        """Run ``step`` over every unfinished chunk; ``states`` are all steps' states (earlier ones decide
        which inputs survive)."""
        ctx = self.ctx
        state = states[step.index]
        attack, env = self.setup(step, states)
        broken = broken_by(clean, states[: step.index], step.norm, step.epsilon, step.ssim_floor, ctx.tol)
        broken |= ~clean.applicable
        spent = self.group_spent(step, states)
        self.progress = progress
        self.where = f"items[{step.index}] ({step.attack})"
        progress.start_item(step.index, step.attack + (f" eps={step.epsilon:g}" if step.epsilon is not None else ""))
        for chunk_id, rows in enumerate(torch.split(ctx.eval_rows, ctx.chunk_size)):
            if chunk_id in state.done:
                progress.advance(len(rows), skipped=True)
                continue
            # survivors not yet attacked: after an interrupt inside a chunk, its finished inputs are kept
            # (each input's result is its own, see Attack.row_random), not attacked again
            survivors = rows[~broken[rows] & ~state.attacked[rows]]
            progress.advance(len(rows) - len(survivors))
            self.attack_survivors(step, state, attack, env, survivors, spent)
            state.done.append(chunk_id)
            self.save()
        progress.end_item()

    def setup(self, step: Step, states: Sequence[StepState]) -> tuple[Attack, AttackEnv]:
        """The attack and environment of one item, fitted first when it is universal."""
        attack = step.cls(seed=derive_seed(self.ctx.options.seed, step.index), **step.attack_params)
        env = self.resources.env(step)
        if isinstance(attack, UniversalAttack):
            self.fit(step, states[step.index], attack, env)
        return attack, env

    def attack_survivors(self, step: Step, state: StepState, attack: Attack, env: AttackEnv, survivors: Tensor,
                         spent: Tensor | None) -> None:
        started = time.perf_counter()
        self.in_sub_batches(survivors, lambda part: self.attack_rows(step, state, attack, env, part, spent))
        state.time_s += time.perf_counter() - started

    def run_rows(self, rows: Tensor, states: Sequence[StepState], clean: CleanPass,
                 setups: Sequence[tuple[Attack, AttackEnv]], first: int = 0) -> None:
        """Every item from ``first`` on over these inputs, in plan order, survivors only (a chunk one rank of a
        distributed run claimed, attackgen.run.distributed). Per input this is what ``run`` does item by item."""
        for step, (attack, env) in zip(self.ctx.steps[first:], setups, strict=True):
            broken = broken_by(clean, states[: step.index], step.norm, step.epsilon, step.ssim_floor, self.ctx.tol)
            broken |= ~clean.applicable
            self.attack_survivors(step, states[step.index], attack, env, rows[~broken[rows]],
                                  self.group_spent(step, states))

    def group_spent(self, step: Step, states: Sequence[StepState]) -> Tensor | None:
        """Queries the earlier items of this step's epsilon group spent per input (budgets are per group)."""
        if not step.queries or step.query_budget is None:
            return None
        spent = torch.zeros(self.ctx.n, dtype=torch.long)
        for other, state in zip(self.ctx.steps[: step.index], states, strict=False):
            if other.queries and other.epsilon == step.epsilon:
                spent += state.queries
        return spent

    @staticmethod
    def check_objective(step: Step, attack: Attack, objective: Objective) -> None:
        """The objective offers what the attack needs (Attack.objective_needs), before the attack runs."""
        try:
            attack.check_objective(objective)
        except MissingCapability as error:
            raise RunError(f"items[{step.index}] ({step.attack}): {error}; choose an attack for this task.") from None

    def fit(self, step: Step, state: StepState, attack: UniversalAttack, env: AttackEnv) -> None:
        """Fit a universal perturbation on the fitting rows (once: a resumed run reuses the saved one)."""
        ctx = self.ctx
        if state.fitted is not None:
            attack.fitted = state.fitted.to(ctx.device)
            return
        rows = ctx.fit_rows if ctx.fit_rows is not None else ctx.eval_rows
        if ctx.fit_rows is None:
            self.flags.add("universal.in_sample", "warning",
                           f"{step.attack} was fitted on the evaluation inputs (the spec's scope is individual)",
                           "set threat.scope to universal or contextual to fit and evaluate on separate inputs")
        x, y = ctx.inputs(rows)
        outputs = [ctx.forward(x[part.to(ctx.device)]) for part in torch.split(torch.arange(len(rows)), self.sub_batch)]
        clean = torch.cat(outputs) if isinstance(outputs[0], Tensor) else [o for out in outputs for o in out]
        objective = build_objective(ctx.spec, y, clean)
        self.check_objective(step, attack, objective)
        access = self.resources.access(step, len(rows), None)
        access.input_ids = rows
        started = time.perf_counter()
        torch.manual_seed(derive_seed(ctx.options.seed, step.index, 0xF17))
        try:
            fitted = attack.fit(access, x, objective, ctx.budget(step, rows), env)
        except torch.cuda.OutOfMemoryError:
            raise RunError(f"{step.attack}: out of device memory while fitting on {len(rows)} inputs; "
                           "use --limit or --device cpu.") from None
        state.time_s += time.perf_counter() - started
        fitted = fitted if fitted is not None else attack.fitted
        if fitted is None:
            raise RunError(f"{step.attack}: fit() produced no perturbation; it must return one and set fitted.")
        state.fitted = fitted.detach().cpu()
        state.fit_queries = int(access.queries.sum())
        self.save()

    def attack_rows(self, step: Step, state: StepState, attack: Attack, env: AttackEnv, rows: Tensor,
                    spent: Tensor | None) -> None:
        """Attack one sub-batch, verify its candidates and record them."""
        ctx = self.ctx
        x, y = ctx.inputs(rows)
        clean = ctx.forward(x)
        objective = build_objective(ctx.spec, y, clean)
        self.check_objective(step, attack, objective)
        access = self.resources.access(step, len(rows), None if spent is None else spent[rows])
        access.input_ids = rows
        before = access.queries.clone()
        budget = ctx.budget(step, rows)
        self.listen(step, access, len(rows))
        # Each input draws from its own stream, seeded by (run seed, item, input index): its result does not
        # depend on --batch-size or on which inputs survive with it (Attack.row_random). What an attack
        # still draws per batch (attack.seed, the global generator) is seeded from the batch's first input.
        attack.row_seeds = [derive_seed(ctx.options.seed, step.index, ROW_STREAM, i) for i in rows.tolist()]
        seed = derive_seed(ctx.options.seed, step.index, int(rows[0]))
        attack.seed = seed
        torch.manual_seed(seed)
        try:
            with self.autocast():
                candidate: Tensor | None = attack.run(access, x, objective, budget, env).x_adv
            access.check_overdraft()  # queries refused without a sync inside the loop (Access.query_live)
        except QueryBudgetExceeded as error:
            candidate = None
            self.flags.add("access.budget_exceeded", "error", f"{step.attack}: {error}",
                           "the attack must check access.remaining() before querying; its inputs count as failures")
        queries = (access.queries - before).cpu()
        bounds = bounds_for(step.norm, step.epsilon, tol=ctx.tol, mask=budget.mask, extra=step.extra_bounds,
                            ssim_floor=step.ssim_floor, wasserstein_radius=step.wasserstein_radius,
                            wasserstein_kernel=int(step.params.get("kernel", 5)), detectors=self.resources.detectors(),
                            printability=printability_bound(ctx.spec.threat.capability, ctx.bounds, ctx.tol))
        verified = verify(ctx.model, x, candidate, objective, bounds, input_bounds=ctx.bounds, tol=ctx.tol,
                          quantize_to=budget if ctx.spec.threat.capability.quantize else None,
                          passes=ctx.verify_passes)
        self.record(state, rows, x, objective, clean, verified, queries)
        self.progress.advance(len(rows))

    def listen(self, step: Step, access: Any, n: int) -> None:
        """Report the batch's progress on every victim call: its calls so far over the cost model's expected
        calls per input (queries for an oracle, forward passes otherwise); no estimate, no report."""
        try:
            # calls to one model: an ensemble surrogate counts one call per pass, whatever its members
            cost = step.descriptor.model_cost(step.params, step.norm)
            expected = float(cost.queries if step.queries else max(cost.forward, cost.backward))
            if step.queries and step.query_budget is not None:
                expected = min(expected, float(step.query_budget))
        except Exception:  # a cost model that cannot price these parameters: progress per batch only
            return
        if expected <= 0:
            return
        target = access.surrogate if step.access == "surrogate" else access
        start = float(target.queries.double().mean())
        progress = self.progress

        last = [time.monotonic()]

        def heard(handle: Any) -> None:
            # On an accelerator reading the counters is a host<->device sync: at most every LISTEN_EVERY_S
            # seconds there, never per gradient step or query of a loop that runs faster than that.
            if handle.queries.device.type != "cpu":
                now = time.monotonic()
                if now - last[0] < LISTEN_EVERY_S:
                    return
                last[0] = now
            progress.within(n, (float(handle.queries.double().mean()) - start) / expected)

        target._listener = heard  # private: attacks see no new public surface

    def autocast(self) -> Any:
        """--autocast: the attack's forward and backward passes in bf16/fp16; verify() re-runs in float32."""
        from contextlib import nullcontext

        choice = self.ctx.options.autocast
        if choice is None:
            return nullcontext()
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        if choice not in dtypes:
            raise RunError(f"--autocast {choice}: expected bf16 or fp16.")
        return torch.autocast(self.ctx.device.type, dtype=dtypes[choice])

    def record(self, state: StepState, rows: Tensor, x: Tensor, objective: Objective, clean: Any,
               verified: Verified, queries: Tensor) -> None:
        """Write a verified batch into the step's state; counts and ``attacked`` last, so a batch retried
        after out-of-memory counts once and a resumed run skips only inputs recorded in full."""
        metrics = objective.metrics(clean, verified.outputs) or {}
        cpu_rows = rows.cpu()
        for name, values in verified.metrics.items():
            state.column(name)[cpu_rows] = values.cpu()
        state.hit[cpu_rows] = verified.hit.cpu()
        state.within[cpu_rows] = verified.within.cpu()
        state.success[cpu_rows] = verified.success.cpu()
        state.norms[cpu_rows] = verified.norms.cpu()
        state.queries[cpu_rows] = queries.long()
        if self.ctx.task == "classification":
            state.adv_label[cpu_rows] = verified.outputs.argmax(dim=1).cpu()
        for name, values in metrics.items():
            state.column(name)[cpu_rows] = torch.as_tensor(values).detach().double().cpu()
        self.keep_examples(state, cpu_rows, x, objective, clean, verified)
        if self.ctx.options.save_adversarial:
            won = verified.success.cpu().bool()
            if state.adversarial is None:
                state.adversarial = []
            if bool(won.any()):
                state.adversarial.append((cpu_rows[won].clone(), verified.candidate.detach()[won.to(
                    verified.candidate.device)].cpu().to(x.dtype)))
        for name, value in verified.counts.items():
            state.count(name, value)
        state.attacked[cpu_rows] = True  # last: a resumed run skips only inputs recorded in full

    def keep_examples(self, state: StepState, rows: Tensor, x: Tensor, objective: Objective, clean: Any,
                      verified: Verified) -> None:
        """The first verified successes of a step, for the report (dense objectives add their own arrays)."""
        won = verified.success.cpu().nonzero().flatten().tolist()[: MAX_EXAMPLES - len(state.examples)]
        if not won:
            return
        outputs = verified.outputs
        extra = objective.example_arrays(clean, outputs)
        for i in won:
            example = {"index": int(rows[i]), "clean": x[i].cpu(), "adversarial": verified.candidate[i].cpu(),
                       "adv_pred": -1, "extra": {k: torch.as_tensor(np.asarray(v[i])) for k, v in extra.items()}}
            if isinstance(outputs, Tensor) and outputs.dim() == 2:
                example["adv_pred"] = int(outputs[i].argmax())
            state.examples.append(example)
