"""The constraint graph and the validator that evaluates it.

Nodes are axis values (``knowledge:white_box``, ``scope:universal``, ``imperceptibility:lp:inf``),
strategy choices (``basis:surrogate``, ``victim.gradient:analytic``: a gradient source used on the
victim), capabilities (``capability:gradients``, ``capability:scores``, ``capability:labels``,
``capability:data``) and attack implementations (``attack:pgd_linf``). Edges carry ``relation`` in
{requires, excludes, grants, realises} and the ``rule`` id they encode.

Validation works on *facts*: the set of nodes a spec switches on (its atoms), closed under ``grants``
edges, plus the parameters the predicates need. ``validate`` evaluates every requires/excludes edge
of the graph and every predicate on those facts; nothing is re-stated as an if-chain here.

Strategy fields are optional. An axis the user left out ("open": model basis, optimiser, gradient
source, data basis) is filled by the planner from the attack it picks, so a requires edge whose
alternatives include an open axis is satisfiable and not reported by ``validate``;
``descriptor_violations`` fills the open axes from one attack descriptor and reports what breaks then.

Size (about 730 lines): building the networkx graph, compiling it and evaluating it on facts are one
algorithm (the compiled form must match the graph); the facts and axes are in taxonomy.atoms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import networkx as nx

from taxonomy.atoms import _AVAILABLE, AXES, Facts
from taxonomy.axes import SurrogateBasis
from taxonomy.rules import DESCRIPTOR_CHECKS, EDGES, PREDICATES, RULES, Rule

if TYPE_CHECKING:  # pragma: no cover
    from taxonomy.catalog_types import AttackDescriptor
    from taxonomy.spec import AttackSpec

# --------------------------------------------------------------------------- vocabulary

FILLABLE = frozenset({"basis", "optimizer", "gradient", "data_basis"})
"""Strategy axes the planner fills from the attack it chooses when the user leaves them out."""

AXIS_PATH: dict[str, str] = {
    "task": "task",
    "consequence": "threat.consequence",
    "target_artefact": "threat.consequence",
    "dynamic_rule": "threat.consequence.rule",
    "untargeted_reference": "threat.consequence.reference",
    "reference": "threat.consequence",
    "scope": "threat.scope",
    "imperceptibility": "threat.imperceptibility",
    "budget_mode": "threat.imperceptibility",
    "knowledge": "threat.model_knowledge",
    "granularity": "threat.model_knowledge.granularity",
    "data_knowledge": "threat.data_knowledge",
    "feed": "threat.capability.feed",
    "spatial": "threat.capability.spatial",
    "eot": "threat.capability.transformations",
    "printability": "threat.capability.printability",
    "placement": "threat.capability.placement",
    "views": "threat.capability.views",
    "physical_artefact": "threat.capability",
    "basis": "strategy.model_basis",
    "surrogate_source": "strategy.model_basis.source",
    "data_basis": "strategy.data_basis",
    "optimizer": "strategy.optimizer",
    "victim.optimizer": "strategy.optimizer",
    "gradient": "strategy.optimizer.gradient_source",
    "oracle": "strategy.optimizer.oracle",
    "victim.gradient": "strategy.optimizer.gradient_source",
    "victim.access": "strategy",
    "capability": "threat.model_knowledge",
}

_WORDS: dict[str, str] = {
    "task": "task",
    "consequence": "consequence",
    "target_artefact": "static target artefact",
    "dynamic_rule": "dynamic target rule",
    "untargeted_reference": "untargeted reference",
    "reference": "reference output",
    "scope": "scope",
    "imperceptibility": "imperceptibility",
    "budget_mode": "budget mode",
    "knowledge": "model knowledge",
    "granularity": "output granularity",
    "data_knowledge": "data knowledge",
    "feed": "feed",
    "spatial": "spatial constraint",
    "eot": "EOT",
    "printability": "printability",
    "placement": "placement",
    "views": "views",
    "physical_artefact": "physical artefact",
    "basis": "model basis",
    "surrogate_source": "surrogate source",
    "data_basis": "data basis",
    "optimizer": "optimizer",
    "victim.optimizer": "optimizer on the victim",
    "gradient": "gradient source",
    "oracle": "oracle the search reads",
    "victim.gradient": "gradient source on the victim",
    "victim.access": "access to the victim",
    "capability": "capability",
}

NODE_KIND: dict[str, str] = {
    "capability": "capability",
    "reference": "derived",
    "basis": "strategy",
    "surrogate_source": "strategy",
    "data_basis": "strategy",
    "optimizer": "strategy",
    "gradient": "strategy",
    "victim.optimizer": "strategy",
    "victim.gradient": "strategy",
    "victim.access": "strategy",
    "oracle": "strategy",
    "attack": "implementation",
}

ACCESS_CAPABILITY: dict[str, str | None] = {
    "gradients": "capability:gradients",
    "scores": "capability:scores",
    "labels": "capability:labels",
    "surrogate": None,
}
ACCESS_RULE = {"gradients": "A1-victim-gradients-need-white-box", "scores": "A3-label-only-needs-decision-based",
               "labels": "A5-full-black-box-needs-surrogate"}


def axis_of(atom: str) -> str:
    return atom.split(":", 1)[0]


def human(atom: str) -> str:
    """'knowledge:label_only' -> "model knowledge 'label_only'"."""
    axis, _, value = atom.partition(":")
    return f"{_WORDS.get(axis, axis)} '{value}'"


# --------------------------------------------------------------------------- facts


def close(atoms: Iterable[str], open_axes: frozenset[str]) -> frozenset[str]:
    """Atoms closed under the graph's grants edges (a grant with ``unless_set`` needs that axis open)."""
    grants = _compiled().grants
    result = set(atoms)
    todo = list(result)
    while todo:
        atom = todo.pop()
        for target, unless in grants.get(atom, ()):
            if target not in result and (unless is None or unless in open_axes):
                result.add(target)
                todo.append(target)
    return frozenset(result)


def _imp_key(item: Any) -> str:
    if item.kind == "lp":
        return f"lp:{item.norm}"
    if item.kind == "perceptual":
        return f"perceptual:{item.metric}"
    return str(item.kind)


def _consequence_refs(c: Any) -> list[tuple[str, Any]]:
    """(path, class reference) of every class a consequence names."""
    base = "threat.consequence"
    refs: list[tuple[str, Any]] = []
    kind = c.kind
    if kind == "static_target":
        if c.target_class is not None:
            refs.append((f"{base}.target_class", c.target_class))
        for i, box in enumerate(c.target_boxes or ()):
            refs.append((f"{base}.target_boxes[{i}].label", box.label))
    elif kind == "dynamic_target":
        refs += [(f"{base}.remove_classes[{i}]", r) for i, r in enumerate(c.remove_classes)]
        for src, dst in c.class_map.items():
            refs += [(f"{base}.class_map", src), (f"{base}.class_map.{src}", dst)]
    elif kind in ("confusing_target", "vanishing", "fabrication"):
        refs += [(f"{base}.classes[{i}]", r) for i, r in enumerate(c.classes)]
    elif kind == "mislabel":
        refs += [(f"{base}.from_classes[{i}]", r) for i, r in enumerate(c.from_classes)]
        refs.append((f"{base}.to_class", c.to_class))
    return refs


_FACTS_CACHE: dict[int, tuple[Any, Facts]] = {}


def facts_of(spec: AttackSpec) -> Facts:
    """The facts of a validated spec (cached per spec object)."""
    hit = _FACTS_CACHE.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    facts = _extract(spec)
    if len(_FACTS_CACHE) > 512:
        _FACTS_CACHE.clear()
    _FACTS_CACHE[id(spec)] = (spec, facts)
    return facts


def _extract(spec: AttackSpec) -> Facts:
    threat = spec.threat
    c = threat.consequence
    atoms: set[str] = {f"task:{spec.task.value}", f"consequence:{c.kind}"}
    if c.kind == "static_target":
        artefact = next(n for n in ("target_class", "target_map", "target_boxes") if getattr(c, n) is not None)
        atoms.add(f"target_artefact:{artefact}")
    elif c.kind == "dynamic_target":
        atoms.add(f"dynamic_rule:{c.rule}")
    elif c.kind == "untargeted" and c.reference == "clean_prediction":
        atoms.add("untargeted_reference:clean_prediction")
    paths: dict[str, str] = {}
    if c.kind == "static_target":
        paths[f"target_artefact:{artefact}"] = f"threat.consequence.{artefact}"

    scope = threat.scope
    atoms.add(f"scope:{scope.kind}")

    lp, perceptual, detectors, other, keys = [], [], [], [], []
    for i, item in enumerate(threat.imperceptibility):
        path = f"threat.imperceptibility[{i}]"
        key = _imp_key(item)
        keys.append(key)
        atom = f"imperceptibility:{key}"
        atoms.add(atom)
        paths.setdefault(atom, path)
        if item.kind == "lp":
            lp.append((path, item.norm, tuple(float(e) for e in item.epsilons), item.mode))
            atoms.add(f"budget_mode:{item.mode}")
            paths.setdefault(f"budget_mode:{item.mode}", f"{path}.mode")
        else:
            other.append((path, key))
            if item.kind == "perceptual":
                perceptual.append((path, item.metric, float(item.threshold)))
            elif item.kind == "detector":
                detectors.append((path, item.access))

    knowledge = threat.model_knowledge
    atoms.add(f"knowledge:{knowledge.kind}")
    granularity = getattr(knowledge, "granularity", None)
    if granularity is not None:
        atoms.add(f"granularity:{granularity}")
    atoms.add(f"data_knowledge:{threat.data_knowledge.value}")

    cap = threat.capability
    atoms.add(f"feed:{cap.feed}")
    atoms.add("spatial:region" if cap.spatial is not None else "spatial:none")
    if cap.transformations is not None:
        atoms.add("eot:transformations")
    if cap.printability:
        atoms.add("printability:on")
    if cap.printability_bounds is not None:
        atoms.add("printability:bounds")
    placement = cap.resolved_placement
    if placement is not None:
        atoms.add(f"placement:{placement}")
    views = cap.resolved_views
    if views is not None:
        atoms.add(f"views:{views}")
    # one artefact for many captures: a scene-level view set, a lens layer, or (views unstated) a region patch
    if cap.feed == "physical" and (views == "scenes" or placement == "overlay"
                                   or (views is None and placement not in ("everywhere", "box"))):
        atoms.add("physical_artefact:shared")
    spatial = None
    if cap.spatial is not None:
        s = cap.spatial
        area = s.area_fraction if s.kind == "patch" else (
            (s.box[2] - s.box[0]) * (s.box[3] - s.box[1]) if s.kind == "box" and s.box else None)
        spatial = (s.kind, None if area is None else float(area))

    strategy = spec.strategy
    open_axes = set(FILLABLE)
    basis = optimizer = gradient = data_basis = None
    surrogate = None
    if strategy.model_basis is not None:
        basis = strategy.model_basis.kind
        atoms.add(f"basis:{basis}")
        open_axes.discard("basis")
        mb = strategy.model_basis
        if isinstance(mb, SurrogateBasis):
            surrogate = (mb.source, mb.model, mb.ensemble)
            atoms.add(f"surrogate_source:{mb.source}")
    if strategy.optimizer is not None:
        optimizer = strategy.optimizer.kind.value
        atoms.add(f"optimizer:{optimizer}")
        open_axes.discard("optimizer")
        if strategy.optimizer.oracle is not None:
            atoms.add(f"oracle:{strategy.optimizer.oracle}")
        if strategy.optimizer.gradient_source is not None:
            gradient = strategy.optimizer.gradient_source.value
            atoms.add(f"gradient:{gradient}")
            open_axes.discard("gradient")
    if strategy.data_basis is not None:
        data_basis = strategy.data_basis.value
        atoms.add(f"data_basis:{data_basis}")
        open_axes.discard("data_basis")
    if basis == "victim":
        if optimizer:
            atoms.add(f"victim.optimizer:{optimizer}")
        if gradient:
            atoms.add(f"victim.gradient:{gradient}")

    context = None
    if scope.kind == "contextual":
        pred = scope.context
        values = tuple(pred.any_of) if pred.any_of is not None else (pred.equals,)
        context = ("threat.scope.context", pred.field, values)
    mislabel = (tuple(c.from_classes), c.to_class) if c.kind == "mislabel" else None
    class_map = tuple(c.class_map.items()) if c.kind == "dynamic_target" else ()
    static_class = c.target_class if c.kind == "static_target" else None

    space = spec.input_space
    open_frozen = frozenset(open_axes)
    return Facts(
        atoms=close(atoms, open_frozen), open=open_frozen, paths=paths,
        task=spec.task.value, consequence=c.kind, scope=scope.kind, knowledge=knowledge.kind,
        data_knowledge=threat.data_knowledge.value, feed=cap.feed,
        basis=basis, optimizer=optimizer, gradient=gradient, data_basis=data_basis,
        lp=tuple(lp), perceptual=tuple(perceptual), detectors=tuple(detectors), other_bounds=tuple(other),
        imp_keys=tuple(keys),
        query_budget=getattr(knowledge, "query_budget", None), granularity=granularity,
        k=getattr(knowledge, "k", None),
        classes=tuple(spec.classes) if spec.classes is not None else None,
        class_refs=tuple(_consequence_refs(c)), context=context, mislabel=mislabel, class_map=class_map,
        static_class=static_class, heldout=getattr(scope, "heldout_fraction", None),
        quantize=bool(cap.quantize), spatial=spatial, surrogate=surrogate,
        bounds=(float(space.bounds[0]), float(space.bounds[1])), span=float(space.span),
        units=space.epsilon_units, normalization=space.normalization,
    )


# --------------------------------------------------------------------------- violations


@dataclass(frozen=True)
class Violation:
    """One broken rule: which rule, where in the spec (dotted path), and what exactly."""

    rule: Rule
    field: str
    detail: str

    @property
    def id(self) -> str:
        return self.rule.id

    @property
    def severity(self) -> str:
        return self.rule.severity

    @property
    def reason(self) -> str:
        return self.rule.reason

    @property
    def fix(self) -> str:
        return self.rule.fix

    def __str__(self) -> str:
        return f"{self.severity} {self.id} at {self.field}: {self.rule.reason} [{self.detail}] fix: {self.rule.fix}"

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "severity": self.severity, "field": self.field, "reason": self.rule.reason,
                "fix": self.rule.fix, "detail": self.detail, "source": self.rule.source}


_ORDER = {rid: i for i, rid in enumerate(RULES)}


# --------------------------------------------------------------------------- the graph


def _node_attrs(node: str) -> dict[str, Any]:
    axis, _, value = node.partition(":")
    return {"kind": NODE_KIND.get(axis, "axis"), "axis": axis, "value": value, "label": node}


def _axis_nodes() -> list[str]:
    nodes = [f"{axis}:{v}" for axis, values in AXES.items() if axis != "spatial" for v in values]
    nodes += ["spatial:region", "spatial:none"]
    nodes += [f"placement:{p}" for p in ("everywhere", "patch", "box", "overlay")] + ["physical_artefact:shared"]
    nodes += ["views:object", "views:scenes", "printability:bounds"]
    nodes += [f"budget_mode:{m}" for m in ("fixed", "minimal")]
    nodes += [f"granularity:{g}" for g in ("logits", "probabilities", "top_k")]
    nodes += [f"basis:{b}" for b in ("victim", "surrogate")]
    nodes += [f"surrogate_source:{s}" for s in ("trained_on_data", "distilled_from_queries", "pretrained")]
    nodes += [f"data_basis:{d}" for d in ("training", "surrogate", "none")]
    for o in ("first_order", "second_order", "evolution"):
        nodes += [f"optimizer:{o}", f"victim.optimizer:{o}"]
    for g in ("analytic", "estimated_scores", "estimated_decisions"):
        nodes += [f"gradient:{g}", f"victim.gradient:{g}"]
    nodes += [f"victim.access:{a}" for a in ("gradients", "scores", "labels")]
    nodes += [f"oracle:{o}" for o in ("scores", "decisions")]
    nodes += [f"capability:{c}" for c in ("gradients", "full_scores", "scores", "labels", "data")]
    return nodes


_CATALOG: list[Mapping[str, AttackDescriptor]] = []


def _default_catalog() -> Mapping[str, AttackDescriptor]:
    """The built-in CATALOG (imported once)."""
    if not _CATALOG:
        try:
            from taxonomy.catalog import CATALOG
        except ImportError:  # pragma: no cover - the catalogue is written alongside
            return {}
        _CATALOG.append(CATALOG)
    return _CATALOG[0]


def constraint_graph(catalog: Mapping[str, AttackDescriptor] | None = None) -> nx.MultiDiGraph:
    """The constraint graph: rule edges between axis values and capabilities, plus one node per attack.

    ``catalog`` None means the built-in CATALOG; pass ``{}`` for the rules alone.
    """
    catalog = _default_catalog() if catalog is None else catalog
    graph = nx.MultiDiGraph(name="attackgen constraint graph")
    for node in _axis_nodes():
        graph.add_node(node, **_node_attrs(node))
    for edge in EDGES:
        for node in (edge.src, edge.dst):
            if node not in graph:
                graph.add_node(node, **_node_attrs(node))
        attrs: dict[str, Any] = {"relation": edge.relation, "rule": edge.rule}
        if edge.rule:
            attrs["severity"] = RULES[edge.rule].severity
        if edge.field:
            attrs["field"] = edge.field
        if edge.spec_only:
            attrs["spec_only"] = True
        if edge.unless_set:
            attrs["unless_set"] = edge.unless_set
        graph.add_edge(edge.src, edge.dst, **attrs)
    for d in catalog.values():
        _add_descriptor(graph, d)
    return graph


def _add_descriptor(graph: nx.MultiDiGraph, d: AttackDescriptor) -> None:
    node = f"attack:{d.id}"
    graph.add_node(node, kind="implementation", axis="attack", value=d.id, label=node, title=d.title,
                   access=d.access, optimizer=d.optimizer, implemented=d.implemented)
    targets = [f"task:{t}" for t in d.tasks] + [f"consequence:{c}" for c in d.consequences]
    targets += [f"scope:{s}" for s in d.scopes] + [f"imperceptibility:{i}" for i in d.imperceptibility]
    targets += [f"budget_mode:{m}" for m in d.budget_modes] + [f"feed:{f}" for f in d.feeds]
    targets += ["spatial:none"] + (["spatial:region"] if d.spatial else [])
    for target in targets:
        if target not in graph:
            graph.add_node(target, **_node_attrs(target))
        graph.add_edge(node, target, relation="realises", rule=None)
    capability = ACCESS_CAPABILITY[d.access]
    if capability is not None:
        graph.add_edge(node, capability, relation="requires", rule=ACCESS_RULE[d.access],
                       severity="error")
    if "none" not in d.data_bases:
        graph.add_edge(node, "capability:data", relation="requires", rule="B10-attack-needs-data",
                       severity="error")


@dataclass(frozen=True)
class _Req:
    rule: Rule
    src: str
    targets: frozenset[str]
    fillable: frozenset[str]
    field: str | None
    spec_only: bool


@dataclass(frozen=True)
class _Exc:
    rule: Rule
    src: str
    other: str
    field: str | None
    spec_only: bool


@dataclass(frozen=True)
class _Compiled:
    grants: dict[str, tuple[tuple[str, str | None], ...]]
    requires: dict[str, tuple[_Req, ...]]
    excludes: dict[str, tuple[_Exc, ...]]
    by_atom: dict[str, tuple[_Req | _Exc, ...]]  # every edge touching an atom (either end), for increments
    open_dependent: tuple[_Req, ...]  # requires edges that an open strategy axis can satisfy


def compile_graph(graph: nx.MultiDiGraph) -> _Compiled:
    """Index the graph's rule edges for evaluation (implementation nodes are ignored)."""
    grants: dict[str, list[tuple[str, str | None]]] = {}
    req_groups: dict[tuple[str, str], dict[str, Any]] = {}
    excludes: dict[str, list[_Exc]] = {}
    for src, dst, data in graph.edges(data=True):
        if graph.nodes[src].get("kind") == "implementation":
            continue
        relation = data["relation"]
        if relation == "grants":
            grants.setdefault(src, []).append((dst, data.get("unless_set")))
        elif relation == "requires":
            group = req_groups.setdefault((src, data["rule"]), {"targets": set(), "field": None, "spec_only": False})
            group["targets"].add(dst)
            group["field"] = group["field"] or data.get("field")
            group["spec_only"] = group["spec_only"] or bool(data.get("spec_only"))
        elif relation == "excludes":
            excludes.setdefault(src, []).append(
                _Exc(RULES[data["rule"]], src, dst, data.get("field"), bool(data.get("spec_only"))))
    requires: dict[str, list[_Req]] = {}
    for (src, rule_id), group in req_groups.items():
        targets = frozenset(group["targets"])
        fillable = frozenset(axis_of(t) for t in targets) & FILLABLE
        requires.setdefault(src, []).append(
            _Req(RULES[rule_id], src, targets, fillable, group["field"], group["spec_only"]))
    by_atom: dict[str, list[_Req | _Exc]] = {}
    for reqs in requires.values():
        for r in reqs:
            by_atom.setdefault(r.src, []).append(r)
    for excs in excludes.values():
        for x in excs:
            by_atom.setdefault(x.src, []).append(x)
            by_atom.setdefault(x.other, []).append(x)
    open_dependent = tuple(r for reqs in requires.values() for r in reqs if r.fillable)
    return _Compiled(
        grants={k: tuple(v) for k, v in grants.items()},
        requires={k: tuple(v) for k, v in requires.items()},
        excludes={k: tuple(v) for k, v in excludes.items()},
        by_atom={k: tuple(v) for k, v in by_atom.items()},
        open_dependent=open_dependent,
    )


@lru_cache(maxsize=1)
def rules_graph() -> nx.MultiDiGraph:
    """The constraint graph without implementation nodes: what validation evaluates."""
    return constraint_graph({})


@lru_cache(maxsize=1)
def _compiled() -> _Compiled:
    return compile_graph(rules_graph())


# --------------------------------------------------------------------------- evaluation


def _path(f: Facts, atom: str) -> str:
    return f.paths.get(atom) or AXIS_PATH.get(axis_of(atom), axis_of(atom))


def check_requires(r: _Req, f: Facts, atoms: frozenset[str], open_axes: frozenset[str],
                   suffix: str = "") -> Violation | None:
    """The violation of one requires group, or None (its source is off, a target holds, or an open
    strategy axis can still satisfy it)."""
    if r.src not in atoms or not r.targets.isdisjoint(atoms) or not r.fillable.isdisjoint(open_axes):
        return None
    alternatives = " or ".join(human(t) for t in sorted(r.targets))
    return Violation(r.rule, r.field or _path(f, r.src), f"{human(r.src)} requires {alternatives}{suffix}")


def check_excludes(x: _Exc, f: Facts, atoms: frozenset[str], suffix: str = "") -> Violation | None:
    if x.src not in atoms or x.other not in atoms:
        return None
    return Violation(x.rule, x.field or _path(f, x.src), f"{human(x.src)} excludes {human(x.other)}{suffix}")


def _sort_key(v: Violation) -> tuple[bool, int, str]:
    return (v.rule.severity != "error", _ORDER[v.rule.id], v.field)


def merge(violations: Iterable[Violation]) -> list[Violation]:
    """One violation per (rule, field), the smallest detail kept (deterministic), errors first."""
    found: dict[tuple[str, str], Violation] = {}
    for v in violations:
        key = (v.rule.id, v.field)
        old = found.get(key)
        if old is None or v.detail < old.detail:
            found[key] = v
    return sorted(found.values(), key=_sort_key)


def edge_violations(f: Facts, atoms: frozenset[str] | None = None, open_axes: frozenset[str] | None = None,
                    planner_filled: bool = False, suffix: str = "") -> list[Violation]:
    """Every requires/excludes edge of the graph that the atoms break (unmerged)."""
    atoms = f.atoms if atoms is None else atoms
    open_axes = f.open if open_axes is None else open_axes
    compiled = _compiled()
    out: list[Violation] = []
    for atom in atoms:
        for r in compiled.requires.get(atom, ()):
            if not (planner_filled and r.spec_only):
                v = check_requires(r, f, atoms, open_axes, suffix)
                if v is not None:
                    out.append(v)
        for x in compiled.excludes.get(atom, ()):
            if not (planner_filled and x.spec_only):
                v = check_excludes(x, f, atoms, suffix)
                if v is not None:
                    out.append(v)
    return out


def predicate_violations(f: Facts) -> list[Violation]:
    return [Violation(RULES[p.rule], path, detail) for p in PREDICATES for path, detail in p.fn(f)]


def violations_of(f: Facts) -> list[Violation]:
    """Every spec-level violation of a set of facts, errors first."""
    return merge([*edge_violations(f), *predicate_violations(f)])


def validate(spec: AttackSpec) -> list[Violation]:
    """Every spec-level rule the spec breaks (errors first, then warnings)."""
    return violations_of(facts_of(spec))


# --------------------------------------------------------------------------- attack implementations


def filled(f: Facts, d: AttackDescriptor) -> tuple[frozenset[str], frozenset[str]]:
    """The atoms and open axes once the planner fills the spec's open strategy axes from attack d."""
    atoms = set(f.atoms)
    open_axes = set(f.open)
    basis = f.basis
    if "basis" in open_axes:
        basis = "surrogate" if d.access == "surrogate" else "victim"
        atoms.add(f"basis:{basis}")
        open_axes.discard("basis")
    optimizer = f.optimizer
    if "optimizer" in open_axes:
        optimizer = d.optimizer
        atoms.add(f"optimizer:{optimizer}")
        open_axes.discard("optimizer")
    gradient = f.gradient
    if "gradient" in open_axes and d.gradient_source:
        gradient = d.gradient_source
        atoms.add(f"gradient:{gradient}")
        open_axes.discard("gradient")
    if basis == "victim":
        if d.access != "surrogate":
            atoms.add(f"victim.access:{d.access}")
        if optimizer:
            atoms.add(f"victim.optimizer:{optimizer}")
        if gradient:
            atoms.add(f"victim.gradient:{gradient}")
    elif basis == "surrogate" and f.surrogate is None:
        if f.data_knowledge != "none":
            atoms.add("surrogate_source:trained_on_data")
        elif "capability:labels" in atoms:
            atoms.add("surrogate_source:distilled_from_queries")
    if "data_basis" in open_axes:
        available = _AVAILABLE[f.data_knowledge]
        choice: str | None = next((b for b in ("training", "surrogate") if b in d.data_bases and b in available), None)
        if choice is None and "none" in d.data_bases:
            choice = "none"
        if choice is not None:
            atoms.add(f"data_basis:{choice}")
            open_axes.discard("data_basis")
    frozen_open = frozenset(open_axes)
    return close(atoms, frozen_open), frozen_open


def _descriptor_found(f: Facts, d: AttackDescriptor, params: Mapping[str, Any] | None) -> list[Violation]:
    params = d.defaults if params is None else params
    atoms, open_axes = filled(f, d)
    base = {(v.rule.id, v.field) for v in edge_violations(f)}
    per_rule: dict[str, Violation] = {}  # one finding per edge rule: the attack breaks it or not
    for v in edge_violations(f, atoms, open_axes, planner_filled=True, suffix=f" (with attack {d.id})"):
        if (v.rule.id, v.field) not in base:
            old = per_rule.get(v.rule.id)
            if old is None or (v.field, v.detail) < (old.field, old.detail):
                per_rule[v.rule.id] = v
    new = list(per_rule.values())
    new += [Violation(RULES[c.rule], path, detail) for c in DESCRIPTOR_CHECKS for path, detail in c.fn(f, d, params)]
    return merge(new)


def descriptor_violations(spec: AttackSpec, d: AttackDescriptor,
                          params: Mapping[str, Any] | None = None) -> list[Violation]:
    """Rules attack ``d`` would break under the spec, beyond those the spec breaks by itself.

    The spec's open strategy axes are filled from d (its basis, optimiser, gradient source, data basis)
    and the graph is re-evaluated; then the descriptor checks run (query budget vs ``d.expected_cost(params)``,
    norm, budget mode, task, physical feed, spatial constraint, data needs, targeted decision-based
    start). ``params`` default to ``d.defaults``.
    """
    return _descriptor_found(facts_of(spec), d, params)


def realises_facts(f: Facts, d: AttackDescriptor) -> bool:
    """Does d cover the facts' cell and honour the strategy the user chose and the access granted?"""
    if f.task not in d.tasks or f.consequence not in d.consequences or f.scope not in d.scopes:
        return False
    if f.feed not in d.feeds or (f.spatial is not None and not d.spatial):
        return False
    imp = d.imperceptibility
    if any(key not in imp for key in f.imp_keys):
        return False
    if any(mode not in d.budget_modes for _p, _n, _e, mode in f.lp):
        return False
    if f.basis is not None and (f.basis == "surrogate") != (d.access == "surrogate"):
        return False
    if f.optimizer is not None and f.optimizer != d.optimizer:
        return False
    if f.gradient is not None and f.gradient != d.gradient_source:
        return False
    if ("oracle:scores" in f.atoms and d.access != "scores") or ("oracle:decisions" in f.atoms
                                                                 and d.access != "labels"):
        return False
    if f.data_basis is not None and f.data_basis not in d.data_bases and "none" not in d.data_bases:
        return False
    capability = ACCESS_CAPABILITY[d.access]
    if capability is not None and capability not in f.atoms:
        return False
    return "none" in d.data_bases or not f.available_data.isdisjoint(d.data_bases)


def realises(spec: AttackSpec, d: AttackDescriptor) -> bool:
    """Does attack d realise the spec's cell (task, consequence, scope, every imperceptibility item with
    its budget mode, feed, spatial constraint), the strategy fields the user set, and does the threat
    model grant the access and data it needs?"""
    return realises_facts(facts_of(spec), d)


# --------------------------------------------------------------------------- Graphviz


_COLOURS = {"axis": "#dbe9f6", "strategy": "#e8f3dc", "capability": "#fde8c8", "derived": "#eeeeee",
            "implementation": "#f4d6e4"}
_EDGE_STYLE = {
    "requires": 'color="#1f4e79"',
    "excludes": 'color="#c00000", style=dashed, arrowhead=tee',
    "grants": 'color="#7f6000", style=dotted',
    "realises": 'color="#999999", arrowhead=empty',
}


def _q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: nx.MultiDiGraph) -> str:
    """The graph as Graphviz DOT text (no pygraphviz needed): one node per line, one edge per line."""
    lines = [f"digraph {_q(graph.graph.get('name', 'constraints'))} {{",
             "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8];']
    for node, data in sorted(graph.nodes(data=True)):
        kind = data.get("kind", "axis")
        label = node.replace(":", ":\n", 1)
        lines.append(f"  {_q(node)} [label={_q(label)}, fillcolor={_q(_COLOURS.get(kind, '#ffffff'))}];")
    for src, dst, data in sorted(graph.edges(data=True), key=lambda e: (e[0], e[1], str(e[2].get("rule")))):
        relation = data.get("relation", "requires")
        rule = data.get("rule")
        label = f"{relation} {rule.split('-', 1)[0]}" if rule else relation
        style = _EDGE_STYLE.get(relation, "")
        lines.append(f"  {_q(src)} -> {_q(dst)} [label={_q(label)}, {style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
