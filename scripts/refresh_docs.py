"""Rewrite the console outputs shown in README.md and docs/*.md from what the commands print now.

    python scripts/refresh_docs.py            # every document (runs the attacks: a few minutes)
    python scripts/refresh_docs.py README.md  # one document
    python scripts/refresh_docs.py --check    # only report which shown outputs differ (exit 1 if any)
    python scripts/refresh_docs.py --skip-slow  # all but the attack runs and audit pages (seconds)

A shown output keeps as many leading lines as it showed before its first ``...`` line (all of them
when it had none), then ``...`` when the command prints more. Review the diff before committing:
this makes the docs say what the code does, not whether the code does the right thing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests import doc_console  # noqa: E402


def refresh(doc: Path, check: bool, skip_slow: bool = False) -> int:
    """Refresh one document; the number of shown outputs that differed."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    changed = 0
    replacements: list[tuple[int, int, list[str]]] = []
    with doc_console.workspace() as folder:
        for command in doc_console.commands(doc):
            if skip_slow and command.slow:
                continue
            _, actual = doc_console.run(command, folder)
            if doc_console.matches(command.shown, actual):
                continue
            changed += 1
            print(f"{doc.relative_to(ROOT)}:{command.line}: {' '.join(command.argv)}: "
                  f"{'differs' if check else 'rewritten'}")
            replacements.append((command.first, command.end, doc_console.refreshed(command.shown, actual)))
    if replacements and not check:
        for first, end, new in reversed(replacements):
            lines[first:end] = new
        doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs", nargs="*", type=Path, help="Documents to refresh (default: README.md, docs/*.md).")
    parser.add_argument("--check", action="store_true", help="Report differences without rewriting.")
    parser.add_argument("--skip-slow", action="store_true", help="Leave the attack runs and audit pages as they are.")
    args = parser.parse_args()
    docs = [p.resolve() for p in args.docs] or doc_console.DOCS
    changed = sum(refresh(doc, args.check, args.skip_slow) for doc in docs)
    print(f"{changed} shown output(s) {'differ' if args.check else 'rewritten'}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
