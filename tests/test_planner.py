"""The planner: only feasible, rule-abiding attacks; concrete parameters; budgets respected; readable plans."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attackgen.plan.document import Infeasible, Plan, load_plan, parse_plan, save_plan
from attackgen.plan.planner import nearest_feasible, plan, plan_cell, relaxed_for_check
from taxonomy import space
from taxonomy.catalog import CATALOG
from taxonomy.errors import SpecError
from taxonomy.graph import descriptor_violations, realises, validate
from taxonomy.spec import AttackSpec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "specs"
ALL_IMPLEMENTED = {k: replace(d, implemented=True) for k, d in CATALOG.items()}
CELLS = list(space.enumerate_cells())


def spec_of(threat: dict[str, Any], **top: Any) -> AttackSpec:
    data = {"name": "t", "task": "classification", "threat": threat, **top}
    return parse_spec(data)


WHITE_BOX_LINF = {
    "consequence": "untargeted",
    "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
    "model_knowledge": "white_box",
}


@pytest.fixture
def implemented(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Pretend every catalogued attack has landed (the global catalogue, as load_plan reads it)."""
    for key, d in ALL_IMPLEMENTED.items():
        monkeypatch.setitem(CATALOG, key, d)
    return CATALOG


def errors(found: list) -> list:
    return [v for v in found if v.severity == "error"]


def assert_plan_is_sound(spec: AttackSpec, result: Plan, catalog: dict) -> None:
    """Every item realises the spec, breaks no rule with its own parameters, and fits the budget."""
    budget = getattr(spec.threat.model_knowledge, "query_budget", None)
    spent: dict[float | None, float] = defaultdict(float)
    for item in result.items:
        d = catalog[item.attack]
        assert d.implemented
        target = relaxed_for_check(spec) if item.role == "gradient_free_check" else spec
        assert realises(target, d), f"{item.attack} does not realise {spec.name}"
        assert not errors(descriptor_violations(target, d, {**d.defaults, **item.params})), item.attack
        assert item.rationale
        spent[item.epsilon] += item.expected_cost.queries
        if spec.threat.model_knowledge.kind == "full_black_box":
            assert item.role == "transfer" and item.expected_cost.queries == 0
    if budget is not None:
        assert all(total <= budget for total in spent.values()), spent
    assert result.spec_hash == spec.spec_hash()


# --------------------------------------------------------------------------- the demo and friends


def test_demo_spec_gets_apgd_per_epsilon_and_a_gradient_free_check(implemented: dict) -> None:
    spec = load_spec(EXAMPLES / "digits-whitebox-linf.yaml")
    result = plan(spec)
    assert isinstance(result, Plan)
    assert result.epsilons == [0.05, 0.1, 0.2]
    assert {item.epsilon for item in result.items} == {0.05, 0.1, 0.2}
    first = result.items[0]
    assert first.attack == "apgd_ce" and first.role == "primary"  # the fast core: APGD-CE, then APGD-T
    assert first.context.norm == "inf" and first.epsilon == 0.05
    assert first.params["steps"] == 100 and "step_size" not in first.params  # APGD sets its own step
    assert [i.attack for i in result.items[:3]] == ["apgd_ce", "apgd_t", "square_linf"]
    roles = {item.role for item in result.items}
    assert "gradient_free_check" in roles
    check = next(i for i in result.items if i.role == "gradient_free_check")
    assert CATALOG[check.attack].access == "scores"  # Square before decision-based attacks
    assert all(CATALOG[i.attack].access == "gradients" for i in result.items if i.role == "primary")
    assert any(a == "AML.T0043.000" for a in result.atlas)
    assert_plan_is_sound(spec, result, CATALOG)


def test_primaries_are_ranked_by_strength_then_cost(implemented: dict) -> None:
    result = plan(spec_of(WHITE_BOX_LINF))
    assert isinstance(result, Plan)
    primaries = [i for i in result.items if i.role == "primary"]
    keys = [(-i.strength, i.expected_cost.passes + i.expected_cost.queries) for i in primaries]
    assert keys == sorted(keys)
    assert len(primaries) <= 4 and result.alternatives


def test_nothing_implemented_means_no_runnable_items_but_a_list_of_what_would_run() -> None:
    catalog = {k: replace(d, implemented=False) for k, d in CATALOG.items()}
    result = plan(spec_of(WHITE_BOX_LINF), catalog=catalog)
    assert isinstance(result, Plan)
    assert result.items == []
    assert {c.attack for c in result.not_runnable} >= {"pgd_linf", "fgsm"}
    assert any("not implemented" in note for note in result.notes)


def test_pixel_units_are_converted_to_input_units(implemented: dict) -> None:
    spec = load_spec(EXAMPLES / "digits-query-limited-square.yaml")
    result = plan(spec)
    assert isinstance(result, Plan)
    assert result.epsilons == [pytest.approx(8 / 255)]
    assert all(item.epsilon == pytest.approx(8 / 255) for item in result.items)


def test_query_budget_is_split_and_never_exceeded(implemented: dict) -> None:
    threat = dict(WHITE_BOX_LINF, model_knowledge={"kind": "query_limited", "query_budget": 1000})
    spec = spec_of(threat)
    result = plan(spec)
    assert isinstance(result, Plan)
    assert len(result.items) >= 2
    assert sum(i.expected_cost.queries for i in result.items) <= 1000
    assert all(CATALOG[i.attack].access in ("scores", "labels", "surrogate") for i in result.items)
    assert_plan_is_sound(spec, result, CATALOG)


def test_user_strategy_constrains_the_choice(implemented: dict) -> None:
    spec = load_spec(EXAMPLES / "digits-least-likely-second-order.yaml")
    result = plan(spec)
    assert isinstance(result, Plan)
    primaries = [i for i in result.items if i.role == "primary"]
    assert primaries and all(CATALOG[i.attack].optimizer == "second_order" for i in primaries)
    assert not any(line.startswith("strategy.optimizer") for line in result.filled)


def test_left_out_strategy_is_filled_and_said(implemented: dict) -> None:
    result = plan(spec_of(WHITE_BOX_LINF))
    assert isinstance(result, Plan)
    assert result.strategy["model_basis"] == {"kind": "victim"}
    assert any(line.startswith("strategy.optimizer") for line in result.filled)


def test_full_black_box_plans_transfer_with_zero_victim_queries(implemented: dict) -> None:
    spec = load_spec(EXAMPLES / "digits-transfer-full-black-box.yaml")
    result = plan(spec)
    assert isinstance(result, Plan)
    assert result.items and all(i.params["verify_queries"] == 0 for i in result.items)
    assert result.items[0].context.surrogate["ensemble"] == 2
    assert_plan_is_sound(spec, result, CATALOG)


def test_minimal_mode_runs_once_and_reports_at_the_curve(implemented: dict) -> None:
    threat = dict(WHITE_BOX_LINF, imperceptibility=[{"kind": "lp", "norm": 2, "mode": "minimal",
                                                      "epsilon": [0.5, 1.0]}])
    result = plan(spec_of(threat))
    assert isinstance(result, Plan)
    assert result.items and all(i.epsilon is None for i in result.items if i.role == "primary")
    assert all(i.context.report_at == [0.5, 1.0] for i in result.items if i.role == "primary")


def test_gap_spec_plans_nothing_and_says_so(implemented: dict) -> None:
    result = plan(load_spec(EXAMPLES / "digits-lpips-query-gap.yaml"))
    assert isinstance(result, Plan)
    assert result.items == [] and result.not_runnable == []
    assert any(note.startswith("gap") for note in result.notes)


# --------------------------------------------------------------------------- infeasible specs


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("invalid-*.yaml")))
def test_invalid_examples_are_infeasible_with_suggestions_that_pass(name: str) -> None:
    try:
        spec = load_spec(EXAMPLES / name)
    except SpecError:
        return  # a schema error: exit 2 territory, not the planner's
    result = plan(spec)
    assert isinstance(result, Infeasible), name
    assert result.blocking and all(n.severity == "error" and n.reason and n.fix for n in result.blocking)
    assert result.nearest, f"{name}: no feasible spec one axis away"
    for suggestion in result.nearest:
        assert not errors(validate(parse_spec(suggestion.spec))), suggestion.change
        assert "->" in suggestion.change


@pytest.mark.parametrize("rule", [{"rule": "least_likely"}, {"rule": "class_map", "class_map": {"car": "person"}}])
def test_detector_dynamic_target_other_than_remove_classes_is_infeasible(rule: dict) -> None:
    """The detection objectives refuse these at run time (exit 2); the plan must say so first (C17)."""
    threat = dict(WHITE_BOX_LINF, consequence={"kind": "dynamic_target", **rule})
    result = plan(spec_of(threat, task="detection", classes=["road", "car", "person"]))
    assert isinstance(result, Infeasible)
    assert "C17-detector-dynamic-target-removes-classes" in {n.id for n in result.blocking}
    assert result.nearest


def test_query_budget_too_small_suggests_the_budget_that_fits(implemented: dict) -> None:
    threat = dict(WHITE_BOX_LINF, model_knowledge={"kind": "query_limited", "query_budget": 20})
    result = plan(spec_of(threat))
    assert isinstance(result, Plan)  # coherent spec, but no attack fits 20 queries
    assert all(i.expected_cost.queries <= 20 for i in result.items)


def test_nearest_feasible_keeps_only_specs_that_pass_every_rule() -> None:
    spec = load_spec(EXAMPLES / "invalid-physical-pixel-noise.yaml")
    for suggestion in nearest_feasible(spec, limit=20):
        changed = parse_spec(suggestion.spec)
        assert not errors(validate(changed))
        assert suggestion.runnable == any(CATALOG[a].implemented for a in suggestion.realised_by)


# --------------------------------------------------------------------------- property: any cell


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CELLS))
def test_planner_never_emits_an_item_that_breaks_a_rule(cell: space.ThreatCell) -> None:
    spec = space.spec_for_cell(cell)
    result = plan(spec, catalog=ALL_IMPLEMENTED)
    if isinstance(result, Infeasible):
        assert not space.cell_feasible(cell)
        assert result.blocking
        for suggestion in result.nearest:
            assert not errors(validate(parse_spec(suggestion.spec)))
        return
    assert space.cell_feasible(cell)
    assert_plan_is_sound(spec, result, ALL_IMPLEMENTED)
    # the fast cell-level plan picks the same primary attacks
    fast = plan_cell(cell, ALL_IMPLEMENTED)
    primaries = [i.attack for i in result.items if i.role in ("primary", "transfer")]
    assert list(dict.fromkeys(primaries)) == [a for a in fast["items"] if a != fast["check"]][: len(set(primaries))]


# --------------------------------------------------------------------------- the plan file


def test_plan_round_trips_through_yaml_and_json(tmp_path: Path, implemented: dict) -> None:
    result = plan(load_spec(EXAMPLES / "digits-whitebox-linf.yaml"))
    assert isinstance(result, Plan)
    for name in ("plan.yaml", "plan.json"):
        path = save_plan(result, tmp_path / name)
        if name.endswith(".json"):
            json.loads(path.read_text())
        else:
            assert path.read_text().startswith("# attackgen plan")
        assert load_plan(path) == result


def _saved(tmp_path: Path) -> tuple[Path, dict]:
    result = plan(load_spec(EXAMPLES / "digits-whitebox-linf.yaml"))
    assert isinstance(result, Plan)
    path = save_plan(result, tmp_path / "plan.yaml")
    return path, yaml.safe_load(path.read_text())


def _problems(data: Any, tmp_path: Path) -> str:
    path = tmp_path / "edited.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    with pytest.raises(SpecError) as caught:
        load_plan(path)
    return str(caught.value)


def test_edited_spec_breaks_the_hash(tmp_path: Path, implemented: dict) -> None:
    _, data = _saved(tmp_path)
    data["spec"]["threat"]["imperceptibility"][0]["epsilon"] = [0.3]
    assert "spec_hash" in _problems(data, tmp_path)


def test_unknown_attack_id_is_named_with_a_suggestion(tmp_path: Path, implemented: dict) -> None:
    _, data = _saved(tmp_path)
    data["items"][0]["attack"] = "pgd_lnf"
    message = _problems(data, tmp_path)
    assert "items[0].attack" in message and "did you mean 'pgd_linf'" in message


def test_item_that_breaks_the_spec_is_refused(tmp_path: Path, implemented: dict) -> None:
    _, data = _saved(tmp_path)
    data["items"][0]["attack"] = "pgd_l2"  # the spec is Linf
    assert "items[0]" in _problems(data, tmp_path)


def test_malformed_and_wrong_shaped_plans_are_clear_errors(tmp_path: Path) -> None:
    assert "malformed YAML" in _problems("items: [1, 2\n", tmp_path)
    assert "expected a plan mapping" in _problems("- just a list\n", tmp_path)
    assert "spec_hash" in _problems({"spec_name": "x", "spec": {}}, tmp_path)
    with pytest.raises(SpecError, match="file not found"):
        load_plan(tmp_path / "missing.yaml")


def test_unimplemented_attack_in_a_plan_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(EXAMPLES / "digits-whitebox-linf.yaml")
    result = plan(spec, catalog=ALL_IMPLEMENTED)
    assert isinstance(result, Plan)
    data = result.to_data()
    data["items"] = data["items"][:1]
    attack = data["items"][0]["attack"]  # every entry may be implemented by now: mark this one as not
    monkeypatch.setitem(CATALOG, attack, replace(CATALOG[attack], implemented=False))
    with pytest.raises(SpecError, match="not yet implemented"):
        parse_plan(data, "plan.yaml")


def test_purpose_built_attacks_appear_only_where_their_feature_is_asked(implemented: dict) -> None:
    from taxonomy.catalog import REQUIRES

    plain = plan(spec_of(WHITE_BOX_LINF))
    assert isinstance(plain, Plan)
    offered = {i.attack for i in plain.items} | set(plain.alternatives) | {c.attack for c in plain.not_runnable}
    assert not offered & set(REQUIRES)
    universal = plan(load_spec(EXAMPLES / "digits-universal-training.yaml"))
    assert isinstance(universal, Plan) and "patch_eot" not in {i.attack for i in universal.items}
    guarded = plan(load_spec(EXAMPLES / "det-mislabel-detector-aware.yaml"))
    assert isinstance(guarded, Plan) and [i.attack for i in guarded.items] == ["detector_aware_pgd"]
    assert guarded.items[0].params["detectors"] == ["feature_squeezing"]


# --------------------------------------------------------------------------- typed parameters


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_planner_never_writes_params_the_attack_model_refuses(path: Path) -> None:
    from attackgen.plan.document import CONTEXT_KEYS
    from taxonomy.params import param_problems

    try:
        result = plan(load_spec(path))
    except SpecError:
        pytest.skip("an invalid example (its own tests check the message)")
    if not isinstance(result, Plan):
        return
    for item in result.items:
        descriptor = CATALOG[item.attack]
        assert param_problems(item.attack, descriptor.params, item.params) == []
        assert not (set(item.params) & CONTEXT_KEYS) - set(descriptor.params.model_fields)


def edited_demo_plan(tmp_path: Path, **changes: Any) -> Path:
    result = plan(load_spec(EXAMPLES / "digits-whitebox-linf.yaml"))
    assert isinstance(result, Plan) and result.items[0].attack == "apgd_ce"
    data = yaml.safe_load(result.dumps())
    data["items"][0]["params"].update(changes)
    out = tmp_path / "edited.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@pytest.mark.parametrize(("changes", "expected"), [
    ({"stpes": 1}, "items[0].params.stpes: attack 'apgd_ce' has no parameter 'stpes' (did you mean 'steps'?)"),
    ({"steps": -5}, "items[0].params.steps (attack 'apgd_ce'): input should be greater than or equal to 1 (got -5)"),
    ({"steps": "many"}, "items[0].params.steps (attack 'apgd_ce'): input should be a valid integer"),
    ({"batch_start": "perhaps"}, "items[0].params.batch_start (attack 'apgd_ce'): input should be a valid boolean"),
    ({"loss": "hinge"}, "items[0].params.loss (attack 'apgd_ce'): input should be 'ce', 'dlr' or 'dlr-targeted'"),
    ({"norm": "2"}, "items[0].params.norm: attack 'apgd_ce' has no parameter 'norm'"),
])
def test_an_edited_plan_with_a_bad_parameter_fails_at_load(tmp_path: Path, changes: dict, expected: str) -> None:
    with pytest.raises(SpecError) as error:
        load_plan(edited_demo_plan(tmp_path, **changes))
    assert expected in str(error.value)


def test_a_version_1_plan_loads_with_its_context_apart() -> None:
    """examples/suite/plans was written before the split: norm, epsilon, mode and target sat in params."""
    path = ROOT / "examples" / "suite" / "plans" / "digits-linf-curve.plan.yaml"
    assert yaml.safe_load(path.read_text())["plan_version"] == 1
    loaded = load_plan(path)
    assert loaded.plan_version == 2 and loaded.items
    for item in loaded.items:
        assert item.context.norm == "inf" and item.context.mode == "fixed" and item.epsilon is not None
        assert item.context.target == {"kind": "untargeted"}
        assert not {"norm", "epsilon", "mode", "target"} & set(item.params)
        assert item.reported_params()["epsilon"] == item.epsilon  # results.json records what it did before


def test_a_plan_from_a_newer_version_is_refused_clearly() -> None:
    result = plan(load_spec(EXAMPLES / "digits-whitebox-linf.yaml"))
    assert isinstance(result, Plan)
    data = {**result.to_data(), "plan_version": 3}
    with pytest.raises(SpecError, match="plan_version"):
        parse_plan(data, "newer.yaml")


@pytest.mark.parametrize(("name", "attack"), [("physical-digits-patch.yaml", "patch_eot"),
                                               ("det-fabrication-physical-patch.yaml", "det_patch")])
def test_a_physical_patch_attack_gets_the_specs_transformations_and_printability(name: str, attack: str) -> None:
    """The planner fills a threat value into params when the attack's model declares it (det_patch did not
    get these before its model declared them, and ran a digital patch for a physical spec)."""
    spec = load_spec(EXAMPLES / name)
    result = plan(spec)
    assert isinstance(result, Plan)
    items = [i for i in result.items if i.attack == attack]
    assert items
    wanted = spec.threat.capability.transformations.model_dump(mode="json")
    for item in items:
        assert item.params["transformations"] == wanted
        assert item.params["printability"] == bool(spec.threat.capability.printability)


def test_a_surrogate_ensemble_multiplies_the_transfer_attacks_passes() -> None:
    """Each step of a transfer attack runs every ensemble member (logits averaged): the plan's expected
    passes grow with the ensemble, the victim's verification queries do not."""
    base = load_spec(EXAMPLES / "digits-transfer-full-black-box.yaml")
    passes = {}
    for size in (1, 2):
        spec = parse_spec({**base.model_dump(mode="json", exclude_none=True),
                           "strategy": {"model_basis": {"kind": "surrogate", "source": "trained_on_data",
                                                        "ensemble": size}, "data_basis": "surrogate"}})
        result = plan(spec)
        assert result.items and all(i.role == "transfer" for i in result.items)
        passes[size] = {i.attack: (i.expected_cost.passes, i.expected_cost.queries) for i in result.items}
    assert passes[1].keys() == passes[2].keys()
    for attack, (one, queries) in passes[1].items():
        assert passes[2][attack] == (2 * one, queries), attack


@pytest.mark.parametrize(("norm", "epsilon", "keep"), [("inf", 0.1, 2), ("2", 1.0, 2), ("1", 6.0, 0)])
def test_apgd_t_prunes_targets_except_on_l1_and_is_priced_for_its_norm(norm: str, epsilon: float, keep: int) -> None:
    """The default white-box plan pursues APGD-T's 2 most promising targets on Linf and L2, all 9 on L1 (where
    the pruning costs strength: planner.KEEP_TARGETS); the price shown is the catalogue's for that norm, L1's
    three stages included (tests/test_apgd.py checks it against counted passes)."""
    spec = spec_of({"consequence": "untargeted", "model_knowledge": "white_box",
                    "imperceptibility": [{"kind": "lp", "norm": norm, "epsilon": epsilon}]})
    item = next(i for i in plan(spec).items if i.attack == "apgd_t")
    assert item.params["keep_targets"] == keep
    cost = CATALOG["apgd_t"].model_cost(item.params, norm)
    assert (item.expected_cost.forward, item.expected_cost.backward) == (cost.forward, cost.backward)
    stages = 3 if norm == "1" else 1
    steps, first = item.params["steps"], int(0.22 * item.params["steps"])
    dropped = 9 - (keep or 9)
    assert cost.backward == 9 * (steps + stages) - dropped * (steps + stages - first - 1)
