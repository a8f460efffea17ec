"""Soundness checks over run results: can this robustness number be trusted? (no torch)

Carlini et al. 2019, "On Evaluating Adversarial Robustness" (arXiv:1902.06705), and AutoAttack's
flags (Croce & Hein 2020) list the signs of an evaluation fooled by its own attacks, mostly by
gradient masking. The ones visible in results:

- a black-box or transfer attack beats the white-box attacks on the same cell (AutoAttack's "square
  wins" check: more than 0.2 percentage points);
- robust accuracy does not fall as epsilon grows (rises, or stays flat over a wide range);
- an unbounded or very large budget does not reach about 100% success;
- a single-step attack beats an iterative one (FGSM beats PGD).

:func:`run_flags` checks one run (the executor calls it at the end of every run); :func:`suite_flags`
compares runs of the same model, data and threat (the audit calls it). Both work on anything shaped
like :class:`attackgen.results.RunResult` (the audit passes light records without per-input data).
The model probes (zero gradients, randomness) need torch and live in :mod:`attackgen.run.soundness_probe`.

Size (about 510 lines): one check per sign of a fooled evaluation, each short, with its evidence
and fix text; they share the helpers that group runs by cell, so they stay in one module.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from attackgen.results import Flag

ALPHA = 0.002  # AutoAttack: a gap of more than 0.2 percentage points of robust accuracy
SURVIVORS_AT_LARGE_BUDGET = 0.01  # "about 100% success": at most 1% of the inputs may stay robust
FLAT_RATIO = 4.0  # a curve that spans epsilons a factor 4 apart must fall somewhere

WHITE, SINGLE, BLACK, TRANSFER, UNKNOWN = "white_box", "single_step", "black_box", "transfer", "unknown"
FIX_WHITE_BOX_WEAK = (
    "the gradient attacks are failing, most often from gradient masking or a badly scaled loss: use a "
    "margin loss (CW/DLR), more steps and random restarts, EOT if the model is random, BPDA for "
    "non-differentiable layers; the reported robust accuracy must stay the worst case over every attack"
)
FIX_CURVE = (
    "check the epsilon units (0-255 versus 0-1) and that the step size scales with epsilon; a curve that "
    "rises or stays flat usually means the attack stopped optimising (masked gradients, too few steps): "
    "add random restarts and a gradient-free attack"
)
FIX_LARGE_BUDGET = (
    "at this budget any input can be moved to another class, so the attack is broken or blocked: check "
    "the loss and its sign, gradients (masking, quantisation) and the clipping; add a gradient-free or "
    "decision-based attack (hopskipjump, boundary) and more steps"
)
FIX_SINGLE_STEP = (
    "an iterative attack must do at least as well as one step of the same size: the iterative attack's "
    "step size, steps or loss are wrong, or its gradients are masked near the input; use a margin loss, "
    "a step size of about 2.5*epsilon/steps and random restarts"
)


class ItemLike(Protocol):
    attack: str
    params: Mapping[str, Any]
    epsilon: float | None
    n_attacked: int
    n_success: int
    robust_accuracy_after: float
    transfer_estimate: bool


class RunLike(Protocol):
    """What the checks read from a run (read-only, so a RunResult with its list fields satisfies it)."""

    @property
    def spec(self) -> Mapping[str, Any]: ...
    @property
    def spec_hash(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def data(self) -> str: ...
    @property
    def n_inputs(self) -> int: ...
    @property
    def clean_accuracy(self) -> float: ...
    @property
    def robust_accuracy(self) -> float: ...
    @property
    def curve(self) -> Sequence[Mapping[str, float]]: ...
    @property
    def items(self) -> Sequence[Any]: ...


# --------------------------------------------------------------------------- what an item and a spec are


def item_kind(attack: str, params: Mapping[str, Any] | None = None, transfer_estimate: bool = False) -> str:
    """white_box (iterative gradient attack), single_step, black_box (scores/labels), transfer, unknown."""
    return _item_kind(attack, (params or {}).get("steps") == 1, bool(transfer_estimate))


@lru_cache(maxsize=4096)
def _item_kind(attack: str, one_step: bool, transfer_estimate: bool) -> str:
    """From the catalogue entry (its access and ``single_step``); an attack the catalogue does not know
    is UNKNOWN rather than guessed from its name."""
    if transfer_estimate:
        return TRANSFER
    from taxonomy.catalog import CATALOG

    descriptor = CATALOG.get(attack)
    if descriptor is None:
        return UNKNOWN
    if descriptor.access == "surrogate":
        return TRANSFER
    if descriptor.access in ("scores", "labels"):
        return BLACK
    return SINGLE if descriptor.single_step or one_step else WHITE


@dataclass(frozen=True)
class SpecFacts:
    """What the checks need from a spec dict, computed once per spec hash."""

    knowledge: str
    consequence: str
    scope: str
    feed: str
    spatial: bool
    span: float
    lp: tuple[tuple[str, tuple[float, ...], str], ...]  # (norm, epsilons in input units, mode)
    key: str  # the threat with epsilons, names and knowledge left out: runs to compare share it
    single_norm: str | None  # the one Lp norm of the spec (None: none or several)


def _kind(value: Any, default: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return str(value.get("kind", default))
    return default


_FACTS: dict[str, SpecFacts] = {}


def spec_facts(spec: Mapping[str, Any], spec_hash: str | None = None) -> SpecFacts:
    """The facts of a spec (as stored in results.json), memoised by its hash."""
    if spec_hash and spec_hash in _FACTS:
        return _FACTS[spec_hash]
    threat = spec.get("threat") or {}
    space = spec.get("input_space") or {}
    bounds = space.get("bounds") or (0.0, 1.0)
    span = float(bounds[1]) - float(bounds[0])
    scale = span / 255.0 if space.get("epsilon_units") == "pixel_255" else 1.0
    lp = []
    for entry in threat.get("imperceptibility") or []:
        if isinstance(entry, Mapping) and entry.get("kind") == "lp":
            eps = entry.get("epsilon")
            values = eps if isinstance(eps, list) else [eps] if eps is not None else []
            lp.append((str(entry.get("norm")), tuple(float(v) * scale for v in values), entry.get("mode", "fixed")))
    capability = threat.get("capability") or {}
    abstract = {
        "task": spec.get("task"),
        "threat": {k: v for k, v in threat.items() if k not in ("model_knowledge", "imperceptibility")},
        "imperceptibility": [
            {k: v for k, v in e.items() if k != "epsilon"} if isinstance(e, Mapping) else e
            for e in threat.get("imperceptibility") or []
        ],
        "input_space": space,
        "classes": spec.get("classes"),
    }
    facts = SpecFacts(
        knowledge=_kind(threat.get("model_knowledge"), "white_box"),
        consequence=_kind(threat.get("consequence"), "untargeted"),
        scope=_kind(threat.get("scope"), "individual"),
        feed=str(capability.get("feed", "digital")),
        spatial=capability.get("spatial") is not None,
        span=span,
        lp=tuple(lp),
        key=json.dumps(abstract, sort_keys=True, default=str),
        single_norm=lp[0][0] if len({norm for norm, _, _ in lp}) == 1 else None,
    )
    if spec_hash:
        _FACTS[spec_hash] = facts
    return facts


def _number(value: Any) -> float | None:
    """A finite number from a results file, or None for anything else (a hand-edited or damaged file)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def curve_points(run: RunLike, facts: SpecFacts | None = None) -> list[tuple[float, float]]:
    """(epsilon in input units, robust accuracy) of one run: its curve, or its single epsilon.

    The curve of a results file is in input units (as the plan's epsilons), and so is the headline
    epsilon in its metrics; the spec's own epsilons are converted from its epsilon_units.
    """
    if run.curve:
        points = [(_number(p.get("epsilon")), _number(p.get("robust_accuracy")))
                  for p in run.curve if isinstance(p, Mapping)]
        return sorted((e, a) for e, a in points if e is not None and a is not None)
    metrics = getattr(run, "metrics", None)
    headline = _number(metrics.get("headline_epsilon")) if isinstance(metrics, Mapping) else None
    if headline is not None:
        return [(headline, float(run.robust_accuracy))]
    facts = facts or spec_facts(run.spec, run.spec_hash)
    epsilons = {e for _, eps, _ in facts.lp for e in eps}
    if len(epsilons) == 1:
        return [(epsilons.pop(), float(run.robust_accuracy))]
    return []


def _tolerance(*n_inputs: int) -> float:
    """ALPHA, or half an input when the run is small (the same inputs at every epsilon)."""
    n = min((k for k in n_inputs if k > 0), default=0)
    return max(ALPHA, 0.5 / n) if n else ALPHA


# --------------------------------------------------------------------------- checks on one run


def _later_wins(run: RunLike, first: set[str], later: str) -> tuple[list[str], list[str], float]:
    """Items of kind ``later`` that still broke inputs after an item of a kind in ``first`` at the same budget.

    Items run in plan order, each on the inputs still unbroken under its own budget; an item's
    robust_accuracy_after is measured at its own (norm, epsilon), so gains are read within one budget.
    Returns the earlier attacks, the evidence per winning item, and the total fall in robust accuracy.
    """
    seen: dict[tuple[Any, Any], list[str]] = defaultdict(list)
    last: dict[tuple[Any, Any], float] = {}
    wins: list[str] = []
    earlier: list[str] = []
    drop = 0.0
    for item in run.items:
        budget = ((item.params or {}).get("norm"), item.epsilon)
        kind = item_kind(item.attack, item.params, item.transfer_estimate)
        after = float(item.robust_accuracy_after)
        if kind == later and seen[budget]:
            gain = last[budget] - after
            if gain > 0:
                drop += gain
                earlier += seen[budget]
                wins.append(f"{item.attack} broke {item.n_success} of the {item.n_attacked} inputs they left")
        if kind in first:
            seen[budget].append(item.attack)
        last[budget] = after
    return list(dict.fromkeys(earlier)), wins, drop


def check_black_box_beats_white_box(run: RunLike) -> list[Flag]:
    """Gradient-free or transfer items that still break inputs the white-box items left unbroken."""
    white, wins, drop = _later_wins(run, {WHITE, SINGLE}, BLACK)
    t_white, t_wins, t_drop = _later_wins(run, {WHITE, SINGLE}, TRANSFER)
    white, wins, drop = list(dict.fromkeys(white + t_white)), wins + t_wins, drop + t_drop
    if drop <= ALPHA or not wins:
        return []
    return [
        Flag(
            check="black_box_beats_white_box",
            severity="warning",
            evidence=f"after the white-box attacks ({', '.join(white)}) " + "; ".join(wins)
            + f": robust accuracy fell another {100 * drop:.1f} points",
            fix=FIX_WHITE_BOX_WEAK,
        )
    ]


def check_single_step_beats_iterative(run: RunLike) -> list[Flag]:
    """A single-step item (FGSM) that breaks inputs an iterative gradient attack before it left."""
    iterative, wins, drop = _later_wins(run, {WHITE}, SINGLE)
    if drop <= ALPHA or not wins:
        return []
    return [
        Flag(
            check="single_step_beats_iterative",
            severity="warning",
            evidence=f"after the iterative attacks ({', '.join(iterative)}) " + "; ".join(wins)
            + f": robust accuracy fell another {100 * drop:.1f} points",
            fix=FIX_SINGLE_STEP,
        )
    ]


def _curve_flags(points: Sequence[tuple[float, float]], tol: float, where: str) -> list[Flag]:
    """Rising or flat robust accuracy along increasing epsilon (points sorted by epsilon)."""
    if len(points) < 2:
        return []
    flags: list[Flag] = []
    best_eps, best = points[0]
    rises = []
    for eps, acc in points[1:]:
        if acc > best + tol:
            rises.append(f"{acc:.3f} at epsilon {eps:.4g} > {best:.3f} at epsilon {best_eps:.4g}")
        if acc < best:
            best_eps, best = eps, acc
    if rises:
        flags.append(
            Flag(
                check="accuracy_rises_with_epsilon",
                severity="warning",
                evidence=f"{where}robust accuracy rises as epsilon grows: " + "; ".join(rises[:3]),
                fix=FIX_CURVE,
            )
        )
    flat = [
        (hi_eps / lo_eps, lo_eps, hi_eps, hi_acc)
        for k, (lo_eps, lo_acc) in enumerate(points)
        for hi_eps, hi_acc in points[k + 1:]
        if lo_eps > 0 and hi_eps / lo_eps >= FLAT_RATIO and lo_acc > tol and hi_acc >= lo_acc - tol
    ]
    if not rises and flat:
        _, lo_eps, hi_eps, acc = max(flat)
        flags.append(
            Flag(
                check="flat_epsilon_curve",
                severity="warning",
                evidence=f"{where}robust accuracy stays at {acc:.3f} from epsilon {lo_eps:.4g} to "
                f"{hi_eps:.4g} ({hi_eps / lo_eps:.0f}x larger) instead of falling",
                fix=FIX_CURVE,
            )
        )
    return flags


def check_curve(run: RunLike) -> list[Flag]:
    """The run's own robustness curve must fall as epsilon grows."""
    if len(run.curve) < 2:
        return []
    return _curve_flags(curve_points(run), _tolerance(run.n_inputs), "")


def large_budget(facts: SpecFacts, eps: float | None) -> bool:
    """True when an Linf epsilon (input units) lets every input reach another class (None: unbounded).

    Untargeted: epsilon >= half the input range reaches the mid-grey image from any input; targeted:
    the whole range reaches every image. Only for per-input digital attacks on the whole input.
    """
    if facts.scope != "individual" or facts.feed != "digital" or facts.spatial:
        return False
    if eps is None:
        return True
    factor = 0.5 if facts.consequence == "untargeted" else 1.0
    return facts.single_norm == "inf" and eps >= factor * facts.span - 1e-9


def check_large_budget(run: RunLike) -> list[Flag]:
    """An unbounded (minimal-norm) or very large Linf budget must reach about 100% success."""
    facts = spec_facts(run.spec, run.spec_hash)
    if not facts.lp:
        return []
    survivors: list[str] = []
    limit = max(SURVIVORS_AT_LARGE_BUDGET, 0.5 / run.n_inputs if run.n_inputs else 0.0)
    unbounded = all(mode == "minimal" and not eps for _, eps, mode in facts.lp)
    if unbounded and large_budget(facts, None) and run.robust_accuracy > limit:
        survivors.append(f"the unbounded (minimal-norm) attack leaves robust accuracy {run.robust_accuracy:.3f}")
    for eps, acc in curve_points(run, facts):
        if large_budget(facts, eps) and acc > limit:
            survivors.append(f"robust accuracy is {acc:.3f} at Linf epsilon {eps:.4g} (input range {facts.span:g})")
    if not survivors:
        return []
    return [
        Flag(
            check="large_budget_not_reaching_full_success",
            severity="error",
            evidence="; ".join(survivors) + "; it should be about 0",
            fix=FIX_LARGE_BUDGET,
        )
    ]


RUN_CHECKS = (check_black_box_beats_white_box, check_single_step_beats_iterative, check_curve, check_large_budget)


def run_flags(result: RunLike) -> list[Flag]:
    """Every results-level soundness flag of one run (called by the executor at the end of every run)."""
    flags: list[Flag] = []
    for check in RUN_CHECKS:
        flags.extend(check(result))
    return flags


# --------------------------------------------------------------------------- checks across runs


def _label(run: RunLike) -> str:
    return f"{run.spec.get('name', '?')} on {run.model}"


def plan_kind(items: Iterable[Any]) -> str:
    """single_step when every gradient item is single-step; white_box with an iterative one; else other."""
    kinds = {item_kind(i.attack, i.params, i.transfer_estimate) for i in items}
    if WHITE in kinds:
        return WHITE
    return SINGLE if SINGLE in kinds else "other"


def suite_flags(runs: Sequence[RunLike], plan_kinds: Sequence[str] | None = None) -> list[tuple[list[int], Flag]]:
    """Flags from comparing runs of the same model, data and threat; each with the indices of its runs.

    Compared at equal epsilon: black-box or transfer runs against white-box runs (the white-box adversary
    can do anything the others can), single-step against iterative runs; and robust accuracy along
    epsilon across runs (a run at a larger budget must not be more robust). ``plan_kinds`` (one per run,
    from :func:`plan_kind`) spares reading the items again when the caller knows them.
    """
    groups: dict[tuple[str, str, str, str], list[int]] = defaultdict(list)
    memo = _FACTS
    facts_of = [memo.get(run.spec_hash) or spec_facts(run.spec, run.spec_hash) for run in runs]
    for i, run in enumerate(runs):
        facts = facts_of[i]
        # compared only within one Lp norm; a stopped run has not run every item: nothing to compare
        if facts.single_norm is not None and getattr(run, "complete", True):
            groups[(run.model, run.data, facts.key, facts.single_norm)].append(i)
    kinds: dict[int, str] = dict(enumerate(plan_kinds)) if plan_kinds is not None else {}
    out: list[tuple[list[int], Flag]] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        by_knowledge: dict[str, dict[float, list[tuple[float, int]]]] = {}
        for i in members:
            facts, run = facts_of[i], runs[i]
            points = by_knowledge.setdefault(facts.knowledge, {})
            if run.curve:  # curve_points without its sort: every use below sorts by epsilon
                for p in run.curve:
                    eps, acc = (_number(p.get("epsilon")), _number(p.get("robust_accuracy"))) \
                        if isinstance(p, Mapping) else (None, None)
                    if eps is not None and acc is not None:
                        points.setdefault(eps, []).append((acc, i))
            else:
                for eps, acc in curve_points(run, facts):
                    points.setdefault(eps, []).append((acc, i))
        white = by_knowledge.get("white_box")
        mixed_plans = plan_kinds is None or len({kinds[i] for i in members}) > 1
        for knowledge, points in by_knowledge.items():
            if white and knowledge != "white_box":
                out.extend(_knowledge_flags(runs, knowledge, white, points))
            if mixed_plans:
                out.extend(_step_flags(runs, points, kinds))
            out.extend(_cross_curve_flags(runs, points))
    return out


def _worst(entries: Iterable[tuple[float, int]]) -> tuple[float, int] | None:
    return min(entries, default=None)


def _knowledge_flags(
    runs: Sequence[RunLike],
    knowledge: str,
    white_points: Mapping[float, list[tuple[float, int]]],
    points: Mapping[float, list[tuple[float, int]]],
) -> list[tuple[list[int], Flag]]:
    out = []
    for eps, entries in sorted(points.items()):
        white = _worst(white_points.get(eps, ()))
        other = _worst(entries)
        if white is None or other is None:
            continue
        tol = _tolerance(runs[white[1]].n_inputs, runs[other[1]].n_inputs)
        if other[0] < white[0] - tol:
            w, o = runs[white[1]], runs[other[1]]
            out.append((
                [white[1], other[1]],
                Flag(
                    check="black_box_beats_white_box",
                    severity="warning",
                    evidence=f"at epsilon {eps:.4g} the {knowledge} run {_label(o)} reaches robust accuracy "
                    f"{other[0]:.3f}, below the white-box run {_label(w)} ({white[0]:.3f})",
                    fix=FIX_WHITE_BOX_WEAK,
                ),
            ))
    return out


def _step_flags(
    runs: Sequence[RunLike], points: Mapping[float, list[tuple[float, int]]], kinds: dict[int, str]
) -> list[tuple[list[int], Flag]]:
    def kind(i: int) -> str:
        if i not in kinds:
            kinds[i] = plan_kind(runs[i].items)
        return kinds[i]

    out = []
    for eps, entries in sorted(points.items()):
        single = _worst(e for e in entries if kind(e[1]) == SINGLE)
        iterative = _worst(e for e in entries if kind(e[1]) == WHITE)
        if single is None or iterative is None:
            continue
        if single[0] < iterative[0] - _tolerance(runs[single[1]].n_inputs, runs[iterative[1]].n_inputs):
            s, it = runs[single[1]], runs[iterative[1]]
            out.append((
                [iterative[1], single[1]],
                Flag(
                    check="single_step_beats_iterative",
                    severity="warning",
                    evidence=f"at epsilon {eps:.4g} the single-step run {_label(s)} reaches robust accuracy "
                    f"{single[0]:.3f}, below the iterative run {_label(it)} ({iterative[0]:.3f})",
                    fix=FIX_SINGLE_STEP,
                ),
            ))
    return out


def _cross_curve_flags(
    runs: Sequence[RunLike], points: Mapping[float, list[tuple[float, int]]]
) -> list[tuple[list[int], Flag]]:
    """Along epsilon, over the worst case per epsilon; only rises that involve two different runs."""
    worst = {eps: _worst(entries) for eps, entries in points.items()}
    curve = sorted((eps, *w) for eps, w in worst.items() if w is not None)  # (eps, acc, run)
    if len(curve) < 2 or len({run for _, _, run in curve}) < 2:
        return []
    out = []
    best_eps, best, best_run = curve[0]
    for eps, acc, run in curve[1:]:
        tol = _tolerance(runs[run].n_inputs, runs[best_run].n_inputs)
        if run != best_run and acc > best + tol:
            out.append((
                [best_run, run],
                Flag(
                    check="accuracy_rises_with_epsilon",
                    severity="warning",
                    evidence=f"{_label(runs[run])} reports robust accuracy {acc:.3f} at epsilon {eps:.4g}, above "
                    f"{_label(runs[best_run])} with {best:.3f} at the smaller epsilon {best_eps:.4g}",
                    fix=FIX_CURVE,
                ),
            ))
        if acc < best:
            best_eps, best, best_run = eps, acc, run
    return out
