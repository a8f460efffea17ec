"""The audit as a terminal table, Markdown, HTML with heatmaps, JSON and an ATLAS Navigator layer (no torch)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from attackgen.audit.atlas import TECHNIQUES, navigator_layer
from attackgen.audit.coverage import (
    COVERED,
    GAP,
    INFEASIBLE,
    AuditReport,
    CellCoverage,
    PairMatrix,
    SuggestedSpec,
    json_value,
    value_label,
)

AUDIT_VERSION = 1
MAX_EVIDENCE = 50  # runs and specs listed per cell in JSON (the count is always given)
MAX_CELLS_MD = 200  # covered cells listed in Markdown and HTML

AXIS_TITLES = {
    "task": "task",
    "consequence": "consequence",
    "scope": "scope",
    "imperceptibility": "imperceptibility",
    "knowledge": "model knowledge",
    "data_knowledge": "data knowledge",
    "feed": "feed",
    "spatial": "spatial constraint",
}


def title(axis: str) -> str:
    return AXIS_TITLES.get(axis, axis.replace("_", " "))


def _pct(a: int, b: int) -> str:
    if not b:
        return "-"
    share = 100.0 * a / b
    return f"{share:.1f}%" if 0 < share < 10 else f"{share:.0f}%"


def summary(report: AuditReport) -> dict[str, Any]:
    return {
        "tasks": list(report.tasks),
        "cells": report.n_cells,
        "feasible": report.n_feasible,
        "covered": report.count(COVERED),
        "tested": report.n_tested,
        "infeasible": report.count(INFEASIBLE),
        "gaps": report.count(GAP),
        "covered_but_infeasible": len(report.covered_infeasible),
        "pairs_covered": report.pairs_covered,
        "pairs_feasible": report.pairs_feasible,
        "specs": len(report.suite.specs),
        "runs": len(report.suite.runs),
        "flags": len(report.flags),
        "problems": len(report.suite.problems),
    }


def _spec_entry(report: AuditReport, i: int) -> dict[str, Any]:
    s = report.suite.specs[i]
    return {"name": s.name, "kind": s.kind, "source": s.source, "spec_hash": s.spec_hash}


def _run_entry(report: AuditReport, i: int) -> dict[str, Any]:
    r = report.suite.runs[i]
    return {
        "name": r.name, "source": r.source, "model": r.model, "data": r.data, "n_inputs": r.n_inputs,
        "clean_accuracy": r.clean_accuracy, "robust_accuracy": r.robust_accuracy, "complete": r.complete,
        "transfer_estimate": r.plan.transfer,  # the items may not have been kept
    }


def _cell_entry(report: AuditReport, cov: CellCoverage) -> dict[str, Any]:
    runs = sorted(cov.runs, key=lambda i: report.suite.runs[i].robust_accuracy)
    return {
        "cell": report.space.describe(cov.row),
        "label": report.space.label(cov.row),
        "feasible": bool(report.space.feasible[cov.row]),
        "rules": list(report.space.blocking(cov.row)),
        "robust_accuracy": cov.robust_accuracy,
        "n_specs": len(cov.specs),
        "n_runs": len(cov.runs),
        "specs": [_spec_entry(report, i) for i in cov.specs[:MAX_EVIDENCE]],
        "runs": [_run_entry(report, i) for i in runs[:MAX_EVIDENCE]],
    }


def _flag_entries(report: AuditReport) -> list[dict[str, Any]]:
    return [
        {**f.flag.model_dump(), "runs": [report.suite.runs[i].label for i in f.runs],
         "sources": [report.suite.runs[i].source for i in f.runs]}
        for f in report.flags
    ]


def _suggestion_entries(report: AuditReport, suggestions: Sequence[SuggestedSpec]) -> list[dict[str, Any]]:
    return [
        {"cell": report.space.describe(s.row), "label": report.space.label(s.row), "name": s.spec.name,
         "new_cells": s.new_cells, "new_pairs": s.new_pairs, "runnable": s.runnable}
        for s in suggestions
    ]


def to_json(report: AuditReport, suggestions: Sequence[SuggestedSpec] = ()) -> dict[str, Any]:
    """Everything the audit found, JSON-ready; every cell is listed in ``cells`` (compact rows)."""
    space = report.space
    names = {0: GAP, 1: COVERED, 2: INFEASIBLE}
    rows = []
    for row in range(report.n_cells):
        values = [json_value(space.values[c][k]) for c, k in enumerate(space.codes[row])]
        rows.append([*values, names[int(report.status[row])], list(space.blocking(row))])
    return {
        "audit_version": AUDIT_VERSION,
        "summary": summary(report),
        "axes": {axis: [json_value(v) for v in space.values[c]] for c, axis in enumerate(space.axes)},
        "sources": [vars(s) for s in report.suite.sources],
        "notes": report.notes,
        "outside": report.outside,
        "per_value": report.per_value(),
        "pairs": [
            {"axes": list(p.axes), "rows": [json_value(v) for v in p.rows], "cols": [json_value(v) for v in p.cols],
             "covered": p.covered.tolist(), "feasible": p.feasible.tolist(), "cells": p.cells.tolist(),
             "pairs_covered": p.pairs_covered, "pairs_feasible": p.pairs_feasible}
            for p in report.pairs
        ],
        "covered": [_cell_entry(report, c) for c in sorted(report.covered.values(), key=lambda c: c.row)],
        "weakest": [_cell_entry(report, c) for c in report.weakest()],
        "infeasible_by_rule": report.rules(),
        "flags": _flag_entries(report),
        "atlas": [
            {"id": t.id, "name": TECHNIQUES[t.id].name if t.id in TECHNIQUES else "", "score": t.score,
             "covered": t.covered, "feasible": t.feasible, "runs": t.runs, "specs": t.specs}
            for t in report.techniques
        ],
        "suggestions": _suggestion_entries(report, suggestions),
        "cells": {"columns": [*space.axes, "status", "rules"], "rows": rows},
    }


def to_atlas(report: AuditReport) -> dict[str, Any]:
    s = summary(report)
    tasks = ", ".join(report.tasks) or "all"
    description = (
        f"attackgen audit of {s['specs']} spec(s)/plan(s) and {s['runs']} run(s) over {tasks} threat cells"
        f": {s['covered']} of {s['feasible']} feasible cells covered. Score: share of the feasible cells "
        "exercising the technique that the suite covers."
    )
    return navigator_layer(report.techniques, description=description,
                           metadata={"covered cells": f"{s['covered']}/{s['feasible']}"})


# --------------------------------------------------------------------------- Markdown


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _evidence_text(report: AuditReport, cov: CellCoverage, limit: int = 3) -> tuple[str, str]:
    specs = [report.suite.specs[i].name for i in cov.specs]
    runs = sorted(cov.runs, key=lambda i: report.suite.runs[i].robust_accuracy)
    run_text = [f"{report.suite.runs[i].label}: {report.suite.runs[i].robust_accuracy:.3f}" for i in runs[:limit]]
    spec_names = list(dict.fromkeys(specs))
    spec_text = ", ".join(spec_names[:limit]) + (f" (+{len(spec_names) - limit})" if len(spec_names) > limit else "")
    more = f" (+{len(runs) - limit} runs)" if len(runs) > limit else ""
    return spec_text or "-", ("; ".join(run_text) + more) or "-"


def _weakest_ra(report: AuditReport, cov: CellCoverage) -> str:
    """The cell's worst robust accuracy, with the epsilon it was measured at when the run says so."""
    text = _ra(cov.robust_accuracy)
    if cov.weakest_run is not None:
        eps = report.suite.runs[cov.weakest_run].metrics.get("headline_epsilon")
        if isinstance(eps, (int, float)) and not isinstance(eps, bool):
            text += f" at ε {eps:.4g}"
    return text


def _ra(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def answer(report: AuditReport) -> list[str]:
    """The audit's answer in a few sentences, before any table: what is covered, the gaps, what is infeasible."""
    s = summary(report)
    lines = [
        f"Covered: {s['covered']} of {s['feasible']} feasible cells ({_pct(s['covered'], s['feasible'])}), "
        f"{s['tested']} of them with run results; {s['pairs_covered']} of {s['pairs_feasible']} axis-value pairs.",
    ]
    missing = [f"{title(axis)} {value_label(v['value'])}" for axis, values in report.per_value().items()
               for v in values if v["feasible"] and not v["covered"]]
    gap = f"Gaps: {s['gaps']} feasible cells no spec or run covers"
    more = f" and {len(missing) - 12} more axis values" if len(missing) > 12 else ""
    lines.append(gap + (f"; no covered cell has {', '.join(missing[:12])}{more}" if missing else "") + ".")
    rules = sorted(report.rules().items(), key=lambda kv: -kv[1])
    top = ", ".join(f"{rule} ({n})" for rule, n in rules[:3])
    lines.append(f"Infeasible: {s['infeasible']} cells break a rule" + (f", most often {top}" if top else "") + ".")
    if s["flags"]:
        lines.append(f"Soundness: {s['flags']} flag(s) raised; see Soundness flags before trusting the numbers.")
    return lines


def to_markdown(report: AuditReport, suggestions: Sequence[SuggestedSpec] = ()) -> str:
    s = summary(report)
    out = ["# Threat coverage audit", ""]
    out += ["## Answer", ""] + [f"- {line}" for line in answer(report)] + ["", "## In numbers", ""]
    out += [
        f"- Threat space: **{s['cells']}** cells ({', '.join(report.tasks) or 'all tasks'}), "
        f"**{s['feasible']}** feasible under the rules",
        f"- Covered: **{s['covered']}** cells ({_pct(s['covered'], s['feasible'])} of the feasible), "
        f"{s['tested']} with run results",
        f"- Infeasible: **{s['infeasible']}** cells; gaps: **{s['gaps']}** feasible cells no spec or run covers",
        f"- Axis-value pairs covered: **{s['pairs_covered']}** of {s['pairs_feasible']} feasible pairs",
        f"- Read: {s['specs']} spec(s) and plan(s), {s['runs']} run result(s); "
        f"{s['flags']} soundness flag(s); {s['problems']} problem(s)",
        "",
    ]
    if report.covered_infeasible:
        out += [f"- **{len(report.covered_infeasible)}** covered cell(s) break a rule (see Covered cells)", ""]
    if report.notes or report.outside or report.suite.problems:
        out += ["## Notes and problems", ""]
        out += [f"- {n}" for n in report.notes]
        out += [f"- {n}" for n in report.outside]
        out += [f"- `{p.path}`: {p.message}" for p in report.suite.problems]
        out += [""]
    out += ["## Coverage by axis value", ""]
    rows = []
    for axis, values in report.per_value().items():
        for v in values:
            rows.append([title(axis), value_label(v["value"]), f"{v['covered']}/{v['feasible']}",
                         _pct(v["covered"], v["feasible"]), v["tested"], v["cells"]])
    out += _md_table(["axis", "value", "covered/feasible", "share", "with results", "cells"], rows)
    out += ["## Weakest covered cells", ""]
    weakest = report.weakest()
    if weakest:
        out += _md_table(["cell", "robust accuracy", "weakest run"],
                         [[report.space.label(c.row), _weakest_ra(report, c),
                           report.suite.runs[c.weakest_run].label if c.weakest_run is not None else "-"]
                          for c in weakest])
    else:
        out += ["No run results in the suite.", ""]
    out += ["## Soundness flags", ""]
    if report.flags:
        out += _md_table(["severity", "check", "runs", "evidence", "fix"],
                         [[f.flag.severity, f.flag.check, "; ".join(report.suite.runs[i].label for i in f.runs),
                           f.flag.evidence, f.flag.fix] for f in report.flags])
    else:
        out += ["None: no result shows the usual signs of a broken evaluation.", ""]
    out += ["## Covered cells", ""]
    covered = sorted(report.covered.values(), key=lambda c: (c.robust_accuracy is None, c.robust_accuracy or 0, c.row))
    rows = []
    for cov in covered[:MAX_CELLS_MD]:
        specs, runs = _evidence_text(report, cov)
        rule = "" if report.space.feasible[cov.row] else f" (breaks {', '.join(report.space.blocking(cov.row))})"
        rows.append([report.space.label(cov.row) + rule, specs, runs, _ra(cov.robust_accuracy)])
    out += _md_table(["cell", "specs and plans", "runs (robust accuracy)", "worst robust accuracy"], rows)
    if len(covered) > MAX_CELLS_MD:
        out += [f"... and {len(covered) - MAX_CELLS_MD} more covered cells (all in the JSON output).", ""]
    out += ["## Infeasible cells by rule", ""]
    out += _md_table(["rule", "cells blocked"], list(report.rules().items())) if report.rules() else ["None.", ""]
    out += ["## Pairwise coverage", "", "Covered value pairs out of the feasible ones, for every pair of axes.", ""]
    out += _md_table(
        ["axes", "covered pairs", "feasible pairs", "share"],
        [[f"{title(p.axes[0])} × {title(p.axes[1])}", p.pairs_covered, p.pairs_feasible,
          _pct(p.pairs_covered, p.pairs_feasible)] for p in report.pairs],
    )
    out += ["<details><summary>Pair matrices (covered/feasible cells; ✗ no feasible cell)</summary>", ""]
    for p in report.pairs:
        out += [f"**{title(p.axes[0])} × {title(p.axes[1])}**", ""]
        out += _md_table([f"{title(p.axes[0])} \\ {title(p.axes[1])}", *[value_label(c) for c in p.cols]],
                         [[value_label(r), *[_pair_text(p, i, j) for j in range(len(p.cols))]]
                          for i, r in enumerate(p.rows) if p.cells[i].sum()])
    out += ["</details>", ""]
    if suggestions:
        out += ["## Suggested specs", "", "Greedy cover: each adds the most uncovered feasible cells and pairs.", ""]
        out += _md_table(["spec", "cell", "new pairs", "runnable now"],
                         [[s.spec.name, report.space.label(s.row), s.new_pairs,
                           {True: "yes", False: "no", None: "?"}[s.runnable]] for s in suggestions])
    out += ["## MITRE ATLAS techniques", ""]
    out += _md_table(["technique", "name", "score", "covered/feasible cells", "runs"],
                     [[t.id, TECHNIQUES[t.id].name if t.id in TECHNIQUES else "", t.score, f"{t.covered}/{t.feasible}",
                       t.runs] for t in report.techniques])
    out += ["Sources:", ""] + [f"- `{src.path}`: {src.kind}" + (f" ({src.records})" if src.records > 1 else "")
                               + (f": {src.message}" if src.message else "") for src in report.suite.sources]
    return "\n".join(out) + "\n"


def _pair_text(p: PairMatrix, i: int, j: int) -> str:
    if p.cells[i, j] == 0:
        return ""
    if p.feasible[i, j] == 0:
        return "✗"
    return f"{p.covered[i, j]}/{p.feasible[i, j]}"


# --------------------------------------------------------------------------- HTML


def heatmap_png(p: PairMatrix) -> str:
    """One pair matrix as a base64 PNG: covered pairs green, feasible gaps orange, infeasible grey.

    Each entry reads covered/feasible cells with that value pair; the green deepens with the share.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import to_rgb

    rows = [i for i in range(len(p.rows)) if p.cells[i].sum()]
    cols = [j for j in range(len(p.cols)) if p.cells[:, j].sum()]
    feasible = p.feasible[np.ix_(rows, cols)]
    covered = p.covered[np.ix_(rows, cols)]
    share = covered / np.maximum(feasible, 1)
    light, deep = np.array(to_rgb("#c7e9c0")), np.array(to_rgb("#238b45"))
    image = np.empty((len(rows), len(cols), 3))
    image[:] = to_rgb("#fdd49e")  # a feasible pair no covered cell has: a gap
    green = (covered > 0)[..., None]
    image = np.where(green, light + (deep - light) * np.sqrt(share)[..., None], image)
    image[feasible == 0] = to_rgb("#d9d9d9")
    fig, ax = plt.subplots(figsize=(1.0 + 0.85 * len(cols), 0.7 + 0.42 * len(rows)), dpi=80)
    ax.imshow(image, aspect="auto")
    for a in range(len(rows)):
        for b in range(len(cols)):
            text = "✗" if feasible[a, b] == 0 else f"{covered[a, b]}/{feasible[a, b]}"
            ax.text(b, a, text, ha="center", va="center", fontsize=7,
                    color="white" if covered[a, b] and share[a, b] > 0.35 else "black")
    ax.set_xticks(range(len(cols)), [value_label(p.cols[j]) for j in cols], rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [value_label(p.rows[i]) for i in rows], fontsize=7)
    ax.set_xlabel(title(p.axes[1]), fontsize=8)
    ax.set_ylabel(title(p.axes[0]), fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3;text-align:left}.grid{display:flex;flex-wrap:wrap;gap:12px}
.grid figure{margin:0;border:1px solid #eee;padding:4px}.grid figcaption{font-size:12px;text-align:center}
.kpi{display:flex;gap:18px;flex-wrap:wrap}.kpi div{background:#f6f8fa;padding:10px 16px;border-radius:6px}
.kpi b{font-size:22px;display:block}.warning{color:#a15c00}.error{color:#b00020}
"""


def to_html(report: AuditReport, suggestions: Sequence[SuggestedSpec] = ()) -> str:
    s = summary(report)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>attackgen threat coverage</title>"
             f"<style>{CSS}</style></head><body><h1>Threat coverage audit</h1>"]
    kpis = [("cells", s["cells"]), ("feasible", s["feasible"]), ("covered", s["covered"]),
            ("with results", s["tested"]), ("infeasible", s["infeasible"]), ("gaps", s["gaps"]),
            ("pairs covered", f"{s['pairs_covered']}/{s['pairs_feasible']}"), ("flags", s["flags"])]
    parts.append("<div class='kpi'>" + "".join(f"<div><b>{html.escape(str(v))}</b>{k}</div>" for k, v in kpis)
                 + "</div>")
    parts.append("<h2>Answer</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in answer(report)) + "</ul>")
    notes = report.notes + report.outside + [f"{p.path}: {p.message}" for p in report.suite.problems]
    if notes:
        parts.append("<h2>Notes and problems</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Coverage by axis value</h2>")
    rows = [[title(axis), value_label(v["value"]), f"{v['covered']}/{v['feasible']}", _pct(v["covered"], v["feasible"]),
             v["tested"], v["cells"]] for axis, values in report.per_value().items() for v in values]
    parts.append(_html_table(["axis", "value", "covered/feasible", "share", "with results", "cells"], rows))
    parts.append("<h2>Weakest covered cells</h2>")
    parts.append(_html_table(["cell", "robust accuracy", "weakest run"],
                             [[report.space.label(c.row), _weakest_ra(report, c),
                               report.suite.runs[c.weakest_run].label if c.weakest_run is not None else "-"]
                              for c in report.weakest()]) if report.weakest() else "<p>No run results.</p>")
    parts.append("<h2>Soundness flags</h2>")
    if report.flags:
        parts.append(_html_table(["severity", "check", "runs", "evidence", "fix"],
                                 [[f.flag.severity, f.flag.check,
                                   "; ".join(report.suite.runs[i].label for i in f.runs), f.flag.evidence, f.flag.fix]
                                  for f in report.flags]))
    else:
        parts.append("<p>None.</p>")
    parts.append("<h2>Covered cells</h2>")
    covered = sorted(report.covered.values(), key=lambda c: (c.robust_accuracy is None, c.robust_accuracy or 0, c.row))
    rows = []
    for cov in covered[:MAX_CELLS_MD]:
        specs, runs = _evidence_text(report, cov)
        rule = "" if report.space.feasible[cov.row] else f" (breaks {', '.join(report.space.blocking(cov.row))})"
        rows.append([report.space.label(cov.row) + rule, specs, runs, _ra(cov.robust_accuracy)])
    parts.append(_html_table(["cell", "specs and plans", "runs (robust accuracy)", "worst robust accuracy"], rows))
    parts.append("<h2>Infeasible cells by rule</h2>")
    parts.append(_html_table(["rule", "cells blocked"], list(report.rules().items())))
    if suggestions:
        parts.append("<h2>Suggested specs</h2>" + _html_table(
            ["spec", "cell", "new pairs", "runnable now"],
            [[x.spec.name, report.space.label(x.row), x.new_pairs, {True: "yes", False: "no", None: "?"}[x.runnable]]
             for x in suggestions]))
    parts.append("<h2>Pairwise coverage</h2><p>For every pair of axes: green, a value pair some covered cell has "
                 "(deeper with the share of its feasible cells covered); orange, a feasible pair no covered cell "
                 "has (a gap); grey ✗, no feasible cell has the pair. Each entry reads covered/feasible cells."
                 "</p><div class='grid'>")
    for p in report.pairs:
        caption = f"{title(p.axes[0])} × {title(p.axes[1])}: {p.pairs_covered}/{p.pairs_feasible} pairs"
        parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{heatmap_png(p)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</div>")
    parts.append("<h2>MITRE ATLAS techniques</h2>" + _html_table(
        ["technique", "name", "score", "covered/feasible cells", "runs"],
        [[t.id, TECHNIQUES[t.id].name if t.id in TECHNIQUES else "", t.score, f"{t.covered}/{t.feasible}", t.runs]
         for t in report.techniques]))
    parts.append("</body></html>")
    return "".join(parts)


# --------------------------------------------------------------------------- terminal


def print_table(report: AuditReport, suggestions: Sequence[SuggestedSpec] = (), console: Any = None) -> None:
    """The summary in the terminal (rich)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    s = summary(report)
    console.print(
        f"[bold]Threat coverage[/bold] over {s['cells']} cells ({', '.join(report.tasks) or 'all tasks'}): "
        f"[green]{s['covered']} covered[/green] ({s['tested']} with results, "
        f"{_pct(s['covered'], s['feasible'])} of {s['feasible']} feasible), "
        f"[dim]{s['infeasible']} infeasible[/dim], [yellow]{s['gaps']} gaps[/yellow]; "
        f"axis-value pairs {s['pairs_covered']}/{s['pairs_feasible']}"
    )
    for note in report.notes + report.outside:
        console.print(f"[cyan]note:[/cyan] {escape(note)}", highlight=False)
    for problem in report.suite.problems:
        console.print(f"[red]problem:[/red] {escape(problem.path)}: {escape(problem.message)}", highlight=False)
    table = Table(title="Coverage by axis value", show_lines=False)
    for name in ("axis", "value", "covered/feasible", "share", "with results"):
        table.add_column(name)
    for axis, values in report.per_value().items():
        for n, v in enumerate(values):
            share = v["covered"] / v["feasible"] if v["feasible"] else 0.0
            style = "green" if share > 0 else ("dim" if not v["feasible"] else "yellow")
            table.add_row(title(axis) if n == 0 else "", escape(value_label(v["value"])),
                          f"{v['covered']}/{v['feasible']}",
                          f"[{style}]{_pct(v['covered'], v['feasible'])}[/{style}]", str(v["tested"]))
    console.print(table)
    weakest = report.weakest(5)
    if weakest:
        table = Table(title="Weakest covered cells")
        for name in ("cell", "robust acc.", "run"):
            table.add_column(name)
        for c in weakest:
            run = report.suite.runs[c.weakest_run].label if c.weakest_run is not None else "-"
            table.add_row(escape(report.space.label(c.row)), _weakest_ra(report, c), escape(run))
        console.print(table)
    if report.flags:
        table = Table(title="Soundness flags")
        for name in ("severity", "check", "evidence", "fix"):
            table.add_column(name, overflow="fold")
        for f in report.flags:
            style = {"error": "red", "warning": "yellow"}.get(str(f.flag.severity), "dim")
            table.add_row(f"[{style}]{escape(str(f.flag.severity))}",
                          escape(f.flag.check), escape(f.flag.evidence), escape(f.flag.fix))
        console.print(table)
    else:
        console.print("Soundness flags: none.")
    if suggestions:
        table = Table(title="Suggested specs (greedy cover)")
        for name in ("spec", "cell", "new pairs", "runnable"):
            table.add_column(name)
        for x in suggestions:
            table.add_row(escape(x.spec.name), escape(report.space.label(x.row)), str(x.new_pairs),
                          {True: "yes", False: "no", None: "?"}[x.runnable])
        console.print(table)
