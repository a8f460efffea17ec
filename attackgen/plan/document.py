"""The plan file: concrete attacks with parameters and the reason each was chosen.

A plan embeds the spec it was made from (as plain JSON-compatible data) and that spec's hash, so a
plan that was edited by hand can still be checked: ``load_plan`` refuses a plan whose spec no longer
matches its hash, names an attack the catalogue does not know, or schedules an attack that breaks a
rule of its own spec. Plans are YAML (or JSON when the file name ends in .json) and meant to be read
and edited. Imports no torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from attackgen.plan.checks import realises_any, rule_breaks
from attackgen.plan.notes import RuleNote
from taxonomy.errors import SpecError, describe_validation_error
from taxonomy.params import param_problems
from taxonomy.spec import AttackSpec, dump_yaml, parse_spec, read_yaml

PLAN_VERSION: Literal[2] = 2
"""2: an item's threat context (budget, targets, data basis...) moved from ``params`` to ``context``, and
``params`` is checked against the attack's parameter model. Version-1 plans still load (migrated)."""

BUDGET_KEYS = ("norm", "epsilon", "mode")
"""Keys of a version-1 item's params that described the budget (now ``PlanItem.context``)."""

Role = Literal["primary", "gradient_free_check", "transfer"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PlanCost(_Model):
    """Expected work per input for one item: passes on the basis model and queries to the victim."""

    forward: float = 0.0
    backward: float = 0.0
    queries: float = 0.0

    @property
    def passes(self) -> float:
        return self.forward + self.backward


class ExtraBound(_Model):
    """A further Lp bound that also applies to every candidate (the spec's other Lp budgets)."""

    norm: str
    epsilon: float | None = None


class ItemContext(_Model):
    """The threat context of one item, read by the executor: what the spec grants, not how the attack works.

    The planner fills it from the spec; an edit may tighten it, and the executor refuses one that loosens
    the spec's bounds.
    """

    norm: str | None = Field(None, description="The norm epsilon is measured in ('inf', '2', '1', '0').")
    mode: Literal["fixed", "minimal"] | None = None
    report_at: list[float] | None = Field(None, description="Minimal-norm mode: the epsilons to report at.")
    extra_bounds: list[ExtraBound] = Field(default_factory=list)
    target: dict[str, Any] | None = Field(None, description="The consequence the attack aims at (the spec's).")
    ssim_floor: float | None = None
    wasserstein_max: float | None = None
    lpips_max: float | None = None
    output_criterion: str | None = None
    detectors: list[str] | None = Field(None, description="The spec's detectors every success is checked against.")
    heldout_fraction: float | None = None
    target_fooling_rate: float | None = None
    data_basis: str | None = None
    surrogate: dict[str, Any] | None = Field(None, description="How the surrogate model is obtained.")
    query_budget: int | None = Field(None, description="Victim queries per input for this item (default: the plan's).")


CONTEXT_KEYS = frozenset(ItemContext.model_fields) | {"epsilon"}
"""Names a version-1 item kept in ``params`` that are threat context (moved to ``context`` on load)."""


class PlanItem(_Model):
    """One attack to run: its hyperparameters (checked against the attack's model) and its threat context."""

    attack: str = Field(description="A catalogue id (attackgen catalog).")
    role: Role = "primary"
    epsilon: float | None = Field(
        None, description="The point of the epsilon curve this item evaluates (input units); None: minimal-norm "
        "or no Lp bound. Items with the same epsilon form one evaluation (per-sample worst case)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="The attack's own parameters (`attackgen catalog <id>` lists them)."
    )
    context: ItemContext = Field(default_factory=ItemContext)
    rationale: str = ""
    expected_cost: PlanCost = Field(default_factory=PlanCost)
    strength: int = Field(5, ge=1, le=10)

    def attack_params(self) -> dict[str, Any]:
        """What the attack's constructor takes (the params; the context is the executor's)."""
        return dict(self.params)

    def reported_params(self) -> dict[str, Any]:
        """Context and params in one flat mapping, as results.json records them."""
        context = self.context.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        if self.epsilon is not None:
            context["epsilon"] = self.epsilon
        return {**context, **self.params}


def version_1_item(data: Any) -> Any:
    """A version-1 item kept its threat context in params: move it to ``context`` (names the attack's own
    model declares stay), and drop names the attack never read (its model's ``retired``)."""
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        return data
    from taxonomy.catalog import CATALOG

    descriptor = CATALOG.get(str(data.get("attack")))
    own = set(descriptor.params.model_fields) if descriptor is not None else set()
    retired = descriptor.params.retired if descriptor is not None else frozenset()
    params = {k: v for k, v in data["params"].items() if k not in retired}
    context = {k: params.pop(k) for k in list(params) if k in CONTEXT_KEYS and k not in own}
    epsilon = context.pop("epsilon", None)
    out = {**data, "params": params, "context": {**context, **(data.get("context") or {})}}
    if out.get("epsilon") is None and epsilon is not None and context.get("mode") != "minimal":
        out["epsilon"] = epsilon
    return out


class CatalogueOnly(_Model):
    """An attack that realises the spec but whose code has not landed: listed, never run."""

    attack: str
    title: str = ""
    strength: int = 5


class Plan(_Model):
    """A ranked list of attacks for one spec, with the strategy the planner filled in."""

    plan_version: Literal[1, 2] = PLAN_VERSION

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        """A version-1 plan is read in the version-2 layout (``version_1_item``), so it is version 2 once
        loaded."""
        if isinstance(data, dict) and data.get("plan_version") == 1 and isinstance(data.get("items"), list):
            return {**data, "plan_version": PLAN_VERSION, "items": [version_1_item(i) for i in data["items"]]}
        return data
    spec_name: str
    spec_hash: str
    spec: dict[str, Any] = Field(description="The spec this plan was made from, as JSON-compatible data.")
    strategy: dict[str, Any] = Field(
        default_factory=dict, description="The strategy in effect: what the user set and what the planner filled."
    )
    filled: list[str] = Field(default_factory=list, description="One line per strategy field the planner chose.")
    epsilons: list[float] = Field(
        default_factory=list, description="The epsilon curve in input units; one group of items per value."
    )
    query_budget: int | None = Field(None, description="Victim queries per input (per epsilon group).")
    items: list[PlanItem] = Field(default_factory=list)
    alternatives: list[str] = Field(
        default_factory=list, description="Further implemented attacks that realise the spec, not scheduled."
    )
    not_runnable: list[CatalogueOnly] = Field(
        default_factory=list, description="Catalogued, not yet runnable: realise the spec but have no code yet."
    )
    warnings: list[RuleNote] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    atlas: list[str] = Field(default_factory=list)
    preset: str | None = Field(None, description="The named protocol this plan reproduces (--preset), if any.")

    @property
    def runnable(self) -> bool:
        return bool(self.items)

    def parsed_spec(self) -> AttackSpec:
        return parse_spec(self.spec, f"plan for {self.spec_name}: spec")

    def groups(self) -> dict[float | None, list[PlanItem]]:
        """Items by the epsilon they evaluate, in plan order."""
        out: dict[float | None, list[PlanItem]] = {}
        for item in self.items:
            out.setdefault(item.epsilon, []).append(item)
        return out

    def to_data(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_defaults=False)
        for item in data["items"]:  # the context shows what applies, not every field it could hold
            item["context"] = {k: v for k, v in item["context"].items() if v is not None and v != []}
        if data.get("preset") is None:  # unset: plans (and their digests) read as before presets existed
            data.pop("preset", None)
        return data

    def dumps(self, fmt: Literal["yaml", "json"] = "yaml") -> str:
        data = self.to_data()
        if fmt == "json":
            return json.dumps(data, indent=2) + "\n"
        header = (
            f"# attackgen plan for spec '{self.spec_name}' (hash {self.spec_hash}).\n"
            "# Edit params, drop or reorder items freely; the embedded spec must keep its hash.\n"
        )
        return header + dump_yaml(data, width=110)


class Suggestion(_Model):
    """A nearby spec with one axis changed that passes every rule."""

    axis: str
    change: str = Field(description="A short diff: 'threat.model_knowledge: label_only -> white_box'.")
    runnable: bool = Field(False, description="An implemented attack realises the changed spec.")
    realised_by: list[str] = Field(default_factory=list, description="Catalogued attacks that realise it.")
    spec: dict[str, Any] = Field(default_factory=dict)


class Infeasible(_Model):
    """No plan: the rules that block the spec and the nearest specs that pass them."""

    spec_name: str
    spec_hash: str
    blocking: list[RuleNote]
    warnings: list[RuleNote] = Field(default_factory=list)
    nearest: list[Suggestion] = Field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return False

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def plan_format(path: str | Path) -> Literal["yaml", "json"]:
    return "json" if str(path).lower().endswith(".json") else "yaml"


def save_plan(plan: Plan, path: str | Path, fmt: Literal["yaml", "json"] | None = None) -> Path:
    """Write a plan; the format follows the extension unless given."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan.dumps(fmt or plan_format(path)), encoding="utf-8")
    return path


def parse_plan(data: Any, source: str = "<plan>", check_rules: bool = True) -> Plan:
    """Validate loaded plan data: schema, embedded spec and its hash, attack ids, and (by default) the rules."""
    from taxonomy.catalog import CATALOG

    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "an empty document"
        raise SpecError(source, [f"expected a plan mapping (from `attackgen plan`); got {kind}"])
    if "threat" in data and "items" not in data and "spec" not in data:
        raise SpecError(source, [
            "this is a spec (a threat model), not a plan. Make the plan first: `attackgen plan "
            f"{source} -o plan.yaml`, then run that plan (`attackgen run plan.yaml --model ...`)"])
    if "blocking" in data and "items" not in data:
        raise SpecError(source, [
            "this is an infeasible plan: no attack can run under the spec it was made from (see its 'blocking' "
            "rules and 'nearest' specs); change the spec and run `attackgen plan` again"])
    try:
        plan = Plan.model_validate(data)
    except ValidationError as error:
        raise SpecError(source, describe_validation_error(error)) from None
    try:
        spec = parse_spec(plan.spec, source)
    except SpecError as error:
        raise SpecError(source, [f"spec.{p}" if not p.startswith("spec") else p for p in error.problems]) from None
    actual = spec.spec_hash()
    if actual != plan.spec_hash:
        raise SpecError(
            source,
            [f"spec_hash: {plan.spec_hash} does not match the embedded spec (its hash is {actual}); the spec was "
             "edited after planning. Re-run `attackgen plan` on the spec instead of editing it here"],
        )
    problems: list[str] = []
    for index, item in enumerate(plan.items):
        problems.extend(_non_finite(item.attack_params(), f"items[{index}].params"))
        where = f"items[{index}].attack"
        descriptor = CATALOG.get(item.attack)
        if descriptor is None:
            from taxonomy.errors import did_you_mean

            problems.append(
                f"{where}: unknown attack {item.attack!r}{did_you_mean(item.attack, CATALOG)}; "
                "see `attackgen catalog`"
            )
            continue
        if not descriptor.implemented:
            problems.append(f"{where}: attack {item.attack!r} is catalogued but not yet implemented")
            continue
        bad = param_problems(item.attack, descriptor.params, item.params)
        if bad:
            context = [k for k in item.params if k in CONTEXT_KEYS and k not in descriptor.params.model_fields]
            if context:
                bad.append(f"params: {', '.join(context)} {'is' if len(context) == 1 else 'are'} threat context, "
                           "not a parameter: set it under the item's `context` (or re-run `attackgen plan`)")
            problems.extend(f"items[{index}].{line}" for line in bad)
            continue
        if check_rules:
            problems.extend(f"items[{index}]: {line}" for line in _item_breaks(spec, descriptor, item))
    if problems:
        raise SpecError(source, problems)
    return plan


_NON_FINITE_WORDS = {"nan", "inf", "infinity", "+inf", "-inf", "+infinity", "-infinity", ".nan", ".inf", "-.inf"}


def _non_finite(value: Any, where: str) -> list[str]:
    """Every NaN or infinite number in an item's params (JSON's NaN/Infinity tokens arrive as strings)."""
    if isinstance(value, dict):
        return [p for key, sub in value.items() for p in _non_finite(sub, f"{where}.{key}")]
    if isinstance(value, list):
        return [p for i, sub in enumerate(value) for p in _non_finite(sub, f"{where}[{i}]")]
    bad = (isinstance(value, float) and not math.isfinite(value)) or (
        isinstance(value, str) and value.strip().lower() in _NON_FINITE_WORDS)
    return [f"{where}: {value!r} is not a finite number; expected a finite value"] if bad else []


def _item_breaks(spec: AttackSpec, descriptor: Any, item: PlanItem) -> list[str]:
    """Why an (edited) item may not run under its spec: not realising it, or an error-level rule."""
    if not realises_any(spec, descriptor, item.role):
        return [f"attack {item.attack!r} does not realise this spec's threat cell (see `attackgen catalog`)"]
    return [note.line() for note in rule_breaks(spec, descriptor, item) if note.severity == "error"]


def load_plan(path: str | Path, check_rules: bool = True) -> Plan:
    """Read and check one plan file; every problem is a SpecError naming the file and field."""
    return parse_plan(read_yaml(path), str(path), check_rules=check_rules)
