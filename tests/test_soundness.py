"""Soundness checks: results-level flags (no torch) and model probes (masked gradients, randomness)."""

from __future__ import annotations

import pytest

from attackgen.audit.soundness import (
    BLACK,
    SINGLE,
    TRANSFER,
    UNKNOWN,
    WHITE,
    item_kind,
    run_flags,
    suite_flags,
)
from attackgen.results import ItemResult, RunResult

# --------------------------------------------------------------------------- results-level checks

SPEC = {
    "schema_version": 1,
    "name": "digits-linf",
    "task": "classification",
    "threat": {
        "consequence": {"kind": "untargeted", "reference": "ground_truth"},
        "scope": {"kind": "individual"},
        "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1, "mode": "fixed"}],
        "model_knowledge": {"kind": "white_box"},
        "data_knowledge": "none",
        "capability": {"feed": "digital"},
    },
    "input_space": {"bounds": [0.0, 1.0], "epsilon_units": "input_scale"},
}


def item(attack: str, after: float, n_attacked: int = 100, n_success: int = 0, **params) -> ItemResult:
    return ItemResult(
        attack=attack, params=params, n_attacked=n_attacked, n_success=n_success, robust_accuracy_after=after,
        success_rate=n_success / n_attacked if n_attacked else 0.0, time_s=0.1,
    )


def run(items, robust=None, curve=(), spec=SPEC, spec_hash="h0", model="m", n=100, clean=0.9) -> RunResult:
    return RunResult(
        complete=True,
        attackgen_version="0", spec=spec, spec_hash=spec_hash, plan_hash="p", task="classification", model=model,
        data="d", device="cpu", seed=0, versions={}, started="now", n_inputs=n, clean_accuracy=clean,
        robust_accuracy=items[-1].robust_accuracy_after if robust is None else robust, curve=list(curve),
        items=items,
    )


def spec_with(**threat):
    return {**SPEC, "threat": {**SPEC["threat"], **threat}}


def checks(flags):
    return sorted(f.check for f in flags)


def test_item_kinds_come_from_the_catalogue():
    assert item_kind("pgd_linf") == WHITE
    assert item_kind("fgsm") == SINGLE
    assert item_kind("bim", {"steps": 1}) == SINGLE
    assert item_kind("square_linf") == BLACK and item_kind("hopskipjump") == BLACK
    assert item_kind("transfer_mifgsm") == TRANSFER
    assert item_kind("pgd_linf", transfer_estimate=True) == TRANSFER
    assert item_kind("apgd_ce_future") == UNKNOWN  # not catalogued: never guessed from the name


def test_a_sound_run_raises_no_flag():
    result = run([item("pgd_linf", 0.40, 90, 50), item("square_linf", 0.40, 40, 0)])
    assert run_flags(result) == []


def test_square_beating_pgd_is_flagged_with_evidence_and_fix():
    result = run([item("pgd_linf", 0.60, 90, 30), item("square_linf", 0.45, 60, 15)])
    (flag,) = run_flags(result)
    assert flag.check == "black_box_beats_white_box"
    assert "square_linf broke 15 of the 60" in flag.evidence and "15.0 points" in flag.evidence
    assert "margin loss" in flag.fix


def test_square_winning_within_the_autoattack_margin_is_not_flagged():
    result = run([item("pgd_linf", 0.600, 900, 360), item("square_linf", 0.599, 540, 1)], n=1000)
    assert run_flags(result) == []


def test_fgsm_after_pgd_breaking_more_is_flagged():
    result = run([item("pgd_linf", 0.50, 90, 40), item("fgsm", 0.30, 50, 20)])
    assert checks(run_flags(result)) == ["single_step_beats_iterative"]


def test_rising_curve_is_flagged_and_falling_is_not():
    falling = [{"epsilon": e, "robust_accuracy": a} for e, a in [(0.05, 0.7), (0.1, 0.4), (0.2, 0.1)]]
    rising = [{"epsilon": e, "robust_accuracy": a} for e, a in [(0.05, 0.7), (0.1, 0.4), (0.2, 0.55)]]
    assert run_flags(run([item("pgd_linf", 0.1)], curve=falling)) == []
    (flag,) = run_flags(run([item("pgd_linf", 0.1)], curve=rising))
    assert flag.check == "accuracy_rises_with_epsilon" and "0.550 at epsilon 0.2" in flag.evidence


def test_flat_curve_over_a_wide_range_is_flagged():
    flat = [{"epsilon": e, "robust_accuracy": 0.8} for e in (0.01, 0.05, 0.1)]
    assert checks(run_flags(run([item("pgd_linf", 0.8)], curve=flat))) == ["flat_epsilon_curve"]
    # falls at first, then stays flat over a factor 4: still flagged, with the flat stretch as evidence
    tail = [{"epsilon": e, "robust_accuracy": a} for e, a in [(0.03, 0.9), (0.05, 0.625), (0.1, 0.625), (0.2, 0.625)]]
    (flag,) = run_flags(run([item("pgd_linf", 0.625)], curve=tail))
    assert flag.check == "flat_epsilon_curve" and "from epsilon 0.05 to 0.2" in flag.evidence
    done = [{"epsilon": e, "robust_accuracy": a} for e, a in [(0.03, 0.9), (0.05, 0.6), (0.1, 0.3), (0.2, 0.05)]]
    assert run_flags(run([item("pgd_linf", 0.05)], curve=done)) == []


def test_large_linf_budget_must_break_everything():
    curve = [{"epsilon": e, "robust_accuracy": a} for e, a in [(0.1, 0.5), (0.3, 0.3), (0.5, 0.2)]]
    (flag,) = run_flags(run([item("pgd_linf", 0.2)], curve=curve))
    assert flag.check == "large_budget_not_reaching_full_success" and flag.severity == "error"
    assert "0.200 at Linf epsilon 0.5" in flag.evidence
    done = [{"epsilon": e, "robust_accuracy": a} for e, a in [(0.1, 0.5), (0.3, 0.3), (0.5, 0.0)]]
    assert run_flags(run([item("pgd_linf", 0.0)], curve=done)) == []
    # targeted: half the range is not enough to reach every class; the whole range is
    targeted = spec_with(consequence={"kind": "static_target", "target_class": 3})
    assert run_flags(run([item("pgd_linf", 0.2)], curve=curve, spec=targeted, spec_hash="t")) == []


def test_large_budget_check_reads_pixel_units():
    spec = {**spec_with(imperceptibility=[{"kind": "lp", "norm": "inf", "epsilon": 200, "mode": "fixed"}]),
            "input_space": {"bounds": [0.0, 1.0], "epsilon_units": "pixel_255"}}
    assert checks(run_flags(run([item("pgd_linf", 0.3)], spec=spec, spec_hash="px"))) == [
        "large_budget_not_reaching_full_success"
    ]


def test_unbounded_minimal_norm_attack_must_reach_full_success():
    spec = spec_with(imperceptibility=[{"kind": "lp", "norm": "2", "mode": "minimal"}])
    assert checks(run_flags(run([item("cw_l2", 0.05)], spec=spec, spec_hash="min"))) == [
        "large_budget_not_reaching_full_success"
    ]
    assert run_flags(run([item("cw_l2", 0.0)], spec=spec, spec_hash="min")) == []


def test_suite_flags_black_box_run_beating_white_box_run():
    black = spec_with(model_knowledge={"kind": "output_transparent", "granularity": "probabilities"})
    runs = [
        run([item("pgd_linf", 0.60)], spec_hash="w"),
        run([item("square_linf", 0.30)], spec=black, spec_hash="b"),
        run([item("square_linf", 0.10)], spec=black, spec_hash="b", model="other-model"),  # other model
    ]
    ((members, flag),) = suite_flags(runs)
    assert members == [0, 1] and flag.check == "black_box_beats_white_box"
    assert "output_transparent run digits-linf on m reaches robust accuracy 0.300" in flag.evidence


def test_suite_flags_fgsm_run_beating_pgd_run_and_cross_run_curve():
    at = lambda eps: spec_with(imperceptibility=[{"kind": "lp", "norm": "inf", "epsilon": eps}])  # noqa: E731
    runs = [
        run([item("pgd_linf", 0.50)], spec=at(0.1), spec_hash="a"),
        run([item("fgsm", 0.40)], spec=at(0.1), spec_hash="a"),
        run([item("pgd_linf", 0.70)], spec=at(0.2), spec_hash="c"),  # more robust at a larger epsilon
    ]
    found = {flag.check: members for members, flag in suite_flags(runs)}
    assert found["single_step_beats_iterative"] == [0, 1]
    assert found["accuracy_rises_with_epsilon"] == [1, 2]


def test_suite_flags_leave_out_stopped_runs():
    black = spec_with(model_knowledge={"kind": "output_transparent", "granularity": "probabilities"})
    stopped = run([item("square_linf", 0.30)], spec=black, spec_hash="b")
    stopped.complete = False
    assert suite_flags([run([item("pgd_linf", 0.60)], spec_hash="w"), stopped]) == []


def test_suite_flags_quiet_on_consistent_runs():
    at = lambda eps: spec_with(imperceptibility=[{"kind": "lp", "norm": "inf", "epsilon": eps}])  # noqa: E731
    runs = [
        run([item("fgsm", 0.60)], spec=at(0.1), spec_hash="a"),
        run([item("pgd_linf", 0.50)], spec=at(0.1), spec_hash="a"),
        run([item("pgd_linf", 0.20)], spec=at(0.2), spec_hash="c"),
    ]
    assert suite_flags(runs) == []


# --------------------------------------------------------------------------- model probes (torch)

torch = pytest.importorskip("torch")
nn = torch.nn


class RoundGrad(torch.autograd.Function):
    """Quantise to 8 bits in the forward pass; the backward pass returns a zero gradient."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x * 255) / 255

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class Quantised(nn.Module):
    def __init__(self, model: nn.Module, mode: str = "function") -> None:
        super().__init__()
        self.model, self.mode = model, mode

    def forward(self, x):
        # "round": torch.round has a zero derivative everywhere
        x = RoundGrad.apply(x) if self.mode == "function" else torch.round(x * 4) / 4
        return self.model(x)


class Noisy(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x + 0.05 * torch.randn_like(x))


@pytest.fixture(scope="module")
def digits():
    from attackgen.models.zoo import load_builtin_data, load_builtin_model

    data = load_builtin_data("digits")
    return load_builtin_model("digits-cnn"), data.x[:64], data.y[:64]


def test_probe_is_quiet_on_the_plain_digits_cnn(digits):
    from attackgen.run.soundness_probe import probe_model

    model, x, y = digits
    assert probe_model(model, x, y) == []
    assert not model.training


@pytest.mark.parametrize("mode", ["function", "round"])
def test_probe_flags_a_quantising_layer_with_masked_gradients(digits, mode):
    from attackgen.run.soundness_probe import probe_model

    model, x, y = digits
    flags = probe_model(Quantised(model, mode), x, y)
    (flag,) = [f for f in flags if f.check == "zero_gradients"]
    assert flag.severity == "error" and "exactly zero" in flag.evidence
    assert "gradient-free" in flag.fix and "BPDA" in flag.fix


def test_probe_flags_a_detached_forward_pass(digits):
    from attackgen.run.soundness_probe import probe_model

    model, x, y = digits

    class Detached(nn.Module):
        def forward(self, inputs):
            return model(inputs.detach())

    (flag,) = probe_model(Detached(), x, y)
    assert flag.check == "zero_gradients" and "no gradient reaches it" in flag.evidence


def test_probe_flags_randomness_and_probabilities(digits):
    from attackgen.run.soundness_probe import probe_model

    model, x, y = digits
    assert [f.check for f in probe_model(Noisy(model), x, y)] == ["randomized_output"]
    probs = nn.Sequential(model, nn.Softmax(dim=1))
    assert "probability_outputs" in [f.check for f in probe_model(probs, x, y)]


def test_probe_flags_nonfinite_gradients(digits):
    from attackgen.run.soundness_probe import probe_model

    model, x, y = digits

    class Sqrt(nn.Module):
        def forward(self, inputs):
            return model(torch.sqrt(inputs))  # d/dx sqrt(x) is inf at the many zero pixels

    checks_raised = [f.check for f in probe_model(Sqrt(), x, y)]
    assert "nonfinite_gradients" in checks_raised


def test_probe_uses_the_objective_loss_and_skips_already_successful_inputs(digits):
    from attackgen.run.soundness_probe import probe_model

    model, x, y = digits

    class ClampedMargin:
        """A CW loss clamped at 0: flat (zero gradient) where the input is already misclassified."""

        def loss(self, outputs):
            true = outputs.gather(1, y.view(-1, 1)).squeeze(1)
            other = outputs.scatter(1, y.view(-1, 1), float("-inf")).amax(1)
            return (true - other).clamp_min(0)

        def success(self, outputs):
            return outputs.argmax(1) != y

        def subset(self, rows):
            return self

    assert probe_model(model, x, y, objective=ClampedMargin()) == []
    flags = probe_model(Quantised(model), x, y, objective=ClampedMargin())
    assert [f.check for f in flags] == ["zero_gradients"] and "objective's loss" in flags[0].evidence
