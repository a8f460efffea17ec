"""What a file may make attackgen execute: nothing, unless the command line says so.

A spec or plan is often handed over by someone else, so a model it names is untrusted: an entry point
(``package.module:function``) is imported and called, and a TorchScript file is a program. Such
references are refused unless the user allows code (``--allow-code``) or gave the very same reference
on the command line (``--model mymodels:build`` is the user's own choice). Built-in models and checked
``.pt2`` archives (attackgen.models.saved refuses any that would unpickle) need no permission.

The policy is set once per command by the CLI (``trusting``) and read by the loader; the default
(library use) trusts only the references passed to ``load_model`` as ``--model``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from taxonomy.errors import AttackgenError


class UntrustedCodeError(AttackgenError):
    """A file asks attackgen to run code that the command line did not allow."""


@dataclass(frozen=True)
class CodePolicy:
    """``allow_code``: anything named anywhere may run. ``given``: references typed on the command line."""

    allow_code: bool = False
    given: frozenset[str] = field(default_factory=frozenset)

    def permits(self, ref: str) -> bool:
        return self.allow_code or ref in self.given


_DEFAULT = CodePolicy()
_POLICY: ContextVar[CodePolicy] = ContextVar("attackgen_code_policy", default=_DEFAULT)  # frozen: safe to share


def policy() -> CodePolicy:
    return _POLICY.get()


@contextmanager
def trusting(allow_code: bool = False, given: tuple[str, ...] = ()) -> Iterator[CodePolicy]:
    """Within the block, code named by files runs only as the command line allows."""
    current = CodePolicy(allow_code, frozenset(given))
    token = _POLICY.set(current)
    try:
        yield current
    finally:
        _POLICY.reset(token)


def require_permission(ref: str, field_name: str, what: str) -> None:
    """Refuse ``ref`` (named by ``field_name`` in a file) unless the command line allows it."""
    if policy().permits(ref):
        return
    raise UntrustedCodeError(
        f"{field_name}: {ref!r} is {what}, which runs code on this machine, and it is named by a file (a spec "
        "or plan), not by you on the command line. Files are often handed over by others, so attackgen does "
        "not run the code they name unless told to: pass --allow-code if you trust this file, or give the "
        "same reference on the command line (e.g. --model)."
    )
