"""The known answer on modular addition: the key Fourier frequencies a network computes a + b mod p
with (Nanda et al. 2023), whether a ticket keeps them, and whether MLP neurons cluster by frequency
(neurons compete over frequencies in lottery tickets of modular addition, arXiv 2602.16849).

A trained network embeds token a as a few waves cos(2 pi k a / p), sin(2 pi k a / p) (the key
frequencies k), composes them into cos(w (a + b)) in its MLP, and reads c off those. In the token
basis such a wave is dense (every token has a coordinate on it): a Fourier direction is a
*channel*; a neuron that responds to one frequency only is a *unit* of that channel. So:

- the embedding's Fourier spectrum: for the number tokens' embedding E (p x d, centred over tokens),
  the power at frequency k = 1 .. (p - 1) / 2 is P_k = ||c_k^T E||^2 + ||s_k^T E||^2 with c_k, s_k the
  unit-norm cosine and sine vectors over Z_p. Key frequencies: P_k > KEY_RATIO x median_k P_k (a
  spread embedding, e.g. a random one, has a flat spectrum: no P_k reaches 4x the median; a sum of a
  few waves puts nearly all power on them). `key_share`: the share of power on the key frequencies.
- a function f(a, b) on the p x p grid of inputs (a residual channel or a neuron at the final
  position): F = 2-D DFT of f; its power at frequency k collects the terms in a, in b, in a + b and
  in a - b: |F[u, v]|^2 over u, v in {0, k, p - k}, (u, v) != (0, 0). The dominant frequency is the
  argmax, its purity the share of f's non-constant power at it (1 for a pure wave, about
  4 / p for noise).
- the top residual channels: the top-k eigenvectors of the covariance of the final residual stream
  at the last position over all p^2 inputs; each channel's projection is read as above.
- neurons cluster by frequency when most active neurons are pure (purity >= PURE) and have a key
  frequency as their dominant one.

Invariances: permuting, rescaling or rotating the embedding's d coordinates leaves P_k unchanged
(it is a norm over d); a neuron's purity is unchanged by rescaling it. Relabelling the tokens
(any bijection of Z_p other than a multiplication by a unit) is not an invariance: the Fourier
basis is the structure of the task.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from channels.sites import run_sites

KEY_RATIO = 4.0   # a key frequency carries this many times the median frequency's power
PURE = 0.5        # a neuron is pure when half its non-constant power is at one frequency
TOP_CHANNELS = 8  # residual channels read
ACTIVE = 1e-6     # neurons whose variance over the inputs is below this share of the mean are dead


def fourier_basis(p: int) -> np.ndarray:
    """(p, p) orthonormal real Fourier basis of functions on Z_p, one per row: the constant, then
    cos and sin at each frequency k = 1 .. (p - 1) / 2 (and the Nyquist cosine for even p)."""
    x = np.arange(p)
    rows = [np.ones(p)]
    for k in range(1, p // 2 + 1):
        rows.append(np.cos(2 * np.pi * k * x / p))
        if 2 * k != p:
            rows.append(np.sin(2 * np.pi * k * x / p))
    basis = np.stack(rows)
    return basis / np.linalg.norm(basis, axis=1, keepdims=True)


def frequencies(p: int) -> np.ndarray:
    """The non-constant frequencies 1 .. p // 2 the spectra below are indexed by (index i is k = i + 1)."""
    return np.arange(1, p // 2 + 1)


def token_power(embedding: np.ndarray) -> np.ndarray:
    """P_k for k = 1 .. p // 2 of a (p, d) matrix over tokens (its mean over tokens removed)."""
    e = np.asarray(embedding, dtype=np.float64)
    p = e.shape[0]
    coeffs = fourier_basis(p) @ (e - e.mean(0))
    power = np.zeros(p // 2)
    row = 1
    for i, k in enumerate(frequencies(p)):
        width = 1 if 2 * k == p else 2
        power[i] = float((coeffs[row:row + width] ** 2).sum())
        row += width
    return power


def key_frequencies(power: np.ndarray, ratio: float = KEY_RATIO) -> list[int]:
    """The frequencies whose power exceeds `ratio` times the median power, strongest first."""
    power = np.asarray(power, dtype=np.float64)
    cut = ratio * float(np.median(power))
    order = np.argsort(-power, kind="stable")
    return [int(i + 1) for i in order if power[i] > cut and power[i] > 0]


def grid_power(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((m, p // 2) power per frequency, (m,) total non-constant power) of m functions on the
    p x p grid of (a, b): `values` is (p, p, m) or (p * p, m) with row a * p + b (see the module
    docstring). Components mixing two frequencies count in the total only."""
    v = np.asarray(values, dtype=np.float64)
    m = v.shape[-1]
    p = int(round(np.sqrt(v.size // m)))
    spectrum = np.abs(np.fft.fft2(v.reshape(p, p, m), axes=(0, 1))) ** 2
    out = np.zeros((m, p // 2))
    for i, k in enumerate(frequencies(p)):
        idx = sorted({0, k, (p - k) % p})
        block = spectrum[np.ix_(idx, idx)].sum((0, 1))
        out[:, i] = block - spectrum[0, 0]
    return out, spectrum.sum((0, 1)) - spectrum[0, 0]


def dominant(power: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dominant frequency, purity) of each row of a (m, p // 2) power table with each row's total
    non-constant power (`grid_power`); purity is the share of the total at the dominant frequency
    (nan for a constant row)."""
    power = np.atleast_2d(power)
    best = power.argmax(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = np.where(total > 0, power[np.arange(len(power)), best] / total, np.nan)
    return best + 1, purity


@dataclass
class FourierReading:
    """What one network computes with: see the module docstring. Frequencies are 1 .. p // 2."""

    label: str
    p: int
    embedding_power: np.ndarray
    key_frequencies: list[int]
    key_share: float
    channel_frequencies: list[int]
    channel_purity: list[float]
    neuron_frequencies: np.ndarray
    neuron_purity: np.ndarray
    accuracy: float

    @property
    def pure_share(self) -> float:
        """Share of active neurons that are pure (purity >= PURE)."""
        return float(np.mean(self.neuron_purity >= PURE)) if len(self.neuron_purity) else float("nan")

    @property
    def on_key_share(self) -> float:
        """Share of active neurons whose dominant frequency is a key frequency."""
        if not len(self.neuron_frequencies):
            return float("nan")
        return float(np.isin(self.neuron_frequencies, self.key_frequencies).mean())

    @property
    def clustered(self) -> bool:
        """Neurons cluster by frequency: most are pure and tuned to a key frequency."""
        return self.pure_share >= 0.5 and self.on_key_share >= 0.5

    def neurons_per_frequency(self) -> dict[int, int]:
        values, counts = np.unique(self.neuron_frequencies, return_counts=True)
        return {int(v): int(c) for v, c in sorted(zip(values, counts), key=lambda vc: -vc[1])}


def all_prompts(p: int, equals: int | None = None) -> torch.Tensor:
    """Every prompt [a, b, =] in row order a * p + b (`=` is token p unless given)."""
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
    return torch.stack([a, b, torch.full_like(a, p if equals is None else equals)], 1)


def read_network(net: nn.Module, p: int, label: str = "", layer: int = -1, top: int = TOP_CHANNELS) -> FourierReading:
    """The Fourier reading of a modular-addition transformer (a Hugging Face causal LM whose tokens
    0..p-1 are the numbers): its embedding, its final residual channels and its last MLP's neurons
    at the last position of every prompt, and its accuracy over all p^2 prompts."""
    net = net.eval()
    prompts = all_prompts(p)
    embedding = net.get_input_embeddings().weight.detach()[:p].double().numpy()
    power = token_power(embedding)
    keys = key_frequencies(power)
    with torch.no_grad():
        acts = run_sites(net, prompts, [f"resid_post.{layer}", f"mlp_hidden.{layer}"])
        logits = net(prompts).logits[:, -1, :p]
    answers = (prompts[:, 0] + prompts[:, 1]) % p
    resid = acts[f"resid_post.{layer}"][:, -1].double().numpy()
    centred = resid - resid.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    channels = centred @ vectors[:, ::-1][:, :top]
    channel_freq, channel_purity = dominant(*grid_power(channels))
    neurons = acts[f"mlp_hidden.{layer}"][:, -1].double().numpy()
    variance = neurons.var(0)
    active = variance > ACTIVE * max(float(variance.mean()), 1e-300)
    neuron_freq, neuron_purity = dominant(*grid_power(neurons[:, active])) if active.any() else (np.array([]), np.array([]))
    return FourierReading(
        label, p, power, keys, float(power[[k - 1 for k in keys]].sum() / power.sum()) if keys else 0.0,
        [int(k) for k in channel_freq], [float(x) for x in channel_purity], neuron_freq, neuron_purity,
        float((logits.argmax(-1) == answers).double().mean()))


def compare(readings: Mapping[str, FourierReading], reference: str = "dense") -> list[dict]:
    """One row per network: its key frequencies, how many of the reference's it keeps (by the
    embedding's own key set, and by the share of its embedding power on the reference's keys), the
    residual channels' frequencies, and the neurons' clustering."""
    ref = readings[reference]
    rows = []
    for label, r in readings.items():
        on_ref = float(r.embedding_power[[k - 1 for k in ref.key_frequencies]].sum() / r.embedding_power.sum()) \
            if ref.key_frequencies else 0.0
        kept = sorted(set(r.key_frequencies) & set(ref.key_frequencies))
        rows.append({
            "network": label, "accuracy": r.accuracy, "key_frequencies": r.key_frequencies,
            "key_share": r.key_share, f"keeps_{reference}_keys": f"{len(kept)}/{len(ref.key_frequencies)}",
            f"power_on_{reference}_keys": on_ref, "channel_frequencies": r.channel_frequencies,
            "neurons": len(r.neuron_purity), "neuron_pure_share": r.pure_share,
            "neuron_on_key_share": r.on_key_share, "clustered": r.clustered,
            "neurons_per_frequency": r.neurons_per_frequency(),
        })
    return rows


def figure(readings: Mapping[str, FourierReading]):
    """The embedding's Fourier power per frequency of each network (one panel each, key
    frequencies marked), and each network's neuron purity histogram."""
    import matplotlib.pyplot as plt

    n = len(readings)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 5.0), squeeze=False)
    for col, (label, r) in enumerate(readings.items()):
        ks = frequencies(r.p)
        share = r.embedding_power / r.embedding_power.sum()
        axes[0, col].bar(ks, share, color=["C3" if k in r.key_frequencies else "C7" for k in ks])
        axes[0, col].set_title(f"{label} (acc {r.accuracy:.2f})", fontsize=9)
        axes[0, col].set_xlabel("frequency k")
        axes[1, col].hist(r.neuron_purity, bins=np.linspace(0, 1, 21), color="C0")
        axes[1, col].axvline(PURE, color="k", lw=0.8, ls=":")
        axes[1, col].set_xlabel("neuron purity")
    axes[0, 0].set_ylabel("embedding power share")
    axes[1, 0].set_ylabel("neurons")
    return fig
