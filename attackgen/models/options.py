"""What the command line tells the model loader beyond the reference itself.

Set once per command by the CLI (``loading_with``), read where a model is built: convert ONNX to
torch, and the run folder where a remote model keeps its query log (and whether the run resumes, so
answered queries are replayed from that log instead of being sent again).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LoadOptions:
    onnx_to_torch: bool = False
    run_dir: Path | None = None
    resume: bool = False


_DEFAULT = LoadOptions()
_OPTIONS: ContextVar[LoadOptions] = ContextVar("attackgen_load_options", default=_DEFAULT)


def current() -> LoadOptions:
    return _OPTIONS.get()


@contextmanager
def loading_with(options: LoadOptions) -> Iterator[LoadOptions]:
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)
