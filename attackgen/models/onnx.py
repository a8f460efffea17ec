"""ONNX models through ONNX Runtime: a victim that answers queries and gives no gradients.

An ``.onnx`` file runs in an onnxruntime InferenceSession (extra ``attackgen[onnx]``) behind an
nn.Module, so the score and label oracles of attackgen.run.access count and budget its queries as any
other model's. It has no gradients, so a spec that grants white-box access is refused before anything
runs (``check_model``), with the fix: convert the graph to torch with onnx2torch, which the message
says when the graph converts, and which ``--onnx-to-torch`` does for the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from taxonomy.errors import AttackgenError


class OnnxLoadError(AttackgenError):
    """The ONNX file cannot be run."""


class OracleOnlyModel(nn.Module):
    """Marker base: a model that can be queried but not differentiated (ONNX Runtime, remote endpoints)."""

    oracle_only = True
    source = "a model without gradients"


def find_oracle_only(model: nn.Module) -> OracleOnlyModel | None:
    """The query-only model inside ``model`` (through adapters and layout wrappers), if any."""
    for module in model.modules():
        if isinstance(module, OracleOnlyModel):
            return module
    return None


class OnnxModel(OracleOnlyModel):
    """An ONNX Runtime session as a module: float32 NCHW in, the first output (logits) out."""

    def __init__(self, path: Path, ref: str) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxLoadError(
                f"--model {ref}: running an ONNX model needs onnxruntime: pip install 'attackgen[onnx]'."
            ) from None
        if not path.exists():
            raise OnnxLoadError(f"--model {ref}: file not found.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise OnnxLoadError(
                f"--model {ref}: ONNX Runtime cannot load it ({str(error).splitlines()[0][:200]})."
            ) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise OnnxLoadError(
                f"--model {ref}: the graph takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                "attackgen feeds one image batch."
            )
        self.input_name = inputs[0].name
        first = inputs[0].shape[0] if inputs[0].shape else None
        self.batch = first if isinstance(first, int) and first > 0 else None
        self.path, self.ref = path, ref
        self.source = f"the ONNX model {ref} (ONNX Runtime)"

    def forward(self, x: Tensor) -> Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        if self.batch is None or len(array) == self.batch:
            out = self._run(array)
        else:  # a graph with a fixed batch size: chunks of that size, the last padded
            parts = []
            for start in range(0, len(array), self.batch):
                chunk = array[start:start + self.batch]
                short = self.batch - len(chunk)
                if short:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
                parts.append(self._run(chunk)[: self.batch - short])
            out = np.concatenate(parts)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)

    def _run(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: array})[0])


def load_onnx(path: Path, ref: str, to_torch: bool = False) -> nn.Module:
    """An ONNX model: an ONNX Runtime oracle, or with ``to_torch`` a torch module converted by onnx2torch."""
    if to_torch:
        converted, why = convert_with_onnx2torch(path)
        if converted is None:
            raise OnnxLoadError(f"--model {ref}: --onnx-to-torch: onnx2torch cannot convert this graph ({why}).")
        return converted
    return OnnxModel(path, ref)


def convert_with_onnx2torch(path: Path) -> tuple[nn.Module | None, str]:
    """(module, "") when onnx2torch is installed and converts the graph, else (None, the reason)."""
    try:
        from onnx2torch import convert
    except Exception as error:  # not installed, or its torchvision import fails next to this torch
        return None, f"onnx2torch is not importable here: {type(error).__name__}: {str(error)[:120]}"
    try:
        return convert(str(path)), ""
    except Exception as error:
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"


def white_box_refusal(model: OracleOnlyModel, knowledge: str) -> str:
    """The message for a spec whose knowledge needs gradients from a model that has none."""
    message = (
        f"the spec grants model_knowledge {knowledge}, whose attacks need the victim's gradients, but "
        f"{model.source} answers queries only. "
    )
    if isinstance(model, OnnxModel):
        converted, why = convert_with_onnx2torch(model.path)
        if converted is not None:
            return message + ("This graph converts to torch with onnx2torch: rerun with --onnx-to-torch to attack "
                              "the converted module white-box, or make the spec black-box (query_limited, "
                              "output_transparent or label_only) to attack it through ONNX Runtime.")
        return message + (f"Converting it with onnx2torch (pip install onnx2torch) would give a torch module, but "
                          f"that failed here ({why}). Make the spec black-box (query_limited, output_transparent or "
                          "label_only) to attack it through ONNX Runtime, or give the torch model it came from.")
    return message + "Make the spec black-box (query_limited, output_transparent or label_only)."


def describe(model: Any) -> str:
    return getattr(model, "source", type(model).__name__)
