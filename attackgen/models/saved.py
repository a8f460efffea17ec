"""Saved models: TorchScript files and torch.export archives (.pt2), checked before loading, made runnable.

Both formats are code. A TorchScript file is a program for the TorchScript interpreter; a .pt2 archive
holds a graph plus payloads that torch.export.load may unpickle (pickled weights, constants, legacy
parts, and sample inputs it retries with ``weights_only=False``), and may name Python modules to import
(pytree contexts) or carry compiled AOTInductor libraries. ``check_export_archive`` reads the archive
as a zip and refuses, before torch touches it, anything that would unpickle, import outside torch or
load native code; ``--allow-code`` lifts that.

Loaded modules are wrapped in ``SavedModel``: a plain nn.Module, so the executor can freeze, move and
switch it to eval mode (``requires_grad_`` and ``train`` are not supported on ScriptModules, and an
exported module refuses ``eval()``), and a .pt2 exported with a fixed batch size is fed in chunks of
that size (the last padded), so any batch size runs.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from taxonomy.errors import AttackgenError

# Modules a .pt2's pytree contexts may import (default-dict factories, enums): the standard containers
# and torch itself. Anything else is code named by the file.
_SAFE_IMPORT_PREFIXES = ("builtins", "collections", "torch", "typing")
# pytree's JSON decoding imports these: default-dict factories by module name, enums as "module:Class"
_IMPORT_NAME = re.compile(r'default_factory_module\\*"\s*:\s*\\*"([^"\\]+)|fqn\\*"\s*:\s*\\*"([^"\\:]+):')


class SavedModelError(AttackgenError):
    """A saved model file cannot be loaded safely or at all."""


class SavedModel(nn.Module):
    """A TorchScript or exported module behind a plain nn.Module (freeze, move, eval all work).

    ``batch``: the fixed batch size of an exported program (None when the batch dimension is dynamic).
    """

    def __init__(self, inner: nn.Module, kind: str, batch: int | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.kind = kind
        self.batch = batch

    def train(self, mode: bool = True) -> SavedModel:
        """TorchScript modules switch mode; an exported program is frozen in the mode it was exported in."""
        self.training = mode
        if self.kind == "torchscript":
            self.inner.train(mode)
        return self

    def forward(self, x: Tensor) -> Any:
        if self.batch is None or x.shape[0] == self.batch:
            return self.inner(x)
        outputs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            short = self.batch - chunk.shape[0]
            if short:
                chunk = torch.cat([chunk, chunk[-1:].expand(short, *chunk.shape[1:])])
            out = self.inner(chunk)
            if not isinstance(out, Tensor):
                raise SavedModelError(
                    f"the exported model takes a fixed batch of {self.batch} and returns {type(out).__name__}; "
                    "only tensor outputs can be chunked: export it with a dynamic batch dimension "
                    "(dynamic_shapes={'x': {0: torch.export.Dim('batch')}})."
                )
            outputs.append(out[: out.shape[0] - short] if short else out)
        return torch.cat(outputs)


def runnable(model: nn.Module) -> nn.Module:
    """Any model the executor can freeze and switch to eval: ScriptModules and exported modules wrapped."""
    if isinstance(model, SavedModel):
        return model
    if isinstance(model, torch.jit.ScriptModule):
        return SavedModel(model, "torchscript")
    if type(model).__name__ == "GraphModule" and hasattr(model, "_in_spec"):  # torch.export's unlifted module
        return SavedModel(model, "export", _static_batch(model))
    return model


def _static_batch(module: nn.Module) -> int | None:
    """The exported input's batch size when it is a plain int (a static shape), else None."""
    for node in module.graph.nodes:  # type: ignore[union-attr]
        if node.op == "placeholder":
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            if shape is not None and len(shape) > 0 and isinstance(shape[0], int):
                return int(shape[0])
            return None
    return None


def load_torchscript(path: Path, ref: str) -> nn.Module:
    if not path.exists():
        raise SavedModelError(f"--model {ref}: file not found.")
    try:
        return SavedModel(torch.jit.load(str(path), map_location="cpu"), "torchscript")
    except Exception as error:
        raise SavedModelError(
            f"--model {ref}: not a TorchScript archive ({str(error).splitlines()[0][:160]}). Save the model "
            "with torch.jit.script(model).save(path) (or torch.jit.trace), or give a 'package.module:function' "
            "entry point that builds it; a bare state dict has no architecture to load into."
        ) from None


def load_exported(path: Path, ref: str, allow_code: bool = False) -> nn.Module:
    """A .pt2 archive, checked first (``check_export_archive``) unless code is allowed."""
    if not path.exists():
        raise SavedModelError(f"--model {ref}: file not found.")
    if not allow_code:
        check_export_archive(path, ref)
    try:
        module = torch.export.load(str(path)).module()
    except Exception as error:
        raise SavedModelError(
            f"--model {ref}: not a torch.export archive ({str(error).splitlines()[0][:160]}); save it with "
            "torch.export.save(torch.export.export(model, (example,)), path)."
        ) from None
    return SavedModel(module, "export", _static_batch(module))


def check_export_archive(path: Path, ref: str) -> None:
    """Refuse a .pt2 that torch.export.load would unpickle, import from, or load native code from."""

    def refuse(why: str) -> SavedModelError:
        return SavedModelError(
            f"--model {ref}: refused before loading: {why}. A torch.export archive saved with torch.export.save "
            "from a plain model holds only JSON and raw tensors; this one would make torch run code while "
            "loading it. Load it only if you trust its author, with --allow-code."
        )

    if not zipfile.is_zipfile(path):
        raise SavedModelError(
            f"--model {ref}: not a torch.export archive (a .pt2 is a zip file); save it with "
            "torch.export.save(torch.export.export(model, (example,)), path)."
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        roots = {name.split("/", 1)[0] for name in names if "/" in name}
        format_files = [n for n in names if n.endswith("/archive_format") and n.count("/") == 1]
        if len(roots) != 1 or not format_files:
            raise refuse("it is not in the current torch.export archive format (legacy archives are unpickled)")
        root = format_files[0].split("/")[0] + "/"
        if archive.read(format_files[0]).decode(errors="replace").strip() != "pt2":
            raise refuse("its archive_format is not 'pt2'")
        inner = [n[len(root):] for n in names]
        if any(n.startswith("data/aotinductor/") for n in inner):
            raise refuse("it carries compiled AOTInductor libraries (native code)")
        if any(n.startswith("data/constants/") and n.endswith(".pt") for n in inner):
            raise refuse("it holds constants in the legacy pickled format")
        for config_name in [n for n in inner if n.endswith("_config.json") and n.startswith("data/")]:
            config = _json(archive, root + config_name, refuse)
            for fqn, meta in (config.get("config") or {}).items():
                if not isinstance(meta, dict) or meta.get("use_pickle"):
                    raise refuse(f"{config_name} stores {fqn!r} as a pickle")
        for model_file in [n for n in inner if n.startswith("models/") and n.endswith(".json")]:
            text = archive.read(root + model_file).decode(errors="replace")
            for match in _IMPORT_NAME.findall(text):
                module = match[0] or match[1]
                if module.split(".")[0] not in _SAFE_IMPORT_PREFIXES:
                    raise refuse(f"{model_file} names the Python module {module!r} to import")
        for sample in [n for n in inner if n.startswith("data/sample_inputs/")]:
            payload = archive.read(root + sample)
            if not payload:
                continue
            try:  # torch.export.load retries a failed weights-only load with full unpickling: try it first
                torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            except Exception:
                raise refuse(f"its sample inputs ({sample}) are not plain tensors") from None


def _json(archive: zipfile.ZipFile, name: str, refuse: Any) -> dict[str, Any]:
    try:
        value = json.loads(archive.read(name))
    except ValueError:
        raise refuse(f"{name} is not JSON") from None
    if not isinstance(value, dict):
        raise refuse(f"{name} is not a JSON object")
    return value
