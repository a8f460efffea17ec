"""The per-input streams attacks draw from (attackgen.run.attacks.randomness): an input's draws depend
on its seed and on how many draws it made, never on its batch; they look uniform / normal; they are
reproducible; and the integer mix is exact (no signed-overflow reliance), checked against Python ints."""

from __future__ import annotations

import math

import pytest
import torch

from attackgen.run.attacks.randomness import RowRandom, mix32, row_seeds_for


def lowbias32(x: int) -> int:
    """The reference mix on Python ints (arbitrary precision: no overflow to get wrong)."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x735A2D97) & 0xFFFFFFFF
    return x ^ (x >> 15)


def test_the_tensor_mix_matches_the_reference_bit_for_bit():
    values = [0, 1, 2, 3, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF, *range(1000, 100000, 997)]
    assert mix32(torch.tensor(values, dtype=torch.int64)).tolist() == [lowbias32(v) for v in values]


def test_an_inputs_kth_draw_does_not_depend_on_the_subset_it_is_drawn_in():
    seeds = row_seeds_for(3, 40)
    whole = RowRandom(seeds, "cpu")
    draws = [whole.rand(5), whole.randint(0, 7, 3), whole.randn(2, 2), whole.randperm(9)]
    alone = RowRandom(seeds, "cpu").subset(torch.tensor([17, 4]))
    nested = RowRandom(seeds, "cpu").subset(torch.arange(10, 30)).subset(torch.tensor([7, 0]))  # rows 17, 10
    for got, rows in ((alone, [17, 4]), (nested, [17, 10])):
        assert torch.equal(got.rand(5), draws[0][rows])
        assert torch.equal(got.randint(0, 7, 3), draws[1][rows])
        assert torch.equal(got.randn(2, 2), draws[2][rows])
        assert torch.equal(got.randperm(9), draws[3][rows])


def test_a_subset_advances_the_shared_streams():
    seeds = row_seeds_for(0, 6)
    root, reference = RowRandom(seeds, "cpu"), RowRandom(seeds, "cpu")
    root.subset(torch.tensor([1, 4])).rand(3)  # rows 1 and 4 made one draw
    first, second = reference.rand(3), reference.rand(3)
    after = root.rand(3)
    assert torch.equal(after[[1, 4]], second[[1, 4]])
    assert torch.equal(after[[0, 2, 3, 5]], first[[0, 2, 3, 5]])


def test_draws_are_reproducible_and_seeds_give_different_streams():
    a, b = RowRandom([7, 7, 8], "cpu").rand(1000), RowRandom([7, 7, 8], "cpu").rand(1000)
    assert torch.equal(a, b)
    assert torch.equal(a[0], a[1])  # the same seed is the same stream
    assert (a[0] == a[2]).float().mean() < 0.01  # another seed is another stream
    assert abs(torch.corrcoef(a[[0, 2]])[0, 1]) < 0.1
    rng = RowRandom([7], "cpu")
    assert not torch.equal(rng.rand(1000), rng.rand(1000))  # successive draws differ


def test_uniforms_have_the_right_moments_and_pass_a_chi_square_test():
    u = RowRandom(row_seeds_for(1, 64), "cpu").rand(4096, dtype=torch.float64)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.003  # sd of the mean of 262144 uniforms: 0.00056
    assert abs(float(u.var()) - 1 / 12) < 0.002
    counts = torch.histc(u.float(), bins=100, min=0.0, max=1.0)
    expected = u.numel() / 100
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 160  # 99 degrees of freedom: P(chi2 > 160) < 1e-4; a biased generator lands far above
    # and no row is off on its own: per-row means of 4096 uniforms, sd 0.0045
    assert float((u.mean(dim=1) - 0.5).abs().max()) < 0.025


def test_normals_integers_and_permutations():
    rng = RowRandom(row_seeds_for(2, 32), "cpu")
    z = rng.randn(4001)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1) < 0.02
    assert abs(float((z.abs() < 1).float().mean()) - math.erf(1 / math.sqrt(2))) < 0.01  # the shape, not just moments
    k = rng.randint(-2, 3, 5000)
    assert k.dtype == torch.long and int(k.min()) == -2 and int(k.max()) == 2
    freq = torch.bincount((k + 2).flatten(), minlength=5).float() / k.numel()
    assert float((freq - 0.2).abs().max()) < 0.01
    perms = rng.randperm(50)
    assert torch.equal(perms.sort(dim=1).values, torch.arange(50).expand(32, 50))
    assert len({tuple(p) for p in perms.tolist()}) == 32
    assert abs(float(perms[:, 0].float().mean()) - 24.5) < 8  # the first element is not stuck low or high
    with pytest.raises(ValueError, match="high - low"):
        rng.randint(3, 3)


def test_empty_batches_and_scalar_draws():
    rng = RowRandom([], "cpu")
    assert rng.rand(3).shape == (0, 3) and rng.randint(0, 2, 4).shape == (0, 4) and rng.randperm(5).shape == (0, 5)
    assert RowRandom([1, 2], "cpu").rand().shape == (2,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_draws_the_same_bits_as_the_cpu():
    seeds = row_seeds_for(5, 16)
    cpu, gpu = RowRandom(seeds, "cpu"), RowRandom(seeds, "cuda")
    assert torch.equal(cpu.randint(0, 1000, 64), gpu.randint(0, 1000, 64).cpu())
    assert torch.equal(cpu.rand(64), gpu.rand(64).cpu())
    assert torch.equal(cpu.randperm(30), gpu.randperm(30).cpu())


def test_a_block_of_draws_equals_that_many_single_draws_through_subsets_too():
    """Square draws 32 queries' uniforms at once; they must be the numbers one draw per query gives, so a
    result does not depend on the block size, and the counters must end where single draws leave them."""
    seeds = row_seeds_for(3, 6)
    single, blocked = RowRandom(seeds, "cpu"), RowRandom(seeds, "cpu")
    rows = torch.tensor([4, 1, 2])
    one_by_one = torch.stack([single.subset(rows).rand(5, dtype=torch.float32) for _ in range(7)], dim=1)
    assert torch.equal(blocked.subset(rows).rand_block(7, 5), one_by_one)
    assert torch.equal(single.rand(3), blocked.rand(3))  # counters advanced alike on those rows only
