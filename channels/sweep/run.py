"""`Sweep`: the items of one Jacobian sweep, their storage, resume and shards (see `channels.sweep`)."""

from __future__ import annotations

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

from channels.covariance import StreamingCovariance
from channels.sites import run_sites
from channels.spectra import load_npz, save_npz
from channels.sweep.items import ITEM_METHODS, ItemInput
from channels.sweep.plan import Item, Pair, SweepSettings, is_causal, source_positions, target_order
from channels.sweep.state import ShardState, covariance_arrays, load_covariances
from lth.errors import LTCError
from lth.layout import SweepLayout


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
        self.layout = SweepLayout(out)
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
        return self.layout.item(self.pairs[pair].slug, context, target)

    def merged_state(self) -> ShardState:
        """Every shard's totals together; an item finished twice (mixed runs) is an error."""
        total = ShardState(self.pairs, self.widths, self.device)
        for path in self.layout.shard_states():
            state = ShardState(self.pairs, self.widths, self.device)
            state.load(load_npz(path), path)
            total.merge(state)
        if len(set(total.items)) != len(total.items):
            raise LTCError(
                f"{self.layout.state} counts some items twice (shards of different runs "
                "mixed?): delete the directory and re-run"
            )
        return total

    def missing(self) -> list[Item]:
        """Requested items no shard has finished yet."""
        done: set[tuple[int, int, int]] = set()
        for path in self.layout.shard_states():
            with np.load(path, allow_pickle=False) as state:  # reads only this array
                done |= {tuple(int(v) for v in row) for row in state["items"]}
        return [i for i in self.items() if i.key not in done]

    def covariances(self, progress: bool = False) -> dict[str, StreamingCovariance]:
        """The covariance at every site: read from the sweep's file, or computed and stored."""
        path = self.layout.covariance_state
        if path.exists():
            return load_covariances(load_npz(path), self.widths, path, self.device)
        covs = {
            site: StreamingCovariance(width, self.device, name=site)
            for site, width in self.widths.items()
        }
        skip = self.settings.covariance_skip_first
        with _progress(progress) as bar:
            task = bar.add_task("covariance (contexts)", total=self.n_cov_contexts)
            for c in range(self.n_cov_contexts):
                with torch.no_grad():
                    ids = self.blocks[c].to(self.device)[None]
                    acts = run_sites(self.model, ids, self.sites)
                for site, act in acts.items():
                    covs[site].update(act[0, skip:])
                bar.advance(task)
        save_npz(path, covariance_arrays(covs))
        return covs

    def run_shard(self, index: int = 0, count: int = 1, progress: bool = True) -> int:
        """Compute this shard's missing work; returns the number of items computed."""
        path = self.layout.shard_state(index, count)
        state = ShardState(self.pairs, self.widths, self.device)
        if path.exists():
            state.load(load_npz(path), path)
        covs = self.covariances(progress)
        items = [i for i in self.missing() if (i.context + i.rank) % count == index]
        with _progress(progress) as bar:
            task = bar.add_task(
                f"Jacobians, {self.settings.method} (shard {index}/{count})", total=len(items)
            )
            for item in items:
                result, sums = self.compute_item(item, covs)
                save_npz(self.item_path(*item.key), result)
                for name, (total, n) in sums.items():
                    state.sums[(self.pairs[item.pair].slug, name)].add(total, n)
                state.items.append(item.key)
                save_npz(path, state.arrays())
                bar.advance(task)
        return len(items)

    def compute_item(
        self, item: Item, covs: dict[str, StreamingCovariance]
    ) -> tuple[dict[str, np.ndarray], dict]:
        """The arrays of one item and its contribution to the sums (see channels.sweep.items)."""
        pair = self.pairs[item.pair]
        job = ItemInput(
            model=self.model,
            ids=self.blocks[item.context].to(self.device),
            pair=pair,
            context=item.context,
            target=item.target,
            sources=source_positions(
                item.target, self.length, self.causal[pair], self.settings.max_distance
            ),
            causal=self.causal[pair],
            settings=self.settings,
            chunk_size=self.chunk_size,
            cov_a=covs[pair.a].covariance(),
            width_b=self.widths[pair.b],
        )
        return ITEM_METHODS[self.settings.method](job)
