"""`attackgen audit`: which threat cells a suite of specs, plans and results covers. Imports no torch.

Exit codes: 0 when anything could be audited (problems with single files are reported and skipped),
2 when nothing in the given paths could be read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

FORMATS = ("table", "md", "html", "json", "atlas")
FILES = {"md": "coverage.md", "html": "coverage.html", "json": "coverage.json", "atlas": "atlas-layer.json"}


@click.command("audit", epilog="""\b
Exit codes:
  0    audited (files that could not be read are listed and skipped)
  2    nothing in PATHS could be read, or a bad option""")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write every format here: coverage.md, coverage.html, coverage.json, atlas-layer.json.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="What to print on standard output.")
@click.option("--suggest", "n_suggest", type=click.IntRange(min=0), default=0, metavar="N",
              help="Write the N specs that add the most uncovered feasible cells and pairs (greedy cover).")
@click.option("--suggest-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where suggested specs go (default: OUTPUT/suggested, or ./suggested without -o).")
@click.option("--all-tasks", is_flag=True, help="Audit every task's cells, not only the tasks in the suite.")
@click.option("--recheck", is_flag=True,
              help="Run the results-level soundness checks again on every run (default: the flags each run "
              "recorded, plus the checks across runs).")
def audit_command(paths: tuple[Path, ...], out_dir: Path | None, fmt: str, n_suggest: int,
                  suggest_dir: Path | None, all_tasks: bool, recheck: bool) -> None:
    """Audit threat coverage of specs (*.yaml), plans and run results (results.json, *.jsonl) in PATHS."""
    from attackgen.audit import render
    from attackgen.audit.coverage import AuditError, audit, read_suite, suggest, write_suggestions

    suite = read_suite(paths, recheck=recheck)
    if suite.empty:
        reasons = "; ".join(f"{s.path}: {s.message}" for s in suite.sources if s.message) or "no files"
        raise AuditError(f"nothing to audit: no spec, plan or results file could be read ({reasons})")
    report = audit(suite, all_tasks=all_tasks)
    suggestions = suggest(report, n_suggest) if n_suggest else []

    outputs = {
        "md": lambda: render.to_markdown(report, suggestions),
        "html": lambda: render.to_html(report, suggestions),
        "json": lambda: json.dumps(render.to_json(report, suggestions), indent=1) + "\n",
        "atlas": lambda: json.dumps(render.to_atlas(report), indent=2) + "\n",
    }
    written: list[Path] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for key, make in outputs.items():
            path = out_dir / FILES[key]
            path.write_text(make(), encoding="utf-8")
            written.append(path)
    if suggestions:
        folder = suggest_dir or ((out_dir / "suggested") if out_dir is not None else Path("suggested"))
        written += write_suggestions(report, suggestions, folder)
    elif n_suggest:
        click.echo("note: no gap cell yields a spec the planner can run; nothing suggested", err=True)

    if fmt == "table" or out_dir is not None:
        from rich.console import Console
        from rich.markup import escape

        console = Console(stderr=fmt != "table")
        render.print_table(report, suggestions, console)
        for path in written:
            console.print(f"wrote {escape(str(path))}", highlight=False, soft_wrap=True)
    if fmt != "table":
        if out_dir is None:
            for line in report.notes + report.outside + [f"{p.path}: {p.message}" for p in suite.problems]:
                click.echo(f"note: {line}", err=True)
            for path in written:
                click.echo(f"wrote {path}", err=True)
        sys.stdout.write(outputs[fmt]())
