"""ONNX models through ONNX Runtime (extra [onnx]): the digits CNN exported to ONNX is attacked as a score
oracle (Square) and a label oracle (HopSkipJump) end to end, within the query budget; a white-box spec on it
is refused before anything runs, with the fix. Skips cleanly where onnxruntime/onnx are not installed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from attackgen.cli.main import run_in_process as cli
from attackgen.models.loading import load_model
from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.document import save_plan
from attackgen.plan.planner import plan as make_plan
from attackgen.results import RunResult
from taxonomy.spec import parse_spec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def spec(name: str, knowledge: object, norm: object = "inf", epsilon: float | None = 0.1) -> dict:
    bound = {"kind": "lp", "norm": norm, "epsilon": epsilon} if epsilon else {"kind": "lp", "norm": norm,
                                                                              "mode": "minimal"}
    data = {"name": name, "task": "classification",
            "threat": {"consequence": "untargeted", "imperceptibility": [bound], "model_knowledge": knowledge,
                       "data_knowledge": "none"},
            "input_space": {"bounds": [0, 1]}}
    if knowledge != "white_box":
        data["strategy"] = {"model_basis": "victim"}
    return data


def save(data: dict, folder: Path) -> Path:
    return save_plan(make_plan(parse_spec(data, "test"), max_primary=1), folder / f"{data['name']}.yaml")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    model = load_builtin_model("digits-cnn").eval()
    x = load_builtin_data("digits").x[:2]
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path


def test_onnx_model_answers_like_the_torch_model(onnx_file):
    x = load_builtin_data("digits").x[:64]
    with torch.no_grad():
        expected = load_builtin_model("digits-cnn")(x)
    got = load_model(str(onnx_file))(x)
    assert not got.requires_grad and torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("name,knowledge,budget,norm,epsilon", [
    ("onnx-square", {"kind": "query_limited", "query_budget": 300, "granularity": "logits"}, 300, "inf", 0.1),
    ("onnx-hsj", {"kind": "label_only", "query_budget": 400}, 400, 2, None),
])
def test_black_box_attacks_on_onnx_hold_the_budget(onnx_file, tmp_path, name, knowledge, budget, norm, epsilon):
    plan = save(spec(name, knowledge, norm, epsilon), tmp_path)
    out = tmp_path / "run"
    assert cli("run", plan, "--model", onnx_file, "--data", "digits", "--limit", "6", "-q", "-o", out) == 0
    result = RunResult.model_validate_json((out / "results.json").read_text())
    assert result.complete and result.clean_accuracy > 0.8
    assert sum(item.n_success for item in result.items) > 0
    for item in result.items:
        assert all(0 < r.queries <= budget for r in item.inputs)


def test_white_box_spec_on_onnx_is_refused_with_the_fix(onnx_file, tmp_path, capsys):
    plan = save(spec("onnx-white", "white_box"), tmp_path)
    code = cli("run", plan, "--model", onnx_file, "--data", "digits", "--limit", "4", "-q", "-o", tmp_path / "o")
    err = capsys.readouterr().err
    assert code == 2 and "white_box" in err and "onnx2torch" in err and "ONNX Runtime" in err
    assert not (tmp_path / "o" / "results.json").exists()
