"""Coverage audit: which threat cells a suite of specs, plans and run results covers (no torch).

The threat space is the product of the axis values with parameters abstracted (``lp:inf``, not
``epsilon=0.03``), from :mod:`taxonomy.space`. For a suite the audit says per cell: covered (by which
specs, plans and runs, with their robust accuracy), infeasible (by which rule ids), or a gap; per axis
value; per pair of axes (covered and feasible value pairs); the weakest covered cells; the soundness
flags of the runs; and the ATLAS techniques exercised.

Built for large suites: a results file is read with ``json`` only (no per-input validation), each
distinct spec is parsed once (memoised by its hash), and the counting runs over integer codes with
numpy. Rendering lives in :mod:`attackgen.audit.render`.

Size (about 1,160 lines): the audit's data model (cells, per-axis and pair counts, weakest cells,
ATLAS) and its fast integer-coded counting are one pipeline over the same arrays; rendering is
already apart (attackgen.audit.render). A split along the pipeline stages is a candidate for later.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from attackgen.audit.atlas import TECHNIQUES, TechniqueCoverage, techniques_for
from attackgen.audit.soundness import plan_kind, run_flags, suite_flags
from attackgen.results import RESULTS_VERSION, Flag
from taxonomy.errors import AttackgenError, SpecError
from taxonomy.spec import AttackSpec, dump_spec, load_yaml_text, parse_spec

SPEC_SUFFIXES = (".yaml", ".yml")
DATA_SUFFIXES = (".json", ".jsonl")
GAP, COVERED, INFEASIBLE = "gap", "covered", "infeasible"


class AuditError(AttackgenError):
    """Nothing in the given paths could be read as a spec, plan or results file."""


# --------------------------------------------------------------------------- the threat space


def _rule_id(violation: Any) -> str:
    rule = getattr(violation, "rule", None)
    return str(getattr(rule, "id", None) or getattr(violation, "id", None) or violation)


def _is_error(violation: Any) -> bool:
    severity = getattr(violation, "severity", None)
    if severity is None:
        severity = getattr(getattr(violation, "rule", None), "severity", "error")
    return str(getattr(severity, "value", severity)).lower() in ("error", "h", "hard")


@dataclass
class ThreatSpace:
    """The abstract cells (the product of the axis values, in order) as integer codes, with feasibility.

    Rows are positions in the product, so a cell's row is arithmetic on its value indices; a space
    restricted to some tasks keeps a map from full-product rows to its own rows. The rules' verdicts are
    a boolean matrix (cells x rule ids) of error-severity violations.
    """

    axes: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    codes: np.ndarray  # (rows, axes) value indices
    feasible: np.ndarray  # bool per row
    rule_ids: tuple[str, ...]
    blocked: np.ndarray  # (rows, rules) bool: error-level rule j blocks the cell
    cell_type: Callable[..., Any]
    cells_of: Callable[[AttackSpec], Iterable[Any]]
    spec_for_cell: Callable[[Any], AttackSpec] | None = None
    realisers: Callable[[Any, bool], Sequence[str]] | None = None  # (cell, implemented only) -> attack ids
    local: np.ndarray | None = None  # full-product row -> row here (-1: left out); None: the whole product

    @classmethod
    def from_axes(
        cls,
        axes: Mapping[str, Sequence[Any]],
        cell_type: Callable[..., Any],
        verdict: Callable[[Any], Sequence[Any]],
        cells_of: Callable[[AttackSpec], Iterable[Any]],
        spec_for_cell: Callable[[Any], AttackSpec] | None = None,
        cache: Path | None = None,
        realisers: Callable[[Any, bool], Sequence[str]] | None = None,
    ) -> ThreatSpace:
        """The product of ``axes`` (cells built by ``cell_type(*values)``), verdicts cached in ``cache``."""
        names = tuple(axes)
        values = tuple(tuple(v) for v in axes.values())
        sizes = [len(v) for v in values]
        if not all(sizes):
            raise AuditError("the threat space is empty")
        grids = np.indices(sizes).reshape(len(sizes), -1).T.astype(np.int16)  # product order
        loaded = _load_verdicts(cache, len(grids)) if cache else None
        if loaded is None:
            rule_index: dict[str, int] = {}
            hits: list[tuple[int, int]] = []
            for row, combo in enumerate(itertools.product(*values)):
                for violation in verdict(cell_type(*combo)):
                    if _is_error(violation):
                        hits.append((row, rule_index.setdefault(_rule_id(violation), len(rule_index))))
            blocked = np.zeros((len(grids), len(rule_index)), dtype=bool)
            if hits:
                rows, cols = np.array(hits).T
                blocked[rows, cols] = True
            rule_ids = tuple(rule_index)
            if cache:
                _save_verdicts(cache, rule_ids, blocked)
        else:
            rule_ids, blocked = loaded
        feasible = np.asarray(~blocked.any(axis=1))
        return cls(names, values, grids, feasible, rule_ids, blocked, cell_type, cells_of, spec_for_cell, realisers)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def subset(self, mask: np.ndarray) -> ThreatSpace:
        rows = np.flatnonzero(mask)
        full = self.local if self.local is not None else np.arange(len(self))
        local = np.full(full.shape[0], -1, dtype=np.int64)
        keep = np.isin(full, rows)
        local[keep] = np.searchsorted(rows, full[keep])
        return dataclasses.replace(
            self, codes=self.codes[rows], feasible=self.feasible[rows], blocked=self.blocked[rows], local=local,
        )

    def only(self, axis: str, keep: Iterable[Any]) -> ThreatSpace:
        col = self.axes.index(axis)
        wanted = [self.values[col].index(v) for v in keep if v in self.values[col]]
        return self.subset(np.isin(self.codes[:, col], wanted))

    def row_of(self, cell: Any) -> int | None:
        """The cell's row here; None when the cell is not in this space."""
        full = 0
        for axis, values in zip(self.axes, self.values, strict=True):
            try:
                full = full * len(values) + values.index(getattr(cell, axis))
            except (ValueError, AttributeError):
                return None
        if self.local is None:
            return full
        row = int(self.local[full])
        return row if row >= 0 else None

    def cell(self, row: int) -> Any:
        return self.cell_type(*(self.values[c][k] for c, k in enumerate(self.codes[row])))

    def blocking(self, row: int) -> tuple[str, ...]:
        """Ids of the error-level rules that make the cell infeasible (empty when feasible)."""
        return tuple(self.rule_ids[j] for j in np.flatnonzero(self.blocked[row]))

    def value(self, row: int, axis: str) -> Any:
        col = self.axes.index(axis)
        return self.values[col][self.codes[row, col]]

    def label(self, row: int) -> str:
        return " / ".join(value_label(self.values[c][k]) for c, k in enumerate(self.codes[row]))

    def describe(self, row: int) -> dict[str, Any]:
        return {axis: json_value(self.values[c][self.codes[row, c]]) for c, axis in enumerate(self.axes)}


def value_label(value: Any) -> str:
    if isinstance(value, bool):
        return "spatial" if value else "whole input"
    return str(getattr(value, "value", value))


def json_value(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float)) or value is None else str(getattr(value, "value", value))


def cache_dir() -> Path:
    """Where the rules' verdicts over the space are cached ($ATTACKGEN_CACHE or ~/.cache/attackgen)."""
    import os

    base = os.environ.get("ATTACKGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "attackgen")
    return Path(base)


def verdict_cache() -> Path:
    """The file caching the rules' verdicts over the space for the taxonomy as it is now."""
    return cache_dir() / f"verdicts-{_taxonomy_digest()}.npz"


def _taxonomy_digest() -> str:
    """A digest of the taxonomy's source: the verdicts change only when it does."""
    import hashlib

    import taxonomy

    digest = hashlib.sha256()
    for path in sorted(Path(taxonomy.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def _load_verdicts(path: Path, n: int) -> tuple[tuple[str, ...], np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            rule_ids = tuple(str(r) for r in data["rule_ids"])
            blocked = np.unpackbits(data["blocked"], axis=1, count=len(rule_ids)).astype(bool)
    except (OSError, KeyError, ValueError):
        return None
    return (rule_ids, blocked) if blocked.shape == (n, len(rule_ids)) else None


def _save_verdicts(path: Path, rule_ids: tuple[str, ...], blocked: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, rule_ids=np.array(rule_ids, dtype=str), blocked=np.packbits(blocked, axis=1))
        tmp.replace(path)
    except OSError:  # a read-only home: compute again next time
        pass


@lru_cache(maxsize=1)
def default_space() -> ThreatSpace:
    """The project's threat space (taxonomy.space) with the rules' verdicts, cached on disk by taxonomy digest."""
    from taxonomy import space
    from taxonomy.catalog import CATALOG, cell_features, fits_purpose, implemented

    runnable = implemented()  # one mapping: the realiser index is cached per catalogue object

    def realisers(cell: Any, implemented_only: bool) -> Sequence[str]:
        """Attacks that realise the cell breaking no error rule, and that the cell is for (catalog.REQUIRES:
        no SSIM-PGD on a plain Linf cell), as the planner's survey and plan_cell pick them; so the audit's
        runnable tier and `attackgen catalog --gaps` count the same cells."""
        if implemented_only and not runnable:
            return ()
        catalog = runnable if implemented_only else CATALOG
        features = cell_features(cell)
        return tuple(i for i in space.feasible_realisers(cell, catalog) if fits_purpose(features, catalog[i]))

    return ThreatSpace.from_axes(space.AXES, space.ThreatCell, space.cell_feasibility_verdict, space.cells_of,
                                 space.spec_for_cell, verdict_cache(), realisers)


# --------------------------------------------------------------------------- reading a suite


@dataclass(slots=True)
class ItemRecord:
    """An ItemResult without its per-input records."""

    attack: str
    params: Mapping[str, Any]
    epsilon: float | None
    n_attacked: int
    n_success: int
    robust_accuracy_after: float
    transfer_estimate: bool


@dataclass(frozen=True)
class PlanFacts:
    """What the audit needs from a run's items, the same for every run of one plan (by plan hash)."""

    attacks: tuple[str, ...]
    kind: str  # soundness.plan_kind: white_box, single_step or other
    atlas: frozenset[str]  # ATLAS techniques the plan's attacks exercise (from the catalogue)
    transfer: bool = False  # some item is a transfer estimate (measured on a surrogate or proxy)

    @classmethod
    def of(cls, items: Sequence[ItemRecord]) -> PlanFacts:
        from taxonomy.catalog import CATALOG

        atlas = {t for i in items for t in (CATALOG[i.attack].atlas if i.attack in CATALOG else ())}
        return cls(tuple(i.attack for i in items), plan_kind(items), frozenset(atlas),
                   any(i.transfer_estimate for i in items))


@dataclass(slots=True)
class RunRecord:
    """A RunResult as the audit needs it (duck-types RunResult for the soundness checks).

    ``items`` is empty when the reader skipped them (a plan it had already read, checks not re-run);
    ``plan`` always holds what the audit needs from them. An empty curve or flags may be a tuple.
    """

    source: str
    spec: Mapping[str, Any]
    spec_hash: str
    plan_hash: str
    task: str
    model: str
    data: str
    n_inputs: int
    clean_accuracy: float
    robust_accuracy: float
    curve: Sequence[Mapping[str, float]]
    items: Sequence[ItemRecord]
    plan: PlanFacts
    flags: Sequence[Mapping[str, Any]]
    metrics: Mapping[str, float]
    complete: bool

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "?"))

    @property
    def label(self) -> str:
        return f"{self.name} on {self.model}/{self.data}" + ("" if self.complete else " (incomplete)")


@dataclass(slots=True)
class SpecRecord:
    """A spec file, or the spec embedded in a plan."""

    source: str
    kind: str  # "spec" or "plan"
    spec: AttackSpec
    spec_hash: str

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class SourceNote:
    path: str
    kind: str  # spec, plan, results, queries (an endpoint's query log), skipped, error
    records: int = 0
    message: str = ""


@dataclass
class Suite:
    specs: list[SpecRecord] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    sources: list[SourceNote] = field(default_factory=list)
    rechecked: bool = False  # the results-level soundness checks were run again on every run

    @property
    def problems(self) -> list[SourceNote]:
        return [s for s in self.sources if s.kind == "error"]

    @property
    def empty(self) -> bool:
        return not self.specs and not self.runs


def _walk(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for child in sorted(path.rglob("*")):
        parts = child.relative_to(path).parts
        hidden = any(p.startswith(".") or p == "__pycache__" for p in parts)
        if not hidden and child.suffix.lower() in SPEC_SUFFIXES + DATA_SUFFIXES and child.is_file():
            yield child


def _item(data: Mapping[str, Any]) -> ItemRecord:
    return ItemRecord(
        str(data["attack"]), data.get("params") or {}, data.get("epsilon"), int(data["n_attacked"]),
        int(data["n_success"]), float(data["robust_accuracy_after"]), bool(data.get("transfer_estimate", False)),
    )


def _hash(spec: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# Per-input records hold no arrays, so an inputs array ends at its first "]".
_INPUTS = re.compile(rb'"inputs"\s*:\s*\[[^\]]*\]')
_BLANK = frozenset(b" \t\r\n\f\v")


def _without_inputs(text: bytes) -> bytes:
    return _INPUTS.sub(b'"inputs": []', text) if b'"clean_correct"' in text else text


class RecordReader:
    """Reads results records (RunResult JSON) fast: most of a record is never parsed.

    A suite holds far fewer specs and plans than runs, and a results record is mostly the embedded spec
    and the items (with their per-input records). The executor writes the spec first and the items
    after the curve, so the reader hands the JSON parser only the record without them: the text up to
    ``"spec"``, from ``"spec_hash"`` up to ``"items"``, and from ``"flags"`` to the end (with
    ``recheck`` the items stay, without their ``inputs`` arrays: the results-level checks run again on
    them). That cut record is used when it parses to an object with no spec and no items, with every
    field the audit needs, and with a spec hash and a plan hash already read in full; anything else (the
    first run of a spec or plan, another layout, a cut in the wrong place) is parsed whole, without the
    per-input records.
    """

    def __init__(self, recheck: bool = False) -> None:
        self.recheck = recheck
        self.specs: dict[str, Mapping[str, Any]] = {}
        self.plans: dict[str, PlanFacts] = {}

    def cut(self, text: bytes, start: int = 0, end: int | None = None) -> list[bytes] | None:
        """The pieces of the record in ``text[start:end]`` to parse, or None when its keys are not found.

        Plain ``bytes.find`` for the keys as the executor writes them (results_version, attackgen_version,
        spec, spec_hash, plan_hash, task, model, data, device, seed, versions, started, finished, complete,
        n_inputs, accuracies, curve, items, flags, metrics). Every place cut is a key (a colon follows),
        so a cut can drop members but never give a key another's value; :meth:`cut_record` then insists
        on every member the audit reads.
        """
        end = len(text) if end is None else end
        c = text.rfind(b'"flags"', start, end)  # from the end: the items are long, the spec longer
        b = text.rfind(b'"items"', start, c) if c >= 0 else -1
        a = text.rfind(b'"spec_hash"', start, b) if b >= 0 else -1
        k = text.find(b'"spec"', start, a) if a >= 0 else -1
        if k < 0 or c + 7 >= end or not (text[k + 6] == text[a + 11] == text[b + 7] == text[c + 7] == _COLON):
            return None
        if self.recheck:
            return [text[start:k], _without_inputs(text[a:end])]
        d = text.find(b'"device"', a, b)  # device, seed, versions, started, finished: not needed
        e = text.find(b'"complete"', d, b) if d >= 0 else -1
        if e >= 0 and text[d + 8] == text[e + 10] == _COLON:
            return [text[start:k], text[a:d], text[e:b], text[c:end]]
        return [text[start:k], text[a:b], text[c:end]]

    def cut_record(self, data: Any, source: str) -> RunRecord:
        """A record parsed from a cut; _Recut unless it holds every member the audit reads, in the
        types the executor writes, no spec, items only with ``recheck``, and a spec and plan read before."""
        if type(data) is not dict or "spec" in data or ("items" in data) is not self.recheck:
            raise _Recut
        try:
            if data["results_version"] != RESULTS_VERSION:
                return self.record(data, source)  # the version message
            spec_hash, plan_hash = data["spec_hash"], data["plan_hash"]
            spec, plan = self.specs[spec_hash], self.plans[plan_hash]
            task, model, data_name = data["task"], data["model"], data["data"]
            n_inputs, clean, robust = data["n_inputs"], data["clean_accuracy"], data["robust_accuracy"]
            curve, flags, metrics, complete = data["curve"], data["flags"], data["metrics"], data["complete"]
        except (KeyError, TypeError):  # a member missing (cut in the wrong place?) or a hash that is no string
            raise _Recut from None
        if not (type(task) is str and type(model) is str and type(data_name) is str and type(n_inputs) is int
                and type(clean) in _NUMBER and type(robust) in _NUMBER and type(curve) is list
                and type(flags) is list and type(metrics) is dict):
            raise _Recut  # the whole reader decides, with its message
        items = [_item(i) for i in data["items"]] if self.recheck else ()
        return RunRecord(source, spec, spec_hash, plan_hash, task, model, data_name, n_inputs, clean, robust,
                         curve, items, plan, flags or (), metrics, complete is True)

    def record(self, data: Mapping[str, Any], source: str) -> RunRecord:
        """One results record parsed whole; ValueError when it is from another version or incomplete."""
        if not isinstance(data, Mapping):
            raise ValueError("not a results record (expected a JSON object)")
        version = data.get("results_version")
        if version != RESULTS_VERSION:
            made_by = f" by attackgen {data['attackgen_version']}" if "attackgen_version" in data else ""
            raise ValueError(
                f"results_version {version!r} (written{made_by}); this attackgen reads results_version "
                f"{RESULTS_VERSION}: re-run it, or audit it with the attackgen that wrote it"
            )
        try:
            spec_hash = str(data.get("spec_hash") or _hash(data["spec"]))
            plan_hash = str(data.get("plan_hash") or "")
            spec = data["spec"]
            if not isinstance(spec, Mapping):
                raise TypeError("spec is not a mapping")
            self.specs.setdefault(spec_hash, spec)
            items = [_item(i) for i in data["items"]]
            plan = PlanFacts.of(items)
            if plan_hash:
                plan = self.plans.setdefault(plan_hash, plan)
            record = RunRecord(
                source, spec, spec_hash, plan_hash, data["task"], data["model"], data["data"],
                data["n_inputs"], data["clean_accuracy"], data["robust_accuracy"], data.get("curve") or [],
                items, plan, data.get("flags") or [], data.get("metrics") or {},
                data.get("complete", False) is True,
            )
            if not (isinstance(record.task, str) and isinstance(record.model, str) and isinstance(record.data, str)
                    and isinstance(record.n_inputs, int) and isinstance(record.robust_accuracy, (int, float))
                    and isinstance(record.clean_accuracy, (int, float)) and isinstance(record.curve, list)
                    and isinstance(record.flags, list) and isinstance(record.metrics, dict)):
                raise TypeError("task, model, data, n_inputs, accuracies, curve, flags or metrics")
            return record
        except KeyError as error:
            raise ValueError(f"missing field {error.args[0]!r}: not a complete results record") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"a field has the wrong type ({error})") from None

    def parse(self, text: str | bytes, source: str) -> RunRecord:
        """One results record from its JSON text (ValueError or json.JSONDecodeError when unusable)."""
        raw = text.encode() if isinstance(text, str) else text
        pieces = self.cut(raw)
        if pieces is not None:
            try:
                return self.cut_record(json.loads(b"".join(pieces)), source)
            except (json.JSONDecodeError, _Recut):
                pass
        return self.whole(raw, source)

    def whole(self, raw: bytes, source: str) -> RunRecord:
        """The record parsed whole but for its per-input records; a JSON error names the place in ``raw``."""
        try:
            data = json.loads(_without_inputs(raw))
        except json.JSONDecodeError:
            data = json.loads(raw.decode("utf-8"))  # raises, naming the place in the text as written
        return self.record(data, source)

    def parse_many(self, text: str | bytes, source: str) -> tuple[list[RunRecord], list[str]]:
        """JSON Lines: every line's cut record in one json.loads call; a line that needs more on its own."""
        buf = text.encode() if isinstance(text, str) else text
        lines: list[tuple[int, int, bool]] = []  # (start, end, cut) of each non-blank line
        parts = [b"["]
        find, cut = buf.find, self.cut
        pos, size = 0, len(buf)
        while pos < size:
            end = find(b"\n", pos)
            if end < 0:
                end = size
            if end > pos and (buf[pos] not in _BLANK or not buf[pos:end].isspace()):
                pieces = cut(buf, pos, end)
                if pieces is not None:
                    parts += pieces
                    parts.append(b",")
                lines.append((pos, end, pieces is not None))
            pos = end + 1
        parsed: list[Any] | None = None
        if len(parts) > 1:
            parts[-1] = b"]"
            try:
                parsed = json.loads(b"".join(parts))
            except json.JSONDecodeError:
                parsed = None
        runs: list[RunRecord] = []
        bad: list[str] = []
        done = 0  # cut records used so far
        for number, (start, end, was_cut) in enumerate(lines, 1):
            where = f"{source}:{number}"
            try:
                if was_cut and parsed is not None:
                    done += 1
                    try:
                        runs.append(self.cut_record(parsed[done - 1], where))
                        continue
                    except _Recut:
                        pass
                    runs.append(self.whole(buf[start:end], where))
                else:
                    runs.append(self.parse(buf[start:end], where))
            except json.JSONDecodeError as error:
                bad.append(f"line {number}: {_json_problem(error, buf[start:end].decode('utf-8', 'replace'))}")
            except ValueError as error:
                bad.append(f"record {number}: {error}")
        return runs, bad


_NUMBER = (int, float)
_COLON = ord(":")


class _Recut(Exception):
    """A cut record that did not keep what it should, or whose spec or plan was not read yet: parse it whole."""


def _json_problem(error: json.JSONDecodeError, text: str) -> str:
    end = text.rstrip()
    truncated = error.pos >= len(end) - 1 or (end[:1] in "{[" and end[-1:] not in "}]")
    what = "truncated (the file ends mid-record)" if truncated else "malformed JSON"
    return f"{what}: line {error.lineno}, column {error.colno}: {error.msg}"


def _classify(data: Any) -> str | None:
    if not isinstance(data, Mapping):
        return None
    if "results_version" in data or ("robust_accuracy" in data and "items" in data):
        return "results"
    if "plan_version" in data or ("spec_hash" in data and "items" in data and "spec" in data):
        return "plan"
    if "blocking" in data and "spec_name" in data:
        return "infeasible"
    if "threat" in data and "task" in data:
        return "spec"
    return None


def _add_spec(suite: Suite, data: Mapping[str, Any], source: str, kind: str) -> None:
    spec = parse_spec(data, source)
    suite.specs.append(SpecRecord(source, kind, spec, spec.spec_hash()))


def _results_text(text: bytes) -> bool:
    """A JSON text that is a results record: its first key is results_version (as the executor writes it)."""
    head = text[:200].lstrip()
    return head.startswith(b"{") and head[1:].lstrip().startswith(b'"results_version"')


def read_file(path: Path, suite: Suite, reader: RecordReader | None = None) -> None:
    """Read one file into the suite; every problem becomes a SourceNote, never an exception."""
    reader = reader or RecordReader()
    try:
        raw = path.read_bytes()
        if not raw.isascii():
            raw.decode("utf-8")  # a file that is not UTF-8 is not read at all
    except (OSError, UnicodeDecodeError) as error:
        suite.sources.append(SourceNote(str(path), "error", 0, f"cannot be read ({error})"))
        return
    if b"\r" in raw:  # universal newlines, as when read as text
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    suffix = path.suffix.lower()
    if suffix == ".jsonl" and _is_query_log(raw):
        suite.sources.append(_query_log_note(path, raw))
        return
    if suffix == ".jsonl":
        runs, bad = reader.parse_many(raw, str(path))
        suite.runs.extend(runs)
        if runs:
            suite.sources.append(SourceNote(str(path), "results", len(runs)))
        if bad:
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            message = "; ".join(bad[:3]) + more + "; those records skipped"
            suite.sources.append(SourceNote(str(path), "error", 0, message))
        return
    text = ""
    try:
        if suffix == ".json" and _results_text(raw):
            suite.runs.append(reader.parse(raw, str(path)))
            suite.sources.append(SourceNote(str(path), "results", 1))
            return
        text = raw.decode("utf-8")
        # YAML is read bounded (depth, integer size, aliases, duplicate keys)
        data = json.loads(text) if suffix == ".json" else load_yaml_text(text, str(path))
    except SpecError as error:
        suite.sources.append(SourceNote(str(path), "error", 0, f"{error}; skipped".removeprefix(f"{path}: ")))
        return
    except json.JSONDecodeError as error:
        text = text or raw.decode("utf-8")
        suite.sources.append(SourceNote(str(path), "error", 0, _json_problem(error, text) + "; skipped"))
        return
    except ValueError as error:
        suite.sources.append(SourceNote(str(path), "error", 0, f"{error}; skipped"))
        return
    except Exception as error:  # yaml.YAMLError and friends
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        suite.sources.append(SourceNote(str(path), "error", 0, f"malformed YAML: {where}{problem}; skipped"))
        return
    kind = _classify(data)
    try:
        if kind == "results":
            suite.runs.append(reader.record(data, str(path)))
        elif kind == "plan":
            _add_spec(suite, data["spec"], f"{path}: spec", "plan")
        elif kind == "spec":
            _add_spec(suite, data, str(path), "spec")
        elif kind == "infeasible":
            suite.sources.append(SourceNote(
                str(path), "skipped", 0, f"an infeasible plan for spec '{data.get('spec_name')}' (no spec inside); "
                "audit the spec file itself",
            ))
            return
        else:
            suite.sources.append(SourceNote(str(path), "skipped", 0, "not a spec, plan or results file"))
            return
    except (SpecError, ValueError) as error:
        suite.sources.append(SourceNote(str(path), "error", 0, f"{error}; skipped".removeprefix(f"{path}: ")))
        return
    suite.sources.append(SourceNote(str(path), kind, 1))


def _is_query_log(raw: bytes) -> bool:
    """An endpoint's query log (attackgen.models.remote): JSON Lines whose records carry hash and latency."""
    first = raw.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and ({"hash", "latency_ms", "purpose"} <= set(record)
                                         or {"pending", "request", "session"} <= set(record))


def _query_log_note(path: Path, raw: bytes) -> SourceNote:
    """How many queries the log holds, by purpose: the audit counts them, it does not judge them."""
    counts = {"attack": 0, "evaluation": 0}
    runs: set[str] = set()
    bad = resent = 0
    for line in raw.splitlines():
        try:
            record = json.loads(line)
            if "pending" in record:  # a request written before it left; its answers follow on their own lines
                continue
            purpose = record["purpose"]
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        counts["attack" if purpose == "attack" else "evaluation"] += 1
        resent += bool(record.get("resent"))
        runs.add(str(record.get("run")))
    total = counts["attack"] + counts["evaluation"]
    message = (f"endpoint query log: {total} queries sent ({counts['attack']} by attacks, {counts['evaluation']} "
               f"for clean predictions and verification) in {len(runs)} run(s)")
    if resent:
        message += f"; {resent} sent again after a stop (in flight when it stopped, their answers lost)"
    if bad:
        message += f"; {bad} unreadable line(s) skipped (a run killed mid-write leaves one)"
    return SourceNote(str(path), "queries", total, message)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: bulk reading builds millions of acyclic objects, and the
    collector's repeated passes over them cost about as much as the parsing itself.

    On the way out, what was built moves straight to the oldest generation (``freeze`` then
    ``unfreeze``: two list splices), instead of being traversed by a young-generation pass and then
    again on its way up; the next full collection, whenever Python runs one, still sees every object.
    Skipped when the program froze objects itself, since ``unfreeze`` would release those too.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def read_suite(paths: Iterable[str | Path], recheck: bool = False) -> Suite:
    """Specs (*.yaml), plans and results (results.json, *.jsonl) from files and folders, recursively.

    ``recheck`` keeps every run's items so the results-level soundness checks can run again (by default
    the audit shows the flags each run recorded, and adds the checks across runs).
    """
    with _no_gc():
        return _read_suite(paths, recheck)


def _read_suite(paths: Iterable[str | Path], recheck: bool) -> Suite:
    suite = Suite(rechecked=recheck)
    reader = RecordReader(recheck)
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            suite.sources.append(SourceNote(str(path), "error", 0, "no such file or folder"))
            continue
        before = len(suite.specs) + len(suite.runs)
        files = list(_walk(path))
        for file in files:
            read_file(file, suite, reader)
        if path.is_dir() and len(suite.specs) + len(suite.runs) == before:
            found = f"{len(files)} YAML/JSON file(s), none usable" if files else "no YAML or JSON files"
            suite.sources.append(SourceNote(
                str(path), "error", 0, f"folder with no specs, plans or results ({found})",
            ))
    return suite


# --------------------------------------------------------------------------- the audit


@dataclass
class CellCoverage:
    """One covered cell: what covers it and the worst robust accuracy measured there."""

    row: int
    specs: list[int] = field(default_factory=list)  # indexes into Suite.specs
    runs: list[int] = field(default_factory=list)  # indexes into Suite.runs
    robust_accuracy: float | None = None
    weakest_run: int | None = None


@dataclass
class PairMatrix:
    """Value pairs of two axes: covered and feasible cell counts per pair."""

    axes: tuple[str, str]
    rows: tuple[Any, ...]
    cols: tuple[Any, ...]
    covered: np.ndarray  # cells covered with this value pair
    feasible: np.ndarray  # feasible cells with this value pair
    cells: np.ndarray  # all cells with this value pair

    @property
    def pairs_covered(self) -> int:
        return int(((self.covered > 0) & (self.feasible > 0)).sum())

    @property
    def pairs_feasible(self) -> int:
        return int((self.feasible > 0).sum())


@dataclass
class RunFlag:
    flag: Flag
    runs: list[int]


@dataclass
class AuditReport:
    suite: Suite
    space: ThreatSpace
    status: np.ndarray  # per cell: 0 gap, 1 covered, 2 infeasible
    covered: dict[int, CellCoverage]
    pairs: list[PairMatrix]
    flags: list[RunFlag]
    notes: list[str]
    outside: list[str]  # specs or runs whose cells are not in the audited space
    techniques: list[TechniqueCoverage]
    tasks: tuple[str, ...]

    # ---- counts
    @property
    def n_cells(self) -> int:
        return int(self.status.size)

    def count(self, status: str) -> int:
        return int((self.status == _CODE[status]).sum())

    @property
    def n_tested(self) -> int:
        return sum(1 for c in self.covered.values() if c.runs)

    @property
    def n_feasible(self) -> int:
        return int(self.space.feasible.sum())

    @property
    def covered_infeasible(self) -> list[int]:
        """Cells covered by a spec although the rules call them infeasible (the spec breaks a rule)."""
        return [row for row in self.covered if not self.space.feasible[row]]

    def per_value(self) -> dict[str, list[dict[str, Any]]]:
        """Per axis value: cells, feasible, covered, tested."""
        tested = np.zeros(self.n_cells, dtype=bool)
        for row, cov in self.covered.items():
            tested[row] = bool(cov.runs)
        covered = self.status == _CODE[COVERED]
        out: dict[str, list[dict[str, Any]]] = {}
        for col, axis in enumerate(self.space.axes):
            codes = self.space.codes[:, col]
            size = len(self.space.values[col])
            counts = {
                "cells": np.bincount(codes, minlength=size),
                "feasible": np.bincount(codes, weights=self.space.feasible, minlength=size),
                "covered": np.bincount(codes, weights=covered, minlength=size),
                "tested": np.bincount(codes, weights=tested, minlength=size),
            }
            out[axis] = [
                {"value": json_value(v), **{k: int(c[i]) for k, c in counts.items()}}
                for i, v in enumerate(self.space.values[col])
                if counts["cells"][i] > 0
            ]
        return out

    def weakest(self, n: int = 10) -> list[CellCoverage]:
        """Covered cells with results, lowest robust accuracy first (per task when tasks are mixed)."""
        ranked = sorted(
            (c for c in self.covered.values() if c.robust_accuracy is not None),
            key=lambda c: (c.robust_accuracy, self.space.label(c.row)),
        )
        if len(self.tasks) <= 1:
            return ranked[:n]
        out: list[CellCoverage] = []
        for task in self.tasks:
            out += [c for c in ranked if self.space.value(c.row, "task") == task][:n]
        return out

    def rules(self) -> dict[str, int]:
        """Infeasible cells blocked by each rule id (a cell may be blocked by several)."""
        sums = self.space.blocked[self.status == _CODE[INFEASIBLE]].sum(axis=0)
        counts = {rule: int(n) for rule, n in zip(self.space.rule_ids, sums, strict=True) if n}
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def pairs_covered(self) -> int:
        return sum(p.pairs_covered for p in self.pairs)

    @property
    def pairs_feasible(self) -> int:
        return sum(p.pairs_feasible for p in self.pairs)


_CODE = {GAP: 0, COVERED: 1, INFEASIBLE: 2}


class _CellResolver:
    """Spec -> rows of the space, memoised by spec hash (a suite has far fewer specs than runs)."""

    def __init__(self, space: ThreatSpace) -> None:
        self.space = space
        self.memo: dict[str, tuple[tuple[int, ...], list[str]]] = {}

    def rows(
        self, spec: AttackSpec | Mapping[str, Any], spec_hash: str, source: str
    ) -> tuple[tuple[int, ...], list[str]]:
        hit = self.memo.get(spec_hash)
        if hit is not None:
            return hit
        problems: list[str] = []
        rows: list[int] = []
        try:
            parsed = spec if isinstance(spec, AttackSpec) else parse_spec(spec, f"{source}: spec")
            for cell in self.space.cells_of(parsed):
                row = self.space.row_of(cell)
                if row is None:
                    problems.append(f"cell {cell} is outside the audited space")
                else:
                    rows.append(row)
        except SpecError as error:
            problems.append(str(error))
        except Exception as error:  # a spec the space cannot place: report, keep auditing
            problems.append(f"{source}: cannot place its spec in the threat space ({error})")
        hit = (tuple(dict.fromkeys(rows)), problems)
        self.memo[spec_hash] = hit
        return hit


def _run_flags(suite: Suite) -> list[RunFlag]:
    """The flags each run recorded (and, when rechecked, the results-level checks run again), then the
    checks across runs."""
    out: list[RunFlag] = []
    recheck = suite.rechecked
    for i, run in enumerate(suite.runs):
        if not run.flags and not (recheck and run.items and run.complete):
            continue
        seen: set[tuple[str, str]] = set()
        flags = []
        for raw in run.flags:
            try:
                flags.append(Flag.model_validate(raw))
            except Exception:  # a flag from another version: skip it
                continue
        if suite.rechecked and run.items and run.complete:
            flags += run_flags(run)
        for flag in flags:
            if (flag.check, flag.evidence) not in seen:
                seen.add((flag.check, flag.evidence))
                out.append(RunFlag(flag, [i]))
    kinds = [run.plan.kind for run in suite.runs]
    out.extend(RunFlag(flag, members) for members, flag in suite_flags(suite.runs, kinds))
    return out


def audit(suite: Suite, space: ThreatSpace | None = None, all_tasks: bool = False) -> AuditReport:
    """Coverage of the suite over the threat space (restricted to the suite's tasks unless all_tasks)."""
    with _no_gc():
        return _audit(suite, space, all_tasks)


def _audit(suite: Suite, space: ThreatSpace | None, all_tasks: bool) -> AuditReport:
    space = space or default_space()
    notes: list[str] = []
    runs = suite.runs
    run_task = [r.task for r in runs]  # columns: one pass over the runs each
    run_ra = [r.robust_accuracy for r in runs]
    tasks = sorted({s.spec.task.value for s in suite.specs} | set(run_task))
    if "task" in space.axes and tasks and not all_tasks:
        known = [t for t in tasks if t in [value_label(v) for v in space.values[space.axes.index("task")]]]
        left_out = [value_label(v) for v in space.values[space.axes.index("task")] if value_label(v) not in known]
        if known:
            space = space.only("task", [v for v in space.values[space.axes.index("task")] if value_label(v) in known])
            if left_out:
                notes.append(f"audited over the suite's task(s) {', '.join(known)}; cells of {', '.join(left_out)} "
                             "are left out (--all-tasks audits them too)")
    if len(tasks) > 1:
        notes.append(f"the suite mixes tasks ({', '.join(tasks)}): each is audited over its own cells and robust "
                     "accuracies are ranked per task, since they measure different things")
    resolver = _CellResolver(space)
    covered: dict[int, CellCoverage] = {}
    outside: list[str] = []

    def cover(row: int) -> CellCoverage:
        entry = covered.get(row)
        if entry is None:
            entry = covered[row] = CellCoverage(row)
        return entry

    for i, record in enumerate(suite.specs):
        rows, problems = resolver.rows(record.spec, record.spec_hash, record.source)
        outside += [p for p in problems if p not in outside]
        for row in rows:
            cover(row).specs.append(i)
    by_spec: dict[str, list[int]] = defaultdict(list)  # runs of one spec share its cells
    for i, run in enumerate(runs):
        by_spec[run.spec_hash].append(i)
    for spec_hash, members in by_spec.items():
        first = runs[members[0]]
        spec_task = str(first.spec.get("task"))
        for i in [i for i in members if run_task[i] != spec_task]:
            outside.append(f"{runs[i].source}: task {runs[i].task!r} differs from its spec's task "
                           f"{spec_task!r}; placed by the spec")
        rows, problems = resolver.rows(first.spec, spec_hash, first.source)
        outside += [p for p in problems if p not in outside]
        if not rows:
            continue
        weakest = min(members, key=run_ra.__getitem__)
        ra = run_ra[weakest]
        for row in rows:
            entry = cover(row)
            entry.runs.extend(members)
            if entry.robust_accuracy is None or ra < entry.robust_accuracy:
                entry.robust_accuracy, entry.weakest_run = ra, weakest
    status = np.where(space.feasible, _CODE[GAP], _CODE[INFEASIBLE]).astype(np.int8)
    if covered:
        status[np.fromiter(covered, dtype=np.int64)] = _CODE[COVERED]
    report = AuditReport(
        suite, space, status, covered, _pairs(space, status), _run_flags(suite), notes, outside, [], tuple(tasks),
    )
    report.techniques = technique_coverage(report)
    return report


def _pairs(space: ThreatSpace, status: np.ndarray) -> list[PairMatrix]:
    """Covered, feasible and all cells per value pair, for every pair of axes (bincount over pair codes)."""
    out = []
    covered = status == _CODE[COVERED]
    sizes = [len(v) for v in space.values]
    for a in range(len(space.axes)):
        for b in range(a + 1, len(space.axes)):
            code = space.codes[:, a].astype(np.int64) * sizes[b] + space.codes[:, b]
            shape = (sizes[a], sizes[b])
            counts = [
                np.bincount(code, weights=w, minlength=shape[0] * shape[1]).astype(np.int64).reshape(shape)
                for w in (covered, space.feasible, None)
            ]
            out.append(PairMatrix((space.axes[a], space.axes[b]), space.values[a], space.values[b], *counts))
    return out


def technique_coverage(report: AuditReport) -> list[TechniqueCoverage]:
    """Per ATLAS technique: feasible cells that exercise it, and how many of them the suite covers."""
    space = report.space
    knowledge = space.axes.index("knowledge") if "knowledge" in space.axes else None
    feed = space.axes.index("feed") if "feed" in space.axes else None
    entries = {tid: TechniqueCoverage(tid) for tid in TECHNIQUES}
    if knowledge is None:
        return []
    # cells grouped by (knowledge, feed) code: the techniques depend only on those two axes
    feed_codes = space.codes[:, feed] if feed is not None else np.zeros(len(space), dtype=np.int16)
    key = space.codes[:, knowledge].astype(np.int64) * 16 + feed_codes
    covered_rows = np.zeros(len(space), dtype=bool)
    covered_rows[list(report.covered)] = True
    runs = report.suite.runs
    run_index = {row: np.array(cov.runs, dtype=np.int64) for row, cov in report.covered.items()}
    extra: dict[str, set[int]] = defaultdict(set)  # techniques items exercise beyond their cell's
    spec_sets: dict[str, set[int]] = defaultdict(set)
    run_sets: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(runs), dtype=bool))  # runs as a mask
    for group in np.unique(key):
        rows = np.flatnonzero(key == group)
        k = value_label(space.values[knowledge][space.codes[rows[0], knowledge]])
        f = value_label(space.values[feed][feed_codes[rows[0]]]) if feed is not None else "digital"
        for tid in techniques_for(k, f):
            entries[tid].feasible += int(space.feasible[rows].sum())
            entries[tid].covered += int((covered_rows[rows] & space.feasible[rows]).sum())
            for row in rows[covered_rows[rows]].tolist():
                cov = report.covered[row]
                spec_sets[tid].update(cov.specs)
                run_sets[tid][run_index[row]] = True
                _weakest(entries[tid], cov, report)
    # the techniques of each run's plan (the same for every plan with the same attacks), as codes
    atlas_of: dict[frozenset[str], int] = {}
    run_atlas = np.fromiter((atlas_of.setdefault(run.plan.atlas, len(atlas_of)) for run in runs), dtype=np.int64,
                            count=len(runs))
    atlases = list(atlas_of)
    for row, members in run_index.items():
        if not members.size:
            continue
        base = set(techniques_for(value_label(space.value(row, "knowledge")),
                                  value_label(space.value(row, "feed")) if feed is not None else "digital"))
        codes = run_atlas[members]
        for code in np.unique(codes).tolist():
            for tid in atlases[code] - base:
                if tid in entries:
                    extra[tid].add(row)
                    run_sets[tid][members[codes == code]] = True
    for tid, added in extra.items():
        entries[tid].covered += len(added)
        entries[tid].feasible += len(added)
    for tid, entry in entries.items():
        entry.specs, entry.runs = len(spec_sets[tid]), int(run_sets[tid].sum())
    return [e for e in entries.values() if e.feasible or e.covered]


def _weakest(entry: TechniqueCoverage, cov: CellCoverage, report: AuditReport) -> None:
    if cov.robust_accuracy is None or cov.weakest_run is None:
        return
    if entry.weakest is None or cov.robust_accuracy < entry.weakest[0]:
        entry.weakest = (cov.robust_accuracy, report.suite.runs[cov.weakest_run].label)


# --------------------------------------------------------------------------- suggestions (greedy cover)


@dataclass
class SuggestedSpec:
    row: int
    spec: AttackSpec
    new_cells: int
    new_pairs: int
    runnable: bool | None  # None: no planner to ask
    basis: str = ""  # where its classes and input space come from, and what to run it on

    def yaml(self, report: AuditReport) -> str:
        header = (
            f"# suggested by attackgen audit: covers the gap {report.space.label(self.row)}\n"
            f"# adds {self.new_cells} uncovered feasible cell(s) and {self.new_pairs} uncovered axis-value pair(s)\n"
        )
        if self.basis:
            header += f"# {self.basis}\n"
        return header + dump_spec(self.spec)


@dataclass(frozen=True)
class SuiteBasis:
    """What a suggested spec takes from the suite's own specs of its task: class names, input space, and
    the model and data its runs used. Without it a suggestion for a digits suite would name
    Fashion-MNIST classes, and `run` would then attack the digits model with them silently."""

    classes: tuple[str, ...] | None
    input_space: Mapping[str, Any] | None
    source: str
    model: str | None = None
    data: str | None = None

    def note(self) -> str:
        run = f"; run it as the suite's runs were: --model {self.model} --data {self.data}" if self.model else ""
        return f"classes and input space from {self.source}{run}"


def _task_name(task: Any) -> str:
    return str(getattr(task, "value", task))


def suite_basis(suite: Suite, task: str) -> SuiteBasis | None:
    """The most common classes and input space among the suite's specs (and runs) of one task."""
    from collections import Counter

    votes: Counter[str] = Counter()
    found: dict[str, tuple[tuple[str, ...] | None, Mapping[str, Any] | None, str]] = {}
    for record in suite.specs:
        if _task_name(record.spec.task) == task:
            spec_json = record.spec.model_dump(mode="json")
            key = json.dumps([spec_json.get("classes"), spec_json.get("input_space")], sort_keys=True)
            votes[key] += 1
            classes = tuple(spec_json["classes"]) if spec_json.get("classes") else None
            found.setdefault(key, (classes, spec_json.get("input_space"), record.source))
    for run in suite.runs:
        if run.task == task and isinstance(run.spec, Mapping):
            raw = run.spec.get("classes")
            classes = tuple(str(c) for c in raw) if isinstance(raw, list) and raw else None
            space = run.spec.get("input_space") if isinstance(run.spec.get("input_space"), Mapping) else None
            key = json.dumps([list(classes) if classes else None, space], sort_keys=True, default=str)
            votes[key] += 1
            found.setdefault(key, (classes, space, run.source))
    if not votes:
        return None
    classes, space, source = found[votes.most_common(1)[0][0]]
    runs = [r for r in suite.runs if r.task == task and isinstance(r.model, str) and isinstance(r.data, str)]
    model = Counter((r.model, r.data) for r in runs).most_common(1)[0][0] if runs else (None, None)
    return SuiteBasis(classes, space, source, *model)


def _rebase(data: dict[str, Any], basis: SuiteBasis, template: Sequence[str]) -> dict[str, Any]:
    """A representative spec moved onto the suite: its classes (class references mapped by position)
    and its input space (fixed epsilons scaled to the suite's value range, kept in input units)."""
    out = json.loads(json.dumps(data))
    if basis.classes:
        names = list(basis.classes)
        mapping = {t: names[min(i, len(names) - 1)] for i, t in enumerate(template)}

        def swap(value: Any) -> Any:
            if isinstance(value, str):
                return mapping.get(value, value)
            if isinstance(value, list):
                return [swap(v) for v in value]
            if isinstance(value, dict):
                return {k: swap(v) for k, v in value.items()}
            return value

        out["threat"]["consequence"] = swap(out["threat"].get("consequence"))
        out["threat"]["scope"] = swap(out["threat"].get("scope"))
        out["classes"] = names
    if basis.input_space:
        space = dict(basis.input_space)
        lo, hi = (space.get("bounds") or (0.0, 1.0))[:2]
        span = float(hi) - float(lo)
        space["epsilon_units"] = "input_scale"
        for item in out["threat"].get("imperceptibility", []):
            if item.get("kind") == "lp" and isinstance(item.get("epsilon"), (int, float)) and item.get("norm") != "0":
                item["epsilon"] = item["epsilon"] * span
        out["input_space"] = space
    return out


def _planner_verdict(spec: AttackSpec) -> bool | None:
    """True when the planner schedules at least one runnable attack; None without a planner."""
    try:
        from attackgen.plan import planner
    except ImportError:
        return None
    try:
        result = planner.plan(spec)
    except Exception:
        return False
    return bool(getattr(result, "runnable", False))


TIERS = ("runnable", "catalogued", "feasible")


def suggest(report: AuditReport, n: int, max_tries: int = 2000) -> list[SuggestedSpec]:
    """The n specs adding the most uncovered feasible cells and value pairs, chosen greedily.

    Each candidate is a gap cell; its gain is 1 (the cell) plus the axis-value pairs it adds that no
    covered cell has yet. Cells are taken in tiers: first those the planner can run now (an implemented
    attack realises them), then those a catalogued attack realises, then any feasible gap; each
    suggested spec parses and passes the rules. Within a tier the pick is greedy by gain.
    """
    space = report.space
    if n <= 0 or space.spec_for_cell is None:
        return []
    sizes = [len(v) for v in space.values]
    pair_cols, base = [], 0
    for a in range(len(sizes)):
        for b in range(a + 1, len(sizes)):
            pair_cols.append(space.codes[:, a].astype(np.int64) * sizes[b] + space.codes[:, b] + base)
            base += sizes[a] * sizes[b]
    pair_ids = np.stack(pair_cols, axis=1) if pair_cols else np.zeros((len(space), 0), dtype=np.int64)
    have = np.zeros(base, dtype=bool)
    have[pair_ids[report.status == _CODE[COVERED]].ravel()] = True
    open_rows = report.status == _CODE[GAP]
    out: list[SuggestedSpec] = []
    tasks = {_task_name(s.spec.task) for s in report.suite.specs} | {str(r.task) for r in report.suite.runs}
    bases = {task: suite_basis(report.suite, task) for task in tasks}
    for tier in TIERS:
        passed = np.zeros(len(space), dtype=bool)  # found wanting for this tier
        while len(out) < n:
            candidates = np.flatnonzero(open_rows & ~passed)
            if not candidates.size:
                break
            gains = 1 + (~have[pair_ids[candidates]]).sum(axis=1)
            for row in candidates[np.argsort(-gains, kind="stable")][:max_tries].tolist():
                pick = _try_cell(space, row, tier, passed, open_rows, bases)
                if pick is not None:
                    out.append(SuggestedSpec(row, pick[0], 1, int((~have[pair_ids[row]]).sum()), pick[1], pick[2]))
                    have[pair_ids[row]] = True
                    open_rows[row] = False
                    break
            else:
                break  # nothing left in this tier
    return out


def _try_cell(space: ThreatSpace, row: int, tier: str, passed: np.ndarray, open_rows: np.ndarray,
              bases: Mapping[str, SuiteBasis | None] | None = None) -> tuple[AttackSpec, bool | None, str] | None:
    """The cell's spec (on the suite's classes and input space when it has specs of that task), its planner
    verdict and the basis note, when it belongs to the tier; else mark it and return None."""
    cell = space.cell(row)
    if tier != "feasible" and space.realisers is not None and not space.realisers(cell, tier == "runnable"):
        passed[row] = True
        return None
    try:
        spec = space.spec_for_cell(cell)  # type: ignore[misc]
        data = json.loads(json.dumps(spec.model_dump(mode="json")))
    except Exception:  # a cell without a representative spec: never suggest it
        open_rows[row] = False
        return None
    basis = (bases or {}).get(_task_name(spec.task))
    note = ""
    if basis is not None:
        try:
            from taxonomy.space import CLASSES

            template = CLASSES.get(_task_name(spec.task), ())
            spec = parse_spec(_rebase(data, basis, template), "suggested spec")
            note = basis.note()
        except Exception:  # the suite's classes do not fit this cell: keep the representative spec, and say so
            spec = parse_spec(data, "suggested spec")
            note = f"the classes of {basis.source} do not fit this cell; edit the placeholder classes first"
    else:
        spec = parse_spec(data, "suggested spec")
    runnable = _planner_verdict(spec)
    if tier == "runnable" and runnable is False:
        passed[row] = True
        return None
    return spec, runnable, note


def write_suggestions(report: AuditReport, suggestions: Sequence[SuggestedSpec], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, s in enumerate(suggestions, 1):
        path = folder / f"suggest-{i:02d}-{s.spec.name}.yaml"
        path.write_text(s.yaml(report), encoding="utf-8")
        paths.append(path)
    return paths
