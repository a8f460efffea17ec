"""Dense tasks end to end through the CLI: every runnable street example plans and runs on the built-in
street models, and bad dense input (target maps, classes, detector output, confusing targets on a
classifier) is one message naming the field, exit code 2 (1 from validate for a broken rule), never a
traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from attackgen.cli.main import run_in_process as cli
from attackgen.plan.document import load_plan, save_plan
from attackgen.results import RunResult

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "specs"
SEG, DET = ("street-seg", "street-scenes"), ("street-det", "street-scenes-det")
OWN_MODEL = "YOUR OWN MODEL"  # the header of an example that needs the user's model and data

# Runnable example -> (model, data, a consequence metric the report must show).
RUNNABLE: dict[str, tuple[tuple[str, str], str]] = {
    "seg-street-untargeted": (SEG, "miou_ratio"),
    "seg-street-untargeted-scores": (SEG, "miou_ratio"),
    "seg-street-static-empty-street": (SEG, "pixel_agreement"),
    "seg-street-static-masked-road": (SEG, "pixel_agreement"),
    "seg-street-remove-pedestrians": (SEG, "removal_rate"),
    "seg-street-remove-pedestrians-universal": (SEG, "removal_rate"),
    "seg-street-confusing-cars": (SEG, "iou_moved"),
    "det-street-vanishing-person": (DET, "vanish_rate"),
    "det-street-vanishing-label-only": (DET, "vanish_rate"),
    "det-street-fabrication": (DET, "fabricated"),
    "det-street-mislabel-cars": (DET, "mislabel_rate"),
    "det-street-untargeted": (DET, "lost_fraction"),
    "det-street-patch-vanishing": (DET, "vanish_rate"),
    "det-fabrication-physical-patch": (DET, "fabricated"),
    "det-mislabel-detector-aware": (DET, "mislabel_rate"),
    "det-static-boxes": (DET, "target_boxes_matched"),
}
# The item a run keeps (default: the top-ranked one) and its --limit (default 4), where they differ.
ATTACK = {"seg-street-untargeted-scores": "square_linf"}  # what the header promises; HSJ spends every query
LIMIT = {"det-mislabel-detector-aware": 24}  # feature squeezing calibrates on >= 20 clean inputs
# Few steps and queries, so all of them together stay within seconds (the spec hash is unchanged).
QUICK = {"steps": 3, "fit_size": 16, "n_queries": 30, "max_queries": 30, "initial_num_evals": 10, "max_num_evals": 20,
         "epochs": 1, "eot_samples": 1, "restarts": 1}


def header(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))


def test_every_dense_example_runs_here_or_says_it_needs_your_model() -> None:
    dense = sorted(p.stem for p in EXAMPLES.glob("*.yaml") if p.stem.startswith(("seg-", "det-")))
    own = {name for name in dense if OWN_MODEL in header(EXAMPLES / f"{name}.yaml")}
    assert set(dense) == set(RUNNABLE) | own, "a dense example is neither tested here nor marked as a user's model"
    assert not own & set(RUNNABLE)
    for name in RUNNABLE:  # the header says how to run it on the built-ins
        (model, data), _ = RUNNABLE[name]
        assert f"--model {model} --data {data}" in header(EXAMPLES / f"{name}.yaml"), name


def test_every_dense_consequence_has_a_runnable_street_example() -> None:
    kinds: dict[str, set[str]] = {"segmentation": set(), "detection": set()}
    patch = False
    for name in RUNNABLE:
        spec = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        consequence = spec["threat"]["consequence"]
        kinds[spec["task"]].add(consequence if isinstance(consequence, str) else consequence["kind"])
        spatial = (spec["threat"].get("capability") or {}).get("spatial") or {}
        patch |= spec["task"] == "detection" and spatial.get("kind") == "patch"
    assert kinds["segmentation"] >= {"untargeted", "static_target", "dynamic_target", "confusing_target"}
    assert kinds["detection"] >= {"vanishing", "fabrication", "mislabel", "untargeted", "static_target"}
    assert patch


def quick_plan(spec: Path, tmp: Path, attack: str | None = None) -> Path:
    """`attackgen plan` through the CLI, then one item (the top-ranked, or ``attack``), with few steps."""
    full = tmp / "plan.yaml"
    assert cli("plan", spec, "-o", full) == 0
    plan = load_plan(full)
    plan.items = [item for item in plan.items if attack in (None, item.attack)][:1]
    for key, value in QUICK.items():
        if key in plan.items[0].params:
            plan.items[0].params[key] = value
    return save_plan(plan, tmp / "quick.yaml")


@pytest.mark.parametrize("name", sorted(RUNNABLE))
def test_street_example_plans_and_runs(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # target maps and masks are given relative to the repository root
    (model, data), metric = RUNNABLE[name]
    plan = quick_plan(EXAMPLES / f"{name}.yaml", tmp_path, ATTACK.get(name))
    limit = LIMIT.get(name, 4)
    out = tmp_path / "run"
    # Image-agnostic attacks fit on the test scenes already drawn, not on 4000 training scenes (12 s).
    basis = ["--basis-data", data] if load_plan(plan).strategy.get("data_basis") == "training" else []
    code = cli("run", plan, "--model", model, "--data", data, "--limit", limit, "-q", "-o", out, *basis)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = RunResult.model_validate_json((out / "results.json").read_text())
    assert result.complete and 1 <= result.n_inputs <= limit and result.model == model
    assert result.task == ("segmentation" if model == SEG[0] else "detection")
    [item] = result.items
    assert item.n_attacked == len(item.inputs) >= 1
    assert metric in item.metrics and np.isfinite(item.metrics[metric])
    assert all(metric in record.metrics for record in item.inputs)  # measured on each verified re-run
    assert item.n_success == sum(record.success for record in item.inputs)
    assert metric in (out / "report.md").read_text()


# --------------------------------------------------------------------------- bad input


def spec_file(tmp: Path, base: str, **threat: object) -> Path:
    data = yaml.safe_load((EXAMPLES / f"{base}.yaml").read_text())
    data["threat"].update(threat)
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def failing_run(spec: Path, tmp: Path, capsys: pytest.CaptureFixture[str], model: str, data: str) -> str:
    plan = quick_plan(spec, tmp)
    capsys.readouterr()
    code = cli("run", plan, "--model", model, "--data", data, "--limit", 2, "-q", "-o", tmp / "run")
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 2, text
    assert "Traceback" not in text
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.zeros((32, 32), dtype=np.int64), "the target map is 32x32 but the model's output is 64x64"),
        (np.full((64, 64), 9, dtype=np.int64), "the target map holds unknown class(es) 9; the model has 6 classes"),
    ],
    ids=["wrong-size", "unknown-class"],
)
def test_bad_target_map_exits_2_naming_the_field(array: np.ndarray, expected: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "target.npy", array)
    spec = spec_file(tmp_path, "seg-street-static-empty-street",
                     consequence={"kind": "static_target", "target_map": str(tmp_path / "target.npy")})
    message = failing_run(spec, tmp_path, capsys, *SEG)
    assert "threat.consequence.target_map" in message and expected in message


def test_class_to_remove_that_the_model_does_not_know(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((EXAMPLES / "seg-street-remove-pedestrians.yaml").read_text())
    del data["classes"]  # by index, the spec cannot tell; the model can
    data["threat"]["consequence"]["remove_classes"] = [7]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    message = failing_run(spec, tmp_path, capsys, *SEG)
    assert "threat.consequence.remove_classes: class 7 is not a class the model knows" in message
    assert "the model has 6 classes" in message


def test_class_name_the_model_lacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((EXAMPLES / "det-street-vanishing-person.yaml").read_text())
    data["classes"] = [*data["classes"], "bicycle"]
    data["threat"]["consequence"]["classes"] = ["bicycle"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    message = failing_run(spec, tmp_path, capsys, *DET)
    assert "--model street-det" in message and "'classes' field" in message and "bicycle" in message


class BoxesOnly(nn.Module):
    """A detector that returns one (N, K, 6) tensor (x0, y0, x1, y1, score, label), not torchvision's dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.mean(dim=(1, 2, 3)) * self.scale
        row = torch.stack([torch.zeros_like(score), torch.zeros_like(score), 8 + score, 8 + score, score,
                           torch.full_like(score, 4.0)], dim=1)
        return row[:, None, :]


def boxes_only() -> nn.Module:  # an entry point: test_dense_cli:boxes_only
    return BoxesOnly()


class DictsWithoutLabels(BoxesOnly):
    """Torchvision-like dicts, but without the 'labels' key."""

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:  # type: ignore[override]
        rows = super().forward(x)
        return [{"boxes": r[:, :4], "scores": r[:, 4]} for r in rows]


def dicts_without_labels() -> nn.Module:  # an entry point: test_dense_cli:dicts_without_labels
    return DictsWithoutLabels()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("test_dense_cli:boxes_only", "a detector must return a list with one dict per image"),
        ("test_dense_cli:dicts_without_labels", "missing key(s) labels"),
    ],
)
def test_detector_not_in_torchvision_format(entry: str, expected: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    spec = EXAMPLES / "det-street-vanishing-person.yaml"
    message = failing_run(spec, tmp_path, capsys, entry, DET[1])
    assert f"--model {entry}" in message and expected in message


def test_confusing_target_on_a_classifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = EXAMPLES / "invalid-confusing-classification.yaml"
    for verb in (("validate",), ("plan", "-o", tmp_path / "plan.yaml")):
        capsys.readouterr()
        code = cli(*verb[:1], spec, *verb[1:])
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert code == 1, text  # a broken rule (docs/cli.md), not a malformed file
        assert "C1-confusing-needs-spatial-output" in text and "threat.consequence" in text
        assert "Traceback" not in text
    assert not (tmp_path / "plan.yaml").exists()


def test_confusing_target_on_a_classifier_in_an_edited_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """`run` re-checks the rules: a plan edited to ask a classifier for a confusing target exits 2 naming C1."""
    from taxonomy.spec import parse_spec

    plan = tmp_path / "plan.yaml"
    assert cli("plan", ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml", "-o", plan) == 0
    data = yaml.safe_load(plan.read_text())
    data["spec"]["threat"]["consequence"] = {"kind": "confusing_target", "classes": [1], "shift": [4, 0]}
    data["spec_hash"] = parse_spec(data["spec"]).spec_hash()  # a consistent edit, not a stale hash
    plan.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    code = cli("run", plan, "--model", "digits-cnn", "--data", "digits", "--limit", 2, "-q", "-o", tmp_path / "run")
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert code == 2, text
    assert f"{plan}: the embedded spec breaks 1 rule(s)" in text
    assert "C1-confusing-needs-spatial-output at threat.consequence" in text and "Traceback" not in text
    assert not (tmp_path / "run" / "results.json").exists()
