import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from channels.covariance import StreamingCovariance, rows_from_activation
from lth.errors import LTCError


def relative_gap(ours: torch.Tensor, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|."""
    return float(np.abs(ours.numpy() - reference).max() / np.abs(reference).max())


def correlated_rows(n: int, d: int, mean: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return torch.randn(n, d, generator=generator, dtype=torch.float64) @ mixing + mean


def test_matches_numpy_cov_over_uneven_batches():
    x = correlated_rows(1000, 7, mean=3.0)
    acc = StreamingCovariance(7)
    for start, stop in [(0, 1), (1, 200), (200, 613), (613, 1000)]:
        acc.update(x[start:stop])
    assert acc.count == 1000
    assert relative_gap(acc.covariance(), np.cov(x.numpy(), rowvar=False)) < 1e-10
    assert (
        relative_gap(acc.covariance(unbiased=False), np.cov(x.numpy(), rowvar=False, bias=True))
        < 1e-10
    )
    assert np.allclose(acc.mean.numpy(), x.numpy().mean(axis=0), rtol=1e-12)


def test_million_rows_with_large_mean_stays_exact():
    # Variance ~1 under a mean of 1e4: raw sums of squares would lose ~8 of 16 digits.
    x = correlated_rows(1_000_000, 4, mean=1e4, seed=1)
    acc = StreamingCovariance(4)
    for chunk in x.split(65_536):
        acc.update(chunk)
    assert relative_gap(acc.covariance(), np.cov(x.numpy(), rowvar=False)) < 1e-10


def test_float32_input_is_accumulated_in_float64():
    x32 = correlated_rows(5000, 5, mean=50.0).float()
    acc = StreamingCovariance(5)
    acc.update(x32)
    assert acc.covariance().dtype == torch.float64
    assert relative_gap(acc.covariance(), np.cov(x32.double().numpy(), rowvar=False)) < 1e-10


def test_merge_equals_one_shot():
    x = correlated_rows(900, 6, mean=-20.0)
    whole, left, right = StreamingCovariance(6), StreamingCovariance(6), StreamingCovariance(6)
    whole.update(x)
    left.update(x[:100])
    right.update(x[100:])
    left.merge(right)
    assert left.count == 900
    assert torch.allclose(left.covariance(), whole.covariance(), rtol=1e-12, atol=0)
    assert torch.allclose(left.mean, whole.mean, rtol=1e-12, atol=0)


def test_merge_with_empty_is_identity():
    x = correlated_rows(50, 3, mean=1.0)
    acc = StreamingCovariance(3)
    acc.update(x)
    before = acc.covariance().clone()
    acc.merge(StreamingCovariance(3))
    assert torch.equal(acc.covariance(), before)
    assert torch.equal(StreamingCovariance(3).merge(acc).covariance(), before)


def test_token_batches_flatten_to_rows():
    x = correlated_rows(2 * 9, 16, mean=2.0).reshape(2, 9, 16)
    acc = StreamingCovariance(16)
    acc.update(x)
    assert acc.count == 18
    assert relative_gap(acc.covariance(), np.cov(x.reshape(-1, 16).numpy(), rowvar=False)) < 1e-10


def test_conv_feature_maps_give_channel_rows():
    maps = torch.randn(3, 4, 5, 6, dtype=torch.float64) + torch.arange(4.0).view(1, 4, 1, 1)
    rows = rows_from_activation(maps, channel_dim=1)
    assert rows.shape == (3 * 5 * 6, 4)
    # Each row is one (batch, h, w) position with its 4 channel values.
    assert torch.equal(rows[0], maps[0, :, 0, 0])
    assert torch.equal(rows[7], maps[0, :, 1, 1])
    acc = StreamingCovariance(4)
    acc.update(rows)
    reference = np.cov(maps.permute(1, 0, 2, 3).reshape(4, -1).numpy())
    assert relative_gap(acc.covariance(), reference) < 1e-10


def test_eigh_is_descending_and_matches_numpy():
    x = correlated_rows(400, 8, mean=0.5)
    acc = StreamingCovariance(8)
    acc.update(x)
    values, vectors = acc.eigh(k=3)
    reference_values, reference_vectors = np.linalg.eigh(np.cov(x.numpy(), rowvar=False))
    assert values.shape == (3,) and vectors.shape == (8, 3)
    assert np.allclose(values.numpy(), reference_values[::-1][:3], rtol=1e-10)
    # Eigenvectors agree up to sign.
    cosines = np.abs((vectors.numpy() * reference_vectors[:, ::-1][:, :3]).sum(axis=0))
    assert np.allclose(cosines, 1.0, atol=1e-8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_rows_raise_naming_site_and_step(bad):
    acc = StreamingCovariance(3, name="net.2")
    x = torch.ones(10, 3)
    x[4, 1] = bad
    with pytest.raises(LTCError, match=r"net\.2.*step 17"):
        acc.update(x, step=17)
    assert acc.count == 0


def test_bad_shapes_and_too_few_rows_raise():
    acc = StreamingCovariance(3, name="fc1")
    with pytest.raises(LTCError, match="width 3"):
        acc.update(torch.ones(4, 5))
    acc.update(torch.ones(1, 3))
    with pytest.raises(LTCError, match="at least 2"):
        acc.covariance()
    with pytest.raises(LTCError, match="1..3"):
        acc.eigh(k=4)
    with pytest.raises(LTCError):
        acc.merge(StreamingCovariance(4))


def test_state_dict_round_trip_resumes_exactly():
    x = correlated_rows(300, 5, mean=7.0)
    whole = StreamingCovariance(5)
    whole.update(x)
    first = StreamingCovariance(5)
    first.update(x[:120])
    resumed = StreamingCovariance(5)
    resumed.load_state_dict(first.state_dict())
    resumed.update(x[120:])
    assert torch.allclose(resumed.covariance(), whole.covariance(), rtol=1e-12, atol=0)
    with pytest.raises(LTCError, match="width"):
        StreamingCovariance(6).load_state_dict(first.state_dict())


def test_all_reduce_without_process_group_is_a_no_op():
    acc = StreamingCovariance(3)
    acc.update(correlated_rows(20, 3, mean=1.0))
    before = acc.covariance().clone()
    acc.all_reduce()
    assert acc.count == 20 and torch.equal(acc.covariance(), before)


SPLIT = 300  # rank 0 gets 300 rows, rank 1 gets 700: unequal shares exercise the weighting


def _all_reduce_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        x = correlated_rows(1000, 6, mean=1e3, seed=3)
        acc = StreamingCovariance(6)
        acc.update(x[:SPLIT] if rank == 0 else x[SPLIT:])
        acc.all_reduce()
        torch.save(acc.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_across_two_gloo_processes_equals_single_process(tmp_path):
    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    single = StreamingCovariance(6)
    single.update(correlated_rows(1000, 6, mean=1e3, seed=3))
    reference = np.cov(correlated_rows(1000, 6, mean=1e3, seed=3).numpy(), rowvar=False)
    for rank in range(2):
        reduced = StreamingCovariance(6)
        reduced.load_state_dict(torch.load(tmp_path / f"rank{rank}.pt"))
        assert reduced.count == 1000
        assert relative_gap(reduced.covariance(), single.covariance().numpy()) < 1e-10
        assert relative_gap(reduced.covariance(), reference) < 1e-10
