"""One random stream per input, so that what an attack draws for an input depends on the run seed, the
plan item and the input's index in the data, not on which other inputs share its batch.

That makes results independent of --batch-size, of survivors-only batching and (issue #12) of how
inputs are sharded over ranks. The step runner seeds ``Attack.row_seeds`` with
``derive_seed(seed, item, index)`` per input; an attack calls ``self.row_random(x)`` and draws per-input
tensors with leading dimension N from it. ``subset(rows)`` shares the streams, so an input's k-th draw
is the same whichever subset it is drawn in.

The streams are counter-based: a row's state is its key (the 32-bit seed) and a counter (draws made so
far), and element j of its k-th draw is a hash of (key, k, j). A draw is therefore one short sequence of
element-wise integer ops for the whole batch, on any device, with no per-input generator and no Python
loop over inputs (a torch.Generator per input cost N kernel launches per draw). The hash is Chris
Wellons' ``lowbias32`` integer mix, applied to (mixed key xor counter * golden ratio), then to that
xor the mixed element index; done in int64 with every value kept in [0, 2**32) and every product
below 2**63, so shifts never see a sign and nothing relies on signed overflow: the same seed gives the
same bits on CPU and GPU. A draw's row key has 32 bits, so two (input, draw) pairs share all their
values with probability 2**-32 (a coincidence, not a correlation: it does not repeat at later draws).

Cost on CPU (bench/bench_rowrandom.py): small draws (Square's per query) are several times cheaper
than a generator per input; large ones (a random start over every pixel, a permutation by argsort)
cost more on CPU than torch's own generator and are made once per attack.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # odd, separates the counter from the key before mixing


def row_seeds_for(seed: int, n: int) -> list[int]:
    """Per-input seeds for an attack called directly (tests, benchmarks): from its seed and the position."""
    return [int.from_bytes(hashlib.sha256(f"{seed}:row:{i}".encode()).digest()[:4], "little") for i in range(n)]


def mix32(x: Tensor) -> Tensor:
    """Wellons' lowbias32 (the [16 21f0aaad 15 735a2d97 15] constants): a bijection of [0, 2**32) with
    near-ideal avalanche. Both multipliers are below 2**31, so on values below 2**32 the int64 products
    stay below 2**63: exact, masked back to 32 bits. ``x`` (int64) is not changed."""
    x = x ^ (x >> 16)
    x.mul_(0x21F0AAAD).bitwise_and_(_MASK)
    x.bitwise_xor_(x >> 15)
    x.mul_(0x735A2D97).bitwise_and_(_MASK)
    return x.bitwise_xor_(x >> 15)


@functools.lru_cache(maxsize=32)
def _element_keys(m: int, device: torch.device) -> Tensor:
    """(m,) mixed element indices, shared by every draw of m elements (cached: a function of m only)."""
    return mix32(torch.arange(m, dtype=torch.int64, device=device) * 2 + 1)


class RowRandom:
    """Independent counter-based streams, one per input of a batch, on one device."""

    def __init__(self, seeds: Sequence[int] | Tensor, device: torch.device | str,
                 _counter: Tensor | None = None, _rows: Tensor | None = None) -> None:
        self.device = torch.device(device)
        self.keys = torch.as_tensor(seeds, dtype=torch.int64, device=self.device).reshape(-1) & _MASK
        self._mixed = mix32(self.keys)  # mixed once; a draw's row key xors in its multiple of the counter
        # The counter lives in the root object; a subset indexes into it, so drawing through a subset
        # advances the same streams the root (and every other subset) sees.
        self._counter = _counter if _counter is not None else torch.zeros_like(self.keys)
        self._rows = _rows

    @property
    def seeds(self) -> list[int]:
        """The per-input seeds (keys) of these streams."""
        return [int(s) for s in self.keys.tolist()]

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def subset(self, rows: Tensor) -> RowRandom:
        """The streams of ``rows`` (shared, not copied: drawing advances them)."""
        rows = rows.to(device=self.device, dtype=torch.long)
        root_rows = rows if self._rows is None else self._rows[rows]
        out = RowRandom.__new__(RowRandom)
        out.device, out.keys, out._mixed = self.device, self.keys[rows], self._mixed[rows]
        out._counter, out._rows = self._counter, root_rows
        return out

    def _bits(self, m: int) -> Tensor:
        """(N, m) 32-bit words in int64 from the next draw of every row; advances each row's counter."""
        if self._rows is None:
            count = self._counter.clone()
            self._counter += 1
        else:
            count = self._counter[self._rows]
            self._counter[self._rows] = count + 1
        # (N,): the draw's row key. An xor (not a sum) with the counter's multiple, so that two inputs
        # whose row keys meet at one draw do not also meet at every later one.
        row = mix32(self._mixed ^ ((count * _GOLDEN) & _MASK))
        return mix32(row[:, None] ^ _element_keys(m, self.device)[None, :])

    def _bits_block(self, k: int, m: int) -> Tensor:
        """(N, k, m): the next k draws of m words of every row at once, equal to k calls of ``_bits(m)``
        (one set of ops for k draws: what makes a per-query draw in a loop cheap)."""
        if self._rows is None:
            count = self._counter.clone()
            self._counter += k
        else:
            count = self._counter[self._rows]
            self._counter[self._rows] = count + k
        counts = count[:, None] + torch.arange(k, device=self.device)[None, :]
        row = mix32(self._mixed[:, None] ^ ((counts * _GOLDEN) & _MASK))
        return mix32(row[:, :, None] ^ _element_keys(m, self.device)[None, None, :])

    def rand_block(self, k: int, m: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """(N, k, m) uniforms in [0, 1): the next k draws of ``rand(m)`` per row, made at once."""
        return self._to_uniform(self._bits_block(k, m), dtype)

    def _uniform(self, m: int, dtype: torch.dtype) -> Tensor:
        return self._to_uniform(self._bits(m), dtype)

    @staticmethod
    def _to_uniform(bits: Tensor, dtype: torch.dtype) -> Tensor:
        if dtype == torch.float64:  # 32 random bits; float32 and below: the top 24 (exact, never 1.0)
            return bits.to(torch.float64) * 2.0**-32
        return (bits >> 8).to(torch.float32).mul_(2.0**-24).to(dtype)  # .to: no copy for float32

    def rand(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        """(N, *shape) uniform in [0, 1): row i from stream i."""
        dtype = dtype or torch.get_default_dtype()
        return self._uniform(math.prod(shape), dtype).reshape(len(self), *shape)

    def randn(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        """(N, *shape) standard normal by Box-Muller, both outputs of each pair of uniforms used: row i
        from stream i."""
        dtype = dtype or torch.get_default_dtype()
        m = math.prod(shape)
        half = (m + 1) // 2
        work = torch.float64 if dtype == torch.float64 else torch.float32
        u = self._uniform(2 * half, work)
        radius = (-2.0 * torch.log1p(-u[:, :half])).sqrt()  # 1 - u in (0, 1]: the log is finite
        angle = (2 * math.pi) * u[:, half:]
        z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :m]
        return z.to(dtype).reshape(len(self), *shape)

    def randint(self, low: int, high: int, *shape: int) -> Tensor:
        """(N, *shape) integers in [low, high): row i from stream i. Multiply-shift of a 32-bit word, so
        each value's probability is off by at most (high - low) / 2**32 (below 1e-9 for ranges < 4)."""
        span = high - low
        if not 0 < span < 2**31:
            raise ValueError(f"randint needs 0 < high - low < 2**31; got [{low}, {high})")
        return ((self._bits(math.prod(shape)) * span) >> 32).add_(low).reshape(len(self), *shape)

    def randperm(self, n: int) -> Tensor:
        """(N, n): a permutation of range(n) per row (argsort of 32-bit keys; ties keep index order)."""
        return torch.argsort(self._bits(n), dim=1, stable=True)
