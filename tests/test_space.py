"""The abstract threat space: enumeration, representative specs, fast verdicts that agree with the
rules on the parsed specs, realisers that agree with ``realises``, and the time it all takes."""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import pytest

from taxonomy import space
from taxonomy.graph import Facts, descriptor_violations, facts_of, realises, validate
from taxonomy.rules import PREDICATES, RULES
from taxonomy.space import AXES, ThreatCell, cell_verdict, enumerate_cells, spec_for_cell
from taxonomy.spec import parse_spec

CELLS = list(enumerate_cells())
STRIDE = CELLS[::7]  # 5400 cells; 7 is coprime to every axis size, so every value of every axis appears


def test_every_combination_once() -> None:
    assert len(CELLS) == space.n_cells() == 3 * 7 * 3 * 10 * 5 * 3 * 2 * 2
    assert len(set(CELLS)) == len(CELLS)
    for axis, values in AXES.items():
        assert {getattr(c, axis) for c in STRIDE} == set(values)


def test_fast_cells_equal_constructed_cells() -> None:
    for cell in CELLS[:50] + CELLS[-50:]:
        built = ThreatCell(**dataclasses.asdict(cell))
        assert built == cell and hash(built) == hash(cell)
        assert dataclasses.replace(cell, spatial=not cell.spatial) != cell
    assert sorted(CELLS[:100]) == sorted(CELLS[:100], key=dataclasses.astuple)


def test_cell_of_a_spec() -> None:
    spec = parse_spec({
        "name": "two-bounds", "task": "segmentation",
        "threat": {"consequence": {"kind": "dynamic_target", "remove_classes": [2]}, "scope": "universal",
                   "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.03}, {"kind": "output"}],
                   "model_knowledge": "white_box", "data_knowledge": "training",
                   "capability": {"spatial": {"kind": "box", "box": [0, 0, 0.5, 0.5]}}},
    })
    cells = space.cells_of(spec)
    assert [c.imperceptibility for c in cells] == ["lp:inf", "output"]
    assert space.cell_of(spec) == cells[0] == ThreatCell("segmentation", "dynamic_target", "universal", "lp:inf",
                                                         "white_box", "training", "digital", True)
    assert all(c in space.verdicts() for c in cells)


def test_representative_specs_parse_and_round_trip_to_their_cell() -> None:
    for cell in STRIDE:
        spec = spec_for_cell(cell)
        assert space.cell_of(spec) == cell
        assert spec.name.startswith("cell-")


def test_cell_facts_equal_the_parsed_spec_facts() -> None:
    for cell in STRIDE:
        fast, slow = space.facts_of_cell(cell), facts_of(spec_for_cell(cell))
        assert fast == slow, (cell, fast.diff(slow))


def test_factorised_verdicts_equal_direct_evaluation() -> None:
    for cell in STRIDE:
        assert cell_verdict(cell) == space.cell_verdict_direct(cell), cell


def test_verdicts_equal_validate_on_the_parsed_spec() -> None:
    for cell in CELLS[::97]:
        assert cell_verdict(cell) == validate(spec_for_cell(cell)), cell


def _facts_slots(f: Facts) -> dict[str, Any]:
    return {name: getattr(f, name) for name in Facts.__slots__}


def test_declared_slot_dependencies_hold() -> None:
    """Changing an axis a Facts slot is not declared to depend on leaves the slot unchanged."""
    rng = random.Random(0)
    for cell in rng.sample(CELLS, 150):
        base = _facts_slots(space.facts_of_cell(cell))
        for axis, values in AXES.items():
            for value in values:
                if value == getattr(cell, axis):
                    continue
                other = _facts_slots(space.facts_of_cell(dataclasses.replace(cell, **{axis: value})))
                for slot, deps in space.SLOT_AXES.items():
                    if axis not in deps:
                        assert base[slot] == other[slot], (slot, axis, cell)


class _Recorder:
    """Facts that remember which slots a predicate reads."""

    def __init__(self, facts: Facts) -> None:
        object.__setattr__(self, "_facts", facts)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name: str) -> Any:
        attr = getattr(Facts, name, None)
        if callable(attr):
            return attr.__get__(self)
        if isinstance(attr, property):
            return attr.fget(self)
        self.read.add(name)
        return getattr(self._facts, name)


def _odd_specs() -> list[Any]:
    base: dict[str, Any] = {
        "name": "odd", "task": "classification", "classes": ["a", "b", "c"],
        "threat": {"consequence": {"kind": "static_target", "target_class": "a"},
                   "scope": {"kind": "contextual", "context": {"field": "label", "in": ["a", "zz", 7]}},
                   "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": [0.0001, 0.9]},
                                        {"kind": "lp", "norm": "inf", "epsilon": 0.002},
                                        {"kind": "perceptual", "metric": "ssim", "threshold": 0.2},
                                        {"kind": "detector", "detectors": ["d"], "access": "black_box"}],
                   "model_knowledge": {"kind": "query_limited", "query_budget": 10, "granularity": "top_k", "k": 9},
                   "data_knowledge": "training",
                   "capability": {"feed": "physical", "quantize": True,
                                  "spatial": {"kind": "box", "box": [0, 0, 1, 1]}}},
        "strategy": {"model_basis": {"kind": "surrogate", "source": "pretrained"}},
        "input_space": {"bounds": [-1, 255], "epsilon_units": "pixel_255", "normalization": "in_data"},
    }
    second = {**base, "task": "detection",
              "threat": {**base["threat"], "scope": "universal",
                         "consequence": {"kind": "mislabel", "from_classes": ["b"], "to_class": "b"}},
              "input_space": {"bounds": [0, 255]}}
    third = {**base, "classes": None,
             "threat": {**base["threat"], "scope": "individual",
                        "consequence": {"kind": "dynamic_target", "rule": "class_map", "class_map": {"a": "a"}}},
             "strategy": {"model_basis": {"kind": "surrogate", "ensemble": 1}}}
    fourth = {"name": "odd4", "task": "classification", "classes": ["a", "b", "c"],
              "threat": {"consequence": {"kind": "dynamic_target", "rule": "class_map",
                                         "class_map": {"a": 7, "b": "zzz"}},
                         "scope": {"kind": "universal", "heldout_fraction": 0.7},
                         "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.9}],
                         "model_knowledge": "white_box", "data_knowledge": "training"}}
    fifth = {"name": "odd5", "task": "classification",
             "threat": {"consequence": "untargeted",
                        "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.003}],
                        "model_knowledge": "white_box",
                        "capability": {"quantize": True, "spatial": {"kind": "patch", "area_fraction": 0.05}}}}
    return [parse_spec(d) for d in (base, second, third, fourth, fifth)]


def test_predicates_read_only_declared_slots() -> None:
    facts = [space.facts_of_cell(c) for c in CELLS[::11]] + [facts_of(s) for s in _odd_specs()]
    for p in PREDICATES:
        fired = False
        for f in facts:
            recorder = _Recorder(f)
            fired |= bool(list(p.fn(recorder)))  # type: ignore[arg-type]
            assert recorder.read <= p.reads, (p.rule, recorder.read - p.reads)
        assert fired, f"no test facts make {p.rule} fire"


def test_odd_specs_trip_many_rules() -> None:
    found = set().union(*({v.id for v in validate(s)} for s in _odd_specs()))
    for rid in ("A20", "A21", "A22", "B5", "B11", "C5", "C8", "C9", "C13", "C16", "D2a", "D2b", "D2c", "D4", "D6",
                "D7", "D8", "D9", "D11", "D13", "E6", "E12", "F4", "F6", "I1"):
        assert any(f.startswith(rid + "-") for f in found), rid


def test_units_cover_every_rule_that_can_fire_in_cells() -> None:
    fired = {v.id for verdict in space.verdicts().values() for v in verdict}
    units = {u.rule for u in space.cell_units()}
    assert fired <= units
    assert {"C1-confusing-needs-spatial-output", "C10-detector-consequence-needs-detection",
            "E2-physical-needs-scene-artefact", "E3-physical-needs-shared-artefact",
            "B3-universal-needs-data-or-activations", "B4-contextual-needs-context-data",
            "B8-black-box-without-data-needs-pretrained", "D7-physical-small-lp",
            "G1-black-box-results-are-transfer-estimates"} <= fired


@pytest.mark.parametrize(("cell", "blocked_by"), [
    (ThreatCell("classification", "untargeted", "individual", "lp:inf", "white_box", "none", "digital", False), ()),
    (ThreatCell("classification", "confusing_target", "individual", "lp:inf", "white_box", "none", "digital", False),
     ("C1-confusing-needs-spatial-output",)),
    (ThreatCell("segmentation", "vanishing", "individual", "lp:2", "label_only", "none", "digital", False),
     ("C10-detector-consequence-needs-detection",)),
    (ThreatCell("detection", "vanishing", "universal", "lp:inf", "white_box", "training", "physical", True), ()),
    (ThreatCell("detection", "vanishing", "individual", "lp:inf", "white_box", "training", "physical", True),
     ("E3-physical-needs-shared-artefact",)),
    (ThreatCell("classification", "untargeted", "universal", "lp:inf", "output_transparent", "none", "digital", False),
     ("B3-universal-needs-data-or-activations",)),
    (ThreatCell("classification", "untargeted", "individual", "lp:inf", "full_black_box", "none", "digital", False),
     ("B8-black-box-without-data-needs-pretrained",)),
])
def test_known_cells(cell: ThreatCell, blocked_by: tuple[str, ...]) -> None:
    assert space.blocking_rules(cell) == blocked_by
    assert space.cell_feasible(cell) == (not blocked_by)


def test_white_box_digital_cell_is_clean() -> None:
    cell = ThreatCell("classification", "untargeted", "individual", "lp:inf", "white_box", "none", "digital", False)
    assert cell_verdict(cell) == []


def test_unknown_cell_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a cell"):
        cell_verdict(ThreatCell("audio", "untargeted", "individual", "lp:inf", "white_box", "none", "digital", False))


# --------------------------------------------------------------------------- realisers


def _catalog() -> dict[str, Any]:
    from taxonomy.graph import _default_catalog

    return dict(_default_catalog())


def test_realisers_agree_with_realises_on_representative_specs() -> None:
    catalog = _catalog()
    if not catalog:
        pytest.skip("no catalogue yet")
    every = space.all_realisers(catalog)
    for cell in CELLS[::37]:
        spec = spec_for_cell(cell)
        expected = tuple(i for i, d in catalog.items() if realises(spec, d))
        assert space.realisers(cell, catalog) == expected == every[cell], cell


def test_cell_descriptor_violations_agree_with_the_parsed_spec() -> None:
    catalog = _catalog()
    if not catalog:
        pytest.skip("no catalogue yet")
    pairs = [(cell, i) for cell, ids in space.all_realisers(catalog).items() for i in ids]
    assert pairs
    for cell, i in pairs[::5]:
        expected = descriptor_violations(spec_for_cell(cell), catalog[i])
        assert space.cell_descriptor_violations(cell, catalog[i]) == expected, (cell, i)


def test_feasible_realisers_break_no_error_rule() -> None:
    catalog = _catalog()
    for cell in CELLS[::53]:
        for i in space.feasible_realisers(cell, catalog):
            assert not [v for v in space.cell_descriptor_violations(cell, catalog[i]) if v.severity == "error"]


# --------------------------------------------------------------------------- census and time


def test_census_counts_and_time() -> None:
    space.clear_caches()
    start = time.process_time()
    result = space.census()
    cpu = time.process_time() - start
    assert result["cells"] == len(CELLS) == result["feasible"] + result["infeasible"]
    assert result["feasible"] == sum(space.cell_feasible(c) for c in CELLS)
    assert result["covered"] + result["gaps"] == result["feasible"]
    assert set(result["blocking_rules"]) <= {r for r in RULES if RULES[r].severity == "error"}
    assert 0 < result["feasible"] < result["cells"]
    assert cpu < 2.0, f"validating and realising every cell took {cpu:.2f} s of CPU"
