"""The spec a user writes: a threat model, an optional strategy and the input-space contract."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from taxonomy.axes import (
    Capability,
    ClassRef,
    Consequence,
    DataKnowledge,
    Imperceptibility,
    Individual,
    InputSpace,
    LpBudget,
    ModelKnowledge,
    Scope,
    Strategy,
    Strict,
    Task,
)
from taxonomy.errors import SpecError, describe_validation_error, register_fields

SCHEMA_VERSION: Literal[1] = 1


class ThreatModel(Strict):
    """What the adversary wants, may change, and knows."""

    consequence: Consequence
    scope: Scope = Field(default_factory=Individual)
    imperceptibility: list[Imperceptibility] = Field(min_length=1)
    model_knowledge: ModelKnowledge
    data_knowledge: DataKnowledge = DataKnowledge.none
    capability: Capability = Field(default_factory=Capability)


LATER_FIELDS: tuple[tuple[str, ...], ...] = (
    ("threat", "capability", "placement"),
    ("strategy", "optimizer", "oracle"),
)
"""Optional fields added to schema version 1 after plans were written; left out of the hash while unset."""


class AttackSpec(Strict):
    """One threat model, as a user writes it in YAML."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = ""
    task: Task
    classes: list[str] | None = Field(
        None, description="The model's class names, in output order. Needed to name classes in targets."
    )
    threat: ThreatModel
    strategy: Strategy = Field(default_factory=Strategy)
    input_space: InputSpace = Field(default_factory=InputSpace)

    @model_validator(mode="after")
    def _epsilons_inside_bounds(self) -> AttackSpec:
        span = self.input_space.span
        for budget in self.lp_budgets:
            for eps in budget.epsilons:
                scaled = self.input_space.to_input_scale(eps)
                if budget.norm == "inf" and scaled > span:
                    raise ValueError(
                        "threat.imperceptibility: [S1-linf-epsilon-exceeds-input-range] "
                        f"Linf epsilon {eps} ({scaled:g} in input units) exceeds the "
                        f"input range {self.input_space.bounds}; did you mean {eps}/255 or "
                        "input_space.epsilon_units: pixel_255?"
                    )
        return self

    @property
    def lp_budgets(self) -> list[LpBudget]:
        return [item for item in self.threat.imperceptibility if isinstance(item, LpBudget)]

    def class_index(self, ref: ClassRef) -> int | None:
        """A class reference as an output index; None when a name is not in ``classes``."""
        if isinstance(ref, int):
            return ref
        if self.classes and ref in self.classes:
            return self.classes.index(ref)
        if ref.isdigit():
            return int(ref)
        return None

    def spec_hash(self) -> str:
        """A stable digest of the spec's content, recorded in plans and results. Fields added to schema
        version 1 later (``LATER_FIELDS``) count only when set, so plans made before them keep their hash."""
        data = self.model_dump(mode="json")
        for path in LATER_FIELDS:
            node: Any = data
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict) and node.get(path[-1]) is None:
                node.pop(path[-1], None)
        payload = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every field name in the schema, for did-you-mean on unknown fields."""
    seen = seen or set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    import typing

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(_field_names(annotation, seen))
        for arg in typing.get_args(annotation):
            walk(arg)

    for info in model.model_fields.values():
        walk(info.annotation)
    return names


register_fields(_field_names(AttackSpec))


def parse_spec(data: Any, source: str = "<spec>") -> AttackSpec:
    """Validate already-loaded YAML/JSON content; raises SpecError naming the source and field."""
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "an empty document"
        raise SpecError(source, [f"expected a mapping with fields name, task, threat; got {kind}"])
    try:
        return AttackSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(source, describe_validation_error(error)) from None


def read_yaml(path: str | Path) -> Any:
    """Load a YAML (or JSON) file safely; a missing or malformed file is a SpecError."""
    path = Path(path)
    if not path.exists():
        raise SpecError(str(path), ["file not found"])
    if path.is_dir():
        raise SpecError(str(path), ["is a folder; expected a YAML or JSON file"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(str(path), [f"cannot be read as UTF-8 text ({error})"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError(str(path), [f"malformed YAML: {where}{problem}"]) from None


def load_spec(path: str | Path) -> AttackSpec:
    """Read and validate one spec file."""
    return parse_spec(read_yaml(path), str(path))


def dump_spec(spec: AttackSpec) -> str:
    """The spec as YAML a person can read, without the defaults they did not write."""
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True, by_alias=True), sort_keys=False)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the spec file, for editor completion and validation."""
    schema = AttackSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "attackgen threat-model spec"
    return schema
