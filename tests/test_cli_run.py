"""`attackgen run` and `attackgen demo` end to end: the real planner, catalogue, attacks and digits model;
bad inputs exit 2 with one message naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from attackgen.cli.main import run_in_process as cli
from attackgen.plan.document import load_plan, save_plan
from attackgen.plan.planner import plan as make_plan
from attackgen.results import RunResult
from taxonomy.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
DEMO_SPEC = ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml"
LIMIT = "48"


def quick(plan):
    """The demo plan with fewer steps and queries, so the tests stay fast (the spec hash is unchanged)."""
    for item in plan.items:
        for key, value in (("steps", 10), ("n_queries", 100), ("restarts", 1)):
            if key in item.params:
                item.params[key] = value
    return plan


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    spec = load_spec(DEMO_SPEC)
    plan = make_plan(spec, max_primary=1)  # PGD and the gradient-free check at each epsilon
    assert plan.items, "the demo spec must plan runnable attacks"
    return save_plan(quick(plan), tmp_path_factory.mktemp("plan") / "plan.yaml")


def test_run_end_to_end_on_digits(plan_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("run", plan_file, "--model", "digits-cnn", "--data", "digits", "--limit", LIMIT, "-q", "-o", out) == 0
    printed = capsys.readouterr().out
    assert "robust accuracy" in printed and str(out / "report.html") in printed
    result = RunResult.model_validate_json((out / "results.json").read_text())
    assert result.complete and result.n_inputs == int(LIMIT) and result.model == "digits-cnn"
    assert result.clean_accuracy >= 0.95
    assert result.robust_accuracy <= result.clean_accuracy - 0.5  # eps 0.2 (the largest) breaks most inputs
    assert len(result.curve) == 3 and result.curve[0]["robust_accuracy"] >= result.curve[-1]["robust_accuracy"]
    assert result.versions["torch"].startswith(torch.__version__.split("+")[0])
    assert result.spec_hash == load_spec(DEMO_SPEC).spec_hash() and result.seed == 0
    for item in result.items:  # per-input records agree with the item's figures, and with the budget
        assert item.n_attacked == len(item.inputs) and item.n_success == sum(r.success for r in item.inputs)
        assert all(r.norms.linf <= item.epsilon + 1e-6 for r in item.inputs if r.success)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Robust accuracy vs epsilon" in html
    assert (out / "report.md").read_text().count("report_files/") == 2


def test_bad_model_exits_2_naming_it(plan_file, tmp_path, capsys):
    assert cli("run", plan_file, "--model", "no_such_pkg.models:build", "--data", "digits", "-o", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "no_such_pkg.models:build" in err and "fails to import" in err and "Traceback" not in err


def test_bad_data_exits_2_naming_the_file(plan_file, tmp_path, capsys):
    bad = tmp_path / "pixels.pt"
    torch.save({"x": torch.rand(4, 1, 16, 16) * 255, "y": torch.tensor([0, 1, 2, 3])}, bad)
    assert cli("run", plan_file, "--model", "digits-cnn", "--data", bad, "-o", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "divide them by 255" in err
    nan = tmp_path / "nan.npz"
    import numpy as np

    np.savez(nan, x=np.full((2, 1, 16, 16), np.nan, dtype=np.float32), y=np.array([0, 1]))
    assert cli("run", plan_file, "--model", "digits-cnn", "--data", nan, "-o", tmp_path / "o2") == 2
    assert "nan.npz: 2 inputs hold NaN" in capsys.readouterr().err


def test_plan_with_unknown_attack_or_edited_spec_exits_2(plan_file, tmp_path, capsys):
    data = yaml.safe_load(Path(plan_file).read_text())
    data["items"][0]["attack"] = "pgd_linfinity"
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump(data))
    assert cli("run", unknown, "--model", "digits-cnn", "-o", tmp_path / "o") == 2
    assert "unknown attack 'pgd_linfinity'" in capsys.readouterr().err
    data = yaml.safe_load(Path(plan_file).read_text())
    data["spec"]["threat"]["imperceptibility"][0]["epsilon"] = [0.5]
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data))
    assert cli("run", edited, "--model", "digits-cnn", "-o", tmp_path / "o") == 2
    assert "spec_hash" in capsys.readouterr().err


def test_output_folder_of_another_run_exits_2(plan_file, tmp_path, capsys):
    out = tmp_path / "shared"
    assert cli("run", plan_file, "--model", "digits-cnn", "--limit", "4", "-q", "-o", out) == 0
    before = (out / "results.json").read_text()
    plan = load_plan(plan_file)
    plan.items = plan.items[:1]
    other = save_plan(plan, tmp_path / "other.yaml")
    assert cli("run", other, "--model", "digits-cnn", "--limit", "4", "-q", "-o", out) == 2
    assert "holds another run" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before  # the first run is intact


def test_demo(tmp_path, capsys):
    from attackgen.cli.execute import _previous_demo

    out = tmp_path / "demo"
    assert cli("demo", "-o", out, "--limit", "16", "-q") == 0
    printed = capsys.readouterr().out
    for step in ("1. validate", "2. plan", "3. run", "4. report", "demo finished in"):
        assert step in printed
    assert (out / "report.html").exists() and (out / "plan.yaml").exists()
    spec_hash = load_spec(DEMO_SPEC).spec_hash()
    assert _previous_demo(out, spec_hash)  # a second demo may replace the first...
    assert not _previous_demo(out, "another-spec")  # ...but not another run
