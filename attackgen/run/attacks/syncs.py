"""How often an attack loop may look at the device: at most one host<->device sync every K iterations.

On a GPU every ``.item()``, ``bool(tensor)``, ``.tolist()`` or ``nonzero()`` waits for the queue of
kernels to drain, so a loop that asks "is anyone done?" each step leaves the GPU idle between steps.
Attack loops therefore stop inputs by masks (a finished input stops changing; its first success is
kept) and shrink their working set only every K = ``SYNC_EVERY`` iterations, the one sync of the loop.
On the CPU a sync costs nothing and dropping finished inputs at once saves their passes, so K is 1
there. ``every(k)`` forces K on any device: the tests and bench/bench_syncs.py count syncs on the CPU
with the schedule a GPU gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SYNC_EVERY = 8
"""K on CUDA (and other accelerators): iterations between looks at which inputs are done."""
_forced: list[int] = []


def sync_every(device: torch.device) -> int:
    """K for a loop on ``device``: 1 on the CPU, SYNC_EVERY elsewhere, or what ``every`` forces."""
    if _forced:
        return _forced[-1]
    return 1 if device.type == "cpu" else SYNC_EVERY


def looks_now(iteration: int, device: torch.device) -> bool:
    """Whether a loop may sync after (0-based) ``iteration``: every K-th one."""
    return (iteration + 1) % sync_every(device) == 0


@contextmanager
def every(k: int) -> Iterator[None]:
    """Within the block, loops sync every ``k`` iterations whatever the device (tests, profiling)."""
    _forced.append(max(1, int(k)))
    try:
        yield
    finally:
        _forced.pop()
