"""Canonical coordinates of a site: where the ticket tests read units and channels.

A site's activation a (rows = examples, or tokens, or conv positions; columns = coordinates, each
belonging to a unit) is defined only up to the network's reparametrisations: a ReLU unit scaled by
s > 0 with its outgoing weights scaled by 1/s computes the same function, and so does any
permutation of units; LayerNorm gains folded into the next weights change no site's activations.
The tests read every site in *canonical coordinates*, which none of these change:

    u_j = sigma_j (a_j - mean a_j),   sigma_j = rms over rows and probes of d(v . z)/d a_j,

z the class-centred logits and v the probes (for classifiers an orthonormal basis of the centred
logits, so sum_v g g^T = J^T P J exactly; for sequence models random Gaussian probes per position,
with a fixed seed, at the scored positions only: a position whose label is -100 is no output of
the task, so it probes nothing; its activations still count as rows, since later positions read
them). Scaling unit j by s scales a_j by s and its sensitivity by 1/s: u_j is
unchanged. Coordinates with no canonical variance (dead, or ignored by the output) are left out.

The *channels* are the directions along which information flows through the site: variance the
output is sensitive to. With C = Cov(u) and G = E[g_u g_u^T] (g_u = dz/du), they are the
eigenvectors of C G, d_i = C^{1/2} w_i for the eigenvectors w_i of the whitened Gram
C^{1/2} G C^{1/2}, whose eigenvalue lambda_i is the first-order output variance the channel
carries. At an isotropic input (raw covariance ∝ I) they are the Jacobian Gram's eigenvectors; a
unit whose variance the output ignores carries none of them (the "busy unit" of a subcircuit).

A *rotated copy* (`Frame.rotated`) replaces the units by a Haar-random rotation of the canonical
coordinates, canonicalised again: the same function and the same channel spectrum, with no unit
special by construction. Each unit-level statistic is read against its value on rotated copies,
the null at the same width, rank, classes and k. Draws are made in a canonical unit order (by
canonical variance), so a permutation of units leaves every statistic exactly unchanged.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from channels.sites import replace

LIVE = 1e-10  # a coordinate is silent when its share of the canonical variance is below this
SEQUENCE_PROBES = 8


def logits_of(output) -> Tensor:
    """The logits of a model's output (a tensor, or a Hugging Face output with `.logits`)."""
    return output.logits if hasattr(output, "logits") else output


def as_rows(activation: Tensor) -> Tensor:
    """(rows, coordinates): conv maps (B, C, H, W) by channel, everything else by its last axis."""
    if activation.dim() == 4:
        return activation.movedim(1, -1).reshape(-1, activation.shape[1])
    return activation.reshape(-1, activation.shape[-1])


def from_rows(rows: Tensor, like: Tensor) -> Tensor:
    """Inverse of `as_rows` for an activation shaped like `like`."""
    if like.dim() == 4:
        b, c, h, w = like.shape
        return rows.reshape(b, h, w, c).movedim(-1, 1)
    return rows.reshape(like.shape)


def probes(logits: Tensor, seed: int = 0, scored: Tensor | None = None) -> list[Tensor]:
    """Probes v of the class-centred logits: an orthonormal basis of them for (rows, classes)
    logits, else `SEQUENCE_PROBES` Gaussian probes per position, centred and scaled so that their
    outer products average to the centring projection, zero at positions not `scored` (a boolean
    of the logits' shape without the class axis; None: every position)."""
    classes = logits.shape[-1]
    centre = torch.eye(classes, dtype=logits.dtype) - 1.0 / classes
    if logits.dim() == 2:
        basis = torch.linalg.svd(centre)[2][: classes - 1]
        return [row.expand_as(logits) for row in basis]
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randn((SEQUENCE_PROBES, *logits.shape), generator=gen, dtype=logits.dtype)
    if scored is not None:
        draws = draws * scored[..., None].to(draws.dtype)
    return list((draws @ centre) / SEQUENCE_PROBES**0.5)


def sensitivities(net: nn.Module, x, site: str, seed: int = 0, scored: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(a, g): the site's activation as rows (n, d) and d(v . logits)/da for every probe (p, n, d);
    `scored` as in `probes`."""
    held: dict[str, Tensor] = {}

    def leaf(a: Tensor) -> Tensor:
        held["a"] = a.detach().requires_grad_(True)
        return held["a"]

    with torch.enable_grad(), replace(net, site, leaf):
        logits = logits_of(net(x))
        grads = [torch.autograd.grad((logits * v).sum(), held["a"], retain_graph=True)[0]
                 for v in probes(logits.detach(), seed, scored)]
    return as_rows(held["a"].detach()), torch.stack([as_rows(g) for g in grads])


@dataclass
class Frame:
    """A site in some coordinates: the rows' coordinates u (n, m), their sensitivities g (p, n, m),
    each coordinate's unit, and the maps between coordinates and activations
    (u = (a - mean) @ encode; a change du moves a by du @ decode)."""

    site: str
    mean: Tensor
    coords: Tensor
    grads: Tensor
    units: Tensor
    encode: Tensor
    decode: Tensor
    unit_ids: Tensor | None = None  # the network's unit index of each frame unit (None: a rotated copy)

    @property
    def unit_count(self) -> int:
        return int(self.units.max()) + 1 if len(self.units) else 0

    def unit_variance(self) -> Tensor:
        """Each unit's share of the canonical variance (its attribution), summing to 1."""
        var = self.coords.var(0)
        share = torch.zeros(self.unit_count, dtype=var.dtype).index_add_(0, self.units, var)
        return share / share.sum()

    def to_coords(self, rows: Tensor) -> Tensor:
        return (rows - self.mean) @ self.encode

    def moved(self, rows: Tensor, new_coords: Tensor) -> Tensor:
        """Activation rows whose coordinates are moved to `new_coords` (left-out coordinates kept)."""
        return rows + (new_coords - self.to_coords(rows)) @ self.decode

    def rotated(self, seed: int) -> Frame:
        """A copy whose units are a Haar-random rotation of these coordinates, canonicalised again
        (each new unit scaled to unit rms sensitivity); units of the same width as these."""
        m = self.coords.shape[1]
        gen = np.random.default_rng(seed)
        q, r = np.linalg.qr(gen.standard_normal((m, m)))
        rot = torch.as_tensor(q * np.sign(np.diag(r)), dtype=self.coords.dtype)
        grads = self.grads @ rot.T
        sigma = grads.pow(2).mean((0, 1)).sqrt().clamp_min(torch.finfo(grads.dtype).tiny)
        width = m // self.unit_count
        return Frame(self.site, self.mean, (self.coords @ rot.T) * sigma, grads / sigma,
                     torch.arange(m) // width, self.encode @ rot.T * sigma, (rot / sigma[:, None]) @ self.decode)


def canonical_frame(net: nn.Module, x, site: str, unit_of: Tensor | None = None, seed: int = 0,
                    scored: Tensor | None = None) -> Frame:
    """The site's canonical frame on inputs `x`, coordinates ordered by unit (units by canonical
    variance, largest first; a unit's coordinates in their own order). `unit_of` maps each
    coordinate to its unit (default: every coordinate a unit; a head's d_head coordinates form one
    unit). `scored`: the output positions the task scores (sequence models; see `probes`). A
    coordinate without canonical variance (a silent unit, or one the output ignores) stays, at 0:
    a rotated copy spreads the site's signal over every unit the layer has."""
    a, g = sensitivities(net, x, site, seed, scored)
    a, g = a.double(), g.double()
    d = a.shape[1]
    unit_of = torch.arange(d) if unit_of is None else torch.as_tensor(unit_of)
    mean = a.mean(0)
    sigma = g.pow(2).mean((0, 1)).sqrt()
    var = (a - mean).var(0) * sigma**2
    live = var > LIVE * var.sum()
    sigma = torch.where(live, sigma, torch.zeros_like(sigma))
    unit_var = torch.zeros(int(unit_of.max()) + 1, dtype=var.dtype).index_add_(0, unit_of, torch.where(live, var, 0))
    # units by canonical variance, ties (silent units) by index; coordinates by unit, then index
    unit_rank = torch.as_tensor(np.lexsort((np.arange(len(unit_var)), -unit_var.numpy())))
    position = torch.empty_like(unit_rank)
    position[unit_rank] = torch.arange(len(unit_rank))
    index = torch.as_tensor(np.lexsort((np.arange(d), position[unit_of].numpy())), dtype=torch.long)
    units = position[unit_of[index]]
    inverse = torch.where(sigma > 0, 1.0 / sigma.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(sigma))
    encode = torch.zeros(d, d, dtype=a.dtype)
    encode[index, torch.arange(d)] = sigma[index]
    decode = torch.zeros(d, d, dtype=a.dtype)
    decode[torch.arange(d), index] = inverse[index]
    return Frame(site, mean, (a - mean) @ encode, g[:, :, index] * inverse[index], units, encode, decode, unit_rank)


@dataclass
class Channels:
    """The top channels of a frame: unit-norm directions d_i (m, k) in its coordinates, the share
    of the carried output variance each holds, and their readings G d_i (m, k): how the output
    reads each coordinate's activity along the channel."""

    directions: Tensor
    weights: Tensor
    readings: Tensor

    @property
    def count(self) -> float:
        """k_eff = 1 / sum w_i^2: how many channels (the participation ratio of the top spectrum)."""
        return float(1.0 / (self.weights**2).sum())


def channels(frame: Frame, top: int = 8) -> Channels:
    """The top-`top` eigen-directions of C G in the frame's coordinates (see the module docstring)."""
    u, g = frame.coords, frame.grads
    cov = u.T @ u / (len(u) - 1)
    gram = torch.einsum("pni,pnj->ij", g, g) / (g.shape[0] * g.shape[1])
    values, vectors = torch.linalg.eigh(cov)
    root = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    flow_values, flow_vectors = torch.linalg.eigh(root @ gram @ root)
    top = min(top, len(flow_values))
    lam = flow_values.flip(0)[:top].clamp_min(0)
    directions = root @ flow_vectors.flip(1)[:, :top]
    directions = directions / directions.norm(dim=0, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
    weights = lam / lam.sum() if lam.sum() > 0 else torch.full_like(lam, 1.0 / top)
    return Channels(directions, weights, gram @ directions)


def unit_loading(frame: Frame, found: Channels) -> Tensor:
    """Each unit's share of the channels' carried output variance,

        l_u = sum_i w_i s_iu,   s_iu = |sum_{j in u} d_ij (G d_i)_j| / sum_v |sum_{j in v} d_ij (G d_i)_j|,

    a unit's activity along channel i times the output's sensitivity to it. With independent
    units (C diagonal) s_iu is exactly unit u's part of lambda_i (d_i = C^{1/2} w_i, G d_i =
    lambda_i C^{-1/2} w_i, so d_ij (G d_i)_j = lambda_i w_ij^2); and it is unchanged by any
    invertible change of a unit's own coordinates (d -> A d, G d -> A^{-T} G d), scale included.
    The activity alone (d_ij^2) would count a unit's variance twice, once in d and once in the
    sensitivity that made the channel: a dense channel whose units differ in use would look
    concentrated (T2 read 0.56-0.66 at dense planted inputs with it)."""
    per_coord = found.directions * found.readings
    per_unit = torch.zeros(frame.unit_count, per_coord.shape[1], dtype=per_coord.dtype)
    per_unit = per_unit.index_add_(0, frame.units, per_coord).abs()
    per_unit = per_unit / per_unit.sum(0, keepdim=True).clamp_min(torch.finfo(per_coord.dtype).tiny)
    share = per_unit @ found.weights
    return share / share.sum()


def unit_spread(frame: Frame, found: Channels) -> float:
    """n_units = 1 / sum_u l_u^2 (`unit_loading`): over how many units the channels' signal spreads
    (1 when one unit carries everything, the unit count when all share)."""
    return float(1.0 / (unit_loading(frame, found) ** 2).sum())


def intervene(net: nn.Module, x, frame: Frame, edit: Callable[[Tensor], Tensor]):
    """The network's output on `x` with the site's coordinates u replaced by `edit(u)` (rows in
    the order `as_rows` gives them)."""
    def change(a: Tensor) -> Tensor:
        rows = as_rows(a).to(frame.coords.dtype)
        return from_rows(frame.moved(rows, edit(frame.to_coords(rows))), a).to(a.dtype)

    with replace(net, frame.site, change):
        return logits_of(net(x))
