"""Run a plan over a model and data: enforced access, survivors-only, verified results, checkpoints.

The order of work is item-major: each plan item (one "step" per item) runs over the evaluation inputs
in fixed chunks, and each chunk is checkpointed when it is finished. A step attacks only the inputs of
its chunk that are still unbroken under its own budget (clean failures count as broken), so the
per-input worst case over the plan is kept as AutoAttack keeps it.

What an attack gets is built here from its catalogue descriptor and the spec, never more:
gradients -> WhiteBoxAccess (the spec must be white-box), scores -> ScoreOracle (the spec's granularity
and per-input query budget), labels -> LabelOracle (budgeted), surrogate -> NoAccess (a surrogate
model only). Query budgets are per input and shared by the items of one epsilon group: a later item's
oracle starts with what the earlier ones spent.

Verification, for every candidate: non-finite values are replaced by the clean input, the candidate
is clipped to the bounds, optionally quantised to 8 bits (only the elements the attack changed, and
for Linf never past epsilon), re-run through the model, and only that re-run decides success. The
perturbation is re-measured (L0, L1, L2, Linf in input units, SSIM) and checked against the item's
epsilon (+ a 1e-6 tolerance of the input range), the mask and the SSIM floor; a candidate that succeeds
outside its budget counts as a failure and raises a flag.

A successful candidate counts for every budget it satisfies: the robust accuracy at epsilon e is the
share of inputs that are clean-correct and have no verified candidate of norm <= e. That gives the
robustness curve when a spec lists several epsilons, and the headline figure is the largest one.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attackgen import __version__
from attackgen.models.data import LabeledData
from attackgen.plan.document import ItemContext
from attackgen.results import Flag, InputResult, ItemResult, Norms, RunResult
from attackgen.run.access import Access, LabelOracle, NoAccess, QueryBudgetExceeded, ScoreOracle, WhiteBoxAccess
from attackgen.run.attacks.base import Attack, AttackEnv, Budget, UniversalAttack
from taxonomy.errors import AttackgenError, did_you_mean

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
EXAMPLES = "examples.npz"
OUTPUT_FILES = (CHECKPOINT, RESULTS, EXAMPLES, "report.md", "report.html", "report_files")
"""What a run writes in its output folder; --force replaces these and nothing else."""
CHECKPOINT_VERSION = 1
NORM_COLUMN = {"0": 0, "1": 1, "2": 2, "inf": 3}
SSIM_COLUMN = 4
MAX_EXAMPLES = 8
QUERY_KINDS = ("scores", "labels")


class RunError(AttackgenError):
    """A run cannot start or continue: the output folder, the device, the plan against the spec."""


@dataclass
class RunOptions:
    device: str = "auto"
    batch_size: int | None = None
    limit: int | None = None
    seed: int = 0
    resume: bool = False
    force: bool = False
    progress: bool = True
    basis_data: str | None = None


@dataclass
class Step:
    """One plan item, resolved: its class, its budget, what it may touch."""

    index: int
    attack: str
    role: str
    descriptor: Any
    cls: type[Attack]
    params: dict[str, Any]  # context and params in one mapping, as results.json reports them
    attack_params: dict[str, Any]  # what the attack's constructor takes (checked by its parameter model)
    norm: str | None
    epsilon: float | None  # input units; None in minimal-norm mode or without an Lp bound
    ssim_floor: float | None
    query_budget: int | None
    extra_bounds: list[tuple[str, float]] = field(default_factory=list)  # further Lp bounds that also apply
    wasserstein_radius: float | None = None  # transport cost bound (attackgen.run.wasserstein), checked exactly
    context: ItemContext = field(default_factory=ItemContext)  # the item's threat context, typed

    @property
    def universal(self) -> bool:
        return issubclass(self.cls, UniversalAttack)

    @property
    def access(self) -> str:
        return str(self.descriptor.access)


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
    def from_dict(cls, data: Mapping[str, Any]) -> StepState:
        return cls(**data)

    def count(self, name: str, value: int) -> None:
        if value:
            self.counts[name] = self.counts.get(name, 0) + int(value)


# --------------------------------------------------------------------------- small helpers


def pick_device(request: str) -> torch.device:
    """auto: CUDA when present, else the CPU."""
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if request.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda: CUDA is not available on this machine (torch sees no GPU); use --device cpu.")
    if request != "cpu" and not request.startswith("cuda"):
        raise RunError(f"--device {request}: expected auto, cpu, cuda or cuda:N.")
    return torch.device(request)


def package_versions(device: torch.device) -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in ("attackgen", "torch", "foolbox", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    if device.type == "cuda":
        versions["cuda"] = str(torch.version.cuda)
        versions["gpu"] = torch.cuda.get_device_name(device)
    return versions


def plan_digest(plan: Any) -> str:
    payload = json.dumps(plan.to_data(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def derive_seed(*parts: int) -> int:
    """A seed for one (step, sub-batch): independent of what ran before, so a resumed run draws the same."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def measure(x: Tensor, candidate: Tensor, span: float) -> Tensor:
    """(N, 5) float64: L0 (elements changed by more than 1e-6 of the range), L1, L2, Linf, SSIM."""
    delta = (candidate - x).flatten(1).double()
    out = torch.empty(x.shape[0], 5, dtype=torch.float64, device=x.device)
    out[:, 0] = (delta.abs() > 1e-6 * span).sum(dim=1).double()
    out[:, 1] = delta.abs().sum(dim=1)
    out[:, 2] = delta.norm(dim=1)
    out[:, 3] = delta.abs().amax(dim=1) if delta.shape[1] else 0.0
    if x.dim() == 4:
        from attackgen.run.ssim import ssim

        with torch.no_grad():
            out[:, 4] = ssim(x.float(), candidate.float(), data_range=span).double()
    else:
        out[:, 4] = float("nan")
    return out


def quantize(candidate: Tensor, x: Tensor, budget: Budget) -> Tensor:
    """Round the changed elements to the 8-bit grid of the bounds; for Linf, never past epsilon."""
    lo, hi = budget.bounds
    step = (hi - lo) / 255.0
    q = lo + torch.round((candidate - lo) / step) * step
    if budget.norm == "inf" and budget.epsilon is not None:
        upper = torch.clamp(x + budget.epsilon, max=hi)
        lower = torch.clamp(x - budget.epsilon, min=lo)
        q = torch.where(q > upper, q - step, q)
        q = torch.where(q < lower, q + step, q)
    changed = (candidate - x).abs() > 1e-6 * (hi - lo)
    return torch.where(changed, q, x).clamp(lo, hi)


def patch_side(area_fraction: float, height: int, width: int) -> int:
    """The side of a square patch of at most ``area_fraction`` of the image: floored, never rounded up
    (round(sqrt(0.1 * 28 * 28)) = 9 would cover 10.3 %)."""
    return max(1, min(height, width, math.floor(math.sqrt(area_fraction * height * width) + 1e-9)))


def take_labels(y: Any, rows: Tensor, device: torch.device) -> Any:
    if isinstance(y, Tensor):
        return y[rows].to(device)
    picked = [y[i] for i in rows.tolist()]
    return [{k: v.to(device) if isinstance(v, Tensor) else v for k, v in item.items()} if isinstance(item, dict)
             else item for item in picked]


def _atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    writer(tmp)
    os.replace(tmp, path)


def write_json(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --------------------------------------------------------------------------- the executor


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
        self.plan = plan
        self.spec = plan.parsed_spec()
        self.spec_hash = plan.spec_hash
        self.plan_hash = plan_digest(plan)
        self.model_ref, self.data_ref = model_ref, data_ref
        self.out = Path(out_dir)
        self.options = options or RunOptions()
        self.plan_source = plan_source
        self._model_given, self._data_given = model, data
        self.echo = echo or (lambda message: None)
        if catalog is None:
            from taxonomy.catalog import CATALOG

            catalog = CATALOG
        self.catalog = catalog
        space = self.spec.input_space
        self.bounds = (float(space.bounds[0]), float(space.bounds[1]))
        self.span = self.bounds[1] - self.bounds[0]
        self.tol = 1e-6 * max(1.0, self.span)
        self.task = self.spec.task.value
        self.flags: list[Flag] = []
        self._surrogates: dict[str, Any] = {}  # attackgen.run.surrogates.BuiltSurrogate by model basis
        self._basis: dict[str, tuple[Tensor, Any] | None] = {}
        self._patch_offsets: Tensor | None = None
        self._file_mask: Tensor | None = None
        self._detectors: list[Any] | None = None
        self._check_detector_names()
        self.steps = self._resolve_steps()

    # ------------------------------------------------------------------ detector imperceptibility

    def _detector_items(self) -> list[tuple[int, Any]]:
        return [(i, item) for i, item in enumerate(self.spec.threat.imperceptibility)
                if getattr(item, "kind", "") == "detector"]

    def _check_detector_names(self) -> None:
        """Fail before any work on a detector name that is not built in."""
        from attackgen.run.detectors import DETECTORS

        for i, item in self._detector_items():
            for j, name in enumerate(item.detectors):
                if name not in DETECTORS:
                    raise RunError(
                        f"threat.imperceptibility[{i}].detectors[{j}]: unknown detector {name!r}"
                        f"{did_you_mean(name, DETECTORS)}; built-in detectors are {', '.join(DETECTORS)}."
                    )

    def _verifying_detectors(self) -> list[Any]:
        """The spec's detectors, calibrated once on the clean inputs of the data (the defender's view) to
        5 % false positives; verification then counts a flagged candidate as a failure."""
        if self._detectors is None:
            from attackgen.run.detectors import build_detector

            items = self._detector_items()
            self._detectors = []
            if items:
                rows = self.eval_rows if len(self.eval_rows) >= 20 else torch.arange(self.n)
                clean = self.data.x[rows[:2000]].to(self.device)
                names = dict.fromkeys(name for _, item in items for name in item.detectors)
                self._detectors = [build_detector(name, self.model, clean, 0.05, self.bounds) for name in names]
        return self._detectors

    # ------------------------------------------------------------------ plan -> steps

    def _resolve_steps(self) -> list[Step]:
        steps = []
        spec_floor = self._spec_floor()
        for index, item in enumerate(self.plan.items):
            where = f"{self.plan_source}: items[{index}]"
            descriptor = self.catalog.get(item.attack)
            if descriptor is None:
                hint = did_you_mean(item.attack, self.catalog)
                raise RunError(f"{where}.attack: unknown attack {item.attack!r}{hint}; see `attackgen catalog`.")
            if not getattr(descriptor, "implemented", True):
                raise RunError(f"{where}.attack: {item.attack!r} is catalogued but not implemented yet.")
            cls = self._import(descriptor.implementation, where)
            context = item.context
            epsilon = None if context.mode == "minimal" else item.epsilon
            norm = context.norm
            if norm is None and epsilon is not None:  # an epsilon is always checked, in the spec's norm
                if not self.spec.lp_budgets:
                    raise RunError(f"{where}.context.norm: the item has an epsilon but neither it nor the spec "
                                   "names a norm.")
                norm = self.spec.lp_budgets[0].norm
            norm = None if norm is None else str(norm)
            query_budget = (context.query_budget if context.query_budget is not None
                            else getattr(self.plan, "query_budget", None))
            step = Step(
                index=index, attack=item.attack, role=item.role, descriptor=descriptor, cls=cls,
                params=item.reported_params(), attack_params=item.attack_params(), context=context, norm=norm,
                epsilon=None if epsilon is None else float(epsilon),
                ssim_floor=spec_floor if context.ssim_floor is None else context.ssim_floor,
                query_budget=query_budget,
                wasserstein_radius=(self._spec_radius() if context.wasserstein_max is None
                                    else context.wasserstein_max),
                extra_bounds=[(b.norm, float(b.epsilon)) for b in context.extra_bounds if b.epsilon is not None],
            )
            self._check_against_spec(step, where)
            steps.append(step)
        if not steps:
            raise RunError(f"{self.plan_source}: the plan has no items to run (see its not_runnable list).")
        return steps

    def _import(self, implementation: str, where: str) -> type[Attack]:
        module_name, _, name = implementation.partition(":")
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, name)
        except (ImportError, AttributeError) as error:
            raise RunError(f"{where}: the implementation {implementation} cannot be imported ({error}).") from None
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise RunError(f"{where}: {implementation} is not an attackgen Attack class.")
        return cls

    def _check_against_spec(self, step: Step, where: str) -> None:
        """The plan may not grant an attack more than its spec: access, epsilon, queries."""
        knowledge = self.spec.threat.model_knowledge.kind
        allowed = {
            "white_box": {"gradients", "scores", "labels", "surrogate"},
            "output_transparent": {"scores", "labels", "surrogate"},
            "query_limited": {"scores", "labels", "surrogate"},
            "label_only": {"labels", "surrogate"},
            "full_black_box": {"surrogate"},
        }[knowledge]
        if step.access not in allowed:
            raise RunError(f"{where}: attack {step.attack!r} needs {step.access} access but the spec's "
                           f"threat.model_knowledge is {knowledge}; the plan does not match its spec.")
        if step.epsilon is not None and step.norm is not None:
            limits = [self.spec.input_space.to_input_scale(e) for b in self.spec.lp_budgets if b.norm == step.norm
                      for e in b.epsilons]
            if limits and step.epsilon > max(limits) + self.tol:
                raise RunError(
                    f"{where}: epsilon {step.epsilon:g} (input units) exceeds the spec's largest L{step.norm} "
                    f"epsilon {max(limits):g}; the plan does not match its spec."
                )
        floor, radius = self._spec_floor(), self._spec_radius()
        if floor is not None and (step.ssim_floor is None or step.ssim_floor < floor):
            raise RunError(f"{where}.context.ssim_floor: {step.ssim_floor} is below the spec's SSIM floor {floor:g}; "
                           "the plan does not match its spec.")
        if radius is not None and (step.wasserstein_radius is None or step.wasserstein_radius > radius):
            raise RunError(f"{where}.context.wasserstein_max: {step.wasserstein_radius} exceeds the spec's "
                           f"Wasserstein radius {radius:g}; the plan does not match its spec.")
        spec_budget = getattr(self.spec.threat.model_knowledge, "query_budget", None)
        if spec_budget is not None and step.query_budget is not None and step.query_budget > spec_budget:
            raise RunError(f"{where}: query budget {step.query_budget} exceeds the spec's {spec_budget} per input; "
                           "the plan does not match its spec.")
        if step.access in QUERY_KINDS and spec_budget is not None and step.query_budget is None:
            step.query_budget = spec_budget

    # ------------------------------------------------------------------ the output folder

    def _identity(self) -> dict[str, Any]:
        return {"spec_hash": self.spec_hash, "plan_hash": self.plan_hash, "model": self.model_ref,
                "data": self.data_ref, "limit": self.options.limit, "seed": self.options.seed}

    def _existing_identity(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        checkpoint = None
        path = self.out / CHECKPOINT
        if path.exists():
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:
                raise RunError(f"-o {self.out}: {CHECKPOINT} cannot be read ({error}); use --force to start over."
                               ) from None
            return dict(checkpoint["identity"]), checkpoint
        results = self.out / RESULTS
        if results.exists():
            try:
                data = json.loads(results.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {"spec_hash": "(unreadable results.json)"}
            return {k: data.get(k) for k in ("spec_hash", "plan_hash", "model", "data", "seed")}, None
        return None, None

    def _claim_output(self) -> dict[str, Any] | None:
        """Refuse a folder that holds another run; return the checkpoint to resume from, if any."""
        if self.out.exists() and not self.out.is_dir():
            raise RunError(f"-o {self.out}: exists and is not a folder.")
        existing, checkpoint = self._existing_identity()
        if existing is None:
            self.out.mkdir(parents=True, exist_ok=True)
            return None
        if self.options.force:
            self._clear_outputs()
            return None
        identity = self._identity()
        differ = [k for k in identity if k in existing and existing[k] != identity[k]]
        if differ:
            what = ", ".join(f"{k} {existing.get(k)!r} (this run: {identity[k]!r})" for k in differ)
            verb = "cannot resume it" if self.options.resume else "refusing to mix two runs"
            raise RunError(
                f"-o {self.out}: holds another run ({what}); {verb}. Choose another output folder, or pass "
                "--force to replace it."
            )
        if not self.options.resume:
            state = "a finished run" if checkpoint is None or checkpoint.get("complete") else "a stopped run"
            raise RunError(
                f"-o {self.out}: already holds {state} of this plan; pass --resume to continue it (a finished "
                "run is reported again) or --force to run it again from scratch."
            )
        return checkpoint

    def _clear_outputs(self) -> None:
        import shutil

        for name in OUTPUT_FILES:
            path = self.out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        from attackgen.models.adapters import adapt
        from attackgen.models.loading import check_labels_against_model, check_model, load_data, load_model

        self.device = pick_device(self.options.device)
        model = self._model_given
        if model is None:
            model = load_model(self.model_ref, self.spec.input_space.layout)
        self.model = adapt(model, self.task).eval().to(self.device)
        self.model.requires_grad_(False)
        data = self._data_given if self._data_given is not None else load_data(self.data_ref, self.spec)
        limit = self.options.limit
        if limit is not None:
            if limit < 1:
                raise RunError(f"--limit {limit}: expected a positive number of inputs.")
            data = data.take(slice(0, limit))
        if len(data) == 0:
            raise RunError(f"--data {self.data_ref}: holds no inputs.")
        self.data = data
        self.num_classes = check_model(self.model, data, self.spec, self.model_ref, self.device)
        check_labels_against_model(data, self.num_classes, self.data_ref)
        self.n = len(data)

    def _split(self) -> None:
        """Evaluation rows; for universal and contextual scopes also the rows the perturbation is fitted on."""
        scope = self.spec.threat.scope
        everything = torch.arange(self.n)
        self.fit_rows: Tensor | None = None
        self.in_context: Tensor | None = None
        if scope.kind == "individual":
            self.eval_rows = everything
            return
        gen = torch.Generator().manual_seed(derive_seed(self.options.seed, 0xF17))
        order = torch.randperm(self.n, generator=gen)
        n_held = max(1, math.ceil(self.n * scope.heldout_fraction))
        if self.n - n_held < 1:
            raise RunError(f"threat.scope.heldout_fraction: {self.n} inputs leave nothing to fit on; use more data.")
        self.eval_rows = order[:n_held].sort().values
        fit = order[n_held:].sort().values
        if scope.kind == "contextual":
            matches = self._context_matches(scope.context)
            self.in_context = matches
            fit = fit[matches[fit]]
            if fit.numel() == 0:
                context = scope.context
                test = f"in {context.any_of}" if context.any_of is not None else f"== {context.equals!r}"
                raise RunError(
                    f"threat.scope.context: the predicate {context.field} {test} selects none of the "
                    f"{self.n - n_held} inputs of the fitting split; check the field and values."
                )
        self.fit_rows = fit

    def _context_matches(self, context: Any) -> Tensor:
        if context.field == "label":
            if not isinstance(self.data.y, Tensor):
                raise RunError("threat.scope.context.field: 'label' needs class labels (classification data).")
            values = self.data.y.tolist()
            names = self.data.classes
            match = [context.matches(v) or (bool(names) and v < len(names) and context.matches(names[v]))
                     for v in values]
        elif context.field in self.data.metadata:
            match = [context.matches(v) for v in self.data.metadata[context.field]]
        else:
            fields = ["label", *self.data.metadata]
            raise RunError(
                f"threat.scope.context.field: {context.field!r} is not a field of --data {self.data_ref}"
                f"{did_you_mean(context.field, fields)}; available: {', '.join(fields)}."
            )
        return torch.tensor(match, dtype=torch.bool)

    # ------------------------------------------------------------------ access, budget, environment

    def _make_access(self, step: Step, n: int, spent: Tensor | None) -> Access:
        knowledge = self.spec.threat.model_knowledge
        if step.access == "gradients":
            return WhiteBoxAccess(self.model, n, self.device)
        if step.access == "scores":
            granularity = getattr(knowledge, "granularity", "logits")
            access: Access = ScoreOracle(self.model, n, granularity, getattr(knowledge, "k", None),
                                         step.query_budget, self.device)
        elif step.access == "labels":
            access = LabelOracle(self.model, n, step.query_budget, self.device)
        else:
            return NoAccess(self._surrogate_model(step), n, self.device)
        if spent is not None and step.query_budget is not None:
            access.queries += spent.to(self.device)  # the group's budget is shared by its items
        return access

    def _surrogate_model(self, step: Step) -> nn.Module:
        """The surrogate the model basis describes (attackgen.run.surrogates), built once per basis and recorded
        in the item's params (``surrogate_built``), a ``surrogate.built`` info flag and the console."""
        from attackgen.run.surrogates import SurrogateRequest, build_surrogate

        strategy = self.plan.strategy if isinstance(self.plan.strategy, dict) else {}
        default = "pretrained" if self.spec.threat.data_knowledge.value == "none" else "trained_on_data"
        request = SurrogateRequest.resolve(step.context.surrogate, strategy.get("model_basis"),
                                           self.spec.strategy.model_basis, default_source=default,
                                           defaulted=self.spec.strategy.model_basis is None)
        built = self._surrogates.get(request.key())
        if built is None:
            knowledge = self.spec.threat.model_knowledge
            budget = getattr(knowledge, "query_budget", None)
            surrogate_steps = [s for s in self.steps if s.access == "surrogate"]
            if request.source == "distilled_from_queries" and budget is not None:
                if any(s.access in QUERY_KINDS for s in self.steps):
                    raise RunError("strategy.model_basis.source: a surrogate distilled from queries and query "
                                   "attacks in one plan would share the per-input query budget, which is not "
                                   "supported yet; run them as two plans.")
                budget -= sum(int(s.params.get("verify_queries") or 0) for s in surrogate_steps)
            linf = [s.epsilon for s in surrogate_steps if s.norm == "inf" and s.epsilon]
            built = build_surrogate(
                request, input_shape=tuple(self.data.x.shape[1:]), classes=self.num_classes,
                layout=self.spec.input_space.layout, basis=self._data_basis(step), victim=self.model,
                knowledge=knowledge, inputs=self.data.x, query_budget=budget,
                step=max(linf) if linf else None, bounds=self.bounds,
                seed=derive_seed(self.options.seed, 0x5022), device=self.device)
            self._surrogates[request.key()] = built
            self._flag("surrogate.built", "info", built.summary(),
                       "set strategy.model_basis (source, model, ensemble) to build another surrogate")
            self.echo(built.summary())
        step.params["surrogate_built"] = built.describe()
        return built.model

    def _mask(self, rows: Tensor) -> Tensor | None:
        spatial = self.spec.threat.capability.spatial
        if spatial is None:
            return None
        h, w = self.data.x.shape[-2:]
        if spatial.kind == "mask":
            if self._file_mask is None:
                from attackgen.models.loading import load_mask

                self._file_mask = load_mask(spatial.mask, tuple(self.data.x.shape))
            return self._file_mask.to(self.device)
        mask = torch.zeros(1, 1, h, w, device=self.device)
        if spatial.kind == "box":
            x0, y0, x1, y1 = spatial.box
            r0, c0 = math.floor(y0 * h), math.floor(x0 * w)
            r1, c1 = max(math.ceil(y1 * h), r0 + 1), max(math.ceil(x1 * w), c0 + 1)
            mask[..., r0:r1, c0:c1] = 1.0
            return mask
        side = patch_side(spatial.area_fraction, h, w)
        if spatial.placement == "fixed":
            top, left = (h - side) // 2, (w - side) // 2
            if spatial.location is not None:  # top-left corner as fractions, moved inside if it overhangs
                left = min(math.floor(spatial.location[0] * w + 1e-9), w - side)
                top = min(math.floor(spatial.location[1] * h + 1e-9), h - side)
            mask[..., top : top + side, left : left + side] = 1.0
            return mask
        if self._patch_offsets is None:  # one seeded place per input, the same for every item
            gen = torch.Generator().manual_seed(derive_seed(self.options.seed, 0xBA7C))
            self._patch_offsets = torch.stack([torch.randint(0, h - side + 1, (self.n,), generator=gen),
                                               torch.randint(0, w - side + 1, (self.n,), generator=gen)], dim=1)
        masks = torch.zeros(len(rows), 1, h, w, device=self.device)
        for i, (top, left) in enumerate(self._patch_offsets[rows].tolist()):
            masks[i, :, top : top + side, left : left + side] = 1.0
        return masks

    def _budget(self, step: Step, rows: Tensor) -> Budget:
        return Budget(bounds=self.bounds, norm=step.norm, epsilon=step.epsilon, mask=self._mask(rows),
                      ssim_floor=step.ssim_floor, wasserstein_radius=step.wasserstein_radius)

    def _data_basis(self, step: Step) -> tuple[Tensor, Any] | None:
        strategy = self.plan.strategy if isinstance(self.plan.strategy, dict) else {}
        kind = (step.context.data_basis or strategy.get("data_basis")
                or getattr(self.spec.strategy.data_basis, "value", None) or "none")
        if kind == "none" or not ({"training", "surrogate"} & set(step.descriptor.data_bases)):
            return None
        if kind in self._basis:
            return self._basis[kind]
        knowledge = self.spec.threat.data_knowledge.value
        if kind == "training" and knowledge != "training":
            raise RunError(f"strategy.data_basis: 'training' needs threat.data_knowledge training, not {knowledge}.")
        basis = None
        from attackgen.models.loading import load_data

        if self.options.basis_data:
            data = load_data(self.options.basis_data, self.spec)
            basis = (data.x, data.y)
        else:
            from attackgen.models.zoo import BUILTIN_DATA

            if f"{self.data_ref}-train" in BUILTIN_DATA:
                data = load_data(f"{self.data_ref}-train", self.spec)
                basis = (data.x, data.y)
                if kind == "surrogate":
                    self._flag("data_basis.approximated", "info",
                               f"the surrogate data basis is the training split of {self.data_ref}",
                               "pass --basis-data with data the attacker really has")
            elif self.fit_rows is not None:
                basis = (self.data.x[self.fit_rows], take_labels(self.data.y, self.fit_rows, torch.device("cpu")))
            else:
                self._flag("data_basis.missing", "warning",
                           f"strategy.data_basis is {kind} but no such data was given, so attacks ran without one",
                           "pass --basis-data FILE (same formats as --data)")
        self._basis[kind] = basis
        return basis

    def _env(self, step: Step) -> AttackEnv:
        basis = self._data_basis(step)
        surrogate = self._surrogate_model(step) if step.access == "surrogate" else None
        if basis is not None:
            x, y = basis
            return AttackEnv(self.device, x.to(self.device), take_labels(y, torch.arange(len(x)), self.device),
                             surrogate, self.num_classes)
        return AttackEnv(self.device, None, None, surrogate, self.num_classes)

    def _flag(self, check: str, severity: str, evidence: str, fix: str) -> None:
        if not any(f.check == check and f.evidence == evidence for f in self.flags):
            self.flags.append(Flag(check=check, severity=severity, evidence=evidence, fix=fix))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ batching with out-of-memory back-off

    def _in_sub_batches(self, rows: Tensor, work: Callable[[Tensor], None]) -> None:
        start = 0
        while start < len(rows):
            part = rows[start : start + self.sub_batch]
            try:
                work(part)
            except torch.cuda.OutOfMemoryError:
                if self.sub_batch == 1:
                    raise RunError(
                        f"the device ran out of memory even with one input per batch on {self.device}; "
                        "use --device cpu or a smaller model."
                    ) from None
                self.sub_batch = max(1, self.sub_batch // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.echo(f"out of memory: batch size backs off to {self.sub_batch}")
                continue
            start += len(part)

    def _forward(self, x: Tensor) -> Any:
        with torch.no_grad():
            return self.model(x)

    # ------------------------------------------------------------------ clean pass

    def _clean_pass(self) -> None:
        from attackgen.run.objectives import build_objective

        self.clean_correct = torch.zeros(self.n, dtype=torch.bool)
        self.clean_broken = torch.zeros(self.n, dtype=torch.bool)
        self.applicable = torch.ones(self.n, dtype=torch.bool)
        self.clean_pred = torch.full((self.n,), -1, dtype=torch.long)

        def work(rows: Tensor) -> None:
            x = self.data.x[rows].to(self.device)
            y = take_labels(self.data.y, rows, self.device)
            out = self._forward(x)
            objective = build_objective(self.spec, y, out)
            self.clean_broken[rows] = objective.success(out).bool().cpu()
            applicable = getattr(objective, "applicable", None)
            if applicable is not None:
                self.applicable[rows] = applicable.bool().cpu()
            if self.task == "classification":
                pred = out.argmax(dim=1).cpu()
                self.clean_pred[rows] = pred
                self.clean_correct[rows] = pred == y.cpu()
            else:  # dense tasks: "correct" means the consequence is not realised already
                self.clean_correct[rows] = ~self.clean_broken[rows]

        self._in_sub_batches(torch.arange(self.n), work)

    # ------------------------------------------------------------------ survivors and worst cases

    def _broken(self, norm: str | None, epsilon: float | None, floor: float | None, upto: int) -> Tensor:
        """Inputs broken by a verified candidate of steps [0, upto) that satisfies (norm <= epsilon, SSIM floor)."""
        broken = self.clean_broken.clone()
        for state in self.states[:upto]:
            ok = state.success.clone()
            if norm is not None and epsilon is not None:
                ok &= state.norms[:, NORM_COLUMN[norm]] <= epsilon + self.tol + 1e-6 * epsilon
            if floor is not None:
                ok &= state.norms[:, SSIM_COLUMN] >= floor - 1e-6
            broken |= ok
        return broken

    def _broken_for(self, step: Step, upto: int) -> Tensor:
        return self._broken(step.norm, step.epsilon, step.ssim_floor, upto)

    def _robust(self, broken: Tensor) -> float:
        rows = self.eval_rows
        return float((self.clean_correct[rows] & ~broken[rows]).float().mean()) if len(rows) else 0.0

    def _primary(self) -> tuple[str | None, list[float]]:
        budgets = self.spec.lp_budgets
        if not budgets:
            return None, []
        norm = budgets[0].norm
        epsilons = [float(e) for e in getattr(self.plan, "epsilons", []) or []]
        if not epsilons:
            epsilons = [self.spec.input_space.to_input_scale(e) for e in budgets[0].epsilons]
        return norm, sorted(set(epsilons))

    # ------------------------------------------------------------------ running one step

    def _chunks(self) -> list[Tensor]:
        return list(torch.split(self.eval_rows, self.chunk_size))

    def _run_step(self, step: Step, state: StepState, progress: Any) -> None:
        attack = step.cls(seed=derive_seed(self.options.seed, step.index), **step.attack_params)
        env = self._env(step)
        if step.universal:
            self._fit(step, state, attack, env)
        broken = self._broken_for(step, step.index) | ~self.applicable
        spent = self._group_spent(step)
        task = progress.add_task(f"{step.index + 1}/{len(self.steps)} {step.attack}"
                                 + (f" eps={step.epsilon:g}" if step.epsilon is not None else ""),
                                 total=len(self.eval_rows))
        for chunk_id, rows in enumerate(self._chunks()):
            if chunk_id in state.done:
                progress.advance(task, len(rows))
                continue
            survivors = rows[~broken[rows]]
            started = time.perf_counter()
            self._in_sub_batches(survivors, lambda part: self._attack_rows(step, state, attack, env, part, spent))
            state.time_s += time.perf_counter() - started
            state.done.append(chunk_id)
            self._checkpoint()
            progress.advance(task, len(rows))

    def _group_spent(self, step: Step) -> Tensor | None:
        """Queries the earlier items of this step's epsilon group spent per input (budgets are per group)."""
        if step.access not in QUERY_KINDS or step.query_budget is None:
            return None
        spent = torch.zeros(self.n, dtype=torch.long)
        for other, state in zip(self.steps[: step.index], self.states, strict=False):
            if other.access in QUERY_KINDS and other.epsilon == step.epsilon:
                spent += state.queries
        return spent

    def _fit(self, step: Step, state: StepState, attack: UniversalAttack, env: AttackEnv) -> None:
        from attackgen.run.objectives import build_objective

        if state.fitted is not None:
            attack.fitted = state.fitted.to(self.device)
            return
        rows = self.fit_rows if self.fit_rows is not None else self.eval_rows
        if self.fit_rows is None:
            self._flag("universal.in_sample", "warning",
                       f"{step.attack} was fitted on the evaluation inputs (the spec's scope is individual)",
                       "set threat.scope to universal or contextual to fit and evaluate on separate inputs")
        x = self.data.x[rows].to(self.device)
        y = take_labels(self.data.y, rows, self.device)
        outputs = []
        for part in torch.split(torch.arange(len(rows)), self.sub_batch):
            outputs.append(self._forward(x[part.to(self.device)]))
        clean = torch.cat(outputs) if isinstance(outputs[0], Tensor) else [o for out in outputs for o in out]
        objective = build_objective(self.spec, y, clean)
        access = self._make_access(step, len(rows), None)
        started = time.perf_counter()
        torch.manual_seed(derive_seed(self.options.seed, step.index, 0xF17))
        try:
            fitted = attack.fit(access, x, objective, self._budget(step, rows), env)
        except torch.cuda.OutOfMemoryError:
            raise RunError(f"{step.attack}: out of device memory while fitting on {len(rows)} inputs; "
                           "use --limit or --device cpu.") from None
        state.time_s += time.perf_counter() - started
        fitted = fitted if fitted is not None else attack.fitted
        if fitted is None:
            raise RunError(f"{step.attack}: fit() produced no perturbation; it must return one and set fitted.")
        state.fitted = fitted.detach().cpu()
        state.fit_queries = int(access.queries.sum())
        self._checkpoint()

    def _attack_rows(self, step: Step, state: StepState, attack: Attack, env: AttackEnv, rows: Tensor,
                     spent: Tensor | None) -> None:
        from attackgen.run.objectives import build_objective

        x = self.data.x[rows].to(self.device)
        y = take_labels(self.data.y, rows, self.device)
        clean = self._forward(x)
        objective = build_objective(self.spec, y, clean)
        access = self._make_access(step, len(rows), None if spent is None else spent[rows])
        before = access.queries.clone()
        budget = self._budget(step, rows)
        seed = derive_seed(self.options.seed, step.index, int(rows[0]))
        attack.seed = seed
        torch.manual_seed(seed)
        try:
            candidate = attack.run(access, x, objective, budget, env).x_adv
        except QueryBudgetExceeded as error:
            candidate = None
            self._flag("access.budget_exceeded", "error", f"{step.attack}: {error}",
                       "the attack must check access.remaining() before querying; its inputs count as failures")
        queries = (access.queries - before).cpu()
        self._verify(step, state, rows, x, candidate, objective, clean, budget, queries)

    # ------------------------------------------------------------------ verification

    def _verify(self, step: Step, state: StepState, rows: Tensor, x: Tensor, candidate: Tensor | None,
                objective: Any, clean: Any, budget: Budget, queries: Tensor) -> None:
        n = len(rows)
        counts: dict[str, int] = {}  # applied at the end, so a batch retried after out-of-memory counts once
        valid = torch.ones(n, dtype=torch.bool, device=x.device)
        if candidate is None or not isinstance(candidate, Tensor) or tuple(candidate.shape) != tuple(x.shape):
            if candidate is not None:
                counts["bad_shape"] = n
            candidate = x.clone()
            valid[:] = False
        candidate = candidate.detach().to(device=x.device, dtype=x.dtype)
        finite = torch.isfinite(candidate).flatten(1).all(dim=1)
        if not bool(finite.all()):
            counts["non_finite"] = int((~finite).sum())
            candidate = torch.where(finite.view(-1, *([1] * (x.dim() - 1))), candidate, x)
            valid &= finite
        lo, hi = self.bounds
        outside = ((candidate < lo - self.tol) | (candidate > hi + self.tol)).flatten(1).any(dim=1)
        counts["outside_bounds"] = int(outside.sum())
        candidate = candidate.clamp(lo, hi)
        if self.spec.threat.capability.quantize:
            candidate = quantize(candidate, x, budget)
        outputs = self._forward(candidate)
        hit = objective.success(outputs).bool() & valid
        norms = measure(x, candidate, self.span)
        within = self._within(step, budget, x, candidate, norms)
        if step.wasserstein_radius is not None:
            from attackgen.run.wasserstein import wasserstein_distance

            cost = wasserstein_distance(x, candidate, int(step.params.get("kernel", 5)), 2.0).to(x.device)
            within &= cost <= step.wasserstein_radius * (1 + 1e-6)
            column = state.metrics.setdefault("wasserstein", torch.full((self.n,), float("nan"), dtype=torch.float64))
            column[rows.cpu()] = cost.double().cpu()
        success = hit & within
        counts["over_budget"] = int((hit & ~within).sum())
        detectors = self._verifying_detectors()
        if detectors:
            flagged = torch.zeros(n, dtype=torch.bool, device=x.device)
            for detector in detectors:
                flagged |= detector.detect(candidate).to(x.device)
            column = state.metrics.setdefault("detected", torch.full((self.n,), float("nan"), dtype=torch.float64))
            column[rows.cpu()] = torch.where(success, flagged.double(), torch.nan).cpu()
            counts["detected"] = int((success & flagged).sum())
            success = success & ~flagged
        metrics = objective.metrics(clean, outputs) or {}
        for name, value in counts.items():
            state.count(name, value)
        cpu_rows = rows.cpu()
        state.attacked[cpu_rows] = True
        state.hit[cpu_rows] = hit.cpu()
        state.within[cpu_rows] = within.cpu()
        state.success[cpu_rows] = success.cpu()
        state.norms[cpu_rows] = norms.cpu()
        state.queries[cpu_rows] = queries.long()
        if self.task == "classification":
            state.adv_label[cpu_rows] = outputs.argmax(dim=1).cpu()
        for name, values in metrics.items():
            column = state.metrics.setdefault(name, torch.full((self.n,), float("nan"), dtype=torch.float64))
            column[cpu_rows] = torch.as_tensor(values).detach().double().cpu()
        self._keep_examples(state, cpu_rows, x, candidate, objective, clean, outputs, success.cpu())

    def _within(self, step: Step, budget: Budget, x: Tensor, candidate: Tensor, norms: Tensor) -> Tensor:
        ok = torch.ones(len(x), dtype=torch.bool, device=x.device)
        if step.norm is not None and step.epsilon is not None:
            slack = 0.0 if step.norm == "0" else self.tol + 1e-6 * step.epsilon
            ok &= norms[:, NORM_COLUMN[step.norm]] <= step.epsilon + slack
        if budget.mask is not None:
            outside = ((candidate - x).abs() * (1 - budget.mask)).flatten(1).amax(dim=1)
            ok &= outside <= self.tol
        for norm, epsilon in step.extra_bounds:
            slack = 0.0 if norm == "0" else self.tol + 1e-6 * epsilon
            ok &= norms[:, NORM_COLUMN[norm]] <= epsilon + slack
        if step.ssim_floor is not None:
            ok &= norms[:, SSIM_COLUMN] >= step.ssim_floor - 1e-6
        return ok

    def _keep_examples(self, state: StepState, rows: Tensor, x: Tensor, candidate: Tensor, objective: Any,
                       clean: Any, outputs: Any, success: Tensor) -> None:
        """The first verified successes of a step, for the report (dense objectives add their own arrays)."""
        won = success.nonzero().flatten().tolist()[: MAX_EXAMPLES - len(state.examples)]
        if not won:
            return
        extra = objective.example_arrays(clean, outputs) if hasattr(objective, "example_arrays") else {}
        for i in won:
            example = {"index": int(rows[i]), "clean": x[i].cpu(), "adversarial": candidate[i].cpu(),
                       "adv_pred": -1, "extra": {k: torch.as_tensor(np.asarray(v[i])) for k, v in extra.items()}}
            if isinstance(outputs, Tensor) and outputs.dim() == 2:
                example["adv_pred"] = int(outputs[i].argmax())
            state.examples.append(example)

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, complete: bool = False) -> None:
        payload = {
            "version": CHECKPOINT_VERSION,
            "identity": self._identity(),
            "complete": complete,
            "started": self.started,
            "chunk_size": self.chunk_size,
            "n": self.n,
            "steps": [state.to_dict() for state in self.states],
            "flags": [flag.model_dump() for flag in self.flags],
        }
        _atomic_write(self.out / CHECKPOINT, lambda tmp: torch.save(payload, tmp))

    def _restore(self, checkpoint: Mapping[str, Any]) -> None:
        if checkpoint.get("version") != CHECKPOINT_VERSION or checkpoint.get("n") != self.n:
            raise RunError(f"-o {self.out}: its checkpoint is from another version or data size; use --force.")
        self.started = checkpoint["started"]
        self.chunk_size = int(checkpoint["chunk_size"])
        self.states = [StepState.from_dict(s) for s in checkpoint["steps"]]
        self.flags = [Flag(**f) for f in checkpoint.get("flags", [])]
        finished = sum(len(s.done) for s in self.states)
        self.echo(f"resuming: {finished} finished batches are kept, not run again")

    # ------------------------------------------------------------------ the run

    def run(self) -> RunResult:
        checkpoint = self._claim_output()
        self._load()
        self._split()
        for step in self.steps:  # a missing surrogate is a bad input: say so before any attack runs
            if step.access == "surrogate":
                self._surrogate_model(step)
        self.sub_batch = self.chunk_size = int(self.options.batch_size or (1024 if self.device.type == "cuda" else 256))
        if self.chunk_size < 1:
            raise RunError(f"--batch-size {self.chunk_size}: expected a positive number.")
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.states = [StepState.empty(self.n) for _ in self.steps]
        if checkpoint is not None:
            self._restore(checkpoint)
            self.sub_batch = min(self.sub_batch, self.chunk_size)
        torch.manual_seed(self.options.seed)
        self._clean_pass()
        try:
            with self._progress() as progress:
                for step, state in zip(self.steps, self.states, strict=True):
                    self._run_step(step, state, progress)
        except (KeyboardInterrupt, AttackgenError):
            self._checkpoint()
            self._write(self._assemble(complete=False))
            raise
        result = self._assemble(complete=True)
        result.flags.extend(self._soundness(result))
        self._checkpoint(complete=True)
        self._write(result)
        return result

    @contextmanager
    def _progress(self) -> Iterator[Any]:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), disable=not self.options.progress)
        with progress:
            yield progress

    def _soundness(self, result: RunResult) -> list[Flag]:
        flags: list[Flag] = []
        try:
            from attackgen.audit.soundness import run_flags
        except ImportError:
            run_flags = None
        if run_flags is not None:
            flags += run_flags(result)
        try:
            from attackgen.run.soundness_probe import probe_model
        except ImportError:
            return flags
        from attackgen.run.objectives import build_objective

        rows = self.eval_rows[:64]
        x = self.data.x[rows].to(self.device)
        y = take_labels(self.data.y, rows, self.device)
        objective = build_objective(self.spec, y, self._forward(x))
        flags += probe_model(self.model, x, y if isinstance(y, Tensor) else None, objective)
        return flags

    # ------------------------------------------------------------------ results

    def _assemble(self, complete: bool) -> RunResult:
        items = [self._item_result(step, state) for step, state in zip(self.steps, self.states, strict=True)]
        flags = list(self.flags)
        for step, state in zip(self.steps, self.states, strict=True):
            flags += self._verification_flags(step, state)
        norm, epsilons = self._primary()
        if norm is not None and epsilons:
            headline = self._broken(norm, max(epsilons), self._spec_floor(), len(self.states))
        else:
            headline = self._broken(None, None, self._spec_floor(), len(self.states))
        curve = []
        if norm is not None and len(epsilons) > 1:
            curve = [{"epsilon": e, "robust_accuracy": self._robust(self._broken(norm, e, self._spec_floor(),
                                                                                  len(self.states)))}
                     for e in epsilons]
        rows = self.eval_rows
        metrics: dict[str, float] = {"chunk_size": float(self.chunk_size)}
        if self.options.limit is not None:
            metrics["limit"] = float(self.options.limit)
        if self.fit_rows is not None:
            metrics["n_fit"] = float(len(self.fit_rows))
        if norm is not None and epsilons:
            metrics["headline_epsilon"] = max(epsilons)
        return RunResult(
            attackgen_version=__version__,
            spec=self.spec.model_dump(mode="json"),
            spec_hash=self.spec_hash,
            plan_hash=self.plan_hash,
            task=self.task,
            model=self.model_ref,
            data=self.data_ref,
            device=str(self.device),
            seed=self.options.seed,
            versions=package_versions(self.device),
            started=self.started,
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds") if complete else None,
            complete=complete,
            n_inputs=len(rows),
            clean_accuracy=float(self.clean_correct[rows].float().mean()),
            robust_accuracy=self._robust(headline),
            curve=curve,
            items=items,
            flags=flags,
            metrics=metrics,
        )

    def _spec_radius(self) -> float | None:
        return next((float(i.threshold) for i in self.spec.threat.imperceptibility
                     if getattr(i, "kind", "") == "perceptual" and i.metric == "wasserstein"), None)

    def _spec_floor(self) -> float | None:
        return next((i.threshold for i in self.spec.threat.imperceptibility
                     if getattr(i, "kind", "") == "perceptual" and i.metric == "ssim"), None)

    def _item_result(self, step: Step, state: StepState) -> ItemResult:
        rows = self.eval_rows[state.attacked[self.eval_rows]]
        labels = self.data.y if isinstance(self.data.y, Tensor) and self.data.y.dim() == 1 else None
        inputs = []
        for i in rows.tolist():
            norms = state.norms[i].tolist()
            inputs.append(InputResult(
                index=i,
                label=int(labels[i]) if labels is not None else None,
                clean_correct=bool(self.clean_correct[i]),
                success=bool(state.success[i]),
                within_budget=bool(state.within[i]),
                norms=Norms(l0=norms[0], l1=norms[1], l2=norms[2], linf=norms[3],
                            ssim=None if math.isnan(norms[4]) else norms[4]),
                queries=int(state.queries[i]),
                adversarial_label=int(state.adv_label[i]) if state.adv_label[i] >= 0 else None,
                metrics=self._input_metrics(state, i),
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
            if step.access in QUERY_KINDS:
                metrics["fit_queries"] = float(state.fit_queries)
            if self.in_context is not None and n_attacked:
                inside = self.in_context[rows]
                for name, part in (("in_context", inside), ("out_of_context", ~inside)):
                    metrics[f"n_{name}"] = float(part.sum())
                    if bool(part.any()):
                        metrics[f"success_rate_{name}"] = float(state.success[rows][part].float().mean())
        if self.in_context is not None:
            for record in inputs:
                record.metrics["in_context"] = float(bool(self.in_context[record.index]))
        queries = state.queries[rows].double()
        return ItemResult(
            attack=step.attack,
            params=dict(step.params),
            epsilon=step.epsilon,
            n_attacked=n_attacked,
            n_success=n_success,
            robust_accuracy_after=self._robust(self._broken_for(step, step.index + 1)),
            success_rate=n_success / n_attacked if n_attacked else 0.0,
            median_queries=float(queries.median()) if step.access in QUERY_KINDS and n_attacked else None,
            time_s=round(state.time_s, 4),
            transfer_estimate=step.access == "surrogate",
            metrics=metrics,
            inputs=inputs,
        )

    @staticmethod
    def _input_metrics(state: StepState, i: int) -> dict[str, float]:
        out = {}
        for name, column in state.metrics.items():
            value = float(column[i])
            if not math.isnan(value):
                out[name] = value
        return out

    def _verification_flags(self, step: Step, state: StepState) -> list[Flag]:
        flags = []
        where = f"item {step.index + 1} ({step.attack})"
        counts = state.counts
        if counts.get("over_budget"):
            flags.append(Flag(check="verification.out_of_budget", severity="error",
                              evidence=f"{where}: {counts['over_budget']} candidates fooled the model only outside "
                              f"their budget (L{step.norm} <= {step.epsilon}, mask, SSIM floor); counted as failures",
                              fix="the attack must project into its Budget (budget.project) before returning"))
        if counts.get("detected"):
            names = ", ".join(sorted({n for _, item in self._detector_items() for n in item.detectors}))
            flags.append(Flag(check="verification.detected", severity="info",
                              evidence=f"{where}: {counts['detected']} candidates fooled the model within budget "
                              f"but the detector ({names}) flagged them; counted as failures",
                              fix="use a detector-aware attack (detector_aware_pgd) to keep the detector quiet"))
        if counts.get("outside_bounds"):
            flags.append(Flag(check="verification.outside_bounds", severity="warning",
                              evidence=f"{where}: {counts['outside_bounds']} candidates left the input bounds "
                              f"{list(self.bounds)}; they were clipped and re-run, and only the re-run counts",
                              fix="clip to budget.bounds inside the attack"))
        if counts.get("non_finite"):
            flags.append(Flag(check="verification.non_finite", severity="error",
                              evidence=f"{where}: {counts['non_finite']} candidates held NaN or infinite values; "
                              "counted as failures", fix="check the attack's step sizes and divisions"))
        if counts.get("bad_shape"):
            flags.append(Flag(check="verification.shape", severity="error",
                              evidence=f"{where}: returned candidates of the wrong shape for {counts['bad_shape']} "
                              "inputs; counted as failures", fix="return x_adv with the shape of x"))
        return flags

    def _write(self, result: RunResult) -> None:
        write_json(self.out / RESULTS, result.model_dump_json(indent=1))
        self._write_examples()

    def _write_examples(self) -> None:
        chosen: list[tuple[Step, dict[str, Any]]] = []
        seen: set[int] = set()
        for step, state in zip(self.steps, self.states, strict=True):
            for example in state.examples:
                if example["index"] not in seen and len(chosen) < MAX_EXAMPLES:
                    seen.add(example["index"])
                    chosen.append((step, example))
        if not chosen:
            return
        index = [e["index"] for _, e in chosen]
        labels = [int(self.data.y[i]) if isinstance(self.data.y, Tensor) and self.data.y.dim() == 1 else -1
                  for i in index]
        arrays = {
            "index": np.array(index),
            "clean": torch.stack([e["clean"] for _, e in chosen]).float().numpy(),
            "adversarial": torch.stack([e["adversarial"] for _, e in chosen]).float().numpy(),
            "label": np.array(labels),
            "clean_pred": np.array([int(self.clean_pred[i]) for i in index]),
            "adv_pred": np.array([e["adv_pred"] for _, e in chosen]),
            "attack": np.array([s.attack for s, _ in chosen]),
            "epsilon": np.array([s.epsilon if s.epsilon is not None else np.nan for s, _ in chosen]),
            "classes": np.array(self.data.classes or [str(i) for i in range(self.num_classes or 0)]),
            "bounds": np.array(self.bounds),
        }
        extra_keys = set.intersection(*(set(e.get("extra", {})) for _, e in chosen))
        for key in sorted(extra_keys):  # per-task arrays (label maps, boxes) for the task's report panel
            arrays[key] = np.stack([e["extra"][key].numpy() for _, e in chosen])
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **arrays)

        _atomic_write(self.out / EXAMPLES, save)


def execute(
    plan_path: str | Path,
    model_ref: str,
    data_ref: str,
    out_dir: str | Path,
    options: RunOptions | None = None,
    echo: Callable[[str], None] | None = None,
) -> RunResult:
    """Load a plan file and run it; the entry point of `attackgen run`."""
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
    executor = Executor(plan, model_ref, data_ref, out_dir, options, plan_source=str(plan_path), echo=echo)
    return executor.run()
