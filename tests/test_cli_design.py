"""The design verbs (taxonomy, catalog, validate, plan): exit codes, outputs, no torch, and the examples."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from attackgen.cli.design import editor_schema, taxonomy_markdown
from attackgen.cli.main import cli
from attackgen.plan.document import load_plan
from taxonomy.errors import SpecError
from taxonomy.graph import validate
from taxonomy.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "specs"
ALL_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, standalone_mode=False)


def exit_code(*args: str) -> tuple[int, str]:
    """Run the verb the way the console script does (user errors become exit 2)."""
    code = (
        "import sys\nfrom attackgen.cli.main import main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
        "sys.exit(rc or 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert "NO-TORCH" in done.stderr, f"{args} imported torch"
    return done.returncode, done.stdout + done.stderr


def parses(path: Path) -> bool:
    try:
        load_spec(path)
    except SpecError:
        return False
    return True


def rule_errors(path: Path) -> list[str]:
    return [v.id for v in validate(load_spec(path)) if v.severity == "error"]


VALID = [p for p in ALL_EXAMPLES if parses(p) and not rule_errors(p)]


# --------------------------------------------------------------------------- no torch, exit codes


@pytest.mark.parametrize(
    "args",
    [
        ("taxonomy",), ("taxonomy", "--format", "json"), ("taxonomy", "--format", "schema"),
        ("taxonomy", "--format", "dot"), ("catalog",), ("catalog", "--format", "json"),
        ("validate", "examples/specs/digits-whitebox-linf.yaml"),
        ("plan", "examples/specs/digits-whitebox-linf.yaml"),
    ],
    ids=lambda a: " ".join(a),
)
def test_design_verbs_never_import_torch(args: tuple[str, ...]) -> None:
    code, output = exit_code(*args)
    assert code == 0, output


def test_validate_exit_codes(tmp_path: Path) -> None:
    ok = "examples/specs/digits-whitebox-linf.yaml"
    warned = "examples/specs/digits-topk-simba.yaml"
    broken = "examples/specs/invalid-confusing-classification.yaml"
    typo = "examples/specs/invalid-schema-typo.yaml"
    assert exit_code("validate", ok)[0] == 0
    code, output = exit_code("validate", warned)
    assert code == 0 and "warning" in output  # warnings alone pass
    code, output = exit_code("validate", broken)
    assert code == 1 and "C1" in output and "fix:" in output and "threat.consequence" in output
    code, output = exit_code("validate", typo)
    assert code == 2 and "did you mean 'universal'" in output and "threat.scope.kind" in output
    assert exit_code("validate", str(tmp_path / "missing.yaml"))[0] == 2
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert exit_code("validate", str(tmp_path / "list.yaml"))[0] == 2
    code, output = exit_code("validate", ok, broken, typo)
    assert code == 2 and output.count("examples/specs/") >= 3  # every file gets its verdict


def test_validate_json_lists_every_finding() -> None:
    result = run("validate", "--format", "json", "examples/specs/invalid-physical-pixel-noise.yaml")
    assert result.exit_code == 1 or result.return_value == 1 or "infeasible" in result.output
    data = json.loads(result.output)
    ids = {v["id"].split("-")[0] for v in data[0]["violations"]}
    assert {"E1", "E2", "E3"} <= ids
    assert all({"id", "severity", "field", "reason", "fix"} <= set(v) for v in data[0]["violations"])


def test_plan_writes_a_plan_and_exit_codes(tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    code, output = exit_code("plan", "examples/specs/digits-whitebox-linf.yaml", "-o", str(out))
    assert code == 0, output
    assert load_plan(out).spec_name == "digits-whitebox-linf"
    code, output = exit_code("plan", "examples/specs/invalid-label-only-gradients.yaml", "-o", str(tmp_path / "x"))
    assert code == 1 and "A1" in output and "nearest feasible" in output and "->" in output
    assert not (tmp_path / "x").exists()
    assert exit_code("plan", "examples/specs/invalid-schema-typo.yaml", "-o", str(tmp_path / "y"))[0] == 2
    code, output = exit_code("plan", "examples/specs/digits-whitebox-linf.yaml", "--format", "json")
    assert code == 0 and json.loads(output[: output.rindex("}") + 1])["spec_name"] == "digits-whitebox-linf"


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_every_valid_example_gets_a_plan_file(path: Path, tmp_path: Path) -> None:
    """Runnable examples get a plan (exit 0); the gap examples (named *-gap) exit 3, write nothing, and
    validate says gap with the same exit status: one answer for both verbs."""
    out = tmp_path / f"{path.stem}.plan.json"
    result = run("plan", str(path), "-o", str(out))
    checked = run("validate", str(path))
    if path.stem.endswith("-gap"):
        assert result.exit_code == 3 and "gap" in result.output and not out.exists(), result.output
        assert checked.exit_code == 3 and ": gap" in checked.output, checked.output
        return
    assert result.exception is None, result.output
    assert checked.exit_code == 0, checked.output
    assert load_plan(out).spec_hash == load_spec(path).spec_hash()


# --------------------------------------------------------------------------- taxonomy and catalog


def test_committed_taxonomy_reference_is_generated() -> None:
    committed = (ROOT / "docs" / "taxonomy.md").read_text(encoding="utf-8")
    assert committed == taxonomy_markdown(), "docs/taxonomy.md is stale: run python scripts/gen_docs.py"
    assert run("taxonomy").output == committed


def test_taxonomy_reference_names_every_axis_value_and_rule() -> None:
    from taxonomy.rules import RULES

    text = taxonomy_markdown()
    for value in ("static_target", "confusing_target", "fabrication", "contextual", "query_limited",
                  "full_black_box", "wasserstein", "evolution", "estimated_decisions", "physical", "pixel_255"):
        assert value in text, value
    assert all(rule_id in text for rule_id in RULES)


def test_json_schema_accepts_every_valid_example_and_rejects_the_typo() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(run("taxonomy", "--format", "schema").output)
    validator = jsonschema.Draft202012Validator(schema)
    for path in ALL_EXAMPLES:
        if not parses(path):
            continue
        data = yaml.safe_load(path.read_text())
        problems = [e.message for e in validator.iter_errors(data)]
        assert not problems, f"{path.name}: {problems[:3]}"
    typo = yaml.safe_load((EXAMPLES / "invalid-schema-typo.yaml").read_text())
    assert list(validator.iter_errors(typo))
    assert editor_schema()["$schema"].startswith("https://json-schema.org/")


def test_dot_and_json_formats() -> None:
    dot = run("taxonomy", "--format", "dot").output
    assert dot.lstrip().startswith(("digraph", "strict digraph")) and "->" in dot
    data = json.loads(run("taxonomy", "--format", "json").output)
    assert {"axes", "rules", "catalog"} <= set(data)
    assert {a["axis"] for a in data["axes"]} >= {"task", "consequence", "scope", "imperceptibility",
                                                  "model knowledge", "data knowledge", "capability"}


def test_catalog_table_json_and_gaps() -> None:
    table = run("catalog").output
    assert "pgd_linf" in table and "hopskipjump" in table
    entries = json.loads(run("catalog", "--format", "json").output)
    assert {e["id"] for e in entries} >= {"fgsm", "metzen_seg", "det_vanishing"}
    gaps = json.loads(run("catalog", "--gaps", "--format", "json").output)
    assert gaps["cells"] == gaps["feasible"] + gaps["infeasible"]
    assert gaps["gaps"] >= gaps["gaps_uncatalogued"] > 0
    assert set(gaps["gaps_by_axis"]) >= {"task", "knowledge", "imperceptibility"}
    assert "gaps by" in run("catalog", "--gaps").output


# --------------------------------------------------------------------------- the examples themselves


def _used_values(spec: Any) -> set[str]:
    t = spec.threat
    used = {f"task:{spec.task.value}", f"consequence:{t.consequence.kind}", f"scope:{t.scope.kind}",
            f"knowledge:{t.model_knowledge.kind}", f"data:{t.data_knowledge.value}", f"feed:{t.capability.feed}"}
    if t.consequence.kind == "dynamic_target":
        used.add(f"dynamic:{t.consequence.rule}")
    for item in t.imperceptibility:
        used.add(f"imperceptibility:{item.kind}")
        if item.kind == "lp":
            used |= {f"norm:{item.norm}", f"mode:{item.mode}"}
        if item.kind == "perceptual":
            used.add(f"metric:{item.metric}")
    granularity = getattr(t.model_knowledge, "granularity", None)
    if granularity:
        used.add(f"granularity:{granularity}")
    if getattr(t.model_knowledge, "query_budget", None) and t.model_knowledge.kind == "label_only":
        used.add("label_only:budgeted")
    if t.capability.spatial is not None:
        used.add(f"spatial:{t.capability.spatial.kind}")
    s = spec.strategy
    if s.model_basis is not None:
        used.add(f"basis:{s.model_basis.kind}")
        if s.model_basis.kind == "surrogate":
            used.add(f"surrogate:{s.model_basis.source}")
    if s.data_basis is not None:
        used.add(f"data_basis:{s.data_basis.value}")
    if s.optimizer is not None:
        used.add(f"optimizer:{s.optimizer.kind.value}")
        if s.optimizer.gradient_source is not None:
            used.add(f"gradient:{s.optimizer.gradient_source.value}")
    i = spec.input_space
    used |= {f"layout:{i.layout}", f"normalization:{i.normalization}", f"units:{i.epsilon_units}"}
    return used


def test_examples_together_use_every_axis_value() -> None:
    from taxonomy.axes import CONSEQUENCE_KINDS, IMPERCEPTIBILITY_KINDS, KNOWLEDGE_KINDS, SCOPE_KINDS

    expected = (
        {f"task:{t}" for t in ("classification", "segmentation", "detection")}
        | {f"consequence:{c}" for c in CONSEQUENCE_KINDS}
        | {f"scope:{s}" for s in SCOPE_KINDS}
        | {f"imperceptibility:{k}" for k in IMPERCEPTIBILITY_KINDS}
        | {f"norm:{n}" for n in ("0", "1", "2", "inf")} | {"mode:fixed", "mode:minimal"}
        | {f"metric:{m}" for m in ("ssim", "wasserstein", "lpips")}
        | {f"knowledge:{k}" for k in KNOWLEDGE_KINDS} | {"label_only:budgeted"}
        | {f"granularity:{g}" for g in ("logits", "probabilities", "top_k")}
        | {f"data:{d}" for d in ("training", "surrogate", "none")}
        | {"feed:digital", "feed:physical"} | {f"spatial:{k}" for k in ("mask", "box", "patch")}
        | {"basis:victim", "basis:surrogate"}
        | {f"surrogate:{s}" for s in ("trained_on_data", "distilled_from_queries", "pretrained")}
        | {f"data_basis:{d}" for d in ("training", "surrogate", "none")}
        | {f"optimizer:{o}" for o in ("first_order", "second_order", "evolution")}
        | {f"gradient:{g}" for g in ("analytic", "estimated_scores", "estimated_decisions")}
        | {f"dynamic:{r}" for r in ("remove_classes", "least_likely", "class_map")}
        | {"layout:NCHW", "layout:NHWC", "normalization:inside_model", "normalization:none",
           "normalization:in_data", "units:input_scale", "units:pixel_255"}
    )
    used: set[str] = set()
    for path in ALL_EXAMPLES:
        if parses(path):
            used |= _used_values(load_spec(path))
    assert not expected - used, sorted(expected - used)


def test_examples_are_documented_and_invalid_ones_show_their_rules() -> None:
    assert len(ALL_EXAMPLES) >= 14
    invalid = [p for p in ALL_EXAMPLES if p.name.startswith("invalid-")]
    assert len(invalid) >= 3
    for path in ALL_EXAMPLES:
        text = path.read_text()
        assert text.startswith("# "), f"{path.name} needs a header comment saying what it shows"
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        if path.name.startswith("invalid-"):
            if not parses(path):
                continue
            found = {rule.split("-")[0] for rule in rule_errors(path)}
            assert found, f"{path.name} is named invalid but breaks no rule"
            named = set(re.findall(r"\b([A-I]\d+[a-z]?)\b", header))
            assert named & found, f"{path.name}: header names {named}, rules found {found}"
        else:
            assert parses(path) and not rule_errors(path), f"{path.name} should be valid"
    demo = load_spec(EXAMPLES / "digits-whitebox-linf.yaml")
    assert demo.classes == [str(i) for i in range(10)]
    assert demo.lp_budgets[0].epsilons == [0.05, 0.1, 0.2]
