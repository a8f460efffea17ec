"""Load the victim model and the evaluation data a user names, and check them against the spec.

Models: a built-in name (``attackgen.models.zoo``), a ``package.module:function`` entry point whose function
returns an ``nn.Module``, a torchvision model with a local weights file (``torchvision:NAME:WEIGHTS``,
attackgen.models.families), a TorchScript file (``.pt``/``.ts``/``.pth``, saved with
``torch.jit.script(model).save(path)``) or a torch.export archive (``.pt2``).

Data: a built-in name (``digits`` or ``digits:train``), a ``.pt`` file (a dict with ``x``/``y`` or a
tuple ``(x, y)``), a ``.npz`` file (arrays ``x``, ``y`` or ``inputs``, ``labels``), an IDX file of
images in the MNIST format (gzip or not; its labels file is found beside it), or an image folder (one
sub-folder per class). Image formats that store bytes (IDX, PNG, JPEG) are scaled from 0..255 to the
spec's bounds; arrays are taken as they are and must already lie inside the bounds.

The input-space contract: ``input_space.layout`` is the layout of the user's data files and model.
Inside attackgen everything is NCHW: NHWC data files are transposed on loading, and a user's model
declared NHWC is wrapped so it still receives NHWC. Built-in data and models are NCHW whatever the
spec says. Every problem is an AttackgenError naming the file or field and what was expected, so the
CLI exits 2 with one paragraph.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attackgen.models import datafiles, families, options, remote, saved, trust
from attackgen.models.adapters import DENSE_OUTPUT_CHECKS
from attackgen.models.data import LabeledData
from attackgen.models.errors import DataLoadError, ModelLoadError
from taxonomy.errors import AttackgenError, did_you_mean
from taxonomy.spec import AttackSpec

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".pth", ".jit")
EXPORT_SUFFIX = ".pt2"  # torch.export archives
ONNX_SUFFIX = ".onnx"  # run by ONNX Runtime (attackgen.models.onnx)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_BYTES_TOL = 1e-6




# --------------------------------------------------------------------------- models


def _builtin_models() -> tuple[str, ...]:
    from attackgen.models.zoo import BUILTIN_MODELS

    return tuple(BUILTIN_MODELS)


class ChannelsLast(nn.Module):
    """Feeds a channels-last (NHWC) model from attackgen's NCHW tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Any:
        return self.model(x.permute(0, 2, 3, 1))


def load_model(ref: str, layout: str = "NCHW", field: str = "--model") -> nn.Module:
    """The model named by ``ref`` in eval mode, on the CPU (the executor moves it).

    ``layout`` is the spec's input_space.layout: a user's NHWC model is wrapped to take NCHW inputs.
    ``field`` is where the reference came from, for the messages: ``--model`` is the user's own choice;
    any other field is a file (a spec's surrogate), whose entry points and TorchScript files run only
    as the command line allows (attackgen.models.trust).
    """
    try:
        return _load_model(ref, layout, field)
    except ModelLoadError as error:
        if field == "--model":
            raise
        raise ModelLoadError(str(error).replace("--model", field, 1)) from None


def _load_model(ref: str, layout: str, field: str) -> nn.Module:
    builtins = _builtin_models()
    if ref in builtins:
        from attackgen.models.zoo import load_builtin_model

        return load_builtin_model(ref).eval()  # built-in models take NCHW
    from_file = field != "--model"
    suffix = Path(ref).suffix.lower()
    model: Any
    if families.is_family_ref(ref):  # torchvision:NAME:WEIGHTS; NCHW whatever the data files' layout
        return families.load_family_model(ref)
    if remote.is_endpoint_ref(ref):
        try:
            model = remote.load_endpoint(ref, options.current().run_dir, options.current().resume)
        except remote.EndpointError as error:
            raise ModelLoadError(str(error)) from None
    elif suffix == ONNX_SUFFIX:
        from attackgen.models.onnx import OnnxLoadError, load_onnx

        try:
            model = load_onnx(Path(ref), ref, options.current().onnx_to_torch)
        except OnnxLoadError as error:
            raise ModelLoadError(str(error)) from None
    elif suffix == EXPORT_SUFFIX:
        model = _saved(lambda: saved.load_exported(Path(ref), ref, trust.policy().allow_code))
    elif suffix in TORCHSCRIPT_SUFFIXES or Path(ref).exists():
        if from_file:
            trust.require_permission(ref, field, "a TorchScript program")
        model = _saved(lambda: saved.load_torchscript(Path(ref), ref))
    elif ":" in ref:
        if from_file:
            trust.require_permission(ref, field, "a Python entry point")
        model = _load_entry_point(ref)
    else:
        known = ", ".join(sorted(builtins)) or "none installed"
        raise ModelLoadError(
            f"--model {ref!r}: not a built-in model{did_you_mean(ref, builtins)}, not an existing file and not "
            f"a 'package.module:function' entry point. Built-in models: {known}."
        )
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"--model {ref!r}: expected a torch.nn.Module, got {type(model).__name__}. An entry point must "
            "return the model itself (with its weights loaded), not a class or a state dict."
        )
    model = saved.runnable(model)  # an entry point may return a ScriptModule or an exported module too
    return (ChannelsLast(model) if layout == "NHWC" else model).eval()


def _saved(load: Callable[[], nn.Module]) -> nn.Module:
    try:
        return load()
    except saved.SavedModelError as error:
        raise ModelLoadError(str(error)) from None


def _load_entry_point(ref: str) -> nn.Module:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"--model {ref!r}: an entry point reads 'package.module:function'.")
    try:
        module = _import_from_cwd(module_name)
    except Exception as error:  # any import-time failure is the user's module, not ours
        raise ModelLoadError(
            f"--model {ref!r}: module {module_name!r} fails to import ({type(error).__name__}: {error}). "
            f"Check that it is installed, on PYTHONPATH or in the current folder ({Path.cwd()}), and that "
            "it imports on its own."
        ) from None
    factory = getattr(module, attr, None)
    if factory is None:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise ModelLoadError(
            f"--model {ref!r}: module {module_name!r} has no attribute {attr!r}{did_you_mean(attr, names)}."
        )
    if isinstance(factory, nn.Module):
        return factory
    if not callable(factory):
        raise ModelLoadError(f"--model {ref!r}: {attr!r} is neither a function nor an nn.Module.")
    try:
        return factory()
    except Exception as error:
        raise ModelLoadError(
            f"--model {ref!r}: calling {attr}() failed ({type(error).__name__}: {error}). The function must "
            "take no arguments and return the model with its weights loaded."
        ) from None


def _import_from_cwd(module_name: str) -> Any:
    """Import a user's module, looking in the current folder too (a console script does not put it on
    sys.path, although ``python -m`` would)."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        if added:
            sys.path.remove(cwd)


# Task -> check of the model's outputs on a few inputs; other tasks register theirs here.
OutputCheck = Callable[[Any, int, AttackSpec, str], int | None]
OUTPUT_CHECKS: dict[str, OutputCheck] = {}


def register_output_check(task: str, check: OutputCheck) -> None:
    """Plug in the output check of a task: ``check(outputs, n, spec, model_ref)`` -> classes or None."""
    OUTPUT_CHECKS[task] = check


def _check_classifier_output(outputs: Any, n: int, spec: AttackSpec, ref: str) -> int:
    if not isinstance(outputs, Tensor):
        raise ModelLoadError(
            f"--model {ref}: returned {type(outputs).__name__}; a classifier must return one tensor of "
            f"logits of shape (N, classes)."
        )
    if outputs.dim() != 2 or outputs.shape[0] != n:
        raise ModelLoadError(
            f"--model {ref}: output has shape {tuple(outputs.shape)} for {n} inputs; a classifier "
            f"(task: {spec.task.value}) must return logits of shape ({n}, classes). If it returns a "
            "dict or tuple, wrap it in a module that returns the logits."
        )
    if outputs.shape[1] < 2:
        raise ModelLoadError(f"--model {ref}: output has {outputs.shape[1]} class; a classifier needs at least 2.")
    if not bool(torch.isfinite(outputs).all()):
        raise ModelLoadError(f"--model {ref}: output holds NaN or infinite values on the first {n} inputs.")
    classes = int(outputs.shape[1])
    if spec.classes is not None and len(spec.classes) != classes:
        raise ModelLoadError(
            f"--model {ref}: returns {classes} classes but the spec's 'classes' field lists {len(spec.classes)}."
        )
    return classes


register_output_check("classification", _check_classifier_output)
for _task, _check in DENSE_OUTPUT_CHECKS.items():  # segmentation and detection, from attackgen.models.adapters
    register_output_check(_task, _check)


def check_model(model: nn.Module, data: LabeledData, spec: AttackSpec, ref: str, device: torch.device) -> int | None:
    """Run the model on a few inputs; returns the number of classes (None for tasks without one)."""
    check_access(model, spec, ref)
    families.check_input_space(model, spec, ref)
    n = min(4, len(data))
    probe = data.x[:n].to(device)
    try:
        with torch.no_grad():
            outputs = model(probe)
    except AttackgenError as error:  # an adapter's own check of the output format (dense tasks)
        raise ModelLoadError(f"--model {ref}: {error}") from None
    except Exception as error:
        raise ModelLoadError(
            f"--model {ref}: fails on a batch of shape {tuple(probe.shape)} (NCHW, values in "
            f"{list(spec.input_space.bounds)}): {type(error).__name__}: {str(error).splitlines()[0][:200]}. "
            f"The model must take float32 inputs in the spec's input_space.layout ({spec.input_space.layout})."
        ) from None
    check = OUTPUT_CHECKS.get(spec.task.value)
    return check(outputs, n, spec, ref) if check else None


def check_access(model: nn.Module, spec: AttackSpec, ref: str) -> None:
    """A model that answers queries only (ONNX Runtime, an endpoint) cannot serve a white-box spec."""
    from attackgen.models.onnx import find_oracle_only, white_box_refusal

    oracle = find_oracle_only(model)
    kind = getattr(spec.threat.model_knowledge, "kind", "")
    if oracle is not None and kind == "white_box":
        raise ModelLoadError(f"--model {ref}: {white_box_refusal(oracle, 'white_box')}")
    if kind in ("output_transparent", "query_limited") and getattr(getattr(oracle, "config", None), "returns",
                                                                   "") == "labels":
        raise ModelLoadError(
            f"--model {ref}: the spec grants model_knowledge {kind} (score queries), but the endpoint returns "
            "labels only (endpoint.returns: labels); make the spec label_only, or read the scores the endpoint "
            "gives (endpoint.response)."
        )


# --------------------------------------------------------------------------- data


def _builtin_data_names() -> list[str]:
    from attackgen.models.zoo import BUILTIN_DATA

    return list(BUILTIN_DATA)


def load_data(ref: str, spec: AttackSpec, split: str = "test") -> LabeledData:
    """Load the data named by ``ref`` and check it against the spec's input space."""
    path = Path(ref)
    builtin = _builtin_data_names()
    if not path.exists() and ref in builtin:
        from attackgen.models.zoo import load_builtin_data

        return validate_data(load_builtin_data(ref, split), spec, ref, scale_bytes=False, layout="NCHW")
    if not path.exists():
        raise DataLoadError(
            f"--data {ref}: no such file or folder, and not a built-in data set{did_you_mean(ref, builtin)} "
            f"(built-in: {', '.join(builtin)})."
        )
    if path.is_file() and path.stat().st_size == 0:
        raise DataLoadError(f"--data {ref}: is empty (0 bytes); expected a data file.")
    if path.is_dir():  # image files and IDX have a layout of their own; arrays follow the spec's
        return validate_data(_load_image_folder(path), spec, ref, scale_bytes=True, layout="NCHW")
    if path.suffix == ".npz":
        return validate_data(_load_npz(path), spec, ref, scale_bytes=False)
    if path.suffix in (".pt", ".pth"):
        return validate_data(_load_pt(path), spec, ref, scale_bytes=False)
    if _looks_idx(path):
        return validate_data(_load_idx(path), spec, ref, scale_bytes=True, layout="NCHW")
    raise DataLoadError(
        f"--data {ref}: unknown format {path.suffix or '(no suffix)'}; expected a .pt or .npz file, an IDX "
        "images file (MNIST format, e.g. t10k-images-idx3-ubyte.gz) or a folder with one sub-folder per class."
    )


def _pick(mapping: Any, names: tuple[str, ...]) -> tuple[str, Any] | None:
    for name in names:
        if name in mapping:
            return name, mapping[name]
    return None


_X_NAMES = ("x", "inputs", "images", "data", "X")
_Y_NAMES = ("y", "labels", "targets", "label", "Y")
_INPUTS, _LABELS = "inputs", "class indices"


def _load_npz(path: Path) -> LabeledData:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:
        raise DataLoadError(f"--data {path}: cannot be read as a .npz archive ({_first_line(error)}).") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataLoadError(
            f"--data {path}: is a single .npy array, not a .npz archive; save inputs and labels together with "
            "np.savez(path, x=inputs, y=labels)."
        )
    with archive:
        x, y = datafiles.npz_field(archive, _X_NAMES, path), datafiles.npz_field(archive, _Y_NAMES, path)
        if x is None or y is None:
            raise DataLoadError(
                f"--data {path}: holds arrays {sorted(archive.files)}; expected inputs under 'x' (or 'inputs') "
                "and labels under 'y' (or 'labels')."
            )
        named = datafiles.npz_field(archive, ("classes",), path)
        classes = datafiles.class_names(named[1] if named else None, path)
        inputs = datafiles.numeric(x[1], f"'{x[0]}'", _INPUTS, path)
        labels = datafiles.numeric(y[1], f"'{y[0]}'", _LABELS, path)
    return LabeledData(path.name, inputs, labels, classes)


def _load_pt(path: Path) -> LabeledData:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataLoadError(
            f"--data {path}: cannot be read with torch.load(weights_only=True) ({_first_line(error)}). "
            "Save plain tensors: torch.save({'x': x, 'y': y}, path)."
        ) from None
    classes: list[str] = []
    metadata: dict[str, list[Any]] = {}
    if isinstance(content, dict):
        x, y = _pick(content, _X_NAMES), _pick(content, _Y_NAMES)
        if x is None or y is None:
            present = {str(k): "None" if v is None else type(v).__name__ for k, v in content.items()}
            raise DataLoadError(
                f"--data {path}: a dict holding {present}; expected inputs under 'x' (or 'inputs') and labels "
                "under 'y' (or 'labels'), each an array or tensor."
            )
        classes = datafiles.class_names(content.get("classes"), path)
        metadata = datafiles.metadata(content.get("metadata"), path)
        inputs = datafiles.numeric(x[1], f"'{x[0]}'", _INPUTS, path)
        labels = datafiles.numeric(y[1], f"'{y[0]}'", _LABELS, path)
    elif isinstance(content, (tuple, list)) and len(content) == 2:
        inputs = datafiles.numeric(content[0], "inputs", _INPUTS, path)
        labels = datafiles.numeric(content[1], "labels", _LABELS, path)
    else:
        raise DataLoadError(
            f"--data {path}: holds {datafiles.kind_of(content)}; expected a dict {{'x': inputs, 'y': labels}} "
            "or a tuple (inputs, labels)."
        )
    return LabeledData(path.name, inputs, labels, classes, metadata)


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), short enough for one paragraph."""
    lines = str(error).strip().splitlines()
    return lines[0][:160] if lines else type(error).__name__


def _looks_idx(path: Path) -> bool:
    """An IDX file by name (MNIST's files carry 'idx' in their names) or by its magic number."""
    if "idx" in path.name.lower():
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:3] == b"\x00\x00\x08" and 1 <= head[3] <= 4


def idx_labels_path(images: Path) -> Path | None:
    """The labels file that goes with an IDX images file (t10k-images-idx3-ubyte -> t10k-labels-idx1-ubyte)."""
    name = images.name
    candidates = [
        name.replace("images-idx3", "labels-idx1"),
        name.replace("images.idx3", "labels.idx1"),
        name.replace("images", "labels").replace("idx3", "idx1"),
    ]
    for candidate in dict.fromkeys(candidates):
        for variant in (candidate, candidate + ".gz", candidate.removesuffix(".gz")):
            path = images.with_name(variant)
            if variant != name and path.exists():
                return path
    return None


def _load_idx(path: Path) -> LabeledData:
    from attackgen.models.zoo.data import read_idx

    images = read_idx(path)
    if images.ndim == 1:
        raise DataLoadError(
            f"--data {path}: this IDX file holds labels (one dimension); give the images file "
            "(e.g. t10k-images-idx3-ubyte.gz) and its labels are found beside it."
        )
    labels_path = idx_labels_path(path)
    if labels_path is None:
        raise DataLoadError(
            f"--data {path}: no labels file beside it; expected "
            f"{path.name.replace('images-idx3', 'labels-idx1')} in {path.parent}."
        )
    labels = read_idx(labels_path)
    x = torch.from_numpy(images.copy())
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W): IDX images are single-channel
    return LabeledData(path.name, x, torch.from_numpy(labels.astype(np.int64)), [])


def _load_image_folder(path: Path) -> LabeledData:
    from PIL import Image

    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataLoadError(
            f"--data {path}: a folder with no sub-folders; an image folder holds one sub-folder per class "
            "(cat/, dog/...) with the images inside."
        )
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_dirs):
        files += [(f, label) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataLoadError(f"--data {path}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES)}).")
    images = []
    for file, _ in files:
        try:
            with Image.open(file) as image:
                images.append(image.copy())
        except Exception as error:
            raise DataLoadError(f"--data {file}: cannot be read as an image ({error}).") from None
    grey = all(image.mode in ("L", "1", "I;16", "I") for image in images)
    mode = "L" if grey else "RGB"
    size = images[0].size
    arrays = []
    for (file, _), image in zip(files, images, strict=True):
        if image.size != size:
            raise DataLoadError(
                f"--data {file}: is {image.size[0]}x{image.size[1]} pixels but {files[0][0].name} is "
                f"{size[0]}x{size[1]}; every image in a folder data set must have the same size."
            )
        array = np.asarray(image.convert(mode), dtype=np.uint8)
        arrays.append(array[None] if mode == "L" else array.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrays))
    y = torch.tensor([label for _, label in files])
    return LabeledData(path.name, x, y, [d.name for d in class_dirs])


# --------------------------------------------------------------------------- the input-space contract


def validate_data(data: LabeledData, spec: AttackSpec, ref: str, scale_bytes: bool,
                  layout: str | None = None) -> LabeledData:
    """Check shape, layout, values and labels against the spec; convert what the spec declares.

    ``layout`` overrides the spec's (built-in data is NCHW whatever the spec says).
    """
    space = spec.input_space
    layout = layout or space.layout
    x = data.x
    if not isinstance(x, Tensor):
        raise DataLoadError(f"--data {ref}: inputs are a {type(x).__name__}; expected an array or tensor.")
    if x.dtype == torch.bool or x.is_complex():
        raise DataLoadError(f"--data {ref}: inputs have dtype {x.dtype}; expected real numbers.")
    byte_data = x.dtype == torch.uint8
    if x.dim() == 3:
        x = x.unsqueeze(1 if layout == "NCHW" else -1)  # single-channel images without a channel axis
    if x.dim() != 4:
        raise DataLoadError(
            f"--data {ref}: inputs have shape {tuple(x.shape)}; expected images (N, C, H, W) as the spec's "
            f"input_space.layout {layout} declares (or (N, H, W) for single-channel images)."
        )
    if x.shape[0] == 0:
        raise DataLoadError(f"--data {ref}: holds no inputs (shape {tuple(x.shape)}); expected at least one.")
    datafiles.check_metadata_length(data.metadata, int(x.shape[0]), ref)
    x = _to_nchw(x, layout, ref)
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero().flatten().tolist()
        raise DataLoadError(
            f"--data {ref}: {len(bad)} inputs hold NaN or infinite values (first at index {bad[0]}); "
            "remove or repair them."
        )
    low, high = space.bounds
    if scale_bytes and byte_data:
        x = x / 255.0 * (high - low) + low  # image bytes are 0..255 by definition: map them onto the bounds
    _check_bounds(x, low, high, ref)
    y, classes = data.y, list(data.classes)
    if spec.task.value == "classification" and spec.classes is not None and classes:
        y, classes = _align_classes(torch.as_tensor(y), classes, list(spec.classes), ref)
    y = _check_labels(y, len(x), spec, ref)
    return LabeledData(data.name or Path(ref).name, x.contiguous(), y, classes, dict(data.metadata))


def _align_classes(y: Tensor, classes: list[str], wanted: list[str], ref: str) -> tuple[Tensor, list[str]]:
    """Labels re-indexed from the data's class names to the spec's order, which is the model's output order.

    An image folder's classes come in alphabetical folder order and a data file may list them in any
    order; the names decide, never the positions. Names the spec does not list are an error.
    """
    if classes == wanted:
        return y, classes
    unknown = [c for c in classes if c not in wanted]
    if unknown or len(set(classes)) != len(classes):
        what = f"class names {unknown} that" if unknown else "repeated class names that"
        raise DataLoadError(
            f"--data {ref}: has {what} the spec's 'classes' field does not list. Data classes: {classes}; "
            f"spec classes: {wanted}. Name the data's classes (folder names, or the 'classes' array of a data "
            "file) exactly as the spec does, in any order, or correct the spec."
        )
    if y.dim() != 1 or y.is_floating_point() or (len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes))):
        raise DataLoadError(
            f"--data {ref}: labels must be class indices 0..{len(classes) - 1} into the data's {len(classes)} "
            f"class names {classes}."
        )
    index = torch.tensor([wanted.index(c) for c in classes], dtype=torch.long)
    return index[y.long()], list(wanted)


def _to_nchw(x: Tensor, layout: str, ref: str) -> Tensor:
    channels_first = x.shape[1] in (1, 3, 4)
    channels_last = x.shape[-1] in (1, 3, 4)
    if layout == "NHWC":
        if not channels_last and channels_first:
            raise DataLoadError(
                f"--data {ref}: inputs have shape {tuple(x.shape)}, which looks channels-first (N, C, H, W), but "
                "the spec's input_space.layout says NHWC; set input_space.layout: NCHW."
            )
        return x.permute(0, 3, 1, 2)
    if channels_last and not channels_first:
        raise DataLoadError(
            f"--data {ref}: inputs have shape {tuple(x.shape)}, which looks channels-last (N, H, W, C), but the "
            "spec's input_space.layout is NCHW. Set input_space.layout: NHWC to have them converted, or store "
            "them as (N, C, H, W) (x.permute(0, 3, 1, 2))."
        )
    return x


def _check_bounds(x: Tensor, low: float, high: float, ref: str) -> None:
    lo, hi = float(x.min()), float(x.max())
    tol = 1e-5 * max(1.0, high - low)
    if lo >= low - tol and hi <= high + tol:
        return
    outside = ((x < low - tol) | (x > high + tol)).flatten(1).any(dim=1)
    count, first = int(outside.sum()), int(outside.nonzero()[0])
    hint = ""
    if hi > high + tol and 1.5 * high < hi <= 255.0 + tol and lo >= -tol:
        factor = 255.0 / (high - low) if high - low > 0 else 255.0
        hint = (
            f" The values look like 0..255 pixels: divide them by {factor:g} before saving, or declare "
            "input_space.bounds: [0, 255] if the model takes 0..255 inputs."
        )
    elif lo < low - tol and abs(float(x.mean())) < 0.5 * (high - low):
        hint = (
            " The values look mean/std-normalised: save the raw data and move the normalisation into the "
            "model (input_space.normalization: inside_model), so epsilons stay in input units."
        )
    raise DataLoadError(
        f"--data {ref}: values range over [{lo:g}, {hi:g}] but the spec's input_space.bounds are "
        f"[{low:g}, {high:g}]; {count} inputs lie outside (first at index {first}).{hint}"
    )


def _check_labels(y: Any, n: int, spec: AttackSpec, ref: str) -> Any:
    if spec.task.value != "classification":
        return y  # dense tasks check their own labels (label maps, boxes)
    y = torch.as_tensor(y)
    one_hot = y.dim() == 2 and y.shape[0] == n and y.shape[1] > 1 and bool(((y == 0) | (y == 1)).all())
    if one_hot and bool((y.sum(dim=1) == 1).all()):
        y = y.argmax(dim=1)  # one-hot rows -> class indices
    if y.dim() != 1 or y.shape[0] != n:
        raise DataLoadError(
            f"--data {ref}: labels have shape {tuple(y.shape)} for {n} inputs; expected ({n},) class indices."
        )
    if y.is_floating_point() and not (bool(torch.isfinite(y).all()) and bool((y == y.round()).all())):
        raise DataLoadError(f"--data {ref}: labels are not whole numbers; expected class indices 0..classes-1.")
    y = y.long()
    if n and int(y.min()) < 0:
        raise DataLoadError(f"--data {ref}: label {int(y.min())} is negative; expected class indices 0..classes-1.")
    if spec.classes is not None and n and int(y.max()) >= len(spec.classes):
        raise DataLoadError(
            f"--data {ref}: label {int(y.max())} is out of range for the spec's {len(spec.classes)} classes."
        )
    return y


def check_labels_against_model(data: LabeledData, classes: int | None, ref: str) -> None:
    """Labels must index the model's outputs."""
    if classes is None or not isinstance(data.y, Tensor) or len(data) == 0:
        return
    top = int(data.y.max())
    if top >= classes:
        bad = int((data.y >= classes).sum())
        raise DataLoadError(
            f"--data {ref}: label {top} is out of range for a model with {classes} outputs ({bad} labels are "
            f">= {classes}); expected class indices 0..{classes - 1}."
        )


def load_mask(path: str, shape: tuple[int, ...], field: str = "threat.capability.spatial.mask") -> Tensor:
    """A mask file (.npy or image), non-zero where change is allowed, as a (1, C or 1, H, W) float tensor."""
    file = Path(path)
    if not file.exists():
        raise AttackgenError(f"{field}: mask file {path} not found.")
    try:
        if file.suffix == ".npy":
            array = np.load(file, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(file) as image:
                array = np.asarray(image.convert("L"))
    except Exception as error:
        raise AttackgenError(f"{field}: {path} cannot be read as a .npy array or an image ({error}).") from None
    mask = torch.from_numpy(np.asarray(array) != 0).float()
    _, c, h, w = shape
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3 and mask.shape[0] in (1, c):
        mask = mask[None]
    if mask.dim() != 4 or tuple(mask.shape[-2:]) != (h, w):
        raise AttackgenError(
            f"{field}: {path} has shape {tuple(array.shape)}; expected ({h}, {w}) or ({c}, {h}, {w}) to match "
            f"inputs of shape (C, H, W) = ({c}, {h}, {w})."
        )
    if not bool(mask.any()):
        raise AttackgenError(f"{field}: {path} is all zeros, so nothing may change; mark the allowed region non-zero.")
    return mask
