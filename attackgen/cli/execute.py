"""`attackgen run` (a plan over a model and data) and `attackgen demo` (the whole loop on built-ins).

Exit codes: 0 done, 2 a bad input (model, data, plan, output folder; one clear message), 130 stopped
with Ctrl-C after writing what was finished (results.json with complete: false; --resume continues).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from taxonomy.errors import AttackgenError

RUN_EXIT_CODES = """\b
Exit codes:
  0    finished: results.json, report.md and report.html written
  2    a bad input (plan, model, data, output folder), named in one message
  130  stopped by Ctrl-C or SIGTERM after saving the finished batches
       (--resume continues)"""

DEMO_SPEC = "digits-whitebox-linf.yaml"
DEMO_MODEL, DEMO_DATA = "digits-cnn", "digits"
DEMO_LIMIT = 256
DEMO_PRIMARY = 2  # attacks per epsilon besides the gradient-free check: APGD-CE and APGD-T, the fast core
DEMO_QUERIES = 500  # cap on query-based items in the demo
# used when the examples folder is not next to the package (an installed wheel)
DEMO_SPEC_DATA: dict[str, Any] = {
    "name": "digits-whitebox-linf",
    "description": "Untargeted Linf robustness of the digits CNN, eps curve around 0.1.",
    "task": "classification",
    "classes": [str(i) for i in range(10)],
    "threat": {
        "consequence": "untargeted",
        "scope": "individual",
        "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": [0.05, 0.1, 0.2]}],
        "model_knowledge": "white_box",
        "data_knowledge": "none",
        "capability": {"feed": "digital"},
    },
    "input_space": {"bounds": [0, 1], "layout": "NCHW", "normalization": "inside_model",
                    "epsilon_units": "input_scale"},
}


def _say(message: str) -> None:
    click.echo(message, err=True)


def _stop_on_sigterm() -> None:
    """A terminated run saves what is finished, as Ctrl-C does."""
    import signal
    import threading

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def print_summary(result: Any, out_dir: Path) -> None:
    """A short table of the run on standard output, and where the report is."""
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    headline = result.metrics.get("headline_epsilon")
    at = f" at epsilon {headline:g}" if headline else ""
    bound = "at most " if result.metrics.get("robust_upper_bound") else ""  # a stop before any input finished
    name = escape(str(result.spec.get("name", "run")))
    console.print(f"[bold]{name}[/bold]: {result.n_inputs} inputs, clean accuracy "
                  f"{100 * result.clean_accuracy:.1f}%, robust accuracy{at} {bound}{100 * result.robust_accuracy:.1f}%")
    for note in (result.partial_note(), result.excluded_note()):
        if note:
            console.print(note, style="red" if note.startswith("partial") else None, markup=False)
    table = Table(show_edge=False)
    for column in ("#", "attack", "eps", "attacked", "broken", "robust after", "queries", "time"):
        table.add_column(column, justify="left" if column == "attack" else "right", no_wrap=True)
    for n, item in enumerate(result.items, 1):
        table.add_row(str(n), escape(item.attack), "–" if item.epsilon is None else f"{item.epsilon:g}",
                      str(item.n_attacked),
                      str(item.n_success), f"{100 * item.robust_accuracy_after:.1f}%",
                      "–" if item.median_queries is None else f"{item.median_queries:g}", f"{item.time_s:.2f}s")
    console.print(table)
    for point in result.curve:
        console.print(f"  epsilon {point['epsilon']:g}: robust accuracy {bound}{100 * point['robust_accuracy']:.1f}%")
    esc = getattr(result, "escalation", None)
    if esc is not None and esc.ran:
        console.print(f"  escalation: robust accuracy {100 * esc.robust_accuracy_before:.1f}% before, "
                      f"{100 * esc.robust_accuracy_after:.1f}% after ({len(esc.items)} item(s) above the plan's)",
                      soft_wrap=True)
        if esc.located:
            console.print(f"  escalation located (BPDA): {escape(', '.join(esc.located))}", soft_wrap=True)
        if getattr(esc, "surrogate", None):
            console.print(f"  escalation transferred from: {escape(str(esc.surrogate))}", soft_wrap=True)
    elif esc is not None:
        console.print(f"  escalation: {escape(esc.disabled or 'no adaptive counterpart applies')}", soft_wrap=True)
    for flag in result.flags:
        if flag.severity != "info":
            console.print(f"  [yellow]{escape(flag.severity)}[/yellow] {escape(flag.check)}: {escape(flag.evidence)}",
                          soft_wrap=True)
            if flag.escalation:
                console.print(f"      {escape(flag.escalation)}", soft_wrap=True)
    passes = int(result.metrics.get("verify_passes", 1))
    if passes > 1:
        console.print(f"  verified over {passes} passes each: the model's outputs change from call to call, a "
                      "success must hold in a strict majority of them", soft_wrap=True)
    if "threads" in result.versions:
        console.print(f"threads: {result.versions['threads']}", markup=False)
    console.print(f"results: {escape(str(out_dir / 'results.json'))}")
    console.print(f"report:  {escape(str(out_dir / 'report.html'))} (and report.md)")


def report_stopped(out: Path) -> None:
    """A stopped run gets its report and summary too, marked partial (what finished, over what)."""
    from attackgen.report.run_report import write_report
    from attackgen.results import RunResult

    path = out / "results.json"
    if not path.exists():
        return
    try:
        result = RunResult.model_validate_json(path.read_text(encoding="utf-8"))
        if result.complete:
            return
        write_report(out)
    except (OSError, ValueError, AttackgenError) as error:
        _say(f"stopped: the partial report could not be written ({error})")
    else:
        print_summary(result, out)
    _say(f"stopped: finished batches are saved in {out}; continue with --resume")


def _torchrun_launch() -> Any:
    """The rank torchrun started this process as (RANK, WORLD_SIZE, LOCAL_RANK), or None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    from attackgen.run.distributed import Launch

    return Launch.from_env()


def _default_data(model: str, data: str | None) -> str:
    if data is not None:
        return data
    from attackgen.models.zoo import MODEL_INFO

    if model in MODEL_INFO:
        return MODEL_INFO[model].data
    from taxonomy.errors import did_you_mean

    looks_like_name = ":" not in model and not Path(model).suffix and not Path(model).exists()
    hint = did_you_mean(model, MODEL_INFO) if looks_like_name else ""
    if hint:  # a misspelt built-in: the spelling is the problem, not the missing --data
        raise AttackgenError(f"--model {model!r}: not a built-in model{hint}. Built-in models: "
                             f"{', '.join(sorted(MODEL_INFO))}.")
    raise AttackgenError(f"--data is required: {model!r} is not a built-in model with its own data.")


@click.command("run", epilog=RUN_EXIT_CODES)
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--model", "-m", "model", required=True,
              help="A built-in model, a 'package.module:function' entry point (imported from the current "
              "folder too), a TorchScript file (.pt/.ts/.pth/.jit) or a torch.export archive (.pt2). Entry "
              "points and TorchScript are code: give only what you trust.")
@click.option("--data", "-d", "data", default=None,
              help="A built-in data set, a .pt/.npz file, an IDX images file or an image folder "
              "(default for a built-in model: its own test data).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=None,
              help="Inputs per batch and per checkpoint (default 256 on CPU, 1024 on CUDA); halves on out-of-memory.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=None, help="Evaluate only the first N inputs.")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True,
              help="Seed for every random choice (restarts, sampling, data order): the same seed repeats a run.")
@click.option("--resume", is_flag=True, help="Continue the stopped run in the output folder from its last batch.")
@click.option("--force", is_flag=True, help="Replace the results of another run in the output folder.")
@click.option("--basis-data", default=None,
              help="Data the attacker holds (the data basis) when it is not the built-in training split.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: OMP_NUM_THREADS if set, else 1 unless the model is large "
              "and cores are idle; the summary says what was used).")
@click.option("--escalate/--no-escalate", default=None,
              help="Adaptive escalation: when a soundness check fires (masked, saturated or random gradients), "
              "run its adaptive counterpart (DLR loss, BPDA, EOT) on the survivors. Default: on, except for "
              "--preset plans, which run exactly as published.")
@click.option("--autocast", type=click.Choice(["bf16", "fp16"]), default=None,
              help="Take the attacks' gradient steps in bf16/fp16 (faster on GPUs); every success is re-verified "
              "in float32.")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model before the run.")
@click.option("--save-adversarial", is_flag=True,
              help="Also write adversarial.npz: per input its first verified success (final, clipped), else the "
              "clean input, with a success mask and the item that broke it (kept in the checkpoint: survives "
              "--resume).")
@click.option("--quiet", "-q", is_flag=True, help="No progress (bars on a terminal, a line every 10 s otherwise).")
@click.option("--allow-code", is_flag=True,
              help="Run code that the spec or plan names (entry points, TorchScript files as surrogates) and "
              "load .pt2 archives that unpickle. Off by default: a file handed over by others is code.")
@click.option("--onnx-to-torch", is_flag=True,
              help="Convert an .onnx model to torch with onnx2torch (white-box specs); by default ONNX Runtime "
              "answers queries (black-box specs only).")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), default=None,
              help="Output folder (default runs/<plan file name>).")
def run_command(plan: str, model: str, data: str | None, device: str, batch_size: int | None, limit: int | None,
                seed: int, resume: bool, force: bool, basis_data: str | None, threads: int | None,
                escalate: bool | None, autocast: str | None, compile_model: bool, save_adversarial: bool,
                quiet: bool, allow_code: bool, onnx_to_torch: bool, output: str | None) -> None:
    """Run PLAN over a model and data: verified results, results.json, report.md and report.html.

    PLAN is a plan file from `attackgen plan`, not a spec.
    """
    from attackgen.models.options import LoadOptions, loading_with
    from attackgen.models.trust import trusting
    from attackgen.report.run_report import write_report
    from attackgen.run.executor import RunOptions, execute

    out = Path(output) if output else Path("runs") / Path(plan).stem
    options = RunOptions(device=device, batch_size=batch_size, limit=limit, seed=seed, resume=resume, force=force,
                         progress=not quiet, basis_data=basis_data, escalate=escalate, autocast=autocast,
                         compile=compile_model, threads=threads, save_adversarial=save_adversarial)
    _stop_on_sigterm()
    launch = _torchrun_launch()
    if launch is not None and save_adversarial:
        raise AttackgenError("--save-adversarial: not available under torchrun yet (the ranks do not merge the "
                             "adversarial inputs); run without torchrun, or drop the option.")
    try:
        with trusting(allow_code, given=(model,)), loading_with(LoadOptions(onnx_to_torch, out, resume)):
            if launch is not None:  # started by torchrun: this process is one rank; rank 0 merges and reports
                from attackgen.run.distributed import run_distributed

                result = run_distributed(plan, model, _default_data(model, data), out, options, launch, echo=_say)
                if result is None:
                    return
            else:
                result = execute(plan, model, _default_data(model, data), out, options, echo=_say)
    except KeyboardInterrupt:
        if launch is None:
            report_stopped(out)
            sys.exit(130)  # it said what stopped and how to continue: no second "aborted" line
        raise
    write_report(out)
    print_summary(result, out)


@click.command("demo")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              help="Output folder for the plan, results and report (an earlier demo there is replaced).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=DEMO_LIMIT, show_default=True,
              help="Digits test inputs to evaluate (512 in all).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--quiet", "-q", is_flag=True, help="No progress (bars on a terminal, a line every 10 s otherwise).")
def demo_command(output: str, limit: int, device: str, quiet: bool) -> None:
    """The whole loop on the built-in digits model: validate, plan, run, report."""
    from attackgen.plan.document import Infeasible, save_plan
    from attackgen.plan.planner import plan as make_plan
    from attackgen.report.run_report import write_report
    from attackgen.run.executor import Executor, RunOptions
    from taxonomy.graph import validate
    from taxonomy.spec import load_spec, parse_spec

    started = time.perf_counter()
    out = Path(output)
    spec_path = Path(__file__).resolve().parents[2] / "examples" / "specs" / DEMO_SPEC
    if spec_path.exists():
        spec, source = load_spec(spec_path), str(spec_path)
    else:
        spec, source = parse_spec(DEMO_SPEC_DATA, "built-in demo spec"), "built-in demo spec (examples/ not found)"
    click.echo(f"1. validate  {source}")
    found = [(v, str(getattr(v.severity, "value", v.severity))) for v in validate(spec)]
    errors = [v for v, severity in found if severity == "error"]
    for violation, severity in found:
        click.echo(f"   {violation.id} {severity}: {violation.rule.reason}")
    if errors:
        raise AttackgenError(f"{source}: the demo spec breaks {len(errors)} rule(s); see above.")
    click.echo(f"   ok ({len(found)} warning(s))")

    plan = make_plan(spec, max_primary=DEMO_PRIMARY)
    if isinstance(plan, Infeasible):
        raise AttackgenError(f"{source}: the planner found no plan: " + "; ".join(n.line() for n in plan.blocking))
    for item in plan.items:
        queries = int(item.params.get("n_queries", 0))
        if queries > DEMO_QUERIES:
            item.params["n_queries"] = DEMO_QUERIES
            item.expected_cost.queries = float(DEMO_QUERIES)
            item.rationale = item.rationale.replace(f"{queries} queries each", f"{DEMO_QUERIES} queries each").replace(
                f"~{queries} victim queries", f"~{DEMO_QUERIES} victim queries")
    force = _previous_demo(out, spec.spec_hash())
    if not force:
        raise AttackgenError(f"-o {out}: holds another run, not an earlier demo; choose another output folder.")
    out.mkdir(parents=True, exist_ok=True)
    plan_path = save_plan(plan, out / "plan.yaml")
    click.echo(f"2. plan      {len(plan.items)} items -> {plan_path}")
    for n, item in enumerate(plan.items, 1):
        eps = "" if item.epsilon is None else f" eps={item.epsilon:g}"
        click.echo(f"   {n}. {item.attack} [{item.role}]{eps}: {item.rationale}")
    click.echo(f"   (the demo schedules {DEMO_PRIMARY} primary attacks per epsilon and caps query-based checks at "
               f"{DEMO_QUERIES} queries; `attackgen plan` gives the full plan)")

    click.echo(f"3. run       model {DEMO_MODEL} on {DEMO_DATA} ({limit} test inputs)")
    options = RunOptions(device=device, limit=limit, force=True, progress=not quiet)
    result = Executor(plan, DEMO_MODEL, DEMO_DATA, out, options, plan_source=str(plan_path), echo=_say).run()
    md, page = write_report(out)
    click.echo(f"4. report    {page} (and {md.name})")
    print_summary(result, out)
    click.echo(f"demo finished in {time.perf_counter() - started:.1f} s; open {page}")


def _previous_demo(out: Path, spec_hash: str) -> bool:
    """May the demo write here: an empty or new folder, or one that holds an earlier demo."""
    import json

    results = out / "results.json"
    checkpoint = out / "checkpoint.pt"
    if not results.exists():
        return not checkpoint.exists()
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("spec_hash") == spec_hash and data.get("model") == DEMO_MODEL
