"""The sweep behind `ltc jacobian`: J(t, s) = d b[t] / d a[s] for many (context, t), stored item by item.

An *item* is (pair a->b, context c, target t). Its Jacobian blocks J(t, s) for every source s
(s <= t in a causal model, every s in an encoder; within `max_distance` of t if set) come from
`iter_sequence_jacobian`: one forward pass and d_b vector-Jacobian products give all s at once.
Per (t, s) the item keeps the singular values sigma_i of J(t, s) and metrics of the spectrum
lambda_i = sigma_i^2 (see `item_metrics`). The Jacobians themselves are not kept; their expected
Grams are accumulated instead, in float64:

    input side  G_in  = E[J^T J]  (d_a x d_a, compared with the covariance at a),
    output side G_out = E[J J^T]  (d_b x d_b, compared with the covariance at b),

each split into `self` (s = t) and `cross` (s != t) blocks; their pooled mean is `all`. The
residual covariance at every site of the pairs is streamed over the tokens of
`covariance_contexts` contexts.

Storage (under the output directory), written atomically:
- `items/<a>__<b>/c<context>-t<target>.npz`: sources, singular values (float32, the top
  `keep_singular_values` per block, or all), metrics, seconds; plus the full spectra of
  J(t, t) and J(t, t - 2) (the founding plots) whatever `keep_singular_values` says.
- `state/shard-<I>-of-<N>.npz`: one per shard: the items and covariance contexts it finished,
  its Gram and covariance totals. It is rewritten after each item, after the item's file.

Resume: an item or covariance context listed in any state file is never recomputed; an item
file without a state entry (a crash in between) is recomputed. Sharding: shard I of N computes
the items with (context + rank of t) % N == I and the covariance contexts with c % N == I. The
assignment depends only on (context, t), so the sweep can later be extended (more contexts or
targets: both orders are prefix-stable) and resumed with another shard count.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from channels import metrics as spectral
from channels.covariance import StreamingCovariance
from channels.jacobian import GramAccumulator, iter_sequence_jacobian
from channels.sites import replace, run_sites
from channels.spectra import load_npz, save_npz
from lth.errors import LTCError

METRICS = (
    "effective_rank",
    "participation_ratio",
    "stable_rank",
    "numerical_rank",
    "top1_share",
    "sigma_max",
    "frobenius_sq",
)
SIDES = ("in", "out")
PARTS = ("self", "cross")
SOURCE_CHUNK = 64  # blocks per SVD / Gram update call: bounds the working memory


@dataclass(frozen=True)
class Pair:
    """A Jacobian between two sites: J = d b / d a."""

    a: str
    b: str

    @property
    def name(self) -> str:
        return f"{self.a}->{self.b}"

    @property
    def slug(self) -> str:
        return f"{self.a}__{self.b}"


def parse_pair(spec: str) -> Pair:
    parts = [p.strip() for p in spec.split("->")]
    if len(parts) != 2 or not all(parts):
        raise LTCError(
            f"pair {spec!r} is not of the form 'site_a->site_b' (e.g. resid_pre.0->resid_post.11)"
        )
    return Pair(*parts)


@dataclass
class SweepSettings:
    """How much to measure and how.

    Args:
        contexts: contexts of the Jacobian sweep.
        targets: target positions t per context.
        covariance_contexts: contexts whose tokens feed the covariance.
        max_distance: only sources with |t - s| <= max_distance (None: all).
        keep_singular_values: singular values stored per block, largest first (None: all).
        limit: at most this many items, in sweep order (a quick look).
        rtol: relative tolerance of the numerical rank.
        covariance_skip_first: leave the first positions of each context out of the covariance
            (trained GPT-2's position 0 is a huge outlier, the "attention sink").
        chunk_size: cotangents per backward call (peak memory ~ chunk_size x context x width);
            None: 8 on a CPU (measured faster there than larger batches), 64 on a GPU.
    """

    contexts: int = 4
    targets: int = 4
    covariance_contexts: int = 32
    max_distance: int | None = None
    keep_singular_values: int | None = None
    limit: int | None = None
    rtol: float = spectral.DEFAULT_RTOL
    covariance_skip_first: int = 0
    chunk_size: int | None = None

    def validate(self) -> None:
        for key in ("contexts", "targets", "covariance_contexts"):
            if getattr(self, key) < 1:
                raise LTCError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_distance", "limit", "keep_singular_values", "chunk_size"):
            value = getattr(self, key)
            if value is not None and value < (0 if key == "max_distance" else 1):
                raise LTCError(
                    f"{key} must be {'>= 0' if key == 'max_distance' else '>= 1'} or null, got {value}"
                )
        if self.covariance_skip_first < 0 or not 0 < self.rtol < 1:
            raise LTCError("covariance_skip_first must be >= 0 and rtol in (0, 1)")


@dataclass(frozen=True)
class Item:
    pair: int  # index into the sweep's pairs
    context: int
    target: int
    rank: int  # the target's place in the target order (for shard assignment)

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.pair, self.context, self.target)


def target_order(length: int, count: int) -> list[int]:
    """`count` target positions, evenly spread and prefix-stable: t_i = L - 1 - floor(v_i L).

    v_i is the base-2 van der Corput sequence 0, 1/2, 1/4, 3/4, 1/8, ... (bits of i mirrored),
    so the first target is the last position, the next ones halve the gaps, and asking for more
    targets keeps the earlier ones. Duplicates (L not a power of 2) are skipped.
    """
    bits = max(1, math.ceil(math.log2(length)))
    order: list[int] = []
    for i in range(2**bits):
        mirrored = int(f"{i:0{bits}b}"[::-1], 2)
        t = length - 1 - (mirrored * length) // 2**bits
        if t not in order:
            order.append(t)
        if len(order) == min(count, length):
            break
    return order


def source_positions(t: int, length: int, causal: bool, max_distance: int | None) -> list[int]:
    reach = length if max_distance is None else max_distance
    return list(range(max(0, t - reach), (t + 1) if causal else min(length, t + reach + 1)))


def is_causal(model: nn.Module, ids: torch.Tensor, pair: Pair) -> bool:
    """Whether b[t] ignores a[s > t]: perturb a at the last position, see if earlier b moves."""
    with torch.no_grad():
        before = run_sites(model, ids, [pair.b])[pair.b]

        def nudge(old: torch.Tensor) -> torch.Tensor:
            new = old.clone()
            new[:, -1] += 1.0
            return new

        with replace(model, pair.a, nudge):
            after = run_sites(model, ids, [pair.b])[pair.b]
    return bool(torch.equal(before[:, :-1], after[:, :-1]))


def item_jacobian(
    model: nn.Module, ids: torch.Tensor, pair: Pair, t: int, sources: list[int], chunk_size: int
) -> torch.Tensor:
    """J(t, s) for the given sources, shape (n_sources, d_b, d_a), of one context `ids` (T,)."""
    ((_, block),) = iter_sequence_jacobian(
        model, ids[None], pair.a, pair.b, targets=[t], sources=sources, chunk_size=chunk_size
    )
    return block


def item_metrics(singular_values: np.ndarray, rtol: float) -> np.ndarray:
    """Metrics of each block's spectrum lambda_i = sigma_i^2, shape (n_blocks, len(METRICS)).

    effective_rank = exp(-sum p_i log p_i), participation_ratio = (sum lambda)^2 / sum lambda^2,
    stable_rank = sum lambda / lambda_1, numerical_rank = #{sigma_i^2 > rtol sigma_1^2},
    top1_share = lambda_1 / sum lambda (p_i = lambda_i / sum lambda; see channels.metrics);
    sigma_max = sigma_1 (the operator norm), frobenius_sq = sum sigma_i^2 = ||J||_F^2.
    """
    rows = []
    for sigma in singular_values.astype(np.float64):
        lam = sigma**2
        rows.append(
            [
                spectral.entropy_effective_rank(lam),
                spectral.participation_ratio(lam),
                spectral.stable_rank(lam),
                spectral.numerical_rank(lam, rtol),
                spectral.top_share(lam, 1),
                float(sigma.max()),
                float(lam.sum()),
            ]
        )
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(METRICS))


class ShardState:
    """One shard's finished work and running totals (Grams per pair, covariance per site)."""

    def __init__(
        self, pairs: list[Pair], widths: dict[str, int], device: torch.device | None = None
    ) -> None:
        self.pairs = pairs
        self.items: list[tuple[int, int, int]] = []
        self.cov_contexts: list[int] = []
        self.grams = {
            (p.slug, side, part): GramAccumulator(widths[p.a if side == "in" else p.b], device)
            for p in pairs
            for side in SIDES
            for part in PARTS
        }
        self.covs = {
            site: StreamingCovariance(width, device, name=site) for site, width in widths.items()
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "items": np.asarray(self.items, dtype=np.int64).reshape(-1, 3),
            "cov_contexts": np.asarray(self.cov_contexts, dtype=np.int64),
        }
        for (slug, side, part), gram in self.grams.items():
            out[f"gram/{slug}/{side}/{part}/total"] = gram.total.cpu().numpy()
            out[f"gram/{slug}/{side}/{part}/count"] = np.asarray(gram.count, dtype=np.int64)
        for site, cov in self.covs.items():
            for key, value in cov.state_dict().items():
                out[f"cov/{site}/{key}"] = value.cpu().numpy()
        return out

    def load(self, arrays: dict[str, np.ndarray], path: Path) -> None:
        try:
            self.items = [tuple(int(v) for v in row) for row in arrays["items"]]
            self.cov_contexts = [int(c) for c in arrays["cov_contexts"]]
            for (slug, side, part), gram in self.grams.items():
                gram.total = torch.from_numpy(arrays[f"gram/{slug}/{side}/{part}/total"]).to(
                    gram.total
                )
                gram.count = int(arrays[f"gram/{slug}/{side}/{part}/count"])
            for site, cov in self.covs.items():
                cov.load_state_dict(
                    {
                        key: torch.from_numpy(arrays[f"cov/{site}/{key}"])
                        for key in ("count", "mean", "m2")
                    }
                )
        except (KeyError, RuntimeError) as exc:
            raise LTCError(
                f"{path} does not fit this sweep ({exc}): it belongs to other pairs or "
                "another model; use another --out or delete the file"
            ) from exc

    def merge(self, other: ShardState) -> None:
        self.items += other.items
        self.cov_contexts += other.cov_contexts
        for key, gram in self.grams.items():
            gram.merge(other.grams[key])
        for site, cov in self.covs.items():
            cov.merge(other.covs[site])


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


class Sweep:
    """The items of one sweep over `blocks` (contexts in order) and their storage under `out`."""

    def __init__(
        self,
        out: Path,
        model: nn.Module,
        blocks: torch.Tensor,
        pairs: list[Pair],
        settings: SweepSettings,
    ) -> None:
        settings.validate()
        self.out, self.model, self.pairs, self.settings = Path(out), model, pairs, settings
        self.device = next(model.parameters()).device
        self.chunk_size = settings.chunk_size or (64 if self.device.type == "cuda" else 8)
        self.blocks = blocks
        self.length = blocks.shape[1]
        self.n_contexts = min(settings.contexts, len(blocks))
        self.n_cov_contexts = min(settings.covariance_contexts, len(blocks))
        self.targets = target_order(self.length, settings.targets)
        ids = blocks[0].to(self.device)[None]
        self.sites = list(dict.fromkeys(site for p in pairs for site in (p.a, p.b)))
        with torch.no_grad():
            acts = run_sites(model, ids, self.sites)
        bad = {
            s: tuple(a.shape) for s, a in acts.items() if a.dim() != 3 or a.shape[1] != self.length
        }
        if bad:
            raise LTCError(
                f"sites {bad} are not residual-stream-like (1, {self.length}, d) activations"
            )
        self.widths = {site: act.shape[-1] for site, act in acts.items()}
        self.causal = {p: is_causal(model, ids, p) for p in pairs}

    def items(self) -> list[Item]:
        """The requested items in sweep order: context, then target, then pair."""
        every = [
            Item(k, c, t, rank)
            for c in range(self.n_contexts)
            for rank, t in enumerate(self.targets)
            for k in range(len(self.pairs))
        ]
        return every[: self.settings.limit]

    def item_path(self, pair: int, context: int, target: int) -> Path:
        return self.out / "items" / self.pairs[pair].slug / f"c{context:05d}-t{target:05d}.npz"

    def state_paths(self) -> list[Path]:
        return sorted((self.out / "state").glob("shard-*-of-*.npz"))

    def merged_state(self) -> ShardState:
        """Every shard's totals together; an item finished twice (mixed runs) is an error."""
        total = ShardState(self.pairs, self.widths, self.device)
        for path in self.state_paths():
            state = ShardState(self.pairs, self.widths, self.device)
            state.load(load_npz(path), path)
            total.merge(state)
        if len(set(total.items)) != len(total.items) or len(set(total.cov_contexts)) != len(
            total.cov_contexts
        ):
            raise LTCError(
                f"{self.out / 'state'} counts some items twice (shards of different runs "
                "mixed?): delete the directory and re-run"
            )
        return total

    def missing(self) -> tuple[list[Item], list[int]]:
        """Requested items and covariance contexts no shard has finished yet."""
        items: set[tuple[int, int, int]] = set()
        contexts: set[int] = set()
        for path in self.state_paths():
            with np.load(path, allow_pickle=False) as state:  # reads only these two arrays
                items |= {tuple(int(v) for v in row) for row in state["items"]}
                contexts |= {int(c) for c in state["cov_contexts"]}
        return (
            [i for i in self.items() if i.key not in items],
            [c for c in range(self.n_cov_contexts) if c not in contexts],
        )

    def run_shard(self, index: int = 0, count: int = 1, progress: bool = True) -> int:
        """Compute this shard's missing work; returns the number of items computed."""
        path = self.out / "state" / f"shard-{index}-of-{count}.npz"
        state = ShardState(self.pairs, self.widths, self.device)
        if path.exists():
            state.load(load_npz(path), path)
        items, contexts = self.missing()
        items = [i for i in items if (i.context + i.rank) % count == index]
        contexts = [c for c in contexts if c % count == index]
        with _progress(progress) as bar:
            if contexts:
                task = bar.add_task("covariance (contexts)", total=len(contexts))
                for c in contexts:
                    self._covariance(state, c)
                    bar.advance(task)
                save_npz(path, state.arrays())
            task = bar.add_task(f"Jacobians (shard {index}/{count})", total=len(items))
            for item in items:
                result = self.compute_item(item, state.grams)
                save_npz(self.item_path(*item.key), result)
                state.items.append(item.key)
                save_npz(path, state.arrays())
                bar.advance(task)
        return len(items)

    def _covariance(self, state: ShardState, context: int) -> None:
        with torch.no_grad():
            acts = run_sites(self.model, self.blocks[context].to(self.device)[None], self.sites)
        for site, act in acts.items():
            state.covs[site].update(act[0, self.settings.covariance_skip_first :])
        state.cov_contexts.append(context)

    def compute_item(self, item: Item, grams: dict) -> dict[str, np.ndarray]:
        """The arrays of one item; adds its blocks to the Gram accumulators in `grams`."""
        pair = self.pairs[item.pair]
        t = item.target
        sources = source_positions(t, self.length, self.causal[pair], self.settings.max_distance)
        ids = self.blocks[item.context].to(self.device)
        start = time.perf_counter()
        jacobian = item_jacobian(self.model, ids, pair, t, sources, self.chunk_size)
        sync(self.device)
        middle = time.perf_counter()
        sigma = (
            torch.cat([torch.linalg.svdvals(part) for part in jacobian.split(SOURCE_CHUNK)])
            .cpu()
            .numpy()
        )
        measured = item_metrics(sigma, self.settings.rtol)
        spectra_end = time.perf_counter()
        here = sources.index(t)  # sources are contiguous: slices, not copies, of the blocks
        pieces = {
            "self": [jacobian[here : here + 1]],
            "cross": [jacobian[:here], jacobian[here + 1 :]],
        }
        for side in SIDES:
            for part in PARTS:
                for chunk in (c for piece in pieces[part] for c in piece.split(SOURCE_CHUNK)):
                    grams[(pair.slug, side, part)].update(
                        chunk if side == "in" else chunk.transpose(-1, -2)
                    )
        sync(self.device)
        out = {
            "sources": np.asarray(sources, dtype=np.int64),
            "singular_values": sigma[:, : self.settings.keep_singular_values].astype(np.float32),
            "metrics": measured,
            "seconds": np.asarray(
                [middle - start, spectra_end - middle, time.perf_counter() - spectra_end]
            ),
        }
        for name, s in (("s_eq_t", t), ("s_eq_t_minus_2", t - 2)):
            if s in sources:
                out[f"full/{name}"] = sigma[sources.index(s)].astype(np.float32)
        return out


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings are the work's own."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
