"""From plan items to Steps: each item resolved against the catalogue and checked against its spec.

A Step is what the run needs of one item: the attack class, its parameters (passed through as the plan
gives them), its budget in input units and the access it is granted. Resolution fails before any work
when the plan grants more than its spec (access, epsilon, SSIM floor, Wasserstein radius, queries).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attackgen.plan.document import ItemContext
from attackgen.run.attacks.base import Attack, UniversalAttack
from taxonomy.errors import AttackgenError, did_you_mean

QUERY_KINDS = ("scores", "labels")
ALLOWED_ACCESS = {
    "white_box": {"gradients", "scores", "labels", "surrogate"},
    "output_transparent": {"scores", "labels", "surrogate"},
    "query_limited": {"scores", "labels", "surrogate"},
    "label_only": {"labels", "surrogate"},
    "full_black_box": {"surrogate"},
}
"""What each kind of model knowledge lets an attack touch."""


class RunError(AttackgenError):
    """A run cannot start or continue: the output folder, the device, the plan against the spec."""


@dataclass
class Step:
    """One plan item, resolved: its class, its budget, what it may touch."""

    index: int
    attack: str
    role: str
    descriptor: Any
    cls: type[Attack]
    params: dict[str, Any]  # context and params in one mapping, as results.json reports them
    attack_params: dict[str, Any]  # what the attack's constructor takes (checked by its parameter model)
    norm: str | None
    epsilon: float | None  # input units; None in minimal-norm mode or without an Lp bound
    ssim_floor: float | None
    query_budget: int | None
    extra_bounds: list[tuple[str, float]] = field(default_factory=list)  # further Lp bounds that also apply
    wasserstein_radius: float | None = None  # transport cost bound (attackgen.run.wasserstein), checked exactly
    context: ItemContext = field(default_factory=ItemContext)  # the item's threat context, typed
    model_view: Any = None  # escalation only: the model its gradients come from (BPDA...); verification never uses it

    @property
    def universal(self) -> bool:
        return issubclass(self.cls, UniversalAttack)

    @property
    def access(self) -> str:
        return str(self.descriptor.access)

    @property
    def queries(self) -> bool:
        """Does this step query the victim through a budgeted oracle?"""
        return self.access in QUERY_KINDS


def spec_floor(spec: Any) -> float | None:
    """The spec's SSIM floor, if it sets one."""
    return next((i.threshold for i in spec.threat.imperceptibility
                 if i.kind == "perceptual" and i.metric == "ssim"), None)


def spec_radius(spec: Any) -> float | None:
    """The spec's Wasserstein radius, if it sets one."""
    return next((float(i.threshold) for i in spec.threat.imperceptibility
                 if i.kind == "perceptual" and i.metric == "wasserstein"), None)


def spec_query_budget(spec: Any) -> int | None:
    """The spec's per-input query budget (query-limited knowledge), if any."""
    budget = spec.threat.model_knowledge.model_dump().get("query_budget")
    return None if budget is None else int(budget)


def spec_bounds(spec: Any) -> list[tuple[str, float]]:
    """The spec's fixed-epsilon Lp budgets in input units, checked on every candidate of every item: the
    primary budget at its largest epsilon, further budgets at their smallest (as the planner sets them)."""
    bounds = []
    for i, budget in enumerate(spec.lp_budgets):
        if budget.mode == "minimal" or not budget.epsilons:
            continue
        scaled = [spec.input_space.to_input_scale(e) for e in budget.epsilons]
        bounds.append((str(budget.norm), float(max(scaled) if i == 0 else min(scaled))))
    return bounds


def detector_items(spec: Any) -> list[tuple[int, Any]]:
    """(position, item) of the spec's detector imperceptibility items."""
    return [(i, item) for i, item in enumerate(spec.threat.imperceptibility) if item.kind == "detector"]


def check_detector_names(spec: Any) -> None:
    """Fail before any work on a detector name that is not built in."""
    from attackgen.run.detectors import DETECTORS

    for i, item in detector_items(spec):
        for j, name in enumerate(item.detectors):
            if name not in DETECTORS:
                raise RunError(
                    f"threat.imperceptibility[{i}].detectors[{j}]: unknown detector {name!r}"
                    f"{did_you_mean(name, DETECTORS)}; built-in detectors are {', '.join(DETECTORS)}."
                )


def resolve_steps(plan: Any, spec: Any, catalog: Mapping[str, Any], plan_source: str, tol: float) -> list[Step]:
    """Every plan item as a Step, checked against the spec; at least one."""
    steps = []
    floor, radius = spec_floor(spec), spec_radius(spec)
    for index, item in enumerate(plan.items):
        where = f"{plan_source}: items[{index}]"
        descriptor = catalog.get(item.attack)
        if descriptor is None:
            hint = did_you_mean(item.attack, catalog)
            raise RunError(f"{where}.attack: unknown attack {item.attack!r}{hint}; see `attackgen catalog`.")
        if not descriptor.implemented:
            raise RunError(f"{where}.attack: {item.attack!r} is catalogued but not implemented yet.")
        cls = import_attack(descriptor.implementation, where)
        context = item.context
        epsilon = None if context.mode == "minimal" else item.epsilon
        norm = context.norm
        if norm is None and epsilon is not None:  # an epsilon is always checked, in the spec's norm
            if not spec.lp_budgets:
                raise RunError(f"{where}.context.norm: the item has an epsilon but neither it nor the spec "
                               "names a norm.")
            norm = spec.lp_budgets[0].norm
        norm = None if norm is None else str(norm)
        query_budget = context.query_budget if context.query_budget is not None else plan.query_budget
        step = Step(
            index=index, attack=item.attack, role=item.role, descriptor=descriptor, cls=cls,
            params=item.reported_params(), attack_params=item.attack_params(), context=context, norm=norm,
            epsilon=None if epsilon is None else float(epsilon),
            ssim_floor=floor if context.ssim_floor is None else context.ssim_floor, query_budget=query_budget,
            wasserstein_radius=radius if context.wasserstein_max is None else context.wasserstein_max,
            extra_bounds=[(b.norm, float(b.epsilon)) for b in context.extra_bounds if b.epsilon is not None],
        )
        check_against_spec(step, spec, where, tol)
        for bound in spec_bounds(spec):  # the spec's budgets hold whatever the item says (an edited plan)
            if bound not in step.extra_bounds:
                step.extra_bounds.append(bound)
        steps.append(step)
    if not steps:
        raise RunError(f"{plan_source}: the plan has no items to run (see its not_runnable list).")
    return steps


def import_attack(implementation: str, where: str) -> type[Attack]:
    """The Attack class a catalogue entry names as ``module:Class``."""
    module_name, _, name = implementation.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, name)
    except (ImportError, AttributeError) as error:
        raise RunError(f"{where}: the implementation {implementation} cannot be imported ({error}).") from None
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise RunError(f"{where}: {implementation} is not an attackgen Attack class.")
    return cls


def check_against_spec(step: Step, spec: Any, where: str, tol: float) -> None:
    """The plan may not grant an attack more than its spec: access, epsilon, queries.

    A query step without a budget of its own takes the spec's.
    """
    knowledge = spec.threat.model_knowledge.kind
    if step.access not in ALLOWED_ACCESS[knowledge]:
        raise RunError(f"{where}: attack {step.attack!r} needs {step.access} access but the spec's "
                       f"threat.model_knowledge is {knowledge}; the plan does not match its spec.")
    norms = [str(b.norm) for b in spec.lp_budgets]
    if step.norm is not None and norms and step.norm not in norms:
        raise RunError(f"{where}.params.norm: L{step.norm} is not a norm of the spec (its Lp budgets are "
                       f"{', '.join('L' + n for n in norms)}); the plan does not match its spec.")
    if step.epsilon is not None and step.norm is not None:
        limits = [spec.input_space.to_input_scale(e) for b in spec.lp_budgets if b.norm == step.norm
                  for e in b.epsilons]
        if limits and step.epsilon > max(limits) + tol:
            raise RunError(
                f"{where}: epsilon {step.epsilon:g} (input units) exceeds the spec's largest L{step.norm} "
                f"epsilon {max(limits):g}; the plan does not match its spec."
            )
    floor, radius = spec_floor(spec), spec_radius(spec)
    if floor is not None and (step.ssim_floor is None or step.ssim_floor < floor):
        raise RunError(f"{where}.context.ssim_floor: {step.ssim_floor} is below the spec's SSIM floor {floor:g}; "
                       "the plan does not match its spec.")
    if radius is not None and (step.wasserstein_radius is None or step.wasserstein_radius > radius):
        raise RunError(f"{where}.context.wasserstein_max: {step.wasserstein_radius} exceeds the spec's "
                       f"Wasserstein radius {radius:g}; the plan does not match its spec.")
    budget = spec_query_budget(spec)
    if budget is not None and step.query_budget is not None and step.query_budget > budget:
        raise RunError(f"{where}: query budget {step.query_budget} exceeds the spec's {budget} per input; "
                       "the plan does not match its spec.")
    if step.queries and budget is not None and step.query_budget is None:
        step.query_budget = budget
