"""The ```console blocks of README.md and docs/*.md: parse them, run their commands, compare or rewrite.

A console block holds ``$ attackgen ...`` lines, each followed by the output the docs show for it.
Shown output may leave things out with ``...``: a line that is only ``...`` stands for any number of
lines (and a block whose shown output stops without one must show the output to its end); ``...``
inside a line stands for any text. Whitespace is compared collapsed (the docs may wrap long lines
elsewhere than the terminal), and timings (``1.92s``, ``12.3 s``) match any timing.

Used by tests/test_docs.py (compare) and scripts/refresh_docs.py (rewrite the shown output from the
real commands, after a change that alters what a command prints).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ELIDED = "..."
SLOW_VERBS = ("run", "demo")
_TIMING = re.compile(r"\b\d+(?:\.\d+)? ?s\b")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Command:
    """One ``$ attackgen ...`` line of a console block and the output shown under it."""

    doc: Path
    line: int  # 1-based line number of the "$" line
    argv: list[str]
    shown: list[str]
    first: int  # index (0-based) of the first shown-output line in the document
    end: int  # index one past the last shown-output line

    @property
    def slow(self) -> bool:
        """Runs an attack (run, demo) or renders 28 heat maps (audit -o): seconds to minutes."""
        verb = self.argv[1] if len(self.argv) > 1 else ""
        return verb in SLOW_VERBS or (verb == "audit" and ("-o" in self.argv or "--output" in self.argv))

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line} {' '.join(self.argv[1:3])}"


def commands(doc: Path) -> list[Command]:
    """Every console command of a document, in order."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    out: list[Command] = []
    inside = False
    current: Command | None = None
    for i, line in enumerate(lines):
        if not inside:
            inside = line.strip() == "```console"
            continue
        if line.strip().startswith("```"):
            inside = False
            current = None
            continue
        if line.startswith("$ "):
            argv = shlex.split(line[2:], comments=True)
            if not argv or argv[0] != "attackgen":
                raise ValueError(f"{doc.name}:{i + 1}: a console block runs only attackgen commands; got {line!r}")
            current = Command(doc, i + 1, argv, [], i + 1, i + 1)
            out.append(current)
        elif current is not None:
            current.shown.append(line)
            current.end = i + 1
    return out


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A scratch folder that looks like the repository root to the commands: examples/ linked in."""
    with tempfile.TemporaryDirectory(prefix="attackgen-docs-") as tmp:
        folder = Path(tmp)
        (folder / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
        yield folder


def run(command: Command, cwd: Path) -> tuple[int, str]:
    """Run the command in this process in ``cwd``; its exit code and what it printed (stdout and stderr
    interleaved, as a terminal shows them), with absolute paths of the checkout and the scratch folder
    written as the docs write them (relative)."""
    from attackgen.cli.main import run_in_process

    buffer = io.StringIO()
    previous = Path.cwd()
    saved = {k: os.environ.pop(k) for k in ("COLUMNS", "LINES", "FORCE_COLOR") if k in os.environ}
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            code = run_in_process(*command.argv[1:])
    finally:
        os.chdir(previous)
        os.environ.update(saved)
    text = _ANSI.sub("", buffer.getvalue())
    for prefix in (str(cwd.resolve()) + "/", str(cwd) + "/", str(ROOT) + "/"):
        text = text.replace(prefix, "")
    return code, text


def _pattern(shown: list[str]) -> re.Pattern[str]:
    parts: list[str] = []
    for line in shown:
        if line.strip() == ELIDED:
            parts.append(r"[\s\S]*?")
            continue
        pieces = [_words(piece) for piece in _TIMING.sub("\0", line).split(ELIDED)]
        parts.append(r"[\s\S]*?".join(pieces))
    tail = r"[\s\S]*" if shown and shown[-1].strip() == ELIDED else r"\s*"
    return re.compile(r"\s*" + r"\s*".join(parts) + tail + r"\Z")


def _words(text: str) -> str:
    """One shown line as a regex: words literal, any whitespace run matching any whitespace run."""
    tokens = text.split()
    return r"\s+".join(_token(t) for t in tokens)


_RULE = re.compile(r"([━─═])\1*")


def _token(token: str) -> str:
    """A word literally, a timing as any timing, and a run of a table's rule character as any run of it
    (a column as wide as its widest cell widens its rule when a timing prints one digit more)."""
    pieces = _RULE.split(token)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2 == 1:
            continue  # the captured rule character; its run is the next piece's prefix
        out.append(re.escape(piece).replace("\0", r"\d+(?:\.\d+)?\ ?s"))
        if i + 1 < len(pieces):
            out.append(re.escape(pieces[i + 1]) + "+")
    return "".join(out)


def matches(shown: list[str], actual: str) -> bool:
    return _pattern(shown).match(actual) is not None


def refreshed(shown: list[str], actual: str) -> list[str]:
    """The shown output rewritten from the real output: as many leading lines as were shown before the
    first elision line (all of them when none), then ``...`` if the real output goes on."""
    real = [line.rstrip() for line in actual.rstrip("\n").splitlines()]
    cut = next((i for i, line in enumerate(shown) if line.strip() == ELIDED), None)
    if cut is None:
        return real
    kept = real[:cut]
    return kept + ([ELIDED] if len(real) > cut else [])
