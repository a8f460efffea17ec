"""Property-based tests over generated spec dicts, valid and invalid.

Parsing raises nothing but SpecError; validation, realises and descriptor_violations never raise on a
parsed spec and return well-formed findings; a spec's verdict survives a YAML round trip.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taxonomy import space
from taxonomy.errors import SpecError
from taxonomy.graph import Violation, _default_catalog, descriptor_violations, realises, validate
from taxonomy.rules import RULES
from taxonomy.spec import AttackSpec, dump_spec, parse_spec

SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CLASSES = ["t-shirt", "trouser", "coat", "bag", "person", "car"]

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.lists(st.integers(-1, 3), max_size=3),
    st.dictionaries(st.sampled_from(["kind", "x", "norm"]), st.integers(0, 2), max_size=2),
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid strategy, sometimes junk."""
    return st.one_of(valid, valid, valid, valid, junk)


class_ref = st.one_of(st.sampled_from([*CLASSES, "unknown", "Bag"]), st.integers(-2, 12), st.just("3"))
box = st.fixed_dictionaries({"x0": st.integers(0, 10), "y0": st.integers(0, 10), "x1": st.integers(5, 30),
                             "y1": st.integers(5, 30), "label": class_ref})

consequence = st.one_of(
    st.sampled_from(["untargeted", "static_target", "dynamic_target", "confusing_target", "vanishing",
                     "fabrication", "mislabel", "targeted"]),
    st.fixed_dictionaries({"kind": st.just("untargeted")},
                          optional={"reference": st.sampled_from(["ground_truth", "clean_prediction", "x"])}),
    st.fixed_dictionaries({"kind": st.just("static_target")},
                          optional={"target_class": class_ref, "target_map": st.just("scene:0"),
                                    "target_boxes": st.lists(box, max_size=2)}),
    st.fixed_dictionaries({"kind": st.just("dynamic_target")},
                          optional={"rule": st.sampled_from(["remove_classes", "least_likely", "class_map"]),
                                    "remove_classes": st.lists(class_ref, max_size=2),
                                    "class_map": st.dictionaries(st.sampled_from(CLASSES), class_ref, max_size=2),
                                    "background_weight": st.floats(-1, 2)}),
    st.fixed_dictionaries({"kind": st.just("confusing_target"), "classes": st.lists(class_ref, max_size=2)},
                          optional={"shift": st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
                                    "scale": st.floats(-1, 3)}),
    st.fixed_dictionaries({"kind": st.sampled_from(["vanishing", "fabrication"])},
                          optional={"classes": st.lists(class_ref, max_size=2), "count": st.integers(-1, 3)}),
    st.fixed_dictionaries({"kind": st.just("mislabel"), "to_class": class_ref},
                          optional={"from_classes": st.lists(class_ref, max_size=2)}),
)

context = st.fixed_dictionaries(
    {"field": st.sampled_from(["label", "weather"])},
    optional={"equals": st.one_of(class_ref, st.text(max_size=4)), "in": st.lists(class_ref, max_size=3)},
)
scope = st.one_of(
    st.sampled_from(["individual", "universal", "contextual", "global"]),
    st.fixed_dictionaries({"kind": st.just("contextual")},
                          optional={"context": maybe(context), "heldout_fraction": st.floats(-0.5, 1.5)}),
    st.fixed_dictionaries({"kind": st.just("universal")},
                          optional={"heldout_fraction": st.floats(0, 1), "target_fooling_rate": st.floats(0, 1.2)}),
)

epsilon = st.one_of(st.floats(-1, 300), st.floats(1e-5, 0.5), st.lists(st.floats(1e-4, 1.0), max_size=3))
lp = st.fixed_dictionaries(
    {"kind": st.just("lp"), "norm": st.sampled_from(["0", "1", "2", "inf", 0, 1, 2, "Linf", "l2", "max", 3])},
    optional={"epsilon": epsilon, "mode": st.sampled_from(["fixed", "minimal", "smallest"])},
)
imperceptibility_item = st.one_of(
    lp, lp,
    st.fixed_dictionaries({"kind": st.just("perceptual"), "metric": st.sampled_from(["ssim", "wasserstein", "lpips",
                                                                                      "psnr"]),
                           "threshold": st.floats(-0.5, 2)}),
    st.just({"kind": "output"}),
    st.fixed_dictionaries({"kind": st.just("detector"), "detectors": st.lists(st.sampled_from(["lid", "ks"]),
                                                                               max_size=2)},
                          optional={"access": st.sampled_from(["white_box", "black_box", "grey"])}),
    st.sampled_from(["output", "lp"]),
)

granularity = st.sampled_from(["logits", "probabilities", "top_k", "labels"])
knowledge = st.one_of(
    st.sampled_from(["white_box", "output_transparent", "label_only", "full_black_box", "query_limited", "grey_box"]),
    st.fixed_dictionaries({"kind": st.just("output_transparent")},
                          optional={"granularity": granularity, "k": st.integers(-1, 20)}),
    st.fixed_dictionaries({"kind": st.just("query_limited"), "query_budget": st.integers(-5, 30000)},
                          optional={"granularity": granularity, "k": st.integers(0, 20)}),
    st.fixed_dictionaries({"kind": st.just("label_only")}, optional={"query_budget": st.integers(-1, 30000)}),
)

rng = st.tuples(st.floats(-200, 200), st.floats(-200, 200))
transformations = st.fixed_dictionaries({}, optional={
    "rotation_deg": rng, "scale": st.tuples(st.floats(-1, 2), st.floats(0, 2)), "translate": st.floats(-0.5, 1.5),
    "brightness": rng, "noise_std": st.floats(-0.1, 0.1), "samples": st.integers(0, 10)})
spatial = st.one_of(
    st.fixed_dictionaries({"kind": st.just("patch")}, optional={"area_fraction": st.floats(-0.1, 1.2),
                                                               "placement": st.sampled_from(["random", "fixed"])}),
    st.fixed_dictionaries({"kind": st.just("box")},
                          optional={"box": st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),
                                                     st.floats(0, 1))}),
    st.fixed_dictionaries({"kind": st.sampled_from(["mask", "ellipse"])}, optional={"mask": st.just("m.npy")}),
)
capability = st.fixed_dictionaries({}, optional={
    "feed": st.sampled_from(["digital", "physical", "network"]), "transformations": maybe(transformations),
    "spatial": maybe(spatial), "quantize": st.booleans(), "printability": st.booleans()})

model_basis = st.one_of(
    st.sampled_from(["victim", "surrogate", "oracle"]),
    st.fixed_dictionaries({"kind": st.just("surrogate")},
                          optional={"source": st.sampled_from(["trained_on_data", "distilled_from_queries",
                                                               "pretrained", "stolen"]),
                                    "model": st.sampled_from(["resnet18", "pkg.mod:fn"]),
                                    "ensemble": st.integers(0, 4)}),
)
optimizer = st.one_of(
    st.sampled_from(["first_order", "second_order", "evolution", "adam"]),
    st.fixed_dictionaries({"kind": st.sampled_from(["first_order", "second_order", "evolution"])},
                          optional={"gradient_source": st.sampled_from(["analytic", "estimated_scores",
                                                                        "estimated_decisions", "magic"])}),
)
strategy = st.fixed_dictionaries({}, optional={
    "model_basis": maybe(model_basis), "optimizer": maybe(optimizer),
    "data_basis": st.sampled_from(["training", "surrogate", "none", "public"])})
input_space = st.fixed_dictionaries({}, optional={
    "bounds": st.one_of(st.tuples(st.sampled_from([0, -1, 0.5]), st.sampled_from([1, 255, 0.5])), junk),
    "layout": st.sampled_from(["NCHW", "NHWC", "HWC"]),
    "normalization": st.sampled_from(["inside_model", "none", "in_data", "twice"]),
    "epsilon_units": st.sampled_from(["input_scale", "pixel_255", "percent"])})

threat = st.fixed_dictionaries(
    {"consequence": maybe(consequence), "imperceptibility": st.one_of(st.lists(imperceptibility_item, max_size=3),
                                                                       junk),
     "model_knowledge": maybe(knowledge)},
    optional={"scope": maybe(scope), "data_knowledge": st.sampled_from(["training", "surrogate", "none", "all"]),
              "capability": maybe(capability), "extra_field": st.integers()},
)
spec_dicts = st.fixed_dictionaries(
    {"name": st.sampled_from(["ok", "a-b.c_1", "bad name!", ""]),
     "task": st.sampled_from(["classification", "segmentation", "detection", "classifcation"]),
     "threat": maybe(threat)},
    optional={"classes": st.one_of(st.none(), st.just(CLASSES), st.lists(st.text(max_size=4), max_size=3)),
              "strategy": maybe(strategy), "input_space": maybe(input_space), "description": st.text(max_size=10),
              "schema_version": st.sampled_from([1, 2]), "thret": st.just({})},
)


# --------------------------------------------------------------------------- schema-valid specs, any axes

ref_ok = st.one_of(st.sampled_from([*CLASSES, "unknown"]), st.integers(0, 12))
v_box = st.fixed_dictionaries({"x0": st.integers(0, 4), "y0": st.integers(0, 4), "x1": st.integers(5, 30),
                               "y1": st.integers(5, 30), "label": ref_ok})
v_consequence = st.one_of(
    st.just("untargeted"),
    st.fixed_dictionaries({"kind": st.just("untargeted"),
                           "reference": st.sampled_from(["ground_truth", "clean_prediction"])}),
    st.builds(lambda c: {"kind": "static_target", "target_class": c}, ref_ok),
    st.just({"kind": "static_target", "target_map": "scene:0"}),
    st.builds(lambda b: {"kind": "static_target", "target_boxes": b}, st.lists(v_box, min_size=1, max_size=2)),
    st.builds(lambda r: {"kind": "dynamic_target", "remove_classes": r}, st.lists(ref_ok, min_size=1, max_size=2)),
    st.just({"kind": "dynamic_target", "rule": "least_likely"}),
    st.builds(lambda m: {"kind": "dynamic_target", "rule": "class_map", "class_map": m},
              st.dictionaries(st.sampled_from(CLASSES), ref_ok, min_size=1, max_size=2)),
    st.builds(lambda c, dx: {"kind": "confusing_target", "classes": c, "shift": [dx, 0]},
              st.lists(ref_ok, min_size=1, max_size=2), st.integers(1, 9)),
    st.builds(lambda c: {"kind": "vanishing", "classes": c}, st.lists(ref_ok, max_size=2)),
    st.builds(lambda c: {"kind": "fabrication", "classes": c}, st.lists(ref_ok, min_size=1, max_size=2)),
    st.builds(lambda f, t: {"kind": "mislabel", "from_classes": f, "to_class": t}, st.lists(ref_ok, max_size=2),
              ref_ok),
)
v_scope = st.one_of(
    st.sampled_from(["individual", "universal"]),
    st.builds(lambda f, v, h: {"kind": "contextual", "context": {"field": f, "equals": v}, "heldout_fraction": h},
              st.sampled_from(["label", "weather"]), ref_ok, st.floats(0.05, 0.9)),
    st.builds(lambda v: {"kind": "contextual", "context": {"field": "label", "in": v}},
              st.lists(ref_ok, min_size=1, max_size=3)),
    st.builds(lambda h: {"kind": "universal", "heldout_fraction": h}, st.floats(0.05, 0.9)),
)
v_lp = st.one_of(
    st.builds(lambda n, e: {"kind": "lp", "norm": n, "epsilon": e}, st.sampled_from(["0", "1", "2", "inf", "Linf"]),
              st.one_of(st.floats(1e-4, 1.0), st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=3, unique=True))),
    st.builds(lambda n: {"kind": "lp", "norm": n, "mode": "minimal"}, st.sampled_from(["0", "1", "2", "inf"])),
)
v_item = st.one_of(
    v_lp, v_lp, v_lp,
    st.builds(lambda m, t: {"kind": "perceptual", "metric": m, "threshold": t},
              st.sampled_from(["ssim", "wasserstein", "lpips"]), st.floats(0.05, 1.0)),
    st.just("output"),
    st.builds(lambda a: {"kind": "detector", "detectors": ["lid"], "access": a},
              st.sampled_from(["white_box", "black_box"])),
)
v_knowledge = st.one_of(
    st.sampled_from(["white_box", "output_transparent", "label_only", "full_black_box"]),
    st.builds(lambda g, k: {"kind": "output_transparent", "granularity": g, "k": k},
              st.sampled_from(["logits", "probabilities", "top_k"]), st.integers(1, 20)),
    st.builds(lambda b, g: {"kind": "query_limited", "query_budget": b, "granularity": g},
              st.integers(1, 30000), st.sampled_from(["logits", "probabilities"])),
    st.builds(lambda b: {"kind": "label_only", "query_budget": b}, st.integers(1, 30000)),
)
v_spatial = st.one_of(
    st.builds(lambda a: {"kind": "patch", "area_fraction": a}, st.floats(0.01, 1.0)),
    st.builds(lambda x, y: {"kind": "box", "box": [0.0, 0.0, x, y]}, st.floats(0.1, 1.0), st.floats(0.1, 1.0)),
    st.just({"kind": "mask", "mask": "region.npy"}),
)
v_capability = st.fixed_dictionaries({"feed": st.sampled_from(["digital", "physical"])}, optional={
    "transformations": st.just({}), "spatial": v_spatial, "quantize": st.booleans(), "printability": st.booleans()})
v_strategy = st.fixed_dictionaries({}, optional={
    "model_basis": st.one_of(st.sampled_from(["victim", "surrogate"]),
                             st.builds(lambda s, m, e: {"kind": "surrogate", "source": s, "model": m, "ensemble": e},
                                       st.sampled_from(["trained_on_data", "distilled_from_queries", "pretrained"]),
                                       st.sampled_from([None, "resnet18"]), st.integers(1, 3))),
    "optimizer": st.one_of(st.sampled_from(["first_order", "second_order", "evolution"]),
                           st.builds(lambda k, g: {"kind": k, "gradient_source": g},
                                     st.sampled_from(["first_order", "second_order", "evolution"]),
                                     st.sampled_from(["analytic", "estimated_scores", "estimated_decisions"]))),
    "data_basis": st.sampled_from(["training", "surrogate", "none"])})
v_input = st.fixed_dictionaries({}, optional={
    "bounds": st.sampled_from([[0, 1], [0, 255], [-1, 1]]),
    "normalization": st.sampled_from(["inside_model", "none", "in_data"]),
    "epsilon_units": st.sampled_from(["input_scale", "pixel_255"])})
valid_spec_dicts = st.fixed_dictionaries(
    {"name": st.just("generated"), "task": st.sampled_from(["classification", "segmentation", "detection"]),
     "threat": st.fixed_dictionaries(
         {"consequence": v_consequence, "imperceptibility": st.lists(v_item, min_size=1, max_size=3),
          "model_knowledge": v_knowledge},
         optional={"scope": v_scope, "data_knowledge": st.sampled_from(["training", "surrogate", "none"]),
                   "capability": v_capability})},
    optional={"classes": st.one_of(st.none(), st.just(CLASSES)), "strategy": v_strategy, "input_space": v_input},
)


def _parse(data: Any) -> AttackSpec | None:
    try:
        return parse_spec(data, "generated.yaml")
    except SpecError as error:
        assert error.source == "generated.yaml" and error.problems
        assert all(isinstance(p, str) and p for p in error.problems)
        return None


def _check_findings(found: list[Violation]) -> None:
    assert isinstance(found, list)
    for v in found:
        assert isinstance(v, Violation)
        assert v.id in RULES and v.rule is RULES[v.id]
        assert v.severity in ("error", "warning")
        assert isinstance(v.field, str) and v.field
        assert isinstance(v.detail, str) and v.detail
    keys = [(v.id, v.field) for v in found]
    assert len(keys) == len(set(keys))
    severities = [v.severity for v in found]
    assert severities == sorted(severities, key=lambda s: s != "error")


@SETTINGS
@given(valid_spec_dicts)
def test_valid_specs_parse_and_every_check_runs(data: dict[str, Any]) -> None:
    spec = parse_spec(data, "generated.yaml")  # valid by construction: must parse
    _check_everything(spec)


@SETTINGS
@given(spec_dicts)
def test_parse_raises_only_spec_error_and_validate_never_raises(data: dict[str, Any]) -> None:
    spec = _parse(data)
    if spec is not None:
        _check_everything(spec)


def _check_everything(spec: AttackSpec) -> None:
    found = validate(spec)
    _check_findings(found)
    assert [str(v) for v in validate(spec)] == [str(v) for v in found]
    for cell in space.cells_of(spec):
        assert cell in space.verdicts()
    for d in _default_catalog().values():
        assert isinstance(realises(spec, d), bool)
        extra = descriptor_violations(spec, d)
        assert isinstance(extra, list)
        for v in extra:
            assert v.id in RULES and v.field and v.detail


@SETTINGS
@given(st.one_of(junk, st.lists(junk, max_size=3), st.text(max_size=20)))
def test_non_mappings_are_spec_errors(data: Any) -> None:
    assert _parse(data) is None


def _mutations() -> st.SearchStrategy[tuple[int, list[str], Any]]:
    paths = st.lists(st.sampled_from(["threat", "consequence", "scope", "imperceptibility", "model_knowledge",
                                      "capability", "kind", "epsilon", "norm", "query_budget", "spatial", "feed",
                                      "task", "classes", "data_knowledge", "0", "context", "field"]),
                     min_size=1, max_size=4)
    return st.tuples(st.integers(0, space.n_cells() - 1), paths, st.one_of(junk, st.just("__delete__")))


def _mutate(data: Any, path: list[str], value: Any) -> Any:
    node = data
    for step in path[:-1]:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            break
    last = path[-1]
    if isinstance(node, dict):
        if value == "__delete__":
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and node:
        node[0] = value
    return data


@SETTINGS
@given(_mutations())
def test_mutated_cell_specs(mutation: tuple[int, list[str], Any]) -> None:
    index, path, value = mutation
    cell = space.all_cells()[index]
    data = _mutate(copy.deepcopy(space.cell_data(cell)), path, value)
    spec = _parse(data)
    if spec is not None:
        _check_findings(validate(spec))


@settings(SETTINGS, max_examples=80)
@given(valid_spec_dicts)
def test_verdict_survives_a_yaml_round_trip(data: dict[str, Any]) -> None:
    import yaml

    spec = parse_spec(data, "generated.yaml")
    again = parse_spec(yaml.safe_load(dump_spec(spec)), "round-trip")
    assert [(v.id, v.field) for v in validate(again)] == [(v.id, v.field) for v in validate(spec)]
    assert space.cells_of(again) == space.cells_of(spec)


@SETTINGS
@given(st.integers(0, 34019))
def test_every_cell_spec_verdict_matches(index: int) -> None:
    cell = space.all_cells()[index]
    assert space.cell_verdict(cell) == validate(space.spec_for_cell(cell))
