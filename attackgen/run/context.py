"""The run context: everything a run reads and nothing it writes, built once and then frozen.

``load_context`` loads and checks the model and data, applies --limit, picks the device, splits the
inputs into evaluation and fitting rows (universal and contextual scopes) and fixes the spatial masks,
so that later parts (steps, verification, assembly) take their inputs from one immutable object instead
of attributes that appear as a run goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
from torch import Tensor, nn

from attackgen.models.data import LabeledData
from attackgen.run.attacks.base import Budget
from attackgen.run.items import RunError, Step
from taxonomy.errors import did_you_mean


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
    escalate: bool | None = None  # adaptive escalation: None = on, except for preset plans (attackgen.run.escalate)
    autocast: str | None = None  # "bf16" or "fp16": attacks take their gradient steps in it; verification stays float32
    compile: bool = False  # torch.compile the model (attacks and verification run the compiled model)
    threads: int | None = None  # CPU threads for torch; None: OMP_NUM_THREADS, else attackgen.run.threads
    save_adversarial: bool = False  # keep each verified success's input (checkpointed), write adversarial.npz


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
    """Over the plan in the flat version-1 item layout (context and params in one mapping), so a run
    stopped before plan version 2 resumes under it."""
    data = plan.to_data()
    if all(hasattr(item, "reported_params") for item in plan.items):
        data["plan_version"] = 1
        data["items"] = [{**{k: v for k, v in d.items() if k != "context"}, "params": item.reported_params()}
                         for d, item in zip(data["items"], plan.items, strict=True)]
    payload = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def derive_seed(*parts: int) -> int:
    """A seed for (run seed, step, input...): independent of what ran before, so a resumed run draws the same."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def patch_side(area_fraction: float, height: int, width: int) -> int:
    """The side of a square patch of at most ``area_fraction`` of the image: floored, never rounded up
    (round(sqrt(0.1 * 28 * 28)) = 9 would cover 10.3 %)."""
    return max(1, min(height, width, math.floor(math.sqrt(area_fraction * height * width) + 1e-9)))


def take_labels(y: Any, rows: Tensor, device: torch.device) -> Any:
    """Labels of ``rows`` on ``device``: a class tensor, or one target dict per input (dense tasks)."""
    if isinstance(y, Tensor):
        return y[rows].to(device)
    picked = [y[i] for i in rows.tolist()]
    return [{k: v.to(device) if isinstance(v, Tensor) else v for k, v in item.items()} if isinstance(item, dict)
             else item for item in picked]


@dataclass(frozen=True)
class RunContext:
    """What a run reads: spec, plan, resolved steps, model, data, device, splits, masks, batch sizes."""

    plan: Any
    spec: Any
    steps: tuple[Step, ...]
    options: RunOptions
    model_ref: str
    data_ref: str
    model: nn.Module
    data: LabeledData
    device: torch.device
    num_classes: int | None
    eval_rows: Tensor  # the inputs results are reported on
    fit_rows: Tensor | None  # universal and contextual scopes: what a perturbation is fitted on
    in_context: Tensor | None  # contextual scope: which inputs match the context predicate
    chunk_size: int  # inputs per checkpointed chunk (fixed for the run, kept on resume)
    sub_batch: int  # inputs per forward pass at the start (backs off on out-of-memory)
    patch_offsets: Tensor | None  # random patch placement: one (top, left) per input
    file_mask: Tensor | None  # spatial mask from a file, on the device
    threads: tuple[int, str] = (1, "")  # torch's CPU threads for the run, and why that many
    verify_passes: int = 1  # a randomised model: each success is verified over this many passes (majority)

    @property
    def n(self) -> int:
        return len(self.data)

    @property
    def task(self) -> str:
        return str(self.spec.task.value)

    @property
    def bounds(self) -> tuple[float, float]:
        lo, hi = self.spec.input_space.bounds
        return float(lo), float(hi)

    @property
    def span(self) -> float:
        return self.bounds[1] - self.bounds[0]

    @property
    def tol(self) -> float:
        """Slack of a budget check: 1e-6 of the input range."""
        return 1e-6 * max(1.0, self.span)

    def forward(self, x: Tensor) -> Any:
        """The model on x; a classifier's output batch is checked on every call (a model may go wrong late)."""
        with torch.no_grad():
            out = self.model(x)
        if self.task == "classification":
            expected = (len(x), self.num_classes) if self.num_classes else None
            if not isinstance(out, Tensor) or out.dim() != 2 or (expected and tuple(out.shape) != expected):
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"the model returned outputs of shape {shape} for a batch of {len(x)} inputs "
                                 f"(expected {expected or '(n, classes)'})")
        return out

    def inputs(self, rows: Tensor) -> tuple[Tensor, Any]:
        """Inputs and labels of ``rows`` on the device."""
        return self.data.x[rows].to(self.device), take_labels(self.data.y, rows, self.device)

    def mask(self, rows: Tensor) -> Tensor | None:
        """The spatial capability as a 0/1 mask for ``rows`` (None: the whole input may change)."""
        spatial = self.spec.threat.capability.spatial
        if spatial is None:
            return None
        if self.file_mask is not None:
            return self.file_mask
        h, w = self.data.x.shape[-2:]
        mask = torch.zeros(1, 1, h, w, device=self.device)
        if spatial.kind == "box":
            x0, y0, x1, y1 = spatial.box
            r0, c0 = math.floor(y0 * h), math.floor(x0 * w)
            r1, c1 = max(math.ceil(y1 * h), r0 + 1), max(math.ceil(x1 * w), c0 + 1)
            mask[..., r0:r1, c0:c1] = 1.0
            return mask
        side = patch_side(spatial.area_fraction, h, w)
        if self.patch_offsets is None:  # fixed placement
            top, left = (h - side) // 2, (w - side) // 2
            if spatial.location is not None:  # top-left corner as fractions, moved inside if it overhangs
                left = min(math.floor(spatial.location[0] * w + 1e-9), w - side)
                top = min(math.floor(spatial.location[1] * h + 1e-9), h - side)
            mask[..., top : top + side, left : left + side] = 1.0
            return mask
        masks = torch.zeros(len(rows), 1, h, w, device=self.device)
        for i, (top, left) in enumerate(self.patch_offsets[rows].tolist()):
            masks[i, :, top : top + side, left : left + side] = 1.0
        return masks

    def budget(self, step: Step, rows: Tensor) -> Budget:
        """What the attack of ``step`` is told about its constraints on ``rows``."""
        return Budget(bounds=self.bounds, norm=step.norm, epsilon=step.epsilon, mask=self.mask(rows),
                      ssim_floor=step.ssim_floor, wasserstein_radius=step.wasserstein_radius)

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run (a folder holding another identity is refused)."""
        return run_identity(self.plan, self.model_ref, self.data_ref, self.options)


def run_identity(plan: Any, model_ref: str, data_ref: str, options: RunOptions) -> dict[str, Any]:
    return {"spec_hash": plan.spec_hash, "plan_hash": plan_digest(plan), "model": model_ref, "data": data_ref,
            "limit": options.limit, "seed": options.seed, "autocast": options.autocast}


def load_context(
    plan: Any,
    steps: Sequence[Step],
    model_ref: str,
    data_ref: str,
    options: RunOptions,
    model: nn.Module | None = None,
    data: LabeledData | None = None,
    chunk_size: int | None = None,
) -> RunContext:
    """Load and check model and data, split the inputs, fix masks and batch sizes (``chunk_size``: a
    resumed run's, which it keeps)."""
    from attackgen.models.adapters import adapt
    from attackgen.models.loading import check_labels_against_model, check_model, load_data, load_model
    from attackgen.models.saved import runnable

    spec = plan.parsed_spec()
    if not 0 <= options.seed < 2**63:
        raise RunError(f"--seed {options.seed}: expected a whole number from 0 to 2**63-1.")
    device = pick_device(options.device)
    if model is None:
        model = load_model(model_ref, spec.input_space.layout)
    model = runnable(model)  # ScriptModules and exported modules refuse requires_grad_ / eval()
    model = adapt(model, spec.task.value).eval().to(device)
    model.requires_grad_(False)
    if options.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    if data is None:
        data = load_data(data_ref, spec)
    if options.limit is not None:
        if options.limit < 1:
            raise RunError(f"--limit {options.limit}: expected a positive number of inputs.")
        data = data.take(slice(0, options.limit))
    if len(data) == 0:
        raise RunError(f"--data {data_ref}: holds no inputs.")
    num_classes = check_model(model, data, spec, model_ref, device)
    from attackgen.run.threads import choose_threads

    threads = choose_threads(options.threads, model, tuple(data.x.shape[1:]), device)
    check_labels_against_model(data, num_classes, data_ref)
    eval_rows, fit_rows, in_context = split_rows(spec, data, data_ref, options.seed)
    requested = int(options.batch_size or (1024 if device.type == "cuda" else 256))
    if requested < 1:
        raise RunError(f"--batch-size {requested}: expected a positive number.")
    chunk = chunk_size or requested
    spatial = spec.threat.capability.spatial
    file_mask = offsets = None
    if spatial is not None and spatial.kind == "mask":
        from attackgen.models.loading import load_mask

        file_mask = load_mask(spatial.mask, tuple(data.x.shape)).to(device)
    elif spatial is not None and spatial.kind == "patch" and spatial.placement != "fixed":
        h, w = data.x.shape[-2:]
        side = patch_side(spatial.area_fraction, h, w)
        gen = torch.Generator().manual_seed(derive_seed(options.seed, 0xBA7C))  # one place per input, every item
        offsets = torch.stack([torch.randint(0, h - side + 1, (len(data),), generator=gen),
                               torch.randint(0, w - side + 1, (len(data),), generator=gen)], dim=1)
    return RunContext(plan=plan, spec=spec, steps=tuple(steps), options=options, model_ref=model_ref,
                      data_ref=data_ref, model=model, data=data, device=device, num_classes=num_classes,
                      eval_rows=eval_rows, fit_rows=fit_rows, in_context=in_context, chunk_size=chunk,
                      sub_batch=min(requested, chunk), patch_offsets=offsets, file_mask=file_mask, threads=threads)


def split_rows(spec: Any, data: LabeledData, data_ref: str, seed: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Evaluation rows; for universal and contextual scopes also the rows the perturbation is fitted on
    and which inputs match the context."""
    scope = spec.threat.scope
    n = len(data)
    if scope.kind == "individual":
        return torch.arange(n), None, None
    gen = torch.Generator().manual_seed(derive_seed(seed, 0xF17))
    order = torch.randperm(n, generator=gen)
    n_held = max(1, math.ceil(n * scope.heldout_fraction))
    if n - n_held < 1:
        raise RunError(f"threat.scope.heldout_fraction: {n} inputs leave nothing to fit on; use more data.")
    eval_rows = order[:n_held].sort().values
    fit = order[n_held:].sort().values
    in_context = None
    if scope.kind == "contextual":
        in_context = context_matches(scope.context, data, data_ref)
        fit = fit[in_context[fit]]
        if fit.numel() == 0:
            context = scope.context
            test = f"in {context.any_of}" if context.any_of is not None else f"== {context.equals!r}"
            raise RunError(
                f"threat.scope.context: the predicate {context.field} {test} selects none of the "
                f"{n - n_held} inputs of the fitting split; check the field and values."
            )
    return eval_rows, fit, in_context


def context_matches(context: Any, data: LabeledData, data_ref: str) -> Tensor:
    """Which inputs the context predicate selects, by label (or class name) or a metadata field."""
    if context.field == "label":
        if not isinstance(data.y, Tensor):
            raise RunError("threat.scope.context.field: 'label' needs class labels (classification data).")
        names = data.classes
        match = [context.matches(v) or (bool(names) and v < len(names) and context.matches(names[v]))
                 for v in data.y.tolist()]
    elif context.field in data.metadata:
        match = [context.matches(v) for v in data.metadata[context.field]]
    else:
        fields = ["label", *data.metadata]
        raise RunError(
            f"threat.scope.context.field: {context.field!r} is not a field of --data {data_ref}"
            f"{did_you_mean(context.field, fields)}; available: {', '.join(fields)}."
        )
    return torch.tensor(match, dtype=torch.bool)
