"""The vocabulary the rules speak, below rules, graph and space: the threat axes with their values, and
Facts (what a spec or an abstract cell switches on). Its own module so that the rules (which read
Facts), the constraint graph (which builds nodes from the axes) and the threat space (which enumerates
them) import it rather than each other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taxonomy.axes import CONSEQUENCE_KINDS, KNOWLEDGE_KINDS, SCOPE_KINDS

TASKS = ("classification", "segmentation", "detection")
CONSEQUENCES: tuple[str, ...] = tuple(CONSEQUENCE_KINDS)
SCOPES: tuple[str, ...] = tuple(SCOPE_KINDS)
IMPERCEPTIBILITY = ("lp:inf", "lp:2", "lp:1", "lp:0", "perceptual:ssim", "perceptual:wasserstein",
                    "perceptual:lpips", "output", "detector", "unrestricted")
KNOWLEDGE: tuple[str, ...] = tuple(KNOWLEDGE_KINDS)
DATA_KNOWLEDGE = ("training", "surrogate", "none")
FEEDS = ("digital", "physical")
SPATIAL = (False, True)

AXES: dict[str, tuple[Any, ...]] = {
    "task": TASKS,
    "consequence": CONSEQUENCES,
    "scope": SCOPES,
    "imperceptibility": IMPERCEPTIBILITY,
    "knowledge": KNOWLEDGE,
    "data_knowledge": DATA_KNOWLEDGE,
    "feed": FEEDS,
    "spatial": SPATIAL,
}
"""Every threat axis and its values, in ThreatCell field order."""


class Facts:
    """What a spec (or an abstract cell) switches on: atoms, open strategy axes, and parameters.

    Built from an AttackSpec by ``facts_of`` and from a ThreatCell by ``taxonomy.space``; both must
    give equal Facts for a cell and its representative spec (tested).
    """

    __slots__ = (  # noqa: RUF023 - grouped by meaning, not sorted
        "atoms", "open", "paths",
        "task", "consequence", "scope", "knowledge", "data_knowledge", "feed",
        "basis", "optimizer", "gradient", "data_basis",
        "lp", "perceptual", "detectors", "other_bounds", "imp_keys",
        "query_budget", "granularity", "k",
        "classes", "class_refs", "context", "mislabel", "class_map", "static_class", "heldout",
        "quantize", "spatial", "surrogate",
        "bounds", "span", "units", "normalization",
    )

    atoms: frozenset[str]  # closed under grants
    open: frozenset[str]
    paths: Mapping[str, str]
    task: str
    consequence: str
    scope: str
    knowledge: str
    data_knowledge: str
    feed: str
    basis: str | None
    optimizer: str | None
    gradient: str | None
    data_basis: str | None
    lp: tuple[tuple[str, str, tuple[float, ...], str], ...]  # (path, norm, epsilons as written, mode)
    perceptual: tuple[tuple[str, str, float], ...]  # (path, metric, threshold)
    detectors: tuple[tuple[str, str], ...]  # (path, access)
    other_bounds: tuple[tuple[str, str], ...]  # (path, key) of non-Lp imperceptibility items
    imp_keys: tuple[str, ...]  # "lp:inf", "perceptual:ssim", "output", "detector" per item
    query_budget: int | None
    granularity: str | None
    k: int | None
    classes: tuple[str, ...] | None
    class_refs: tuple[tuple[str, Any], ...]
    context: tuple[str, str, tuple[Any, ...]] | None  # (path, field, values)
    mislabel: tuple[tuple[Any, ...], Any] | None
    class_map: tuple[tuple[str, Any], ...]
    static_class: Any
    heldout: float | None
    quantize: bool
    spatial: tuple[str, float | None] | None  # (kind, area fraction or None when unknown)
    surrogate: tuple[str, str | None, int] | None  # (source, model, ensemble) when the user set it
    bounds: tuple[float, float]
    span: float
    units: str
    normalization: str

    def __init__(self, **values: Any) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, values.pop(name))
        if values:  # pragma: no cover
            raise TypeError(f"unknown facts {sorted(values)}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Facts):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(self.atoms)

    def __repr__(self) -> str:
        return f"Facts({', '.join(sorted(self.atoms))})"

    def diff(self, other: Facts) -> dict[str, tuple[Any, Any]]:
        """The slots where two facts differ (for tests and debugging)."""
        return {n: (getattr(self, n), getattr(other, n)) for n in self.__slots__
                if getattr(self, n) != getattr(other, n)}

    def to_input(self, epsilon: float) -> float:
        """An epsilon as written, in the model's input units."""
        return epsilon / 255.0 * self.span if self.units == "pixel_255" else epsilon

    @property
    def available_data(self) -> frozenset[str]:
        """The data bases an attack may use: the chosen one, or what the data knowledge allows."""
        if self.data_basis is not None:
            return frozenset() if self.data_basis == "none" else frozenset({self.data_basis})
        return _AVAILABLE[self.data_knowledge]


_AVAILABLE = {
    "training": frozenset({"training", "surrogate"}),
    "surrogate": frozenset({"surrogate"}),
    "none": frozenset(),
}
