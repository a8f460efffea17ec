"""What a run builds on demand and then keeps: surrogate models, data bases, calibrated detectors, and
the flags raised along the way. Built lazily, once each, because building them costs time (a surrogate
is trained) and only some plans need them; the RunContext they are built from stays frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attackgen.results import Flag
from attackgen.run.access import Access, LabelOracle, NoAccess, ScoreOracle, WhiteBoxAccess
from attackgen.run.attacks.base import AttackEnv
from attackgen.run.context import RunContext, derive_seed, take_labels
from attackgen.run.items import RunError, Step, detector_items, spec_query_budget

Severity = Literal["info", "warning", "error"]


class FlagLog:
    """Flags of one run, each (check, evidence) once; saved in the checkpoint."""

    def __init__(self, flags: list[Flag] | None = None) -> None:
        self.items: list[Flag] = list(flags or [])

    def add(self, check: str, severity: Severity, evidence: str, fix: str) -> None:
        if not any(f.check == check and f.evidence == evidence for f in self.items):
            self.items.append(Flag(check=check, severity=severity, evidence=evidence, fix=fix))


class RunResources:
    """Surrogates by model basis, data bases by kind and the spec's detectors, for one RunContext."""

    def __init__(self, ctx: RunContext, flags: FlagLog, echo: Callable[[str], None]) -> None:
        self.ctx, self.flags, self.echo = ctx, flags, echo
        self._surrogates: dict[str, Any] = {}  # attackgen.run.surrogates.BuiltSurrogate by model basis
        self._basis: dict[str, tuple[Tensor, Any] | None] = {}
        self._detectors: list[Any] | None = None

    # ------------------------------------------------------------------ access

    def access(self, step: Step, n: int, spent: Tensor | None) -> Access:
        """Exactly what the step's catalogue access grants under the spec, for a batch of n inputs;
        ``spent``: queries the earlier items of its epsilon group already used per input."""
        ctx = self.ctx
        knowledge = ctx.spec.threat.model_knowledge.model_dump()
        if step.access == "gradients":
            return WhiteBoxAccess(ctx.model if step.model_view is None else step.model_view, n, ctx.device)
        if step.access == "scores":
            access: Access = ScoreOracle(ctx.model, n, knowledge.get("granularity", "logits"), knowledge.get("k"),
                                         step.query_budget, ctx.device)
        elif step.access == "labels":
            from attackgen.run.objectives.detection import decisions_of

            # a detector shows its boxes and labels, without their confidences
            decide = decisions_of if ctx.spec.task.value == "detection" else None
            access = LabelOracle(ctx.model, n, step.query_budget, ctx.device, decide=decide)
        else:
            return NoAccess(self.surrogate(step), n, ctx.device)
        if spent is not None and step.query_budget is not None:
            access.queries += spent.to(ctx.device)  # the group's budget is shared by its items
        return access

    def env(self, step: Step) -> AttackEnv:
        """The data basis and surrogate the strategy grants the step."""
        ctx = self.ctx
        basis = self.data_basis(step)
        surrogate = self.surrogate(step) if step.access == "surrogate" else None
        if basis is not None:
            x, y = basis
            return AttackEnv(ctx.device, x.to(ctx.device), take_labels(y, torch.arange(len(x)), ctx.device),
                             surrogate, ctx.num_classes, random_outputs=ctx.verify_passes > 1)
        return AttackEnv(ctx.device, None, None, surrogate, ctx.num_classes, random_outputs=ctx.verify_passes > 1)

    # ------------------------------------------------------------------ surrogates and data bases

    def surrogate(self, step: Step) -> nn.Module:
        """The surrogate the model basis describes (attackgen.run.surrogates), built once per basis and recorded
        in the item's params (``surrogate_built``), a ``surrogate.built`` info flag and the console."""
        from attackgen.run.surrogates import SurrogateRequest, build_surrogate

        ctx = self.ctx
        spec = ctx.spec
        strategy = ctx.plan.strategy if isinstance(ctx.plan.strategy, dict) else {}
        default = "pretrained" if spec.threat.data_knowledge.value == "none" else "trained_on_data"
        request = SurrogateRequest.resolve(step.context.surrogate, strategy.get("model_basis"),
                                           spec.strategy.model_basis, default_source=default,
                                           defaulted=spec.strategy.model_basis is None)
        built = self._surrogates.get(request.key())
        if built is None:
            budget = spec_query_budget(spec)
            surrogate_steps = [s for s in ctx.steps if s.access == "surrogate"]
            if request.source == "distilled_from_queries" and budget is not None:
                if any(s.queries for s in ctx.steps):
                    raise RunError("strategy.model_basis.source: a surrogate distilled from queries and query "
                                   "attacks in one plan would share the per-input query budget, which is not "
                                   "supported yet; run them as two plans.")
                budget -= sum(int(s.params.get("verify_queries") or 0) for s in surrogate_steps)
            linf = [s.epsilon for s in surrogate_steps if s.norm == "inf" and s.epsilon]
            if ctx.num_classes is None:
                raise RunError(f"{step.attack}: a surrogate model needs the victim's number of classes, and the model "
                               "did not tell it (surrogates are built for classifiers)")
            built = build_surrogate(
                request, input_shape=tuple(ctx.data.x.shape[1:]), classes=ctx.num_classes,
                layout=spec.input_space.layout, basis=self.data_basis(step), victim=ctx.model,
                knowledge=spec.threat.model_knowledge, inputs=ctx.data.x, query_budget=budget,
                step=max(linf) if linf else None, bounds=ctx.bounds,
                seed=derive_seed(ctx.options.seed, 0x5022), device=ctx.device)
            self._surrogates[request.key()] = built
            self.flags.add("surrogate.built", "info", built.summary(),
                           "set strategy.model_basis (source, model, ensemble) to build another surrogate")
            self.echo(built.summary())
        step.params["surrogate_built"] = built.describe()
        return built.model

    def data_basis(self, step: Step) -> tuple[Tensor, Any] | None:
        """The data the strategy's data basis grants the step (None: none, or the attack takes none)."""
        ctx = self.ctx
        strategy = ctx.plan.strategy if isinstance(ctx.plan.strategy, dict) else {}
        spec_basis = ctx.spec.strategy.data_basis
        kind = (step.context.data_basis or strategy.get("data_basis")
                or (None if spec_basis is None else spec_basis.value) or "none")
        if kind == "none" or not ({"training", "surrogate"} & set(step.descriptor.data_bases)):
            return None
        if kind in self._basis:
            return self._basis[kind]
        knowledge = ctx.spec.threat.data_knowledge.value
        if kind == "training" and knowledge != "training":
            raise RunError(f"strategy.data_basis: 'training' needs threat.data_knowledge training, not {knowledge}.")
        basis = None
        from attackgen.models.loading import load_data

        if ctx.options.basis_data:
            data = load_data(ctx.options.basis_data, ctx.spec)
            basis = (data.x, data.y)
        else:
            from attackgen.models.zoo import BUILTIN_DATA

            if f"{ctx.data_ref}-train" in BUILTIN_DATA:
                data = load_data(f"{ctx.data_ref}-train", ctx.spec)
                basis = (data.x, data.y)
                if kind == "surrogate":
                    self.flags.add("data_basis.approximated", "info",
                                   f"the surrogate data basis is the training split of {ctx.data_ref}",
                                   "pass --basis-data with data the attacker really has")
            elif ctx.fit_rows is not None:
                basis = (ctx.data.x[ctx.fit_rows], take_labels(ctx.data.y, ctx.fit_rows, torch.device("cpu")))
            else:
                self.flags.add("data_basis.missing", "warning",
                               f"strategy.data_basis is {kind} but no such data was given, so attacks ran without one",
                               "pass --basis-data FILE (same formats as --data)")
        self._basis[kind] = basis
        return basis

    # ------------------------------------------------------------------ detectors

    def detectors(self) -> list[Any]:
        """The spec's detectors, calibrated once on the clean inputs of the data (the defender's view) to
        5 % false positives; verification then counts a flagged candidate as a failure."""
        if self._detectors is None:
            from attackgen.run.detectors import build_detector

            ctx = self.ctx
            items = detector_items(ctx.spec)
            self._detectors = []
            if items:
                rows = ctx.eval_rows if len(ctx.eval_rows) >= 20 else torch.arange(ctx.n)
                clean = ctx.data.x[rows[:2000]].to(ctx.device)
                names = dict.fromkeys(name for _, item in items for name in item.detectors)
                self._detectors = [build_detector(name, ctx.model, clean, 0.05, ctx.bounds) for name in names]
        return self._detectors
