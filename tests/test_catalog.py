"""The attack catalogue: every entry is well-formed, speaks the taxonomy's vocabulary, and realises a cell."""

from __future__ import annotations

import importlib
import json
import re

import pytest

from taxonomy import space
from taxonomy.axes import CONSEQUENCE_KINDS, SCOPE_KINDS, DataKnowledge, GradientSource, OptimizerKind, Task
from taxonomy.catalog import CATALOG, describe
from taxonomy.catalog_types import AttackDescriptor, Cost
from taxonomy.graph import realises

REQUIRED = {
    # the issue's "at least" list, by catalogue id
    "fgsm", "bim", "illc", "pgd_linf", "pgd_l2", "mifgsm", "cw_l2", "deepfool", "jsma", "fmn", "lbfgs",
    "newtonfool", "square_linf", "square_l2", "simba", "boundary", "hopskipjump", "differential_evolution",
    "cppn_ea_fool", "uap", "patch_eot", "transfer_mifgsm", "transfer_difgsm", "ssim_pgd", "metzen_seg",
    "metzen_uap", "det_vanishing",
}
IMPLEMENTATION = re.compile(r"^attackgen\.run\.attacks\.[a-z_][a-z0-9_]*:[A-Z][A-Za-z0-9]*$")
IMPERCEPTIBILITY = {"lp:inf", "lp:2", "lp:1", "lp:0", "perceptual:ssim", "perceptual:wasserstein",
                    "perceptual:lpips", "output", "detector", "unrestricted"}
ATLAS = {"AML.T0043.000", "AML.T0043.001", "AML.T0043.002", "AML.T0015", "AML.T0040", "AML.T0041", "AML.T0044",
         "AML.T0005"}
ENTRIES = list(CATALOG.values())


def test_every_attack_the_issue_asks_for_is_catalogued() -> None:
    assert set(CATALOG) >= REQUIRED, sorted(REQUIRED - set(CATALOG))
    assert all(key == d.id for key, d in CATALOG.items())


@pytest.mark.parametrize("d", ENTRIES, ids=lambda d: d.id)
def test_descriptor_uses_the_taxonomy_vocabulary(d: AttackDescriptor) -> None:
    assert IMPLEMENTATION.match(d.implementation), d.implementation
    assert d.tasks and d.tasks <= {t.value for t in Task}
    assert d.consequences and d.consequences <= set(CONSEQUENCE_KINDS)
    assert d.scopes and d.scopes <= set(SCOPE_KINDS)
    assert d.imperceptibility and d.imperceptibility <= IMPERCEPTIBILITY
    assert d.budget_modes and d.budget_modes <= {"fixed", "minimal"}
    assert d.access in ("gradients", "scores", "labels", "surrogate")
    assert d.optimizer in {o.value for o in OptimizerKind}
    assert d.gradient_source is None or d.gradient_source in {g.value for g in GradientSource}
    assert d.data_bases and d.data_bases <= {k.value for k in DataKnowledge}
    assert d.feeds and d.feeds <= {"digital", "physical"}
    assert 1 <= d.strength <= 10
    assert d.atlas and set(d.atlas) <= ATLAS and "AML.T0015" in d.atlas
    assert re.search(r"(19|20)\d\d", d.reference), "reference needs a year"
    assert d.title and d.backend in ("native", "foolbox")


@pytest.mark.parametrize("d", ENTRIES, ids=lambda d: d.id)
def test_cost_model_follows_access_and_parameters(d: AttackDescriptor) -> None:
    cost = d.expected_cost(d.defaults)
    assert isinstance(cost, Cost)
    assert min(cost.forward, cost.backward, cost.queries) >= 0
    if d.access in ("scores", "labels"):
        assert cost.queries > 0 and cost.passes == 0, "query attacks cost victim queries, not passes"
    elif d.access == "gradients":
        assert cost.queries == 0 and cost.backward > 0
    else:  # surrogate: passes on the surrogate, at most a few verification queries
        assert cost.passes > 0 and cost.queries <= 10
        assert d.expected_cost({**d.defaults, "verify_queries": 0}).queries == 0
    # more iterations never cost less
    for key in ("steps", "n_queries", "max_queries", "maxiter", "generations", "epochs"):
        if isinstance(d.defaults.get(key), int):
            bigger = d.expected_cost({**d.defaults, key: d.defaults[key] * 2})
            assert bigger.passes + bigger.queries >= cost.passes + cost.queries


@pytest.mark.parametrize("d", ENTRIES, ids=lambda d: d.id)
def test_atlas_ids_match_the_access_kind(d: AttackDescriptor) -> None:
    expected = {"gradients": "AML.T0043.000", "scores": "AML.T0043.001", "labels": "AML.T0043.001",
                "surrogate": "AML.T0043.002"}[d.access]
    assert expected in d.atlas
    if d.access in ("scores", "labels"):
        assert "AML.T0040" in d.atlas
    if "physical" in d.feeds:
        assert "AML.T0041" in d.atlas


@pytest.mark.parametrize("d", ENTRIES, ids=lambda d: d.id)
def test_descriptor_is_plain_data_for_json(d: AttackDescriptor) -> None:
    data = json.loads(json.dumps(describe(d)))
    assert data["id"] == d.id and data["implementation"] == d.implementation
    # the planner turns rel_stepsize into step_size; nothing else relative may hide in the defaults
    assert all(not k.startswith("rel_") or k == "rel_stepsize" for k in d.defaults)


def _realised_cells() -> dict[str, list[space.ThreatCell]]:
    found: dict[str, list[space.ThreatCell]] = {d.id: [] for d in ENTRIES}
    for cell in space.enumerate_cells():
        if not space.cell_feasible(cell):
            continue
        for attack in space.realisers(cell, CATALOG):
            found[attack].append(cell)
    return found


REALISED = _realised_cells()
@pytest.mark.parametrize("d", ENTRIES, ids=lambda d: d.id)
def test_each_attack_realises_a_feasible_cell(d: AttackDescriptor) -> None:
    cells = REALISED[d.id]
    assert cells, f"{d.id} realises no feasible threat cell"
    # and the answer agrees with realises() on the cell's representative spec
    spec = space.spec_for_cell(cells[0])
    assert realises(spec, d)


def test_implemented_attacks_exist_and_declare_the_catalogued_access() -> None:
    for d in ENTRIES:
        if not d.implemented:
            continue
        module_name, attr = d.implementation.split(":")
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
        assert getattr(cls, "access", None) == d.access, f"{d.id}: module access differs from the catalogue"


def test_implemented_attacks_take_the_catalogued_parameter_model() -> None:
    for d in ENTRIES:
        cls = getattr(importlib.import_module(d.implementation.split(":")[0]), d.implementation.split(":")[1])
        assert cls.params_model is d.params, f"{d.id}: module params_model differs from the catalogue"
        assert cls(seed=0).params == d.params(), f"{d.id}: the module does not start from the model's defaults"


@pytest.mark.parametrize("d", ENTRIES, ids=lambda d: d.id)
def test_parameter_model_round_trips_its_defaults(d: AttackDescriptor) -> None:
    """The defaults a plan is written with load back to the same model, through YAML-like plain data."""
    data = json.loads(json.dumps(d.defaults))
    assert d.params.model_validate(data) == d.params()
    assert d.params.model_validate(data).planned() == d.defaults
    assert not d.params.retired & set(d.params.model_fields), "a retired name must not also be a field"


@pytest.mark.parametrize("d", ENTRIES, ids=lambda d: d.id)
def test_parameter_model_refuses_unknown_and_out_of_range_values(d: AttackDescriptor) -> None:
    from taxonomy.params import param_problems

    name = next(iter(d.defaults))
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    problems = param_problems(d.id, d.params, {**d.defaults, typo: d.defaults[name]})
    assert problems == [f"params.{typo}: attack {d.id!r} has no parameter {typo!r} (did you mean {name!r}?)"]
    numeric = [k for k, v in d.defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for key in numeric:  # every number in a catalogue default has a range: -5 is outside all of them
        assert param_problems(d.id, d.params, {key: -5}), f"{d.id}.{key} accepts -5"
        assert param_problems(d.id, d.params, {key: "many"}), f"{d.id}.{key} accepts 'many'"


@pytest.mark.parametrize("d", ENTRIES, ids=lambda d: d.id)
def test_a_parameter_left_out_is_priced_at_the_models_default(d: AttackDescriptor) -> None:
    """A hand-edited plan item may leave parameters out; the attack then runs with its model's defaults,
    so the cost estimate (progress, budget checks) must use those same defaults, not a second copy."""
    assert d.expected_cost({}) == d.expected_cost(d.defaults)
    for name in d.defaults:
        assert d.expected_cost({k: v for k, v in d.defaults.items() if k != name}) == d.expected_cost(d.defaults), name
