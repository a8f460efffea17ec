"""The design verbs: taxonomy, catalog, validate, plan. None of them imports torch.

Exit codes: 0 success (warnings allowed), 1 a spec is infeasible (a rule blocks it), 2 a file is missing,
unreadable or breaks the schema (SpecError, reported as one clear message), 3 a gap (feasible, no implemented
attack): see taxonomy.feasibility, the one answer validate, plan and audit share.

Size (about 550 lines): one click command per verb with its text and JSON output; the logic lives
in taxonomy and attackgen.plan, and what remains here is presentation that reads best next to its verb.
"""

from __future__ import annotations

import copy
import enum
import json
import sys
import types
import typing
from collections import Counter
from collections.abc import Iterable
from typing import Any

import click
from pydantic import BaseModel

from attackgen.plan.presets import PRESETS
from taxonomy import axes
from taxonomy.catalog import CATALOG, describe
from taxonomy.errors import SpecError, schema_rule_ids
from taxonomy.spec import json_schema, load_spec

# --------------------------------------------------------------------------- the taxonomy reference

AXES: list[tuple[str, str, Any, str]] = [
    # (axis, field path in the spec, annotation, one line on the axis)
    ("task", "task", axes.Task, "What the model outputs: one label, a label map, or boxes."),
    ("consequence", "threat.consequence", axes.Consequence, "What the adversary wants the output to become."),
    ("scope", "threat.scope", axes.Scope, "How many inputs one perturbation must work on."),
    ("imperceptibility", "threat.imperceptibility[]", axes.Imperceptibility,
     "How the change is bounded; a list, every entry applies."),
    ("model knowledge", "threat.model_knowledge", axes.ModelKnowledge, "What the adversary can see of the victim."),
    ("data knowledge", "threat.data_knowledge", axes.DataKnowledge, "Which data the adversary holds."),
    ("capability", "threat.capability", axes.Capability, "Where the adversary acts: feed, region, channel."),
    ("model basis", "strategy.model_basis", axes.ModelBasis, "Which model the attack optimises against."),
    ("data basis", "strategy.data_basis", axes.DataKnowledge, "Which data the optimisation runs over."),
    ("optimizer", "strategy.optimizer", axes.Optimizer, "How the perturbation is searched for."),
    ("input space", "input_space", axes.InputSpace, "The contract between spec, data and model."),
]


VALUE_NOTES: dict[str, str] = {
    "task:classification": "One label per input.",
    "task:segmentation": "A label per pixel (a label map).",
    "task:detection": "A set of boxes with classes and scores.",
    "data:training": "The victim's training data.",
    "data:surrogate": "Data from a similar distribution (a domain gap is likely).",
    "data:none": "No data beyond the input under attack.",
    "optimizer:first_order": "Gradient steps: analytic on a white-box or surrogate model, or estimated.",
    "optimizer:second_order": "Curvature: L-BFGS (quasi-Newton), Newton root-finding.",
    "optimizer:evolution": "Gradient-free: evolution strategies, random search, boundary walks.",
    "gradient:analytic": "Backpropagation through the basis model.",
    "gradient:estimated_scores": "Finite differences or NES from score queries.",
    "gradient:estimated_decisions": "Sign estimates from label queries (HopSkipJump).",
}
"""Descriptions for enum values, which carry no docstring of their own."""

PRESET_NAMES = list(PRESETS)

_ENUM_PREFIX = {"Task": "task", "DataKnowledge": "data", "OptimizerKind": "optimizer", "GradientSource": "gradient"}


def _members(annotation: Any) -> list[Any]:
    """The concrete models/enums behind an annotation (unwrapping Annotated, Union, Optional)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                out.extend(_members(arg))
        return out
    return [annotation]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        optional = " (optional)" if type(None) in args else ""
        return " \\| ".join(names) + optional
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(repr(m.value) for m in annotation)
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _doc(obj: Any) -> str:
    text = (obj.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(text.split())


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        try:
            value = info.default_factory()
        except TypeError:
            return "(default)"
        if isinstance(value, BaseModel):
            return "(defaults)"
        return repr(value)
    value = info.default
    if isinstance(value, enum.Enum):
        value = value.value
    return "—" if value is None else repr(value)


def _fields(model: type[BaseModel]) -> list[dict[str, str]]:
    return [
        {
            "name": name,
            "type": _type_name(info.annotation),
            "default": _default(info),
            "description": " ".join((info.description or "").split()),
        }
        for name, info in model.model_fields.items()
        if name != "kind"
    ]


def taxonomy_data() -> dict[str, Any]:
    """Axes, values, parameters, rules and the catalogue, as plain data (the JSON format)."""
    from taxonomy.rules import RULES

    out_axes = []
    for name, path, annotation, about in AXES:
        values: list[Any] = []
        for member in _members(annotation):
            if isinstance(member, type) and issubclass(member, enum.Enum):
                prefix = _ENUM_PREFIX.get(member.__name__, member.__name__)
                values.extend({"value": m.value, "description": VALUE_NOTES.get(f"{prefix}:{m.value}", ""),
                               "parameters": []} for m in member)
            elif isinstance(member, type) and issubclass(member, BaseModel) and "kind" in member.model_fields:
                kind_ann = member.model_fields["kind"].annotation
                if isinstance(kind_ann, type) and issubclass(kind_ann, enum.Enum):  # optimizer: {kind: <enum>}
                    prefix = _ENUM_PREFIX.get(kind_ann.__name__, kind_ann.__name__)
                    for m in kind_ann:
                        values.append({"value": m.value, "description": VALUE_NOTES.get(f"{prefix}:{m.value}", ""),
                                       "parameters": []})
                    values.append({"value": None, "description": _doc(member), "parameters": _fields(member)})
                    continue
                for kind in typing.get_args(kind_ann):
                    values.append({"value": str(kind), "description": _doc(member), "parameters": _fields(member)})
            elif isinstance(member, type) and issubclass(member, BaseModel):
                values.append({"value": None, "description": _doc(member), "parameters": _fields(member)})
        out_axes.append({"axis": name, "field": path, "description": about, "values": values})
    rules = [
        {"id": r.id, "family": str(getattr(r.family, "value", r.family)),
         "severity": str(getattr(r.severity, "value", r.severity)),
         "reason": r.reason, "fix": r.fix, "source": r.source}
        for r in sorted(RULES.values(), key=_rule_order)
    ]
    return {"axes": out_axes, "rules": rules, "catalog": [describe(d) for d in CATALOG.values()]}


def _rule_order(rule: Any) -> tuple[str, int, str]:
    head = rule.id.rstrip("0123456789abcdefghijklmnopqrstuvwxyz")
    digits = "".join(ch for ch in rule.id[len(head):] if ch.isdigit())
    return (head, int(digits) if digits else 0, rule.id)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if "\\|" not in text else text.replace("\n", " ")


def taxonomy_markdown() -> str:
    """The Markdown reference of the taxonomy (docs/taxonomy.md is exactly this text)."""
    data = taxonomy_data()
    lines = [
        "# The attackgen taxonomy",
        "",
        "<!-- Generated by `python scripts/gen_docs.py` (same as `attackgen taxonomy --format md`) from the",
        "     pydantic schema and the rule table. Do not edit by hand: a test fails when it drifts. -->",
        "",
        "A spec is one YAML file: `name`, `task`, optional `classes`, a `threat` model, an optional `strategy`",
        "(the planner fills what is left out) and the `input_space` contract. Every value below is written as",
        "`{kind: <value>, <parameter>: ...}`; a value whose parameters all have defaults may be written as the",
        "bare kind (`scope: universal`). `attackgen taxonomy --format schema` prints the JSON Schema for",
        "editor completion.",
        "",
        "## Axes",
        "",
    ]
    for axis in data["axes"]:
        lines += [f"### {axis['axis']} (`{axis['field']}`)", "", axis["description"], ""]
        named = [v for v in axis["values"] if v["value"] is not None]
        if named:
            lines += ["| value | meaning |", "|---|---|"]
            lines += [f"| `{v['value']}` | {_cell(v['description']) or '—'} |" for v in named]
            lines.append("")
        for value in axis["values"]:
            if not value["parameters"]:
                continue
            title = f"Parameters of `{value['value']}`" if value["value"] is not None else "Fields"
            lines += [f"{title}:", "", "| parameter | type | default | meaning |", "|---|---|---|---|"]
            lines += [
                f"| `{p['name']}` | {_cell(p['type'])} | {_cell(p['default'])} | {_cell(p['description']) or '—'} |"
                for p in value["parameters"]
            ]
            lines.append("")
    lines += [
        "## Rules",
        "",
        "Errors make a spec infeasible (`attackgen validate` exits 1); warnings are reported and planned around.",
        "",
    ]
    families: dict[str, list[dict[str, str]]] = {}
    for rule in data["rules"]:
        families.setdefault(rule["family"], []).append(rule)
    for family, rules in families.items():
        lines += [f"### {family}", "", "| id | severity | reason | fix | source |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['id']} | {r['severity']} | {_cell(r['reason'])} | {_cell(r['fix']) or '—'} | "
            f"{_cell(r['source']) or '—'} |"
            for r in rules
        ]
        lines.append("")
    lines += [
        "## Attack catalogue",
        "",
        "`attackgen catalog` lists every implementation with the cells it realises, its cost model and",
        "whether its code has landed; `attackgen catalog --gaps` lists feasible cells no implementation realises.",
        "",
    ]
    return "\n".join(lines).rstrip() + "\n"


def editor_schema() -> dict[str, Any]:
    """The spec's JSON Schema, widened to accept what the loader accepts: bare kinds and numeric norms."""
    schema = copy.deepcopy(json_schema())
    defs = schema.get("$defs", {})

    def shorthand_kinds(mapping: dict[str, str]) -> list[str]:
        kinds = []
        for kind, ref in mapping.items():
            required = set(defs.get(ref.rsplit("/", 1)[-1], {}).get("required", [])) - {"kind"}
            if not required:
                kinds.append(kind)
        return kinds

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        node = {k: walk(v) for k, v in node.items()}
        if "discriminator" in node and "oneOf" in node:
            kinds = shorthand_kinds(node["discriminator"].get("mapping", {}))
            union = {"oneOf": node.pop("oneOf"), "discriminator": node.pop("discriminator")}
            node["anyOf"] = [union, {"type": "string", "enum": kinds}] if kinds else [union]
        return node

    schema = walk(schema)
    defs = schema["$defs"]
    norm = defs["LpBudget"]["properties"]["norm"]
    defs["LpBudget"]["properties"]["norm"] = {
        "anyOf": [
            norm,
            {"type": "integer", "enum": [0, 1, 2]},
            {"type": "string", "enum": ["Linf", "linf", "L0", "L1", "L2", "l0", "l1", "l2"]},
        ],
        "title": norm.get("title", "Norm"),
        "description": "0, 1, 2 or inf (also written Linf, L2...).",
    }
    optimizer = defs["Strategy"]["properties"]["optimizer"]
    optimizer["anyOf"].insert(1, {"$ref": "#/$defs/OptimizerKind"})
    return schema


def to_dot_text() -> str:
    from taxonomy.graph import constraint_graph, to_dot

    return str(to_dot(constraint_graph()))


@click.command("taxonomy")
@click.option("--format", "fmt", type=click.Choice(["md", "json", "schema", "dot"]), default="md", show_default=True,
              help="md: readable reference; json: axes, rules and catalogue as data; schema: JSON Schema of the "
              "spec file for editors; dot: the constraint graph for Graphviz.")
def taxonomy_command(fmt: str) -> None:
    """The axes, values, parameters and rules of the threat-model taxonomy."""
    if fmt == "md":
        click.echo(taxonomy_markdown(), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(taxonomy_data(), indent=2))
    elif fmt == "schema":
        click.echo(json.dumps(editor_schema(), indent=2))
    else:
        click.echo(to_dot_text(), nl=False)


# --------------------------------------------------------------------------- catalog


def _console(wide: bool = False) -> Any:
    """The terminal's width; when printing to a file or pipe, 80 columns (150 for the wide view)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 150 if wide else 80, highlight=False)


def _short_set(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


_TASK_ABBR = {"classification": "cls", "segmentation": "seg", "detection": "det"}
_CONS_ABBR = {"untargeted": "U", "static_target": "S", "dynamic_target": "D", "confusing_target": "C",
              "vanishing": "V", "fabrication": "F", "mislabel": "M"}
_SCOPE_ABBR = {"individual": "I", "contextual": "C", "universal": "U"}


def _abbrev(values: Iterable[str], table: dict[str, str]) -> str:
    order = list(table)
    return " ".join(table[v] for v in sorted(values, key=lambda v: order.index(v) if v in order else 99))


_BOUND_ABBR = {"lp:0": "L0", "lp:1": "L1", "lp:2": "L2", "lp:inf": "Linf", "perceptual:ssim": "SSIM",
               "perceptual:wasserstein": "Wass.", "perceptual:lpips": "LPIPS", "unrestricted": "any",
               "detector": "det.", "output": "out."}


def _bounds(values: Iterable[str]) -> str:
    order = list(_BOUND_ABBR)
    ranked = sorted(values, key=lambda v: (order.index(v) if v in order else 99, v))
    return " ".join(_BOUND_ABBR.get(v, v.replace("detector:", "det:").replace("output:", "out:")) for v in ranked)


def _price(d: Any, short: bool = False) -> str:
    cost = d.expected_cost(d.defaults)
    passes, queries = ("p", "q") if short else (" passes", " queries")
    return ("+" if short else " + ").join(p for p in (f"{cost.passes:g}{passes}" if cost.passes else "",
                                  f"{cost.queries:g}{queries}" if cost.queries else "") if p) or "—"


def _optimizer(d: Any) -> str:
    return d.optimizer.replace("_order", "") + (f" ({d.gradient_source.replace('estimated_', 'est. ')})"
                                                if d.gradient_source and d.gradient_source != "analytic" else "")


@click.command("catalog")
@click.option("--gaps", is_flag=True, help="List feasible threat cells that no implemented attack realises.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table: a summary for the terminal; json: every field of every attack.")
@click.option("--wide", is_flag=True, help="Add the optimizer, strength and ATLAS columns (needs about 150 columns).")
def catalog_command(gaps: bool, fmt: str, wide: bool) -> None:
    """Every attack implementation, the taxonomy cells it realises, its cost and ATLAS techniques."""
    if gaps:
        from attackgen.plan.planner import gap_report

        report = gap_report()
        if fmt == "json":
            click.echo(json.dumps(report, indent=2))
        else:
            _print_gaps(report)
        return
    if fmt == "json":
        click.echo(json.dumps([describe(d) for d in CATALOG.values()], indent=2))
        return
    from rich import box
    from rich.table import Table

    ready = sum(d.implemented for d in CATALOG.values())
    table = Table(title=f"attack catalogue ({ready} of {len(CATALOG)} implemented)", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0), title_justify="left")
    # (header, min width, wraps): words wrap at spaces, never inside a word; ids and costs stay whole
    columns = [("id", 22, False), ("task", 7, True), ("cons.", 5, False), ("scope", 5, False),
               ("bounds", 9, True), ("access", 9, False), ("cost", 6, False)]
    if wide:
        columns += [("optimizer", 12, True), ("str", 3, False), ("ATLAS", 10, True)]
    for header, width, wraps in columns:
        table.add_column(header, min_width=width, no_wrap=not wraps, overflow="fold")
    for d in CATALOG.values():
        row = [d.id + ("" if d.implemented else " *"), _abbrev(d.tasks, _TASK_ABBR),
               _abbrev(d.consequences, _CONS_ABBR).replace(" ", ""), _abbrev(d.scopes, _SCOPE_ABBR).replace(" ", ""),
               _bounds(d.imperceptibility), d.access, _price(d, short=not wide)]
        if wide:
            row += [_optimizer(d), str(d.strength), " ".join(a.replace("AML.", "") for a in d.atlas)]
        table.add_row(*row)
    console = _console(wide=wide)
    console.print(table)
    console.print("task: cls classification, seg segmentation, det detection. cons. (consequences): U untargeted, "
                  "S static, D dynamic, C confusing, V vanishing, F fabrication, M mislabel. scope: I individual, "
                  "C contextual, U universal. bounds: Wass. Wasserstein, det. detector evasion, out. output "
                  "plausibility, any unrestricted." + ("" if wide else " cost: p passes, q queries.")
                  + ("" if ready == len(CATALOG) else " *: catalogued, not yet implemented.")
                  + ("" if wide else " --wide adds optimizer, strength, ATLAS; --format json gives every field."))


def _print_gaps(report: dict[str, Any]) -> None:
    console = _console()
    console.print(
        f"{report['cells']} abstract cells: {report['feasible']} feasible, {report['infeasible']} infeasible; "
        f"{report['realised_implemented']} feasible cells realised by an implemented attack, "
        f"{report['realised_catalogued']} by a catalogued one."
    )
    console.print(f"gaps (feasible, no implemented attack): {report['gaps']} cells, of which "
                  f"{report['gaps_uncatalogued']} no catalogued attack realises either.")
    from rich.table import Table

    for axis, counts in report["gaps_by_axis"].items():
        table = Table(title=f"gaps by {axis}", show_header=True)
        table.add_column(axis)
        table.add_column("gap cells", justify="right")
        table.add_column("of feasible", justify="right")
        table.add_column("not even catalogued", justify="right")
        for value, row in counts.items():
            table.add_row(str(value), str(row["gaps"]), str(row["feasible"]), str(row["uncatalogued"]))
        console.print(table)
    if report.get("examples"):
        console.print("examples of uncatalogued feasible cells:")
        for line in report["examples"]:
            console.print(f"  {line}")


# --------------------------------------------------------------------------- validate


def _violation_dict(violation: Any) -> dict[str, str]:
    rule = violation.rule
    return {
        "id": str(violation.id),
        "severity": str(getattr(violation.severity, "value", violation.severity)),
        "field": str(getattr(violation, "field", "") or ""),
        "reason": str(rule.reason),
        "fix": str(rule.fix or ""),
        "detail": str(getattr(violation, "detail", "") or ""),
    }


def check_file(path: str, preset: str | None = None) -> dict[str, Any]:
    """One file's verdict (the shared feasibility answer): runnable / gap / infeasible / invalid. With a
    preset, the preset's own fit (rule G3) and its attacks' rules (C18) count too."""
    from taxonomy.feasibility import EXIT_CODES, answer

    try:
        spec = load_spec(path)
    except SpecError as error:
        return {"file": path, "verdict": "invalid", "exit": EXIT_CODES["invalid"], "problems": error.problems,
                "rules": schema_rule_ids(error.problems), "violations": []}
    result = answer(spec)
    found = [_violation_dict(v) for v in result.findings]
    if result.verdict == "infeasible" and not any(v["severity"] == "error" for v in found):
        found = [_violation_dict(v) for v in result.blocking] + found  # every realising attack breaks these
    verdict, code = result.line(), result.exit_code
    if preset is not None:
        from attackgen.plan.document import Infeasible
        from attackgen.plan.presets import plan_preset

        planned = plan_preset(spec, preset)
        notes = planned.blocking + planned.warnings if isinstance(planned, Infeasible) else planned.warnings
        seen = {(v["id"], v["field"], v["detail"]) for v in found}
        found += [n.model_dump() for n in notes if (n.id, n.field, n.detail) not in seen]
        if isinstance(planned, Infeasible):
            verdict, code = f"infeasible with preset {preset}", EXIT_CODES["infeasible"]
    found.sort(key=lambda v: (v["severity"] != "error", v["id"]))
    return {"file": path, "name": spec.name, "verdict": verdict, "answer": result.verdict,
            "exit": code, "problems": [], "rules": [v["id"] for v in found if v["severity"] == "error"],
            "runnable_attacks": list(result.runnable), "catalogued_not_implemented": list(result.waiting),
            "violations": found}


def _expand_folders(files: Iterable[str]) -> list[str]:
    """Files as given; a folder stands for the .yaml, .yml and .json files directly inside it."""
    from pathlib import Path

    out: list[str] = []
    for name in files:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".yaml", ".yml", ".json"))
            if found:
                out.extend(str(p) for p in found)
            else:
                out.append(name)  # an empty folder is reported as unreadable
        else:
            out.append(name)
    return out


@click.command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
              help="Also check that the named protocol (e.g. autoattack-standard) fits each spec.")
def validate_command(files: tuple[str, ...], fmt: str, preset: str | None) -> None:
    """Check specs against the schema and the rules: every violation with rule id, field, reason and fix.

    FILES may include folders: every .yaml, .yml and .json file directly inside is checked. With --preset
    the protocol's own fit (rule G3) and its attacks' rules (e.g. C18, DLR needs 3-4 classes) count too.

    Every file gets the answer `plan` and `audit` use: runnable (an implemented attack realises it),
    gap (feasible, but no implemented attack realises it), infeasible (rule ids), or invalid (schema).

    \b
    Exit status (several files: the first that applies, in this order):
      2  a file is missing, unreadable or breaks the schema (schema rules S1-S6 are named)
      1  a rule error makes a spec infeasible (or every attack realising it breaks one)
      3  gap: the spec is feasible but no implemented attack realises it
      0  every spec is feasible and runnable (warnings allowed)
    """
    from taxonomy.feasibility import EXIT_CODES, WORST_FIRST

    results = [check_file(f, preset) for f in _expand_folders(files)]
    if fmt == "json":
        click.echo(json.dumps(results, indent=2))
    else:
        for result in results:
            click.echo(f"{result['file']}: {result['verdict']}")
            for problem in result["problems"]:
                click.echo(f"  schema: {problem}")
            for v in result["violations"]:
                where = f" at {v['field']}" if v["field"] else ""
                detail = f" ({v['detail']})" if v["detail"] else ""
                click.echo(f"  {v['id']} {v['severity']}{where}: {v['reason']}{detail}")
                if v["fix"]:
                    click.echo(f"      fix: {v['fix']}")
        if len(results) > 1:
            counts = Counter(r.get("answer", r["verdict"]) for r in results)
            click.echo("summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    code = next(EXIT_CODES[v] for v in WORST_FIRST if any(r["exit"] == EXIT_CODES[v] for r in results))
    if code:
        raise SystemExit(code)


# --------------------------------------------------------------------------- plan


def _echo_plan(plan: Any, out: Any) -> None:
    echo = out
    echo(f"plan for '{plan.spec_name}' (spec {plan.spec_hash}): {len(plan.items)} item(s)")
    for line in plan.filled:
        echo(f"  filled {line}")
    if plan.epsilons:
        echo(f"  epsilons (input units): {plan.epsilons}")
    if plan.query_budget is not None:
        echo(f"  query budget: {plan.query_budget} per input")
    for index, item in enumerate(plan.items, 1):
        eps = f" eps={item.epsilon:g}" if item.epsilon is not None else ""
        echo(f"  {index}. {item.attack} [{item.role}]{eps}")
        echo(f"     why: {item.rationale}")
    if plan.alternatives:
        echo(f"  also feasible (not scheduled): {', '.join(plan.alternatives)}")
    if plan.not_runnable:
        echo("  catalogued, not yet runnable: " + ", ".join(c.attack for c in plan.not_runnable))
    for note in plan.notes:
        echo(f"  note: {note}")
    for warning in plan.warnings:
        echo(f"  warning {warning.line()}")
    if plan.atlas:
        echo(f"  ATLAS: {' '.join(plan.atlas)}")


def _echo_infeasible(result: Any, out: Any, preset: str | None = None) -> None:
    out(f"'{result.spec_name}' is infeasible: no plan" + (f" with preset {preset}" if preset else ""))
    for note in result.blocking:
        out(f"  {note.line()}")
    if preset:
        return
    if result.nearest:
        out("nearest feasible specs (one axis changed):")
        for suggestion in result.nearest:
            status = "runnable" if suggestion.runnable else (
                f"realised by {', '.join(suggestion.realised_by[:4])} (not implemented yet)"
                if suggestion.realised_by else "passes the rules, no catalogued attack yet")
            out(f"  - {suggestion.change}   [{status}]")
    else:
        out("no spec one axis away passes the rules")


@click.command("plan")
@click.argument("file")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the plan; without it the plan document goes to standard output.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default=None,
              help="Plan file format (default: from the output extension, else yaml).")
@click.option("--max-primary", type=click.IntRange(1, 20), default=4, show_default=True,
              help="Most attacks scheduled per evaluation (the gradient-free check comes on top).")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
              help="A named protocol instead of the planner's choice: AutoAttack's attacks, order and parameters.")
def plan_command(file: str, output: str | None, fmt: str | None, max_primary: int, preset: str | None) -> None:
    """Turn a spec into a ranked plan of concrete attacks with parameters and the reason for each.

    With --preset the plan is that protocol's (e.g. autoattack-standard), refused by rule when the spec's
    threat model is not the one the protocol was defined for.

    Exit 0 with a plan, 1 when the spec is infeasible (the blocking rules and the nearest feasible specs
    are printed), 2 when the file is missing or breaks the schema, 3 when the spec is feasible but no
    implemented attack realises it (a gap: nothing to run, so no plan is written).
    """
    from attackgen.plan.document import Infeasible, plan_format, save_plan
    from attackgen.plan.planner import plan as make_plan
    from attackgen.plan.presets import plan_preset

    spec = load_spec(file)
    result = plan_preset(spec, preset) if preset else make_plan(spec, max_primary=max_primary)
    say = click.echo if output else (lambda text: click.echo(text, err=True))
    if isinstance(result, Infeasible):
        _echo_infeasible(result, say, preset)
        raise SystemExit(1)
    chosen = fmt or (plan_format(output) if output else "yaml")
    _echo_plan(result, say)
    if not result.items:
        say(f"'{result.spec_name}' is a gap: feasible, but no implemented attack realises it; no plan written")
        raise SystemExit(3)
    if output:
        path = save_plan(result, output, chosen)  # type: ignore[arg-type]
        say(f"wrote {path}")
    else:
        click.echo(result.dumps(chosen), nl=False)  # type: ignore[arg-type]

