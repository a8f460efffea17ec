"""Suite-wide settings: one torch thread, and GPU tests skipped cleanly without CUDA.

The models under test are tiny; with two threads per process a 2-core CI machine spends more time
synchronising threads than computing, and any other load on the machine makes it far worse.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch
    except ImportError:  # the planning-side tests run without torch
        return
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def victim():
    """The built-in digits CNN, frozen: the victim the execution tests attack."""
    from attackgen.models.zoo import load_builtin_model

    return load_builtin_model("digits-cnn").requires_grad_(False)


@pytest.fixture(scope="session")
def test_set(victim):
    """The digits test inputs the victim classifies correctly, as (x, y)."""
    import torch

    from attackgen.models.zoo import load_builtin_data

    data = load_builtin_data("digits")
    with torch.no_grad():
        correct = victim(data.x).argmax(dim=1) == data.y
    return data.x[correct], data.y[correct]
