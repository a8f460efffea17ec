"""Typed attack parameters: one pydantic model per attack, the single source of its defaults.

A catalogue entry names its model (``params=PGDParams``); the planner writes the model's defaults into
each plan item, ``load_plan`` validates an edited plan's params against it (unknown names, wrong types
and out-of-range values are refused with the attack id, the field and a did-you-mean), and the attack
module reads typed fields (``self.params.steps``). Pure pydantic, no torch.

Parameters are the attack's own hyperparameters. The threat context (norm, epsilon, mode, targets,
data basis, perceptual floors, surrogate) lives in ``PlanItem.context``, not here. A few parameters are
filled by the planner from the spec because the attack itself needs them (the patch's area and
placement, the detectors to evade); they are still the attack's parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taxonomy.errors import did_you_mean, field_path


class AttackParams(BaseModel):
    """Base of every attack's parameter model: unknown names are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retired: ClassVar[frozenset[str]] = frozenset()
    """Names that older plans (plan_version 1) wrote but the attack never read; dropped when such a plan loads."""

    def planned(self) -> dict[str, Any]:
        """The values a plan writes: every field that has a value (None means 'the attack decides')."""
        return self.model_dump(mode="json", exclude_none=True)


def defaults_of(model: type[AttackParams]) -> dict[str, Any]:
    """The model's defaults as plain data (what the planner starts from)."""
    return model().planned()


def param_problems(attack: str, model: type[AttackParams], given: dict[str, Any]) -> list[str]:
    """Why ``given`` is not a valid parameter set for ``attack``: one line per field, with a did-you-mean."""
    try:
        model.model_validate(given)
    except ValidationError as error:
        problems = []
        names = list(model.model_fields)
        for item in error.errors(include_url=False):
            name = field_path(tuple(item["loc"]))
            if item["type"] == "extra_forbidden":
                hint = did_you_mean(name, names) or f" (it takes: {', '.join(names)})"
                problems.append(f"params.{name}: attack {attack!r} has no parameter {name!r}{hint}")
            else:
                value = item.get("input")
                message = str(item["msg"]).removeprefix("Value error, ")
                message = message[:1].lower() + message[1:]
                shown = "" if "got " in message else f" (got {value!r})"
                problems.append(f"params.{name} (attack {attack!r}): {message}{shown}")
        return problems
    return []


# --------------------------------------------------------------------------- shared pieces


class StepParams(AttackParams):
    """Gradient steps sized relative to epsilon, so a default stays right for every epsilon.

    The planner turns ``rel_stepsize`` into ``step_size`` in input units for the item's epsilon; an attack
    run without a plan uses ``rel_stepsize * epsilon``.
    """

    rel_stepsize: float = Field(0.1, gt=0)
    step_size: float | None = Field(None, gt=0)

    per_run: ClassVar[float | None] = None
    """When set, ``rel_stepsize`` defaults to ``per_run / steps`` (PGD's 2.5 * epsilon / steps), so a model
    built with other ``steps`` keeps the paper's total step length."""

    @model_validator(mode="before")
    @classmethod
    def _step_follows_steps(cls, data: Any) -> Any:
        if cls.per_run is not None and isinstance(data, dict) and "rel_stepsize" not in data:
            steps = data.get("steps", cls.model_fields["steps"].default)
            if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1:
                return {**data, "rel_stepsize": cls.per_run / steps}
        return data

    def step_for(self, epsilon: float) -> float:
        """The step in input units: the planned ``step_size``, else ``rel_stepsize * epsilon``."""
        return float(self.step_size) if self.step_size is not None else self.rel_stepsize * float(epsilon)


class Iterative(StepParams):
    steps: int = Field(10, ge=1)
    early_stop: bool = True


# --------------------------------------------------------------------------- white-box, fixed epsilon


class FGSMParams(AttackParams):
    random_start: bool = False
    step_size: float | None = Field(None, gt=0)  # None: one step of epsilon


class BIMParams(Iterative):
    steps: int = Field(10, ge=1)
    rel_stepsize: float = Field(0.2, gt=0)


class PGDParams(Iterative):
    """Madry et al.: step = 2.5 * epsilon / steps unless rel_stepsize or step_size is given."""

    per_run = 2.5
    steps: int = Field(40, ge=1)
    rel_stepsize: float = Field(2.5 / 40, gt=0)
    restarts: int = Field(1, ge=1)
    random_start: bool = True


class MIFGSMParams(Iterative):
    steps: int = Field(10, ge=1)
    rel_stepsize: float = Field(0.1, gt=0)
    decay: float = Field(1.0, ge=0)


# --------------------------------------------------------------------------- minimal norm


class CWParams(AttackParams):
    binary_search_steps: int = Field(5, ge=1)
    steps: int = Field(100, ge=1)
    stepsize: float = Field(0.01, gt=0)
    confidence: float = Field(0.0, ge=0)
    initial_const: float = Field(0.01, gt=0)
    abort_early: bool = True


class DeepFoolParams(AttackParams):
    steps: int = Field(50, ge=1)
    candidates: int = Field(10, ge=2)
    overshoot: float = Field(0.02, ge=0)


class JSMAParams(AttackParams):
    retired: ClassVar[frozenset[str]] = frozenset({"num_classes"})
    theta: float = Field(1.0, gt=0)
    max_iter: int = Field(50, ge=1)


class FMNParams(AttackParams):
    """Passed to foolbox's FMN attacks (foolbox's own defaults for the fields left at None)."""

    steps: int = Field(100, ge=1)
    max_stepsize: float = Field(1.0, gt=0)
    min_stepsize: float | None = Field(None, gt=0)
    gamma: float = Field(0.05, gt=0, lt=1)
    binary_search_steps: int | None = Field(None, ge=1)


class LBFGSParams(AttackParams):
    binary_search_steps: int = Field(5, ge=1)
    max_iter: int = Field(100, ge=1)
    initial_const: float = Field(0.01, gt=0)
    confidence: float = Field(0.5, ge=0)


class NewtonFoolParams(AttackParams):
    steps: int = Field(100, ge=1)
    stepsize: float = Field(0.01, gt=0)


# --------------------------------------------------------------------------- query-based


class SquareLinfParams(AttackParams):
    n_queries: int = Field(5000, ge=1)
    p_init: float = Field(0.05, gt=0, le=1)
    draws: Literal["per_input", "autoattack"] = "per_input"
    """Where the random squares come from. ``per_input``: each input its own stream (its windows, signs
    and bumps), so its result does not depend on its batch; stronger, since inputs do not share one
    unlucky window. ``autoattack``: the reference code's stream (fra31/auto-attack square.py): one window
    and one sign vector per iteration shared by the batch, from a CPU generator seeded with 0 at each
    call on a batch, and ``n_queries`` proposals after the initial point; on the same inputs, batch and
    model it returns the reference's adversarial examples, so a preset's figure compares with a
    published AutoAttack figure."""
    rescale_schedule: bool = True
    """Whether the square-size schedule (p_init halved at fixed iterations of a 10,000-iteration layout)
    is stretched to the queries the attack makes. AutoAttack runs Square with ``resc_schedule=False``:
    with 5,000 queries its squares then shrink only to p_init/128, not p_init/512."""


class SquareL2Params(SquareLinfParams):
    p_init: float = Field(0.1, gt=0, le=1)


class SquareL1Params(SquareLinfParams):
    """Square in L1 (the reference's ``norm='L1'``), with both draw modes as Linf and L2. The defaults,
    per-input draws on the reference's unstretched square-size schedule, left the least robust accuracy
    on the digits CNN at 500 queries (the planner's gradient-free check; 7.7 points under the stretched
    schedule at L1 5); with 1,000 to 5,000 queries the stretched schedule caught up or did better (by up
    to 3 points), see bench/results/square-autoattack-draws.md."""

    p_init: float = Field(0.8, gt=0, le=1)
    draws: Literal["per_input", "autoattack"] = "per_input"
    rescale_schedule: bool = False


class SimBAParams(AttackParams):
    max_queries: int = Field(10000, ge=1)
    basis: Literal["dct", "pixel"] = "dct"
    rel_stepsize: float = Field(0.1, gt=0)  # L2: step = rel_stepsize * epsilon; Linf steps by epsilon
    step: float | None = Field(None, gt=0)  # an absolute step, overriding the above
    freq_dims: int | None = Field(None, ge=1)  # DCT block side; None: a quarter of the image side
    stride: int | None = Field(None, ge=1)


class EvolutionParams(AttackParams):
    popsize: int = Field(20, ge=4)
    maxiter: int = Field(150, ge=1)
    pixels: int = Field(1, ge=1)  # ignored under an L0 budget, which sets the pixel count
    mutation: float = Field(0.5, gt=0, le=2)
    max_queries: int | None = Field(None, ge=1)


class CPPNParams(AttackParams):
    population: int = Field(32, ge=2)
    generations: int = Field(100, ge=1)
    confidence: float = Field(0.99, gt=0)  # stop once reached; above 1: never stop early
    width: int = Field(8, ge=1)
    depth: int = Field(3, ge=1)
    sigma: float = Field(0.5, gt=0)
    max_queries: int | None = Field(None, ge=1)


class BoundaryParams(AttackParams):
    max_queries: int = Field(10000, ge=1)
    spherical_step: float = Field(0.01, gt=0)
    source_step: float = Field(0.01, gt=0)
    step_adaptation: float = Field(1.5, gt=1)
    update_stats_every: int = Field(10, ge=1)
    init_tries: int = Field(20, ge=1)


class DenseBoundaryParams(BoundaryParams):
    """Boundary walk on dense decisions: the blank and blurred starts tried first, in ``starts`` order."""

    max_queries: int = Field(5000, ge=1)
    starts: tuple[Literal["blur", "blank"], ...] = Field(("blur", "blank"), min_length=1)
    blur_fraction: float = Field(0.25, gt=0, le=1)
    fallback: bool = True  # then uniform noise and the data basis, as the classification boundary attack


class HopSkipJumpParams(AttackParams):
    max_queries: int = Field(5000, ge=1)
    steps: int = Field(25, ge=1)
    initial_num_evals: int = Field(100, ge=1)
    max_num_evals: int = Field(1000, ge=1)
    gamma: float = Field(1.0, gt=0)
    init_tries: int = Field(20, ge=1)


# --------------------------------------------------------------------------- transfer


class TransferParams(StepParams):
    """Dong et al.: step = epsilon / steps unless rel_stepsize or step_size is given."""

    per_run = 1.0
    steps: int = Field(10, ge=1)
    rel_stepsize: float = Field(0.1, gt=0)
    decay: float = Field(1.0, ge=0)
    diversity_prob: float = Field(0.0, ge=0, le=1)
    resize_rate: float = Field(0.9, gt=0, le=1)
    verify_queries: int = Field(1, ge=0)  # victim queries to check the candidate (0 under full black box)


class DIFGSMParams(TransferParams):
    diversity_prob: float = Field(0.5, ge=0, le=1)


# --------------------------------------------------------------------------- image-agnostic


class UAPParams(StepParams):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    rel_stepsize: float = Field(0.1, gt=0)
    fit_size: int = Field(2000, ge=1)
    min_steps: int = Field(100, ge=1)


class PatchParams(AttackParams):
    """Adam on the patch (``stepsize`` is its learning rate in units of the input range).

    ``area_fraction``, ``placement``, ``location``, ``transformations``, ``eot_samples`` and
    ``printability`` are filled by the planner from the spec's capability.
    """

    steps: int = Field(500, ge=1)
    stepsize: float = Field(0.05, gt=0)
    batch_size: int = Field(32, ge=1)
    eot_samples: int | None = Field(8, ge=1)
    tv_weight: float = Field(0.01, ge=0)
    nps_weight: float = Field(0.01, ge=0)
    area_fraction: float = Field(0.05, gt=0, le=1)
    placement: Literal["random", "fixed"] = "random"
    location: tuple[float, float] | None = None  # top-left corner of a fixed patch, as fractions in [0, 1]
    transformations: dict[str, Any] | None = None  # the spec's EOT set; None: a digital patch
    printability: bool = False
    palette: list[list[float]] | None = None  # printable colours; None: a coarse grid of the input range
    snap_colours: bool = False  # project the printed pixels onto the palette (spec: printability max_nps 0)
    fit_size: int = Field(500, ge=1)  # inputs the fit is amortised over (cost estimate)

    @field_validator("location")
    @classmethod
    def _inside(cls, location: tuple[float, float] | None) -> tuple[float, float] | None:
        if location is not None and not all(0.0 <= v <= 1.0 for v in location):
            raise ValueError(f"expected (x, y) fractions in [0, 1], got {list(location)}")
        return location


class DetectorPatchParams(PatchParams):
    """The detection patch: no smoothing term, a smaller learning rate."""

    stepsize: float = Field(0.01, gt=0)
    tv_weight: float = Field(0.0, ge=0)


# --------------------------------------------------------------------------- perceptual and detector-aware


class SSIMParams(StepParams):
    steps: int = Field(100, ge=1)
    rel_stepsize: float = Field(0.05, gt=0)
    penalty: float = Field(10.0, ge=0)
    max_linf: float = Field(0.1, gt=0)  # per-pixel bound when the spec has no Lp bound
    margin: float = Field(0.002, ge=0, lt=1)
    backtrack: int = Field(8, ge=0)


class WassersteinParams(AttackParams):
    steps: int = Field(100, ge=1)
    step_size: float = Field(0.1, gt=0)
    kernel: int = Field(5, ge=1)
    p: float = Field(2.0, ge=1)
    regularization: float = Field(3000.0, gt=0)
    sinkhorn_iterations: int = Field(100, ge=1)
    margin: float = Field(0.02, ge=0, lt=1)

    @field_validator("kernel")
    @classmethod
    def _odd(cls, kernel: int) -> int:
        if kernel % 2 == 0:
            raise ValueError(f"expected an odd neighbourhood side, got {kernel}")
        return kernel


class DetectorAwareParams(StepParams):
    steps: int = Field(100, ge=1)
    rel_stepsize: float = Field(0.05, gt=0)
    detector_weight: float = Field(0.3, ge=0)
    weight_growth: float = Field(1.5, ge=1)
    margin: float = Field(0.1, ge=0, lt=1)
    fpr: float = Field(0.05, gt=0, lt=1)
    random_start: bool = False
    detectors: list[str] | None = None  # the spec's detectors (filled by the planner); None: feature squeezing


# --------------------------------------------------------------------------- dense tasks


class DenseParams(StepParams):
    steps: int = Field(50, ge=1)
    rel_stepsize: float = Field(0.05, gt=0)
    random_start: bool = False
    final_step_size: float | None = Field(None, gt=0)


class MetzenParams(DenseParams):
    """Objective settings (``background_weight``, ``confidence_threshold``, ``fill_weight``) pass to the
    segmentation objective."""

    background_weight: float = Field(0.9999, ge=0, le=1)
    confidence_threshold: float | None = Field(0.75, gt=0, le=1)
    fill_weight: float | None = Field(None, ge=0)


class MetzenUAPParams(StepParams):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    rel_stepsize: float = Field(0.1, gt=0)
    fit_size: int | None = Field(500, ge=1)
    tile: int | None = Field(None, ge=1)
    background_weight: float = Field(0.9999, ge=0, le=1)
    confidence_threshold: float | None = Field(None, gt=0, le=1)
    fill_weight: float | None = Field(None, ge=0)


class DetectionParams(DenseParams):
    """Step default 0.05 * epsilon for Linf and L2 alike (the catalogue's value; the module's old fallback
    for L2 was 0.1)."""

    retired: ClassVar[frozenset[str]] = frozenset({"confidence_threshold"})  # written, never read


# --------------------------------------------------------------------------- AutoAttack's components


class APGDParams(AttackParams):
    """Croce & Hein 2020: APGD sets its own step size; ``eot_iter`` averages gradients (AutoAttack rand),
    ``batch_start`` draws random starts batch-wide as the reference code does (the cross-check)."""

    steps: int = Field(100, ge=1)
    restarts: int = Field(1, ge=1)
    rho: float = Field(0.75, gt=0, lt=1)
    eot_iter: int = Field(1, ge=1)
    batch_start: bool = False
    loss: Literal["ce", "dlr", "dlr-targeted"] = "ce"
    large_eps: bool = True  # L1 budgets only: radii 3, 2, 1 x epsilon over 30/30/40% of the steps (AutoAttack)


class APGDDLRParams(APGDParams):
    loss: Literal["ce", "dlr", "dlr-targeted"] = "dlr"


class APGDTParams(APGDParams):
    """One targeted DLR run per class among the ``n_target_classes`` most likely others. ``keep_targets``
    (with ``parallel_targets``): at the first step-size checkpoint each input keeps only its most promising
    target runs (highest targeted-DLR gain so far); 0 keeps them all, as AutoAttack does. The default plan
    keeps 2 on Linf and L2 and all on L1, where the pruning costs strength (planner.KEEP_TARGETS)."""

    loss: Literal["ce", "dlr", "dlr-targeted"] = "dlr-targeted"
    n_target_classes: int = Field(9, ge=1)
    parallel_targets: bool = True
    keep_targets: int = Field(0, ge=0)


class FMNTParams(FMNParams):
    """FMN towards each of the ``n_target_classes`` most likely other classes in turn (FAB-T's protocol)."""

    n_target_classes: int = Field(9, ge=1)


class FABParams(AttackParams):
    """Croce & Hein 2020 (FAB), the reference's parameters: ``alpha_max`` caps the pull towards the clean
    input, ``eta`` overshoots the linearised boundary, ``beta`` steps back after a success."""

    steps: int = Field(100, ge=1)
    restarts: int = Field(1, ge=1)
    alpha_max: float = Field(0.1, ge=0, le=1)
    eta: float = Field(1.05, ge=1)
    beta: float = Field(0.9, gt=0, lt=1)


class FABTParams(FABParams):
    """FAB-T: one run per class among the ``n_target_classes`` most likely others (AutoAttack: 9), in turn
    (as the reference) or, with ``parallel_targets``, side by side in one batch."""

    n_target_classes: int = Field(9, ge=1)
    parallel_targets: bool = False


class LBFGSSSIMParams(LBFGSParams):
    """The SSIM floor comes from the item's context; ``ssim_penalty`` weighs its hinge, ``margin`` aims above it."""

    ssim_penalty: float = Field(100.0, ge=0)
    margin: float = Field(0.005, ge=0, lt=1)


# --------------------------------------------------------------------------- more query-based and image-agnostic


class ZOONewtonParams(AttackParams):
    max_queries: int = Field(2000, ge=1)
    coordinates: int = Field(16, ge=1)  # coordinates estimated per iteration
    fd_step: float = Field(1e-3, gt=0)  # finite-difference step
    lr: float = Field(1.0, gt=0)
    max_step: float | None = Field(None, gt=0)  # None: epsilon under Linf, else 0.1


class ScoreUAPParams(AttackParams):
    iterations: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=1)
    p_init: float = Field(0.1, gt=0, le=1)
    fit_size: int = Field(500, ge=1)


class EOTPGDParams(StepParams):
    """PGD on the expectation over the spec's transformations (filled by the planner; None: identity)."""

    steps: int = Field(40, ge=1)
    rel_stepsize: float = Field(0.1, gt=0)
    eot_samples: int | None = Field(8, ge=1)
    transformations: dict[str, Any] | None = None
    printability: bool = False  # add the non-printability and total-variation terms of the printed image
    palette: list[list[float]] | None = None  # printable colours; None: the corners of the 10-90 % cube
    nps_weight: float = Field(1.0, ge=0)
    tv_weight: float = Field(0.1, ge=0)


class LensParams(StepParams):
    steps: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=1)
    rel_stepsize: float = Field(0.05, gt=0)
    eot_samples: int | None = Field(8, ge=1)
    transformations: dict[str, Any] | None = None
    fit_size: int = Field(500, ge=1)


class StickerParams(AttackParams):
    """Adam on the sticker (``stepsize`` is its learning rate in input units); the box comes from the mask."""

    steps: int = Field(300, ge=1)
    stepsize: float = Field(0.05, gt=0)
    batch_size: int = Field(32, ge=1)
    eot_samples: int | None = Field(8, ge=1)
    tv_weight: float = Field(0.01, ge=0)
    nps_weight: float = Field(0.01, ge=0)
    transformations: dict[str, Any] | None = None
    printability: bool = False
    palette: list[list[float]] | None = None  # printable colours; None: a coarse grid of the input range
    snap_colours: bool = False  # project the printed pixels onto the palette (spec: printability max_nps 0)
    fit_size: int = Field(500, ge=1)
