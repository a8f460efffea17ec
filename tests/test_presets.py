"""The AutoAttack presets: exactly AutoAttack's attacks, order and parameters; refused by rule (with the
nearest fitting preset) off their threat model; DLR on too few classes refused by rule C18."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from attackgen.cli.main import run_in_process as cli
from attackgen.plan.document import Infeasible, Plan, load_plan, save_plan
from attackgen.plan.planner import plan
from attackgen.plan.presets import plan_preset
from taxonomy.spec import AttackSpec, parse_spec

WHITE_BOX = {
    "consequence": "untargeted",
    "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
    "model_knowledge": "white_box",
}


def spec_of(threat: dict[str, Any] | None = None, **top: Any) -> AttackSpec:
    data = {"name": "t", "task": "classification", "classes": [str(i) for i in range(10)],
            "threat": {**WHITE_BOX, **(threat or {})}, **top}
    return parse_spec(data)


def steps(result: Plan) -> list[tuple[str, str, dict[str, Any]]]:
    keys = ("steps", "restarts", "n_target_classes", "n_queries", "p_init", "eot_iter", "parallel_targets",
            "alpha_max", "eta", "beta", "draws", "rescale_schedule")
    return [(i.attack, i.role, {k: i.params[k] for k in keys if k in i.params}) for i in result.items]


def test_standard_is_autoattacks_four_attacks_in_order() -> None:
    result = plan_preset(spec_of(), "autoattack-standard")
    assert isinstance(result, Plan) and result.preset == "autoattack-standard"
    assert steps(result) == [
        ("apgd_ce", "primary", {"steps": 100, "restarts": 1, "eot_iter": 1}),
        ("apgd_t", "primary",
         {"steps": 100, "restarts": 1, "eot_iter": 1, "n_target_classes": 9, "parallel_targets": False}),
        ("fab_t", "primary", {"steps": 100, "restarts": 1, "n_target_classes": 9, "parallel_targets": False,
                              "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}),
        ("square_linf", "gradient_free_check",
         {"n_queries": 5000, "p_init": 0.8, "draws": "autoattack", "rescale_schedule": False}),
    ]
    assert all(i.epsilon == 0.1 and i.context.norm == "inf" for i in result.items)
    assert not any("FMN" in note for note in result.notes)  # FAB-T is the port now, no substitution


def test_standard_on_l1_uses_the_references_l1_settings_and_all_four_attacks() -> None:
    result = plan_preset(spec_of({"imperceptibility": [{"kind": "lp", "norm": "1", "epsilon": 12.0}]}),
                         "autoattack-standard")
    assert isinstance(result, Plan)
    assert [(a, p.get("restarts"), p.get("n_target_classes")) for a, _, p in steps(result)] == [
        ("apgd_ce", 5, None), ("apgd_t", 1, 5), ("fab_t", 1, 9), ("square_l1", None, None)]
    assert result.items[3].params == {"n_queries": 5000, "p_init": 0.8, "draws": "autoattack",
                                      "rescale_schedule": False}
    assert result.items[3].role == "gradient_free_check"
    assert all(i.params.get("large_eps", True) for i in result.items[:2])
    assert all(i.context.norm == "1" for i in result.items)
    assert not any("not available" in note for note in result.notes)
    assert not any(w.id.startswith("G2") for w in result.warnings)
    plus = plan_preset(spec_of({"imperceptibility": [{"kind": "lp", "norm": "1", "epsilon": 12.0}]}),
                       "autoattack-plus")
    assert isinstance(plus, Plan) and [i.attack for i in plus.items] == ["apgd_ce", "apgd_dlr", "fab", "square_l1",
                                                                         "apgd_t", "fab_t"]
    assert plus.items[0].params["large_eps"] is False  # the reference sets use_largereps in 'standard' only


def test_plus_and_rand_follow_set_version() -> None:
    plus = plan_preset(spec_of({"imperceptibility": [{"kind": "lp", "norm": "2", "epsilon": 1.0}]}),
                       "autoattack-plus")
    assert isinstance(plus, Plan)
    assert [a for a, _, _ in steps(plus)] == ["apgd_ce", "apgd_dlr", "fab", "square_l2", "apgd_t", "fab_t"]
    assert [steps(plus)[i][2]["restarts"] for i in (0, 1, 2)] == [5, 5, 5]
    rand = plan_preset(spec_of(), "autoattack-rand")
    assert isinstance(rand, Plan)
    assert steps(rand) == [("apgd_ce", "primary", {"steps": 100, "restarts": 1, "eot_iter": 20}),
                           ("apgd_dlr", "primary", {"steps": 100, "restarts": 1, "eot_iter": 20})]
    assert any(w.id.startswith("G2") for w in rand.warnings)  # no gradient-free check, as in AutoAttack


def test_every_epsilon_of_a_curve_gets_the_whole_protocol() -> None:
    result = plan_preset(spec_of({"imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": [0.05, 0.1]}]}),
                         "autoattack-standard")
    assert isinstance(result, Plan)
    assert [i.epsilon for i in result.items] == [0.05] * 4 + [0.1] * 4


@pytest.mark.parametrize(("threat", "nearest"), [
    ({"model_knowledge": {"kind": "output_transparent"}}, "autoattack-square"),
    ({"model_knowledge": {"kind": "label_only"}}, "no preset fits"),
    ({"imperceptibility": [{"kind": "lp", "norm": "0", "epsilon": 5}]}, "no preset fits"),
    ({"consequence": {"kind": "static_target", "target_class": 3}}, "no preset fits"),
])
def test_a_preset_off_its_threat_model_fails_by_rule_naming_the_nearest(threat: dict, nearest: str) -> None:
    result = plan_preset(spec_of(threat), "autoattack-standard")
    assert isinstance(result, Infeasible)
    note = next(n for n in result.blocking if n.id == "G3-preset-fits-threat-model")
    assert nearest in note.detail and note.fix


def test_the_square_preset_fits_score_access() -> None:
    result = plan_preset(spec_of({"model_knowledge": {"kind": "output_transparent"}}), "autoattack-square")
    assert isinstance(result, Plan) and [i.attack for i in result.items] == ["square_linf"]


def test_a_preset_on_detection_is_refused() -> None:
    spec = parse_spec({"name": "d", "task": "detection", "threat": {
        "consequence": {"kind": "vanishing"}, "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.03}],
        "model_knowledge": "white_box"}})
    result = plan_preset(spec, "autoattack-standard")
    assert isinstance(result, Infeasible)
    assert any(n.id == "G3-preset-fits-threat-model" and n.field == "task" for n in result.blocking)


def test_two_classes_refuse_dlr_by_rule_c18() -> None:
    result = plan_preset(spec_of(classes=["cat", "dog"]), "autoattack-standard")
    assert isinstance(result, Infeasible)
    assert any(n.id == "C18-dlr-needs-enough-classes" and "apgd_t" in n.detail for n in result.blocking)
    three = plan_preset(spec_of(classes=["a", "b", "c"]), "autoattack-rand")  # untargeted DLR needs 3: fine
    assert isinstance(three, Plan)
    default = plan(spec_of(classes=["cat", "dog"]))  # the planner just leaves the DLR attacks out
    assert isinstance(default, Plan) and not {"apgd_t", "apgd_dlr"} & {i.attack for i in default.items}


def write(tmp_path: Path, **top: Any) -> Path:
    data = {"name": "t", "task": "classification", "threat": WHITE_BOX, **top}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_refuses_dlr_on_a_two_class_spec_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, classes=["cat", "dog"])
    assert cli("validate", str(path), "--preset", "autoattack-standard") == 1
    assert "C18-dlr-needs-enough-classes" in capsys.readouterr().out
    assert cli("plan", str(path), "--preset", "autoattack-standard") == 1
    assert "C18-dlr-needs-enough-classes" in capsys.readouterr().err
    assert cli("validate", str(path)) == 0  # the spec by itself is fine


def test_cli_preset_with_black_box_knowledge_exits_1_naming_the_nearest(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "task": "classification", "threat": {
        **WHITE_BOX, "model_knowledge": {"kind": "query_limited", "query_budget": 10000}}}))
    assert cli("plan", str(path), "--preset", "autoattack-standard") == 1
    err = capsys.readouterr().err
    assert "G3-preset-fits-threat-model" in err and "autoattack-square" in err
    assert cli("plan", str(path), "--preset", "autoattack-nope") == 2


def test_cli_writes_a_preset_plan_that_loads_back(tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    assert cli("plan", str(write(tmp_path, classes=[str(i) for i in range(10)])), "--preset",
               "autoattack-standard", "-o", str(out)) == 0
    loaded = load_plan(out)
    assert loaded.preset == "autoattack-standard" and len(loaded.items) == 4
    assert save_plan(loaded, tmp_path / "again.yaml").exists()


def test_default_white_box_plan_is_apgd_pair_then_a_stated_square_budget() -> None:
    result = plan(spec_of())
    assert isinstance(result, Plan)
    assert [(i.attack, i.role) for i in result.items] == [
        ("apgd_ce", "primary"), ("apgd_t", "primary"), ("square_linf", "gradient_free_check")]
    check = result.items[-1]
    assert check.params["n_queries"] == 500 and "500 queries" in check.rationale
    assert result.items[1].params["parallel_targets"] is True
    assert result.items[1].params["keep_targets"] == 2  # cost-aware: 9 targets explored, 2 pursued
