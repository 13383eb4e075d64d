"""The Fourier reading of modular addition (`channels.fourier`) on constructed embeddings and
neurons of known frequencies, checked against numpy's own FFT where it can be."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from channels.fourier import (
    PURE,
    compare,
    dominant,
    figure,
    fourier_basis,
    grid_power,
    key_frequencies,
    read_network,
    token_power,
)
from channels.plotting import save_figure
from experiments.models.gpt import gpt2

P = 31


def wave_embedding(keys, d=24, noise=0.01, seed=0) -> np.ndarray:
    """Token a -> sum over key k of cos(2 pi k a / p) u_k + sin(...) v_k, u, v random directions."""
    rng = np.random.default_rng(seed)
    a = np.arange(P)[:, None]
    e = noise * rng.standard_normal((P, d))
    for k in keys:
        e += np.cos(2 * np.pi * k * a / P) * rng.standard_normal(d) + np.sin(2 * np.pi * k * a / P) * rng.standard_normal(d)
    return e


def test_the_fourier_basis_is_orthonormal():
    basis = fourier_basis(P)
    np.testing.assert_allclose(basis @ basis.T, np.eye(P), atol=1e-12)
    assert fourier_basis(8).shape == (8, 8)


def test_token_power_matches_numpy_fft_and_is_invariant_to_the_embedding_basis():
    e = np.random.default_rng(1).standard_normal((P, 10))
    power = token_power(e)
    spectrum = np.abs(np.fft.fft(e - e.mean(0), axis=0)) ** 2 / P  # |F_k|^2 / p per coordinate
    np.testing.assert_allclose(power, 2 * spectrum[1:P // 2 + 1].sum(1), rtol=1e-10)
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((10, 10)))
    np.testing.assert_allclose(token_power(e @ q * 1.0), power, rtol=1e-10)
    np.testing.assert_allclose(power.sum(), ((e - e.mean(0)) ** 2).sum(), rtol=1e-10)


def test_key_frequencies_of_a_constructed_embedding_and_none_for_a_random_one():
    assert sorted(key_frequencies(token_power(wave_embedding([3, 7, 12])))) == [3, 7, 12]
    dense = np.random.default_rng(3).standard_normal((P, 64))
    assert key_frequencies(token_power(dense)) == []


def test_a_neuron_of_one_frequency_is_pure_and_noise_is_not():
    a, b = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    w = 2 * np.pi * 5 / P
    pure = np.maximum(np.cos(w * a) + np.cos(w * b), 0.0)  # ReLU of a wave sum: harmonics leak a little
    wave = np.cos(w * (a + b)) + 0.5 * np.sin(w * a)
    two = np.cos(w * a) + np.cos(2 * np.pi * 9 / P * b)
    noise = np.random.default_rng(4).standard_normal((P, P))
    values = np.stack([wave, two, noise, pure], -1).reshape(P * P, 4)
    freq, purity = dominant(*grid_power(values))
    assert freq[0] == 5 and purity[0] == pytest.approx(1.0)
    assert freq[1] in (5, 9) and purity[1] == pytest.approx(0.5)
    assert purity[2] < 0.05
    assert freq[3] == 5 and purity[3] > PURE


def test_read_network_finds_the_planted_embedding_frequencies_and_compares_networks(tmp_path):
    torch.manual_seed(0)
    net = gpt2(vocab_size=P + 1, n_layer=1, n_head=2, n_embd=24, n_positions=4).double().eval()
    with torch.no_grad():
        net.transformer.wte.weight[:P] = torch.as_tensor(wave_embedding([4, 9]))
    planted = read_network(net, P, "dense")
    assert sorted(planted.key_frequencies) == [4, 9] and planted.key_share > 0.95
    assert len(planted.channel_frequencies) == 8 and 0 <= planted.accuracy <= 1
    other = gpt2(vocab_size=P + 1, n_layer=1, n_head=2, n_embd=24, n_positions=4).double().eval()
    rows = compare({"dense": planted, "random": read_network(other, P, "random")})
    assert rows[0]["keeps_dense_keys"] == "2/2" and rows[0]["power_on_dense_keys"] > 0.95
    assert rows[1]["power_on_dense_keys"] < 0.5
    path = save_figure(figure({"dense": planted}), tmp_path / "fourier.png")
    assert path.stat().st_size > 0
