"""The axes of the threat model and the attack strategy, one typed model per value.

Every value that carries parameters (an epsilon, a query budget, target classes, a mask) is its own
pydantic model with a ``kind`` tag, so a YAML spec reads as the taxonomy does and an unknown value is
rejected with the list of known ones. Plain string shorthand (``scope: universal``) is accepted for
values whose parameters all have defaults.

Size (about 570 lines): one short pydantic model per axis value, each with its field docs and
validators; the schema reference (docs/taxonomy.md) is generated from them in this order.
"""

from __future__ import annotations

import collections
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    """Base for every schema model: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


def _kind_shorthand(value: Any) -> Any:
    """Let ``scope: universal`` stand for ``scope: {kind: universal}``."""
    if isinstance(value, str):
        return {"kind": value}
    return value


ClassRef = int | str
"""A class, by index into the model's output or by name from the spec's ``classes`` list."""


class Task(str, Enum):
    classification = "classification"
    segmentation = "segmentation"
    detection = "detection"


# --------------------------------------------------------------------------- desired consequence


class Untargeted(Strict):
    """Any wrong output: a wrong label, wrong pixels, missed or wrong boxes."""

    kind: Literal["untargeted"] = "untargeted"
    reference: Literal["ground_truth", "clean_prediction"] = Field(
        "ground_truth", description="What 'wrong' is measured against."
    )


class Box(Strict):
    """An axis-aligned box in input pixels, with its class."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: ClassRef

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError("a box needs x1 > x0 and y1 > y0")
        return self


class StaticTarget(Strict):
    """The output becomes one fixed target for every input (Metzen et al. 2017)."""

    kind: Literal["static_target"] = "static_target"
    target_class: ClassRef | None = Field(None, description="Classification: the class every input must get.")
    target_map: str | None = Field(
        None,
        description="Segmentation: a label map (.npy or .png file, or 'scene:<index>' for the "
        "clean prediction of a built-in reference scene) at the model's output size.",
    )
    target_boxes: list[Box] | None = Field(None, description="Detection: the boxes the detector must output.")

    @model_validator(mode="after")
    def _one_artefact(self) -> StaticTarget:
        given = [n for n in ("target_class", "target_map", "target_boxes") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "[S3-static-target-needs-one-artefact] a static target needs exactly one artefact: "
                "target_class (classification), "
                f"target_map (segmentation) or target_boxes (detection); got {given or 'none'}"
            )
        return self


class DynamicTarget(Strict):
    """Keep the output but change part of it per input: remove classes, or a per-input target rule."""

    kind: Literal["dynamic_target"] = "dynamic_target"
    rule: Literal["remove_classes", "least_likely", "class_map"] = "remove_classes"
    remove_classes: list[ClassRef] = Field(default_factory=list)
    class_map: dict[str, ClassRef] = Field(
        default_factory=dict, description="rule=class_map: source class -> target class."
    )
    fill: Literal["nearest"] = Field("nearest", description="How removed pixels are relabelled.")
    background_weight: float = Field(
        0.9999, gt=0.0, lt=1.0, description="Metzen's omega: weight of target pixels against background."
    )

    @model_validator(mode="after")
    def _rule_fields(self) -> DynamicTarget:
        if self.rule == "remove_classes" and not self.remove_classes:
            raise ValueError("rule remove_classes needs a non-empty remove_classes list")
        if self.rule == "class_map" and not self.class_map:
            raise ValueError("rule class_map needs a non-empty class_map")
        return self


class ConfusingTarget(Strict):
    """The objects stay but move or change size: needs spatial outputs."""

    kind: Literal["confusing_target"] = "confusing_target"
    classes: list[ClassRef] = Field(min_length=1)
    shift: tuple[int, int] = Field((0, 0), description="(dx, dy) in output pixels.")
    scale: float = Field(1.0, gt=0.0)
    fill: Literal["nearest"] = "nearest"

    @model_validator(mode="after")
    def _changes_something(self) -> ConfusingTarget:
        if self.shift == (0, 0) and self.scale == 1.0:
            raise ValueError("a confusing target needs a non-zero shift or a scale other than 1")
        return self


class Vanishing(Strict):
    """Detection: objects of the chosen classes disappear."""

    kind: Literal["vanishing"] = "vanishing"
    classes: list[ClassRef] = Field(default_factory=list, description="Empty means every class.")


class Fabrication(Strict):
    """Detection: objects that are not there appear."""

    kind: Literal["fabrication"] = "fabrication"
    classes: list[ClassRef] = Field(min_length=1)
    count: int = Field(1, ge=1)


class Mislabel(Strict):
    """Detection: objects keep their box but change class."""

    kind: Literal["mislabel"] = "mislabel"
    from_classes: list[ClassRef] = Field(default_factory=list, description="Empty means every class.")
    to_class: ClassRef


Consequence = Annotated[
    Untargeted | StaticTarget | DynamicTarget | ConfusingTarget | Vanishing | Fabrication | Mislabel,
    Field(discriminator="kind"),
    BeforeValidator(_kind_shorthand),
]
CONSEQUENCE_KINDS = (
    "untargeted", "static_target", "dynamic_target", "confusing_target", "vanishing", "fabrication", "mislabel",
)

# --------------------------------------------------------------------------- perturbation scope


class ContextPredicate(Strict):
    """Selects the inputs of one context: by label, or by a metadata field of the data."""

    field: str = Field(description="'label' or the name of a metadata field the data provides.")
    equals: Any = None
    any_of: list[Any] | None = Field(None, alias="in")

    @model_validator(mode="after")
    def _one_test(self) -> ContextPredicate:
        if (self.equals is None) == (self.any_of is None):
            raise ValueError("a context predicate needs exactly one of 'equals' or 'in'")
        return self

    def matches(self, value: Any) -> bool:
        if self.any_of is not None:
            return value in self.any_of
        return bool(value == self.equals)


class Individual(Strict):
    """One perturbation per input."""

    kind: Literal["individual"] = "individual"


class Contextual(Strict):
    """One perturbation for every input of a context (a class, the lighting, a city)."""

    kind: Literal["contextual"] = "contextual"
    context: ContextPredicate
    heldout_fraction: float = Field(0.3, gt=0.0, lt=1.0)


class Universal(Strict):
    """One perturbation for (most of) the input distribution."""

    kind: Literal["universal"] = "universal"
    heldout_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    target_fooling_rate: float = Field(0.8, gt=0.0, le=1.0)


Scope = Annotated[
    Individual | Contextual | Universal, Field(discriminator="kind"), BeforeValidator(_kind_shorthand)
]
SCOPE_KINDS = ("individual", "contextual", "universal")

# --------------------------------------------------------------------------- imperceptibility

LP_NORMS = ("0", "1", "2", "inf")


def _norm_name(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1, 2):
        return str(int(value))
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    if isinstance(value, str) and value.lower() in ("linf", "l_inf", "infinity", "max"):
        return "inf"
    if isinstance(value, str) and value.lower() in ("l0", "l1", "l2"):
        return value[1]
    return value


class LpBudget(Strict):
    """An Lp bound on the perturbation: a fixed epsilon (or several, for a curve) or minimal-norm mode."""

    kind: Literal["lp"] = "lp"
    norm: Annotated[Literal["0", "1", "2", "inf"], BeforeValidator(_norm_name)]
    epsilon: float | list[float] | None = Field(
        None, description="In the units of input_space.epsilon_units. Several values give a robustness curve."
    )
    mode: Literal["fixed", "minimal"] = Field(
        "fixed", description="fixed: success within epsilon. minimal: find the smallest norm that succeeds."
    )

    @field_validator("epsilon")
    @classmethod
    def _positive(cls, value: float | list[float] | None) -> float | list[float] | None:
        values = value if isinstance(value, list) else [value] if value is not None else []
        if isinstance(value, list) and not value:
            raise ValueError("epsilon list is empty")
        if any(v <= 0 for v in values):
            raise ValueError("epsilon must be greater than 0")
        counts = collections.Counter(values)
        repeated = next((v for v in values if counts[v] > 1), None)
        if repeated is not None:  # each listed epsilon runs every attack once more: a repeat is work for nothing
            raise ValueError(f"epsilon {repeated:g} is listed {counts[repeated]} times; list each epsilon once")
        return value

    @model_validator(mode="after")
    def _fixed_needs_epsilon(self) -> LpBudget:
        if self.mode == "fixed" and self.epsilon is None:
            raise ValueError("mode 'fixed' needs an epsilon (or use mode: minimal)")
        return self

    @property
    def epsilons(self) -> list[float]:
        if self.epsilon is None:
            return []
        return list(self.epsilon) if isinstance(self.epsilon, list) else [self.epsilon]


class Perceptual(Strict):
    """A perceptual ('attention-based') bound: SSIM floor, Wasserstein radius, LPIPS ceiling."""

    kind: Literal["perceptual"] = "perceptual"
    metric: Literal["ssim", "wasserstein", "lpips"]
    threshold: float = Field(
        gt=0.0, description="ssim: minimum SSIM (e.g. 0.95); wasserstein: maximum radius; lpips: maximum distance."
    )

    @model_validator(mode="after")
    def _ssim_range(self) -> Perceptual:
        if self.metric == "ssim" and not 0.0 < self.threshold <= 1.0:
            raise ValueError("an SSIM floor must lie in (0, 1]")
        return self


class OutputPlausibility(Strict):
    """A person watching the output should not notice: no holes, consistent with the clean output."""

    kind: Literal["output"] = "output"
    criterion: Literal["nearest_fill", "consistent_with_clean"] = "consistent_with_clean"


class DetectorEvasion(Strict):
    """Named adversarial-example detectors must not fire."""

    kind: Literal["detector"] = "detector"
    detectors: list[str] = Field(min_length=1)
    access: Literal["white_box", "black_box"] = "white_box"
    max_detection_rate: float = Field(0.1, ge=0.0, le=1.0)


class Unrestricted(Strict):
    """No bound on how the input looks: fooling images grown from scratch, visible patches and stickers.

    The change is still confined by the capability (a patch region, a physical artefact); what is given
    up is only the claim that a person would not notice it.
    """

    kind: Literal["unrestricted"] = "unrestricted"


Imperceptibility = Annotated[
    LpBudget | Perceptual | OutputPlausibility | DetectorEvasion | Unrestricted,
    Field(discriminator="kind"),
    BeforeValidator(_kind_shorthand),
]
IMPERCEPTIBILITY_KINDS = ("lp", "perceptual", "output", "detector", "unrestricted")

# --------------------------------------------------------------------------- model knowledge

Granularity = Literal["logits", "probabilities", "top_k"]


class WhiteBox(Strict):
    """Architecture, weights and gradients are known (ATLAS AML.T0044)."""

    kind: Literal["white_box"] = "white_box"


class OutputTransparent(Strict):
    """Queries return scores: logits, probabilities or the top-k probabilities; no budget."""

    kind: Literal["output_transparent"] = "output_transparent"
    granularity: Granularity = "probabilities"
    k: int | None = Field(None, ge=1, description="granularity top_k: how many classes are returned.")

    @model_validator(mode="after")
    def _k_for_top_k(self) -> OutputTransparent:
        if self.granularity == "top_k" and self.k is None:
            raise ValueError("granularity top_k needs k")
        return self


class QueryLimited(Strict):
    """Score queries under a budget per input (Ilyas et al. 2018)."""

    kind: Literal["query_limited"] = "query_limited"
    query_budget: int = Field(gt=0, description="Queries per input.")
    granularity: Granularity = "probabilities"
    k: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _k_for_top_k(self) -> QueryLimited:
        if self.granularity == "top_k" and self.k is None:
            raise ValueError("granularity top_k needs k")
        return self


class LabelOnly(Strict):
    """Queries return only the decision (top-1 label, or the argmax mask)."""

    kind: Literal["label_only"] = "label_only"
    query_budget: int | None = Field(None, gt=0, description="Queries per input; none means unbudgeted.")


class FullBlackBox(Strict):
    """No access to the victim at all: transfer from a surrogate only."""

    kind: Literal["full_black_box"] = "full_black_box"


ModelKnowledge = Annotated[
    WhiteBox | OutputTransparent | QueryLimited | LabelOnly | FullBlackBox,
    Field(discriminator="kind"),
    BeforeValidator(_kind_shorthand),
]
KNOWLEDGE_KINDS = ("white_box", "output_transparent", "query_limited", "label_only", "full_black_box")


class DataKnowledge(str, Enum):
    training = "training"
    surrogate = "surrogate"
    none = "none"


# --------------------------------------------------------------------------- adversary capability


def _range(lo: float, hi: float) -> tuple[float, float]:
    return (lo, hi)


class Transformations(Strict):
    """The transformation distribution of a physical attack (Expectation over Transformation)."""

    rotation_deg: tuple[float, float] = Field(_range(-20.0, 20.0))
    scale: tuple[float, float] = Field(_range(0.9, 1.1))
    translate: float = Field(0.1, ge=0.0, le=1.0, description="Largest shift, as a fraction of the image side.")
    brightness: tuple[float, float] = Field(_range(-0.1, 0.1), description="Additive, in input units.")
    noise_std: float = Field(0.02, ge=0.0)
    samples: int = Field(8, ge=1, description="Transformations drawn per optimisation step.")

    @model_validator(mode="after")
    def _ranges(self) -> Transformations:
        for name in ("rotation_deg", "scale", "brightness"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: the lower end {lo} is above the upper end {hi}")
        if self.scale[0] <= 0:
            raise ValueError("scale must stay above 0")
        if abs(self.rotation_deg[0]) > 180 or abs(self.rotation_deg[1]) > 180:
            raise ValueError("rotation_deg must lie within [-180, 180]")
        return self


class SpatialConstraint(Strict):
    """Only a region of the input may change: a mask file, a fixed box, or a patch of a given area."""

    kind: Literal["mask", "box", "patch"]
    mask: str | None = Field(None, description="kind mask: a .npy/.png file, non-zero where change is allowed.")
    box: tuple[float, float, float, float] | None = Field(
        None, description="kind box: (x0, y0, x1, y1) as fractions of width and height."
    )
    area_fraction: float | None = Field(
        None, gt=0.0, le=1.0, description="kind patch: patch area as a fraction of the image."
    )
    placement: Literal["random", "fixed"] = "random"
    location: tuple[float, float] | None = Field(
        None, description="kind patch, placement fixed: the patch's top-left corner (x, y) as fractions of "
        "width and height, each in [0, 1]; a patch that would overhang is moved inside. Default: centred."
    )

    @model_validator(mode="after")
    def _parameters(self) -> SpatialConstraint:
        needed = {"mask": "mask", "box": "box", "patch": "area_fraction"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"spatial kind '{self.kind}' needs '{needed}'")
        if self.location is not None:
            if self.placement != "fixed":
                raise ValueError("location needs placement: fixed")
            if not all(0.0 <= v <= 1.0 for v in self.location):
                raise ValueError(f"location must be fractions in [0, 1], got {list(self.location)}")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ValueError("box must be fractions with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return self


class Printability(Strict):
    """Printability stated as bounds, measured on the printed pixels (those the attack changed): the
    non-printability score against the printer's colour set and the total variation (Sharif et al. 2016,
    Accessorize to a crime; Eykholt et al. 2018, RP2). Verification re-measures both on every candidate;
    one that breaks them is not counted."""

    colours: list[list[float]] | None = Field(
        None, min_length=1,
        description="The printer's colours, each one value per channel in input units. Default: the corners of "
        "the 10-90 % cube of the input range (8 colours for RGB, 2 for grey).")
    max_nps: float | None = Field(
        None, ge=0.0,
        description="Largest non-printability score: the mean over printed pixels of the product of distances to "
        "each colour. 0: every printed pixel is a colour of the set (the attacks project onto it).")
    max_tv: float | None = Field(
        None, ge=0.0,
        description="Largest total variation per printed pixel (isotropic, channels summed): smoothness.")

    @model_validator(mode="after")
    def _states_a_bound(self) -> Printability:
        if self.max_nps is None and self.max_tv is None:
            raise ValueError("[S7-printability-states-a-bound] a printability bound needs max_nps or max_tv (or "
                             "both); 'printability: true' asks for the penalty terms without a bound")
        if self.colours is not None and len({len(c) for c in self.colours}) != 1:
            raise ValueError("[S7-printability-states-a-bound] every printer colour needs the same number of "
                             "channels")
        return self


class Capability(Strict):
    """Where the adversary acts: the digital feed, the physical scene, and whether only a region."""

    feed: Literal["digital", "physical"] = "digital"
    transformations: Transformations | None = Field(None, description="Physical feed: the EOT distribution.")
    spatial: SpatialConstraint | None = None
    quantize: bool = Field(False, description="Verify after rounding to 8 bits, as a digital channel would.")
    printability: bool | Printability = Field(
        False,
        description="Physical feed. true: the attacks add non-printability and total-variation penalty terms. "
        "A mapping (colours, max_nps, max_tv): printability as bounds that verification re-measures.")
    views: Literal["object", "scenes"] | None = Field(
        None,
        description="How the views the artefact must survive arise. object: one object seen under the "
        "transformation set (EOT over its views: a printed photo, Kurakin et al. 2016; a sticker on one sign, "
        "Eykholt et al. 2018). scenes: many scenes of one context, each under the transformations (a patch "
        "placed into scenes, Brown et al. 2017; a lens sticker over every frame, Li, Schmidt, Kolter 2019); "
        "the artefact is then shared. Default: from the placement (everywhere and box: object; patch and "
        "overlay: scenes).")
    placement: Literal["everywhere", "patch", "box", "overlay"] | None = Field(
        None,
        description="Where the change sits and how it combines with the input. everywhere: added to the whole "
        "image (a printed adversarial photo, Kurakin et al. 2016; an object's own texture, Athalye et al. 2018); "
        "patch: replaces the pixels of a region placed in the scene (spatial kind patch, Brown et al. 2017); box: "
        "added inside a fixed box on the object (spatial kind box or mask, a sticker, Eykholt et al. 2018); "
        "overlay: a layer in front of the camera over every view (a lens sticker, Li, Schmidt, Kolter 2019). "
        "Default: patch or box from capability.spatial, else unstated.",
    )

    @model_validator(mode="after")
    def _placement_fits_spatial(self) -> Capability:
        kind = self.spatial.kind if self.spatial is not None else None
        wanted = {"patch": ("patch",), "box": ("box", "mask"), "everywhere": (None,), "overlay": (None,)}
        if self.placement is not None and kind not in wanted[self.placement]:
            need = " or ".join(f"spatial kind {k}" if k else "no spatial constraint" for k in wanted[self.placement])
            raise ValueError(f"[S5-placement-fits-spatial] placement {self.placement!r} needs {need}; got "
                             f"{'spatial kind ' + kind if kind else 'no spatial constraint'}")
        return self

    @property
    def printability_bounds(self) -> Printability | None:
        """The stated printability bounds (None: none stated, or only the penalty asked for)."""
        return self.printability if isinstance(self.printability, Printability) else None

    @property
    def resolved_views(self) -> str | None:
        """The views as stated, or derived from the placement on a physical feed (None: digital, unstated)."""
        if self.views is not None:
            return self.views
        if self.feed != "physical":
            return None
        placement = self.resolved_placement
        if placement in ("patch", "overlay"):
            return "scenes"
        return "object" if placement in ("everywhere", "box") else None

    @property
    def resolved_placement(self) -> str | None:
        """The placement as stated, or derived from the spatial constraint (None: unstated whole-image change)."""
        if self.placement is not None:
            return self.placement
        if self.spatial is None:
            return None
        return "patch" if self.spatial.kind == "patch" else "box"


# --------------------------------------------------------------------------- attack strategy


class VictimBasis(Strict):
    kind: Literal["victim"] = "victim"


class SurrogateBasis(Strict):
    """Optimise against a substitute model (or an ensemble of them, logits averaged) and transfer."""

    kind: Literal["surrogate"] = "surrogate"
    source: Literal["trained_on_data", "distilled_from_queries", "pretrained"] = "trained_on_data"
    model: str | list[str] | None = Field(
        None,
        description="A built-in name, module:function entry point or model file; a list names several "
        "ensemble members. 'cnn' and 'mlp' name architectures trained at run time.",
    )
    ensemble: int = Field(
        None,  # filled by _ensemble_size: the number of models named, at least 1
        ge=1,
        validate_default=True,
        description="Ensemble members (logits averaged); default: the number of models named, else 1. "
        "Members beyond the named ones are trained (trained_on_data) or distilled at run time.",
    )

    @field_validator("model")
    @classmethod
    def _names(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not value:
            raise ValueError("an empty list names no model; leave model out or name at least one")
        return value

    @field_validator("ensemble", mode="before")
    @classmethod
    def _ensemble_size(cls, value: Any, info: Any) -> Any:
        model = info.data.get("model")
        named = len(model) if isinstance(model, list) else int(model is not None)
        if value is None:
            return max(named, 1)
        if isinstance(value, int) and not isinstance(value, bool) and value < named:
            raise ValueError(
                f"ensemble {value} is smaller than the {named} models named in strategy.model_basis.model; "
                f"expected ensemble >= {named} (or leave it out: it defaults to the number named)"
            )
        return value


ModelBasis = Annotated[
    VictimBasis | SurrogateBasis, Field(discriminator="kind"), BeforeValidator(_kind_shorthand)
]


class OptimizerKind(str, Enum):
    first_order = "first_order"
    second_order = "second_order"
    evolution = "evolution"


class GradientSource(str, Enum):
    analytic = "analytic"
    estimated_scores = "estimated_scores"
    estimated_decisions = "estimated_decisions"


class Optimizer(Strict):
    """How the attack computes its change: the optimiser, where its gradients come from, and what a search
    reads from the victim."""

    kind: OptimizerKind
    gradient_source: GradientSource | None = None
    oracle: Literal["scores", "decisions"] | None = Field(
        None,
        description="What the optimiser reads from the victim: scores (a score-based search such as Square, "
        "SimBA, ZOO; Andriushchenko et al. 2020) or decisions (a decision-based walk such as Boundary or "
        "HopSkipJump; Brendel et al. 2018). Unset: any. A search that estimates no gradient leaves "
        "gradient_source unset and says oracle instead.",
    )

    @model_validator(mode="after")
    def _oracle_matches_gradient(self) -> Optimizer:
        clash = {("scores", GradientSource.estimated_decisions), ("decisions", GradientSource.estimated_scores),
                 ("scores", GradientSource.analytic), ("decisions", GradientSource.analytic)}
        if (self.oracle, self.gradient_source) in clash:
            raise ValueError(f"[S6-oracle-matches-gradient-source] oracle {self.oracle!r} contradicts gradient_source "
                             f"{self.gradient_source.value!r}; leave one of them out")  # type: ignore[union-attr]
        return self


def _optimizer_shorthand(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


class Strategy(Strict):
    """How the attack is computed. Every field is optional: the planner fills what is left out."""

    model_basis: ModelBasis | None = None
    data_basis: DataKnowledge | None = None
    optimizer: Annotated[Optimizer | None, BeforeValidator(_optimizer_shorthand)] = None


# --------------------------------------------------------------------------- input space


class InputSpace(Strict):
    """The contract between spec, data and model: value range, layout, normalisation, epsilon units."""

    bounds: tuple[float, float] = (0.0, 1.0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    normalization: Literal["inside_model", "none", "in_data"] = Field(
        "inside_model",
        description="Where mean/std normalisation happens. 'in_data' (the data is already normalised) "
        "puts epsilons in the wrong units and is rejected by rule D2b.",
    )
    epsilon_units: Literal["input_scale", "pixel_255"] = Field(
        "input_scale", description="pixel_255: epsilons are given on a 0..255 scale and converted."
    )

    @model_validator(mode="after")
    def _ordered(self) -> InputSpace:
        if not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"bounds must be (low, high) with low < high, got {self.bounds}")
        return self

    @property
    def span(self) -> float:
        return self.bounds[1] - self.bounds[0]

    def to_input_scale(self, epsilon: float) -> float:
        """An epsilon in the spec's units, expressed in the model's input units."""
        if self.epsilon_units == "pixel_255":
            return epsilon / 255.0 * self.span
        return epsilon
