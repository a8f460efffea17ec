"""Model families from local files: ``--model torchvision:NAME:WEIGHTS``, ``timm:NAME:WEIGHTS``, ``hf:FOLDER``
(the ``[vision]`` extra; timm: classifiers, preprocessing from the model's ``pretrained_cfg``).

``NAME`` is any torchvision classification, semantic segmentation or detection builder
(``torchvision.models.list_models()``), ``WEIGHTS`` a local state dict (``.pt``/``.pth`` saved with
``torch.save(model.state_dict(), path)``, or ``.safetensors``). attackgen never downloads: the model is
built with ``weights=None, weights_backbone=None`` and the file's tensors are loaded strictly; the class
count (and a segmentation model's auxiliary head) is read from the file.

The family's preprocessing runs inside the wrapper, so attacks see pixels in [0, 1] and epsilons stay in
pixel units (``input_space: {bounds: [0, 1], normalization: inside_model}``, checked by
``check_input_space``):

- classification: resize (shorter side to the weights' ``resize_size``, centre crop to ``crop_size``, as the
  weights' own transforms do; skipped when the input already has the crop size) and mean/std normalisation;
- segmentation: mean/std normalisation; torchvision upsamples the logits to the input size itself;
- detection: the detector's own transform (normalisation, resizing, boxes mapped back to input pixels);
  its internal score threshold is lowered so candidates below the operating point (``score_threshold``,
  0.5) still come back with differentiable scores.

A detector's own settings may follow the weights file: ``torchvision:retinanet_resnet50_fpn:w.pt:min_size=512,
max_size=512`` (``DETECTOR_OPTIONS``: the size its transform resizes to, how many boxes it keeps), passed to
the builder as torchvision's own keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attackgen.models.errors import ModelLoadError
from taxonomy.errors import AttackgenError, did_you_mean

PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
HF_PREFIX = "hf:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DETECTOR_CANDIDATE_THRESHOLD = 0.01
"""The detector's own score cut: low, so attacks see (and push) scores below the operating point."""
OPERATING_THRESHOLD = 0.5
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")
DETECTOR_OPTIONS = {"min_size": int, "max_size": int, "box_detections_per_img": int, "detections_per_img": int,
                    "topk_candidates": int, "box_score_thresh": float, "score_thresh": float}
"""Builder keywords a ``torchvision:`` detector reference may set (the resize of its transform, box counts)."""


def is_family_ref(ref: str) -> bool:
    return ref.startswith((PREFIX, TIMM_PREFIX, HF_PREFIX))


class Preprocessed(nn.Module):
    """A torchvision model behind its own preprocessing: takes NCHW pixels in [0, 1]."""

    input_contract: ClassVar[dict[str, Any]] = {"bounds": (0.0, 1.0), "normalization": "inside_model"}

    def __init__(self, model: nn.Module, task: str, name: str, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, resize: int | None = None,
                 crop: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model, self.task, self.name = model, task, name
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.resize, self.crop = resize, crop
        if task == "detection":
            self.score_threshold = OPERATING_THRESHOLD  # read by attackgen.models.adapters.DetectorAdapter

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise AttackgenError(
                f"{self.name} takes RGB images (N, 3, H, W) in [0, 1]; got shape {tuple(x.shape)}. "
                "Give --data with three colour channels."
            )

    def _resized(self, x: Tensor) -> Tensor:
        if self.crop is None or tuple(x.shape[-2:]) == self.crop:
            return x
        h, w = x.shape[-2:]
        scale = (self.resize or min(self.crop)) / min(h, w)
        size = (max(self.crop[0], round(h * scale)), max(self.crop[1], round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        top, left = (size[0] - self.crop[0]) // 2, (size[1] - self.crop[1]) // 2
        return x[..., top:top + self.crop[0], left:left + self.crop[1]]

    def forward(self, x: Tensor) -> Any:
        self._check(x)
        if self.task == "detection":
            return self.model(list(x))  # the detector normalises and resizes inside (GeneralizedRCNNTransform)
        mean, std = cast(Tensor, self.mean), cast(Tensor, self.std)  # buffers
        out = self.model((self._resized(x) - mean) / std)
        if self.task == "segmentation":
            out = out["out"] if isinstance(out, dict) and "out" in out else getattr(out, "logits", out)
            if tuple(out.shape[-2:]) != tuple(x.shape[-2:]):  # SegFormer's logits are at 1/4 of the input
                out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return out
        return getattr(out, "logits", out)  # Hugging Face returns an ImageClassifierOutput


def _torchvision() -> Any:
    try:
        import torchvision
    except Exception as error:  # ImportError, or a torch/torchvision pair that does not match
        raise ModelLoadError(
            f"--model torchvision:...: torchvision does not import ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:160]}). Install the vision extra: pip install 'attackgen[vision]' "
            "(torch and torchvision must be a matching pair, e.g. torch==2.14.1 with torchvision==0.29.1)."
        ) from None
    return torchvision


def _task_of(tv: Any, name: str, ref: str) -> str:
    models = tv.models
    families = {
        "segmentation": set(models.list_models(module=models.segmentation)),
        "detection": set(models.list_models(module=models.detection)),
        "video": set(models.list_models(module=models.video)),
        "optical_flow": set(models.list_models(module=models.optical_flow)),
        "quantization": set(models.list_models(module=models.quantization)),
    }
    for task in ("segmentation", "detection"):
        if name in families[task]:
            return task
    known = set(models.list_models())
    unsupported = families["video"] | families["optical_flow"] | families["quantization"]
    if name in known and name not in unsupported:
        return "classification"
    if name in unsupported:
        raise ModelLoadError(f"--model {ref}: {name!r} is a torchvision video, optical-flow or quantized model; "
                             "attackgen runs image classification, segmentation and detection models.")
    raise ModelLoadError(f"--model {ref}: torchvision has no model {name!r}{did_you_mean(name, sorted(known))}. "
                         "torchvision.models.list_models() lists them.")


def read_state_dict(path: Path, ref: str) -> dict[str, Tensor]:
    """The tensors of a local weights file; never runs code (weights_only / safetensors)."""
    if not path.is_file():
        raise ModelLoadError(
            f"--model {ref}: weights file '{path}' not found. attackgen never downloads weights: save the "
            f"model's state dict there first, e.g. torch.save(model.state_dict(), '{path}') (.pt/.pth) or "
            "safetensors.torch.save_file(model.state_dict(), path) (.safetensors)."
        )
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise ModelLoadError(f"--model {ref}: reading {path.name} needs safetensors: pip install "
                             "'attackgen[vision]'.") from None
    except Exception as error:
        raise ModelLoadError(
            f"--model {ref}: '{path}' is not a readable state dict ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}). Save it with torch.save(model.state_dict(), path)."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):  # a training checkpoint around the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelLoadError(f"--model {ref}: '{path}' holds {type(state).__name__}, not a state dict of tensors. "
                             "Save it with torch.save(model.state_dict(), path).")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel checkpoints


def _num_classes(build: Callable[..., nn.Module], state: dict[str, Tensor], ref: str, **kwargs: Any) -> int:
    """Read the class count from the file: build the model with one class (on the meta device, no
    memory) and divide the first tensor whose size differs by its one-class size."""
    try:
        with torch.device("meta"):
            probe = build(num_classes=1, **kwargs)
    except Exception:
        probe = build(num_classes=1, **kwargs)
    for key, tensor in probe.state_dict().items():
        saved = state.get(key)
        if saved is None or saved.shape == tensor.shape or not tensor.dim() or not saved.dim():
            continue
        if tensor.shape[1:] == saved.shape[1:] and saved.shape[0] % tensor.shape[0] == 0:
            return saved.shape[0] // tensor.shape[0]
        break
    return 1


def load_family_model(ref: str) -> nn.Module:
    """``torchvision:NAME:WEIGHTS`` or ``timm:NAME:WEIGHTS`` -> the model with its preprocessing, weights
    loaded, in eval mode."""
    if ref.startswith(HF_PREFIX):
        return _load_hf(ref[len(HF_PREFIX):], ref)
    family, _, rest = ref.partition(":")
    name, _, weights = rest.partition(":")
    if not name or not weights:
        raise ModelLoadError(
            f"--model {ref}: expected {family}:NAME:WEIGHTS_FILE, e.g. {family}:resnet18:resnet18.pth "
            "(a local state dict; attackgen never downloads weights)."
        )
    weights, settings = _split_options(weights, ref)
    state = read_state_dict(Path(weights), ref)  # before the import: the missing file is the first thing to fix
    if family == "timm":
        if settings:
            raise ModelLoadError(f"--model {ref}: settings after the weights file are for torchvision detectors.")
        return _load_timm(name, weights, state, ref)
    tv = _torchvision()
    task = _task_of(tv, name, ref)
    build = tv.models.get_model_builder(name)
    if settings and task != "detection":
        raise ModelLoadError(f"--model {ref}: settings after the weights file ({', '.join(settings)}) are for "
                             f"detectors; {name} is a {task} model.")
    kwargs: dict[str, Any] = {"weights": None, **settings}
    if task != "classification":
        kwargs["weights_backbone"] = None
    if task == "segmentation" and any(k.startswith("aux_classifier.") for k in state):
        kwargs["aux_loss"] = True
    try:
        kwargs["num_classes"] = _num_classes(build, state, ref, **kwargs)
        model = build(**kwargs)
        model.load_state_dict(state, strict=True)
    except TypeError as error:  # a setting this builder does not take
        raise ModelLoadError(f"--model {ref}: torchvision's {name} does not take these settings "
                             f"({str(error).splitlines()[0][:200]}).") from None
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ModelLoadError(
            f"--model {ref}: '{weights}' does not fit torchvision's {name} ({' '.join(lines[:3])[:400]}). "
            f"Save the state dict of the same architecture: torch.save(torchvision.models.{name}(...).state_dict(), "
            "path)."
        ) from None
    mean, std, resize, crop = _preprocessing(tv, name, task)
    if task == "detection":
        _lower_candidate_threshold(model)
    return Preprocessed(model, task, name, mean, std, resize, crop).eval()


def _split_options(weights: str, ref: str) -> tuple[str, dict[str, Any]]:
    """``FILE:min_size=512,max_size=512`` -> the file and the detector's settings, typed."""
    path, sep, tail = weights.rpartition(":")
    if not sep or "=" not in tail:
        return weights, {}
    settings: dict[str, Any] = {}
    for part in filter(None, tail.split(",")):
        key, _, value = part.partition("=")
        kind = DETECTOR_OPTIONS.get(key.strip())
        if kind is None:
            raise ModelLoadError(f"--model {ref}: unknown setting {key.strip()!r}"
                                 f"{did_you_mean(key.strip(), sorted(DETECTOR_OPTIONS))}; a detector takes "
                                 f"{', '.join(sorted(DETECTOR_OPTIONS))} after the weights file.")
        try:
            settings[key.strip()] = kind(value)
        except ValueError:
            raise ModelLoadError(f"--model {ref}: setting {key.strip()}={value!r} is not a {kind.__name__}.") from None
    return path, settings


def _load_timm(name: str, weights: str, state: dict[str, Tensor], ref: str) -> nn.Module:
    """A timm classifier, normalised and resized as its ``pretrained_cfg`` says (mean, std, input size,
    crop_pct)."""
    try:
        import timm
    except Exception as error:
        raise ModelLoadError(
            f"--model {ref}: timm does not import ({type(error).__name__}: {str(error).splitlines()[0][:160]}). "
            "Install it beside the vision extra: pip install timm."
        ) from None
    if not timm.is_model(name):
        known = timm.list_models()
        raise ModelLoadError(f"--model {ref}: timm has no model {name!r}{did_you_mean(name, known)}. "
                             "timm.list_models() lists them.")

    def build(**kwargs: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, **kwargs)

    try:
        model = build(num_classes=_num_classes(build, state, ref))
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ModelLoadError(
            f"--model {ref}: '{weights}' does not fit timm's {name} ({' '.join(lines[:3])[:400]}). Save the "
            f"state dict of the same architecture: torch.save(timm.create_model({name!r}).state_dict(), path)."
        ) from None
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    _, h, w = cfg.get("input_size", (3, 224, 224))
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    return Preprocessed(model, "classification", name, mean, std, int(min(h, w) / crop_pct), (int(h), int(w))).eval()


def _load_hf(folder: str, ref: str) -> nn.Module:
    """A Hugging Face image classifier or semantic segmentation model (SegFormer) saved with
    ``save_pretrained`` in a local folder, with its image processor's mean, std and size."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"--model {ref}: '{path}' is not a folder holding config.json. attackgen never downloads: save the "
            "model and its image processor there first (model.save_pretrained(folder), "
            "processor.save_pretrained(folder))."
        )
    try:
        import transformers as hf
    except Exception as error:
        raise ModelLoadError(
            f"--model {ref}: transformers does not import ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:160]}). Install it beside the vision extra: pip install transformers."
        ) from None
    try:
        config = hf.AutoConfig.from_pretrained(path, local_files_only=True)
        segmentation = any("SemanticSegmentation" in a for a in (config.architectures or []))
        auto = hf.AutoModelForSemanticSegmentation if segmentation else hf.AutoModelForImageClassification
        model = auto.from_pretrained(path, local_files_only=True)
        processor = hf.AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except Exception as error:
        raise ModelLoadError(
            f"--model {ref}: cannot load an image classifier or semantic segmentation model and its image "
            f"processor from '{path}' ({type(error).__name__}: {str(error).splitlines()[0][:200]})."
        ) from None
    mean = tuple(float(v) for v in getattr(processor, "image_mean", None) or IMAGENET_MEAN)
    std = tuple(float(v) for v in getattr(processor, "image_std", None) or IMAGENET_STD)
    if segmentation:
        return Preprocessed(model, "segmentation", path.name, mean, std).eval()
    size = dict(getattr(processor, "size", None) or {})
    crop = (int(size["height"]), int(size["width"])) if "height" in size else None
    return Preprocessed(model, "classification", path.name, mean, std, min(crop) if crop else None, crop).eval()


def _preprocessing(tv: Any, name: str, task: str) -> tuple[tuple[float, ...], tuple[float, ...], int | None,
                                                          tuple[int, int] | None]:
    """Mean, std, resize and crop of the weights' own transforms (ImageNet's when the builder has none)."""
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: int | None = None
    crop: tuple[int, int] | None = None
    try:
        transforms = tv.models.get_model_weights(name).DEFAULT.transforms()
    except Exception:  # a builder without published weights
        return mean, std, resize, crop
    mean = tuple(float(v) for v in getattr(transforms, "mean", mean))
    std = tuple(float(v) for v in getattr(transforms, "std", std))
    if task == "classification":
        crop_size = getattr(transforms, "crop_size", None)
        resize_size = getattr(transforms, "resize_size", None)
        if crop_size:
            crop = (int(crop_size[0]), int(crop_size[-1]))
            resize = int(resize_size[0]) if resize_size else None
    return mean, std, resize, crop


def _lower_candidate_threshold(model: nn.Module) -> None:
    for owner in (getattr(model, "roi_heads", None), model):  # Faster/Mask R-CNN keep it in roi_heads
        if owner is not None and hasattr(owner, "score_thresh"):
            owner.score_thresh = min(float(cast(Any, owner).score_thresh), DETECTOR_CANDIDATE_THRESHOLD)
            return


def find_contract(model: nn.Module) -> dict[str, Any] | None:
    """The input contract of a family wrapper, looking through adapters (``.model``) that wrap it."""
    seen, current = 0, cast(Any, model)
    while current is not None and seen < 8:
        contract = getattr(current, "input_contract", None)
        if contract is not None:
            return dict(contract)
        current, seen = getattr(current, "model", None), seen + 1
    return None


def check_input_space(model: nn.Module, spec: Any, ref: str) -> None:
    """A wrapper that normalises inside takes pixels in [0, 1]: the spec's input_space must say so."""
    contract = find_contract(model)
    if contract is None:
        return
    space = spec.input_space
    bounds = tuple(float(b) for b in space.bounds)
    if bounds != contract["bounds"]:
        raise ModelLoadError(
            f"--model {ref}: the wrapper takes pixels in [0, 1] (it resizes and normalises inside), but the spec's "
            f"input_space.bounds are {list(bounds)}; set input_space.bounds: [0, 1] and give --data in [0, 1]."
        )
    if space.normalization != contract["normalization"]:
        raise ModelLoadError(
            f"--model {ref}: the wrapper normalises (mean/std) inside the model, but the spec's "
            f"input_space.normalization is {space.normalization!r}; set input_space.normalization: inside_model "
            "and give --data as raw pixels in [0, 1] (normalising twice would make every epsilon wrong)."
        )
