"""The Python API (attackgen.api.evaluate) and `attackgen run --save-adversarial`, on the built-in digits CNN."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from attackgen.api import ArgumentError, PlanError, evaluate
from attackgen.cli.main import run_in_process
from attackgen.models.zoo import load_builtin_data, load_builtin_model
from taxonomy.errors import AttackgenError, SpecError

ROOT = Path(__file__).resolve().parents[1]
EPS = 0.1


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The digits CNN (not frozen: evaluate must leave the caller's model as it was) and 32 test inputs."""
    data = load_builtin_data("digits").take(slice(0, 32))
    return load_builtin_model("digits-cnn"), data.x, data.y


def check_final_inputs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                       success: torch.Tensor, eps: float) -> None:
    """What a user relies on: a success is inside the ball and the bounds and is misclassified by the model
    itself; every other input is the clean one."""
    with torch.no_grad():
        clean_wrong = model(x).argmax(1) != y
        adv_wrong = model(x_adv).argmax(1) != y
    linf = (x_adv - x).flatten(1).abs().amax(1)
    assert bool((linf[success] <= eps + 1e-6).all()), linf[success].max()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert torch.equal(x_adv[~success], x[~success])
    assert not bool((success & clean_wrong).any()), "an input misclassified clean is not an adversarial success"
    assert torch.equal(adv_wrong, success | clean_wrong)


def test_evaluate_breaks_the_digits_cnn_and_every_success_holds_up(digits: Any) -> None:
    model, x, y = digits
    training, flags = model.training, [p.requires_grad for p in model.parameters()]
    ev = evaluate(model, x, y, epsilon=EPS)
    assert ev.clean_accuracy >= 0.9
    assert ev.robust_accuracy <= ev.clean_accuracy - 0.5  # Linf 0.1 breaks this undefended CNN nearly everywhere
    assert ev.x_adv.dtype == x.dtype and ev.x_adv.device == x.device and ev.x_adv.shape == x.shape
    assert ev.success.dtype == torch.bool
    check_final_inputs(model, x, y, ev.x_adv, ev.success, EPS)
    assert abs(ev.robust_accuracy - (1 - float((ev.success | (model(x).argmax(1) != y)).float().mean()))) < 1e-9
    assert sum(ev.per_attack.values()) == int(ev.success.sum())
    assert ev.complete and ev.incomplete_reason is None and ev.run_folder is None
    assert ev.plan and ev.plan[0].startswith("apgd_ce")
    text = str(ev)
    assert f"robust accuracy at epsilon 0.1 {100 * ev.robust_accuracy:.1f}%" in text and "broken by: apgd_ce" in text
    assert model.training == training and [p.requires_grad for p in model.parameters()] == flags


def test_numpy_inputs_and_a_kept_run_folder_that_resumes(digits: Any, tmp_path: Path) -> None:
    model, x, y = digits
    out = tmp_path / "run"
    ev = evaluate(model, x[:16].numpy(), y[:16].numpy(), epsilon=[0.05, EPS], out=out, escalate=False)
    assert isinstance(ev.x_adv, torch.Tensor) and ev.run_folder == out
    for name in ("results.json", "report.md", "adversarial.npz", "checkpoint.pt"):
        assert (out / name).exists(), name
    assert [point["epsilon"] for point in ev.result.curve] == [0.05, EPS]
    check_final_inputs(model, x[:16], y[:16], ev.x_adv, ev.success, EPS)
    with pytest.raises(AttackgenError, match="already holds a finished run"):
        evaluate(model, x[:16], y[:16], epsilon=[0.05, EPS], out=out, escalate=False)
    again = evaluate(model, x[:16], y[:16], epsilon=[0.05, EPS], out=out, escalate=False, resume=True)
    assert torch.equal(again.x_adv, ev.x_adv) and again.robust_accuracy == ev.robust_accuracy
    with pytest.raises(AttackgenError, match="holds another run"):  # other inputs of the same size
        evaluate(model, x[16:], y[16:], epsilon=[0.05, EPS], out=out, escalate=False, resume=True)


def test_a_preset_plans_as_attackgen_plan_preset_does(digits: Any) -> None:
    model, x, y = digits
    ev = evaluate(model, x[:12], y[:12], epsilon=EPS, preset="autoattack-standard")
    assert [item.split()[0] for item in ev.plan] == ["apgd_ce", "apgd_t", "fab_t", "square_linf"]
    assert list(ev.per_attack) == ["apgd_ce", "apgd_t", "fab_t", "square_linf"]  # no escalation item was added
    assert ev.robust_accuracy <= ev.clean_accuracy - 0.5
    check_final_inputs(model, x[:12], y[:12], ev.x_adv, ev.success, EPS)


@pytest.mark.parametrize(("kwargs", "error", "named"), [
    ({"epsilon": EPS, "norm": "L3"}, ArgumentError, "norm"),
    ({"epsilon": -0.1}, ArgumentError, "epsilon"),
    ({}, ArgumentError, "epsilon"),
    ({"epsilon": EPS, "bounds": (1.0, 0.0)}, ArgumentError, "bounds"),
    ({"epsilon": EPS, "preset": "autoattack-standard", "norm": 0}, PlanError, "G3-preset-fits-threat-model"),
    ({"epsilon": EPS, "preset": "autoatack"}, ArgumentError, "preset"),
    ({"epsilon": EPS, "spec": str(ROOT / "examples/specs/digits-whitebox-linf.yaml")}, ArgumentError, "epsilon"),
    ({"spec": {"name": "no-threat", "task": "classification"}}, SpecError, "threat"),
])
def test_a_bad_argument_is_a_named_library_error(digits: Any, kwargs: dict[str, Any], error: type,
                                                 named: str) -> None:
    model, x, y = digits
    with pytest.raises(error, match=re.escape(named)) as raised:
        evaluate(model, x[:4], y[:4], **kwargs)
    assert isinstance(raised.value, AttackgenError)


def test_x_and_y_of_different_lengths_name_y(digits: Any) -> None:
    model, x, y = digits
    with pytest.raises(ArgumentError, match=r"evaluate\(y=...\): 3 labels for 4 inputs"):
        evaluate(model, x[:4], y[:3], epsilon=EPS)


def test_import_attackgen_loads_no_torch_and_the_api_does() -> None:
    code = ("import sys, attackgen; assert 'torch' not in sys.modules, 'torch imported';"
            "from attackgen.api import evaluate; assert 'torch' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def run_cli(*args: object) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = run_in_process(*args)
    return code, err.getvalue()


def test_save_adversarial_writes_what_results_json_counts(tmp_path: Path) -> None:
    spec = ROOT / "examples/specs/digits-whitebox-linf.yaml"
    plan = tmp_path / "plan.yaml"
    assert run_cli("plan", spec, "-o", plan, "--max-primary", "1")[0] == 0
    out = tmp_path / "run"
    code, err = run_cli("run", plan, "-m", "digits-cnn", "-n", 24, "-q", "--no-escalate", "--save-adversarial",
                        "-o", out)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert "adversarial.npz" in results["files"] and "x_adv" in results["files"]["adversarial.npz"]
    with np.load(out / "adversarial.npz") as saved:
        arrays = {k: saved[k] for k in saved.files}
    assert bool(arrays["complete"]) and arrays["x_adv"].shape == (24, 1, 16, 16)
    for k, item in enumerate(results["items"]):  # each input counts for the first item that broke it
        assert arrays["attacks"][k] == item["attack"]
        assert int((arrays["item"] == k).sum()) <= item["n_success"]
    success, item = arrays["success"], arrays["item"]
    assert np.array_equal(success, item >= 0)
    clean_wrong = arrays["clean_pred"] != arrays["label"]
    headline = results["metrics"]["headline_epsilon"]  # items run in rising epsilon: first success = smallest
    within = success & (arrays["epsilons"][item] <= headline + 1e-9)
    assert results["robust_accuracy"] == pytest.approx(1 - float((within | clean_wrong).mean()))
    model = load_builtin_model("digits-cnn")
    data = load_builtin_data("digits").take(slice(0, 24))
    x_adv = torch.from_numpy(arrays["x_adv"])
    with torch.no_grad():
        pred = model(x_adv).argmax(1).numpy()
    assert np.array_equal(pred[success], arrays["adv_pred"][success])
    assert (pred[success] != arrays["label"][success]).all()
    linf = (x_adv - data.x).flatten(1).abs().amax(1).numpy()
    assert (linf[success] <= arrays["epsilons"][item[success]] + 1e-6).all()
    # a finished run started without the option kept no inputs: resuming with it is refused, not half-written
    plain = tmp_path / "plain"
    assert run_cli("run", plan, "-m", "digits-cnn", "-n", 8, "-q", "--no-escalate", "-o", plain)[0] == 0
    code, err = run_cli("run", plan, "-m", "digits-cnn", "-n", 8, "-q", "--no-escalate", "--save-adversarial",
                        "--resume", "-o", plain)
    assert code == 2 and "started without --save-adversarial" in err
    assert not (plain / "adversarial.npz").exists()


def test_the_python_api_page_example_prints_what_it_shows() -> None:
    """docs/python-api.md: its first python block runs, and prints the text block under it."""
    from tests import doc_console

    page = (ROOT / "docs" / "python-api.md").read_text()
    code, shown = re.search(r"```python\n(.*?)```\n\nprints:?\n\n```text\n(.*?)```", page, re.S).groups()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "docs/python-api.md", "exec"), {"__name__": "docs_example"})
    assert doc_console.matches(shown.rstrip("\n").splitlines(), printed.getvalue()), printed.getvalue()
