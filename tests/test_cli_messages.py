"""What a user reads: the message for a wrong file or a misspelt model, --help, and names from files
shown literally (rich markup and matplotlib mathtext in them are text, not commands)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from attackgen.cli.main import run_in_process
from attackgen.results import Flag, RunResult

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml"
RESULTS = ROOT / "examples" / "suite" / "runs" / "digits-linf-curve" / "results.json"
MARKUP = "[/red]evil[/] [bold]x"


def test_run_given_a_spec_says_to_plan_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_in_process("run", SPEC, "--model", "digits-cnn", "-o", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2
    assert "is a spec" in err and f"attackgen plan {SPEC}" in err
    assert "problems" not in err and "unknown field" not in err
    assert not (tmp_path / "out").exists()


def test_run_given_an_infeasible_plan_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from attackgen.plan.planner import plan as make_plan
    from taxonomy.spec import load_spec

    infeasible = make_plan(load_spec(ROOT / "examples" / "specs" / "invalid-label-only-gradients.yaml"))
    (tmp_path / "plan.json").write_text(json.dumps(infeasible.to_data()), encoding="utf-8")
    assert run_in_process("run", tmp_path / "plan.json", "--model", "digits-cnn", "-o", tmp_path / "out") == 2
    assert "infeasible plan" in capsys.readouterr().err


def test_misspelt_model_gets_did_you_mean_before_data_is_required(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run_in_process("plan", SPEC, "-o", tmp_path / "plan.yaml") == 0
    capsys.readouterr()
    code = run_in_process("run", tmp_path / "plan.yaml", "--model", "digit-cnn", "-o", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2
    assert "did you mean 'digits-cnn'?" in err and "--data is required" not in err


def test_unknown_model_without_data_still_asks_for_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_in_process("plan", SPEC, "-o", tmp_path / "plan.yaml") == 0
    assert run_in_process("run", tmp_path / "plan.yaml", "--model", "mypkg.models:net") == 2
    assert "--data is required" in capsys.readouterr().err


def test_seed_beyond_64_bits_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_in_process("plan", SPEC, "-o", tmp_path / "plan.yaml") == 0
    code = run_in_process("run", tmp_path / "plan.yaml", "--model", "digits-cnn", "--seed", "9" * 30)
    assert code == 2
    assert "--seed" in capsys.readouterr().err


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    assert run_in_process(*command, "--help") == 0
    return " ".join(capsys.readouterr().out.split())  # rewrapped: compare words, not line breaks


def test_help_describes_every_option_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    run = _help(capsys, "run")
    assert "--seed INTEGER RANGE Seed for every random choice" in run
    assert ".pt2" in run and "are code" in run
    assert "Exit codes: 0 finished" in run and "130 stopped" in run and "2 a bad input" in run
    audit = _help(capsys, "audit")
    assert "Exit codes: 0 audited" in audit and "2 nothing in PATHS could be read" in audit
    catalog = _help(capsys, "catalog")
    assert "--format [table|json] table: a summary" in catalog
    demo = _help(capsys, "demo")
    assert "-o, --output DIRECTORY Output folder" in demo and "--device TEXT auto (CUDA when present)" in demo


# --------------------------------------------------------------------------- names from files, shown literally


def test_audit_table_shows_markup_in_model_names_and_flags_literally(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(RESULTS.read_text(encoding="utf-8"))
    data["model"] = MARKUP
    data["flags"] = [{"check": "x[/]", "severity": "warning", "evidence": MARKUP, "fix": "[/red]"}]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(data), encoding="utf-8")
    shutil.copy(SPEC, tmp_path / "spec.yaml")
    assert run_in_process("audit", tmp_path) == 0  # before: rich.errors.MarkupError
    out = capsys.readouterr().out
    assert "[/red]evil[/]" in out


def test_run_summary_shows_markup_in_flags_and_folder_literally(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    import attackgen.cli.execute as execute

    result = RunResult.model_validate_json(RESULTS.read_text(encoding="utf-8"))
    result.flags.append(Flag(check="[/]", severity="warning", evidence=MARKUP, fix="-"))
    buffer = io.StringIO()
    original = execute.__dict__.get("Console")
    assert original is None  # print_summary imports rich itself; patch rich's Console for the capture
    import rich.console

    real = rich.console.Console
    rich.console.Console = lambda **kw: Console(file=buffer, width=200)  # type: ignore[assignment,misc]
    try:
        execute.print_summary(result, Path("runs/[/]odd"))
    finally:
        rich.console.Console = real  # type: ignore[misc]
    text = buffer.getvalue()
    assert MARKUP in text and "runs/[/]odd/results.json" in text


def test_report_images_show_dollar_signs_in_class_names_literally() -> None:
    from attackgen.report.run_report import image_grid

    examples = {
        "index": np.array([0, 1]), "bounds": np.array([0.0, 1.0]),
        "classes": np.array(["$\\undefinedcmd$", "a $x$ b", *[str(i) for i in range(2, 10)]]),
        "clean": np.zeros((2, 1, 8, 8), np.float32), "adversarial": np.full((2, 1, 8, 8), 0.1, np.float32),
        "label": np.array([0, 1]), "clean_pred": np.array([0, 1]), "adv_pred": np.array([1, 0]),
        "attack": np.array(["pgd_linf", "$\\frac$"]),
    }
    figure = image_grid(examples)  # before: matplotlib ParseFatalException while drawing
    assert figure.png.startswith(b"\x89PNG")


def test_an_end_of_file_inside_a_command_is_not_reported_as_a_user_abort(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """click turns any EOFError into 'aborted' (exit 130, as for Ctrl-C); attackgen never prompts, so an
    EOFError is a defect to show, not the user stopping the command."""
    from attackgen.models import loading

    def cut_short(*args: object, **kwargs: object) -> None:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(loading, "load_data", cut_short)
    assert run_in_process("plan", SPEC, "-o", tmp_path / "plan.yaml") == 0
    with pytest.raises(EOFError, match="Compressed file ended"):
        run_in_process("run", tmp_path / "plan.yaml", "--model", "digits-cnn", "--data", "digits", "-o", tmp_path / "o")
    assert "aborted" not in capsys.readouterr().err
