"""Audit over damaged results and plan files: the damaged file is reported and skipped or its bad
fields ignored, and every output still renders; never a traceback (issue 15 found 9 in 400 files)."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attackgen.cli.main import run_in_process
from tests import fuzzing

BASE = json.loads(fuzzing.RESULTS_FILES[0].read_text(encoding="utf-8"))

DAMAGE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "curve point epsilon a string": lambda d: d["curve"].__setitem__(0, {"epsilon": "x", "robust_accuracy": 0.5}),
    "curve point missing a key": lambda d: d["curve"].__setitem__(0, {"epsilon": 0.1}),
    "curve point null": lambda d: d["curve"].__setitem__(0, None),
    "curve point a list": lambda d: d["curve"].__setitem__(0, [0.1, 0.5]),
    "curve point of nulls": lambda d: d["curve"].__setitem__(0, {"epsilon": None, "robust_accuracy": None}),
    "headline epsilon a string": lambda d: d["metrics"].__setitem__("headline_epsilon", "x"),
    "flags of strings": lambda d: d.__setitem__("flags", ["x"]),
    "flag missing fields": lambda d: d.__setitem__("flags", [{"check": "a"}]),
    "flag fields of wrong types": lambda d: d.__setitem__("flags", [{"check": 1, "severity": 5, "evidence": None}]),
    "item epsilon a string": lambda d: d["items"][0].__setitem__("epsilon", "x"),
    "item null": lambda d: d["items"].__setitem__(0, None),
}


@pytest.mark.parametrize("recheck", [False, True])
def test_damaged_results_never_traceback(tmp_path: Path, recheck: bool) -> None:
    for n, damage in enumerate(DAMAGE.values()):
        data = copy.deepcopy(BASE)
        damage(data)
        (tmp_path / f"run{n}").mkdir()
        (tmp_path / f"run{n}" / "results.json").write_text(json.dumps(data), encoding="utf-8")
    args = ["audit", tmp_path, "-o", tmp_path / "out", "--format", "json"] + (["--recheck"] if recheck else [])
    assert run_in_process(*args) == 0  # before: TypeError / KeyError / ValueError in curve points and flags
    report = json.loads((tmp_path / "out" / "coverage.json").read_text(encoding="utf-8"))
    assert report["summary"]["covered"] >= 1


def test_one_damaged_curve_point_drops_only_that_point() -> None:
    from attackgen.audit.soundness import curve_points

    class Run:
        def __init__(self) -> None:
            self.curve = [{"epsilon": "x", "robust_accuracy": 0.5}, {"epsilon": 0.1, "robust_accuracy": 0.4}, None,
                          {"epsilon": float("nan"), "robust_accuracy": 0.1}]
            self.metrics: dict[str, Any] = {}

    assert curve_points(Run()) == [(0.1, 0.4)]  # type: ignore[arg-type]


FUZZ = settings(max_examples=4, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), recheck=st.booleans())
def test_mutated_results_files_never_traceback(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                               recheck: bool) -> None:
    folder = tmp_path_factory.mktemp("suite")
    text = fuzzing.mutate(fuzzing.RESULTS_FILES[0].read_text(encoding="utf-8"), random.Random(seed))
    error = fuzzing.first_failure(lambda: fuzzing.check_audit_text(text, folder, "results.json", recheck))
    assert error is None, f"{type(error).__name__}: {error}"


@FUZZ
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_plan_files_never_traceback_in_audit(tmp_path_factory: pytest.TempPathFactory, seed: int) -> None:
    folder = tmp_path_factory.mktemp("suite")
    text = fuzzing.mutate(fuzzing.PLAN_FILES[0].read_text(encoding="utf-8"), random.Random(seed))
    error = fuzzing.first_failure(lambda: fuzzing.check_audit_text(text, folder, "plan.yaml"))
    assert error is None, f"{type(error).__name__}: {error}"
