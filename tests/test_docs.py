"""Every console output README.md and docs/*.md show is what the command prints (tests/doc_console.py).

The commands of one document run in order in one scratch folder (a later command may read what an
earlier one wrote, as a reader following the page would). Attack runs and the audit's HTML page are
marked slow: they still run in CI. After a change that alters what a command prints, rewrite the
shown outputs with ``python scripts/refresh_docs.py`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import doc_console

CASES = [(doc, i) for doc in doc_console.DOCS for i, _ in enumerate(doc_console.commands(doc))]


def _param(doc: Path, index: int) -> object:
    command = doc_console.commands(doc)[index]
    marks = [pytest.mark.slow] if any(c.slow for c in doc_console.commands(doc)[: index + 1]) else []
    return pytest.param(doc, index, id=command.id, marks=marks)


@pytest.fixture(scope="module")
def workspaces() -> dict[Path, tuple[Path, list[int]]]:
    """One scratch folder per document, and how many of its commands ran there so far."""
    opened: dict[Path, tuple[Path, list[int]]] = {}
    stack = []
    for doc in doc_console.DOCS:
        manager = doc_console.workspace()
        stack.append(manager)
        opened[doc] = (manager.__enter__(), [0])
    yield opened  # type: ignore[misc]
    for manager in stack:
        manager.__exit__(None, None, None)


@pytest.mark.parametrize(("doc", "index"), [_param(doc, i) for doc, i in CASES])
def test_console_output_in_docs_is_what_the_command_prints(
        doc: Path, index: int, workspaces: dict[Path, tuple[Path, list[int]]]) -> None:
    folder, done = workspaces[doc]
    chain = doc_console.commands(doc)
    for earlier in chain[done[0]:index]:  # the commands before it, when run alone or after a deselection
        doc_console.run(earlier, folder)
    command = chain[index]
    _, actual = doc_console.run(command, folder)
    done[0] = index + 1
    assert doc_console.matches(command.shown, actual), (
        f"{command.doc.name}:{command.line}: `{' '.join(command.argv)}` no longer prints what the docs show.\n"
        f"--- shown ---\n" + "\n".join(command.shown) + f"\n--- printed ---\n{actual}\n"
        "If the new output is right, run `python scripts/refresh_docs.py` and review the diff."
    )


def test_every_document_with_console_output_is_covered() -> None:
    assert any(doc.name == "README.md" for doc, _ in CASES)
    assert len({doc for doc, _ in CASES}) >= 3


def test_the_matcher_catches_a_drifted_output() -> None:
    shown = ["plan for 'x': 6 item(s)", "  1. pgd_linf ...", "..."]
    assert doc_console.matches(shown, "plan for 'x': 6 item(s)\n  1. pgd_linf [primary] eps=0.05\n  2. fmn\n")
    assert not doc_console.matches(shown, "plan for 'x': 15 item(s)\n  1. pgd_linf [primary]\n")
    assert not doc_console.matches(["a", "b"], "a\nb\nc\n")  # no trailing '...': the rest must not be there
    assert doc_console.matches(["took 1.92s and", "12.3 s"], "took 0.5s and 7 s\n")


def test_a_wider_timing_column_still_matches_but_a_missing_column_does_not() -> None:
    shown = ["━━━╇━━━━━━━", " 1 │ 0.55s"]
    assert doc_console.matches(shown, "━━━╇━━━━━━━━\n 1 │ 26.96s\n")
    assert not doc_console.matches(shown, "━━━━━━━━━━━\n 1 │ 26.96s\n")
