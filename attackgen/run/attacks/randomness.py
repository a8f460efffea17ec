"""One random stream per input, so that what an attack draws for an input depends on the run seed, the
plan item and the input's index in the data, not on which other inputs share its batch.

That makes results independent of --batch-size, of survivors-only batching and (issue #12) of how
inputs are sharded over ranks. The step runner seeds ``Attack.row_seeds`` with
``derive_seed(seed, item, index)`` per input; an attack calls ``self.row_random(x)`` and draws per-input
tensors with leading dimension N from it. ``subset(rows)`` shares the streams, so an input's k-th draw
is the same whichever subset it is drawn in.

Cost: one generator call per input and draw. Measured on this 2-core machine under load (load average
15, one torch thread, ratios within one run): Square Linf's three draws per query for 256 inputs take
47 ms against 175 ms for one forward pass of the digits CNN on them (about a quarter of a query's
time on that tiny model, less on real ones); a PGD random start over 256 digits 17 ms against 3 ms from
one batch generator. Batched per-input draws (a counter-based generator) would remove it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor


def row_seeds_for(seed: int, n: int) -> list[int]:
    """Per-input seeds for an attack called directly (tests, benchmarks): from its seed and the position."""
    return [int.from_bytes(hashlib.sha256(f"{seed}:row:{i}".encode()).digest()[:4], "little") for i in range(n)]


class RowRandom:
    """Independent generators, one per input of a batch, on one device."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str,
                 generators: list[torch.Generator] | None = None) -> None:
        self.device = torch.device(device)
        self.seeds = [int(s) for s in seeds]
        self.generators = generators if generators is not None else [
            torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def subset(self, rows: Tensor) -> RowRandom:
        """The streams of ``rows`` (shared, not copied: drawing advances them)."""
        picked = rows.tolist()
        return RowRandom([self.seeds[i] for i in picked], self.device, [self.generators[i] for i in picked])

    def rand(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        """(N, *shape) uniform in [0, 1): row i from stream i."""
        return torch.stack([torch.rand(shape, generator=g, device=self.device, dtype=dtype)
                            for g in self.generators]) if self.generators else torch.empty(0, *shape,
                                                                                           device=self.device)

    def randn(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        """(N, *shape) standard normal: row i from stream i."""
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype)
                            for g in self.generators]) if self.generators else torch.empty(0, *shape,
                                                                                           device=self.device)

    def randint(self, low: int, high: int, *shape: int) -> Tensor:
        """(N, *shape) integers in [low, high): row i from stream i."""
        return torch.stack([torch.randint(low, high, shape, generator=g, device=self.device)
                            for g in self.generators]) if self.generators else torch.empty(
            0, *shape, dtype=torch.long, device=self.device)

    def randperm(self, n: int) -> Tensor:
        """(N, n): a permutation of range(n) per row."""
        return torch.stack([torch.randperm(n, generator=g, device=self.device) for g in self.generators]
                           ) if self.generators else torch.empty(0, n, dtype=torch.long, device=self.device)
