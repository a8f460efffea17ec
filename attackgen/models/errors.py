"""Errors of loading a model or data: their own module so that adapters (which check dense outputs)
and loading (which probes models) both raise them without importing each other."""

from __future__ import annotations

from taxonomy.errors import AttackgenError


class ModelLoadError(AttackgenError):
    """The model cannot be loaded, or it does not behave as the spec's task needs."""


class DataLoadError(AttackgenError):
    """The data cannot be loaded, or breaks the spec's input-space contract."""
