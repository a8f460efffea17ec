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
    ("threat", "capability", "views"),
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
        if ref.isascii() and ref.isdigit() and len(ref) <= 18:  # longer: a name, not an index
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
    """Load a YAML (or JSON) file safely and within bounds; a missing or malformed file is a SpecError."""
    path = Path(path)
    if not path.exists():
        raise SpecError(str(path), ["file not found"])
    if path.is_dir():
        raise SpecError(str(path), ["is a folder; expected a YAML or JSON file"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(str(path), [f"cannot be read as UTF-8 text ({error})"]) from None
    return load_yaml_text(text, str(path))


def load_spec(path: str | Path) -> AttackSpec:
    """Read and validate one spec file."""
    return parse_spec(read_yaml(path), str(path))


def dump_spec(spec: AttackSpec) -> str:
    """The spec as YAML a person can read, without the defaults they did not write."""
    return dump_yaml(spec.model_dump(mode="json", exclude_none=True, by_alias=True))


def dump_yaml(data: Any, width: int = 80) -> str:
    """YAML that reads back as exactly ``data``, keeping non-ASCII text readable where that is safe.

    PyYAML writes some characters raw that it then reads back changed (U+0085 and the Unicode line
    and paragraph separators inside a quoted string fold to spaces), which would change a spec's
    hash between ``plan`` and ``run``; such documents are written with those characters escaped.
    """
    text = yaml.safe_dump(data, sort_keys=False, width=width, allow_unicode=True)
    if text.isascii() or yaml.safe_load(text) == data:
        return text
    return yaml.safe_dump(data, sort_keys=False, width=width, allow_unicode=False)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the spec file, for editor completion and validation."""
    schema = AttackSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "attackgen threat-model spec"
    return schema


# --------------------------------------------------------------------------- bounded YAML reading

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a spec, plan or results file may have (a real one has about 8)."""
MAX_NODES = 100_000
"""Most values a document may hold once its aliases are expanded: a few small aliases can stand for
billions of values (an alias bomb), which hashing or dumping the spec would then walk one by one."""
MAX_TEXT_CHARS = 2_000_000
"""Longest file read as a spec or plan (a plan is a few kilobytes): PyYAML reads about 1 MB a second."""
MAX_INT_DIGITS = 64
"""Longest integer accepted: Python refuses to convert integers of over 4,300 digits, and no field
needs more than a few."""


class _Refused(yaml.YAMLError):
    """A document the bounded loader will not build: too deep, too large, a duplicate key."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with the limits above, and duplicate keys refused instead of last-wins.

    Sizes are counted while composing, before any Python object is built: each node's weight is the
    number of values it stands for with its aliases expanded, so an alias bomb is refused after
    reading a few lines rather than after filling memory.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        self._weights: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            weight = self._weights.get(id(node))
            if weight is None:
                raise _Refused("an alias refers to a value that contains it (a recursive alias)", mark)
            self._count(weight, mark)
            return node
        mark = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", mark)
        before = self._expanded
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, mark)
        self._weights[id(node)] = self._expanded - before
        return node

    def _count(self, weight: int, mark: Any) -> None:
        self._expanded += weight
        if self._expanded > MAX_NODES:
            raise _Refused(f"holds more than {MAX_NODES:,} values once its aliases are expanded", mark)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key; the base class names it
                    continue
                if duplicate:
                    raise _Refused(f"duplicate key {key!r} (each key may appear once per mapping)",
                                   key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _Refused(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})", node.start_mark)
        return super().construct_yaml_int(node)


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def _check_flow_depth(text: str, source: str) -> None:
    """Refuse ``[[[[...`` nested past MAX_DEPTH before PyYAML's scanner sees it: the scanner looks
    ahead over a whole flow collection for a possible key, so deep brackets cost it quadratic time
    (5,000 of them: seconds) before the composer could count a single level."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth, line, quote, comment, previous = 0, 1, "", False, "\n"
    for ch in text:
        if previous == "\n" and not quote and (ch.isalnum() or ch == "_"):
            depth = 0  # a block key at the margin: any bracket left open above was plain text
        if ch == "\n":
            line, comment = line + 1, False
        elif comment:
            pass
        elif quote:
            if ch == quote and not (quote == '"' and previous == "\\"):
                quote = ""
        elif ch in "'\"" and previous in " \t\n[{,:":
            quote = ch
        elif ch == "#" and previous in " \t\n":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(source, [f"malformed YAML: line {line}: nested deeper than {MAX_DEPTH} levels"])
        elif ch in "]}":
            depth = max(depth - 1, 0)
        previous = ch


def _load_json(text: str, source: str) -> Any:
    """JSON text read as JSON (C speed, JSON's own number syntax), with the bounds and duplicate-key
    check of the YAML reader; NaN and Infinity tokens pass through as floats for the schema to refuse
    by field name."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise SpecError(source, [f"malformed JSON: duplicate key {key!r} (each key may appear once per "
                                         "object)"])
            out[key] = value
        return out

    def integer(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            raise SpecError(source, [f"malformed JSON: an integer of {len(digits.lstrip('-'))} digits (at most "
                                     f"{MAX_INT_DIGITS})"])
        return int(digits)

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_int=integer)
    except RecursionError:
        raise SpecError(source, [f"malformed JSON: nested deeper than {MAX_DEPTH} levels"]) from None


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML (or JSON) text within the limits above; every problem is a SpecError naming the line."""
    if len(text) > MAX_TEXT_CHARS:
        raise SpecError(source, [f"is {len(text):,} characters long; a spec or plan is at most {MAX_TEXT_CHARS:,}"])
    _check_flow_depth(text, source)
    if text.lstrip()[:1] in ("{", "["):
        try:
            return _load_json(text, source)
        except json.JSONDecodeError:
            pass  # YAML flow style rather than JSON: the YAML reader decides
    try:
        return yaml.load(text, Loader=BoundedLoader)  # a SafeLoader subclass: no python tags
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError(source, [f"malformed YAML: {where}{problem}"]) from None
    except RecursionError:  # the parser's own recursion, should a shape get past the depth limit
        raise SpecError(source, [f"malformed YAML: nested deeper than {MAX_DEPTH} levels"]) from None
    except (ValueError, TypeError, AttributeError, OverflowError) as error:
        # PyYAML's constructors fail this way on some explicitly tagged values (`!!timestamp x`, `!!float x`)
        raise SpecError(source, [f"malformed YAML: a value its tag cannot hold ({type(error).__name__}: {error})"]) \
            from None
