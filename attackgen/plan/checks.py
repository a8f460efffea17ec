"""Does an attack realise a spec, and which rules does it break with given parameters? Shared by the
planner (choosing attacks) and the plan file model (checking an edited plan at load), below both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from attackgen.plan.notes import RuleNote, note_of
from taxonomy.catalog import fits_purpose, spec_features
from taxonomy.catalog_types import AttackDescriptor
from taxonomy.spec import AttackSpec


class ItemLike(Protocol):
    """What the checks read of a plan item (read-only, so a PlanItem with a Literal role matches)."""

    @property
    def role(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...


def _rules() -> Any:
    """The rule engine (taxonomy.graph: validate, realises, descriptor_violations, RULES), imported late
    because compiling the rules costs time that `attackgen validate --help` should not pay."""
    from taxonomy import graph

    return graph


def relaxed_for_check(spec: AttackSpec) -> AttackSpec:
    """The spec with the optimiser and model basis left open: what a gradient-free check must realise."""
    strategy = spec.strategy.model_copy(update={"optimizer": None, "model_basis": None})
    return spec.model_copy(update={"strategy": strategy})


def realises_any(spec: AttackSpec, descriptor: AttackDescriptor, role: str = "primary") -> bool:
    """Does the descriptor realise the spec (the relaxed spec for a gradient-free check)?"""
    target = relaxed_for_check(spec) if role == "gradient_free_check" else spec
    return fits_purpose(spec_features(spec), descriptor) and bool(_rules().realises(target, descriptor))


def rule_breaks(spec: AttackSpec, descriptor: AttackDescriptor, item: ItemLike | None = None) -> list[RuleNote]:
    """Rule findings for one attack under the spec, with the item's parameters (else the defaults)."""
    target = relaxed_for_check(spec) if item is not None and item.role == "gradient_free_check" else spec
    params = {**descriptor.defaults, **item.params} if item is not None else None
    return [note_of(v) for v in _rules().descriptor_violations(target, descriptor, params)]
