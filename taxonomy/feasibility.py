"""One feasibility answer for a spec or an abstract cell: runnable, gap, or infeasible.

``validate``, ``plan`` and ``audit`` all ask this module, so they cannot disagree:

- **infeasible**: a spec-level error rule fires, or every catalogued attack that realises the cell (and is
  for it, ``catalog.fits_purpose``) breaks an attack-level error rule (a query budget below its
  ``min_queries``, a targeted decision-based attack without a start input, data it needs). The blocking
  rule ids are named. A threat no attack in the literature can realise under its own constraints is
  infeasible, not a gap.
- **gap**: the rules pass, but no implemented attack realises the cell without breaking a rule (none is
  catalogued, or only catalogued ones whose code has not landed).
- **runnable**: at least one implemented attack realises it and breaks no error rule; ``plan`` schedules it.

Exit codes shared by ``attackgen validate`` and ``attackgen plan``: 0 runnable, 1 infeasible, 2 malformed
file (schema), 3 gap. Pure Python: no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from taxonomy.graph import (
    Facts,
    Violation,
    _default_catalog,
    _descriptor_found,
    facts_of,
    merge,
    realises_facts,
    violations_of,
)

if TYPE_CHECKING:  # pragma: no cover
    from taxonomy.catalog_types import AttackDescriptor
    from taxonomy.spec import AttackSpec

Verdict = Literal["runnable", "gap", "infeasible"]

EXIT_CODES: dict[str, int] = {"runnable": 0, "infeasible": 1, "invalid": 2, "gap": 3}
"""Exit status per verdict ('invalid': the file breaks the schema)."""

WORST_FIRST = ("invalid", "infeasible", "gap", "runnable")
"""How several files' verdicts combine into one exit status: the first present in this order."""


@dataclass(frozen=True)
class Answer:
    """The verdict, the spec-level findings, and which attacks realise the cell with or without a broken rule."""

    verdict: Verdict
    findings: tuple[Violation, ...]  # spec-level rule findings, errors first (warnings included)
    blocking: tuple[Violation, ...]  # the errors that make it infeasible (empty unless infeasible)
    runnable: tuple[str, ...] = ()  # implemented attacks that realise it and break no error rule
    waiting: tuple[str, ...] = ()  # catalogued, not implemented, that would
    broken: Mapping[str, tuple[Violation, ...]] = field(default_factory=dict)  # realisers -> the errors they break

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def blocking_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.rule.id for v in self.blocking))

    def line(self) -> str:
        """One sentence a user reads after the file name."""
        if self.verdict == "infeasible":
            return "infeasible (" + ", ".join(self.blocking_ids) + ")"
        if self.verdict == "gap":
            pending = f"; catalogued, not implemented: {', '.join(self.waiting)}" if self.waiting else ""
            return "gap: feasible, but no implemented attack realises it" + pending
        return "ok, with warnings" if self.findings else "ok"


def _errors(violations: Iterable[Violation]) -> tuple[Violation, ...]:
    return tuple(v for v in violations if v.rule.severity == "error")


def decide(findings: Iterable[Violation], pool: Iterable[str], breaks: Mapping[str, Iterable[Violation]],
           implemented: Iterable[str]) -> Answer:
    """The decision itself, from its inputs: spec findings, the realising pool, each member's attack-level
    errors, and which members are implemented. Cells and specs both come here."""
    found = tuple(findings)
    spec_errors = _errors(found)
    if spec_errors:
        return Answer("infeasible", found, spec_errors)
    members = tuple(pool)
    broken = {a: tuple(breaks.get(a, ())) for a in members}
    broken = {a: v for a, v in broken.items() if v}
    clean = [a for a in members if a not in broken]
    ready = set(implemented)
    if members and not clean:
        blocking = merge(v for vs in broken.values() for v in vs)
        return Answer("infeasible", found, tuple(blocking), broken=broken)
    runnable = tuple(a for a in clean if a in ready)
    waiting = tuple(a for a in clean if a not in ready)
    return Answer("runnable" if runnable else "gap", found, (), runnable, waiting, broken)


def pool_of(f: Facts, features: frozenset[str], catalog: Mapping[str, AttackDescriptor]) -> list[str]:
    """The attacks the threat model and strategy admit for these facts: they realise the cell, are granted
    the access and data they need, and the spec contains what they are for."""
    from taxonomy.catalog import fits_purpose

    return [i for i, d in catalog.items() if fits_purpose(features, d) and realises_facts(f, d)]


def answer(spec: AttackSpec, catalog: Mapping[str, AttackDescriptor] | None = None) -> Answer:
    """The feasibility answer for one spec (attack-level rules at each attack's defaults and minimum budget)."""
    from taxonomy.catalog import spec_features

    catalog = _default_catalog() if catalog is None else catalog
    f = facts_of(spec)
    findings = violations_of(f)
    if _errors(findings):
        return decide(findings, (), {}, ())
    pool = pool_of(f, spec_features(spec), catalog)
    breaks = {i: _errors(_descriptor_found(f, catalog[i], None)) for i in pool}
    return decide(findings, pool, breaks, (i for i in pool if catalog[i].implemented))
