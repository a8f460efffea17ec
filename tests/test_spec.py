"""The schema: what a user writes is accepted, what they get wrong is named with the field and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from taxonomy.errors import SpecError
from taxonomy.spec import AttackSpec, dump_spec, json_schema, load_spec, parse_spec

MINIMAL = {
    "name": "digits-linf",
    "task": "classification",
    "threat": {
        "consequence": "untargeted",
        "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
        "model_knowledge": "white_box",
    },
}


def spec_with(**threat_changes: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    data["threat"].update(threat_changes)
    return data


def problems_of(data: object) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, "spec.yaml")
    return str(caught.value)


def test_minimal_spec_gets_defaults_for_what_was_left_out() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.threat.scope.kind == "individual"
    assert spec.threat.capability.feed == "digital"
    assert spec.input_space.bounds == (0.0, 1.0)
    assert spec.strategy.optimizer is None  # the planner fills it


def test_round_trip_through_yaml_keeps_the_spec_and_its_hash() -> None:
    spec = parse_spec(spec_with(scope="universal", data_knowledge="training"))
    again = parse_spec(yaml.safe_load(dump_spec(spec)))
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()


def test_unknown_value_names_the_field_and_suggests_the_spelling() -> None:
    message = problems_of(spec_with(scope="universl"))
    assert "spec.yaml" in message
    assert "threat.scope.kind" in message
    assert "did you mean 'universal'" in message


def test_unknown_field_is_rejected_with_did_you_mean() -> None:
    data = spec_with()
    data["threat"]["data_knowledg"] = "training"
    message = problems_of(data)
    assert "threat.data_knowledg: unknown field" in message
    assert "data_knowledge" in message


def test_wrong_type_names_the_field() -> None:
    message = problems_of(spec_with(model_knowledge={"kind": "query_limited", "query_budget": "many"}))
    assert "threat.model_knowledge.query_budget" in message


@pytest.mark.parametrize("budget", [0, -5])
def test_query_budget_of_zero_or_below_is_rejected(budget: int) -> None:
    message = problems_of(spec_with(model_knowledge={"kind": "query_limited", "query_budget": budget}))
    assert "query_budget" in message and "greater than 0" in message


def test_a_repeated_epsilon_is_rejected() -> None:
    """Found by the fuzz bench: 50 copies of one epsilon planned 150 identical attacks (every attack once per
    listed epsilon) and validated as if nothing were wrong."""
    message = problems_of(spec_with(imperceptibility=[{"kind": "lp", "norm": "inf", "epsilon": [0.1, 0.2, 0.1]}]))
    assert "threat.imperceptibility" in message and "epsilon 0.1 is listed 2 times; list each epsilon once" in message


def test_linf_epsilon_outside_the_input_range_is_rejected_with_the_units_hint() -> None:
    message = problems_of(spec_with(imperceptibility=[{"kind": "lp", "norm": "inf", "epsilon": 8}]))
    assert "exceeds the input range" in message and "pixel_255" in message


def test_pixel_255_units_are_converted_to_input_scale() -> None:
    data = spec_with(imperceptibility=[{"kind": "lp", "norm": "inf", "epsilon": 8}])
    data["input_space"] = {"epsilon_units": "pixel_255"}
    spec = parse_spec(data)
    assert spec.input_space.to_input_scale(8) == pytest.approx(8 / 255)


def test_fixed_budget_needs_an_epsilon_but_minimal_mode_does_not() -> None:
    assert "needs an epsilon" in problems_of(spec_with(imperceptibility=[{"kind": "lp", "norm": 2}]))
    spec = parse_spec(spec_with(imperceptibility=[{"kind": "lp", "norm": 2, "mode": "minimal"}]))
    assert spec.lp_budgets[0].norm == "2"


def test_static_target_needs_exactly_one_artefact() -> None:
    message = problems_of(spec_with(consequence={"kind": "static_target"}))
    assert "exactly one artefact" in message


def test_transformation_ranges_must_be_ordered() -> None:
    capability = {"feed": "physical", "transformations": {"rotation_deg": [30, -30]}}
    assert "rotation_deg" in problems_of(spec_with(capability=capability))


def test_a_document_that_is_not_a_mapping_is_named() -> None:
    assert "expected a mapping" in problems_of(["a", "list"])
    assert "empty document" in problems_of(None)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nthreat: [unclosed\n")
    with pytest.raises(SpecError, match=r"malformed YAML: line \d+"):
        load_spec(broken)


def test_json_schema_describes_every_top_level_field() -> None:
    schema = json_schema()
    assert set(AttackSpec.model_fields) <= set(schema["properties"])
    assert schema["additionalProperties"] is False
