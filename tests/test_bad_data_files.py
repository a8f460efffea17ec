"""Malformed --data files found by fault injection: each is one named error and exit 2, never a traceback.

Every case here raised a raw Python exception before (TypeError from string arrays, IndexError from an
empty .pt, AttributeError from metadata of the wrong type, MemoryError from an IDX gzip bomb, an
"aborted" exit 130 from a truncated gzip). The message must name the file and the part that is wrong.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from attackgen.cli.main import run_in_process as cli
from attackgen.models.loading import DataLoadError, load_data
from taxonomy.spec import parse_spec

SPEC = parse_spec({
    "name": "t", "task": "classification",
    "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
               "model_knowledge": "white_box"},
    "input_space": {"bounds": [0, 1]},
})
X = np.random.default_rng(0).random((4, 1, 4, 4), dtype=np.float32)
Y = np.array([0, 1, 2, 1])


def idx_header(*dims: int) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def idx_pair(name: str, images: bytes, gz: bool = True) -> Callable[[Path], Path]:
    """Writes NAME-images-idx3-ubyte[.gz] holding ``images`` and a valid labels file beside it."""

    def write(folder: Path) -> Path:
        suffix = ".gz" if gz else ""
        labels = idx_header(4) + bytes(4)
        (folder / f"{name}-labels-idx1-ubyte{suffix}").write_bytes(gzip.compress(labels) if gz else labels)
        path = folder / f"{name}-images-idx3-ubyte{suffix}"
        path.write_bytes(images)
        return path

    return write


def npz(**arrays: object) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        np.savez(folder / "data.npz", **arrays)  # type: ignore[arg-type]
        return folder / "data.npz"

    return write


def pt(content: object) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        torch.save(content, folder / "data.pt")
        return folder / "data.pt"

    return write


def raw(name: str, content: bytes) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        (folder / name).write_bytes(content)
        return folder / name

    return write


def npy_named_npz(folder: Path) -> Path:
    np.save(folder / "data.npy", X)
    return (folder / "data.npy").rename(folder / "data.npz")


def gzip_bomb(folder: Path) -> Path:
    """A header claiming a million 256x256 images and a 16 MiB file that inflates to gigabytes of zeros."""
    path = idx_pair("bomb", b"")(folder)
    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write(idx_header(1_000_000, 256, 256))
        handle.write(bytes(1 << 24))  # 16 MiB of zeros here; the header's claim is what must be refused
    return path


def truncated_gzip(folder: Path) -> Path:
    payload = gzip.compress(idx_header(4, 4, 4) + bytes(64))
    return idx_pair("cut", payload[: len(payload) // 2])(folder)


T = torch.as_tensor
CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    # .npz arrays that are not numbers
    "npz string inputs": (npz(x=np.array(["a", "b", "c", "d"]), y=Y), r"'x' holds strings \(dtype <U1\)"),
    "npz string labels": (npz(x=X, y=np.array(["0", "1", "2", "1"])), r"'y' holds strings \(dtype <U1\)"),
    "npz bytes inputs": (npz(x=np.array([b"a", b"b"]), y=Y[:2]), r"'x' holds bytes \(dtype \|S1\)"),
    "npz record inputs": (npz(x=np.zeros(4, dtype=[("a", "f4")]), y=Y), r"'x' holds records"),
    "npz date inputs": (npz(x=np.array(["2020-01-01"] * 4, dtype="datetime64[D]"), y=Y), r"'x' holds dates"),
    "npz object labels": (npz(x=X, y=np.array([0, "a", None, 3], dtype=object)),
                          r"'y' is an object array, which needs pickle"),
    "npz classes a scalar": (npz(x=X, y=Y, classes=np.array(5)), r"'classes' is a single value"),
    "npy named .npz": (npy_named_npz, r"is a single .npy array, not a .npz archive"),
    # .pt files
    "empty .pt": (raw("data.pt", b""), r"is empty \(0 bytes\)"),
    "metadata an int": (pt({"x": T(X), "y": T(Y), "metadata": 5}),
                        r"'metadata' is an int; expected a dict of per-input lists"),
    "metadata value an int": (pt({"x": T(X), "y": T(Y), "metadata": {"city": 5}}),
                              r"metadata 'city' is an int; expected a list with one value per input"),
    "metadata value a string": (pt({"x": T(X), "y": T(Y), "metadata": {"city": "Ulm"}}),
                                r"metadata 'city' is a str; expected a list with one value per input"),
    "metadata too short": (pt({"x": T(X), "y": T(Y), "metadata": {"city": ["Ulm", "Bonn"]}}),
                           r"metadata 'city' has 2 values for 4 inputs"),
    "classes an int": (pt({"x": T(X), "y": T(Y), "classes": 5}), r"'classes' is an int; expected a list of"),
    "classes a string": (pt({"x": T(X), "y": T(Y), "classes": "012"}), r"'classes' is a str; expected a list of"),
    "labels a dict": (pt({"x": T(X), "y": {"a": 1}}), r"'y' is a dict; expected an array or tensor of class indices"),
    "labels strings": (pt({"x": T(X), "y": ["0", "1", "2", "3"]}), r"'y' is a list that is not numbers"),
    "labels None": (pt({"x": T(X), "y": None}), r"'y' is None; expected"),
    "inputs a string": (pt({"x": "abc", "y": T(Y)}), r"'x' is a str; expected an array or tensor of inputs"),
    "tuple of labels dict": (pt((T(X), {"a": 1})), r"labels is a dict; expected an array or tensor"),
    "no inputs": (pt({"x": T(X[:0]), "y": T(Y[:0])}), r"holds no inputs"),
    # IDX files
    "IDX gzip bomb": (gzip_bomb, r"header declares 1000000x256x256 values \(61.0 GiB\), more than the "
                                 r"1 GiB an IDX file may hold"),
    "IDX truncated gzip": (truncated_gzip, r"cannot be decompressed"),
    "IDX not gzip": (idx_pair("bad", b"not gzip at all"), r"cannot be decompressed \(Not a gzipped file"),
    "IDX bad dimension count": (idx_pair("dims", b"\x00\x00\x08\xff" + bytes(8), gz=False),
                                r"header declares 255 dimensions; expected 1 to 4"),
    "npz uint64 label past int64": (npz(x=X, y=np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64)),
                                    r"holds 18446744073709551615, larger than any index"),
    "IDX short header": (idx_pair("short", b"\x00\x00\x08\x03" + bytes(4), gz=False),
                         r"ends inside its header"),
    "IDX more data than declared": (idx_pair("long", idx_header(4, 4, 4) + bytes(65), gz=False),
                                    r"holds more bytes than its header declares \(4x4x4\)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_data_file_is_one_named_error(case, tmp_path):
    write, expected = CASES[case]
    path = write(tmp_path)
    with pytest.raises(DataLoadError, match=rf"^--data {path}: .*{expected}"):
        load_data(str(path), SPEC)


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    from attackgen.plan.document import save_plan
    from attackgen.plan.planner import plan as make_plan
    from taxonomy.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    spec = load_spec(root / "examples" / "specs" / "digits-whitebox-linf.yaml")
    return save_plan(make_plan(spec, max_primary=1), tmp_path_factory.mktemp("plan") / "plan.yaml")


@pytest.mark.parametrize("case", ["npz string inputs", "empty .pt", "metadata an int", "labels a dict",
                                  "IDX gzip bomb", "IDX truncated gzip"])
def test_run_refuses_a_malformed_data_file_with_exit_2(case, plan_file, tmp_path, capsys):
    path = CASES[case][0](tmp_path)
    assert cli("run", plan_file, "--model", "digits-cnn", "--data", path, "-q", "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --data {path}: ") and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_idx_file_is_never_inflated_past_its_declared_size(tmp_path):
    """A small header in front of a gzip bomb: only the declared bytes (plus one) are ever decompressed."""
    import tracemalloc

    path = idx_pair("small", gzip.compress(idx_header(4, 4, 4) + bytes(64 << 20)))(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(DataLoadError, match=r"holds more bytes than its header declares \(4x4x4\)"):
            load_data(str(path), SPEC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the file inflates to 64 MiB


# --------------------------------------------------------------------------- fuzzed contents

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ODD = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(allow_nan=True), st.text(max_size=5),
    st.binary(max_size=5), st.lists(st.one_of(st.integers(-2, 12), st.text(max_size=2)), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([T(X), T(Y), T(X[:2]), T(Y).float() / 3, T(X).double(), torch.zeros(4, dtype=torch.bool),
                     torch.zeros(0), torch.zeros(4, 3, dtype=torch.complex64), T(Y)[None], torch.tensor(7)]),
)
ARRAYS = st.sampled_from([
    X, Y, X[:2], Y[:3], np.array(7), np.array([]), np.zeros((4, 4, 4, 1)), np.full((4, 1, 4, 4), np.inf),
    np.array(["a", "b", "c", "d"]), np.array([b"x"] * 4), np.zeros(4, dtype=[("a", "f4")]),
    np.array(["2020-01-01"] * 4, dtype="datetime64[D]"), np.array([1 + 2j] * 4), np.zeros(4, dtype=bool),
    np.arange(4, dtype=">i4"), np.array([2**64 - 1] * 4, dtype=np.uint64), np.array([0.5, 1.5, 2, 3]),
])


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional={"x": ODD, "y": ODD, "classes": ODD, "metadata": st.one_of(
    ODD, st.dictionaries(st.sampled_from(["city", "light"]), ODD, max_size=2))}))
def test_any_pt_content_loads_or_is_a_named_error(content):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.pt"
        torch.save(content, path)
        try:
            load_data(str(path), SPEC)
        except DataLoadError as error:
            assert str(error).startswith(f"--data {path}: ")


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional={"x": ARRAYS, "y": ARRAYS, "classes": ARRAYS}))
def test_any_npz_content_loads_or_is_a_named_error(arrays):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, **arrays)
        try:
            load_data(str(path), SPEC)
        except DataLoadError as error:
            assert str(error).startswith(f"--data {path}: ")
