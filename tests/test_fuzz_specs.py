"""Hostile and hand-mangled spec and plan files: a named SpecError, quickly, never a traceback or a hang.

The named cases are the ones a fuzzer found (issue 15); the hypothesis tests run the same mutations
as bench/fuzz_specs.py at a size that fits the default suite.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attackgen.cli.main import run_in_process
from attackgen.plan.document import load_plan, save_plan
from attackgen.plan.planner import plan as make_plan
from taxonomy.errors import SpecError
from taxonomy.spec import MAX_DEPTH, load_spec, load_yaml_text, read_yaml
from tests import fuzzing

SPEC = fuzzing.ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml"


def spec_data() -> dict:
    return yaml.safe_load(SPEC.read_text(encoding="utf-8"))


def refused(text: str, *words: str, seconds: float = 2.0) -> SpecError:
    started = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        load_yaml_text(text, "f.yaml")
    assert time.perf_counter() - started < seconds
    message = str(caught.value)
    assert message.startswith("f.yaml: ")
    for word in words:
        assert word in message
    return caught.value


# --------------------------------------------------------------------------- the reader's bounds


@pytest.mark.parametrize("text", [
    "[" * 5000 + "]" * 5000,
    "".join(" " * i + "a:\n" for i in range(300)),
    "- " * 3000 + "x",
    "a: " + "{b: " * 3000 + "}" * 3000,
])
def test_deep_nesting_is_a_named_error_not_a_recursion_error(text: str) -> None:
    refused(text, f"nested deeper than {MAX_DEPTH} levels", "line ")


def test_nesting_within_the_bound_reads() -> None:
    depth = MAX_DEPTH - 2
    assert load_yaml_text("[" * depth + "1" + "]" * depth, "f.yaml") is not None


@pytest.mark.parametrize("digits", [65, 4301, 50_000])
def test_huge_integers_are_refused_by_size(digits: int) -> None:
    refused(f"name: x\nsteps: {'9' * digits}\n", f"an integer of {digits} digits", "line 2")


def test_alias_bomb_is_refused_while_reading() -> None:
    refused(fuzzing.alias_bomb(9), "aliases are expanded", seconds=0.5)


def test_alias_bomb_under_a_spec_field_stops_plan_not_hangs(tmp_path: Path) -> None:
    text = SPEC.read_text(encoding="utf-8").replace(
        "scope: individual", "scope: {kind: contextual, context: *a8}") + fuzzing.alias_bomb(9) + "\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    assert run_in_process("plan", path, "-o", tmp_path / "plan.yaml") == 2
    assert time.perf_counter() - started < 5


def test_recursive_alias_is_refused() -> None:
    refused("a: &x [1, *x]\n", "recursive alias")


def test_small_aliases_and_merge_keys_still_read() -> None:
    data = load_yaml_text("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\ne: *b\n", "f.yaml")
    assert data == {"base": {"x": 1, "y": 2}, "d": {"x": 3, "y": 2}, "e": {"x": 1, "y": 2}}


def test_duplicate_keys_are_refused_naming_the_key(tmp_path: Path) -> None:
    text = SPEC.read_text(encoding="utf-8").replace("task: classification",
                                                    "task: classification\ntask: segmentation")
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("task: segmentation") + 1
    with pytest.raises(SpecError, match=r"duplicate key 'task'.*") as caught:
        load_spec(path)
    assert f"line {line}," in str(caught.value)


@pytest.mark.parametrize("text", ["a: !!timestamp not-a-date\n", "a: !!float abc\n",
                                  "a: !!python/object:os.system x\n"])
def test_bad_tagged_values_are_named_errors(text: str) -> None:
    refused(text, "malformed YAML")


@pytest.mark.parametrize("epsilon", [".nan", "NaN", ".inf", "-.inf", "[0.1, .nan]", "1.0e999"])
def test_non_finite_epsilons_are_refused_naming_the_field(tmp_path: Path, epsilon: str) -> None:
    text = SPEC.read_text(encoding="utf-8").replace("epsilon: [0.05, 0.1, 0.2]", f"epsilon: {epsilon}")
    path = tmp_path / "nan.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match=r"threat\.imperceptibility\[0\]\.epsilon.*finite number"):
        load_spec(path)


def test_json_plan_with_nan_and_infinity_tokens_is_refused_naming_the_field(tmp_path: Path) -> None:
    made = make_plan(load_spec(SPEC))
    for where, value, token, named in [("epsilon", float("nan"), "NaN", "items[1].epsilon"),
                                       ("steps", float("inf"), "Infinity", "items[1].params.steps"),
                                       ("step_size", float("-inf"), "-Infinity", "items[1].params.step_size")]:
        data = json.loads(made.dumps("json"))
        (data["items"][1] if where == "epsilon" else data["items"][1]["params"])[where] = value
        path = tmp_path / "plan.json"
        path.write_text(json.dumps(data), encoding="utf-8")  # writes the bare tokens NaN and Infinity
        assert token in path.read_text()
        with pytest.raises(SpecError, match="finite") as caught:
            load_plan(path)
        assert named in str(caught.value)


@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\u2029"])
def test_unicode_line_separator_in_a_class_name_survives_plan_then_run(tmp_path: Path, separator: str) -> None:
    data = spec_data()
    data["classes"][0] = f"zero{separator}0"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")  # escaped: the class name reads back as written
    made = make_plan(load_spec(path))
    for name in ("plan.yaml", "plan.json"):
        loaded = load_plan(save_plan(made, tmp_path / name))  # before the fix: "the spec was edited"
        assert loaded.spec["classes"][0] == f"zero{separator}0"
        assert loaded.spec_hash == made.spec_hash


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("description: " + "x" * 2_100_000 + "\n", encoding="utf-8")
    with pytest.raises(SpecError, match="characters long"):
        read_yaml(path)


# --------------------------------------------------------------------------- the fuzzer, small


FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), source=st.sampled_from(fuzzing.SPEC_FILES))
def test_mutated_specs_raise_only_spec_errors(tmp_path: Path, seed: int, source: Path) -> None:
    text = fuzzing.mutate(source.read_text(encoding="utf-8"), random.Random(seed))
    started = time.perf_counter()
    error = fuzzing.first_failure(lambda: fuzzing.check_spec_text(text, tmp_path))
    assert error is None, f"{type(error).__name__}: {error}\n--- input ---\n{text[:2000]}"
    assert time.perf_counter() - started < 10


@settings(FUZZ, max_examples=20)  # each case checks a plan's items against the rules twice (YAML and JSON)
@given(seed=st.integers(0, 2**32 - 1), source=st.sampled_from(fuzzing.PLAN_FILES))
def test_mutated_plans_raise_only_spec_errors(tmp_path: Path, seed: int, source: Path) -> None:
    text = fuzzing.mutate(source.read_text(encoding="utf-8"), random.Random(seed))
    error = fuzzing.first_failure(lambda: fuzzing.check_plan_text(text, tmp_path))
    assert error is None, f"{type(error).__name__}: {error}\n--- input ---\n{text[:2000]}"


def test_json_is_read_as_json_with_the_same_bounds() -> None:
    assert load_yaml_text('{"a": 1e-05, "b": [1, 2]}', "f.json") == {"a": 1e-05, "b": [1, 2]}  # YAML: '1e-05'
    refused('{"a": 1, "a": 2}', "duplicate key 'a'")
    refused('{"a": ' + "9" * 5000 + "}", "5000 digits")
    refused("[" * 70 + "]" * 70, "nested deeper")
    started = time.perf_counter()
    load_yaml_text(json.dumps([spec_data()] * 50), "f.json")  # PyYAML needed seconds for this under load
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("ref", ["9" * 5000, "³"])
def test_class_reference_of_many_or_odd_digits_is_a_named_problem(tmp_path: Path, ref: str) -> None:
    from taxonomy.graph import validate

    data = spec_data()
    data["threat"]["consequence"] = {"kind": "static_target", "target_class": ref}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    try:
        violations = validate(load_spec(path))  # before: ValueError (4300-digit limit) from the rules
    except SpecError:
        return
    assert any("target_class" in v.field for v in violations), [v.id for v in violations]
