"""Errors a user sees: one paragraph naming the file, the field path and what was expected."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError


class AttackgenError(Exception):
    """Base of every error the CLI reports as a clear message with exit code 2 (never a traceback)."""

    exit_code = 2


class SpecError(AttackgenError):
    """A spec, plan or other input file is missing, malformed or breaks the schema."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        items = "; ".join(f"({i}) {p}" for i, p in enumerate(self.problems, 1))
        return f"{self.source}: {len(self.problems)} problems: {items}"


def did_you_mean(value: Any, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when value is close to one of choices, else ''."""
    if not isinstance(value, str):
        return ""
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _expected_choices(error: dict[str, Any]) -> list[str]:
    ctx = error.get("ctx") or {}
    if "expected_tags" in ctx:
        return re.findall(r"'([^']+)'", str(ctx["expected_tags"]))
    if "expected" in ctx:
        return re.findall(r"'([^']+)'", str(ctx["expected"]))
    return []


def field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's location tuple as a dotted path; union branch names are dropped."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and (item[:1].isupper() or item.startswith(("function-", "tagged-union"))):
            continue  # union branch or validator wrapper, not a field the user wrote
        elif item in ("static_target", "dynamic_target", "untargeted", "confusing_target", "vanishing",
                      "fabrication", "mislabel", "individual", "contextual", "universal", "lp", "perceptual",
                      "output", "detector", "white_box", "output_transparent", "query_limited", "label_only",
                      "full_black_box", "victim", "surrogate") and parts:
            continue  # discriminator tag inserted by pydantic
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def describe_validation_error(error: ValidationError) -> list[str]:
    """Each pydantic error as 'field.path: what is wrong; expected ...'."""
    problems: list[str] = []
    for details in error.errors(include_url=False):
        item: dict[str, Any] = dict(details)
        path = field_path(tuple(item["loc"]))
        kind = item["type"]
        given = item.get("input")
        if kind == "extra_forbidden":
            problems.append(f"{path}: unknown field{did_you_mean(path.rsplit('.', 1)[-1], _siblings(item))}")
            continue
        if kind == "missing":
            problems.append(f"{path}: required field is missing")
            continue
        choices = _expected_choices(item)
        if kind == "union_tag_invalid" and isinstance(given, dict):
            path, given = f"{path}.kind", given.get("kind")
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        rule_id = SCHEMA_RULES.get((path.rsplit(".", 1)[-1], kind))
        if rule_id is not None:
            message = f"[{rule_id}] {message}"
        if choices:
            shown = ", ".join(repr(c) for c in choices)
            problems.append(f"{path}: unknown value {given!r}{did_you_mean(given, choices)}; expected one of {shown}")
        else:
            problems.append(f"{path}: {message} (got {given!r})" if _short(given) else f"{path}: {message}")
    return problems


SCHEMA_RULES: dict[tuple[str, str], str] = {
    ("detectors", "too_short"): "S2-detector-list-empty",
    ("query_budget", "greater_than"): "S4-query-budget-positive",
}
"""(field name, pydantic error type) -> the schema rule (taxonomy.rules, family S) a built-in constraint
enforces; validators with their own message put the id in it ('[S1-...] ...')."""

_RULE_TAG = re.compile(r"\[(S\d+-[a-z0-9-]+)\]")


def schema_rule_ids(problems: Iterable[str]) -> list[str]:
    """The schema rule ids named in SpecError problems, in order, once each."""
    return list(dict.fromkeys(m for p in problems for m in _RULE_TAG.findall(p)))


def _short(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) and len(repr(value)) < 60


_KNOWN_FIELDS: dict[str, list[str]] = {}


def register_fields(names: Iterable[str]) -> None:
    """Field names used for did-you-mean on unknown fields (filled by the schema module)."""
    for name in names:
        _KNOWN_FIELDS.setdefault(name, [])


def _siblings(item: dict[str, Any]) -> list[str]:
    return list(_KNOWN_FIELDS)
