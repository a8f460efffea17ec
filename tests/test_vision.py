"""torchvision and timm models from local weight files (``--model torchvision:NAME:WEIGHTS``, ``timm:...``):
one classifier, one segmentation model and one detector each plan and run a white-box spec end to end
with verified results; the preprocessing lives inside the wrapper, so the spec's input space must say
[0, 1] with normalisation inside the model; a missing weights file is one message naming the file.

The end-to-end tests need torchvision (``make test-vision`` builds .venv-vision with it) and skip without
it; the message tests run everywhere. Weights are random, saved by the tests: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from attackgen.cli.main import run_in_process as cli
from attackgen.plan.document import load_plan, save_plan
from attackgen.results import RunResult

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "specs"
QUICK = {"steps": 10, "restarts": 1, "eot_samples": 1}

try:
    import torchvision

    HAVE_TORCHVISION = True
except Exception:  # not installed, or not the torch it was built for
    torchvision = None
    HAVE_TORCHVISION = False
needs_torchvision = pytest.mark.skipif(not HAVE_TORCHVISION, reason="torchvision not importable (make test-vision)")

WHITE = {
    "name": "vision-white", "task": "classification", "classes": [str(i) for i in range(10)],
    "threat": {"consequence": "untargeted",
               "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 16}],
               "model_knowledge": "white_box", "capability": {"feed": "digital"}},
    "input_space": {"bounds": [0, 1], "layout": "NCHW", "normalization": "inside_model",
                    "epsilon_units": "pixel_255"},
}


def quick_plan(spec: Path, tmp: Path, steps: int = 10) -> Path:
    """`attackgen plan`, then its top-ranked item with few steps (CPU seconds, not minutes)."""
    assert cli("plan", spec, "-o", tmp / "plan.yaml") == 0
    plan = load_plan(tmp / "plan.yaml")
    plan.items = plan.items[:1]
    for key, value in {**QUICK, "steps": steps}.items():
        if key in plan.items[0].params:
            plan.items[0].params[key] = value
    return save_plan(plan, tmp / "quick.yaml")


def write_spec(tmp: Path, data: dict) -> Path:
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(plan: Path, model: str, data: str, out: Path, capsys: pytest.CaptureFixture[str], limit: int = 3,
        ) -> tuple[int, str]:
    capsys.readouterr()
    code = cli("run", plan, "--model", model, "--data", data, "--limit", limit, "-q", "-o", out)
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def verified(out: Path, model: str, task: str) -> RunResult:
    result = RunResult.model_validate_json((out / "results.json").read_text())
    assert result.complete and result.model == model and result.task == task
    [item] = result.items
    assert item.n_attacked == len(item.inputs) >= 1
    assert item.n_success == sum(r.success for r in item.inputs)
    assert all(r.within_budget for r in item.inputs)  # re-measured against epsilon on the clipped input
    return result


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """A random resnet18 (10 classes) saved as a state dict, and RGB data labelled with its own predictions."""
    from attackgen.models.families import load_family_model

    folder = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), folder / "resnet18.pth")
    ref = f"torchvision:resnet18:{folder / 'resnet18.pth'}"
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        y = load_family_model(ref)(x).argmax(dim=1)
    torch.save({"x": x, "y": y}, folder / "rgb.pt")
    return ref, str(folder / "rgb.pt"), folder


@needs_torchvision
def test_torchvision_classifier_runs_white_box_with_verified_results(
        resnet: tuple[str, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, data, _ = resnet
    model = __import__("attackgen.models.families", fromlist=["x"]).load_family_model(ref)
    assert model.crop == (224, 224) and model.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    plan = quick_plan(write_spec(tmp_path, WHITE), tmp_path)
    code, text = run(plan, ref, data, tmp_path / "run", capsys)
    assert code == 0, text
    result = verified(tmp_path / "run", ref, "classification")
    assert all(r.clean_correct for r in result.items[0].inputs)  # labels are the model's own predictions
    assert result.items[0].n_success >= 1  # 16/255 in pixel space flips a random resnet


@needs_torchvision
def test_spec_that_normalises_outside_the_model_is_refused(
        resnet: tuple[str, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, data, _ = resnet
    spec = {**WHITE, "input_space": {**WHITE["input_space"], "normalization": "none"}}
    plan = quick_plan(write_spec(tmp_path, spec), tmp_path)
    code, text = run(plan, ref, data, tmp_path / "run", capsys)
    assert code == 2 and "Traceback" not in text
    assert "normalises (mean/std) inside the model" in text and "input_space.normalization" in text


SEGMENTERS = [("lraspp_mobilenet_v3_large", {}, ".safetensors"), ("deeplabv3_mobilenet_v3_large", {}, ".pt"),
              ("fcn_resnet50", {"aux_loss": True}, ".pth")]  # torchvision's three segmentation families


@needs_torchvision
@pytest.mark.parametrize("name,extra,suffix", SEGMENTERS, ids=[s[0].split("_")[0] for s in SEGMENTERS])
def test_torchvision_segmentation_runs_on_street_scenes(name: str, extra: dict, suffix: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from attackgen.models.families import load_family_model

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=6, **extra)
    weights = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(weights))
    else:
        torch.save(model.state_dict(), weights)
    ref = f"torchvision:{name}:{weights}"
    wrapped = load_family_model(ref)  # class count and the auxiliary head read from the file
    assert wrapped.task == "segmentation" and wrapped(torch.rand(1, 3, 40, 56)).shape == (1, 6, 40, 56)
    plan = quick_plan(EXAMPLES / "seg-street-untargeted.yaml", tmp_path, steps=2)
    code, text = run(plan, ref, "street-scenes", tmp_path / "run", capsys, limit=2)
    assert code == 0, text
    item = verified(tmp_path / "run", ref, "segmentation").items[0]
    assert np.isfinite(item.metrics["miou_ratio"])


def _sees_cars(model: torch.nn.Module, name: str, classes: int = 6) -> None:
    """Random weights find nothing at the 0.5 operating point: raise class 4 (car) on every anchor."""
    with torch.no_grad():
        if name.startswith("fasterrcnn"):
            model.roi_heads.box_predictor.cls_score.bias[4] += 8.0
        elif name.startswith(("retinanet", "fcos")):
            model.head.classification_head.cls_logits.bias.view(-1, classes)[:, 4] += 8.0
        else:  # SSD and SSDlite: one classification conv per feature map
            for layer in model.head.classification_head.module_list:
                conv = layer[-1] if isinstance(layer, torch.nn.Sequential) else layer
                conv.bias.view(-1, classes)[:, 4] += 8.0


# torchvision's detection families. RetinaNet and FCOS resize to 800 pixels by default (a minute a step on
# CPU): the reference's settings make them resize the 64x64 street scenes to 128 instead. SSD is tested in
# its SSDlite form (torchvision's SSD class with a MobileNet backbone; ssd300_vgg16 needs VGG-16's 35M weights).
DETECTORS = [("fasterrcnn_mobilenet_v3_large_320_fpn", ""), ("retinanet_resnet50_fpn", ":min_size=128,max_size=128"),
             ("fcos_resnet50_fpn", ":min_size=128,max_size=128"), ("ssdlite320_mobilenet_v3_large", "")]


@needs_torchvision
@pytest.mark.parametrize("name,settings", DETECTORS, ids=[d[0].split("_")[0] for d in DETECTORS])
def test_torchvision_detector_runs_on_street_scenes(name: str, settings: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from attackgen.models.families import load_family_model

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=6)
    _sees_cars(model, name)
    torch.save(model.state_dict(), tmp_path / "detector.pt")
    ref = f"torchvision:{name}:{tmp_path / 'detector.pt'}{settings}"
    wrapped = load_family_model(ref)
    if settings:
        assert wrapped.model.transform.min_size == (128,) and wrapped.model.transform.max_size == 128
    with torch.no_grad():
        [found] = wrapped(torch.rand(1, 3, 64, 64))
    assert (found["scores"] >= 0.5).any()
    owner = getattr(wrapped.model, "roi_heads", wrapped.model)
    assert owner.score_thresh <= 0.01  # candidates below the operating point come back, with their gradients
    assert found["boxes"].max() <= 64 + 1e-3  # boxes in input pixels, whatever the detector resized to
    spec = yaml.safe_load((EXAMPLES / "det-street-untargeted.yaml").read_text())
    spec["threat"]["consequence"] = {"kind": "untargeted", "reference": "clean_prediction"}  # random boxes miss the GT
    plan = quick_plan(write_spec(tmp_path, spec), tmp_path, steps=2)  # hundreds of candidate boxes: slow steps
    code, text = run(plan, ref, "street-scenes-det", tmp_path / "run", capsys, limit=2)
    assert code == 0, text
    item = verified(tmp_path / "run", ref, "detection").items[0]
    assert np.isfinite(item.metrics["lost_fraction"])


def test_detector_settings_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = quick_plan(write_spec(tmp_path, WHITE), tmp_path)
    code, text = run(plan, f"torchvision:retinanet_resnet50_fpn:{tmp_path / 'w.pt'}:min_sise=128", "digits",
                     tmp_path / "run", capsys)
    assert code == 2 and "unknown setting 'min_sise'" in text and "min_size" in text


def test_missing_weights_file_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = quick_plan(write_spec(tmp_path, WHITE), tmp_path)
    missing = tmp_path / "resnet18.pth"
    code, text = run(plan, f"torchvision:resnet18:{missing}", "digits", tmp_path / "run", capsys)
    assert code == 2 and "Traceback" not in text
    assert f"weights file '{missing}' not found" in text and "never downloads" in text


def test_reference_without_weights_file_says_the_syntax(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = quick_plan(write_spec(tmp_path, WHITE), tmp_path)
    code, text = run(plan, "torchvision:resnet18", "digits", tmp_path / "run", capsys)
    assert code == 2 and "expected torchvision:NAME:WEIGHTS_FILE" in text


@needs_torchvision
def test_weights_of_another_architecture_are_refused(resnet: tuple[str, str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, data, folder = resnet
    plan = quick_plan(write_spec(tmp_path, WHITE), tmp_path)
    code, text = run(plan, f"torchvision:resnet34:{folder / 'resnet18.pth'}", data, tmp_path / "run", capsys)
    assert code == 2 and "does not fit torchvision's resnet34" in text


try:
    import timm

    HAVE_TIMM = True
except Exception:
    timm = None
    HAVE_TIMM = False


@pytest.mark.skipif(not HAVE_TIMM, reason="timm not importable (make test-vision)")
def test_timm_classifier_takes_its_pretrained_cfg_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from attackgen.models.families import load_family_model

    torch.manual_seed(0)
    torch.save(timm.create_model("test_vit", pretrained=False, num_classes=10).state_dict(), tmp_path / "vit.pth")
    ref = f"timm:test_vit:{tmp_path / 'vit.pth'}"
    model = load_family_model(ref)
    assert model.crop == (160, 160) and model.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # its cfg, not ImageNet's
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    torch.save({"x": x, "y": y}, tmp_path / "rgb.pt")
    plan = quick_plan(write_spec(tmp_path, WHITE), tmp_path)
    code, text = run(plan, ref, str(tmp_path / "rgb.pt"), tmp_path / "run", capsys)
    assert code == 0, text
    assert verified(tmp_path / "run", ref, "classification").items[0].n_success >= 1


try:
    import transformers

    HAVE_HF = True
except Exception:
    transformers = None
    HAVE_HF = False
needs_hf = pytest.mark.skipif(not HAVE_HF, reason="transformers not importable (make test-vision)")


@needs_hf
def test_hf_vit_classifier_from_a_local_folder_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from attackgen.models.families import load_family_model

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, num_labels=10)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                   image_std=[0.25] * 3).save_pretrained(tmp_path / "vit")
    ref = f"hf:{tmp_path / 'vit'}"
    model = load_family_model(ref)
    assert model.crop == (32, 32) and model.std.flatten().tolist() == [0.25] * 3  # the processor's, inside
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    torch.save({"x": x, "y": y}, tmp_path / "rgb.pt")
    plan = quick_plan(write_spec(tmp_path, WHITE), tmp_path)
    code, text = run(plan, ref, str(tmp_path / "rgb.pt"), tmp_path / "run", capsys)
    assert code == 0, text
    assert verified(tmp_path / "run", ref, "classification").items[0].n_success >= 1


@needs_hf
def test_hf_segformer_logits_upsampled_to_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    config = transformers.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                                          patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1],
                                          mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=6)
    transformers.SegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "segformer")
    transformers.SegformerImageProcessor().save_pretrained(tmp_path / "segformer")
    ref = f"hf:{tmp_path / 'segformer'}"
    plan = quick_plan(EXAMPLES / "seg-street-untargeted.yaml", tmp_path, steps=3)
    code, text = run(plan, ref, "street-scenes", tmp_path / "run", capsys, limit=2)
    assert code == 0, text  # the adapter refuses logits that are not at the input size
    assert np.isfinite(verified(tmp_path / "run", ref, "segmentation").items[0].metrics["miou_ratio"])


def test_hf_folder_without_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = quick_plan(write_spec(tmp_path, WHITE), tmp_path)
    code, text = run(plan, f"hf:{tmp_path / 'nothing'}", "digits", tmp_path / "run", capsys)
    assert code == 2 and f"'{tmp_path / 'nothing'}' is not a folder holding config.json" in text
