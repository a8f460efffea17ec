"""What a .pt or .npz data file holds, checked field by field before anything uses it.

A data file is written by someone else's script, so any field can be of any type: string arrays,
object arrays that need pickle, a dict where labels belong, a number where metadata belongs. Each
becomes a DataLoadError naming the file and the field (the CLI's exit 2), never a TypeError from torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attackgen.models.errors import DataLoadError

# numpy dtype kinds that are not numbers, in the user's words
_NOT_NUMBERS = {
    "U": "strings", "S": "bytes", "O": "Python objects", "V": "records", "M": "dates", "m": "time spans",
}


def kind_of(value: Any) -> str:
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def npz_field(archive: Any, names: tuple[str, ...], path: Path) -> tuple[str, Any] | None:
    """The first of ``names`` in a .npz archive as (name, array), None when absent.

    Reading a member is where a .npz fails: object arrays need pickle (refused) and a damaged member
    does not decompress.
    """
    for name in names:
        if name not in archive.files:
            continue
        try:
            return name, archive[name]
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise DataLoadError(
                    f"--data {path}: '{name}' is an object array, which needs pickle to load and pickle runs "
                    "code; save plain numeric arrays (np.asarray(values, dtype=np.float32))."
                ) from None
            raise DataLoadError(f"--data {path}: '{name}' cannot be read ({error}).") from None
        except Exception as error:  # a damaged zip member: BadZipFile, zlib.error, EOFError...
            raise DataLoadError(f"--data {path}: '{name}' cannot be read ({error or type(error).__name__}).") from None
    return None


def numeric(value: Any, field: str, what: str, path: Path) -> Tensor:
    """``value`` (the file's ``field``) as a tensor of numbers, or a named error saying what it is."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            kind = _NOT_NUMBERS.get(value.dtype.kind, "values that are not numbers")
            raise DataLoadError(
                f"--data {path}: {field} holds {kind} (dtype {value.dtype.str}); expected {what} as numbers."
            )
        if value.dtype.kind == "u" and value.size and int(value.max()) > np.iinfo(np.int64).max:
            raise DataLoadError(  # torch would read it as a negative number
                f"--data {path}: {field} holds {int(value.max())}, larger than any index or value attackgen "
                f"reads; expected {what} as numbers below 2**63."
            )
        if not value.dtype.isnative:
            value = value.astype(value.dtype.newbyteorder("="))
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise DataLoadError(
                f"--data {path}: {field} is a {type(value).__name__} that is not numbers (or not rectangular); "
                f"expected an array or tensor of {what}."
            ) from None
    raise DataLoadError(f"--data {path}: {field} is {kind_of(value)}; expected an array or tensor of {what}.")


def class_names(value: Any, path: Path) -> list[str]:
    """The file's 'classes': one name per label index, as strings."""
    if value is None:
        return []
    if isinstance(value, (np.ndarray, Tensor)):
        if value.ndim != 1:
            shape = "a single value" if value.ndim == 0 else f"of shape {tuple(value.shape)}"
            raise DataLoadError(
                f"--data {path}: 'classes' is {shape}; expected a list of class names, one per label index."
            )
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataLoadError(
            f"--data {path}: 'classes' is {kind_of(value)}; expected a list of class names (strings), one per "
            "label index."
        )
    odd = [c for c in value if not isinstance(c, (str, bytes, int))]
    if odd:
        raise DataLoadError(
            f"--data {path}: 'classes' holds {kind_of(odd[0])} ({str(odd[0])[:40]!r}); expected a list of class "
            "names (strings), one per label index."
        )
    return [c.decode(errors="replace") if isinstance(c, bytes) else str(c) for c in value]


def metadata(value: Any, path: Path) -> dict[str, list[Any]]:
    """The file's 'metadata': {field: one value per input}, what a contextual scope selects on."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataLoadError(
            f"--data {path}: 'metadata' is {kind_of(value)}; expected a dict of per-input lists, "
            "e.g. {'city': ['Ulm', 'Bonn', ...]} with one value per input."
        )
    columns: dict[str, list[Any]] = {}
    for key, column in value.items():
        if isinstance(column, (np.ndarray, Tensor)) and column.ndim >= 1:
            columns[str(key)] = column.tolist()
        elif isinstance(column, (list, tuple)):
            columns[str(key)] = list(column)
        else:
            raise DataLoadError(
                f"--data {path}: metadata '{key}' is {kind_of(column)}; expected a list with one value per input."
            )
    return columns


def check_metadata_length(columns: dict[str, list[Any]], n: int, ref: str) -> None:
    """Each metadata column has exactly one value per input (a scope selects inputs by index)."""
    for key, column in columns.items():
        if len(column) != n:
            raise DataLoadError(
                f"--data {ref}: metadata '{key}' has {len(column)} values for {n} inputs; expected one per input."
            )
