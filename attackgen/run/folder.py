"""The run folder: what a run writes (results.json, examples.npz, checkpoint.pt, reports), claiming a
folder (refuse another run's, --resume, --force) and the checkpoint format.

The checkpoint is a torch file (weights_only) with ``version`` 1: the run identity, the chunk size, the
number of inputs, each step's StepState as a dict, and the flags; during adaptive escalation also
``escalation``, the escalation plan, whose items' states follow the plan's in ``steps``. Its format is
unchanged by the split of the executor, so runs stopped before it resume; a checkpoint of another
version is refused with a message that says to use --force.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from attackgen.results import Flag, RunResult, in_turn
from attackgen.run.context import RunContext, RunOptions
from attackgen.run.items import RunError, Step
from attackgen.run.steps import MAX_EXAMPLES, CleanPass, StepState

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
EXAMPLES = "examples.npz"
ADVERSARIAL = "adversarial.npz"
OUTPUT_FILES = (CHECKPOINT, RESULTS, EXAMPLES, ADVERSARIAL, "report.md", "report.html", "report_files")
"""What a run writes in its output folder; --force replaces these and nothing else."""
CHECKPOINT_VERSION = 1


def atomic_write(path: Path, writer: Callable[[Path], object]) -> None:
    """Write through a temporary file and rename, so a stopped run never leaves half a file; a disk error
    (read-only folder, full disk) removes the temporary file, keeps the file it would replace, and is a
    named error."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        writer(tmp)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        kept = f"; {path.name} keeps its last saved version" if path.exists() else ""
        raise RunError(f"cannot write {path}: {error.strerror or error}{kept}; free space or choose a writable "
                       "output folder (-o), then continue with --resume.") from None
    except RuntimeError as error:  # torch.save reports a full disk as a RuntimeError ("unexpected pos ...")
        tmp.unlink(missing_ok=True)
        raise RunError(f"cannot write {path}: {str(error).strip()[:160]} (is the disk full?); free space or "
                       "choose another output folder (-o), then continue with --resume.") from None


def write_json(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class RunFolder:
    """One run's output folder."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)

    # ------------------------------------------------------------------ claiming

    def existing_identity(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The identity of the run the folder holds (None: none) and its checkpoint, if any."""
        path = self.out / CHECKPOINT
        if path.exists():
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
                raise RunError(f"-o {self.out}: {CHECKPOINT} cannot be read ({reason}); it is damaged or not "
                               "written by attackgen; use --force to start over.") from None
            if not isinstance(checkpoint, dict) or "identity" not in checkpoint:
                raise RunError(f"-o {self.out}: {CHECKPOINT} is not an attackgen checkpoint; use --force to start "
                               "over.")
            return dict(checkpoint["identity"]), checkpoint
        results = self.out / RESULTS
        if results.exists():
            try:
                data = json.loads(results.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {"spec_hash": "(unreadable results.json)"}
            return {k: data.get(k) for k in ("spec_hash", "plan_hash", "model", "data", "seed")}, None
        return None, None

    def claim(self, identity: Mapping[str, Any], options: RunOptions) -> dict[str, Any] | None:
        """Refuse a folder that holds another run; return the checkpoint to resume from, if any."""
        if self.out.exists() and not self.out.is_dir():
            raise RunError(f"-o {self.out}: exists and is not a folder.")
        existing, checkpoint = self.existing_identity()
        if existing is None:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise RunError(f"-o {self.out}: cannot create the output folder ({error.strerror or error}); "
                               "choose a writable place.") from None
            return None
        if options.force:
            self.clear()
            return None
        differ = [k for k in identity if k in existing and existing[k] != identity[k]]
        if differ:
            what = ", ".join(f"{k} {existing.get(k)!r} (this run: {identity[k]!r})" for k in differ)
            verb = "cannot resume it" if options.resume else "refusing to mix two runs"
            raise RunError(
                f"-o {self.out}: holds another run ({what}); {verb}. Choose another output folder, or pass "
                "--force to replace it."
            )
        if not options.resume:
            state = "a finished run" if checkpoint is None or checkpoint.get("complete") else "a stopped run"
            raise RunError(
                f"-o {self.out}: already holds {state} of this plan; pass --resume to continue it (a finished "
                "run is reported again) or --force to run it again from scratch."
            )
        return checkpoint

    def clear(self) -> None:
        for name in OUTPUT_FILES:
            path = self.out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, ctx: RunContext, states: Sequence[StepState], flags: Sequence[Flag], started: str,
                        complete: bool = False, escalation: Mapping[str, Any] | None = None) -> None:
        """``escalation``: the escalation plan while its items run (their states follow the plan's in ``steps``)."""
        payload = {
            "version": CHECKPOINT_VERSION,
            "identity": ctx.identity(),
            "complete": complete,
            "started": started,
            "chunk_size": ctx.chunk_size,
            "n": ctx.n,
            "steps": [state.to_dict() for state in states],
            "flags": [flag.model_dump() for flag in flags],
        }
        if escalation is not None:
            payload["escalation"] = dict(escalation)
        atomic_write(self.out / CHECKPOINT, lambda tmp: torch.save(payload, tmp))

    def restore(self, checkpoint: Mapping[str, Any], n: int) -> tuple[str, list[StepState], list[Flag]]:
        """(started, step states, flags) of a checkpoint of this run over n inputs."""
        if checkpoint.get("version") != CHECKPOINT_VERSION or checkpoint.get("n") != n:
            raise RunError(f"-o {self.out}: its checkpoint is from another version or data size; use --force.")
        states = [StepState.from_dict(s) for s in checkpoint["steps"]]
        return checkpoint["started"], states, [Flag(**f) for f in checkpoint.get("flags", [])]

    # ------------------------------------------------------------------ results

    def write(self, result: RunResult, ctx: RunContext, clean: CleanPass, states: Sequence[StepState]) -> None:
        """The data files first, then results.json, whose ``files`` says what each one the run wrote holds."""
        files = {CHECKPOINT: "the checkpoint: per-item state of every input, for --resume"}
        if self.write_examples(result, ctx, clean, states):
            files[EXAMPLES] = f"up to {MAX_EXAMPLES} verified successes (clean and adversarial) for the report"
        else:
            (self.out / EXAMPLES).unlink(missing_ok=True)
        if ctx.options.save_adversarial:
            self.write_adversarial(result, ctx, clean, states)
            partial = "" if result.complete else " (a partial run: only the inputs finished so far; complete=False)"
            files[ADVERSARIAL] = ("--save-adversarial: per evaluated input, x_adv (its first verified success in "
                                  "plan order, final and clipped, else the clean input), success, item (index in "
                                  "items, -1: none), index, label, clean_pred, adv_pred" + partial)
        result.files = files
        write_json(self.out / RESULTS, result.model_dump_json(indent=1))

    def write_adversarial(self, result: RunResult, ctx: RunContext, clean: CleanPass,
                          states: Sequence[StepState]) -> None:
        """adversarial.npz (--save-adversarial): see final_inputs; arrays over the evaluation inputs."""
        x_adv, success, item, adv_pred = final_inputs(ctx, states)
        rows = ctx.eval_rows.cpu()
        y = ctx.data.y
        labels = y[rows].numpy() if isinstance(y, Tensor) and y.dim() == 1 else np.full(len(rows), -1)
        arrays = {
            "x_adv": (x_adv.float() if x_adv.dtype == torch.bfloat16 else x_adv).numpy(),
            "success": success.numpy(),
            "item": item.numpy(),
            "index": rows.numpy(),
            "label": labels,
            "clean_pred": clean.pred[rows].numpy(),
            "adv_pred": adv_pred.numpy(),
            "attacks": np.array([step.attack for step in ctx.steps]),
            "epsilons": np.array([s.epsilon if s.epsilon is not None else np.nan for s in ctx.steps]),
            "complete": np.array(result.complete),
        }

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **cast(dict[str, Any], arrays))

        atomic_write(self.out / ADVERSARIAL, save)

    def write_examples(self, result: RunResult, ctx: RunContext, clean: CleanPass,
                       states: Sequence[StepState]) -> bool:
        """Up to MAX_EXAMPLES verified successes (one per input) for the report, as examples.npz: taken in turn
        from every attack that broke inputs, those a soundness flag names first (at least one per attack)."""
        kept = [(step, example) for step, state in zip(ctx.steps, states, strict=True) for example in state.examples]
        attacks = [step.attack for step, _ in kept]
        limit = max(MAX_EXAMPLES, len(set(attacks)))
        chosen: list[tuple[Step, dict[str, Any]]] = []
        seen: set[int] = set()
        for position in in_turn(attacks, result.flagged_attacks(attacks), len(kept)):
            step, example = kept[position]
            if example["index"] not in seen and len(chosen) < limit:
                seen.add(example["index"])
                chosen.append((step, example))
        if not chosen:
            return False
        index = [e["index"] for _, e in chosen]
        y = ctx.data.y
        labels = [int(y[i]) if isinstance(y, Tensor) and y.dim() == 1 else -1 for i in index]
        arrays = {
            "index": np.array(index),
            "clean": torch.stack([e["clean"] for _, e in chosen]).float().numpy(),
            "adversarial": torch.stack([e["adversarial"] for _, e in chosen]).float().numpy(),
            "label": np.array(labels),
            "clean_pred": np.array([int(clean.pred[i]) for i in index]),
            "adv_pred": np.array([e["adv_pred"] for _, e in chosen]),
            "attack": np.array([s.attack for s, _ in chosen]),
            "epsilon": np.array([s.epsilon if s.epsilon is not None else np.nan for s, _ in chosen]),
            "classes": np.array(ctx.data.classes or [str(i) for i in range(ctx.num_classes or 0)]),
            "bounds": np.array(ctx.bounds),
        }
        extra_keys = set.intersection(*(set(e.get("extra", {})) for _, e in chosen))
        for key in sorted(extra_keys):  # per-task arrays (label maps, boxes) for the task's report panel
            arrays[key] = np.stack([e["extra"][key].numpy() for _, e in chosen])

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **cast(dict[str, Any], arrays))

        atomic_write(self.out / EXAMPLES, save)
        return True


def final_inputs(ctx: RunContext, states: Sequence[StepState]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per evaluation input (ctx.eval_rows): (x_adv, success, item, adv_pred). x_adv is the candidate of the
    first item in plan order whose verified success the run recorded (clipped, re-run, within that item's
    budget and mask), else the clean input; item is that item's index (-1: none), adv_pred its label then."""
    rows = ctx.eval_rows.cpu()
    x_adv = ctx.data.x[rows].detach().cpu().clone()
    success = torch.zeros(len(rows), dtype=torch.bool)
    item = torch.full((len(rows),), -1, dtype=torch.long)
    adv_pred = torch.full((len(rows),), -1, dtype=torch.long)
    position = torch.full((ctx.n,), -1, dtype=torch.long)
    position[rows] = torch.arange(len(rows))
    for k, state in enumerate(states):
        taken: dict[int, Tensor] = {}
        for batch_rows, candidates in state.adversarial or []:
            for row, candidate in zip(batch_rows.tolist(), candidates, strict=True):
                taken[row] = candidate  # a row recorded twice keeps its last record
        for row, candidate in taken.items():
            at = int(position[row])
            if at < 0 or success[at] or not bool(state.success[row]):
                continue
            x_adv[at] = candidate.to(x_adv.dtype)
            success[at] = True
            item[at] = k
            adv_pred[at] = state.adv_label[row]
    return x_adv, success, item, adv_pred
