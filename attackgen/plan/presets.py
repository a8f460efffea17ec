"""Named plans that reproduce a published evaluation protocol: AutoAttack (Croce & Hein 2020).

``attackgen plan SPEC --preset autoattack-standard`` schedules AutoAttack's attacks in its order with its
parameters (fra31/auto-attack, ``autoattack.py``, ``_set_version``), so the robust accuracy compares
with RobustBench and the papers that report AutoAttack:

- standard, Linf and L2: APGD-CE (100 steps, 1 restart), APGD-T (100 steps, 9 target classes, 1
  restart), FAB-T (100 steps, 9 target classes), Square (5,000 queries, p_init 0.8);
- standard, L1: APGD-CE (5 restarts) and APGD-T (5 target classes), both with the radii 3, 2, 1 x
  epsilon (the reference's ``use_largereps``), FAB-T (9 target classes), Square in L1 (5,000 queries,
  p_init 0.8; ``square_l1``);
- plus: APGD-CE (5 restarts), APGD-DLR (5 restarts), FAB (5 restarts), Square (5,000 queries),
  APGD-T (9 targets), FAB-T (9 targets);
- rand (randomised defences): APGD-CE and APGD-DLR, each with EOT over 20 passes, 1 restart.

FAB and FAB-T are the port of the reference (attackgen/run/attacks/fab.py). Square runs with
``draws: autoattack``, the reference's own random stream (one window per iteration shared by a batch,
seeded 0 per batch), so it returns the reference's adversarial examples when it sees the same batches:
the reference attacks all survivors in batches of ``bs`` (250 by default), attackgen the survivors of each
chunk of ``--batch-size`` inputs (256 on the CPU); the batches are the same when every evaluated input fits
one batch on both sides (n <= --batch-size and n <= bs), and differ otherwise (each side then draws
from its own batches; the figures agree statistically, not input for input). ``autoattack-square`` is
AutoAttack's one black-box component alone (Square, 5,000 queries): the nearest preset for an adversary
with score access only (Linf, L2 and L1).

A preset is refused by rule G3-preset-fits-threat-model (with the nearest fitting preset) on a threat
model it was not defined for, and by the catalogue's own rules on a spec one of its attacks cannot run
(C18: DLR on fewer than 3 or 4 classes). Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attackgen.plan.document import Infeasible, ItemContext, Plan, PlanCost, PlanItem, RuleNote
from attackgen.plan.planner import (
    _cost,
    _dedupe,
    _errors,
    _strategy,
    check_rule,
    derive_params,
    epsilons_in_input_units,
    primary_budget,
    query_budget,
    rule_breaks,
    spec_notes,
    split_params,
)
from taxonomy.catalog import CATALOG
from taxonomy.errors import SpecError
from taxonomy.spec import AttackSpec

AUTOATTACK = "Croce & Hein 2020, AutoAttack, arXiv:2003.01690; fra31/auto-attack autoattack.py (_set_version)"
SCORE_KNOWLEDGE = frozenset({"output_transparent", "query_limited"})
SQUARE_QUERIES = 5000


@dataclass(frozen=True)
class PresetItem:
    attack: str  # a catalogue id; "square" picks square_linf, square_l2 or square_l1 by the budget's norm
    params: Mapping[str, Any]
    label: str  # the protocol's own name for the item (APGD-CE, FAB-T, ...)
    role: str = "primary"
    l1: Mapping[str, Any] | None = None  # the protocol's parameters on L1 budgets, where they differ


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    items: tuple[PresetItem, ...]
    knowledge: frozenset[str] = frozenset({"white_box"})
    norms: frozenset[str] = frozenset({"inf", "2", "1"})
    notes: tuple[str, ...] = field(default_factory=tuple)


def _square(label: str = "Square") -> PresetItem:
    # draws: autoattack: the reference's shared, seeded stream, so the result equals the reference's on the
    # same batches (the default per_input draws are stronger but a different search)
    # and AutoAttack's resc_schedule=False (autoattack.py builds its SquareAttack so)
    return PresetItem("square", {"n_queries": SQUARE_QUERIES, "p_init": 0.8, "draws": "autoattack",
                                 "rescale_schedule": False}, label, "gradient_free_check")


def _apgd_t(large_eps: bool) -> PresetItem:
    return PresetItem("apgd_t", {"steps": 100, "restarts": 1, "n_target_classes": 9, "parallel_targets": False},
                      "APGD-T", l1={"n_target_classes": 5, "large_eps": True} if large_eps else {"large_eps": False})


_FAB_T = PresetItem("fab_t", {"steps": 100, "restarts": 1, "n_target_classes": 9, "parallel_targets": False,
                              "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}, "FAB-T")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("autoattack-standard", "AutoAttack, standard version", (
            PresetItem("apgd_ce", {"steps": 100, "restarts": 1}, "APGD-CE", l1={"restarts": 5, "large_eps": True}),
            _apgd_t(large_eps=True),
            _FAB_T,
            _square(),
        )),
        Preset("autoattack-plus", "AutoAttack, plus version", (
            PresetItem("apgd_ce", {"steps": 100, "restarts": 5}, "APGD-CE", l1={"large_eps": False}),
            PresetItem("apgd_dlr", {"steps": 100, "restarts": 5}, "APGD-DLR", l1={"large_eps": False}),
            PresetItem("fab", {"steps": 100, "restarts": 5, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}, "FAB"),
            _square(),
            _apgd_t(large_eps=False),
            _FAB_T,
        )),
        Preset("autoattack-rand", "AutoAttack, version for randomised defences", (
            PresetItem("apgd_ce", {"steps": 100, "restarts": 1, "eot_iter": 20}, "APGD-CE with EOT 20",
                       l1={"large_eps": False}),
            PresetItem("apgd_dlr", {"steps": 100, "restarts": 1, "eot_iter": 20}, "APGD-DLR with EOT 20",
                       l1={"large_eps": False}),
        )),
        Preset("autoattack-square", "AutoAttack's black-box component: Square, 5,000 queries",
               (_square("Square (AutoAttack's parameters)"),), knowledge=frozenset({"white_box", *SCORE_KNOWLEDGE})),
    )
}


def preset_names() -> list[str]:
    return list(PRESETS)


def _rule() -> Any:
    from taxonomy import rules

    return rules.RULES["G3-preset-fits-threat-model"]


def _note(field: str, detail: str) -> RuleNote:
    rule = _rule()
    return RuleNote(id=rule.id, severity="error", field=field, reason=rule.reason, fix=rule.fix, detail=detail)


def _nearest(spec: AttackSpec, preset: Preset) -> str:
    """The nearest preset that fits the spec's knowledge, or what to do when none does."""
    knowledge = spec.threat.model_knowledge.kind
    budget = query_budget(spec)
    if knowledge in SCORE_KNOWLEDGE and (budget is None or budget >= SQUARE_QUERIES):
        return "nearest fitting preset: autoattack-square (Square alone needs only scores)"
    if knowledge == "white_box" and preset.name == "autoattack-square":
        return "nearest fitting preset: autoattack-standard"
    return "no preset fits; plan without --preset"


def fit_notes(spec: AttackSpec, preset: Preset) -> list[RuleNote]:
    """Why the preset does not fit the spec (rule G3), each finding naming the nearest fitting preset."""
    notes: list[RuleNote] = []
    threat = spec.threat
    knowledge = threat.model_knowledge.kind
    if spec.task.value != "classification":
        notes.append(_note("task", f"{preset.name} evaluates classifiers, not {spec.task.value}; no preset fits, "
                                   "plan without --preset"))
    if knowledge not in preset.knowledge:
        notes.append(_note("threat.model_knowledge", f"{preset.name} needs {' or '.join(sorted(preset.knowledge))} "
                                                     f"knowledge, the spec grants {knowledge}; "
                                                     + _nearest(spec, preset)))
    budget = query_budget(spec)
    if preset.name == "autoattack-square" and budget is not None and budget < SQUARE_QUERIES:
        notes.append(_note("threat.model_knowledge.query_budget",
                           f"{preset.name} runs Square for {SQUARE_QUERIES} queries per input, the budget is "
                           f"{budget}; no preset fits, plan without --preset"))
    if threat.consequence.kind != "untargeted":
        notes.append(_note("threat.consequence", f"AutoAttack is untargeted, the spec asks for "
                                                 f"{threat.consequence.kind}; no preset fits, plan without --preset"))
    if threat.scope.kind != "individual":
        notes.append(_note("threat.scope", f"AutoAttack perturbs each input on its own, the spec's scope is "
                                           f"{threat.scope.kind}; no preset fits, plan without --preset"))
    if threat.capability.feed != "digital":
        notes.append(_note("threat.capability.feed", "AutoAttack is a digital evaluation; no preset fits, "
                                                     "plan without --preset"))
    lp = spec.lp_budgets
    others = [i for i in threat.imperceptibility if i.kind != "lp"]
    if len(lp) != 1 or others:
        notes.append(_note("threat.imperceptibility", "AutoAttack bounds one Lp norm and nothing else; the spec has "
                                                      f"{len(threat.imperceptibility)} imperceptibility items; "
                                                      "no preset fits, plan without --preset"))
    elif lp[0].mode != "fixed":
        notes.append(_note("threat.imperceptibility[0].mode", "AutoAttack measures robust accuracy at a fixed "
                                                              "epsilon, the spec asks for minimal norms; no preset "
                                                              "fits, plan without --preset"))
    elif lp[0].norm not in preset.norms:
        takes = " or ".join(f"L{n}" for n in sorted(preset.norms))
        extra = "; no preset fits, plan without --preset"
        notes.append(_note("threat.imperceptibility[0].norm", f"{preset.name} takes {takes} budgets, the spec "
                                                              f"bounds L{lp[0].norm}{extra}"))
    return notes


def _descriptor_id(item: PresetItem, norm: str | None) -> str | None:
    """The catalogue id the item runs as on this norm (None: not available on it)."""
    if item.attack == "square":
        return {"1": "square_l1", "2": "square_l2", "inf": "square_linf"}.get(norm or "inf")
    return item.attack


def plan_preset(spec: AttackSpec, name: str) -> Plan | Infeasible:
    """The preset's plan for the spec, or why it does not fit (rules G3, C18, ... and the spec's own rules)."""
    preset = PRESETS.get(name)
    if preset is None:
        raise SpecError("--preset", [f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}"])
    notes = spec_notes(spec)
    warnings = [n for n in notes if n.severity == "warning"]
    blocking = _errors(notes) or fit_notes(spec, preset)
    budget = primary_budget(spec)
    norm = budget.norm if budget is not None else None
    epsilons = epsilons_in_input_units(spec, budget)
    items: list[PlanItem] = []
    entries = [e for e in preset.items if _descriptor_id(e, norm) is not None]
    skipped = [e.label for e in preset.items if _descriptor_id(e, norm) is None]
    if not blocking:
        for epsilon in epsilons:
            for index, entry in enumerate(entries, 1):
                descriptor = CATALOG[str(_descriptor_id(entry, norm))]
                params = derive_params(spec, descriptor, epsilon, epsilons)
                params.update(entry.params)
                if norm == "1" and entry.l1:
                    params.update(entry.l1)
                own, context = split_params(descriptor, params)
                item = PlanItem(attack=descriptor.id, role=entry.role, epsilon=epsilon,
                                params=own, context=ItemContext.model_validate(context),
                                strength=descriptor.strength)
                found = rule_breaks(spec, descriptor, item)
                blocking += _errors(found)
                warnings += [n for n in found if n.severity == "warning"]
                cost = _cost(descriptor, params)
                item.expected_cost = PlanCost(forward=cost.forward, backward=cost.backward, queries=cost.queries)
                item.rationale = (f"{preset.title}, item {index}/{len(entries)}: {entry.label} "
                                  f"({descriptor.title}) with the protocol's parameters; at most ~{cost.passes:g} "
                                  f"passes + {cost.queries:g} queries per input, run only on inputs still unbroken")
                items.append(item)
    if not blocking and spec.threat.model_knowledge.kind == "white_box" and not any(
            i.role == "gradient_free_check" for i in items):
        rule = check_rule()
        if rule is not None:
            warnings.append(RuleNote(id=rule.id, severity="warning", field="--preset", reason=rule.reason, fix=rule.fix,
                                     detail=f"{preset.name} schedules no gradient-free attack"
                                            + (f" (not available on this norm: {', '.join(skipped)})" if skipped
                                               else " (as in AutoAttack)")))
    if blocking:
        return Infeasible(spec_name=spec.name, spec_hash=spec.spec_hash(), blocking=_dedupe(blocking),
                          warnings=_dedupe(warnings), nearest=[])
    strategy, filled = _strategy(spec, [CATALOG[items[0].attack]])
    atlas = sorted({a for item in items for a in CATALOG[item.attack].atlas} | {"AML.T0015"})
    return Plan(
        spec_name=spec.name, spec_hash=spec.spec_hash(), spec=spec.model_dump(mode="json", by_alias=True),
        strategy=strategy, filled=filled, epsilons=epsilons, query_budget=query_budget(spec), items=items,
        warnings=_dedupe(warnings), atlas=atlas, preset=preset.name,
        notes=[f"preset {preset.name}: {preset.title}, in the protocol's order ({AUTOATTACK})", *preset.notes,
               *([f"not available on this norm: {', '.join(skipped)}"] if skipped else [])],
    )
