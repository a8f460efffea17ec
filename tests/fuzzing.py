"""Mutations of real spec, plan and results files, and the checks a mutated file must pass.

Shared by the hypothesis tests (tests/test_fuzz_*.py, a few hundred cases) and the bench script
(bench/fuzz_specs.py, 10,000 cases). Each mutation is one thing a hand-edited or hostile file can
do: nest deeply, hold a huge integer, an alias bomb, a duplicate key, NaN or infinity, a Unicode
line separator, a wrong type, a missing or extra field, garbled bytes. The checks say what a user
relies on: the reader raises nothing but the project's typed error (AttackgenError), and quickly.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC_FILES = sorted((ROOT / "examples" / "specs").glob("*.yaml"))
PLAN_FILES = sorted((ROOT / "examples" / "suite" / "plans").glob("*.yaml"))
RESULTS_FILES = sorted((ROOT / "examples" / "suite" / "runs").rglob("results.json"))

ODD_SCALARS: list[Any] = [
    None, True, False, 0, -1, 1, 2, 10**80, -(10**80), 0.0, -0.5, 1e308, float("nan"), float("inf"),
    float("-inf"), "", "x", "inf", "NaN", "Infinity", "a\x85b", "a\u2028b", "[/red]", "$\\undefinedcmd$",
    "<b>", [], {}, [1, 2], {"kind": "x"}, "9" * 5000,
]
UNICODE_BREAKS = ["\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\r"]


# --------------------------------------------------------------------------- tree mutations


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in nested dicts and lists (at most 30 deep), the root included."""
    out = [prefix]
    if len(prefix) >= 30:
        return out
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*prefix, i))
    return out


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(data, path[:-1])[path[-1]] = value
    return data


def _deep(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def mutate_tree(data: Any, rng: random.Random) -> Any:
    """One structural change at a random place: a value replaced, dropped, nested or duplicated."""
    paths = _paths(data)
    path = rng.choice(paths)
    op = rng.randrange(7)
    if op == 0:
        return _set(data, path, rng.choice(ODD_SCALARS))
    if op == 1 and path:
        parent = _get(data, path[:-1])
        del parent[path[-1]]
        return data
    if op == 2:
        return _set(data, path, _deep(rng.choice([3, 40, 70, 200, 1200]), _get(data, path)))
    if op == 3:
        return _set(data, path, [_get(data, path)] * rng.choice([2, 50]))
    if op == 4:
        parent = _get(data, path[:-1]) if path else None
        if isinstance(parent, dict):
            parent[rng.choice(["extra", "kind", "norm", "epsilon", "name", "<<"])] = rng.choice(ODD_SCALARS)
            return data
    if op == 5:
        value = _get(data, path)
        if isinstance(value, str):
            at = rng.randrange(len(value) + 1)
            return _set(data, path, value[:at] + rng.choice(UNICODE_BREAKS) + value[at:])
    if op == 6:
        value = _get(data, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _set(data, path, rng.choice([value * 1e300, -value, value * 10**90, float("nan")]))
    return _set(data, path, rng.choice(ODD_SCALARS))


# --------------------------------------------------------------------------- text mutations


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join(f"*a{i - 1}" for _ in range(width))
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines)


def mutate_text(text: str, rng: random.Random) -> str:
    """One change to the text as written: lines swapped or repeated, bytes garbled, YAML tricks."""
    lines = text.splitlines()
    op = rng.randrange(9)
    if op == 0 and lines:  # a repeated line: a duplicate key, or a broken structure
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif op == 1 and lines:
        del lines[rng.randrange(len(lines))]
    elif op == 2:  # an alias bomb at the top or tucked under a field
        bomb = alias_bomb(rng.choice([4, 9]))
        if rng.random() < 0.5 or not lines:
            lines = bomb.splitlines() + lines
        else:
            lines.append("description: &d " + "[" + ", ".join(["x"] * 9) + "]")
            lines += bomb.splitlines()
    elif op == 3:  # deep flow nesting
        n = rng.choice([50, 65, 100, 1000, 5000])
        lines.append("description: " + "[" * n + "]" * n)
    elif op == 4:  # a huge integer
        lines.append(f"extra_number: {'9' * rng.choice([70, 4301, 20000])}")
    elif op == 5:  # a special float token in place of a number
        token = rng.choice([".nan", ".inf", "-.inf", "NaN", "Infinity", "1.0e999", "-0.0"])
        lines = [_swap_number(line, token, rng) for line in lines]
    elif op == 6 and text:  # garbled characters
        chars = list(text)
        for _ in range(rng.randrange(1, 6)):
            chars[rng.randrange(len(chars))] = rng.choice(["{", "}", "[", "]", ":", "&", "*", "!", "\t", "'",
                                                           '"', "\x85", "\u2028", "\x00", "-", "#", "|"])
        return "".join(chars)
    elif op == 7:  # a recursive alias
        lines.append("description: &r [1, *r]")
    elif op == 8 and lines:  # a tag
        i = rng.randrange(len(lines))
        lines[i] = lines[i].replace(": ", rng.choice([": !!python/object:os.system ", ": !!binary ", ": !!set ",
                                                      ": !!timestamp ", ": !custom "]), 1)
    return "\n".join(lines) + "\n"


def _swap_number(line: str, token: str, rng: random.Random) -> str:
    import re

    if rng.random() < 0.5:
        return line
    return re.sub(r"(?<![\w.])\d+\.\d+|(?<![\w.])\d+(?![\w.])", token, line, count=1)


def mutate(text: str, rng: random.Random) -> str:
    """A mutated document: mostly structural (parsed, changed, dumped), sometimes raw text, sometimes both."""
    roll = rng.random()
    if roll < 0.55:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return mutate_text(text, rng)
        for _ in range(rng.randrange(1, 4)):
            data = mutate_tree(data, rng)
        dumped = _dump(data, rng)
        return mutate_text(dumped, rng) if roll < 0.1 else dumped
    return mutate_text(text, rng)


def _dump(data: Any, rng: random.Random) -> str:
    import sys

    limit = sys.getrecursionlimit()
    try:
        if rng.random() < 0.3:
            return json.dumps(data, allow_nan=True)  # JSON with NaN / Infinity tokens
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=rng.random() < 0.5)
    except (RecursionError, ValueError):  # too deep for the dumper itself: write the nesting by hand
        sys.setrecursionlimit(limit)
        return "description: " + "[" * 3000 + "]" * 3000 + "\n"


# --------------------------------------------------------------------------- the checks


def check_spec_text(text: str, folder: Path) -> None:
    """validate, plan and a plan round trip, as the CLI does them: only AttackgenError may escape."""
    from attackgen.plan.document import Infeasible, load_plan, save_plan
    from attackgen.plan.planner import plan
    from taxonomy.errors import AttackgenError
    from taxonomy.graph import validate
    from taxonomy.spec import load_spec

    path = folder / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        spec = load_spec(path)
        validate(spec)
        made = plan(spec)
        if isinstance(made, Infeasible):
            made.to_data()
            return
        saved = save_plan(made, folder / "plan.yaml")
        load_plan(saved)  # a plan the planner wrote must load: no "the spec was edited"
        load_plan(save_plan(made, folder / "plan.json"))
    except AttackgenError:
        return


def check_plan_text(text: str, folder: Path) -> None:
    """load_plan on a mutated plan: only AttackgenError may escape."""
    from attackgen.plan.document import load_plan
    from taxonomy.errors import AttackgenError

    for name in ("plan.yaml", "plan.json"):
        path = folder / name
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        with contextlib.suppress(AttackgenError):
            load_plan(path)


def check_audit_text(text: str, folder: Path, name: str, recheck: bool = False) -> None:
    """The audit over a suite holding one mutated file and an intact copy of the example run (so the checks
    across runs have two runs to compare), every output rendered: nothing may raise."""
    import io
    import shutil

    from rich.console import Console

    from attackgen.audit import render
    from attackgen.audit.coverage import audit, read_suite

    for old in folder.iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    (folder / name).write_text(text, encoding="utf-8", errors="surrogatepass")
    (folder / "intact").mkdir()
    shutil.copy(RESULTS_FILES[0], folder / "intact" / "results.json")
    suite = read_suite([folder], recheck=recheck)
    if suite.empty:
        return
    report = audit(suite)
    render.to_markdown(report, [])
    heatmap, render.heatmap_png = render.heatmap_png, lambda pair: ""  # type: ignore[assignment]
    try:  # the page without its 28 heat maps (about 20 s of matplotlib; they show no file's text)
        render.to_html(report, [])
    finally:
        render.heatmap_png = heatmap  # type: ignore[assignment]
    json.dumps(render.to_json(report, []))
    json.dumps(render.to_atlas(report))
    render.print_table(report, [], Console(file=io.StringIO(), width=100))


def first_failure(check: Callable[[], None]) -> BaseException | None:
    """The exception a check raised (None when it passed)."""
    try:
        check()
    except Exception as error:  # the point: anything but the typed error is a finding
        return error
    return None
