"""The abstract threat space: every combination of threat-axis values, with parameters abstracted.

A ThreatCell says "Linf" where a spec says "Linf, epsilon 0.03". Each cell has a representative spec
with sensible parameters (``spec_for_cell``); its verdict (``cell_verdict``) is the rules' verdict on
that spec, and ``feasible_realisers`` names the catalogued attacks that realise it without breaking a
rule.

Speed: the whole space (34,020 cells) is validated and matched against the catalogue in about 0.35 s of
CPU. Facts are assembled per axis value without pydantic (``facts_of_cell``); each rule unit depends on
a few axes only, so verdicts come from small per-axis tables merged in nested loops (see "verdicts,
factorised" below). Tests hold this to the slow path: cell facts equal the parsed representative
spec's facts, table verdicts equal direct evaluation and ``validate``, declared dependencies and
predicate reads are checked, and fast realisers equal ``realises``.

Size (about 780 lines): the factorised verdict tables are the reason the space validates in 0.35 s;
they only make sense next to the cell facts they are built from, so both stay here.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from taxonomy.atoms import (
    AXES,
    CONSEQUENCES,
    DATA_KNOWLEDGE,
    FEEDS,
    IMPERCEPTIBILITY,
    KNOWLEDGE,
    SCOPES,
    SPATIAL,
    TASKS,
)
from taxonomy.graph import (
    _AVAILABLE,
    ACCESS_CAPABILITY,
    FILLABLE,
    Facts,
    Violation,
    _default_catalog,
    _descriptor_found,
    check_excludes,
    check_requires,
    close,
    facts_of,
    merge,
    violations_of,
)

if TYPE_CHECKING:  # pragma: no cover
    from taxonomy.catalog_types import AttackDescriptor
    from taxonomy.spec import AttackSpec



@dataclass(frozen=True, order=True)
class ThreatCell:
    """One point of the abstract threat space."""

    task: str
    consequence: str
    scope: str
    imperceptibility: str  # "lp:inf", "lp:2", "lp:1", "lp:0", "perceptual:<metric>", "output", "detector"
    knowledge: str
    data_knowledge: str
    feed: str
    spatial: bool

    @property
    def name(self) -> str:
        """A spec-name-safe label: 'classification-untargeted-individual-lp-inf-white_box-none-digital-whole'."""
        parts = [self.task, self.consequence, self.scope, self.imperceptibility.replace(":", "-"),
                 self.knowledge, self.data_knowledge, self.feed, "region" if self.spatial else "whole"]
        return "-".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __hash__(self) -> int:
        # cells are dictionary keys in every hot loop: hash once (kept out of pickles by __reduce__)
        d = self.__dict__
        h = d.get("_hash")
        if h is None:
            h = d["_hash"] = hash((self.task, self.consequence, self.scope, self.imperceptibility, self.knowledge,
                                   self.data_knowledge, self.feed, self.spatial))
        return h

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (ThreatCell, tuple(getattr(self, name) for name in AXES))


def enumerate_cells() -> Iterator[ThreatCell]:
    """Every combination of threat-axis values (3*7*3*9*5*3*2*2 = 34,020 cells), in a fixed order."""
    return iter(all_cells())


N_CELLS = 1
for _values in AXES.values():
    N_CELLS *= len(_values)


def n_cells() -> int:
    """How many cells the threat space has."""
    return N_CELLS


def _imp_key_of(item: Any) -> str:
    if item.kind == "lp":
        return f"lp:{item.norm}"
    if item.kind == "perceptual":
        return f"perceptual:{item.metric}"
    return str(item.kind)


def cells_of(spec: AttackSpec) -> list[ThreatCell]:
    """The cells a spec touches: one per imperceptibility item (parameters abstracted)."""
    t = spec.threat
    return [
        ThreatCell(spec.task.value, t.consequence.kind, t.scope.kind, _imp_key_of(item), t.model_knowledge.kind,
                   t.data_knowledge.value, t.capability.feed, t.capability.spatial is not None)
        for item in t.imperceptibility
    ]


def cell_of(spec: AttackSpec) -> ThreatCell:
    """The spec's primary cell (its first imperceptibility item)."""
    return cells_of(spec)[0]


# --------------------------------------------------------------------------- representative parameters

CLASSES: dict[str, tuple[str, ...]] = {
    "classification": ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                       "ankle-boot"),
    "segmentation": ("background", "road", "person", "car", "building", "vegetation", "sky"),
    "detection": ("person", "car", "bicycle", "traffic-sign"),
}
TARGET = {"classification": "bag", "segmentation": "person", "detection": "person"}
OTHER = {"classification": "coat", "segmentation": "car", "detection": "car"}
EPSILON = {"lp:inf": 8 / 255, "lp:2": 0.5, "lp:1": 10.0, "lp:0": 20.0}
"""Representative fixed epsilons (inputs in [0, 1]); Linf inside a spatial region is the full range."""
THRESHOLD = {"ssim": 0.95, "wasserstein": 0.1, "lpips": 0.05}
QUERY_BUDGET = 10_000
PATCH_AREA = 0.1
CONSEQUENCE_PATH = "threat.consequence"


def _consequence(task: str, kind: str) -> dict[str, Any]:
    target, other = TARGET[task], OTHER[task]
    if kind == "static_target":
        if task == "classification":
            return {"kind": kind, "target_class": target}
        if task == "segmentation":
            return {"kind": kind, "target_map": "scene:0"}
        return {"kind": kind, "target_boxes": [{"x0": 4, "y0": 4, "x1": 20, "y1": 28, "label": target}]}
    if kind == "dynamic_target":
        if task == "classification":
            return {"kind": kind, "rule": "least_likely"}
        return {"kind": kind, "rule": "remove_classes", "remove_classes": [target]}
    if kind == "confusing_target":
        return {"kind": kind, "classes": [target], "shift": [8, 0]}
    if kind in ("vanishing", "fabrication"):
        return {"kind": kind, "classes": [target]}
    if kind == "mislabel":
        return {"kind": kind, "from_classes": [other], "to_class": target}
    return {"kind": kind}


def _scope(task: str, kind: str) -> dict[str, Any]:
    if kind == "contextual":
        if task == "classification":
            return {"kind": kind, "context": {"field": "label", "equals": OTHER[task]}}
        return {"kind": kind, "context": {"field": "weather", "equals": "rain"}}
    return {"kind": kind}


def _epsilon(key: str, spatial: bool) -> float:
    return 1.0 if key == "lp:inf" and spatial else EPSILON[key]


def _imperceptibility(key: str, spatial: bool) -> dict[str, Any]:
    kind, _, sub = key.partition(":")
    if kind == "lp":
        return {"kind": "lp", "norm": sub, "epsilon": _epsilon(key, spatial), "mode": "fixed"}
    if kind == "perceptual":
        return {"kind": "perceptual", "metric": sub, "threshold": THRESHOLD[sub]}
    if kind == "detector":
        return {"kind": "detector", "detectors": ["feature_squeezing"], "access": "white_box"}
    return {"kind": kind}


def _knowledge(kind: str) -> dict[str, Any]:
    if kind == "output_transparent":
        return {"kind": kind, "granularity": "probabilities"}
    if kind == "query_limited":
        return {"kind": kind, "query_budget": QUERY_BUDGET, "granularity": "probabilities"}
    return {"kind": kind}


def _capability(feed: str, spatial: bool) -> dict[str, Any]:
    cap: dict[str, Any] = {"feed": feed}
    if feed == "physical":
        cap["transformations"] = {}
        cap["printability"] = True
    if spatial:
        cap["spatial"] = {"kind": "patch", "area_fraction": PATCH_AREA}
    return cap


def cell_data(cell: ThreatCell) -> dict[str, Any]:
    """The representative spec of a cell, as the YAML-shaped mapping a user would write."""
    return {
        "name": f"cell-{cell.name}",
        "description": "representative spec of one abstract threat cell",
        "task": cell.task,
        "classes": list(CLASSES[cell.task]),
        "threat": {
            "consequence": _consequence(cell.task, cell.consequence),
            "scope": _scope(cell.task, cell.scope),
            "imperceptibility": [_imperceptibility(cell.imperceptibility, cell.spatial)],
            "model_knowledge": _knowledge(cell.knowledge),
            "data_knowledge": cell.data_knowledge,
            "capability": _capability(cell.feed, cell.spatial),
        },
    }


def spec_for_cell(cell: ThreatCell) -> AttackSpec:
    """A representative, schema-valid spec of the cell (sensible epsilons, budgets, classes)."""
    from taxonomy.spec import parse_spec

    return parse_spec(cell_data(cell), source=f"cell {cell.name}")


# --------------------------------------------------------------------------- facts per cell, fast


@cache
def _part_atoms(*atoms: str) -> frozenset[str]:
    return close(atoms, FILLABLE)


@cache
def _consequence_facts(task: str, kind: str) -> tuple[frozenset[str], dict[str, str], tuple, Any, tuple, Any]:
    """(atoms, paths, class refs, mislabel, class map, static class) of a representative consequence."""
    c = _consequence(task, kind)
    atoms = [f"consequence:{kind}"]
    paths: dict[str, str] = {}
    refs: list[tuple[str, Any]] = []
    mislabel = None
    static_class = None
    if kind == "static_target":
        artefact = next(n for n in ("target_class", "target_map", "target_boxes") if n in c)
        atoms.append(f"target_artefact:{artefact}")
        paths[f"target_artefact:{artefact}"] = f"{CONSEQUENCE_PATH}.{artefact}"
        if artefact == "target_class":
            static_class = c["target_class"]
            refs.append((f"{CONSEQUENCE_PATH}.target_class", static_class))
        elif artefact == "target_boxes":
            refs += [(f"{CONSEQUENCE_PATH}.target_boxes[{i}].label", b["label"])
                     for i, b in enumerate(c["target_boxes"])]
    elif kind == "dynamic_target":
        atoms.append(f"dynamic_rule:{c['rule']}")
        refs += [(f"{CONSEQUENCE_PATH}.remove_classes[{i}]", r) for i, r in enumerate(c.get("remove_classes", []))]
    elif kind in ("confusing_target", "vanishing", "fabrication"):
        refs += [(f"{CONSEQUENCE_PATH}.classes[{i}]", r) for i, r in enumerate(c["classes"])]
    elif kind == "mislabel":
        refs += [(f"{CONSEQUENCE_PATH}.from_classes[{i}]", r) for i, r in enumerate(c["from_classes"])]
        refs.append((f"{CONSEQUENCE_PATH}.to_class", c["to_class"]))
        mislabel = (tuple(c["from_classes"]), c["to_class"])
    return _part_atoms(*atoms), paths, tuple(refs), mislabel, (), static_class


@cache
def _imperceptibility_facts(key: str, spatial: bool) -> tuple[frozenset[str], dict[str, str], tuple, tuple,
                                                                tuple, tuple]:
    """(atoms, paths, lp, perceptual, detectors, other bounds) of a representative bound."""
    path = "threat.imperceptibility[0]"
    atom = f"imperceptibility:{key}"
    atoms = [atom]
    paths = {atom: path}
    kind, _, sub = key.partition(":")
    lp: tuple = ()
    perceptual: tuple = ()
    detectors: tuple = ()
    other: tuple = ()
    if kind == "lp":
        atoms.append("budget_mode:fixed")
        paths["budget_mode:fixed"] = f"{path}.mode"
        lp = ((path, sub, (float(_epsilon(key, spatial)),), "fixed"),)
    else:
        other = ((path, key),)
        if kind == "perceptual":
            perceptual = ((path, sub, float(THRESHOLD[sub])),)
        elif kind == "detector":
            detectors = ((path, "white_box"),)
    return _part_atoms(*atoms), paths, lp, perceptual, detectors, other


def _knowledge_atoms(kind: str) -> frozenset[str]:
    atoms = [f"knowledge:{kind}"]
    if kind in ("output_transparent", "query_limited"):
        atoms.append("granularity:probabilities")
    return _part_atoms(*atoms)


def _capability_atoms(feed: str, spatial: bool) -> frozenset[str]:
    atoms = [f"feed:{feed}", "spatial:region" if spatial else "spatial:none"]
    if spatial:
        atoms.append("placement:patch")  # the representative region is a patch
    if feed == "physical":
        atoms += ["eot:transformations", "printability:on", "physical_artefact:shared"]
        if spatial:
            atoms.append("views:scenes")  # a patch placed into scenes
    return _part_atoms(*atoms)


_CLASSES_T = {task: tuple(names) for task, names in CLASSES.items()}
_SCOPE_ATOMS = {s: frozenset({f"scope:{s}"}) for s in SCOPES}
_TASK_ATOMS = {t: frozenset({f"task:{t}"}) for t in TASKS}
_KNOW_ATOMS = {k: _knowledge_atoms(k) for k in KNOWLEDGE}
_DATA_ATOMS = {d: _part_atoms(f"data_knowledge:{d}") for d in DATA_KNOWLEDGE}
_CAP_ATOMS = {(f, s): _capability_atoms(f, s) for f in FEEDS for s in SPATIAL}


def facts_of_cell(cell: ThreatCell) -> Facts:
    """The facts of the cell's representative spec, assembled without pydantic."""
    task = cell.task
    c_atoms, c_paths, refs, mislabel, class_map, static_class = _consequence_facts(task, cell.consequence)
    i_atoms, i_paths, lp, perceptual, detectors, other = _imperceptibility_facts(cell.imperceptibility, cell.spatial)
    atoms = (_TASK_ATOMS[task] | c_atoms | _SCOPE_ATOMS[cell.scope] | i_atoms | _KNOW_ATOMS[cell.knowledge]
             | _DATA_ATOMS[cell.data_knowledge] | _CAP_ATOMS[cell.feed, cell.spatial])
    paths = {**c_paths, **i_paths} if c_paths else i_paths
    context = None
    if cell.scope == "contextual":
        field = "label" if task == "classification" else "weather"
        context = ("threat.scope.context", field, (OTHER[task] if field == "label" else "rain",))
    knowledge = cell.knowledge
    scored = knowledge in ("output_transparent", "query_limited")
    return Facts(
        atoms=atoms, open=FILLABLE, paths=paths,
        task=task, consequence=cell.consequence, scope=cell.scope, knowledge=knowledge,
        data_knowledge=cell.data_knowledge, feed=cell.feed,
        basis=None, optimizer=None, gradient=None, data_basis=None,
        lp=lp, perceptual=perceptual, detectors=detectors, other_bounds=other, imp_keys=(cell.imperceptibility,),
        query_budget=QUERY_BUDGET if knowledge == "query_limited" else None,
        granularity="probabilities" if scored else None, k=None,
        classes=_CLASSES_T[task], class_refs=refs, context=context, mislabel=mislabel, class_map=class_map,
        static_class=static_class, heldout=None if cell.scope == "individual" else 0.3,
        quantize=False, spatial=("patch", PATCH_AREA) if cell.spatial else None, surrogate=None,
        bounds=(0.0, 1.0), span=1.0, units="input_scale", normalization="inside_model",
    )


# --------------------------------------------------------------------------- verdicts, factorised
#
# A rule unit (one requires group, one excludes edge, one predicate) depends on a few cell axes only:
# an edge on the axes that switch its atoms on, a predicate on the axes behind the Facts slots it reads.
# Units are grouped by those axes; each group gets a table (axis values -> violations) built from a
# handful of representative facts; a cell's verdict is the merge of one table entry per group, and the
# whole space is filled by nested loops that look each group up at its deepest axis.

AXIS_NAMES: tuple[str, ...] = tuple(AXES)

SLOT_AXES: dict[str, frozenset[str]] = {
    name: frozenset(axes) for name, axes in {
        "task": ("task",), "consequence": ("consequence",), "scope": ("scope",), "knowledge": ("knowledge",),
        "data_knowledge": ("data_knowledge",), "feed": ("feed",),
        "basis": (), "optimizer": (), "gradient": (), "data_basis": (), "open": (),
        "lp": ("imperceptibility", "spatial"), "perceptual": ("imperceptibility",),
        "detectors": ("imperceptibility",), "other_bounds": ("imperceptibility",), "imp_keys": ("imperceptibility",),
        "query_budget": ("knowledge",), "granularity": ("knowledge",), "k": ("knowledge",),
        "classes": ("task",), "class_refs": ("task", "consequence"), "context": ("task", "scope"),
        "mislabel": ("task", "consequence"), "class_map": ("task", "consequence"),
        "static_class": ("task", "consequence"), "heldout": ("scope",),
        "quantize": (), "spatial": ("spatial",), "surrogate": (),
        "bounds": (), "span": (), "units": (), "normalization": (),
        "paths": ("task", "consequence", "imperceptibility"), "atoms": tuple(AXES),
    }.items()
}
"""Which cell axes determine each Facts slot of a cell's representative spec (checked by a test)."""

_PARTS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("task",), lambda t: _TASK_ATOMS[t]),
    (("task", "consequence"), lambda t, c: _consequence_facts(t, c)[0]),
    (("scope",), lambda s: _SCOPE_ATOMS[s]),
    (("imperceptibility", "spatial"), lambda i, s: _imperceptibility_facts(i, s)[0]),
    (("knowledge",), lambda k: _KNOW_ATOMS[k]),
    (("data_knowledge",), lambda d: _DATA_ATOMS[d]),
    (("feed", "spatial"), lambda f, s: _CAP_ATOMS[f, s]),
)
"""How facts_of_cell assembles a cell's atoms: the axes of each part and its atoms."""


@lru_cache(maxsize=1)
def atom_axes() -> dict[str, frozenset[str]]:
    """For every atom a cell can switch on, the cell axes its presence depends on."""
    result: dict[str, set[str]] = {}
    for axes, fn in _PARTS:
        table = {combo: fn(*combo) for combo in itertools.product(*(AXES[a] for a in axes))}
        for atom in frozenset().union(*table.values()):
            deps = result.setdefault(atom, set())
            for j, axis in enumerate(axes):
                seen: dict[tuple[Any, ...], set[bool]] = {}
                for combo, atoms in table.items():
                    seen.setdefault(combo[:j] + combo[j + 1:], set()).add(atom in atoms)
                if any(len(v) > 1 for v in seen.values()):
                    deps.add(axis)
    return {atom: frozenset(deps) for atom, deps in result.items()}


@dataclass(frozen=True)
class _Unit:
    kind: str  # "requires", "excludes", "predicate"
    rule: str
    obj: Any
    deps: tuple[str, ...]  # cell axes, in AXIS_NAMES order

    def run(self, f: Facts) -> list[Violation]:
        if self.kind == "requires":
            v = check_requires(self.obj, f, f.atoms, f.open)
            return [] if v is None else [v]
        if self.kind == "excludes":
            v = check_excludes(self.obj, f, f.atoms)
            return [] if v is None else [v]
        return [Violation(self.obj.rule_obj, path, detail) for path, detail in self.obj.fn(f)]


@dataclass(frozen=True)
class _Pred:
    rule_obj: Any
    fn: Any


def _ordered(axes: Iterable[str]) -> tuple[str, ...]:
    wanted = set(axes)
    return tuple(a for a in AXIS_NAMES if a in wanted)


@lru_cache(maxsize=1)
def cell_units() -> tuple[_Unit, ...]:
    """The rule units that can fire in some cell, each with the cell axes it depends on."""
    from taxonomy.graph import _compiled
    from taxonomy.rules import PREDICATES, RULES

    producible = atom_axes()
    compiled = _compiled()
    units: list[_Unit] = []
    for reqs in compiled.requires.values():
        for r in reqs:
            if r.src not in producible or r.fillable:  # never on, or always satisfiable by the planner
                continue
            deps = producible[r.src].union(*(producible.get(t, frozenset()) for t in r.targets))
            units.append(_Unit("requires", r.rule.id, r, _ordered(deps)))
    for excs in compiled.excludes.values():
        for x in excs:
            if x.src in producible and x.other in producible:
                units.append(_Unit("excludes", x.rule.id, x, _ordered(producible[x.src] | producible[x.other])))
    for p in PREDICATES:
        deps = frozenset().union(*(SLOT_AXES[slot] for slot in p.reads))
        units.append(_Unit("predicate", p.rule, _Pred(RULES[p.rule], p.fn), _ordered(deps)))
    return tuple(units)


_FIRST = {axis: values[0] for axis, values in AXES.items()}


@lru_cache(maxsize=1)
def _tables() -> tuple[tuple[tuple[int, ...], dict[tuple[Any, ...], tuple[Violation, ...]]], ...]:
    """One table per dependency set: (axis indices, values -> violations of that group's units)."""
    groups: dict[tuple[str, ...], list[_Unit]] = {}
    for unit in cell_units():
        groups.setdefault(unit.deps, []).append(unit)
    tables = []
    for deps, units in groups.items():
        table: dict[tuple[Any, ...], tuple[Violation, ...]] = {}
        for combo in itertools.product(*(AXES[a] for a in deps)):
            cell = ThreatCell(**{**_FIRST, **dict(zip(deps, combo, strict=True))})
            f = facts_of_cell(cell)
            table[combo] = tuple(v for unit in units for v in unit.run(f))
        tables.append((tuple(AXIS_NAMES.index(a) for a in deps), table))
    return tuple(tables)


_FIELDS = AXIS_NAMES
_new = object.__new__


def _make_cell(values: Iterable[Any]) -> ThreatCell:
    """A ThreatCell without the frozen-dataclass __init__ overhead (values already valid)."""
    cell = _new(ThreatCell)
    cell.__dict__.update(zip(_FIELDS, values, strict=True))
    return cell


@lru_cache(maxsize=1)
def all_cells() -> tuple[ThreatCell, ...]:
    """Every cell, in enumeration order (built once)."""
    return tuple(_make_cell(values) for values in itertools.product(*AXES.values()))


class Verdict(tuple[Any, ...]):
    """A cell's violations (a tuple of Violation, errors first) with ``feasible`` precomputed."""

    feasible: bool
    errors: tuple[Violation, ...]
    blocking: tuple[str, ...]  # ids of the error rules

    def __new__(cls, violations: Iterable[Violation] = ()) -> Verdict:
        self = super().__new__(cls, violations)
        self.errors = tuple(v for v in self if v.rule.severity == "error")
        self.blocking = tuple(v.rule.id for v in self.errors)
        self.feasible = not self.errors
        return self


_EMPTY = Verdict()
_VERDICTS: dict[ThreatCell, Verdict] = {}


@lru_cache(maxsize=1)
def _depth_tables() -> tuple[tuple[tuple[int, ...], dict[tuple[Any, ...], tuple[Violation, ...]]], ...]:
    """Per axis depth, the groups whose deepest axis it is, combined into one table keyed by the values
    of the union of their axes (the depth's own axis last)."""
    per_depth: list[list[tuple[tuple[int, ...], dict]]] = [[] for _ in AXIS_NAMES]
    constant: tuple[Violation, ...] = ()
    for idx, table in _tables():
        if idx:
            per_depth[max(idx)].append((idx, table))
        else:
            constant = constant + table[()]
    combined = []
    for depth, groups in enumerate(per_depth):
        union = sorted({i for idx, _ in groups for i in idx} | {depth})
        by_combo: dict[tuple[Any, ...], tuple[Violation, ...]] = {}
        for combo in itertools.product(*(AXES[AXIS_NAMES[i]] for i in union)):
            at = dict(zip(union, combo, strict=True))
            found = constant if depth == 0 else ()
            for idx, t in groups:
                found = found + t[tuple(at[i] for i in idx)]
            by_combo[combo] = found
        combined.append((tuple(union), by_combo))
    return tuple(combined)


def _fill_verdicts() -> None:
    """Every cell's verdict by nested loops over the axes, one combined-table lookup per level."""
    tables = _depth_tables()
    values = [AXES[a] for a in AXIS_NAMES]
    cells = iter(all_cells())
    prefix: list[Any] = [None] * len(AXIS_NAMES)
    merged: dict[tuple[int, ...], Verdict] = {}
    out = _VERDICTS
    last = len(AXIS_NAMES) - 1

    def walk(depth: int, acc: tuple[Violation, ...]) -> None:
        union, table = tables[depth]
        head = tuple([prefix[i] for i in union[:-1]])
        for value in values[depth]:
            prefix[depth] = value
            key = (*head, value)  # (mypy reads a starred subscript as 3.11 syntax)
            add = table[key]
            here = acc + add if add else acc
            if depth < last:
                walk(depth + 1, here)
            elif not here:
                out[next(cells)] = _EMPTY
            else:
                key = tuple(map(id, here))
                hit = merged.get(key)
                if hit is None:
                    hit = merged[key] = Verdict(merge(here))
                out[next(cells)] = hit

    walk(0, ())


def verdicts() -> dict[ThreatCell, Verdict]:
    """Every cell's verdict (computed once, then cached)."""
    if len(_VERDICTS) < N_CELLS:
        _fill_verdicts()
    return _VERDICTS


def cell_verdict(cell: ThreatCell) -> list[Violation]:
    """The rules' verdict on the cell's representative spec (the whole space is computed on first use)."""
    found = verdicts().get(cell)
    if found is None:
        raise ValueError(f"not a cell of the threat space: {cell}")
    return list(found)


def cell_verdict_direct(cell: ThreatCell) -> list[Violation]:
    """The same verdict evaluated directly on the cell's facts (slower; for tests and single cells)."""
    return violations_of(facts_of_cell(cell))


def cell_feasible(cell: ThreatCell) -> bool:
    """No error-severity rule blocks the cell."""
    return verdicts()[cell].feasible


def blocking_rules(cell: ThreatCell) -> tuple[str, ...]:
    """Ids of the error rules that make the cell infeasible (empty when feasible)."""
    return verdicts()[cell].blocking


# --------------------------------------------------------------------------- which attacks realise a cell


class _RealiserIndex:
    """Bit masks over a catalogue, one per axis value, so a cell's realisers are an AND of 8 masks."""

    def __init__(self, catalog: Mapping[str, AttackDescriptor]) -> None:
        self.catalog = catalog
        self.ids = list(catalog)
        ds = list(catalog.values())

        def mask(pred: Any) -> int:
            return sum(1 << i for i, d in enumerate(ds) if pred(d))

        self.task = {t: mask(lambda d, t=t: t in d.tasks) for t in TASKS}
        self.consequence = {c: mask(lambda d, c=c: c in d.consequences) for c in CONSEQUENCES}
        self.scope = {s: mask(lambda d, s=s: s in d.scopes) for s in SCOPES}
        self.imp = {k: mask(lambda d, k=k: k in d.imperceptibility and (not k.startswith("lp:")
                                                                        or "fixed" in d.budget_modes))
                    for k in IMPERCEPTIBILITY}

        def granted(d: AttackDescriptor, k: str) -> bool:
            capability = ACCESS_CAPABILITY[d.access]
            return capability is None or capability in _KNOW_ATOMS[k]

        self.knowledge = {k: mask(lambda d, k=k: granted(d, k)) for k in KNOWLEDGE}
        self.data = {x: mask(lambda d, x=x: "none" in d.data_bases or bool(_AVAILABLE[x] & d.data_bases))
                     for x in DATA_KNOWLEDGE}
        self.feed = {f: mask(lambda d, f=f: f in d.feeds) for f in FEEDS}
        self.spatial = {False: (1 << len(ds)) - 1, True: mask(lambda d: d.spatial)}

        self.by_axis: list[dict[Any, int]] = [self.task, self.consequence, self.scope, self.imp, self.knowledge,
                                              self.data, self.feed, self.spatial]
        self._ids: dict[int, tuple[str, ...]] = {}
        self._all: dict[ThreatCell, tuple[str, ...]] | None = None
        self.feasible: dict[ThreatCell, tuple[str, ...]] | None = None

    def ids_of(self, m: int) -> tuple[str, ...]:
        hit = self._ids.get(m)
        if hit is None:
            hit = self._ids[m] = tuple(self.ids[i] for i in range(len(self.ids)) if m >> i & 1)
        return hit

    def realisers(self, cell: ThreatCell) -> tuple[str, ...]:
        m = (self.task[cell.task] & self.consequence[cell.consequence] & self.scope[cell.scope]
             & self.imp[cell.imperceptibility] & self.knowledge[cell.knowledge] & self.data[cell.data_knowledge]
             & self.feed[cell.feed] & self.spatial[cell.spatial])
        return self.ids_of(m)

    def all(self) -> dict[ThreatCell, tuple[str, ...]]:
        """Every cell's realisers, by nested loops that AND one mask per axis."""
        if self._all is None:
            out: dict[ThreatCell, tuple[str, ...]] = {}
            cells = iter(all_cells())
            values = [AXES[a] for a in AXIS_NAMES]
            masks = self.by_axis
            last = len(values) - 1
            ids_of = self.ids_of

            def walk(depth: int, m: int) -> None:
                axis_masks = masks[depth]
                for value in values[depth]:
                    here = m & axis_masks[value]
                    if depth < last:
                        walk(depth + 1, here)
                    else:
                        out[next(cells)] = ids_of(here)

            walk(0, (1 << len(self.ids)) - 1)
            self._all = out
        return self._all


_INDEX: dict[int, tuple[Mapping[str, Any], _RealiserIndex]] = {}


def _index(catalog: Mapping[str, AttackDescriptor] | None) -> _RealiserIndex:
    catalog = _default_catalog() if catalog is None else catalog
    hit = _INDEX.get(id(catalog))
    if hit is None or hit[0] is not catalog or len(hit[1].ids) != len(catalog):
        hit = _INDEX[id(catalog)] = (catalog, _RealiserIndex(catalog))
    return hit[1]


def realisers(cell: ThreatCell, catalog: Mapping[str, AttackDescriptor] | None = None) -> tuple[str, ...]:
    """Ids of the attacks that realise the cell (same answer as ``realises`` on its representative spec)."""
    return _index(catalog).realisers(cell)


def all_realisers(catalog: Mapping[str, AttackDescriptor] | None = None) -> dict[ThreatCell, tuple[str, ...]]:
    """Every cell's realisers (computed once per catalogue)."""
    return _index(catalog).all()


_DESC_CACHE: dict[tuple[ThreatCell, str, int], tuple[AttackDescriptor, tuple[Violation, ...]]] = {}


def cell_descriptor_violations(cell: ThreatCell, d: AttackDescriptor) -> list[Violation]:
    """``descriptor_violations`` on the cell's representative spec, at d's default parameters (cached)."""
    key = (cell, d.id, id(d))
    hit = _DESC_CACHE.get(key)
    if hit is None or hit[0] is not d:
        hit = _DESC_CACHE[key] = (d, tuple(_descriptor_found(facts_of_cell(cell), d, None)))
    return list(hit[1])


def _breaks_no_error(cell: ThreatCell, d: AttackDescriptor) -> bool:
    return not any(v.rule.severity == "error" for v in cell_descriptor_violations(cell, d))


def feasible_realisers(cell: ThreatCell, catalog: Mapping[str, AttackDescriptor] | None = None) -> tuple[str, ...]:
    """Realisers of the cell that break no error rule at their default parameters (the first call fills
    the answer for every feasible cell)."""
    index = _index(catalog)
    if index.feasible is None:
        table = verdicts()
        index.feasible = {
            c: tuple(i for i in ids if _breaks_no_error(c, index.catalog[i])) if ids else ()
            for c, ids in index.all().items() if table[c].feasible
        }
    hit = index.feasible.get(cell)
    if hit is None:  # an infeasible cell: its realisers still may or may not break attack-level rules
        hit = tuple(i for i in index.realisers(cell) if _breaks_no_error(cell, index.catalog[i]))
    return hit


_ANSWERS: dict[tuple[ThreatCell, int], Any] = {}


def cell_answer(cell: ThreatCell, catalog: Mapping[str, AttackDescriptor] | None = None) -> Any:
    """The shared feasibility answer (``taxonomy.feasibility``) for a cell: the same decision ``validate`` and
    ``plan`` take on the cell's representative spec, from the fast tables (tested to agree)."""
    from taxonomy.catalog import cell_features, fits_purpose
    from taxonomy.feasibility import decide

    index = _index(catalog)
    key = (cell, id(index))
    hit = _ANSWERS.get(key)
    if hit is not None:
        return hit
    verdict = verdicts()[cell]
    if not verdict.feasible:
        hit = decide(verdict, (), {}, ())
    else:
        features = cell_features(cell)
        pool = [i for i in index.realisers(cell) if fits_purpose(features, index.catalog[i])]
        breaks = {i: [v for v in cell_descriptor_violations(cell, index.catalog[i]) if v.rule.severity == "error"]
                  for i in pool}
        hit = decide(verdict, pool, breaks, [i for i in pool if index.catalog[i].implemented])
    _ANSWERS[key] = hit
    return hit


def cell_feasibility_verdict(cell: ThreatCell) -> list[Violation]:
    """The cell's rule findings as the audit counts them: the spec-level verdict, plus the attack-level errors
    when every realising attack breaks one (so such a cell is infeasible, not a gap)."""
    ans = cell_answer(cell)
    if ans.verdict == "infeasible" and not any(v.rule.severity == "error" for v in ans.findings):
        return [*ans.blocking, *ans.findings]
    return list(ans.findings)


def census(catalog: Mapping[str, AttackDescriptor] | None = None) -> dict[str, Any]:
    """Validate every cell and find the attacks that realise each feasible one without breaking a rule.

    Returns counts (cells, feasible, infeasible, covered, gaps), how often each error rule blocks a
    cell, the gap cells, and the seconds (wall and CPU) each stage took.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    table = verdicts()
    feasible_cells = [cell for cell, verdict in table.items() if verdict.feasible]
    wall_v, cpu_v = time.perf_counter(), time.process_time()
    covered: dict[ThreatCell, tuple[str, ...]] = {}
    gaps: list[ThreatCell] = []
    for cell in feasible_cells:
        ok = feasible_realisers(cell, catalog)
        if ok:
            covered[cell] = ok
        else:
            gaps.append(cell)
    wall_p, cpu_p = time.perf_counter(), time.process_time()
    blockers: Counter[str] = Counter()
    for verdict in table.values():
        if not verdict.feasible:
            blockers.update(v.rule.id for v in verdict.errors)
    return {
        "cells": len(table),
        "feasible": len(feasible_cells),
        "infeasible": len(table) - len(feasible_cells),
        "covered": len(covered),
        "gaps": len(gaps),
        "blocking_rules": dict(blockers.most_common()),
        "gap_cells": gaps,
        "covered_cells": covered,
        "seconds": {"validate_wall": wall_v - wall, "validate_cpu": cpu_v - cpu,
                    "realise_wall": wall_p - wall_v, "realise_cpu": cpu_p - cpu_v},
    }


def clear_caches() -> None:
    """Forget cached verdicts (for benchmarks that want a cold run)."""
    _VERDICTS.clear()
    _DESC_CACHE.clear()
    _ANSWERS.clear()
    _INDEX.clear()
    for cached in (all_cells, _tables, _depth_tables, cell_units, atom_axes):
        cached.cache_clear()


__all__ = [
    "AXES", "ThreatCell", "cell_answer", "cell_data", "cell_feasibility_verdict", "cell_feasible", "cell_of",
    "cell_verdict", "cells_of", "census",
    "enumerate_cells", "facts_of", "facts_of_cell", "feasible_realisers", "realisers", "spec_for_cell",
]
