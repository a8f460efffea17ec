"""results.json -> report.md and report.html (self-contained: images embedded as base64).

The report shows clean and robust accuracy for the whole plan and per attack, queries, norms and time;
the robust-accuracy-versus-epsilon curve when the run has several epsilons; the soundness flags; and
per-task panels. A task adds its own panels (segmentation masks, detector boxes) with
``register_panel(task, renderer)``: the renderer gets the RunResult and the output folder and returns
Sections. Classification registers the image grid (clean, adversarial, amplified perturbation, labels)
from the examples the executor saved in examples.npz.

Pictures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attackgen.results import RunResult, in_turn

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "report_files"


@dataclass
class Figure:
    name: str  # file name stem, letters and dashes
    png: bytes
    caption: str = ""


@dataclass
class Section:
    """One block of the report: a title, Markdown and HTML bodies (tables, text) and figures."""

    title: str
    markdown: str = ""
    html: str = ""
    figures: list[Figure] = field(default_factory=list)


Panel = Callable[[RunResult, Path], list[Section]]
PANELS: dict[str, list[Panel]] = {}
# modules that register the panels of other tasks when imported (written by their owners)
_PANEL_MODULES = {"segmentation": "attackgen.report.dense", "detection": "attackgen.report.dense"}


def register_panel(task: str, panel: Panel) -> Panel:
    """Add a per-task renderer; it runs for every report of a run of that task."""
    PANELS.setdefault(task, []).append(panel)
    return panel


# --------------------------------------------------------------------------- tables


def table(header: list[str], rows: list[list[Any]]) -> tuple[str, str]:
    """The same table as Markdown and as HTML."""
    cells = [[_cell(value) for value in row] for row in rows]
    md = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    md += ["| " + " | ".join(row) + " |" for row in cells]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return "\n".join(md), f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


# --------------------------------------------------------------------------- pictures


def mpl_text(text: object) -> str:
    """Text from a file (class, attack, spec names) as matplotlib shows it literally: a ``$`` would
    start mathtext, and a name like ``$\\undefinedcmd$`` would stop the whole report."""
    return str(text).replace("$", r"\$")


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def curve_figure(result: RunResult) -> Figure | None:
    if len(result.curve) < 2:
        return None
    from matplotlib.figure import Figure as MplFigure

    eps = [p["epsilon"] for p in result.curve]
    acc = [100 * p["robust_accuracy"] for p in result.curve]
    fig = MplFigure(figsize=(4.8, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0.0, *eps], [100 * result.clean_accuracy, *acc], marker="o")
    ax.set_xlabel("epsilon (input units)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title("robust accuracy vs epsilon (per-input worst case)")
    return Figure("robust-accuracy-vs-epsilon", _png(fig), "Robust accuracy against epsilon; epsilon 0 is clean.")


def _to_image(x: np.ndarray, bounds: tuple[float, float]) -> tuple[np.ndarray, str | None]:
    lo, hi = bounds
    img = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    if img.shape[0] == 1:
        return img[0], "gray"
    return np.transpose(img[:3], (1, 2, 0)), None


def image_grid(examples: dict[str, np.ndarray]) -> Figure:
    """Columns: one example each; rows: clean, adversarial, perturbation (amplified to the full range)."""
    from matplotlib.figure import Figure as MplFigure

    n = len(examples["index"])
    bounds = (float(examples["bounds"][0]), float(examples["bounds"][1]))
    classes = [str(c) for c in examples.get("classes", [])]
    name = lambda k: classes[k] if 0 <= k < len(classes) else str(k)  # noqa: E731
    fig = MplFigure(figsize=(1.6 * n + 0.6, 5.2))
    for j in range(n):
        clean, adv = examples["clean"][j], examples["adversarial"][j]
        delta = adv - clean
        scale = float(np.abs(delta).max()) or 1.0
        amplified = 0.5 + 0.5 * delta / scale
        label, before, after = int(examples["label"][j]), int(examples["clean_pred"][j]), int(examples["adv_pred"][j])
        panels = [
            (clean, f"#{int(examples['index'][j])} label {name(label)}\nclean: {name(before)}", bounds),
            (adv, f"adversarial: {name(after)}\n{examples['attack'][j]}", bounds),
            (amplified, f"perturbation x{(bounds[1] - bounds[0]) / (2 * scale):.3g}\nLinf {scale:.3g}", (0.0, 1.0)),
        ]
        for i, (img, title, span) in enumerate(panels):
            ax = fig.add_subplot(3, n, i * n + j + 1)
            shown, cmap = _to_image(img, span)
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(mpl_text(title), fontsize=7)
            ax.axis("off")
    return Figure("examples", _png(fig), "Clean input, verified adversarial input, and the perturbation amplified "
                  "to the full range (grey = unchanged).")


def load_examples(out_dir: Path) -> dict[str, np.ndarray] | None:
    path = out_dir / "examples.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


SHOWN_ELSEWHERE = ("median_linf", "median_l2", "median_ssim")


METRIC_NOTES = {
    "adv_confidence": "the model's probability (softmax) for the class it gives the adversarial input, 0 to 1: "
    "near 1 is a confident wrong answer, near 1/classes a coin toss",
    "margin_drop": "how far the attack pushed the logit margin: (logit of the true class minus the best other "
    "logit) on the clean input, minus the same on the adversarial input; for a targeted attack the margin is "
    "measured towards the target class. Larger: further past the decision boundary",
    "changed_pixels": "share of pixels whose predicted class changed",
    "applicable": "share of inputs the consequence applies to (e.g. holding a class to remove)",
}
"""What each per-attack metric means, shown under the table (a metric without a note is listed as is)."""


def metrics_section(result: RunResult) -> Section | None:
    """Per-attack figures beyond the main table: the objective's metrics, fit queries, in/out of context."""
    keys = sorted({k for item in result.items for k in item.metrics if k not in SHOWN_ELSEWHERE})
    if not keys:
        return None
    rows = [[n, item.attack, item.epsilon, *[item.metrics.get(k) for k in keys]]
            for n, item in enumerate(result.items, 1)]
    md, htm = table(["#", "attack", "epsilon", *keys], rows)
    notes = [(k, METRIC_NOTES[k]) for k in keys if k in METRIC_NOTES]
    md_notes = "".join(f"\n- `{k}`: {text}." for k, text in notes)
    html_notes = ("<ul>" + "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(text)}.</li>"
                                   for k, text in notes) + "</ul>") if notes else ""
    return Section("Per-attack metrics", "Means over the inputs each attack ran on.\n\n" + md + "\n" + md_notes,
                   "<p>Means over the inputs each attack ran on.</p>" + htm + html_notes)


def classification_panel(result: RunResult, out_dir: Path) -> list[Section]:
    metrics = metrics_section(result)
    return ([metrics] if metrics else []) + examples_panel(out_dir, result)


MAX_SHOWN = 8


def pick_examples(examples: dict[str, np.ndarray], result: RunResult | None = None,
                  limit: int = MAX_SHOWN) -> dict[str, np.ndarray]:
    """At most ``limit`` examples (or one per attack, when more attacks broke inputs), taken in turn from every
    attack that broke inputs, flagged attacks first, so that one attack's many successes do not hide the
    others'; class names from the spec when the data had none (the executor then writes the indices)."""
    attacks = [str(a) for a in examples["attack"]]
    flagged = result.flagged_attacks(attacks) if result is not None else set()
    chosen = in_turn(attacks, flagged, limit)
    n = len(attacks)
    picked = {k: (v[chosen] if isinstance(v, np.ndarray) and v.ndim and len(v) == n and k != "classes" else v)
              for k, v in examples.items()}
    spec_classes = (result.spec.get("classes") if result is not None else None) or []
    shown = [str(c) for c in examples.get("classes", [])]
    if spec_classes and (not shown or shown == [str(i) for i in range(len(shown))]):
        picked["classes"] = np.array([str(c) for c in spec_classes])
    return picked


def examples_panel(out_dir: Path, result: RunResult | None = None) -> list[Section]:
    examples = load_examples(out_dir)
    if not examples or not len(examples["index"]):
        text = "No input was broken, so there is no adversarial example to show."
        return [Section("Examples", text, f"<p>{text}</p>")]
    examples = pick_examples(examples, result)
    attacks = list(dict.fromkeys(str(a) for a in examples["attack"]))
    flagged = [a for a in attacks if result is not None and a in result.flagged_attacks(attacks)]
    text = (f"{len(examples['index'])} verified adversarial examples, taken in turn from each attack that broke "
            f"inputs ({', '.join(attacks)})"
            + (f"; first those of the attacks a soundness flag names ({', '.join(flagged)})." if flagged else "."))
    return [Section("Examples", text, f"<p>{html.escape(text)}</p>", [image_grid(examples)])]


register_panel("classification", classification_panel)


# --------------------------------------------------------------------------- the report


def sections(result: RunResult, out_dir: Path) -> list[Section]:
    spec = result.spec
    out: list[Section] = []
    headline_eps = result.metrics.get("headline_epsilon")
    summary_rows = [
        ["spec", spec.get("name", "?")],
        ["task", result.task],
        ["model", result.model],
        ["data", f"{result.data} ({result.n_inputs} inputs evaluated)"],
        ["clean accuracy", pct(result.clean_accuracy)],
        ["robust accuracy" + (f" (epsilon {headline_eps:g})" if headline_eps else "")
         + (", upper bound" if result.metrics.get("robust_upper_bound") else ""), pct(result.robust_accuracy)],
        ["attacks", len(result.items)],
        ["total attack time", f"{sum(i.time_s for i in result.items):.2f} s"],
        ["device", result.device],
        ["complete", result.complete],
    ]
    for note in (result.partial_note(), result.excluded_note()):
        if note:
            summary_rows.append(["note", note])
    md, htm = table(["measure", "value"], summary_rows)
    out.append(Section("Summary", md, htm))

    rows = []
    for n, item in enumerate(result.items, 1):
        rows.append([
            n, item.attack, item.epsilon, item.n_attacked, item.n_success, pct(item.success_rate),
            pct(item.robust_accuracy_after), item.median_queries, item.metrics.get("median_linf"),
            item.metrics.get("median_l2"), item.metrics.get("median_ssim"), f"{item.time_s:.2f}",
            "yes" if item.transfer_estimate else "",
        ])
    md, htm = table(["#", "attack", "epsilon", "attacked", "broken", "success rate", "robust acc. after",
                     "median queries", "median Linf", "median L2", "median SSIM", "time (s)", "transfer est."], rows)
    note = ("Each attack runs only on the inputs still unbroken under its budget (survivors only); 'robust acc. "
            "after' is the per-input worst case over the plan up to that attack. Every success was verified by "
            "re-running the model on the clipped input; norms are re-measured on it.")
    passes = int(result.metrics.get("verify_passes", 1))
    if passes > 1:
        note += (f" The model's outputs change from call to call, so each success was re-run {passes} times and "
                 "holds in a strict majority of them (one lucky draw of its randomness is no success).")
    out.append(Section("Attacks", f"{note}\n\n{md}", f"<p>{html.escape(note)}</p>{htm}"))

    if result.curve:
        points = [[p["epsilon"], pct(p["robust_accuracy"])] for p in result.curve]
        bound = " (upper bound)" if result.metrics.get("robust_upper_bound") else ""  # stopped before any finished
        md, htm = table(["epsilon", f"robust accuracy{bound}"], points)
        figure = curve_figure(result)
        out.append(Section("Robust accuracy vs epsilon", md, htm, [figure] if figure else []))

    if result.task not in PANELS and result.task in _PANEL_MODULES:
        import importlib

        importlib.import_module(_PANEL_MODULES[result.task])
    for panel in PANELS.get(result.task, []):
        out.extend(panel(result, out_dir))

    esc = result.escalation
    if esc is not None:
        out.append(escalation_section(esc))

    if result.flags:
        md, htm = table(["severity", "check", "evidence", "fix", "escalation"],
                        [[f.severity, f.check, f.evidence, f.fix, f.escalation or ""] for f in result.flags])
        out.append(Section("Soundness flags", md, htm))
    else:
        text = "No soundness flag was raised."
        out.append(Section("Soundness flags", text, f"<p>{text}</p>"))

    versions = ", ".join(f"{k} {v}" for k, v in result.versions.items())
    text = (f"seed {result.seed}; spec hash {result.spec_hash}; plan hash {result.plan_hash}; started "
            f"{result.started}, finished {result.finished or '(not finished)'}; {versions}.")
    out.append(Section("Reproducibility", text, f"<p>{html.escape(text)}</p>"))
    return out


def escalation_section(esc: Any) -> Section:
    """Robust accuracy before and after the adaptive escalation, each item with the flags it answers."""
    if not esc.ran:
        text = (f"Robust accuracy {pct(esc.robust_accuracy_before)}; escalation did not run: "
                f"{esc.disabled or 'no adaptive counterpart applies'}. "
                f"Flags left: {', '.join(esc.remaining) or 'none'}.")
        return Section("Adaptive escalation", text, f"<p>{html.escape(text)}</p>")
    lead = (f"Soundness flags fired, so the run added their adaptive counterparts on the inputs the plan left: "
            f"robust accuracy {pct(esc.robust_accuracy_before)} before escalation (the plan's items), "
            f"{pct(esc.robust_accuracy_after)} after. Every success was verified on the real model.")
    if esc.located:
        lead += f" Non-differentiable operations located (BPDA applied to them): {', '.join(esc.located)}."
    if getattr(esc, "surrogate", None):
        lead += f" Transfer items attacked a smooth surrogate, {esc.surrogate}."
    if esc.remaining:
        lead += f" Flags that remain: {', '.join(esc.remaining)}."
    for note in esc.notes:
        lead += f" Note: {note}."
    md, htm = table(["attack", "view", "epsilon", "attacked", "broken", "why (flags)", "how"],
                    [[i.attack, i.view, i.epsilon, i.n_attacked, i.n_success, ", ".join(i.reasons), i.why]
                     for i in esc.items])
    return Section("Adaptive escalation", f"{lead}\n\n{md}", f"<p>{html.escape(lead)}</p>{htm}")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:.9em;
text-align:left}th{background:#f3f3f3}img{max-width:100%}figcaption{font-size:.85em;color:#555}"""


def render(result: RunResult, out_dir: Path) -> tuple[str, str, list[Figure]]:
    """The Markdown text, the HTML text and the figures of one report."""
    name = result.spec.get("name", "run")
    parts = sections(result, out_dir)
    md = [f"# attackgen report: {name}", ""]
    body = [f"<h1>attackgen report: {html.escape(name)}</h1>"]
    figures: list[Figure] = []
    for section in parts:
        md += [f"## {section.title}", "", section.markdown, ""]
        body += [f"<h2>{html.escape(section.title)}</h2>", section.html]
        for figure in section.figures:
            figures.append(figure)
            md += [f"![{figure.caption}]({FIGURES_DIR}/{figure.name}.png)", ""]
            encoded = base64.b64encode(figure.png).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(figure.name)}" src="data:image/png;base64,{encoded}">'
                        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>attackgen report: {html.escape(name)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
    return "\n".join(md), page, figures


def write_report(out_dir: str | Path) -> tuple[Path, Path]:
    """Read results.json in out_dir and write report.md (with report_files/*.png) and report.html."""
    out = Path(out_dir)
    result = RunResult.model_validate_json((out / "results.json").read_text(encoding="utf-8"))
    md, page, figures = render(result, out)
    if figures:
        (out / FIGURES_DIR).mkdir(exist_ok=True)
        for figure in figures:
            (out / FIGURES_DIR / f"{figure.name}.png").write_bytes(figure.png)
    (out / REPORT_MD).write_text(md, encoding="utf-8")
    (out / REPORT_HTML).write_text(page, encoding="utf-8")
    return out / REPORT_MD, out / REPORT_HTML
