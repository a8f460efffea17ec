"""The Wasserstein distance, its projection and Wasserstein PGD on the digits model, and the executor's check.

The exact distance is the one every budget check relies on, so it is tested on transports whose cost
is known by hand; the projection and the attack are tested against it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from attackgen.cli.main import run_in_process as cli
from attackgen.plan.document import save_plan
from attackgen.plan.planner import plan as make_plan
from attackgen.results import RunResult
from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.wasserstein import WassersteinPGD
from attackgen.run.objectives.classification import ClassificationObjective
from attackgen.run.wasserstein import lambert_w_exp, project, wasserstein_distance
from taxonomy.errors import AttackgenError
from taxonomy.spec import load_spec

SPEC = "examples/specs/digits-wasserstein.yaml"


def image(*pixels: tuple[int, int, float], size: int = 8) -> torch.Tensor:
    out = torch.zeros(1, 1, size, size, dtype=torch.float64)
    for row, col, value in pixels:
        out[0, 0, row, col] = value
    return out


# ---------------------------------------------------------------------- the exact distance


def test_distance_is_the_hand_computed_transport_cost():
    x = image((2, 2, 1.0), (4, 4, 1.0))
    assert float(wasserstein_distance(x, x)[0]) == 0.0
    one_step = image((2, 3, 1.0), (4, 4, 1.0))  # half the mass moves one pixel: 0.5 * 1^2
    assert float(wasserstein_distance(x, one_step)[0]) == pytest.approx(0.5, abs=1e-9)
    diagonal = image((3, 3, 1.0), (4, 4, 1.0))  # half the mass moves (1, 1): 0.5 * (sqrt 2)^2
    assert float(wasserstein_distance(x, diagonal)[0]) == pytest.approx(1.0, abs=1e-9)
    assert float(wasserstein_distance(x, diagonal, p=1.0)[0]) == pytest.approx(0.5 * math.sqrt(2), abs=1e-9)
    spread = image((2, 1, 0.5), (2, 3, 0.5), (4, 4, 1.0))  # a quarter moves left, a quarter right
    assert float(wasserstein_distance(x, spread)[0]) == pytest.approx(0.5, abs=1e-9)


def test_distance_normalises_mass_and_refuses_moves_beyond_the_kernel():
    x = image((2, 2, 1.0), (4, 4, 1.0))
    dimmer = 0.7 * image((2, 3, 1.0), (4, 4, 1.0))  # same shape, another total: costs as the shift alone
    assert float(wasserstein_distance(x, dimmer)[0]) == pytest.approx(0.5, abs=1e-9)
    far = image((2, 7, 1.0), (4, 4, 1.0))  # five pixels away: no plan within a 5x5 kernel
    assert math.isinf(float(wasserstein_distance(x, far)[0]))
    # with room to move, the optimum swaps partners: (2,2)->(4,4) costs 0.5*8, (4,4)->(2,7) 0.5*13,
    # cheaper than moving (2,2)->(2,7) (0.5*25) and leaving (4,4) in place
    assert float(wasserstein_distance(x, far, kernel=11)[0]) == pytest.approx(10.5, abs=1e-9)


def test_lambert_w_matches_scipy():
    from scipy.special import lambertw

    log_z = torch.linspace(-40, 80, 997, dtype=torch.float64)
    reference = torch.from_numpy(np.real(lambertw(np.exp(log_z.numpy()))))
    assert torch.allclose(lambert_w_exp(log_z), reference, rtol=1e-12, atol=1e-300)


# ---------------------------------------------------------------------- the projection


@pytest.fixture(scope="module")
def digits(victim, test_set):
    x, y = test_set
    return victim, x[:32], y[:32]


def test_projection_lands_inside_the_ball_and_keeps_the_mass(digits):
    _, x, _ = digits
    x = x[:8].double()
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    previous = None
    for radius in (0.02, 0.1, 0.5):
        projected, _ = project(x, noisy, torch.full((8,), radius, dtype=torch.float64))
        cost = wasserstein_distance(x, projected)
        assert bool((cost <= radius * 1.01).all()), (radius, cost)
        assert torch.allclose(projected.flatten(1).sum(1), x.flatten(1).sum(1), rtol=1e-3)
        gap = (projected - noisy).flatten(1).norm(dim=1)
        if previous is not None:  # a larger ball reaches closer to the point projected
            assert bool((gap <= previous + 1e-6).all())
        previous = gap


# ---------------------------------------------------------------------- the attack


def test_wasserstein_pgd_breaks_digits_within_the_radius(digits):
    model, x, y = digits
    objective = ClassificationObjective(y, None)
    out = WassersteinPGD(steps=40, seed=0).run(WhiteBoxAccess(model, len(x)), x, objective,
                                               Budget(norm=None, wasserstein_radius=0.3))
    x_adv = out.x_adv.clamp(0, 1)
    cost = wasserstein_distance(x, x_adv)
    assert bool((cost <= 0.3 * (1 + 1e-6)).all()), cost.max()
    with torch.no_grad():
        fooled = objective.success(model(x_adv)).float().mean()
    assert float(fooled) >= 0.8  # measured 0.97-1.0 of correctly classified digits at radius 0.3, 40 steps


def test_wasserstein_pgd_needs_its_bound(digits):
    model, x, y = digits
    with pytest.raises(AttackgenError, match="wasserstein"):
        WassersteinPGD().run(WhiteBoxAccess(model, len(x)), x, ClassificationObjective(y, None), Budget(norm=None))


# ---------------------------------------------------------------------- through plan and run


def test_spec_plans_and_runs_with_every_candidate_checked_exactly(tmp_path, capsys):
    plan = make_plan(load_spec(SPEC))
    assert [i.attack for i in plan.items] == ["wasserstein_pgd"]
    plan.items[0].params["steps"] = 30
    path = save_plan(plan, tmp_path / "plan.yaml")
    out = tmp_path / "run"
    assert cli("run", path, "-m", "digits-cnn", "-d", "digits", "--limit", 32, "-q", "-o", out) == 0
    result = RunResult.model_validate_json((out / "results.json").read_text())
    item = result.items[0]
    assert result.robust_accuracy <= result.clean_accuracy - 0.6  # measured: 0.97 -> 0.0-0.1
    assert item.n_attacked == len(item.inputs) and item.n_success >= 10
    for record in item.inputs:  # every attacked input carries its exactly measured transport cost
        assert record.metrics["wasserstein"] <= 0.3 * (1 + 1e-6) or not record.success
    assert "wasserstein" in item.metrics


def test_an_edited_plan_may_not_widen_the_radius(tmp_path, capsys):
    plan = make_plan(load_spec(SPEC))
    path = save_plan(plan, tmp_path / "plan.yaml")
    document = yaml.safe_load(path.read_text())
    document["items"][0]["context"]["wasserstein_max"] = 5.0
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    assert cli("run", path, "-m", "digits-cnn", "-d", "digits", "--limit", 4, "-q", "-o", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "wasserstein_max" in err and "Traceback" not in err
