"""The constraint rules: every spec-level rule rejects a spec that breaks it, by id; valid specs pass;
attack-level rules judge implementations; the rules live in the networkx graph and DOT export."""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import networkx as nx
import pytest

from taxonomy import graph as tgraph
from taxonomy import rules
from taxonomy.catalog_types import AttackDescriptor, Cost
from taxonomy.graph import constraint_graph, descriptor_violations, realises, to_dot, validate
from taxonomy.params import SquareLinfParams
from taxonomy.rules import DESCRIPTOR_CHECKS, EDGES, FAMILIES, PREDICATES, RULES
from taxonomy.spec import parse_spec

CLS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
SEG = ["background", "road", "person", "car"]
DET = ["person", "car", "bicycle"]

BASE: dict[str, Any] = {
    "name": "base",
    "task": "classification",
    "classes": CLS,
    "threat": {
        "consequence": {"kind": "untargeted"},
        "scope": {"kind": "individual"},
        "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 8 / 255}],
        "model_knowledge": {"kind": "white_box"},
        "data_knowledge": "none",
        "capability": {"feed": "digital"},
    },
}
DELETE = object()


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and "kind" not in value:
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def spec(over: dict[str, Any] | None = None, **threat: Any):
    """The base spec with top-level overrides and threat-field overrides."""
    data = merged(BASE, over or {})
    data["threat"] = merged(data["threat"], threat)
    return parse_spec(data, "test")


def ids(s) -> set[str]:
    return {v.id for v in validate(s)}


LP = lambda eps, norm="inf", **kw: [{"kind": "lp", "norm": norm, "epsilon": eps, **kw}]  # noqa: E731
K = lambda kind, **kw: {"kind": kind, **kw}  # noqa: E731
PHYSICAL = {"feed": "physical", "transformations": {}, "printability": True,
            "spatial": {"kind": "patch", "area_fraction": 0.1}}
SEG_TASK = {"task": "segmentation", "classes": SEG}
DET_TASK = {"task": "detection", "classes": DET}
VICTIM = lambda opt, grad=None: {"strategy": {"model_basis": "victim",  # noqa: E731
                                              "optimizer": {"kind": opt, "gradient_source": grad}}}

# (rule id, top-level overrides, threat overrides): each breaks the rule named
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # A: knowledge, basis, optimiser
    ("A1-victim-gradients-need-white-box", VICTIM("first_order", "analytic"), {"model_knowledge": K("label_only")}),
    ("A2-estimating-gradients-you-have", VICTIM("first_order", "estimated_scores"), {}),
    ("A3-label-only-needs-decision-based", VICTIM("first_order", "estimated_scores"),
     {"model_knowledge": K("label_only")}),
    ("A5-full-black-box-needs-surrogate", {"strategy": {"model_basis": "victim"}},
     {"model_knowledge": K("full_black_box"), "data_knowledge": "surrogate"}),
    ("A7-trained-surrogate-needs-data", {"strategy": {"model_basis": K("surrogate", source="trained_on_data")}},
     {"model_knowledge": K("output_transparent")}),
    ("A9-top-k-may-hide-the-target", {},
     {"model_knowledge": K("output_transparent", granularity="top_k", k=3),
      "consequence": K("static_target", target_class="bag")}),
    ("A10-second-order-needs-gradients-or-scores", VICTIM("second_order"), {"model_knowledge": K("label_only")}),
    ("A11-gradient-free-on-white-box", VICTIM("evolution"), {}),
    ("A16-evolution-has-no-analytic-gradient", {"strategy": {"optimizer": K("evolution", gradient_source="analytic")}},
     {}),
    ("A17-surrogate-gradients-are-analytic",
     {"strategy": {"model_basis": "surrogate", "optimizer": K("first_order", gradient_source="estimated_scores")}},
     {"model_knowledge": K("output_transparent"), "data_knowledge": "training"}),
    ("A18-white-box-transfer-underestimates",
     {"strategy": {"model_basis": K("surrogate", source="pretrained", model="resnet18")}}, {}),
    ("A19-distilled-surrogate-needs-queries",
     {"strategy": {"model_basis": K("surrogate", source="distilled_from_queries")}},
     {"model_knowledge": K("full_black_box"), "data_knowledge": "training"}),
    ("A20-pretrained-surrogate-needs-a-model", {"strategy": {"model_basis": K("surrogate", source="pretrained")}},
     {"model_knowledge": K("output_transparent")}),
    ("A21-query-budget-too-small", {}, {"model_knowledge": K("query_limited", query_budget=50)}),
    ("A22-top-k-exceeds-classes", {}, {"model_knowledge": K("output_transparent", granularity="top_k", k=20)}),
    # B: data, scope
    ("B1-training-basis-needs-training-data", {"strategy": {"data_basis": "training"}},
     {"data_knowledge": "surrogate"}),
    ("B2-surrogate-basis-needs-data", {"strategy": {"data_basis": "surrogate"}}, {}),
    ("B3-universal-needs-data-or-activations", {},
     {"scope": K("universal"), "model_knowledge": K("output_transparent")}),
    ("B4-contextual-needs-context-data", {}, {"scope": K("contextual", context={"field": "label", "equals": "coat"})}),
    ("B5-heldout-split-too-large", {}, {"scope": K("universal", heldout_fraction=0.7), "data_knowledge": "training"}),
    ("B6-reference-output-needs-access", {**SEG_TASK, "strategy": {"model_basis": "victim"}},
     {"consequence": K("dynamic_target", remove_classes=["person"]), "model_knowledge": K("full_black_box"),
      "data_knowledge": "training"}),
    ("B8-black-box-without-data-needs-pretrained", {}, {"model_knowledge": K("full_black_box")}),
    ("B9-data-free-universal-is-weaker", {}, {"scope": K("universal")}),
    ("B11-context-classes-must-exist", {},
     {"scope": K("contextual", context={"field": "label", "equals": "cot"}), "data_knowledge": "training"}),
    # C: consequence, task
    ("C1-confusing-needs-spatial-output", {}, {"consequence": K("confusing_target", classes=["bag"], shift=[2, 0])}),
    ("C2-remove-classes-on-classification", {}, {"consequence": K("dynamic_target", remove_classes=["bag"])}),
    ("C3-target-artefact-matches-task", {}, {"consequence": K("static_target", target_map="scene:0")}),
    ("C5-class-names-need-classes", {"classes": DELETE}, {"consequence": K("static_target", target_class="bag")}),
    ("C8-unknown-class-name", {}, {"consequence": K("static_target", target_class="bagg")}),
    ("C9-class-index-out-of-range", {}, {"consequence": K("static_target", target_class=12)}),
    ("C10-detector-consequence-needs-detection", {}, {"consequence": K("vanishing", classes=["bag"])}),
    ("C13-mislabel-to-its-own-class", DET_TASK, {"consequence": K("mislabel", from_classes=["car"], to_class="car")}),
    ("C14-least-likely-needs-full-scores", {"strategy": {"model_basis": "victim"}},
     {"consequence": K("dynamic_target", rule="least_likely"), "model_knowledge": K("label_only")}),
    ("C15-remove-classes-on-detection-is-vanishing", DET_TASK,
     {"consequence": K("dynamic_target", remove_classes=["person"])}),
    ("C16-class-map-maps-to-itself", {},
     {"consequence": K("dynamic_target", rule="class_map", class_map={"coat": "coat"})}),
    ("C17-detector-dynamic-target-removes-classes", DET_TASK,
     {"consequence": K("dynamic_target", rule="least_likely")}),
    # D: imperceptibility
    ("D2a-pixel-255-epsilon-below-one", {"input_space": {"epsilon_units": "pixel_255"}}, {"imperceptibility": LP(0.5)}),
    ("D2b-normalization-in-data", {"input_space": {"normalization": "in_data"}}, {}),
    ("D2c-grey-level-bounds-with-unit-epsilon", {"input_space": {"bounds": [0, 255]}}, {"imperceptibility": LP(0.03)}),
    ("D3-perceptual-bound-without-projection", {"strategy": {"optimizer": "second_order"}},
     {"imperceptibility": [K("perceptual", metric="ssim", threshold=0.95)]}),
    ("D4-black-box-detector-is-not-adaptive", {},
     {"imperceptibility": [*LP(8 / 255), K("detector", detectors=["lid"], access="black_box")]}),
    ("D5-plausible-output-needs-targeted-consequence", SEG_TASK, {"imperceptibility": [*LP(8 / 255), K("output")]}),
    ("D6-duplicate-norm", {}, {"imperceptibility": [*LP(8 / 255), *LP(4 / 255)]}),
    ("D7-physical-small-lp", {}, {"capability": PHYSICAL, "scope": K("universal"), "data_knowledge": "training"}),
    ("D8-small-region-small-epsilon", {}, {"capability": {"spatial": K("patch", area_fraction=0.05)}}),
    ("D9-epsilon-huge", {}, {"imperceptibility": LP(0.5)}),
    ("D10-plausible-output-on-classification", {},
     {"consequence": K("static_target", target_class="bag"), "imperceptibility": [*LP(8 / 255), K("output")]}),
    ("D11-epsilon-tiny", {}, {"imperceptibility": LP(0.001)}),
    ("D13-ssim-floor-low", {}, {"imperceptibility": [K("perceptual", metric="ssim", threshold=0.3)]}),
    # E: capability
    ("E1-physical-needs-transformations", {},
     {"capability": {**PHYSICAL, "transformations": None}, "scope": K("universal"), "data_knowledge": "training",
      "imperceptibility": LP(1.0)}),
    ("E2-physical-needs-scene-artefact", {},
     {"capability": {**PHYSICAL, "spatial": None}, "scope": K("universal"), "data_knowledge": "training",
      "imperceptibility": LP(1.0)}),
    ("E3-physical-needs-shared-artefact", {}, {"capability": PHYSICAL, "imperceptibility": LP(1.0)}),
    ("E4-physical-printability", {},
     {"capability": {**PHYSICAL, "printability": False}, "scope": K("universal"), "data_knowledge": "training",
      "imperceptibility": LP(1.0)}),
    ("E5-physical-queries-are-captures", VICTIM("evolution"),
     {"capability": PHYSICAL, "scope": K("universal"), "data_knowledge": "training", "imperceptibility": LP(1.0),
      "model_knowledge": K("output_transparent")}),
    ("E6-quantized-epsilon-below-grey-level", {},
     {"capability": {"quantize": True}, "imperceptibility": LP(0.6 / 255)}),
    ("E10-transformations-without-physical-feed", {}, {"capability": {"transformations": {}}}),
    ("E11-printability-without-physical-feed", {}, {"capability": {"printability": True}}),
    # Li, Schmidt, Kolter 2019: the lens layer is in front of every frame, never one object's views
    ("E15-lens-layer-sees-every-scene", {},
     {"capability": {**PHYSICAL, "spatial": None, "placement": "overlay", "views": "object"},
      "scope": K("universal"), "data_knowledge": "training", "imperceptibility": LP(0.1)}),
    ("E16-views-without-physical-feed", {}, {"capability": {"views": "object"}}),
    ("E12-region-is-whole-input", {},
     {"capability": {"spatial": K("box", box=[0, 0, 1, 1])}, "imperceptibility": LP(1.0)}),
    # F: scope, consequence, detectability
    ("F3-shared-perturbation-is-detectable", {},
     {"scope": K("universal"), "data_knowledge": "training",
      "imperceptibility": [*LP(8 / 255), K("detector", detectors=["lid"])]}),
    ("F4-transfer-needs-boosters", {"strategy": {"model_basis": "surrogate"}},
     {"model_knowledge": K("full_black_box"), "data_knowledge": "training"}),
    ("F5-shared-perturbation-needs-fixed-budget", {},
     {"scope": K("universal"), "data_knowledge": "training", "imperceptibility": LP(None, mode="minimal")}),
    ("F6-context-already-has-target", {},
     {"scope": K("contextual", context={"field": "label", "equals": "coat"}), "data_knowledge": "training",
      "consequence": K("static_target", target_class="coat")}),
    # G: verification
    ("G1-black-box-results-are-transfer-estimates", {},
     {"model_knowledge": K("full_black_box"), "data_knowledge": "training"}),
    # I: input space
    ("I1-negative-bounds-suggest-normalized", {"input_space": {"bounds": [-1, 1]}}, {}),
]

VALID: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "A": ({"strategy": {"model_basis": "victim", "optimizer": "evolution"}},
          {"model_knowledge": K("output_transparent")}),
    "B": ({"strategy": {"data_basis": "training"}}, {"scope": K("universal"), "data_knowledge": "training"}),
    "C": (SEG_TASK, {"consequence": K("dynamic_target", remove_classes=["person"]),
                     "model_knowledge": K("output_transparent"), "imperceptibility": [*LP(8 / 255), K("output")]}),
    "D": ({}, {"imperceptibility": [*LP(8 / 255), K("perceptual", metric="ssim", threshold=0.95)]}),
    "E": ({}, {"capability": PHYSICAL, "scope": K("universal"), "data_knowledge": "training",
               "imperceptibility": LP(1.0)}),
    "F": ({}, {"scope": K("universal"), "data_knowledge": "training",
               "consequence": K("static_target", target_class="bag")}),
    "G": ({}, {"model_knowledge": K("label_only", query_budget=20000)}),
    "I": ({"input_space": {"bounds": [0, 255], "epsilon_units": "pixel_255"}}, {"imperceptibility": LP(8)}),
}


# --------------------------------------------------------------------------- the rule set


def test_at_least_45_rules_with_reason_fix_and_source() -> None:
    assert len(RULES) >= 45
    for rule in RULES.values():
        assert re.fullmatch(r"[A-GIS]\d+[a-z]?-[a-z0-9-]+", rule.id), rule.id
        assert rule.family == rule.id[0] and rule.family in FAMILIES
        assert rule.severity in ("error", "warning")
        assert rule.level in ("spec", "descriptor", "planner", "schema")
        for text in (rule.reason, rule.fix, rule.source):
            assert isinstance(text, str) and len(text) > 8, rule.id
        assert "\n" not in rule.reason


def test_every_family_of_the_notes_is_covered() -> None:
    families = {rule.family for rule in RULES.values()}
    assert {"A", "B", "C", "D", "E", "F", "G", "I"} <= families
    for family in "ABCDEF":
        assert any(r.severity == "error" for r in RULES.values() if r.family == family) or family == "F"


def test_sources_cite_papers_or_an_argument() -> None:
    for rule in RULES.values():
        assert re.search(r"arXiv:\d{4}\.\d{4,5}|argument|ATLAS|CCS|IEEE|patent|foolbox|taxonomy-notes",
                         rule.source), rule.id


def test_short_ids_resolve() -> None:
    assert rules.rule("A1") is RULES["A1-victim-gradients-need-white-box"]
    assert rules.rule("D2b").id == "D2b-normalization-in-data"
    with pytest.raises(KeyError, match="did you mean"):
        rules.rule("A1-victim-gradients-need-whitebox")


def test_every_rule_is_encoded_once_somewhere() -> None:
    by_edges = {e.rule for e in EDGES if e.rule}
    by_predicates = {p.rule for p in PREDICATES}
    by_checks = {c.rule for c in DESCRIPTOR_CHECKS}
    planner = {r.id for r in RULES.values() if r.level in ("planner", "schema")}
    assert set(RULES) == by_edges | by_predicates | by_checks | planner
    assert not by_edges & by_predicates
    for rid in by_checks:
        assert RULES[rid].level == "descriptor" or rid in by_edges, rid


def test_every_spec_level_rule_has_a_breaking_case() -> None:
    spec_level = {r.id for r in RULES.values() if r.level == "spec"}
    assert spec_level == {case[0] for case in CASES}


def test_the_validator_lives_in_the_graph_and_rules_do_not_import_it() -> None:
    """taxonomy.rules is data (rules, edges, predicates) below taxonomy.graph, which validates with it;
    rules no longer forwards validate (that forwarding was an import circle)."""
    assert tgraph.RULES is rules.RULES
    for name in ("validate", "descriptor_violations", "realises"):
        assert callable(getattr(tgraph, name))
        assert not hasattr(rules, name)


# --------------------------------------------------------------------------- spec-level rules


def test_base_spec_is_clean() -> None:
    assert validate(spec()) == []


@pytest.mark.parametrize(("rule_id", "over", "threat"), CASES, ids=[c[0].split("-")[0] for c in CASES])
def test_breaking_spec_is_rejected_with_the_rule_id(rule_id: str, over: dict, threat: dict) -> None:
    s = spec(over, **threat)
    found = {v.id: v for v in validate(s)}
    assert rule_id in found, sorted(found)
    v = found[rule_id]
    assert v.severity == RULES[rule_id].severity
    assert v.rule.fix and v.field and v.detail
    assert v.field.split(".")[0].split("[")[0] in ("task", "threat", "strategy", "input_space"), v.field
    if v.severity == "error":
        assert any(x.severity == "error" for x in validate(s))


@pytest.mark.parametrize("family", sorted(VALID))
def test_valid_spec_of_each_family_passes(family: str) -> None:
    over, threat = VALID[family]
    assert validate(spec(over, **threat)) == []


def test_errors_come_before_warnings_and_one_per_rule_and_field() -> None:
    s = spec({"input_space": {"normalization": "in_data", "epsilon_units": "pixel_255"}},
             model_knowledge=K("full_black_box"), imperceptibility=LP(0.03), capability={"feed": "physical"})
    found = validate(s)
    severities = [v.severity for v in found]
    assert severities == sorted(severities, key=lambda x: x != "error")
    keys = [(v.id, v.field) for v in found]
    assert len(keys) == len(set(keys))
    assert {"B8-black-box-without-data-needs-pretrained", "D2b-normalization-in-data",
            "E1-physical-needs-transformations", "E2-physical-needs-scene-artefact",
            "E3-physical-needs-shared-artefact", "G1-black-box-results-are-transfer-estimates"} <= {v.id for v in found}


def test_unknown_class_name_suggests_the_close_one() -> None:
    [v] = [v for v in validate(spec(consequence=K("static_target", target_class="bagg"))) if v.id.startswith("C8")]
    assert "did you mean 'bag'" in v.detail
    assert v.field == "threat.consequence.target_class"


def test_open_strategy_axes_are_left_to_the_planner() -> None:
    # label-only with an analytic first-order optimiser and no model basis: a surrogate can supply it
    s = spec({"strategy": {"optimizer": K("first_order", gradient_source="analytic")}},
             model_knowledge=K("label_only"))
    assert not [v for v in validate(s) if v.severity == "error"]
    # ... but not once the basis is the victim
    s = spec(VICTIM("first_order", "analytic"), model_knowledge=K("label_only"))
    assert "A1-victim-gradients-need-white-box" in ids(s)


def test_data_basis_none_overrides_data_knowledge() -> None:
    s = spec({"strategy": {"data_basis": "none"}}, scope=K("universal"), data_knowledge="training",
             model_knowledge=K("output_transparent"))
    assert "B3-universal-needs-data-or-activations" in ids(s)
    s = spec({"strategy": {"data_basis": "surrogate"}}, scope=K("universal"), data_knowledge="training",
             model_knowledge=K("output_transparent"))
    assert ids(s) == set()


def test_static_target_artefacts_per_task() -> None:
    good = [({}, K("static_target", target_class="bag")),
            (SEG_TASK, K("static_target", target_map="scene:0")),
            (DET_TASK, K("static_target", target_boxes=[{"x0": 1, "y0": 1, "x1": 5, "y1": 5, "label": "car"}]))]
    for over, consequence in good:
        assert "C3-target-artefact-matches-task" not in ids(spec(over, consequence=consequence))
    bad = spec(SEG_TASK, consequence=K("static_target", target_class="car"))
    assert "C3-target-artefact-matches-task" in ids(bad)


def test_detector_consequences_pass_on_detection() -> None:
    for consequence in (K("vanishing", classes=["person"]), K("fabrication", classes=["car"]),
                        K("mislabel", from_classes=["car"], to_class="person")):
        assert ids(spec(DET_TASK, consequence=consequence)) == set()


def test_detector_dynamic_target_only_removes_classes() -> None:
    """The detection objectives build only vanishing for a dynamic target (attackgen.run.objectives.detection):
    least_likely and class_map on a detector must fail validate, not the run."""
    for consequence in (K("dynamic_target", rule="least_likely"),
                        K("dynamic_target", rule="class_map", class_map={"car": "person"})):
        found = {v.id: v for v in validate(spec(DET_TASK, consequence=consequence))}
        v = found["C17-detector-dynamic-target-removes-classes"]
        assert v.severity == "error" and v.field == "threat.consequence.rule"
        # the same rules are fine on segmentation and classification
        for over in (SEG_TASK, {}):
            body = consequence if "class_map" not in consequence else K(
                "dynamic_target", rule="class_map",
                class_map={"car": "person"} if over else {"coat": "bag"})
            assert "C17-detector-dynamic-target-removes-classes" not in ids(spec(over, consequence=body))
    assert "C17-detector-dynamic-target-removes-classes" not in ids(
        spec(DET_TASK, consequence=K("dynamic_target", remove_classes=["car"])))


def test_box_labels_and_context_indices_are_checked() -> None:
    box = {"x0": 1, "y0": 1, "x1": 5, "y1": 5, "label": "truck"}
    assert "C8-unknown-class-name" in ids(spec(DET_TASK, consequence=K("static_target", target_boxes=[box])))
    s = spec(scope=K("contextual", context={"field": "label", "in": [3, 42]}), data_knowledge="training")
    assert "B11-context-classes-must-exist" in ids(s)


def test_pixel_units_epsilon_converted_before_size_checks() -> None:
    s = spec({"input_space": {"epsilon_units": "pixel_255"}}, imperceptibility=LP(8))
    assert ids(s) == set()
    s = spec({"input_space": {"epsilon_units": "pixel_255"}}, imperceptibility=LP(100))
    assert "D9-epsilon-huge" in ids(s)


# --------------------------------------------------------------------------- attack-level rules

ALL_TASKS = frozenset({"classification", "segmentation", "detection"})


def descriptor(**kw: Any) -> AttackDescriptor:
    values: dict[str, Any] = dict(
        id="toy", title="toy", implementation="m:Toy", reference="test", tasks=ALL_TASKS,
        consequences=frozenset({"untargeted", "static_target", "dynamic_target"}), scopes=frozenset({"individual"}),
        imperceptibility=frozenset({"lp:inf", "lp:2"}), budget_modes=frozenset({"fixed"}), access="gradients",
        optimizer="first_order", gradient_source="analytic", data_bases=frozenset({"none", "training", "surrogate"}),
    )
    values.update(kw)
    return AttackDescriptor(**values)


PGD = descriptor(id="toy_pgd")
SQUARE = descriptor(id="toy_square", access="scores", optimizer="evolution", gradient_source=None,
                    cost=lambda p: Cost(queries=p.n_queries), params=SquareLinfParams)
HSJ = descriptor(id="toy_hsj", access="labels", gradient_source="estimated_decisions",
                 budget_modes=frozenset({"fixed", "minimal"}), cost=lambda p: Cost(queries=5000))
TRANSFER = descriptor(id="toy_transfer", access="surrogate", cost=lambda p: Cost(forward=11, backward=10, queries=1))
UAP = descriptor(id="toy_uap", scopes=frozenset({"universal", "contextual"}), data_bases=frozenset({"training"}))
PATCH = descriptor(id="toy_patch", scopes=frozenset({"universal", "contextual"}),
                   feeds=frozenset({"digital", "physical"}),
                   data_bases=frozenset({"training", "surrogate"}))


def dids(s, d, params=None) -> set[str]:
    return {v.id for v in descriptor_violations(s, d, params)}


def test_matching_attack_realises_and_breaks_nothing() -> None:
    s = spec()
    assert realises(s, PGD) and dids(s, PGD) == set()
    s = spec(model_knowledge=K("query_limited", query_budget=10000))
    assert realises(s, SQUARE) and dids(s, SQUARE) == set()


def test_a1_a3_a5_access_the_attack_needs() -> None:
    s = spec(model_knowledge=K("output_transparent"))
    assert not realises(s, PGD) and "A1-victim-gradients-need-white-box" in dids(s, PGD)
    s = spec(model_knowledge=K("label_only"))
    assert not realises(s, SQUARE) and "A3-label-only-needs-decision-based" in dids(s, SQUARE)
    assert realises(s, HSJ) and dids(s, HSJ) == set()
    s = spec(model_knowledge=K("full_black_box"), data_knowledge="training")
    assert not realises(s, HSJ) and "A5-full-black-box-needs-surrogate" in dids(s, HSJ)
    assert realises(s, TRANSFER) and dids(s, TRANSFER) == set()


def test_one_finding_per_broken_edge_rule() -> None:
    found = [v.id for v in descriptor_violations(spec(model_knowledge=K("output_transparent")), PGD)]
    assert found.count("A1-victim-gradients-need-white-box") == 1


def test_a8_query_budget_against_minimum_and_plan_parameters() -> None:
    """Ilyas et al. 2018 (query-limited setting): an attack fits a budget if its minimum useful query count
    does; the defaults are shrunk by the planner, concrete plan parameters are checked as they are."""
    s = spec(model_knowledge=K("query_limited", query_budget=1000))
    assert "A8-query-budget-covers-attack" not in dids(s, SQUARE)  # 5000 by default, shrinkable to 1000
    assert "A8-query-budget-covers-attack" in dids(s, SQUARE, {"n_queries": 1200})  # a plan item asking too much
    assert "A8-query-budget-covers-attack" not in dids(s, SQUARE, {"n_queries": 800})
    needy = dataclasses.replace(SQUARE, min_queries=2000)
    assert "A8-query-budget-covers-attack" in dids(s, needy)
    s = spec(model_knowledge=K("label_only", query_budget=1000))
    assert "A8-query-budget-covers-attack" in dids(s, HSJ, {"max_queries": 5000})


def test_planner_filled_strategy_does_not_trigger_spec_only_warnings() -> None:
    # a white-box plan's gradient-free check (Square) is not "gradient-free on white-box" (A11)
    assert dids(spec(), SQUARE) == set()
    assert realises(spec(), SQUARE)
    # ...but the user choosing it is
    assert "A11-gradient-free-on-white-box" in ids(spec(VICTIM("evolution")))


def test_b10_and_c6_data_needs() -> None:
    s = spec(scope=K("universal"))
    assert not realises(s, UAP) and "B10-attack-needs-data" in dids(s, UAP)
    assert realises(spec(scope=K("universal"), data_knowledge="training"), UAP)
    s = spec(model_knowledge=K("label_only"), consequence=K("static_target", target_class="bag"))
    assert "C6-targeted-decision-based-needs-start" in dids(s, HSJ)
    s = spec(model_knowledge=K("label_only"), consequence=K("static_target", target_class="bag"),
             data_knowledge="surrogate")
    assert dids(s, HSJ) == set()


def test_c7_d1_d12_d14_e2_e8_implementation_support() -> None:
    cls_only = descriptor(id="cls_only", tasks=frozenset({"classification"}))
    assert "C7-attack-supports-task" in dids(spec(SEG_TASK), cls_only)
    assert "D1-attack-supports-norm" in dids(spec(imperceptibility=LP(10.0, norm="1")), PGD)
    assert "D12-attack-supports-budget-mode" in dids(spec(imperceptibility=LP(None, mode="minimal")), PGD)
    assert "D12-attack-supports-budget-mode" not in dids(spec(imperceptibility=LP(None, mode="minimal",
                                                                                   norm="2")), HSJ)
    assert "D14-attack-supports-perceptual-bound" in dids(
        spec(imperceptibility=[K("perceptual", metric="ssim", threshold=0.95)]), PGD)
    physical = spec(capability=PHYSICAL, scope=K("universal"), data_knowledge="training", imperceptibility=LP(1.0))
    assert "E2-physical-needs-scene-artefact" in dids(physical, UAP)
    assert realises(physical, PATCH) and dids(physical, PATCH) == set()
    no_mask = descriptor(id="no_mask", spatial=False)
    assert "E8-attack-supports-spatial-constraint" in dids(spec(capability={"spatial": K("patch", area_fraction=0.5)},
                                                                imperceptibility=LP(1.0)), no_mask)


def test_realises_honours_strategy_the_user_set() -> None:
    assert not realises(spec({"strategy": {"model_basis": "surrogate"}}), PGD)
    assert not realises(spec({"strategy": {"optimizer": "evolution"}}), PGD)
    assert not realises(spec({"strategy": {"optimizer": K("first_order", gradient_source="estimated_scores")}}), PGD)
    assert realises(spec({"strategy": {"optimizer": "first_order", "model_basis": "victim"}}), PGD)
    assert not realises(spec({"strategy": {"data_basis": "none"}}, scope=K("universal"),
                             data_knowledge="training"), UAP)


def test_g2_is_a_planner_rule() -> None:
    rule = RULES["G2-white-box-plan-needs-gradient-free-check"]
    assert rule.level == "planner" and rule.severity == "warning"


def test_descriptor_violations_over_the_catalogue_do_not_raise() -> None:
    catalog = tgraph._default_catalog()
    samples = [spec(), spec(model_knowledge=K("label_only", query_budget=500)),
               spec(SEG_TASK, consequence=K("dynamic_target", remove_classes=["person"]), scope=K("universal"),
                    data_knowledge="training")]
    for s in samples:
        for d in catalog.values():
            realises(s, d)
            for v in descriptor_violations(s, d):
                assert v.id in RULES and v.field


# --------------------------------------------------------------------------- the graph


def test_graph_holds_every_rule_edge() -> None:
    g = constraint_graph({})
    assert isinstance(g, nx.MultiDiGraph)
    have = {(u, v, d["relation"], d.get("rule")) for u, v, d in g.edges(data=True)}
    for e in EDGES:
        assert (e.src, e.dst, e.relation, e.rule) in have
    relations = {d["relation"] for _, _, d in g.edges(data=True)}
    assert relations == {"requires", "excludes", "grants"}


@pytest.mark.parametrize("rule_id", [
    "A1-victim-gradients-need-white-box", "A3-label-only-needs-decision-based", "A5-full-black-box-needs-surrogate",
    "A7-trained-surrogate-needs-data", "B1-training-basis-needs-training-data", "B2-surrogate-basis-needs-data",
    "B3-universal-needs-data-or-activations", "B4-contextual-needs-context-data",
    "C1-confusing-needs-spatial-output", "C3-target-artefact-matches-task", "C10-detector-consequence-needs-detection",
    "E1-physical-needs-transformations", "E2-physical-needs-scene-artefact", "E3-physical-needs-shared-artefact",
])
def test_hard_rules_are_requires_or_excludes_edges(rule_id: str) -> None:
    g = constraint_graph({})
    edges = [d for _, _, d in g.edges(data=True) if d.get("rule") == rule_id]
    assert edges and all(d["relation"] in ("requires", "excludes") and d["severity"] == "error" for d in edges)


def test_specific_edges() -> None:
    g = constraint_graph({})

    def has(u: str, v: str, relation: str) -> bool:
        return any(d["relation"] == relation for d in g.get_edge_data(u, v, default={}).values())

    assert has("knowledge:white_box", "capability:gradients", "grants")
    assert has("knowledge:label_only", "capability:labels", "grants")
    assert not g.has_edge("knowledge:label_only", "capability:scores")
    assert has("victim.gradient:analytic", "capability:gradients", "requires")
    assert has("knowledge:full_black_box", "basis:victim", "excludes")
    assert has("consequence:confusing_target", "task:segmentation", "requires")
    assert has("physical_artefact:shared", "scope:individual", "excludes")  # E3: patch, overlay or unstated


def test_graph_with_catalogue_has_implementation_nodes() -> None:
    g = constraint_graph({"toy_pgd": PGD, "toy_square": SQUARE, "toy_uap": UAP})
    assert g.nodes["attack:toy_pgd"]["kind"] == "implementation"
    realised = {v for _, v, d in g.out_edges("attack:toy_pgd", data=True) if d["relation"] == "realises"}
    assert {"task:segmentation", "consequence:static_target", "imperceptibility:lp:inf", "scope:individual"} <= realised
    needs = {(v, d["rule"]) for _, v, d in g.out_edges("attack:toy_square", data=True) if d["relation"] == "requires"}
    assert ("capability:scores", "A3-label-only-needs-decision-based") in needs
    assert any(v == "capability:data" for _, v, _ in g.out_edges("attack:toy_uap", data=True))
    default = constraint_graph()
    assert any(n.startswith("attack:") for n in default.nodes) == bool(tgraph._default_catalog())


def test_validate_evaluates_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    s = spec(consequence=K("confusing_target", classes=["bag"], shift=[2, 0]))
    assert "C1-confusing-needs-spatial-output" in ids(s)
    g = constraint_graph({})
    doomed = [(u, v, k) for u, v, k, d in g.edges(keys=True, data=True)
              if d.get("rule") == "C1-confusing-needs-spatial-output"]
    g.remove_edges_from(doomed)
    monkeypatch.setattr(tgraph, "_compiled", lambda: tgraph.compile_graph(g))
    tgraph._FACTS_CACHE.clear()
    assert "C1-confusing-needs-spatial-output" not in ids(spec(consequence=K("confusing_target", classes=["bag"],
                                                                           shift=[2, 0])))


def test_dot_output() -> None:
    g = constraint_graph({"toy_pgd": PGD})
    dot = to_dot(g)
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    assert '"knowledge:white_box" [label=' in dot
    assert '"attack:toy_pgd" [label=' in dot
    assert '"physical_artefact:shared" -> "scope:individual"' in dot
    edge_lines = [line for line in dot.splitlines() if " -> " in line]
    assert len(edge_lines) == g.number_of_edges()
    node_lines = [line for line in dot.splitlines() if line.strip().startswith('"') and " -> " not in line]
    assert len(node_lines) == g.number_of_nodes()
    for line in edge_lines:
        assert re.fullmatch(r'  "[^"]+" -> "[^"]+" \[label="[^"]*", .*\];', line), line


def test_dot_escapes_quotes() -> None:
    g = nx.MultiDiGraph(name='odd "name"')
    g.add_node('a"b', kind="axis")
    g.add_edge('a"b', "c\\d", relation="requires", rule="A1-x")
    dot = to_dot(g)
    assert r'"a\"b"' in dot and r'"c\\d"' in dot and 'digraph "odd \\"name\\""' in dot
