"""Loading models and data, and the input-space contract: each bad input is one clear error naming it."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from torch import nn

from attackgen.models.loading import (
    DataLoadError,
    ModelLoadError,
    check_labels_against_model,
    check_model,
    idx_labels_path,
    load_data,
    load_mask,
    load_model,
)
from attackgen.models.zoo.data import FASHION_DIR, fashion_available
from taxonomy.errors import AttackgenError
from taxonomy.spec import parse_spec


def make_spec(**input_space):
    return parse_spec({
        "name": "t", "task": "classification",
        "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
                   "model_knowledge": "white_box"},
        "input_space": input_space or {"bounds": [0, 1]},
    })


SPEC = make_spec()


class Flat(nn.Module):
    """A tiny classifier on (N, 1, 4, 4) inputs."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def tiny_model() -> nn.Module:  # an entry point: test_loading:tiny_model
    return Flat()


class ChannelsLastNet(nn.Module):
    """Takes (N, H, W, C) inputs, as a model ported from a channels-last framework does."""

    def forward(self, x):
        assert x.shape[-1] == 3, "expects channels last"
        return x.mean(dim=(1, 2))


def nhwc_model() -> nn.Module:
    return ChannelsLastNet()


def not_a_model():
    return {"weights": 1}


@pytest.fixture
def pt(tmp_path):
    """save(x, y, name) -> the path of a .pt data file {'x': x, 'y': y}."""

    def save(x, y, name="data.pt"):
        path = tmp_path / name
        torch.save({"x": x, "y": torch.as_tensor(y)}, path)
        return path

    return save


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


# --------------------------------------------------------------------------- models


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_builtin_model_and_entry_point_and_torchscript(tmp_path):
    assert not load_model("digits-cnn").training
    assert isinstance(load_model("test_loading:tiny_model"), Flat)
    scripted = torch.jit.script(Flat())
    scripted.save(str(tmp_path / "model.pt"))
    loaded = load_model(str(tmp_path / "model.pt"))
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(loaded(x), scripted(x))


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("no_such_module_xyz:build", "no_such_module_xyz"),
        ("test_loading:missing_function", "has no attribute 'missing_function'"),
        ("test_loading:not_a_model", "expected a torch.nn.Module"),
        ("digits-cnm", "did you mean 'digits-cnn'"),
    ],
)
def test_bad_model_references_are_explained(ref, expected):
    with pytest.raises(ModelLoadError, match=expected.replace("(", r"\(")):
        load_model(ref)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_state_dict_is_not_a_torchscript_model(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(Flat().state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"weights.pt: not a TorchScript archive.*entry point"):
        load_model(str(path))


def test_model_output_must_be_n_by_classes(pt):
    class Vector(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1)

    data = load_data(str(pt(torch.rand(6, 1, 4, 4), [0, 1, 2, 0, 1, 2])), SPEC)
    with pytest.raises(ModelLoadError, match=r"shape \(4,\).*\(4, classes\)"):
        check_model(Vector(), data, SPEC, "vec", torch.device("cpu"))
    assert check_model(Flat(), data, SPEC, "flat", torch.device("cpu")) == 3
    with pytest.raises(ModelLoadError, match="fails on a batch of shape"):
        check_model(nn.Linear(3, 3), data, SPEC, "lin", torch.device("cpu"))
    spec = parse_spec({**SPEC.model_dump(mode="json"), "classes": ["a", "b"]})
    with pytest.raises(ModelLoadError, match="'classes' field lists 2"):
        check_model(Flat(), data, spec, "flat", torch.device("cpu"))


# --------------------------------------------------------------------------- data formats


def test_pt_npz_and_builtin_data(tmp_path, pt):
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 1, 0])
    torch.save((x, y), tmp_path / "tuple.pt")
    np.savez(tmp_path / "a.npz", inputs=x.numpy(), labels=y.numpy())
    for path in (pt(x, y), tmp_path / "tuple.pt", tmp_path / "a.npz"):
        data = load_data(str(path), SPEC)
        assert data.x.shape == (5, 1, 4, 4) and data.x.dtype == torch.float32
        assert torch.equal(data.y, y)
    digits = load_data("digits", SPEC)
    assert digits.x.shape == (512, 1, 16, 16) and digits.classes[0] == "0"
    one_hot = torch.nn.functional.one_hot(y, 3)
    assert torch.equal(load_data(str(pt(x, one_hot, "onehot.pt")), SPEC).y, y)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_find_their_labels(tmp_path, gz):
    suffix = ".gz" if gz else ""
    images = np.arange(3 * 5 * 5).reshape(3, 5, 5) % 256
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.array([1, 0, 2]), gz)
    path = tmp_path / f"t10k-images-idx3-ubyte{suffix}"
    assert idx_labels_path(path) == tmp_path / f"t10k-labels-idx1-ubyte{suffix}"
    data = load_data(str(path), SPEC)
    assert data.x.shape == (3, 1, 5, 5)
    assert torch.allclose(data.x[0, 0], torch.from_numpy(images[0] / 255.0).float())  # bytes mapped onto [0, 1]
    assert data.y.tolist() == [1, 0, 2]
    spec255 = make_spec(bounds=[0, 255])
    assert float(load_data(str(path), spec255).x.max()) == float(images.max())


def test_idx_without_labels_file(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 4, 4)), gz=False)
    with pytest.raises(DataLoadError, match=r"train-images-idx3-ubyte: no labels file beside it; expected "
                                             r"train-labels-idx1-ubyte"):
        load_data(str(tmp_path / "train-images-idx3-ubyte"), SPEC)


@pytest.mark.skipif(not fashion_available(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_idx():
    data = load_data(str(FASHION_DIR / "t10k-images-idx3-ubyte.gz"), SPEC)
    assert data.x.shape == (10000, 1, 28, 28) and float(data.x.max()) <= 1.0
    assert sorted(data.y.unique().tolist()) == list(range(10))


def test_image_folder(tmp_path):
    from PIL import Image

    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.full((6, 5, 3), 40 * (label + 1) + i, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    data = load_data(str(tmp_path), SPEC)
    assert data.x.shape == (4, 3, 6, 5) and data.classes == ["cat", "dog"]
    assert data.y.tolist() == [0, 0, 1, 1]
    assert abs(float(data.x[2, 0, 0, 0]) - 80 / 255) < 1e-6
    Image.fromarray(np.zeros((7, 7, 3), dtype=np.uint8)).save(tmp_path / "dog" / "odd.png")
    with pytest.raises(DataLoadError, match=r"odd.png: is 7x7 pixels"):
        load_data(str(tmp_path), SPEC)


# --------------------------------------------------------------------------- the input-space contract


def test_channels_last_data_is_converted_only_when_declared(pt):
    x = torch.rand(4, 5, 6, 3)
    path = str(pt(x, [0, 1, 2, 0], "nhwc.pt"))
    with pytest.raises(DataLoadError, match=r"nhwc.pt: .*looks channels-last.*input_space.layout: NHWC"):
        load_data(path, SPEC)
    spec = make_spec(layout="NHWC")
    data = load_data(path, spec)
    assert data.x.shape == (4, 3, 5, 6)
    assert torch.equal(data.x[1, 2], x[1, :, :, 2])
    model = load_model("test_loading:nhwc_model", "NHWC")  # the user's NHWC model still gets NHWC
    assert torch.allclose(model(data.x), x.mean(dim=(1, 2)))
    assert check_model(model, data, spec, "nhwc", torch.device("cpu")) == 3
    assert load_data("digits", spec).x.shape[1:] == (1, 16, 16)  # built-in data is NCHW whatever the spec says


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (torch.full((3, 1, 4, 4), float("nan")), [0, 1, 2], r"3 inputs hold NaN or infinite values \(first at index"),
        (torch.rand(3, 1, 4, 4) * 255, [0, 1, 2], r"values range over \[.*\] but the spec's input_space.bounds are "
                                                    r"\[0, 1\].*divide them by 255"),
        ((torch.rand(3, 1, 4, 4) - 0.5) * 4, [0, 1, 2], r"look mean/std-normalised"),
        (torch.rand(3, 1, 4, 4), [0, -1, 2], r"label -1 is negative"),
        (torch.rand(3, 1, 4, 4), [0, 1], r"labels have shape \(2,\) for 3 inputs"),
        (torch.rand(3, 7), [0, 1, 2], r"inputs have shape \(3, 7\); expected images"),
    ],
)
def test_bad_data_is_explained(pt, x, y, expected):
    path = pt(x, y, "bad.pt")
    with pytest.raises(DataLoadError, match=rf"--data .*bad.pt: (.*)?{expected}"):
        load_data(str(path), SPEC)


def test_labels_beyond_the_model_classes(pt):
    data = load_data(str(pt(torch.rand(3, 1, 4, 4), [0, 5, 2], "labels.pt")), SPEC)
    with pytest.raises(DataLoadError, match=r"label 5 is out of range for a model with 3 outputs"):
        check_labels_against_model(data, 3, "labels.pt")


def test_unknown_data_reference():
    with pytest.raises(AttackgenError, match=r"not a built-in data set \(did you mean 'digits'\?\)"):
        load_data("digit", SPEC)


def test_masks(tmp_path):
    np.save(tmp_path / "ok.npy", np.pad(np.ones((2, 2)), 1))
    mask = load_mask(str(tmp_path / "ok.npy"), (1, 3, 4, 4))
    assert mask.shape == (1, 1, 4, 4) and float(mask.sum()) == 4
    np.save(tmp_path / "shape.npy", np.ones((5, 5)))
    with pytest.raises(AttackgenError, match=r"threat.capability.spatial.mask: .*shape.npy has shape \(5, 5\)"):
        load_mask(str(tmp_path / "shape.npy"), (1, 3, 4, 4))
    np.save(tmp_path / "zero.npy", np.zeros((4, 4)))
    with pytest.raises(AttackgenError, match="all zeros"):
        load_mask(str(tmp_path / "zero.npy"), (1, 3, 4, 4))


# --------------------------------------------------------------------------- class names decide the labels

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _word_spec():
    return parse_spec({
        "name": "t", "task": "classification", "classes": WORDS,
        "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
                   "model_knowledge": "white_box"},
        "input_space": {"bounds": [0, 1]},
    })


def _clean_accuracy(data) -> float:
    from attackgen.models.zoo import load_builtin_model

    with torch.no_grad():
        return float((load_builtin_model("digits-cnn")(data.x).argmax(1) == data.y).float().mean())


def test_image_folder_follows_the_spec_class_order(tmp_path):
    """Folders sort alphabetically (eight, five, four...) but the model's outputs follow the spec's order:
    labelled by position, the trained digits CNN scored near chance; by name, as on the same images as .npz."""
    from PIL import Image

    from attackgen.models.zoo import load_builtin_data

    digits = load_builtin_data("digits").take(slice(0, 200))
    pixels = (digits.x * 255).round().to(torch.uint8)
    for name in WORDS:
        (tmp_path / "folder" / name).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(pixels, digits.y.tolist(), strict=True)):
        Image.fromarray(image[0].numpy()).save(tmp_path / "folder" / WORDS[label] / f"{i:04d}.png")
    np.savez(tmp_path / "same.npz", x=(pixels.float() / 255).numpy(), y=digits.y.numpy(), classes=np.array(WORDS))
    folder = load_data(str(tmp_path / "folder"), _word_spec())
    arrays = load_data(str(tmp_path / "same.npz"), _word_spec())
    assert folder.classes == WORDS
    assert sorted(folder.y.tolist()) == sorted(digits.y.tolist())
    assert _clean_accuracy(folder) == pytest.approx(_clean_accuracy(arrays)) and _clean_accuracy(folder) > 0.9
    (tmp_path / "folder" / "ten").mkdir()
    Image.fromarray(pixels[0, 0].numpy()).save(tmp_path / "folder" / "ten" / "x.png")
    with pytest.raises(DataLoadError, match=r"class names \['ten'\].*Data classes: \['eight'.*spec classes: \['zero'"):
        load_data(str(tmp_path / "folder"), _word_spec())


def test_data_file_class_names_are_checked_and_mapped(pt, tmp_path):
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    reordered = pt(x, y, "reordered.pt")
    torch.save({"x": x, "y": y, "classes": ["two", "zero", "one"]}, reordered)
    spec = _word_spec()
    assert load_data(str(reordered), spec).y.tolist() == [2, 0, 1, 2]  # names decide, not positions
    np.savez(tmp_path / "other.npz", x=x.numpy(), y=y.numpy(), classes=np.array(["cat", "dog", "one"]))
    with pytest.raises(DataLoadError, match=r"\['cat', 'dog'\].*Data classes: \['cat', 'dog', 'one'\]; spec classes"):
        load_data(str(tmp_path / "other.npz"), spec)
