"""The run report and the plan read the way a user needs: examples from every attack that broke inputs
(flagged first), class names from the spec, metrics explained, no empty header; the plan's 'not
scheduled' list holds only attacks that are not scheduled; the catalogue fits 80 columns."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from attackgen.cli.main import run_in_process
from attackgen.plan.planner import plan as make_plan
from attackgen.report.run_report import pick_examples, write_report
from attackgen.results import RunResult
from taxonomy.catalog import CATALOG
from taxonomy.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "examples" / "suite" / "runs" / "digits-linf-curve" / "results.json"


def _examples(attacks: list[str], classes: list[str]) -> dict[str, np.ndarray]:
    n = len(attacks)
    return {
        "index": np.arange(n), "bounds": np.array([0.0, 1.0]), "classes": np.array(classes),
        "clean": np.zeros((n, 1, 8, 8), np.float32), "adversarial": np.full((n, 1, 8, 8), 0.1, np.float32),
        "label": np.arange(n) % 10, "clean_pred": np.arange(n) % 10, "adv_pred": (np.arange(n) + 1) % 10,
        "attack": np.array(attacks), "epsilon": np.full(n, 0.1),
    }


def _result(flag_evidence: str | None = None) -> RunResult:
    result = RunResult.model_validate_json(RESULTS.read_text(encoding="utf-8"))
    result.spec["classes"] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    if flag_evidence:
        from attackgen.results import Flag

        result.flags.append(Flag(check="gradient_masking", evidence=flag_evidence, fix="-"))
    return result


def test_examples_come_from_every_attack_flagged_first() -> None:
    examples = _examples(["pgd_linf"] * 8 + ["square_linf"] * 2 + ["fmn"], [str(i) for i in range(10)])
    picked = pick_examples(examples, _result("square_linf broke 2 inputs the gradient attacks did not"), limit=6)
    attacks = [str(a) for a in picked["attack"]]
    assert attacks[0] == "square_linf"  # before: the first 8 examples, all pgd_linf
    assert set(attacks) == {"pgd_linf", "square_linf", "fmn"}
    assert len(attacks) == 6 and len(picked["clean"]) == 6 and len(picked["index"]) == 6


def test_class_names_come_from_the_spec_when_the_data_has_none() -> None:
    picked = pick_examples(_examples(["pgd_linf"], [str(i) for i in range(10)]), _result())
    assert list(picked["classes"])[:2] == ["zero", "one"]
    named = pick_examples(_examples(["pgd_linf"], ["cat", "dog"] + [str(i) for i in range(8)]), _result())
    assert list(named["classes"])[:2] == ["cat", "dog"]  # the data's own names win


def test_report_explains_metrics_and_has_no_empty_header(tmp_path: Path) -> None:
    data = json.loads(RESULTS.read_text(encoding="utf-8"))
    data["items"][0]["metrics"].update({"adv_confidence": 0.9, "margin_drop": 3.5})
    (tmp_path / "results.json").write_text(json.dumps(data), encoding="utf-8")
    np.savez(tmp_path / "examples.npz", **_examples(["pgd_linf", "square_linf"], [str(i) for i in range(10)]))
    md_path, html_path = write_report(tmp_path)
    md = md_path.read_text(encoding="utf-8")
    assert "`adv_confidence`: the model's probability" in md
    assert "`margin_drop`: how far the attack pushed the logit margin" in md
    assert "<code>margin_drop</code>" in html_path.read_text(encoding="utf-8")
    assert not re.search(r"^\|\s*\|\s*\|$", md, flags=re.M)  # before: '|  |  |' above the summary
    assert "taken in turn from each attack that broke inputs (pgd_linf, square_linf)" in md


def test_plan_does_not_list_a_scheduled_attack_as_not_scheduled(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    made = make_plan(load_spec(ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml"))
    scheduled = {item.attack for item in made.items}
    assert "square_linf" in scheduled
    assert not scheduled & set(made.alternatives)
    assert run_in_process("plan", ROOT / "examples" / "specs" / "digits-whitebox-linf.yaml",
                          "-o", tmp_path / "p.yaml") == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "not scheduled" in ln)
    assert "square_linf" not in line


def _catalog(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert run_in_process("catalog", *args) == 0
    return [line.rstrip() for line in capsys.readouterr().out.splitlines()]


def test_catalog_fits_80_columns_without_breaking_words(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _catalog(capsys)
    assert max(len(line) for line in lines) <= 80
    ids = {line.split()[0] for line in lines if line and not line.startswith((" ", "─"))}
    assert set(CATALOG) <= ids  # every id whole on its row, none folded
    words = {w for line in lines for w in line.split()}
    for column_word in ("gradients", "scores", "labels", "surrogate", "Linf"):
        assert column_word in words
    assert not [w for w in words if w in ("gradie", "surrog", "Lin")]


def test_catalog_at_120_columns_keeps_every_cell_on_one_line(capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    lines = _catalog(capsys)
    rows = [line for line in lines if line.split() and line.split()[0] in CATALOG]
    assert len(rows) == len(CATALOG)
    body = lines[lines.index(next(ln for ln in lines if ln.startswith("─"))) + 1:]
    assert all(line.split()[0] in CATALOG for line in body if line.strip() and not line.startswith("task:")
               and body.index(line) < len(CATALOG))  # no continuation lines: nothing wrapped


def test_wide_catalog_adds_atlas(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _catalog(capsys, "--wide")
    assert any("T0043.000" in line for line in lines)
    assert any("optimizer" in line for line in lines)


def test_suite_example_results_still_render(tmp_path: Path) -> None:
    shutil.copy(RESULTS, tmp_path / "results.json")
    md, _ = write_report(tmp_path)
    assert "No input was broken" in md.read_text(encoding="utf-8")


def test_audit_suggest_writes_specs_with_the_suites_classes_and_input_space(tmp_path: Path) -> None:
    import yaml

    assert run_in_process("audit", ROOT / "examples" / "suite", "-o", tmp_path, "--suggest", "2",
                          "--format", "json") == 0
    written = sorted((tmp_path / "suggested").glob("*.yaml"))
    assert len(written) == 2
    digits = [str(i) for i in range(10)]
    for path in written:
        text = path.read_text(encoding="utf-8")
        spec = yaml.safe_load(text)
        assert spec["classes"] == digits  # before: Fashion-MNIST names (t-shirt, ..., bag) on a digits suite
        assert "bag" not in text and "coat" not in text
        assert "--model digits-cnn --data digits" in text
        assert spec["input_space"]["bounds"] == [0.0, 1.0]


def test_audit_page_leads_with_its_answer(tmp_path: Path) -> None:
    from attackgen.audit import render
    from attackgen.audit.coverage import audit, read_suite

    report = audit(read_suite([ROOT / "examples" / "suite"]))
    md = render.to_markdown(report)
    answer = md.index("## Answer")
    assert answer < md.index("## Coverage by axis value") < md.index("## Pairwise coverage")
    assert "- Covered: 7 of" in md and "- Gaps: " in md and "- Infeasible: " in md
    heatmap, render.heatmap_png = render.heatmap_png, lambda pair: ""  # type: ignore[assignment]
    try:
        page = render.to_html(report)
    finally:
        render.heatmap_png = heatmap  # type: ignore[assignment]
    assert page.index("<h2>Answer</h2>") < page.index("<h2>Coverage by axis value</h2>") < page.index("<img")
