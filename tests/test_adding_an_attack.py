"""docs/adding-an-attack.md, followed step by step with a toy attack: its parameter model, its module,
its catalogue entry; then plan, run on the digits model, and an edited plan with a typo refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import Field
from torch import Tensor

from attackgen.cli.main import run_in_process as cli
from attackgen.plan.document import load_plan, save_plan
from attackgen.plan.planner import FAST_CORE
from attackgen.plan.planner import plan as make_plan
from attackgen.results import RunResult
from attackgen.run.access import Access
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective
from taxonomy.catalog import CATALOG, register, unregister
from taxonomy.catalog_types import AttackDescriptor, Cost
from taxonomy.errors import SpecError
from taxonomy.params import StepParams
from taxonomy.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml"


# step 1: the parameter model (taxonomy/params.py) ---------------------------------------------------
class ToySignParams(StepParams):
    """Iterated signed-gradient steps; step = rel_stepsize * epsilon unless the plan gives step_size."""

    steps: int = Field(10, ge=1)
    rel_stepsize: float = Field(0.25, gt=0)


# step 2: the module (attackgen/run/attacks/toy_sign.py) -------------------------------------------------
class ToySign(Attack[ToySignParams]):
    """A few signed-gradient steps inside the budget: the smallest useful white-box attack."""

    access = "gradients"
    params_model = ToySignParams

    def run(self, access: Access, x: Tensor, objective: Objective, budget: Budget,
            env: AttackEnv | None = None) -> AttackOutput:
        step = self.params.step_for(budget.epsilon or 0.0)
        rows = torch.arange(x.shape[0], device=x.device)
        x_adv = x.clone()
        for _ in range(self.params.steps):
            x_adv.requires_grad_(True)
            loss = objective.loss(access(x_adv, rows)).sum()  # lower is better for the attacker
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = budget.project(x, x_adv.detach() - step * grad.sign())
        return AttackOutput(x_adv.detach())


# step 3: the catalogue entry (taxonomy/catalog.py) ------------------------------------------------------
TOY = AttackDescriptor(
    id="toy_sign",
    title="Toy signed-gradient attack (Linf)",
    implementation=f"{__name__}:ToySign",
    reference="docs/adding-an-attack.md",
    tasks=frozenset({"classification"}),
    consequences=frozenset({"untargeted", "static_target", "dynamic_target"}),
    scopes=frozenset({"individual"}),
    imperceptibility=frozenset({"lp:inf"}),
    budget_modes=frozenset({"fixed"}),
    access="gradients",
    optimizer="first_order",
    gradient_source="analytic",
    data_bases=frozenset({"none", "training", "surrogate"}),
    cost=lambda p: Cost(forward=p.steps + 1, backward=p.steps),
    params=ToySignParams,
    strength=10,  # ranks first, so the planner schedules it in this test
    atlas=("AML.T0043.000", "AML.T0044", "AML.T0015"),
)


@pytest.fixture(scope="module")
def toy() -> Iterator[AttackDescriptor]:
    register(TOY)
    yield TOY
    unregister(TOY.id)


@pytest.fixture(scope="module")
def toy_plan(toy, tmp_path_factory) -> Path:
    """Step 4: the planner schedules the toy attack; the gradient-free check is dropped to keep this fast.

    A white-box Linf spec runs the fast core (APGD-CE, then APGD-T) before any other gradient attack, so the
    catalogue here leaves it out: the toy is then the strongest attack for the cell."""
    catalog = {k: d for k, d in CATALOG.items() if k not in FAST_CORE}
    plan = make_plan(load_spec(SPEC), catalog=catalog, max_primary=1)
    assert [i.attack for i in plan.items if i.role == "primary"] == ["toy_sign"] * 3
    plan.items = [i for i in plan.items if i.attack == "toy_sign"]
    return save_plan(plan, tmp_path_factory.mktemp("toy") / "plan.yaml")


def test_the_class_and_the_entry_agree(toy) -> None:
    assert ToySign.params_model is toy.params and ToySign.access == toy.access
    assert toy.defaults == {"rel_stepsize": 0.25, "steps": 10}


def test_the_planner_writes_the_step_in_input_units(toy_plan) -> None:
    plan = load_plan(toy_plan)
    for item in plan.items:
        assert item.params["step_size"] == pytest.approx(0.25 * item.epsilon)
        assert item.context.norm == "inf" and "norm" not in item.params


def test_the_toy_attack_runs_on_digits_and_every_success_is_verified(toy_plan, tmp_path) -> None:
    out = tmp_path / "run"
    assert cli("run", toy_plan, "--model", "digits-cnn", "--limit", "32", "-q", "-o", out) == 0
    result = RunResult.model_validate_json((out / "results.json").read_text())
    assert {i.attack for i in result.items} == {"toy_sign"}
    assert result.clean_accuracy >= 0.9
    assert result.curve[-1]["robust_accuracy"] <= result.clean_accuracy - 0.5  # epsilon 0.2 breaks most inputs
    for item in result.items:
        assert item.n_success > 0
        assert all(r.norms.linf <= item.epsilon + 1e-6 for r in item.inputs if r.success)


@pytest.mark.parametrize(("edit", "expected"), [
    ({"stpes": 1}, "items[0].params.stpes: attack 'toy_sign' has no parameter 'stpes' (did you mean 'steps'?)"),
    ({"steps": -5}, "items[0].params.steps (attack 'toy_sign'): input should be greater than or equal to 1"),
    ({"steps": "many"}, "items[0].params.steps (attack 'toy_sign'): input should be a valid integer"),
])
def test_an_edited_plan_with_a_bad_parameter_is_refused_at_load(toy_plan, tmp_path, capsys, edit, expected) -> None:
    data = yaml.safe_load(toy_plan.read_text())
    data["items"][0]["params"].update(edit)
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as error:
        load_plan(edited)
    assert expected in str(error.value)
    assert cli("run", edited, "--model", "digits-cnn", "--limit", "8", "-q", "-o", tmp_path / "run") == 2
    captured = capsys.readouterr()
    assert expected in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "run" / "results.json").exists()
