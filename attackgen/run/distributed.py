"""One run over several processes, GPUs or nodes, launched with torchrun: ``torchrun -m attackgen run ...``.

Why it looks like this:

- Work is handed out by cost, not by count. Inputs that survive the first attack cost ten times more
  than those broken early, so a fixed split (DistributedSampler) leaves ranks waiting for the slowest.
  Instead the evaluation inputs are cut into chunks of ``--batch-size`` and each rank claims the next
  chunk from a counter in torchrun's own key-value store (``store.add``) whenever it is free. A chunk
  runs through every plan item on the rank that claimed it (survivors only, as in a plain run), so the
  ranks finish within one chunk of each other and every input is attacked and counted exactly once
  (no padding, no duplicates).
- Per input the work is what a plain ``attackgen run`` does with the same ``--batch-size`` and seed:
  the chunks are the plain run's chunks, the survivors of a chunk are the same, each input draws from
  its own stream seeded by (seed, item, input index) and what an attack still draws per batch is seeded
  by the batch's first input. So outcomes do not depend on the number of ranks or on which rank took a
  chunk.
- No collective call inside an attack: the only collectives are at the start (do all ranks run the same
  plan, seed, model, data?), while fitting a universal perturbation, and at the end (a barrier before
  rank 0 merges). AutoAttack's DDP runs time out on collectives inside long attack phases
  (fra31/auto-attack #84). A fit whose attack supports it (``data_parallel_fit``: the universal
  perturbation and Metzen's) is data-parallel: each rank takes its share of every batch and the updates
  are summed over the ranks, so the fit equals the one-process fit up to the order of float additions;
  other fits (the patches) run on rank 0 and the result is sent to the others.
- Every finished chunk is a file, ``parts/chunk-NNNNNN.pt``, written atomically by its rank. A run that
  is stopped (a rank killed, a node lost, Ctrl-C) resumes with ``--resume`` on any number of ranks: the
  chunks on disk are kept, the others are handed out again, and the merge reads the files. The output
  folder must be one that every node sees (a shared filesystem, as on Slurm clusters).
- The folder is locked (attackgen.run.lock) by rank 0 for the whole run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attackgen.results import Flag, RunResult
from attackgen.run.assemble import assemble
from attackgen.run.attacks.base import Attack, AttackEnv, Shard, UniversalAttack
from attackgen.run.context import RunContext, RunOptions
from attackgen.run.executor import Executor, build_executor
from attackgen.run.folder import CHECKPOINT, OUTPUT_FILES, RESULTS, atomic_write
from attackgen.run.items import RunError, Step
from attackgen.run.lock import FolderLock
from attackgen.run.steps import MAX_EXAMPLES, CleanPass, StepRunner, StepState
from taxonomy.errors import AttackgenError

PARTS = "parts"
IDENTITY = "identity.json"
CHUNK_FILE = "chunk-{:06d}.pt"
CHUNK_PATTERN = re.compile(r"chunk-(\d{6})\.pt$")
ESCALATION_FILE = "escalation-{:03d}-{:06d}.pt"  # (index of the stage's first step, chunk): stages run one by one
ESCALATION_GLOB = "escalation-*.pt"


def escalation_pattern(first: int) -> re.Pattern[str]:
    return re.compile(rf"escalation-{first:03d}-(\d{{6}})\.pt$")
PART_VERSION = 1
TIMEOUT_ENV = "ATTACKGEN_DIST_TIMEOUT_S"
CRASH_ENV = "ATTACKGEN_TEST_CRASH"
"""Fault injection for the tests: "RANK:K" makes that rank die (os._exit) after it claims its (K+1)-th chunk."""
SLICED = ("attacked", "success", "hit", "within", "norms", "queries", "adv_label")


@dataclasses.dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch (its environment variables)."""

    world_size: int
    rank: int
    local_rank: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch | None:
        """The launch torchrun describes, or None for a plain process (no RANK and WORLD_SIZE)."""
        env = os.environ if env is None else env
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return None
        try:
            launch = cls(int(env["WORLD_SIZE"]), int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"])))
        except ValueError:
            raise RunError(f"RANK={env.get('RANK')!r} WORLD_SIZE={env.get('WORLD_SIZE')!r}: expected whole numbers "
                           "(set by torchrun).") from None
        if not 0 <= launch.rank < launch.world_size:
            raise RunError(f"RANK={launch.rank} is outside WORLD_SIZE={launch.world_size} (set by torchrun).")
        return launch


def identity_mismatch(identities: Sequence[Mapping[str, Any]]) -> str | None:
    """What differs between the ranks' view of the run (one line), or None when they all agree."""
    reference = identities[0]
    lines = []
    for rank, other in enumerate(identities[1:], start=1):
        differ = [k for k in reference if other.get(k) != reference[k]]
        if differ:
            lines.append(f"rank {rank} has " + ", ".join(f"{k} {other.get(k)!r} (rank 0: {reference[k]!r})"
                                                          for k in differ))
    return "; ".join(lines) or None


class RankRunner(StepRunner):
    """The step runner of one rank: a universal fit is data-parallel or comes from rank 0."""

    launch: Launch
    parts: Path

    def fit(self, step: Step, state: StepState, attack: UniversalAttack, env: AttackEnv) -> None:
        """A data-parallel fit where the attack supports one (each rank a share of every batch, updates
        summed over the ranks); otherwise rank 0 fits and sends the perturbation to the others."""
        import torch.distributed as dist

        saved = self.parts / f"fitted-{step.index}.pt"
        if state.fitted is None and saved.exists():  # a resumed run does not fit again
            kept = torch.load(saved, map_location="cpu", weights_only=True)
            state.fitted, state.fit_queries = kept["fitted"], int(kept["fit_queries"])
        fresh = state.fitted is None
        if type(attack).data_parallel_fit or not fresh:
            shard = Shard(self.launch.rank, self.launch.world_size, all_reduce_sum)
            super().fit(step, state, attack, dataclasses.replace(env, shard=shard))
            if fresh:
                state.fit_queries = int(all_reduce_sum(torch.tensor(state.fit_queries)))
        else:
            payload: list[Any] = [None]
            if self.launch.rank == 0:
                super().fit(step, state, attack, env)
                payload = [(state.fitted, state.fit_queries)]
            dist.broadcast_object_list(payload, src=0)
            if self.launch.rank != 0:
                state.fitted, state.fit_queries = payload[0]
                super().fit(step, state, attack, env)  # takes the fitted perturbation, fits nothing
        if fresh and self.launch.rank == 0:
            record = {"fitted": state.fitted, "fit_queries": state.fit_queries}
            atomic_write(saved, lambda tmp: torch.save(record, tmp))


def fresh_states(states: Sequence[StepState], n: int) -> list[StepState]:
    """Empty states (the fitted perturbations kept), so a chunk file holds one chunk only."""
    out = [StepState.empty(n) for _ in states]
    for new, old in zip(out, states, strict=True):
        new.fitted, new.fit_queries = old.fitted, old.fit_queries
    return out


def write_part(parts: Path, chunk: int, rows: Tensor, states: Sequence[StepState], flags: Sequence[Any],
               rank: int, name: str | None = None) -> None:
    steps = []
    for state in states:
        sliced: dict[str, Any] = {name: getattr(state, name)[rows].clone() for name in SLICED}
        sliced["metrics"] = {name: column[rows].clone() for name, column in state.metrics.items()}
        sliced.update(counts=dict(state.counts), time_s=state.time_s, examples=list(state.examples))
        steps.append(sliced)
    payload = {"version": PART_VERSION, "chunk": chunk, "rows": rows.clone(), "rank": rank,
               "host": socket.gethostname(), "steps": steps, "flags": [f.model_dump() for f in flags]}
    atomic_write(parts / (name or CHUNK_FILE.format(chunk)), lambda tmp: torch.save(payload, tmp))


def merge_parts(parts: Path, states: list[StepState], n: int, n_chunks: int, flags: Any,
                escalation_first: int | None = None) -> tuple[list[StepState], list[int]]:
    """States filled from every chunk file (fits kept from ``states``) and the chunks that are missing; with
    ``escalation_first``, the files of the escalation stage whose first step has that index."""
    merged = fresh_states(states, n)
    stage = escalation_first
    found = done_chunks(parts, CHUNK_PATTERN if stage is None else escalation_pattern(stage))
    for chunk in sorted(found):
        path = parts / (CHUNK_FILE.format(chunk) if stage is None else ESCALATION_FILE.format(stage, chunk))
        part = torch.load(path, map_location="cpu", weights_only=True)
        rows = part["rows"]
        for state, sliced in zip(merged, part["steps"], strict=True):
            for name in SLICED:
                getattr(state, name)[rows] = sliced[name]
            for name, values in sliced["metrics"].items():
                state.column(name)[rows] = values
            for name, value in sliced["counts"].items():
                state.count(name, value)
            state.time_s += float(sliced["time_s"])
            state.examples.extend(sliced["examples"])
        for flag in part["flags"]:
            flags.add(flag["check"], flag["severity"], flag["evidence"], flag["fix"])
    for state in merged:
        state.examples = state.examples[:MAX_EXAMPLES]
    return merged, [c for c in range(n_chunks) if c not in found]


def all_reduce_sum(t: Tensor) -> Tensor:
    """The sum of ``t`` over the ranks (through the CPU: the process group is gloo on every device)."""
    import torch.distributed as dist

    total = t.detach().cpu().clone()
    dist.all_reduce(total)
    return total.to(t.device)


def done_chunks(parts: Path, pattern: re.Pattern[str] = CHUNK_PATTERN) -> set[int]:
    if not parts.is_dir():
        return set()
    return {int(m.group(1)) for p in parts.iterdir() if (m := pattern.match(p.name))}


def _identity(executor: Executor, launch: Launch) -> dict[str, Any]:
    from attackgen import __version__
    from attackgen.run.context import run_identity

    options = executor.options
    base = run_identity(executor.plan, executor.model_ref, executor.data_ref, options)
    return {"plan_hash": base["plan_hash"], "spec_hash": base["spec_hash"], "model": executor.model_ref,
            "data": executor.data_ref, "seed": options.seed, "limit": options.limit, "batch_size": options.batch_size,
            "device_type": "cuda" if options.device.startswith("cuda") else options.device,
            "autocast": options.autocast, "compile": options.compile, "resume": options.resume, "force": options.force,
            "attackgen": __version__, "world_size": launch.world_size}


RESUME_KEYS = ("plan_hash", "spec_hash", "model", "data", "seed", "limit", "batch_size", "device_type", "autocast")


def claim_folder(out: Path, identity: Mapping[str, Any], options: RunOptions) -> tuple[set[int], str]:
    """Rank 0: may this run write ``out``? Returns the chunks already done and a note for the console."""
    parts = out / PARTS
    saved = parts / IDENTITY
    if saved.exists():
        try:
            existing = json.loads(saved.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunError(f"-o {out}: {saved} cannot be read ({error}); use --force to start over.") from None
    elif (out / CHECKPOINT).exists() or (out / RESULTS).exists():
        if not options.force:
            raise RunError(f"-o {out}: holds a single-process run (no {PARTS}/ folder); a distributed run cannot "
                           "resume or extend it. Choose another output folder, or pass --force to replace it.")
        existing = None
    else:
        existing = None
    if options.force:
        import shutil

        for name in (*OUTPUT_FILES, PARTS):
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        existing = None
    if existing is not None:
        differ = [k for k in RESUME_KEYS if existing.get(k) != identity[k]]
        if differ:
            what = ", ".join(f"{k} {existing.get(k)!r} (this run: {identity[k]!r})" for k in differ)
            verb = "cannot resume it" if options.resume else "refusing to mix two runs"
            raise RunError(f"-o {out}: holds another distributed run ({what}); {verb}. Choose another output folder, "
                           "or pass --force to replace it.")
        if not options.resume:
            raise RunError(f"-o {out}: already holds a distributed run of this plan; pass --resume to continue it "
                           "(a finished run is merged again) or --force to run it again from scratch.")
        done = done_chunks(parts)
        return done, f"resuming: {len(done)} finished chunks in {parts} are kept, not run again"
    parts.mkdir(parents=True, exist_ok=True)
    (parts / IDENTITY).write_text(json.dumps({k: identity[k] for k in RESUME_KEYS}, indent=1), encoding="utf-8")
    return set(), ""


def _crash_point(launch: Launch) -> int | None:
    value = os.environ.get(CRASH_ENV)
    if not value:
        return None
    rank, _, count = value.partition(":")
    return int(count) if int(rank) == launch.rank else None


def run_distributed(
    plan_path: str | Path,
    model_ref: str,
    data_ref: str,
    out_dir: str | Path,
    options: RunOptions,
    launch: Launch,
    echo: Callable[[str], None] | None = None,
) -> RunResult | None:
    """This rank's part of a torchrun launch. Rank 0 returns the merged result; the others return None."""
    import torch.distributed as dist

    if options.save_adversarial:  # the ranks' per-chunk files do not carry the inputs: refuse, never write half
        raise RunError("--save-adversarial: not available under torchrun yet (the ranks do not merge the "
                       "adversarial inputs); run without torchrun, or drop the option.")

    say = echo if (echo is not None and launch.rank == 0) else (lambda message: None)
    out = Path(out_dir)
    if options.device == "auto" and torch.cuda.is_available():
        options = dataclasses.replace(options, device=f"cuda:{launch.local_rank}")
    if options.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_device(torch.device(options.device))
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 6 * 3600)))
    # Object collectives only (hashes, the fitted perturbation, a barrier): gloo serves them on every device.
    dist.init_process_group("gloo", timeout=timeout)
    lock: FolderLock | None = None
    ctx: RunContext | None = None
    try:
        executor = build_executor(plan_path, model_ref, data_ref, out, options, say)
        parts = out / PARTS
        identity = _identity(executor, launch)
        gathered: list[Any] = [None] * launch.world_size
        dist.all_gather_object(gathered, identity)
        problem = identity_mismatch(gathered)
        if problem:
            raise RunError(f"the {launch.world_size} ranks of this torchrun launch do not run the same thing: "
                           f"{problem}. Give every node the same command line, plan file and attackgen version.")

        ctx = executor.prepare()
        n_inputs = len(ctx.eval_rows)
        if launch.world_size > n_inputs:
            raise RunError(f"torchrun started {launch.world_size} ranks for {n_inputs} inputs to attack: every rank "
                           "needs at least one input. Use --nproc-per-node (times --nnodes) of at most "
                           f"{n_inputs}, or more inputs (--limit).")
        decision: list[Any] = [None]
        if launch.rank == 0:
            try:
                if out.exists() and not out.is_dir():
                    raise RunError(f"-o {out}: exists and is not a folder.")
                lock = FolderLock(out, f"attackgen run, {launch.world_size} ranks").acquire()
                if lock.took_over is not None:
                    say(f"note: took over the lock of a run that is gone (pid {lock.took_over.get('pid')}, "
                        f"started {lock.took_over.get('started')})")
                done, note = claim_folder(out, identity, options)
                decision = [{"done": sorted(done), "note": note, "nonce": uuid.uuid4().hex}]
            except AttackgenError as error:
                decision = [{"error": str(error)}]
        dist.broadcast_object_list(decision, src=0)
        if "error" in decision[0]:
            raise RunError(decision[0]["error"]) if launch.rank == 0 else RunError(
                f"rank 0 refused the output folder: {decision[0]['error']}")
        if decision[0]["note"]:
            say(decision[0]["note"])

        for step in ctx.steps:  # a missing surrogate is a bad input: say so before any attack runs
            if step.access == "surrogate":
                executor.resources.surrogate(step)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        runner = RankRunner(ctx, executor.resources, executor.flags, lambda: None, say)
        runner.launch, runner.parts = launch, parts
        torch.manual_seed(options.seed)
        clean = runner.clean_pass()
        states = [StepState.empty(ctx.n) for _ in ctx.steps]
        chunks = list(torch.split(ctx.eval_rows, ctx.chunk_size))
        if len(chunks) < 2 * launch.world_size:
            say(f"note: {len(chunks)} chunks of {ctx.chunk_size} inputs for {launch.world_size} ranks; a smaller "
                "--batch-size balances the ranks better")
        setups: list[tuple[Attack, AttackEnv]] = [runner.setup(step, states) for step in ctx.steps]
        todo = [c for c in range(len(chunks)) if c not in set(decision[0]["done"])]
        store = _work_store(decision[0]["nonce"], timeout)
        crash_after = _crash_point(launch)
        mine = 0
        while True:
            claim = store.add("next", 1) - 1
            if claim >= len(todo):
                break
            if crash_after is not None and mine >= crash_after:
                os._exit(17)  # fault injection (tests): die holding a claimed, unfinished chunk
            chunk = todo[claim]
            states = fresh_states(states, ctx.n)
            runner.run_rows(chunks[chunk], states, clean, setups)
            write_part(parts, chunk, chunks[chunk], states, executor.flags.items, launch.rank)
            mine += 1
            finished = store.add("finished", 1)
            if options.progress:
                say(f"{finished} of {len(todo)} chunks done")
        dist.barrier()
        return _finish(executor, ctx, clean, states, started, len(chunks), launch, store, runner)
    except KeyboardInterrupt:
        if launch.rank == 0 and "clean" in locals() and "states" in locals() and ctx is not None:
            _merge(executor, ctx, clean, states, started, len(torch.split(ctx.eval_rows, ctx.chunk_size)), launch)
        raise
    finally:
        if lock is not None:
            lock.release()
        if dist.is_initialized():
            dist.destroy_process_group()


def _work_store(nonce: str, timeout: timedelta) -> Any:
    """A client of the key-value store torchrun serves at MASTER_ADDR:MASTER_PORT, under this run's prefix
    (a fresh prefix per launch: a counter from a restarted launch must not be reused)."""
    import torch.distributed as dist

    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500"))
    store = dist.TCPStore(host, port, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"attackgen/{nonce}/", store)


def _finish(executor: Executor, ctx: RunContext, clean: CleanPass, states: list[StepState], started: str,
            n_chunks: int, launch: Launch, store: Any, runner: RankRunner) -> RunResult | None:
    """After every plan chunk is done: rank 0 merges them and judges soundness; its flags go to every rank,
    and if they call for escalation every rank runs the adaptive counterparts on its share of the chunks
    (the same choice on every rank, from the same flags); then rank 0 writes the one result."""
    import torch.distributed as dist

    from attackgen.run.escalate import TRIGGERS, escalation_setting, mark_disabled, run_escalation

    parts = Path(executor.folder.out) / PARTS
    decision: list[Any] = [None]
    if launch.rank == 0:
        merged, missing = merge_parts(parts, states, ctx.n, n_chunks, executor.flags)
        before = assemble(ctx, clean, merged, executor.flags.items, started, not missing)
        if missing:
            decision = [{"error": f"-o {executor.folder.out}: after all ranks finished, {len(missing)} of {n_chunks} "
                         f"chunk files are missing from {parts} (first: chunk {missing[0]}); the output folder must "
                         "be on a filesystem every node sees. Run again with --resume on a shared folder."}]
        else:
            sound = executor._soundness(ctx, before)
            decision = [{"flags": [f.model_dump() for f in sound],
                         "disabled": escalation_setting(executor.options, executor.plan)}]
            for old in parts.glob(ESCALATION_GLOB):  # a torchrun run's escalation is not checkpointed: run anew
                old.unlink()
    dist.broadcast_object_list(decision, src=0)
    if "error" in decision[0]:
        raise RunError(decision[0]["error"])
    sound = [Flag.model_validate(f) for f in decision[0]["flags"]]
    disabled = decision[0]["disabled"]
    escalating = disabled is None and any(f.check in TRIGGERS for f in sound)
    if launch.rank != 0 and not escalating:
        return None
    if launch.rank != 0:  # the plan's merged states decide the survivors of the escalation items
        merged, _ = merge_parts(parts, states, ctx.n, n_chunks, executor.flags)
        before = assemble(ctx, clean, merged, executor.flags.items, started, True)
    result, written_ctx, written = before, ctx, merged
    if escalating:
        if launch.rank == 0:  # a stop during escalation leaves the plan's result, saying so
            partial, marked = before.model_copy(deep=True), [f.model_copy() for f in sound]
            mark_disabled(partial, marked, "did not finish (the run stopped during escalation; --resume runs it "
                          "again)")
            partial.flags.extend(marked)
            executor.folder.write(partial, ctx, clean, merged)

        def run_steps(ctx2: RunContext, new: list[Step], all_states: list[StepState], clean: CleanPass) -> None:
            _escalate_chunks(executor, ctx2, new, all_states, clean, launch, store, runner)

        written_ctx, written, result = run_escalation(ctx, executor.resources, executor.flags, clean, merged, sound,
                                                      before, started, None, runner.echo, run_steps=run_steps)
    else:
        mark_disabled(result, sound, disabled)
    if launch.rank != 0:
        return None
    result.flags.extend(sound)
    result.metrics["world_size"] = float(launch.world_size)
    result.metrics["chunks_done"] = float(n_chunks)
    executor.folder.write(result, written_ctx, clean, written)
    return result


def _escalate_chunks(executor: Executor, ctx2: RunContext, new: list[Step], all_states: list[StepState],
                     clean: CleanPass, launch: Launch, store: Any, runner: RankRunner) -> None:
    """The escalation items over the chunks, handed out as the plan's were (a counter in the store); each
    chunk's escalation states go to ``parts/escalation-NNNNNN.pt``, and every rank reads them all back."""
    import torch.distributed as dist

    parts = Path(executor.folder.out) / PARTS
    first = len(ctx2.steps) - len(new)
    esc_runner = RankRunner(ctx2, executor.resources, executor.flags, lambda: None, runner.echo)
    esc_runner.launch, esc_runner.parts = launch, parts
    setups = [esc_runner.setup(step, all_states) for step in new]
    chunks = list(torch.split(ctx2.eval_rows, ctx2.chunk_size))
    while True:
        claim = store.add(f"escalation-next-{first}", 1) - 1  # one counter per stage
        if claim >= len(chunks):
            break
        states = all_states[:first] + fresh_states(all_states[first:], ctx2.n)
        esc_runner.run_rows(chunks[claim], states, clean, setups, first)
        write_part(parts, claim, chunks[claim], states[first:], executor.flags.items, launch.rank,
                   ESCALATION_FILE.format(first, claim))
    dist.barrier()
    merged, _ = merge_parts(parts, all_states[first:], ctx2.n, len(chunks), executor.flags, first)
    all_states[first:] = merged


def _merge(executor: Executor, ctx: RunContext, clean: CleanPass, states: list[StepState], started: str,
           n_chunks: int, launch: Launch) -> RunResult:
    """A stopped run: the chunks finished so far, written as results.json with complete: false."""
    parts = Path(executor.folder.out) / PARTS
    merged, missing = merge_parts(parts, states, ctx.n, n_chunks, executor.flags)
    result = assemble(ctx, clean, merged, executor.flags.items, started, False)
    result.metrics["world_size"] = float(launch.world_size)
    result.metrics["chunks_done"] = float(n_chunks - len(missing))
    executor.folder.write(result, ctx, clean, merged)
    executor.echo(f"stopped: {n_chunks - len(missing)} of {n_chunks} chunks are saved in {parts}; "
                  "continue with --resume")
    return result
