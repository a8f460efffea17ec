"""Coverage audit: reading suites, counting cells and pairs, bad input, outputs, suggestions, no torch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from attackgen.audit import coverage as audit_mod
from attackgen.audit import render
from attackgen.audit.coverage import COVERED, GAP, INFEASIBLE, ThreatSpace, audit, read_suite, suggest
from attackgen.cli.main import main
from taxonomy.spec import AttackSpec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
HAVE_SPACE = importlib.util.find_spec("taxonomy.space") is not None

# --------------------------------------------------------------------------- a small stand-in space


@dataclass(frozen=True)
class Cell:
    task: str
    consequence: str
    scope: str
    imperceptibility: str
    knowledge: str
    data_knowledge: str
    feed: str
    spatial: bool


VALUES = {
    "task": ("classification", "segmentation"),
    "consequence": ("untargeted", "static_target", "confusing_target"),
    "scope": ("individual", "universal"),
    "imperceptibility": ("lp:inf", "lp:2", "perceptual:ssim"),
    "knowledge": ("white_box", "label_only", "full_black_box"),
    "data_knowledge": ("none", "training"),
    "feed": ("digital", "physical"),
    "spatial": (False, True),
}


@dataclass(frozen=True)
class Violation:
    id: str
    severity: str = "error"


def verdict(cell: Cell) -> list[Violation]:
    out = []
    if cell.consequence == "confusing_target" and cell.task == "classification":
        out.append(Violation("C1"))
    if cell.scope == "universal" and cell.data_knowledge == "none":
        out.append(Violation("B3"))
    if cell.feed == "physical" and not cell.spatial:
        out.append(Violation("E2"))
    if cell.knowledge == "full_black_box" and cell.data_knowledge == "none":
        out.append(Violation("A7"))
    if cell.imperceptibility == "lp:2":
        out.append(Violation("D9", "warning"))  # warnings never make a cell infeasible
    return out


def _imp(entry) -> str:
    if entry.kind == "lp":
        return f"lp:{entry.norm}"
    return f"perceptual:{entry.metric}" if entry.kind == "perceptual" else entry.kind


def cells_of(spec: AttackSpec) -> list[Cell]:
    t = spec.threat
    return [
        Cell(spec.task.value, t.consequence.kind, t.scope.kind, _imp(i), t.model_knowledge.kind,
             t.data_knowledge.value, t.capability.feed, t.capability.spatial is not None)
        for i in t.imperceptibility
    ]


IMP = {
    "lp:inf": {"kind": "lp", "norm": "inf", "epsilon": 0.1},
    "lp:2": {"kind": "lp", "norm": "2", "epsilon": 1.0},
    "perceptual:ssim": {"kind": "perceptual", "metric": "ssim", "threshold": 0.95},
}


def spec_data(cell: Cell, name: str | None = None) -> dict:
    consequence = {"untargeted": "untargeted", "static_target": {"kind": "static_target", "target_class": 0},
                   "confusing_target": {"kind": "confusing_target", "classes": [1], "shift": [2, 0]}}
    if cell.task == "segmentation" and cell.consequence == "static_target":
        consequence["static_target"] = {"kind": "static_target", "target_map": "scene:0"}
    capability: dict = {"feed": cell.feed}
    if cell.spatial:
        capability["spatial"] = {"kind": "patch", "area_fraction": 0.1}
    return {
        "name": name or "-".join(str(v).replace(":", "") for v in vars(cell).values()),
        "task": cell.task,
        "threat": {
            "consequence": consequence[cell.consequence], "scope": cell.scope,
            "imperceptibility": [IMP[cell.imperceptibility]], "model_knowledge": cell.knowledge,
            "data_knowledge": cell.data_knowledge, "capability": capability,
        },
    }


def spec_for_cell(cell: Cell) -> AttackSpec:
    return parse_spec(spec_data(cell))


@pytest.fixture
def space() -> ThreatSpace:
    return ThreatSpace.from_axes(VALUES, Cell, verdict, cells_of, spec_for_cell)


@pytest.fixture
def use_space(space, monkeypatch):
    """Route the CLI's default space to the stand-in."""
    monkeypatch.setattr(audit_mod, "default_space", lambda: space)
    return space


CLS_WB = Cell("classification", "untargeted", "individual", "lp:inf", "white_box", "none", "digital", False)
CLS_LO = Cell("classification", "untargeted", "individual", "lp:inf", "label_only", "none", "digital", False)
CLS_L2 = Cell("classification", "static_target", "individual", "lp:2", "white_box", "training", "digital", False)


def result_data(cell: Cell, robust: float, items=None, model="digits-cnn", name=None) -> dict:
    spec = parse_spec(spec_data(cell, name))
    items = items or [("pgd_linf", robust, 100, 10)]
    return {
        "results_version": 1, "attackgen_version": "0.1.0", "spec": spec.model_dump(mode="json"),
        "spec_hash": spec.spec_hash(),
        "plan_hash": "-".join(i[0] for i in items), "task": cell.task, "model": model, "data": "digits",
        "device": "cpu", "seed": 0, "versions": {}, "started": "2024-01-01T00:00:00", "complete": True,
        "n_inputs": 100, "clean_accuracy": 0.95, "robust_accuracy": robust, "curve": [],
        "items": [{"attack": a, "params": {}, "n_attacked": n, "n_success": s, "robust_accuracy_after": after,
                   "success_rate": s / n, "time_s": 0.1,
                   "inputs": [{"index": k, "clean_correct": True, "success": False, "within_budget": True}
                              for k in range(3)]}
                  for a, after, n, s in items],
        "flags": [],
    }


@pytest.fixture
def suite_dir(tmp_path) -> Path:
    (tmp_path / "specs").mkdir()
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "b").mkdir(parents=True)
    (tmp_path / "specs" / "wb.yaml").write_text(yaml.safe_dump(spec_data(CLS_WB, "wb")))
    (tmp_path / "specs" / "l2.yaml").write_text(yaml.safe_dump(spec_data(CLS_L2, "l2")))
    (tmp_path / "runs" / "a" / "results.json").write_text(json.dumps(result_data(CLS_WB, 0.40, name="wb")))
    (tmp_path / "runs" / "b" / "results.json").write_text(json.dumps(result_data(
        CLS_LO, 0.70, [("hopskipjump", 0.70, 95, 25)], name="lo")))
    return tmp_path


# --------------------------------------------------------------------------- counting


def test_space_codes_and_feasibility(space):
    assert len(space) == np.prod([len(v) for v in VALUES.values()])
    assert space.axes == tuple(VALUES)
    wb = space.row_of(CLS_WB)
    assert space.feasible[wb] and space.blocking(wb) == ()
    bad = space.row_of(Cell("classification", "confusing_target", "universal", "lp:inf", "white_box", "none",
                            "digital", False))
    assert not space.feasible[bad] and set(space.blocking(bad)) == {"C1", "B3"}
    assert space.cell(bad).consequence == "confusing_target"
    assert space.feasible[space.row_of(CLS_L2)]  # a warning is not a blocking rule


def test_audit_counts_cells_pairs_and_weakest(space, suite_dir):
    suite = read_suite([suite_dir])
    assert len(suite.specs) == 2 and len(suite.runs) == 2 and not suite.problems
    report = audit(suite, space)
    # only the suite's task is audited
    assert report.tasks == ("classification",) and report.n_cells == len(space) // 2
    assert report.count(COVERED) == 3  # wb (spec + run), l2 (spec), lo (run)
    assert report.count(COVERED) + report.count(GAP) + report.count(INFEASIBLE) == report.n_cells
    assert report.n_tested == 2
    wb = next(c for c in report.covered.values() if report.space.cell(c.row) == CLS_WB)
    assert wb.robust_accuracy == 0.40 and len(wb.specs) == 1 and len(wb.runs) == 1
    assert [report.space.cell(c.row) for c in report.weakest()] == [CLS_WB, CLS_LO]
    # pairs: each matrix counts every covered cell once
    for p in report.pairs:
        assert p.covered.sum() == 3 and p.feasible.sum() == report.n_feasible
        assert p.pairs_covered <= p.pairs_feasible
    knowledge = next(p for p in report.pairs if p.axes == ("task", "knowledge"))
    assert knowledge.covered[0].tolist() == [2, 1, 0]
    per_value = {v["value"]: v for v in report.per_value()["knowledge"]}
    assert per_value["white_box"]["covered"] == 2 and per_value["white_box"]["tested"] == 1
    assert per_value["full_black_box"]["feasible"] > 0 and per_value["full_black_box"]["covered"] == 0
    rules = report.rules()
    assert set(rules) == {"C1", "B3", "E2", "A7"} and "D9" not in rules


def test_spec_in_an_infeasible_cell_is_covered_but_reported(space, tmp_path):
    bad = Cell("classification", "untargeted", "universal", "lp:inf", "white_box", "none", "digital", False)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec_data(bad, "bad")))
    report = audit(read_suite([tmp_path]), space)
    assert [report.space.cell(r) for r in report.covered_infeasible] == [bad]
    assert "breaks B3" in render.to_markdown(report)


def test_plans_count_as_coverage(space, tmp_path):
    spec = parse_spec(spec_data(CLS_WB, "planned"))
    plan = {"plan_version": 1, "spec_name": "planned", "spec_hash": spec.spec_hash(),
            "spec": spec.model_dump(mode="json"), "items": []}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    suite = read_suite([tmp_path])
    assert [s.kind for s in suite.specs] == ["plan"]
    assert audit(suite, space).count(COVERED) == 1


def test_mixed_tasks_are_audited_per_task(space, tmp_path):
    seg = Cell("segmentation", "untargeted", "individual", "lp:inf", "white_box", "none", "digital", False)
    (tmp_path / "cls.json").write_text(json.dumps(result_data(CLS_WB, 0.2)))
    (tmp_path / "seg.json").write_text(json.dumps(result_data(seg, 0.5, model="seg-net")))
    report = audit(read_suite([tmp_path]), space)
    assert report.n_cells == len(space)
    assert any("mixes tasks" in n for n in report.notes)
    assert {report.space.value(c.row, "task") for c in report.weakest()} == {"classification", "segmentation"}


def test_soundness_flags_reach_the_audit(space, tmp_path):
    from attackgen.audit.soundness import run_flags
    from attackgen.results import RunResult

    items = [("pgd_linf", 0.60, 90, 30), ("square_linf", 0.45, 60, 15)]
    data = result_data(CLS_WB, 0.45, items)
    (tmp_path / "unchecked.json").write_text(json.dumps(data))
    assert audit(read_suite([tmp_path]), space).flags == []  # nothing recorded, not rechecked
    report = audit(read_suite([tmp_path], recheck=True), space)
    assert [f.flag.check for f in report.flags] == ["black_box_beats_white_box"]
    # as the executor writes it: the flags of the run are in the file, and the audit shows them
    data["flags"] = [f.model_dump() for f in run_flags(RunResult.model_validate(data))]
    (tmp_path / "unchecked.json").write_text(json.dumps(data))
    report = audit(read_suite([tmp_path]), space)
    assert [f.flag.check for f in report.flags] == ["black_box_beats_white_box"]
    assert "black_box_beats_white_box" in render.to_markdown(report)
    assert [f.flag.check for f in audit(read_suite([tmp_path], recheck=True), space).flags] == [
        "black_box_beats_white_box"  # recorded and rechecked: shown once
    ]


def _executor_record(cell: Cell, robust: float, items=None, **fields) -> dict:
    """A record with every RunResult field, in the model's order (as the executor writes it)."""
    from attackgen.results import RunResult

    data = {**result_data(cell, robust, items), "curve": [{"epsilon": 0.1, "robust_accuracy": robust}], **fields}
    return RunResult.model_validate(data).model_dump(mode="json")


def _same_run(a, b) -> bool:
    return (a.spec, a.spec_hash, a.plan_hash, a.task, a.model, a.data, a.n_inputs, a.clean_accuracy,
            a.robust_accuracy, list(a.curve), list(a.flags), dict(a.metrics), a.complete, a.plan) == (
        b.spec, b.spec_hash, b.plan_hash, b.task, b.model, b.data, b.n_inputs, b.clean_accuracy,
        b.robust_accuracy, list(b.curve), list(b.flags), dict(b.metrics), b.complete, b.plan)


def test_fast_reader_cuts_inputs_specs_and_items_yet_reads_the_same(tmp_path):
    from attackgen.audit.coverage import RecordReader

    items = [("pgd_linf", 0.3, 100, 7), ("square_linf", 0.3, 90, 0)]
    texts = [json.dumps(_executor_record(CLS_WB, 0.1 * k, items)) for k in range(1, 4)]
    texts.append(json.dumps(_executor_record(CLS_WB, 0.5, items), indent=1))  # the executor writes indent=1
    fast = RecordReader()
    full = [RecordReader(recheck=True).parse(t, "x") for t in texts]
    runs = [fast.parse(t, "x") for t in texts]
    pieces = b"".join(fast.cut(texts[1].encode()))
    assert b'"index"' not in pieces and b'"spec"' not in pieces and b'"items"' not in pieces
    assert b'"device"' not in pieces and len(pieces) < len(texts[1]) // 3
    for a, b in zip(runs, full, strict=True):
        assert _same_run(a, b)
    assert runs[0].items and not any(r.items for r in runs[1:])  # the spec and plan were read once, whole
    assert all(r.spec is runs[0].spec for r in runs)
    assert runs[3].plan.attacks == ("pgd_linf", "square_linf") and runs[3].plan.kind == "white_box"
    rechecked = RecordReader(recheck=True)
    again = [rechecked.parse(t, "x") for t in texts]
    assert all(len(r.items) == 2 for r in again)  # with recheck the items stay, without their inputs


def test_a_cut_that_would_drop_a_member_is_not_used(tmp_path):
    """Keys the cut looks for, written as values or in another order: the record is read whole instead."""
    from attackgen.audit.coverage import RecordReader

    reader = RecordReader()
    reader.parse(json.dumps(_executor_record(CLS_WB, 0.3)), "first")
    odd = [
        _executor_record(CLS_WB, 0.2, model="items"),  # a value that looks like the items key
        _executor_record(CLS_WB, 0.2, data="device", device="complete"),
        _executor_record(CLS_WB, 0.2, versions={"items": "1", "flags": "2"}),
        {k: v for k, v in _executor_record(CLS_WB, 0.2).items() if k != "metrics"},  # an older record
    ]
    for data in odd:
        for text in (json.dumps(data), json.dumps(data, sort_keys=True), json.dumps(data, separators=(",", ":"))):
            run = reader.parse(text, "odd")
            whole = RecordReader(recheck=True).parse(text, "odd")
            assert _same_run(run, whole), text
            assert run.curve == [{"epsilon": 0.1, "robust_accuracy": 0.2}]


def test_fast_reader_falls_back_when_a_cut_does_not_fit(tmp_path):
    from attackgen.audit.coverage import RecordReader

    reader = RecordReader()
    first = result_data(CLS_WB, 0.3)
    reader.parse(json.dumps(first), "a")
    odd = {**result_data(CLS_WB, 0.2), "plan_hash": "p"}
    odd["items"][0]["params"] = {"flags": [1], "steps": 3}  # a param that looks like the next key
    run = reader.parse(json.dumps(odd), "b")
    assert run.robust_accuracy == 0.2 and run.flags == []
    reordered = {"spec_hash": first["spec_hash"], **{k: v for k, v in first.items() if k != "spec_hash"}}
    assert reader.parse(json.dumps(reordered), "c").spec == first["spec"]


def test_jsonl_results_are_read_fast_path_and_bad_lines_skipped(space, tmp_path):
    lines = [json.dumps(result_data(CLS_WB, 0.1 * k)) for k in range(5)]
    (tmp_path / "history.jsonl").write_text("\n".join(lines) + "\n")
    suite = read_suite([tmp_path])
    assert len(suite.runs) == 5 and suite.runs[0].source.endswith("history.jsonl:1")
    (tmp_path / "history.jsonl").write_text("\n".join([*lines[:2], lines[2][:50], *lines[3:]]) + "\n")
    suite = read_suite([tmp_path])
    assert len(suite.runs) == 4
    (problem,) = suite.problems
    assert "line 3" in problem.message and "records skipped" in problem.message


def test_jsonl_with_crlf_lines_and_files_that_are_not_utf8(space, tmp_path):
    lines = [json.dumps(_executor_record(CLS_WB, 0.1 * k)) for k in range(4)]
    (tmp_path / "a.jsonl").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (tmp_path / "b.jsonl").write_bytes(b"\xff\xfe" + lines[0].encode())
    suite = read_suite([tmp_path])
    assert [r.robust_accuracy for r in suite.runs] == [0.0, 0.1, 0.2, 0.30000000000000004]
    assert not any(r.items for r in suite.runs[1:])  # the cut was used past the first record
    (problem,) = suite.problems
    assert problem.path.endswith("b.jsonl") and "cannot be read" in problem.message


def test_reading_leaves_the_collector_as_it_was():
    import gc

    assert gc.isenabled()
    read_suite([])
    assert gc.isenabled()
    gc.freeze()  # a program that froze its objects itself: the reader must not release them
    try:
        frozen = gc.get_freeze_count()
        read_suite([])
        assert gc.get_freeze_count() == frozen and gc.isenabled()
    finally:
        gc.unfreeze()


# --------------------------------------------------------------------------- bad input


def test_bad_files_are_reported_and_the_rest_audited(use_space, suite_dir, capsys):
    good = json.dumps(result_data(CLS_WB, 0.3))
    (suite_dir / "runs" / "truncated").mkdir()
    (suite_dir / "runs" / "truncated" / "results.json").write_text(good[: len(good) // 2])
    other = {**result_data(CLS_WB, 0.3), "results_version": 7, "attackgen_version": "9.0"}
    (suite_dir / "runs" / "other.json").write_text(json.dumps(other))
    (suite_dir / "ci.yaml").write_text("jobs: {build: {runs-on: ubuntu}}\n")
    (suite_dir / "broken.yaml").write_text("name: x\ntask: classification\nthreat: {model_knowledge: psychic}\n")
    (suite_dir.parent / "empty").mkdir()
    main(["audit", str(suite_dir), str(suite_dir.parent / "empty"), "--format", "md"])
    captured = capsys.readouterr()
    assert "# Threat coverage audit" in captured.out
    out = captured.out
    assert "truncated (the file ends mid-record)" in out
    assert "results_version 7 (written by attackgen 9.0)" in out
    assert "folder with no specs, plans or results (no YAML or JSON files)" in out
    assert "broken.yaml" in out and "psychic" in out
    assert "ci.yaml`: skipped: not a spec, plan or results file" in out
    suite = read_suite([suite_dir])
    assert len(suite.runs) == 2 and len(suite.specs) == 2 and len(suite.problems) == 3


def test_exit_2_only_when_nothing_could_be_read(use_space, tmp_path, capsys):
    (tmp_path / "notes.yaml").write_text("hello: world\n")
    with pytest.raises(SystemExit) as done:
        main(["audit", str(tmp_path)])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "nothing to audit" in err and "notes.yaml: not a spec, plan or results file" in err
    with pytest.raises(SystemExit) as done:
        main(["audit", str(tmp_path / "missing")])
    assert done.value.code == 2 and "no such file or folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- outputs


def test_every_format_is_written(use_space, suite_dir, tmp_path, capsys):
    out = tmp_path / "coverage"
    main(["audit", str(suite_dir), "-o", str(out)])
    printed = capsys.readouterr().out
    assert "Threat coverage" in printed and "Coverage by axis value" in printed
    assert {p.name for p in out.iterdir()} == {"coverage.md", "coverage.html", "coverage.json", "atlas-layer.json"}
    data = json.loads((out / "coverage.json").read_text())
    assert data["summary"]["covered"] == 3 and data["summary"]["tested"] == 2
    statuses = [row[-2] for row in data["cells"]["rows"]]
    assert statuses.count("covered") == 3 and len(statuses) == data["summary"]["cells"]
    blocked = next(row for row in data["cells"]["rows"] if row[-2] == "infeasible")
    assert blocked[-1]  # rule ids of an infeasible cell
    assert len(data["pairs"]) == 28 and data["weakest"][0]["robust_accuracy"] == 0.40
    html = (out / "coverage.html").read_text()
    assert html.count("data:image/png;base64,") == 28
    layer = json.loads((out / "atlas-layer.json").read_text())
    assert layer["domain"] == "atlas-atlas" and set(layer["versions"]) == {"attack", "navigator", "layer"}
    scores = {t["techniqueID"]: t for t in layer["techniques"]}
    assert {"AML.T0043.000", "AML.T0044", "AML.T0040", "AML.T0043.001", "AML.T0015"} <= set(scores)
    assert scores["AML.T0043.000"]["score"] > 0
    assert "feasible threat cells covered" in scores["AML.T0043.000"]["comment"]
    assert scores["AML.T0043.002"]["score"] == 0  # no transfer cell covered
    assert scores["AML.T0041"]["score"] == 0


def test_atlas_format_on_stdout(use_space, suite_dir, capsys):
    main(["audit", str(suite_dir), "--format", "atlas"])
    layer = json.loads(capsys.readouterr().out)
    assert layer["domain"] == "atlas-atlas"
    assert all({"techniqueID", "score", "comment"} <= set(t) for t in layer["techniques"])


# --------------------------------------------------------------------------- suggestions


def test_suggestions_are_greedy_valid_gap_specs(space, suite_dir, monkeypatch):
    monkeypatch.setattr(audit_mod, "_planner_verdict", lambda spec: True)
    report = audit(read_suite([suite_dir]), space)
    picks = suggest(report, 4)
    assert len(picks) == 4
    gains = [p.new_pairs for p in picks]
    assert gains == sorted(gains, reverse=True)  # greedy: each adds no more than the one before
    for pick in picks:
        assert report.status[pick.row] == 0  # a gap
        assert report.space.cell(pick.row) in cells_of(pick.spec)
        parse_spec(yaml.safe_load(pick.yaml(report)))
    # the first pick adds more new pairs than any other gap cell could
    assert picks[0].new_pairs >= 20


def test_suggestions_skip_cells_the_planner_cannot_run(space, suite_dir, monkeypatch):
    monkeypatch.setattr(audit_mod, "_planner_verdict", lambda spec: spec.threat.model_knowledge.kind == "label_only")
    picks = suggest(audit(read_suite([suite_dir]), space), 3)
    assert picks and all(p.spec.threat.model_knowledge.kind == "label_only" for p in picks)


def test_suggestions_fall_back_to_specs_no_attack_runs_yet(space, suite_dir, monkeypatch):
    monkeypatch.setattr(audit_mod, "_planner_verdict", lambda spec: False)
    picks = suggest(audit(read_suite([suite_dir]), space), 2)
    assert len(picks) == 2 and all(p.runnable is False for p in picks)


def test_suggested_specs_from_the_real_space_pass_the_rules(suite_dir):
    if not HAVE_SPACE:
        pytest.skip("taxonomy.space not there yet")
    from taxonomy.graph import validate

    report = audit(read_suite([suite_dir]))
    picks = suggest(report, 3)
    assert len(picks) == 3
    for pick in picks:
        spec = parse_spec(yaml.safe_load(pick.yaml(report)))
        assert not [v for v in validate(spec) if v.rule.severity == "error"]
        assert report.space.row_of(report.space.cell(pick.row)) == pick.row


def test_suggest_writes_spec_files(use_space, suite_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(audit_mod, "_planner_verdict", lambda spec: True)
    out = tmp_path / "cov"
    main(["audit", str(suite_dir), "--format", "json", "--suggest", "3", "--suggest-dir", str(out / "suggested")])
    assert len(json.loads(capsys.readouterr().out)["suggestions"]) == 3
    files = sorted((out / "suggested").glob("*.yaml"))
    assert len(files) == 3
    for f in files:
        parse_spec(yaml.safe_load(f.read_text()))
    again = audit(read_suite([suite_dir, out / "suggested"]), use_space)
    assert again.count(COVERED) == 6


# --------------------------------------------------------------------------- layering and the real space


@pytest.mark.skipif(not HAVE_SPACE, reason="taxonomy.space not there yet")
def test_audit_command_never_imports_torch(suite_dir, tmp_path):
    code = (
        "import sys\n"
        "from attackgen.cli.main import main\n"
        "try:\n"
        f"    main(['audit', {str(suite_dir)!r}, '-o', {str(tmp_path / 'o')!r}, '--format', 'json'])\n"
        "except SystemExit as e:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'foolbox') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(3 if heavy else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HEAVY []" in done.stderr
    assert json.loads(done.stdout)["summary"]["runs"] == 2


@pytest.mark.skipif(not HAVE_SPACE, reason="taxonomy.space not there yet")
def test_real_space_audits_a_suite(suite_dir):
    report = audit(read_suite([suite_dir]))
    assert report.count(COVERED) >= 3
    assert report.count(INFEASIBLE) > 0 and report.count(GAP) > 0
    assert report.count(COVERED) + report.count(GAP) + report.count(INFEASIBLE) == report.n_cells


@pytest.mark.skipif(not HAVE_SPACE, reason="taxonomy.space not there yet")
def test_example_suite_audits_with_its_finished_run():
    suite_path = ROOT / "examples" / "suite"
    suite = read_suite([suite_path])
    assert not suite.problems
    assert len(suite.specs) >= 7 and len(suite.runs) >= 1
    report = audit(suite)
    assert report.tasks == ("classification",)
    assert report.count(COVERED) == 7 and report.n_tested >= 1
    assert all(run.complete for run in suite.runs)
    (weakest, *_) = report.weakest()
    assert weakest.robust_accuracy is not None and 0.0 <= weakest.robust_accuracy < 1.0


@pytest.mark.skipif(not HAVE_SPACE, reason="taxonomy.space not there yet")
def test_audit_realisers_honour_what_each_attack_is_for():
    """catalog.REQUIRES: SSIM-PGD, detector-aware and Wasserstein PGD realise a plain Linf cell but are not
    for it; the audit's tiers must not count them there (they did: 1041 runnable cells against 995)."""
    from attackgen.plan.planner import gap_report, survey
    from taxonomy import space as tspace
    from taxonomy.catalog import implemented

    real = audit_mod.default_space()
    plain = tspace.ThreatCell("classification", "untargeted", "individual", "lp:inf", "white_box", "none",
                              "digital", False)
    ssim = tspace.ThreatCell("classification", "untargeted", "individual", "perceptual:ssim", "white_box", "none",
                             "digital", False)
    for runnable_only in (True, False):
        found = set(real.realisers(plain, runnable_only))
        assert "pgd_linf" in found
        assert not found & {"ssim_pgd", "detector_aware_pgd", "wasserstein_pgd"}, found
        assert "ssim_pgd" in real.realisers(ssim, runnable_only)
    # the same cells as `attackgen catalog --gaps` (planner.survey / gap_report)
    rows = survey()
    impl = set(implemented())
    runnable = 0
    for row in rows:
        if row["feasible"]:
            assert set(real.realisers(row["cell"], False)) == set(row["realised_by"]), row["cell"]
            runnable += bool(real.realisers(row["cell"], True))
    assert runnable == gap_report(rows)["realised_implemented"]
    assert runnable == sum(any(a in impl for a in r["realised_by"]) for r in rows if r["feasible"])
