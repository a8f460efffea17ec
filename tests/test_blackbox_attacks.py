"""Query-based and evolutionary attacks on the built-in digits CNN, through the counted oracles.

Every figure is re-measured here by running the model on the clipped output; the attacks' own
bookkeeping is never trusted. Batches are small so the file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from attackgen.models.zoo.data import load_digits_data
from attackgen.models.zoo.models import load_builtin_model
from attackgen.run.access import LabelOracle, ScoreOracle
from attackgen.run.attacks.base import AttackEnv, Budget
from attackgen.run.attacks.boundary import BoundaryAttack
from attackgen.run.attacks.cppn import CPPNEAFool
from attackgen.run.attacks.evolution import DifferentialEvolution
from attackgen.run.attacks.hopskipjump import HopSkipJump
from attackgen.run.attacks.simba import SimBA
from attackgen.run.attacks.square import SquareL2, SquareLinf
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.catalog import CATALOG
from taxonomy.errors import AttackgenError

TARGET = 3


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return load_builtin_model("digits-cnn")


@pytest.fixture(scope="module")
def test_data() -> Any:
    return load_digits_data("test")


@pytest.fixture(scope="module")
def basis() -> AttackEnv:
    train = load_digits_data("train")
    return AttackEnv(data_x=train.x, data_y=train.y)


def correct(model: nn.Module, data: Any, n: int, exclude: int | None = None) -> tuple[Tensor, Tensor]:
    """The first n test inputs the model classifies correctly (optionally none of class ``exclude``)."""
    with torch.no_grad():
        ok = model(data.x).argmax(1) == data.y
    if exclude is not None:
        ok &= data.y != exclude
    return data.x[ok][:n], data.y[ok][:n]


def predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x.clamp(0, 1)).argmax(1)


# ---------------------------------------------------------------------------- budget-checking oracles


class _Checker:
    """Counts every answered query per input on its own and fails the test on one beyond the budget.

    Mixed in before an oracle class: it wraps the oracle's ``__call__``."""

    answered: Tensor
    budget: int
    queries: Tensor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered = torch.zeros(self.queries.shape[0], dtype=torch.long)

    def __call__(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        out = super().__call__(x, rows)  # type: ignore[misc]
        counted = torch.arange(x.shape[0]) if rows is None else rows.cpu()
        self.answered.index_add_(0, counted, torch.ones_like(counted))
        assert int(self.answered.max()) <= self.budget, f"answered {self.answered.tolist()} > {self.budget}"
        return out

    def query_live(self, x: Tensor, rows: Tensor, live: Tensor) -> Tensor:
        """Rows answered with scores (not NaN) are the ones counted."""
        out = super().query_live(x, rows, live)  # type: ignore[misc]
        answered = ~out.isnan().flatten(1).all(dim=1).cpu()
        self.answered.index_add_(0, rows.cpu()[answered], torch.ones(int(answered.sum()), dtype=torch.long))
        assert int(self.answered.max()) <= self.budget, f"answered {self.answered.tolist()} > {self.budget}"
        return out


class CheckedScores(_Checker, ScoreOracle):
    pass


class CheckedLabels(_Checker, LabelOracle):
    pass


# Settings chosen so that no input can succeed early: each attack must stop at the budget by itself.
SCORE_CASES = [
    ("square_linf", SquareLinf(n_queries=10_000), Budget(norm="inf", epsilon=0.005), "top_k", 37),
    ("square_l2", SquareL2(n_queries=10_000), Budget(norm="2", epsilon=0.05), "logits", 37),
    ("simba_dct", SimBA(basis="dct"), Budget(norm="2", epsilon=0.05), "probabilities", 37),
    ("simba_pixel", SimBA(basis="pixel"), Budget(norm="inf", epsilon=0.005), "probabilities", 36),
    ("differential_evolution", DifferentialEvolution(popsize=8, maxiter=100), Budget(norm="0", epsilon=1),
     "probabilities", 37),
    ("cppn_ea_fool", CPPNEAFool(population=8, generations=100, confidence=1.01), Budget(norm=None), "probabilities",
     29),
]


@pytest.mark.parametrize(("name", "attack", "budget", "granularity", "queries"), SCORE_CASES,
                         ids=[c[0] for c in SCORE_CASES])
def test_score_attacks_never_exceed_the_budget(model: nn.Module, test_data: Any, name: str, attack: Any,
                                               budget: Budget, granularity: str, queries: int) -> None:
    x, y = correct(model, test_data, 5, exclude=TARGET)
    objective = ClassificationObjective(y, torch.full_like(y, TARGET)) if name == "cppn_ea_fool" else \
        ClassificationObjective(y)
    oracle = CheckedScores(model, len(x), granularity, k=3, budget=queries)
    out = attack.run(oracle, x, objective, budget)
    assert out.x_adv.shape == x.shape
    assert int(oracle.answered.max()) <= queries
    assert int(oracle.answered.min()) == queries  # no input could succeed, so each used its whole budget
    assert torch.equal(oracle.answered, oracle.queries)


DECISION_CASES = [
    ("boundary", BoundaryAttack(max_queries=10_000), False, 120),
    ("boundary_targeted", BoundaryAttack(max_queries=10_000), True, 120),
    ("hopskipjump", HopSkipJump(steps=50), False, 200),
    ("hopskipjump_targeted", HopSkipJump(steps=50), True, 200),
]


@pytest.mark.parametrize(("name", "attack", "targeted", "queries"), DECISION_CASES, ids=[c[0] for c in DECISION_CASES])
def test_decision_attacks_never_exceed_the_budget(model: nn.Module, test_data: Any, basis: AttackEnv, name: str,
                                                  attack: Any, targeted: bool, queries: int) -> None:
    x, y = correct(model, test_data, 5, exclude=TARGET)
    objective = ClassificationObjective(y, torch.full_like(y, TARGET) if targeted else None)
    oracle = CheckedLabels(model, len(x), budget=queries)
    out = attack.run(oracle, x, objective, Budget(norm="2", epsilon=None), basis)
    assert int(oracle.answered.max()) <= queries
    assert int(oracle.answered.min()) > queries // 2  # minimal-norm mode: they keep going until the budget
    pred = predict(model, out.x_adv)
    assert ((pred == TARGET) if targeted else (pred != y)).all()  # always adversarial, whatever the budget


# ---------------------------------------------------------------------------- label-only means labels only


class LabelsOnly:
    """A stand-in for the label oracle that fails the test on any use except asking for labels."""

    ALLOWED: ClassVar[set[str]] = {"queries", "budget", "remaining", "kind"}

    def __init__(self, model: nn.Module, n: int, budget: int | None = None) -> None:
        inner = LabelOracle(model, n, budget)
        object.__setattr__(self, "_inner", inner)

    def __call__(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        labels = object.__getattribute__(self, "_inner")(x, rows)
        assert labels.dtype == torch.long and labels.dim() == 1
        return labels

    def __getattribute__(self, name: str) -> Any:
        if name in ("__call__", "__class__", "__dict__") or name.startswith("__"):
            return object.__getattribute__(self, name)
        if name not in LabelsOnly.ALLOWED:
            raise AssertionError(f"a label-only attack asked its oracle for {name!r}")
        return getattr(object.__getattribute__(self, "_inner"), name)


@pytest.mark.parametrize("attack_cls", [BoundaryAttack, HopSkipJump])
def test_label_only_attacks_see_only_labels(model: nn.Module, test_data: Any, basis: AttackEnv,
                                            attack_cls: type) -> None:
    assert attack_cls.access == "labels"
    entry = next(d for d in CATALOG.values() if d.implementation.endswith(":" + attack_cls.__name__))
    assert entry.access == "labels"
    x, y = correct(model, test_data, 4, exclude=TARGET)
    for targets in (None, torch.full_like(y, TARGET)):
        oracle = LabelsOnly(model, len(x), budget=300)
        attack = attack_cls(max_queries=300, **({"steps": 3} if attack_cls is HopSkipJump else {}))
        out = attack.run(oracle, x, ClassificationObjective(y, targets), Budget(norm="2"), basis)  # type: ignore[arg-type]
        assert out.x_adv.shape == x.shape


# ---------------------------------------------------------------------------- effectiveness


def test_square_linf_drops_accuracy_by_40_points(model: nn.Module, test_data: Any) -> None:
    x, y = test_data.x[:32], test_data.y[:32]
    oracle = ScoreOracle(model, len(x), "probabilities", budget=1000)
    out = SquareLinf(n_queries=1000).run(oracle, x, ClassificationObjective(y), Budget(norm="inf", epsilon=0.1))
    x_adv = out.x_adv.clamp(0, 1)
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    clean = float((predict(model, x) == y).float().mean())
    robust = float((predict(model, x_adv) == y).float().mean())
    assert clean - robust >= 0.40, (clean, robust)
    assert int(oracle.queries.max()) <= 1000


def test_square_l2_and_simba_stay_in_the_l2_ball_and_fool(model: nn.Module, test_data: Any) -> None:
    x, y = correct(model, test_data, 12)
    for attack in (SquareL2(n_queries=500), SimBA(basis="dct", max_queries=500)):
        oracle = ScoreOracle(model, len(x), "probabilities", budget=500)
        out = attack.run(oracle, x, ClassificationObjective(y), Budget(norm="2", epsilon=1.5))
        assert float((out.x_adv - x).flatten(1).norm(dim=1).max()) <= 1.5 + 1e-4
        assert float((predict(model, out.x_adv) != y).float().mean()) >= 0.5, type(attack).__name__


def test_square_targeted_reaches_the_target(model: nn.Module, test_data: Any) -> None:
    x, y = correct(model, test_data, 8, exclude=TARGET)
    oracle = ScoreOracle(model, len(x), "logits", budget=1000)
    target = torch.full_like(y, TARGET)
    out = SquareLinf(n_queries=1000).run(oracle, x, ClassificationObjective(y, target), Budget(epsilon=0.2))
    assert float((predict(model, out.x_adv) == TARGET).float().mean()) >= 0.75


def test_hopskipjump_median_l2_within_twice_carlini_wagner(model: nn.Module, test_data: Any) -> None:
    fb = pytest.importorskip("foolbox")
    x, y = correct(model, test_data, 8)
    oracle = LabelOracle(model, len(x), budget=2000)
    out = HopSkipJump(steps=8).run(oracle, x, ClassificationObjective(y), Budget(norm="2", epsilon=None))
    assert (predict(model, out.x_adv) != y).all()
    hsj = (out.x_adv.clamp(0, 1) - x).flatten(1).norm(dim=1).median()
    _, cw_adv, cw_ok = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=4, steps=100)(
        fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None
    )
    assert bool(cw_ok.all())
    cw = (cw_adv - x).flatten(1).norm(dim=1).median()
    assert float(hsj) <= 2 * float(cw), (float(hsj), float(cw))


def test_hopskipjump_linf_and_fixed_epsilon_stop(model: nn.Module, test_data: Any) -> None:
    x, y = correct(model, test_data, 6)
    oracle = LabelOracle(model, len(x), budget=3000)
    out = HopSkipJump(steps=30).run(oracle, x, ClassificationObjective(y), Budget(norm="inf", epsilon=0.3))
    x_adv = out.x_adv.clamp(0, 1)
    assert float((x_adv - x).abs().max()) <= 0.3 + 1e-6
    assert (predict(model, x_adv) != y).all()
    assert int(oracle.queries.max()) < 3000  # every input met epsilon and stopped early


def test_cppn_reaches_target_confidence(model: nn.Module) -> None:
    target = torch.tensor([TARGET, TARGET, 7, 0])
    oracle = ScoreOracle(model, 4, "probabilities", budget=3000)
    x = torch.rand(4, 1, 16, 16)
    out = CPPNEAFool(population=32, generations=90, confidence=0.99).run(
        oracle, x, ClassificationObjective(torch.full_like(target, -1).clamp_min(0), target), Budget(norm=None)
    )
    with torch.no_grad():
        probs = model(out.x_adv.clamp(0, 1)).softmax(1)
    assert (probs.argmax(1) == target).all()
    assert (probs.gather(1, target[:, None]).squeeze(1) >= 0.99).all()
    # the images are synthesised: the same seed on other inputs of the same shape draws the same images
    again = CPPNEAFool(population=32, generations=90, confidence=0.99).run(
        ScoreOracle(model, 4, "probabilities", budget=3000), torch.zeros_like(x),
        ClassificationObjective(torch.zeros_like(target), target), Budget(norm=None),
    )
    assert torch.equal(again.x_adv, out.x_adv)


def test_differential_evolution_changes_at_most_its_pixels_inside_the_mask(model: nn.Module, test_data: Any) -> None:
    x, y = correct(model, test_data, 8)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8:, :] = 1.0
    oracle = ScoreOracle(model, len(x), "probabilities", budget=800)
    out = DifferentialEvolution(popsize=20, maxiter=40).run(
        oracle, x, ClassificationObjective(y), Budget(norm="0", epsilon=3, mask=mask)
    )
    delta = (out.x_adv - x).abs()
    assert int((delta > 0).flatten(1).sum(1).max()) <= 3
    assert float((delta * (1 - mask)).max()) == 0.0
    fooled = predict(model, out.x_adv) != y
    assert fooled.tolist() == out.info["success_in_attack"]


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("attack_cls", [BoundaryAttack, HopSkipJump])
def test_targeted_decision_attack_without_a_target_class_input_is_a_clear_error(
    model: nn.Module, test_data: Any, basis: AttackEnv, attack_cls: type
) -> None:
    x, y = correct(model, test_data, 3, exclude=TARGET)
    objective = ClassificationObjective(y, torch.full_like(y, TARGET))
    assert basis.data_y is not None and basis.data_x is not None
    keep = basis.data_y != TARGET
    no_target = AttackEnv(data_x=basis.data_x[keep], data_y=basis.data_y[keep])
    for env in (no_target, None, AttackEnv()):
        oracle = LabelOracle(model, len(x), budget=100)
        with pytest.raises(AttackgenError, match=r"threat\.consequence.*data basis"):
            attack_cls().run(oracle, x, objective, Budget(norm="2"), env)


@pytest.mark.parametrize("cap", [3, 30, 70, 150])
@pytest.mark.parametrize("norm", ["2", "inf"])
@pytest.mark.parametrize("targeted", [False, True])
def test_hopskipjump_never_exceeds_its_own_max_queries(model: nn.Module, test_data: Any, basis: AttackEnv,
                                                       cap: int, norm: str, targeted: bool) -> None:
    """max_queries below the oracle's budget caps every query path: start search, boundary search,
    gradient samples and step search (each input is counted by the oracle, not by the attack)."""
    x, y = correct(model, test_data, 4, exclude=TARGET)
    objective = ClassificationObjective(y, torch.full_like(y, TARGET) if targeted else None)
    oracle = CheckedLabels(model, len(x), budget=1000)
    out = HopSkipJump(steps=50, max_queries=cap, init_tries=20).run(oracle, x, objective,
                                                                     Budget(norm=norm, epsilon=None), basis)
    assert int(oracle.answered.max()) <= cap, oracle.answered.tolist()
    assert out.info["queries"] == oracle.answered.tolist()
    if cap >= 70:  # enough for a start and a few iterations: the cap is used, not skipped
        assert int(oracle.answered.min()) > cap // 2


def test_hopskipjump_boundary_search_below_float_resolution_stops(model: nn.Module, test_data: Any) -> None:
    """A tolerance (gamma / d^2) below float32 resolution, as on a segmentation input: the binary search
    must stop when the bracket cannot be halved, and never spend past max_queries (it used the oracle's
    whole budget before)."""
    x, y = correct(model, test_data, 3)
    oracle = CheckedLabels(model, len(x), budget=1000)
    out = HopSkipJump(steps=2, max_queries=499, gamma=1e-9).run(oracle, x, ClassificationObjective(y),
                                                                  Budget(norm="inf", epsilon=None))
    assert int(oracle.answered.max()) <= 499, oracle.answered.tolist()
    assert (predict(model, out.x_adv) != y).all()


@pytest.mark.parametrize("cap", [3, 30, 150])
def test_boundary_attack_never_exceeds_its_own_max_queries(model: nn.Module, test_data: Any, cap: int) -> None:
    """The Boundary attack's start and boundary searches respect max_queries too, not only the oracle."""
    x, y = correct(model, test_data, 4)
    oracle = CheckedLabels(model, len(x), budget=1000)
    BoundaryAttack(max_queries=cap, init_tries=20).run(oracle, x, ClassificationObjective(y),
                                                       Budget(norm="2", epsilon=None))
    assert int(oracle.answered.max()) <= cap, oracle.answered.tolist()
