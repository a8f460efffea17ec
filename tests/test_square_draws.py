"""Square's two draw modes: per_input (each input its own stream) and autoattack (the reference's stream).

The slow tests check ``draws: autoattack`` against the original code (fra31/auto-attack, PyPI
``pyautoattack``) on the built-in digits CNN: the same adversarial examples bit for bit and the same
query counts. The reference is never a dependency: those tests run where it is importable (``pip install
--no-deps --target .venv-aa/site pyautoattack`` in the worktree, or an environment that has it) and are
skipped elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import Tensor, nn

from attackgen.run.access import ScoreOracle
from attackgen.run.attacks import _square_aa as aa
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.square import SquareL1, SquareL2, SquareLinf
from attackgen.run.objectives.classification import ClassificationObjective
from tests.reference_autoattack import reference_module


def reference() -> ModuleType | None:
    return reference_module("square")


class Recorder(nn.Module):
    """The victim, keeping a copy of every batch it is asked about."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []  # type: ignore[var-annotated]

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_torch_cpu_uniform_stream_is_the_same_in_one_draw_or_many() -> None:
    """The autoattack mode buffers the reference's many small draws into a few large ones: exact only while
    torch's CPU generator yields the same stream either way (a torch upgrade that breaks this fails here)."""
    sizes = [1, 1, 3, 1, 1, 1, 1, 1, 40, 17, 250, 1, 5000, 2]
    gen = torch.Generator().manual_seed(0)
    many = torch.cat([torch.rand(k, generator=gen) for k in sizes])
    torch.manual_seed(0)
    reference_calls = torch.cat([torch.rand(k) for k in sizes])  # what the reference does
    stream = aa.Stream(0)
    buffered = torch.cat([stream.take(k) for k in sizes])
    assert torch.equal(many, reference_calls)
    assert torch.equal(buffered, reference_calls)


def _run(victim: nn.Module, x: Tensor, y: Tensor, draws: str, eps: float = 0.1, queries: int = 60,
         budget: int | None = None) -> tuple[Tensor, list[int]]:
    attack = SquareLinf(n_queries=queries, p_init=0.8, draws=draws)
    oracle = ScoreOracle(victim, len(x), "logits", budget=budget or queries + 1)
    out = attack.run(oracle, x, ClassificationObjective(y), Budget(norm="inf", epsilon=eps))
    return out.x_adv, out.info["queries"]


def test_autoattack_draws_repeat_exactly_whatever_the_global_generator(victim, test_set) -> None:
    x, y = test_set[0][:32], test_set[1][:32]
    torch.manual_seed(1)
    first, q1 = _run(victim, x, y, "autoattack")
    torch.manual_seed(2)
    torch.rand(7)  # the global generator moved: the mode's own generator is seeded per call
    again, q2 = _run(victim, x, y, "autoattack")
    assert torch.equal(first, again) and q1 == q2
    assert float((first - x).abs().max()) <= 0.1 + 1e-6
    with torch.no_grad():
        assert (victim(first).argmax(1) != y).sum() >= 3  # it attacks: some inputs broken in 60 queries


def _changed_box(seen: list[Tensor]) -> tuple[int, int]:
    """Height and width of the box around every pixel the first proposal changed, over the whole batch."""
    changed = (seen[1] != seen[0]).any(dim=1).any(dim=0)  # (h, w): changed for some input, some channel
    rows, cols = changed.any(dim=1).nonzero(), changed.any(dim=0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_autoattack_draws_share_one_window_across_the_batch_per_input_draws_do_not(victim, test_set) -> None:
    x, y = test_set[0][:48], test_set[1][:48]
    side = aa.side(0.8, *x.shape[1:], 1)  # the first proposal's square: 80 % of the pixels
    boxes = {}
    for draws in ("autoattack", "per_input"):
        recorder = Recorder(victim)
        _run(recorder, x, y, draws, queries=1 if draws == "autoattack" else 2)  # autoattack: n_queries + 1
        assert len(recorder.seen) == 2 and recorder.seen[1].shape[0] > 1  # the start, then one proposal
        boxes[draws] = _changed_box(recorder.seen)
    assert max(boxes["autoattack"]) <= side
    assert max(boxes["per_input"]) > side  # each input its own window: together they cover more


def test_autoattack_draws_stop_at_the_oracles_query_budget(victim, test_set) -> None:
    x, y = test_set[0][:16], test_set[1][:16]
    x_adv, queries = _run(victim, x, y, "autoattack", eps=0.02, queries=200, budget=25)
    assert max(queries) == 25 and min(queries) >= 1
    assert float((x_adv - x).abs().max()) <= 0.02 + 1e-6


N, QUERIES = 128, 400


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "eps", "rescale"), [("Linf", 0.1, True), ("Linf", 0.1, False), ("L2", 1.0, True),
                                                      ("L2", 1.0, False), ("L1", 5.0, False)])
def test_autoattack_draws_equal_the_reference(victim, test_set, norm: str, eps: float, rescale: bool) -> None:
    """Same inputs, batch and model: the reference's adversarial examples bit for bit, and its query counts
    (rescale False: the schedule AutoAttack itself runs Square with)."""
    module = reference()
    if module is None:
        pytest.skip("the reference AutoAttack (pyautoattack) is not importable here")
    x, y = test_set[0][:N], test_set[1][:N]
    ref = module.SquareAttack(victim, norm=norm, n_queries=QUERIES, eps=eps, p_init=0.8, seed=0, device="cpu",
                              resc_schedule=rescale)
    ref.init_hyperparam(x)
    torch.manual_seed(0)  # as its perturb does before each batch
    ref_queries, theirs = ref.attack_single_run(x.clone(), y.clone())
    attack = {"Linf": SquareLinf, "L2": SquareL2, "L1": SquareL1}[norm](
        n_queries=QUERIES, p_init=0.8, draws="autoattack", rescale_schedule=rescale)
    oracle = ScoreOracle(victim, N, "logits", budget=QUERIES + 1)
    ours = {"Linf": "inf", "L2": "2", "L1": "1"}[norm]
    out = attack.run(oracle, x, ClassificationObjective(y), Budget(norm=ours, epsilon=eps))
    assert torch.equal(out.x_adv, theirs)
    assert out.info["queries"] == ref_queries.long().tolist()
    with torch.no_grad():
        broken = int((victim(out.x_adv).argmax(1) != y).sum())
    assert broken >= N // 8  # both actually attack


L1_SPEC = """name: digits-l1-scores
task: classification
classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
threat:
  consequence: untargeted
  scope: individual
  imperceptibility:
    - {kind: lp, norm: 1, epsilon: 8.0}
  model_knowledge: {kind: output_transparent, granularity: logits}
  data_knowledge: none
  capability: {feed: digital}
input_space: {bounds: [0, 1], layout: NCHW, normalization: inside_model, epsilon_units: input_scale}
"""


def run_square_l1_plan(tmp_path: Path, preset: list[str], draws: str, max_queries: int) -> None:
    """Plan the L1 spec (the planner's choice or a preset), shorten its one square_l1 item to 300 queries,
    run it through the CLI on the digits CNN and check the run's own verification (the final clipped input
    re-run and re-measured): it breaks at least half the inputs, each success within the L1 ball."""
    import json

    from attackgen.cli.main import run_in_process
    from attackgen.plan.document import load_plan, save_plan

    spec = tmp_path / "spec.yaml"
    spec.write_text(L1_SPEC)
    assert run_in_process("plan", spec, *preset, "-o", tmp_path / "plan.yaml") == 0
    plan = load_plan(tmp_path / "plan.yaml")
    assert [(i.attack, i.params["draws"]) for i in plan.items] == [("square_l1", draws)]
    plan.items[0].params["n_queries"] = 300  # the plan's 5,000, shortened for a test
    save_plan(plan, tmp_path / "plan.yaml")
    assert run_in_process("run", tmp_path / "plan.yaml", "--model", "digits-cnn", "--data", "digits", "-n", "32",
                          "-o", tmp_path / "out") == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["clean_accuracy"] - result["robust_accuracy"] >= 0.5
    wins = [i for i in result["items"][0]["inputs"] if i["success"]]
    assert wins and all(i["within_budget"] and i["norms"]["l1"] <= 8.0 * (1 + 1e-5) for i in wins)
    assert max(i["queries"] for i in result["items"][0]["inputs"]) <= max_queries


def test_square_l1_lowers_accuracy_within_the_verified_l1_budget(tmp_path: Path) -> None:
    """The autoattack-square preset on an L1 budget runs square_l1 with the reference's draws (its initial
    point is one more query)."""
    run_square_l1_plan(tmp_path, ["--preset", "autoattack-square"], "autoattack", 301)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_input_l2_tables_give_the_same_search_as_building_each_proposal(victim, test_set, monkeypatch,
                                                                            dtype: torch.dtype) -> None:
    """Per-input L2 reads its windows and bumps from cached tables (a speed-up): the adversarial examples
    and query counts must be bit for bit those of the proposals built per query (the code before the
    tables, still the path for images too big for a table), on the digits CNN at a fixed seed."""
    from attackgen.run.attacks import square

    x, y = test_set[0][:48].to(dtype), test_set[1][:48]
    model = victim.to(dtype)

    def attack() -> tuple[Tensor, list[int], list[bool]]:
        oracle = ScoreOracle(model, len(x), "logits", budget=250)
        out = SquareL2(n_queries=250, p_init=0.8, seed=3).run(oracle, x, ClassificationObjective(y),
                                                              Budget(norm="2", epsilon=1.0))
        return out.x_adv, out.info["queries"], out.info["success_in_attack"]

    try:
        assert square._placed_bumps(16, 16, 3, x.device) is not None  # the digits use the tables
        tables = attack()
        monkeypatch.setattr(square, "_placed_bumps", lambda *args: None)  # built per query
        built = attack()
    finally:
        victim.to(torch.float32)
    assert torch.equal(tables[0], built[0])
    assert tables[1:] == built[1:]
    assert 0 < sum(tables[2]) < len(x)  # the search both succeeds and fails: the comparison covers both


def test_square_l1_per_input_lowers_accuracy_within_the_verified_l1_budget(tmp_path: Path) -> None:
    """The planner's square_l1 (per-input draws, the default) on an L1 budget."""
    run_square_l1_plan(tmp_path, [], "per_input", 300)
