"""The shape of one attack-catalogue entry (the entries themselves live in taxonomy/catalog.py).

A descriptor states which taxonomy cells an implementation realises, what access it needs, and what
it costs; the planner ranks and parameterises from it, the executor imports ``implementation`` lazily
so this module never imports torch. Adding an attack is one module under attackgen/run/attacks/ plus one
descriptor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AccessKind = Literal["gradients", "scores", "labels", "surrogate"]
"""What the attack touches on the model it optimises against (WhiteBox, Scores, Labels, or a surrogate)."""

CostFn = Callable[[Mapping[str, Any]], "Cost"]


@dataclass(frozen=True)
class Cost:
    """Expected work per input: forward and backward passes on the basis model, queries to the victim."""

    forward: float = 0.0
    backward: float = 0.0
    queries: float = 0.0

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
    cost: CostFn = field(default=lambda params: Cost())
    defaults: Mapping[str, Any] = field(default_factory=dict)
    min_queries: int = 0  # fewest victim queries per input at which the attack is worth running (rule A8)
    strength: int = 5  # 1 (weak) .. 10 (strongest known in its cell), for ranking
    atlas: tuple[str, ...] = ()
    backend: Literal["native", "foolbox"] = "native"
    implemented: bool = True  # False: catalogued, code not yet written
    notes: str = ""
