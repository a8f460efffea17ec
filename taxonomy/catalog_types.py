"""The shape of one attack-catalogue entry (the entries themselves live in taxonomy/catalog.py).

A descriptor states which taxonomy cells an implementation realises, what access it needs, and what
it costs; the planner ranks and parameterises from it, the executor imports ``implementation`` lazily
so this module never imports torch. Adding an attack is one module under attackgen/run/attacks/ plus one
descriptor with its parameter model (taxonomy.params); see docs/adding-an-attack.md.

``requires`` holds keys a spec must contain for the attack to be the right tool, beyond what it can
do: an imperceptibility key ("detector", "perceptual:ssim") or "spatial:<kind>". Without a detector,
detector-aware PGD is plain PGD; a patch attack needs a patch region.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from taxonomy.params import AttackParams, defaults_of

AccessKind = Literal["gradients", "scores", "labels", "surrogate"]
"""What the attack touches on the model it optimises against (WhiteBox, Scores, Labels, or a surrogate)."""

CostFn = Callable[[Any], "Cost"]
"""The attack's cost model: its validated parameter instance (``descriptor.params``, defaults filled by
pydantic) to the expected work per input on one model. Callers go through ``AttackDescriptor.expected_cost``."""

NormCostFn = Callable[[Any, "str | None"], "Cost"]
"""A cost model whose work depends on the budget's norm (``AttackDescriptor.norm_cost``): the validated
parameters and the item's norm ('inf', '2', '1', '0'; None when the caller does not know it)."""


@dataclass(frozen=True)
class Cost:
    """Expected work per input: forward and backward passes on the basis model, queries to the victim."""

    forward: float = 0.0
    backward: float = 0.0
    queries: float = 0.0

    def __post_init__(self) -> None:  # cost models multiply int parameters; plans and JSON show floats
        for name in ("forward", "backward", "queries"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def passes(self) -> float:
        return self.forward + self.backward


@dataclass(frozen=True)
class AttackDescriptor:
    """One implementation and the taxonomy cells it realises."""

    id: str
    title: str
    implementation: str  # "attackgen.run.attacks.pgd:LinfPGD", imported only by the executor
    reference: str  # paper: authors, year, arXiv id
    tasks: frozenset[str]
    consequences: frozenset[str]
    scopes: frozenset[str]
    imperceptibility: frozenset[str]  # "lp:inf", "lp:2", "perceptual:ssim", "output", "detector", "unrestricted"
    budget_modes: frozenset[str]  # "fixed", "minimal"
    access: AccessKind
    optimizer: str  # OptimizerKind value
    gradient_source: str | None  # GradientSource value, None for evolution without estimates
    data_bases: frozenset[str]  # data the attack needs: "none", "training", "surrogate"
    feeds: frozenset[str] = frozenset({"digital"})
    spatial: bool = True  # can be confined to a mask
    cost: CostFn = field(default=lambda params: Cost())  # per model: see expected_cost for the plan's total
    norm_cost: NormCostFn | None = None  # replaces ``cost`` where the norm changes the work (APGD's L1 stages)
    params: type[AttackParams] = AttackParams  # the parameter model: names, types, ranges and defaults
    requires: frozenset[str] = frozenset()  # what a spec must contain for this to be the right tool
    printable: bool = False  # enforces printability bounds (non-printability score, total variation; rule E13)
    views: frozenset[str] = frozenset()  # physical view sets it optimises over: "object", "scenes" (rule E17)
    single_step: bool = False  # one gradient step (FGSM): the audit reads its failures as weak, not as masking
    min_queries: int = 0  # fewest victim queries per input at which the attack is worth running (rule A8)
    strength: int = 5  # 1 (weak) .. 10 (strongest known in its cell), for ranking
    atlas: tuple[str, ...] = ()
    backend: Literal["native", "foolbox"] = "native"
    implemented: bool = True  # False: catalogued, code not yet written
    notes: str = ""

    @cached_property
    def defaults(self) -> dict[str, Any]:
        """The parameter model's defaults as plain data (the planner's starting point; copy before changing).
        Cached, so rule A8 can tell 'no plan parameters' (this very dict) from concrete ones equal to it."""
        return defaults_of(self.params)

    def typed_params(self, params: Mapping[str, Any] | AttackParams) -> AttackParams:
        """The attack's validated parameters from a plan's flat mapping: names the model does not declare
        (the item's threat context, retired names) are ignored, the ones left out take the model's defaults.
        Raises pydantic's ValidationError (a ValueError) on a value of the wrong type or range."""
        if isinstance(params, AttackParams):
            return params
        own = {k: v for k, v in params.items() if k in self.params.model_fields}
        return self.params.model_validate(own)

    def expected_cost(self, params: Mapping[str, Any] | AttackParams) -> Cost:
        """Expected work per input under the plan's parameters (a flat mapping of params and context).

        The cost model prices one model; a surrogate ensemble (context ``surrogate.ensemble``) runs every
        member on each pass, so a surrogate attack's passes count once per member (its victim queries once).
        """
        cost = self.model_cost(params)
        members = _ensemble(params.get("surrogate")) if isinstance(params, Mapping) else 1
        if self.access != "surrogate" or members == 1:
            return cost
        return Cost(forward=cost.forward * members, backward=cost.backward * members, queries=cost.queries)


    def model_cost(self, params: Mapping[str, Any] | AttackParams, norm: str | None = None) -> Cost:
        """Work per input on one model. ``norm`` (else the mapping's context ``norm``) reaches a ``norm_cost``
        model: APGD on L1 runs three stages, each starting with its own gradient pass."""
        typed = self.typed_params(params)
        if self.norm_cost is None:
            return self.cost(typed)
        if norm is None and isinstance(params, Mapping) and params.get("norm") is not None:
            norm = str(params["norm"])
        return self.norm_cost(typed, norm)


def _ensemble(surrogate: Any) -> int:
    """The number of surrogate models a plan item's ``surrogate`` context averages (1 when not stated)."""
    size = surrogate.get("ensemble") if isinstance(surrogate, Mapping) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else 1
