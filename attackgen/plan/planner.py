"""Spec -> Plan: the implementations that realise a threat model, ranked, with parameters and reasons.

The planner never invents feasibility: it asks the rules (``taxonomy.graph.validate``) whether the
spec is coherent, asks ``realises`` which catalogued attacks cover its cell, and asks
``descriptor_violations`` whether an attack, with the parameters the planner gives it, breaks a rule
(a query budget, a data need). Only implemented attacks become runnable items; catalogued attacks
whose code has not landed are listed separately. Imports no torch.

Choices, all visible in the plan:

- **Ranking**: strength (descending), then expected cost per input (passes + queries, ascending).
  At most ``max_primary`` attacks are scheduled; further feasible ones are listed as alternatives.
- **Strategy**: fields the user set constrain the choice (``realises`` checks them); fields left out
  are filled from the chosen items and reported in ``Plan.filled``.
- **Several epsilons** (a robustness curve): one item per (attack, epsilon); items that share an
  epsilon form one evaluation (per-sample worst case), and each evaluation has the full per-input
  query budget. Minimal-norm attacks run once (``epsilon: null``) and report success at every
  epsilon of the curve (``params.report_at``).
- **Query budget**: an attack whose minimum useful query count (``min_queries`` in its descriptor) exceeds
  the budget breaks rule A8 before anything is shrunk; the rest are split across the items of one
  evaluation in proportion to each attack's default query count, so the sum never exceeds the budget;
  an attack whose share is below its minimum is dropped (and the drop is noted), never run below it.
- **Gradient-free check** (rule G2): a white-box plan also schedules the strongest implemented
  score- or decision-based attack that realises the spec with the optimiser choice relaxed.

Size (about 870 lines): ranking, parameters, query-budget split, the nearest feasible spec and the
catalogue survey all read the same candidate records; the rule checks shared with the plan file
model are in attackgen.plan.checks. Per-attack knowledge moves to the catalogue descriptors (#11).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from attackgen.plan.checks import _rules, realises_any, relaxed_for_check, rule_breaks  # noqa: F401 (re-exported)
from attackgen.plan.document import (
    CatalogueOnly,
    Infeasible,
    ItemContext,
    Plan,
    PlanCost,
    PlanItem,
    RuleNote,
    Suggestion,
)
from attackgen.plan.notes import note_of
from taxonomy.axes import LpBudget
from taxonomy.catalog import CATALOG, REQUIRES, cell_features, fits_purpose, spec_features  # noqa: F401 (re-exported)
from taxonomy.catalog_types import AttackDescriptor, Cost
from taxonomy.errors import SpecError
from taxonomy.spec import AttackSpec, parse_spec

MAX_PRIMARY = 4

QUERY_KEYS = ("n_queries", "max_queries")
"""Parameters that set an attack's query count directly."""

ITERATION_KEYS = ("maxiter", "generations", "steps", "epochs")
"""Parameters scaled down when an attack's query share is below its default."""

SMALL_QUERY_NEED = 10
"""Items that want at most this many queries (transfer verification) get them before the split."""

_ACCESS_PHRASE = {
    "gradients": "uses the victim's gradients",
    "scores": "needs only score queries",
    "labels": "needs only label queries (decision-based)",
    "surrogate": "optimises on a surrogate and transfers",
}
_NORM_NAME = {"inf": "Linf", "2": "L2", "1": "L1", "0": "L0"}


# --------------------------------------------------------------------------- rule plumbing


def spec_notes(spec: AttackSpec) -> list[RuleNote]:
    """Every rule finding on the spec itself, errors first."""
    notes = [note_of(v) for v in _rules().validate(spec)]
    return sorted(notes, key=lambda n: (n.severity != "error", n.id))


def _severity(violation: Any) -> str:
    value = violation.severity
    return str(getattr(value, "value", value))


def check_rule() -> Any:
    """The planner-level rule that asks white-box plans for a gradient-free check (G2 in taxonomy.rules)."""
    rules = _rules()
    for rule in rules.RULES.values():
        if "gradient-free-check" in rule.id:
            return rule
    return None


def _rule_note(rule: Any, field: str, detail: str) -> RuleNote:
    return RuleNote(id=rule.id, severity=rule.severity, field=field, reason=rule.reason, fix=rule.fix, detail=detail)


def _errors(notes: Iterable[RuleNote]) -> list[RuleNote]:
    return [n for n in notes if n.severity == "error"]


# --------------------------------------------------------------------------- parameters


def query_budget(spec: AttackSpec) -> int | None:
    """Victim queries per input granted by the threat model (None: unbudgeted)."""
    return getattr(spec.threat.model_knowledge, "query_budget", None)


def primary_budget(spec: AttackSpec) -> LpBudget | None:
    budgets = spec.lp_budgets
    return budgets[0] if budgets else None


def epsilons_in_input_units(spec: AttackSpec, budget: LpBudget | None) -> list[float]:
    """The epsilon curve in the model's input units (L0 epsilons are counts and are not rescaled)."""
    if budget is None:
        return []
    if budget.norm == "0":
        return [float(e) for e in budget.epsilons]
    return [_round(spec.input_space.to_input_scale(e)) for e in budget.epsilons]


def _round(value: float) -> float:
    return float(f"{value:.8g}")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _target(spec: AttackSpec) -> dict[str, Any]:
    consequence = spec.threat.consequence
    data = consequence.model_dump(mode="json", exclude_defaults=True)
    data["kind"] = consequence.kind
    return data


def derive_params(
    spec: AttackSpec, descriptor: AttackDescriptor, epsilon: float | None, epsilons: list[float]
) -> dict[str, Any]:
    """The descriptor's defaults made concrete for this spec (budget keys, step size, threat parameters)."""
    params: dict[str, Any] = {k: _plain(v) for k, v in descriptor.defaults.items()}
    threat = spec.threat
    budget = primary_budget(spec)
    if budget is not None:
        params["norm"] = budget.norm
        params["mode"] = budget.mode
        if epsilon is not None:
            params["epsilon"] = epsilon
        elif budget.mode == "minimal" and epsilons:
            params["report_at"] = list(epsilons)
        others = [b for b in spec.lp_budgets[1:] if b.epsilons]  # further bounds that also apply (smallest eps)
        if others:
            params["extra_bounds"] = [
                {"norm": b.norm, "epsilon": min(epsilons_in_input_units(spec, b))} for b in others
            ]
    if "rel_stepsize" in params and epsilon is not None and "step_size" in descriptor.params.model_fields:
        params["step_size"] = _round(float(params.pop("rel_stepsize")) * epsilon)
    params["target"] = _target(spec)
    for item in threat.imperceptibility:
        if item.kind == "perceptual":
            params[f"{item.metric}_{'floor' if item.metric == 'ssim' else 'max'}"] = item.threshold
        elif item.kind == "detector":
            params["detectors"] = list(item.detectors)
        elif item.kind == "output":
            params["output_criterion"] = item.criterion
    scope = threat.scope
    if scope.kind in ("universal", "contextual"):
        params["heldout_fraction"] = scope.heldout_fraction
        if scope.kind == "universal":
            params["target_fooling_rate"] = scope.target_fooling_rate
        params["data_basis"] = _data_basis_for(spec, descriptor)
    capability = threat.capability
    takes = descriptor.params.model_fields  # threat values the attack itself needs, when its model declares them
    if capability.transformations is not None and "eot_samples" in takes:
        params["eot_samples"] = capability.transformations.samples
    if capability.spatial is not None and capability.spatial.area_fraction is not None and "area_fraction" in takes:
        params["area_fraction"] = capability.spatial.area_fraction
    if capability.spatial is not None and "placement" in takes:
        params["placement"] = capability.spatial.placement
        if capability.spatial.location is not None:  # the top-left corner of a fixed patch
            params["location"] = list(capability.spatial.location)
    if capability.feed == "physical" and capability.transformations is not None and "transformations" in takes:
        params["transformations"] = capability.transformations.model_dump(mode="json")
    if "printability" in takes:
        params["printability"] = bool(capability.printability and capability.feed == "physical")
    stated = capability.printability_bounds  # printability as bounds: the terms on, the colours, the projection
    if stated is not None:
        if "printability" in takes:
            params["printability"] = True
        if stated.colours is not None and "palette" in takes:
            params["palette"] = [list(c) for c in stated.colours]
        if stated.max_nps == 0 and "snap_colours" in takes:
            params["snap_colours"] = True
    if descriptor.access == "surrogate":
        params["surrogate"] = _surrogate(spec)
        if threat.model_knowledge.kind == "full_black_box" and "verify_queries" in takes:
            params["verify_queries"] = 0
    return params


def _surrogate(spec: AttackSpec) -> dict[str, Any]:
    basis = spec.strategy.model_basis
    if basis is not None and basis.kind == "surrogate":
        return basis.model_dump(mode="json", exclude={"kind"}, exclude_none=True)
    source = "pretrained" if spec.threat.data_knowledge.value == "none" else "trained_on_data"
    return {"source": source, "ensemble": 1}


def _data_basis_for(spec: AttackSpec, descriptor: AttackDescriptor) -> str:
    chosen = spec.strategy.data_basis
    if chosen is not None:
        return chosen.value
    known = spec.threat.data_knowledge.value
    if spec.threat.scope.kind == "individual" and "none" in descriptor.data_bases:
        return "none"
    if known in descriptor.data_bases:
        return known
    return sorted(descriptor.data_bases)[0]


def split_params(descriptor: AttackDescriptor, flat: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The planner's working mapping as (the attack's own params, the item's threat context).

    A name the attack's model declares is a parameter (the patch's area, the detectors to evade); the
    rest is context. ``epsilon`` is the item's own field and goes to neither.
    """
    own = set(descriptor.params.model_fields)
    params = {k: v for k, v in flat.items() if k in own}
    context = {k: v for k, v in flat.items() if k not in own and k != "epsilon"}
    return params, context


def _cost(descriptor: AttackDescriptor, params: Mapping[str, Any]) -> Cost:
    try:
        return descriptor.expected_cost(params)
    except (TypeError, ValueError):  # a hand-edited parameter of the wrong type (pydantic's ValidationError)
        return descriptor.expected_cost({k: v for k, v in params.items() if k not in descriptor.params.model_fields})


def fit_queries(descriptor: AttackDescriptor, params: dict[str, Any], share: int) -> dict[str, Any]:
    """Parameters adjusted so the attack's expected queries fit ``share``."""
    params = dict(params)
    for key in QUERY_KEYS:
        if key in params:
            params[key] = int(min(int(params[key]), share))
    for _ in range(40):
        queries = _cost(descriptor, params).queries
        if queries <= share:
            break
        keys = [k for k in ITERATION_KEYS if isinstance(params.get(k), int) and params[k] > 1]
        if not keys:
            break
        ratio = share / queries
        for key in keys[:1]:
            params[key] = max(1, min(params[key] - 1, math.floor(params[key] * ratio)))
    return params


# --------------------------------------------------------------------------- candidates and ranking


class _Candidate:
    __slots__ = ("cost", "descriptor", "notes", "params", "role")

    def __init__(self, descriptor: AttackDescriptor, params: dict[str, Any], role: str) -> None:
        self.descriptor = descriptor
        self.params = params
        self.cost = _cost(descriptor, params)
        self.notes: list[RuleNote] = []
        self.role = role

    @property
    def rank_key(self) -> tuple[float, float, str]:
        return (-self.descriptor.strength, self.cost.passes + self.cost.queries, self.descriptor.id)


ACCESS_POOLS: dict[str, tuple[str, ...]] = {
    "white_box": ("gradients",),
    "output_transparent": ("scores", "labels", "surrogate"),
    "query_limited": ("scores", "labels", "surrogate"),
    "label_only": ("labels", "surrogate"),
    "full_black_box": ("surrogate",),
}
"""Which access kinds supply primary items for each knowledge level. A white-box adversary gets
gradient attacks (score- and decision-based ones come in as the G2 check, transfer is pointless);
when no attack of the pool realises the spec, every realising attack is eligible."""


def _role(descriptor: AttackDescriptor) -> str:
    return "transfer" if descriptor.access == "surrogate" else "primary"


def candidates(
    spec: AttackSpec, catalog: Mapping[str, AttackDescriptor] | None = None, role: str = "primary"
) -> tuple[list[_Candidate], list[_Candidate]]:
    """(realising attacks that break no rule at their default parameters, ranked; those that break one)."""
    catalog = CATALOG if catalog is None else catalog
    target = relaxed_for_check(spec) if role == "gradient_free_check" else spec
    rules = _rules()
    budget = primary_budget(spec)
    epsilons = epsilons_in_input_units(spec, budget)
    first = epsilons[0] if epsilons and budget is not None and budget.mode == "fixed" else None
    good: list[_Candidate] = []
    broken: list[_Candidate] = []
    q = query_budget(spec)
    features = spec_features(spec)
    for descriptor in catalog.values():
        if not fits_purpose(features, descriptor) or not rules.realises(target, descriptor):
            continue
        params = derive_params(spec, descriptor, first, epsilons)
        candidate = _Candidate(descriptor, params, _role(descriptor) if role == "primary" else role)
        if q is not None and candidate.cost.queries > q and descriptor.min_queries <= q:  # else A8 blocks it
            candidate.params = fit_queries(descriptor, params, q)
            candidate.cost = _cost(descriptor, candidate.params)
        candidate.notes = [note_of(v) for v in rules.descriptor_violations(target, descriptor, candidate.params)]
        (broken if _errors(candidate.notes) else good).append(candidate)
    good.sort(key=lambda c: c.rank_key)
    broken.sort(key=lambda c: c.rank_key)
    return good, broken


# --------------------------------------------------------------------------- the plan


def plan(
    spec: AttackSpec, catalog: Mapping[str, AttackDescriptor] | None = None, max_primary: int = MAX_PRIMARY
) -> Plan | Infeasible:
    """The ranked plan for a spec, or why there is none and the nearest specs that have one."""
    from taxonomy.feasibility import answer

    catalog = CATALOG if catalog is None else catalog
    verdict = answer(spec, catalog)  # the same answer validate and audit give
    notes = sorted((note_of(v) for v in verdict.findings), key=lambda n: (n.severity != "error", n.id))
    warnings = [n for n in notes if n.severity == "warning"]
    if verdict.verdict == "infeasible":
        blocking = _errors(notes) or [note_of(v) for v in verdict.blocking]
        return Infeasible(
            spec_name=spec.name,
            spec_hash=spec.spec_hash(),
            blocking=blocking,
            warnings=warnings,
            nearest=nearest_feasible(spec, catalog),
        )
    return _build_plan(spec, catalog, max_primary, warnings)


def _build_plan(
    spec: AttackSpec, catalog: Mapping[str, AttackDescriptor], max_primary: int, warnings: list[RuleNote]
) -> Plan:
    good, broken = candidates(spec, catalog)
    runnable = [c for c in good if c.descriptor.implemented]
    waiting = [c for c in good if not c.descriptor.implemented]
    pool = ACCESS_POOLS[spec.threat.model_knowledge.kind]
    preferred = [c for c in runnable if c.descriptor.access in pool] or runnable
    plan_notes: list[str] = []
    core = _fast_core(preferred)
    if core:
        chosen = core[:max_primary]
        l1 = any(c.descriptor.id == "apgd_t" and c.params.get("norm") == "1" for c in core)
        plan_notes.append(FAST_CORE_NOTE_L1 if l1 else FAST_CORE_NOTE)
    else:
        chosen = preferred[:max_primary]
    others = [c for c in runnable if c not in chosen]
    if not good:
        if broken:
            plan_notes.append(
                "every catalogued attack that realises this cell breaks a rule with its parameters: "
                + "; ".join(f"{c.descriptor.id} ({', '.join(n.id for n in _errors(c.notes))})" for c in broken[:5])
            )
        else:
            plan_notes.append("gap: the spec passes every rule but no catalogued attack realises its cell yet")
    elif not runnable:
        plan_notes.append(
            "no runnable attack yet: the attacks that realise this spec are catalogued but not implemented "
            "(see not_runnable)"
        )

    check = _gradient_free_check(spec, catalog, chosen)
    if isinstance(check, str):
        check_items: list[_Candidate] = []
    else:
        check_items = [check] if check is not None else []
    for candidate in core:  # cost-aware APGD-T: all 9 targets explored, the 2 most promising pursued (not on L1)
        if candidate.descriptor.id == "apgd_t" and candidate.params.get("norm") != "1":
            candidate.params["keep_targets"] = KEEP_TARGETS
            candidate.cost = _cost(candidate.descriptor, candidate.params)
    if core and check_items and "n_queries" in check_items[0].params:
        check_items[0].params["n_queries"] = min(int(check_items[0].params["n_queries"]), CHECK_QUERIES)
        check_items[0].cost = _cost(check_items[0].descriptor, check_items[0].params)

    scheduled = chosen + check_items
    rule = check_rule()
    short = rule.id.split("-", 1)[0] if rule is not None else "G2"
    if check_items:
        plan_notes.append(f"{short} met: {check_items[0].descriptor.id} runs as the gradient-free check")
    elif isinstance(check, str) and rule is not None:
        warnings = [*warnings, _rule_note(rule, "threat.model_knowledge", check)]
    item_warnings = _dedupe(n for c in scheduled for n in c.notes if n.severity == "warning")
    budget = primary_budget(spec)
    epsilons = epsilons_in_input_units(spec, budget)
    items, dropped = _expand(spec, scheduled, epsilons, budget)
    plan_notes.extend(dropped)
    if budget is not None and len(epsilons) > 1:
        plan_notes.append(
            f"epsilon curve {epsilons} (input units): one item per attack and epsilon; items sharing an "
            "epsilon form one evaluation with its own per-input query budget"
        )
    strategy, filled = _strategy(spec, [c.descriptor for c in chosen] or [c.descriptor for c in waiting[:1]])
    atlas = sorted({a for item in items for a in catalog[item.attack].atlas} | ({"AML.T0015"} if items else set()))
    return Plan(
        spec_name=spec.name,
        spec_hash=spec.spec_hash(),
        spec=spec.model_dump(mode="json", by_alias=True),
        strategy=strategy,
        filled=filled,
        epsilons=epsilons,
        query_budget=query_budget(spec),
        items=items,
        alternatives=[c.descriptor.id for c in others if c.descriptor.id not in {i.attack for i in items}],
        not_runnable=[
            CatalogueOnly(attack=c.descriptor.id, title=c.descriptor.title, strength=c.descriptor.strength)
            for c in waiting
        ],
        warnings=_dedupe([*warnings, *item_warnings]),
        notes=plan_notes,
        atlas=atlas,
    )


FAST_CORE = ("apgd_ce", "apgd_t")
"""The strongest fast white-box pair: APGD-CE on every input, then APGD-T (all 9 target classes side by side)
on the inputs it left. Measured (bench/bench_apgd.py --survivors, digits-cnn and fashion-cnn, Linf): PGD, FMN,
MI-FGSM, DeepFool, APGD-DLR and the targeted FMN sweep broke no input these two left, so they are listed as
alternatives instead of being run."""

FAST_CORE_NOTE = (
    "white-box gradient attacks: APGD-CE on every input, then APGD-T (targeted DLR, 9 classes side by side, "
    "the 2 most promising pursued after the first checkpoint) on the inputs it left, cheapest first, each input "
    "leaving at its first verified success; the other gradient "
    "attacks broke no input these two left in the measured runs (bench/bench_apgd.py --survivors) and are "
    "listed as alternatives"
)
FAST_CORE_NOTE_L1 = FAST_CORE_NOTE.replace(
    "the 2 most promising pursued after the first checkpoint", "all pursued: on L1 the pruning costs strength")

KEEP_TARGETS = 2
"""APGD-T in the default plan runs all 9 target classes side by side for the first 22% of its steps, then
each input keeps only its 2 most promising targets (highest targeted-DLR gain so far; A3, Liu et al. 2022,
drops the runs whose loss shows no progress). Measured with the default plan, one torch thread: on
digits-cnn (256 inputs, Linf 0.1) APGD-T broke the same 12 of 19 inputs with 2, 1 or all 9 targets
pursued (backward passes of the whole plan 7.0k, 6.4k, 11.3k); on mnist5k-cnn-at (100 inputs, Linf 0.2)
none of the 87 APGD-CE left with 2, 3 or 9 (40.5k, 47.3k, 88.0k). bench/results/autoattack-*.md has the
comparison with AutoAttack.

Not on L1, where the pruning (at the same step, in the first of APGD's ``large_eps`` stages, radius 3 x
epsilon) measurably costs strength. digits-cnn, L1 4.0, 100 steps, one torch thread: APGD-T alone left 155 of
300 inputs with 2 targets pursued, 88 with all 9 (passes 99.6k vs 206.0k); on the 103 APGD-CE left, 95 vs
85. At L1 6.0: 60 vs 13 of 300, and 20 vs 10 of the 27 APGD-CE left. So an L1 plan runs all 9 targets."""

CHECK_QUERIES = 500
"""The gradient-free check's queries per input after the fast core: it runs only on the inputs APGD left, and
its job is to expose masked gradients. On unmasked models it broke none of those inputs (5,000 queries
included; on mnist5k-cnn-at none of 87 with 1,000); on a masked model the gradient attacks leave easy
inputs that Square breaks in far fewer queries (Andriushchenko et al. 2020: median queries below 100 on
undefended models; 182 on digits-cnn-quantized), and what it leaves goes to the adaptive escalation."""


def _fast_core(preferred: list[_Candidate]) -> list[_Candidate]:
    """APGD-CE then APGD-T when both realise the spec (white-box, fixed epsilon), else nothing."""
    by_id = {c.descriptor.id: c for c in preferred}
    if all(a in by_id for a in FAST_CORE):
        return [by_id[a] for a in FAST_CORE]
    return []


def _dedupe(notes: Iterable[RuleNote]) -> list[RuleNote]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for note in notes:
        key = (note.id, note.field, note.detail)
        if key not in seen:
            seen.add(key)
            out.append(note)
    return out


def _gradient_free_check(
    spec: AttackSpec, catalog: Mapping[str, AttackDescriptor], chosen: list[_Candidate]
) -> _Candidate | str | None:
    """Rule G2: the gradient-free check a white-box plan schedules (or a note why there is none)."""
    if spec.threat.model_knowledge.kind != "white_box" or not chosen:
        return None
    if any(c.descriptor.access in ("scores", "labels") for c in chosen):
        return None  # a gradient-free attack is already scheduled
    pool = {k: d for k, d in catalog.items() if d.access in ("scores", "labels")}
    good, _ = candidates(spec, pool, role="gradient_free_check")
    # score-based first: a margin signal finds masked gradients sooner than labels do (AutoAttack's Square)
    runnable = sorted((c for c in good if c.descriptor.implemented), key=lambda c: (c.descriptor.access != "scores",
                                                                                   c.rank_key))
    if runnable:
        return runnable[0]
    waiting = ", ".join(c.descriptor.id for c in good)
    return (
        "no gradient-free check scheduled: no implemented score- or decision-based attack realises this spec"
        + (f" (catalogued, not yet runnable: {waiting})" if waiting else " (none catalogued for this cell)")
    )


def _shares(group: list[_Candidate], total_budget: int) -> dict[str, int]:
    """Query share per attack id: small needs (verification) as asked, the rest in proportion to defaults."""
    wants = {c.descriptor.id: _cost(c.descriptor, c.params).queries for c in group}
    small = {k: int(v) for k, v in wants.items() if v <= SMALL_QUERY_NEED}
    rest = max(total_budget - sum(small.values()), 0)
    weight = sum(v for k, v in wants.items() if k not in small) or 1.0
    return {k: small[k] if k in small else int(rest * v / weight) for k, v in wants.items()}


def _split_queries(spec: AttackSpec, group: list[_Candidate]) -> tuple[list[_Candidate], list[str]]:
    """Share the per-input query budget among the items of one evaluation."""
    total_budget = query_budget(spec)
    if total_budget is None:
        return group, []
    dropped: list[str] = []
    live = list(group)
    while True:
        users = [c for c in live if c.cost.queries > 0]
        if not users or sum(c.cost.queries for c in users) <= total_budget:
            return live, dropped
        shares = _shares(users, total_budget)
        floor = {c.descriptor.id: max(c.descriptor.min_queries, 1) for c in users}
        starved = [c for c in users if shares[c.descriptor.id] < floor[c.descriptor.id]]
        if starved:
            weakest = max(starved, key=lambda c: c.rank_key)
            live.remove(weakest)
            dropped.append(
                f"{weakest.descriptor.id} dropped: its share of the {total_budget}-query budget is below its "
                f"useful minimum ({floor[weakest.descriptor.id]})"
            )
            continue
        for c in users:
            c.params = fit_queries(c.descriptor, c.params, shares[c.descriptor.id])
            c.cost = _cost(c.descriptor, c.params)
        if sum(c.cost.queries for c in users) <= total_budget:
            return live, dropped
        weakest = max(users, key=lambda c: c.rank_key)  # could not fit after rounding: drop the weakest
        live.remove(weakest)
        dropped.append(f"{weakest.descriptor.id} dropped: the query budget cannot hold it with the others")


def _expand(
    spec: AttackSpec, scheduled: list[_Candidate], epsilons: list[float], budget: LpBudget | None
) -> tuple[list[PlanItem], list[str]]:
    """One item per attack and epsilon (fixed mode), or one per attack (minimal mode / no Lp bound)."""
    live, dropped = _split_queries(spec, scheduled)
    fixed = budget is not None and budget.mode == "fixed" and epsilons
    points: list[float | None] = list(epsilons) if fixed else [None]
    items: list[PlanItem] = []
    for epsilon in points:
        for candidate in live:
            descriptor = candidate.descriptor
            params = dict(candidate.params)
            if epsilon is not None:
                base = derive_params(spec, descriptor, epsilon, epsilons)
                for key in (*QUERY_KEYS, *ITERATION_KEYS, "verify_queries", "keep_targets"):
                    if key in params:
                        base[key] = params[key]
                params = base
            cost = _cost(descriptor, params)
            own, context = split_params(descriptor, params)
            items.append(
                PlanItem(
                    attack=descriptor.id,
                    role=candidate.role,
                    epsilon=epsilon,
                    params=own,
                    context=ItemContext.model_validate(context),
                    rationale=_rationale(spec, candidate, cost),
                    expected_cost=PlanCost(forward=cost.forward, backward=cost.backward, queries=cost.queries),
                    strength=descriptor.strength,
                )
            )
    return items, dropped


def _rationale(spec: AttackSpec, candidate: _Candidate, cost: Cost) -> str:
    d = candidate.descriptor
    budget = primary_budget(spec)
    what = []
    if budget is not None:
        what.append(f"{_NORM_NAME[budget.norm]} {'minimal-norm' if budget.mode == 'minimal' else 'fixed-epsilon'}")
    what.append(spec.threat.consequence.kind.replace("_", " "))
    if spec.threat.scope.kind != "individual":
        what.append(spec.threat.scope.kind)
    spent = []
    if cost.passes:
        spent.append(f"~{cost.passes:g} passes")
    if cost.queries:
        spent.append(f"~{cost.queries:g} victim queries")
    price = f"; {' + '.join(spent)} per input" if spent else ""
    if candidate.role == "gradient_free_check":
        head = f"gradient-free check against gradient masking (rule G2): {d.title} {_ACCESS_PHRASE[d.access]}"
        if candidate.params.get("n_queries") == CHECK_QUERIES:
            head += (f", on the inputs the gradient attacks left, {CHECK_QUERIES} queries each (the planner's "
                     "choice: enough to expose masked gradients)")
    else:
        head = f"{d.title}: {_ACCESS_PHRASE[d.access]}"
    return f"{head}; realises {', '.join(what)} on {spec.task.value} (strength {d.strength}/10){price}"


def _strategy(spec: AttackSpec, chosen: list[AttackDescriptor]) -> tuple[dict[str, Any], list[str]]:
    """The strategy in effect: the user's fields, and those the planner filled from its first item."""
    user = spec.strategy
    filled: list[str] = []
    strategy: dict[str, Any] = {}
    lead = chosen[0] if chosen else None
    if user.model_basis is not None:
        strategy["model_basis"] = user.model_basis.model_dump(mode="json", exclude_none=True)
    elif lead is not None:
        basis = "surrogate" if lead.access == "surrogate" else "victim"
        strategy["model_basis"] = {"kind": basis}
        if basis == "surrogate":
            strategy["model_basis"].update(_surrogate(spec))
        filled.append(f"strategy.model_basis: {basis} (from the top-ranked attack, {lead.id})")
    if user.data_basis is not None:
        strategy["data_basis"] = user.data_basis.value
    elif lead is not None:
        basis = _data_basis_for(spec, lead)
        strategy["data_basis"] = basis
        why = (
            "an individual attack needs only its input" if basis == "none"
            else "the fitting set of an image-agnostic attack"
        )
        filled.append(f"strategy.data_basis: {basis} ({why})")
    if user.optimizer is not None:
        strategy["optimizer"] = user.optimizer.model_dump(mode="json", exclude_none=True)
    elif lead is not None:
        optimizer: dict[str, Any] = {"kind": lead.optimizer}
        if lead.gradient_source:
            optimizer["gradient_source"] = lead.gradient_source
        strategy["optimizer"] = optimizer
        filled.append(f"strategy.optimizer: {lead.optimizer} (from {lead.id}; each item keeps its own optimiser)")
    return strategy, filled


# --------------------------------------------------------------------------- nearest feasible specs


def _compact(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and set(value) == {"kind"}:
        return str(value["kind"])
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": ")).replace('"', "")
    return str(value)


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and value and "kind" not in value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(f"{prefix}.{key}", inner))
        return out
    return {prefix: value}


def _diff(field: str, old: Any, new: Any) -> str:
    """'a.b: x -> y' for each leaf that changed (kind-tagged values stay whole)."""
    before, after = _flatten(field, old), _flatten(field, new)
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    return "; ".join(f"{k}: {_compact(before.get(k))} -> {_compact(after.get(k))}" for k in keys)


def _edits(spec: AttackSpec, data: dict[str, Any]) -> list[tuple[str, tuple[str, ...], Any]]:
    """(axis, field path, new value) for every one-axis change worth trying."""
    threat = data["threat"]
    first_class: Any = 0
    span = spec.input_space.span
    pixel = spec.input_space.epsilon_units == "pixel_255"
    linf = 8.0 if pixel else _round(8 / 255 * span)
    l2 = 128.0 if pixel else _round(0.5 * span)
    statics = {
        "classification": {"kind": "static_target", "target_class": first_class},
        "segmentation": {"kind": "static_target", "target_map": "scene:0"},
        "detection": {"kind": "static_target", "target_boxes": [{"x0": 0, "y0": 0, "x1": 8, "y1": 8, "label": 0}]},
    }
    task = spec.task.value
    edits: list[tuple[str, tuple[str, ...], Any]] = []
    for value in ("classification", "segmentation", "detection"):
        edits.append(("task", ("task",), value))
    consequences = [
        {"kind": "untargeted"},
        statics[task],
        {"kind": "dynamic_target", "rule": "least_likely"} if task == "classification"
        else {"kind": "dynamic_target", "remove_classes": [first_class]},
        {"kind": "confusing_target", "classes": [first_class], "shift": [8, 0]},
        {"kind": "vanishing"},
        {"kind": "fabrication", "classes": [first_class]},
        {"kind": "mislabel", "to_class": first_class},
    ]
    edits += [("consequence", ("threat", "consequence"), c) for c in consequences]
    for scope in ({"kind": "individual"}, {"kind": "contextual", "context": {"field": "label", "equals": 0}},
                  {"kind": "universal"}):
        edits.append(("scope", ("threat", "scope"), scope))
    items = threat["imperceptibility"]
    if len(items) > 1:
        for index in range(len(items)):
            kept = [item for i, item in enumerate(items) if i != index]
            edits.append(("imperceptibility", ("threat", "imperceptibility"), kept))
    for single in ([{"kind": "lp", "norm": "inf", "epsilon": linf}], [{"kind": "lp", "norm": "2", "epsilon": l2}],
                   [{"kind": "lp", "norm": "2", "mode": "minimal"}]):
        edits.append(("imperceptibility", ("threat", "imperceptibility"), single))
    budget = query_budget(spec)
    knowledge = [{"kind": "white_box"}, {"kind": "output_transparent"},
                 {"kind": "query_limited", "query_budget": max(10000, (budget or 0) * 10)},
                 {"kind": "label_only"}, {"kind": "full_black_box"}]
    needed = _queries_needed(spec)
    if budget is not None and needed is not None and needed > budget:
        raised = dict(threat["model_knowledge"])
        raised["query_budget"] = needed
        knowledge.insert(0, raised)
    edits += [("model_knowledge", ("threat", "model_knowledge"), k) for k in knowledge]
    for value in ("training", "surrogate", "none"):
        edits.append(("data_knowledge", ("threat", "data_knowledge"), value))
    capability = dict(threat.get("capability") or {})
    for feed in ("digital", "physical"):
        changed = dict(capability, feed=feed)
        if feed == "physical":
            changed.setdefault("transformations", {})
            if not changed.get("spatial"):
                changed["spatial"] = {"kind": "patch", "area_fraction": 0.05}
        else:
            changed.pop("transformations", None)
            changed.pop("printability", None)
        edits.append(("capability", ("threat", "capability"), changed))
    for spatial in (None, {"kind": "patch", "area_fraction": 0.05}):
        changed = dict(capability)
        if spatial is None:
            changed.pop("spatial", None)
        else:
            changed["spatial"] = spatial
        edits.append(("capability", ("threat", "capability"), changed))
    for basis in (None, {"kind": "victim"}, {"kind": "surrogate", "source": "trained_on_data"},
                  {"kind": "surrogate", "source": "pretrained"}):
        edits.append(("strategy.model_basis", ("strategy", "model_basis"), basis))
    for data_basis in (None, "training", "surrogate", "none"):
        edits.append(("strategy.data_basis", ("strategy", "data_basis"), data_basis))
    for optimizer in (None, {"kind": "first_order"}, {"kind": "second_order"}, {"kind": "evolution"},
                      {"kind": "first_order", "gradient_source": "estimated_decisions"}):
        edits.append(("strategy.optimizer", ("strategy", "optimizer"), optimizer))
    for value in ("inside_model", "none"):
        edits.append(("input_space", ("input_space", "normalization"), value))
    return edits


def _queries_needed(spec: AttackSpec) -> int | None:
    """The fewest default queries among catalogued attacks that realise the spec (for rule A8 fixes)."""
    rules = _rules()
    costs = [_cost(d, d.defaults).queries for d in CATALOG.values() if rules.realises(spec, d)]
    costs = [c for c in costs if c > 0]
    return math.ceil(min(costs)) if costs else None


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(data))
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return out


def nearest_feasible(
    spec: AttackSpec, catalog: Mapping[str, AttackDescriptor] | None = None, limit: int = 6
) -> list[Suggestion]:
    """Specs one axis away that pass every rule, runnable ones first, then those an attack realises."""
    from taxonomy.feasibility import answer

    catalog = CATALOG if catalog is None else catalog
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    found: list[tuple[tuple[int, int, int], Suggestion]] = []
    seen: set[str] = set()
    for order, (axis, path, value) in enumerate(_edits(spec, data)):
        old = _get(data, path)
        if old == value or (old is None and value is None):
            continue
        candidate = _set(data, path, value)
        key = json.dumps(candidate, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            changed = parse_spec(candidate, "suggestion")
        except SpecError:
            continue
        verdict = answer(changed, catalog)  # the shared answer: no suggestion that plan would refuse
        if verdict.verdict == "infeasible":
            continue
        realised = [catalog[i] for i in (*verdict.runnable, *verdict.waiting)]
        runnable = verdict.verdict == "runnable"
        suggestion = Suggestion(
            axis=axis,
            change=_diff(".".join(path), old, value),
            runnable=runnable,
            realised_by=[d.id for d in realised],
            spec=candidate,
        )
        found.append(((0 if runnable else 1, 0 if realised else 1, order), suggestion))
    found.sort(key=lambda pair: pair[0])
    return [s for _, s in found[:limit]]



# --------------------------------------------------------------------------- the whole threat space


def cell_axes(cell: Any) -> dict[str, Any]:
    """A ThreatCell as {axis: value} (dataclass, pydantic model, named tuple or mapping)."""
    import dataclasses

    if dataclasses.is_dataclass(cell):
        return {f.name: getattr(cell, f.name) for f in dataclasses.fields(cell)}
    if hasattr(cell, "model_dump"):
        return dict(cell.model_dump())
    if hasattr(cell, "_asdict"):
        return dict(cell._asdict())
    return dict(cell)


def survey(catalog: Mapping[str, AttackDescriptor] | None = None) -> list[dict[str, Any]]:
    """Every abstract cell: feasible or not (its blocking rules), and the catalogued attacks that realise it
    without breaking a rule at their default parameters."""
    from taxonomy import space

    catalog = CATALOG if catalog is None else catalog
    rows = []
    for cell in space.enumerate_cells():
        ans = space.cell_answer(cell, catalog)  # the shared answer: infeasible also when every realiser breaks a rule
        feasible = ans.verdict != "infeasible"
        realised = [*ans.runnable, *ans.waiting] if feasible else []
        rows.append({"cell": cell, "feasible": feasible, "blocking": ans.blocking_ids, "realised_by": realised})
    return rows


def gap_report(rows: list[dict[str, Any]] | None = None, examples: int = 12) -> dict[str, Any]:
    """Counts over the threat space: feasible, infeasible, realised, and gaps per axis value."""
    rows = survey() if rows is None else rows
    implemented = {k for k, d in CATALOG.items() if d.implemented}
    by_axis: dict[str, dict[str, dict[str, int]]] = {}
    feasible = gaps = uncatalogued = realised_impl = realised_cat = 0
    shown: list[str] = []
    for row in rows:
        if not row["feasible"]:
            continue
        feasible += 1
        catalogued = bool(row["realised_by"])
        runnable = any(a in implemented for a in row["realised_by"])
        realised_cat += catalogued
        realised_impl += runnable
        axes_of = cell_axes(row["cell"])
        for axis, value in axes_of.items():
            slot = by_axis.setdefault(axis, {}).setdefault(str(value), {"feasible": 0, "gaps": 0, "uncatalogued": 0})
            slot["feasible"] += 1
            slot["gaps"] += not runnable
            slot["uncatalogued"] += not catalogued
        if not runnable:
            gaps += 1
        if not catalogued:
            uncatalogued += 1
            if len(shown) < examples:
                shown.append(", ".join(f"{k}={v}" for k, v in axes_of.items()))
    return {
        "cells": len(rows),
        "feasible": feasible,
        "infeasible": len(rows) - feasible,
        "realised_implemented": realised_impl,
        "realised_catalogued": realised_cat,
        "gaps": gaps,
        "gaps_uncatalogued": uncatalogued,
        "gaps_by_axis": by_axis,
        "examples": shown,
    }


def plan_cell(cell: Any, catalog: Mapping[str, AttackDescriptor] | None = None,
              max_primary: int = MAX_PRIMARY) -> dict[str, Any]:
    """The abstract plan of one feasible cell: the same selection as ``plan`` (pool by knowledge, rank by
    strength then cost at default parameters, a gradient-free check for white-box), without parameters.
    Used to plan the whole threat space quickly; ``plan`` on ``space.spec_for_cell(cell)`` gives the
    concrete version."""
    from taxonomy import space

    catalog = CATALOG if catalog is None else catalog
    rank = _rank_index(catalog)
    features = cell_features(cell)
    ranked = [catalog[i] for i in sorted(space.feasible_realisers(cell, catalog), key=rank.__getitem__)
              if fits_purpose(features, catalog[i])]
    runnable = [d for d in ranked if d.implemented]
    pool = ACCESS_POOLS[cell.knowledge]
    eligible = [d for d in runnable if d.access in pool] or runnable
    ids = {d.id for d in eligible}
    core = [d for a in FAST_CORE for d in eligible if d.id == a] if ids.issuperset(FAST_CORE) else []
    chosen = (core or eligible)[:max_primary]
    check = None
    if cell.knowledge == "white_box" and chosen and not any(d.access in ("scores", "labels") for d in chosen):
        free = [d for d in runnable if d.access == "scores"] or [d for d in runnable if d.access == "labels"]
        check = free[0].id if free else None
    return {
        "items": [d.id for d in chosen] + ([check] if check else []),
        "check": check,
        "not_runnable": [d.id for d in ranked if not d.implemented],
    }


_RANKS: dict[int, tuple[Mapping[str, AttackDescriptor], dict[str, int]]] = {}


def _rank_index(catalog: Mapping[str, AttackDescriptor]) -> dict[str, int]:
    """Position of each attack in the global ranking (strength, then cost at defaults), cached per catalogue."""
    hit = _RANKS.get(id(catalog))
    if hit is None or hit[0] is not catalog or len(hit[1]) != len(catalog):
        order = sorted(catalog.values(), key=lambda d: (-d.strength, _default_price(d), d.id))
        hit = _RANKS[id(catalog)] = (catalog, {d.id: i for i, d in enumerate(order)})
    return hit[1]


def _default_price(d: AttackDescriptor) -> float:
    cost = _cost(d, d.defaults)
    return cost.passes + cost.queries
