"""The population of planted worlds that `ltc calibrate` reads: families x random instances.

Each instance draws its shape within stated ranges (`RANGES`: inputs, widths, depth, classes,
rank, label noise) and its family's knobs (busy units, unit scales, the `mixed` variant, the
narrow rank-1 channel, in a `mixed` world whose input selection gives IMP a ticket to find: a
dense channel alone at 8% of the weights is found as well by random masks), trains its student
with SGD or with Adam (alternating within a family),
and goes through one shared recipe (`configs/planted/population.yaml`: the same steps, prune
fraction, levels and branches for every world). The `dial` family is a fixed sweep of alpha.
Everything is drawn from `population_seed`: the default is a seed never used while the rules were
being written, so the reported confusion matrix reads fresh worlds.

Opt-in (drawn only when `families` names them, never in the default population): the planted
sequence families `sequence_subcircuit` and `sequence_channel` (`experiments.data.sequence_world`,
one route each), whose instances draw vocab, length, width and world_seed (`SEQUENCE_RANGES`)
and run their own recipe (`configs/planted/<family>.yaml`) instead of the shared one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from experiments.data.planted import MIXED_VARIANTS, WORLDS, Spec
from experiments.data.sequence_world import ROUTES, route_truths
from lth.pruning import select_prunable
from lth.seeds import derive_seed

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "planted"
POPULATION_RECIPE = RECIPES / "population.yaml"  # the shared recipe of the MLP worlds

# Fresh: never used while the rules and worlds were written. They were developed on population seeds
# 0..9, T0's error ratio on 20261202, T3's own-units check on 20261203, T1's power arm on 20261204, the
# unit loading on 20261205, the no_ticket scale and the sequence recipes' density on 20261206, the
# unclear T0, T3's same-shape null, the 90% counts and the normal init on 20261205-07, the dial's
# noise-aware reversal before 20261211, the unit-scale range and T1's one-draw variance on
# 20261209-12, T3's scale below its null on 20261213.
DEFAULT_POPULATION_SEED = 20261214
RANGES = {
    "in_features": (24, 32, 40, 48),
    "width": (32, 48, 64),
    "depth": (1, 2, 3),
    "later_width": (32, 48),
    "classes": (3, 4, 5, 6),
    "rank": (2, 3, 4, 5),
    "label_noise": (0.0, 0.05),  # uniform
    "busy": (0.5, 1.0),  # uniform: share of a circuit teacher's other units that are active
    "unit_scale": (0.0, 0.5),  # uniform: sigma of a dense teacher's lognormal unit scales; above ~0.7 an SGD
    # student reads the label through its high-scale units (a quarter of act.0's units carry 95% of the next layer's
    # use, experiments/scripts/unit_use.py; population 20261211), so "channels" is no longer true of the student
}
LEARNING_RATES = {"sgd": 0.05, "adam": 0.005}
PER_FAMILY = {"input_subcircuit": 4, "input_channel": 4, "hidden_subcircuit": 4, "hidden_channel": 4, "mixed": 4,
              "no_ticket": 2, "nothing_to_learn": 2}
DIAL = (0.0, 0.25, 0.5, 0.75, 1.0)
QUICK_DIAL = (0.0, 1.0)
SEQUENCE_PER_FAMILY = {f"sequence_{route}": 4 for route in ROUTES}  # opt-in: not in the default population
WEIGHTS_PER_SYMBOL = 8  # a sequence world's ticket regime: about 2.5x what the planted route needs (its V and O
# keep one weight per symbol each, its previous-token QK a few per position), far below what the route spread over
# the stream needs (a dense map on the route's vocab + length coordinates). At a fixed 1% of the weights, 16 symbols
# had 23 weights each and a ticket found in a rotated basis kept the lookup (0.99; population 20261207), while 24
# and 32 symbols had 12 each and it did not (0.63-0.85): the regime is counted per symbol, not as a fraction.
SEQUENCE_RANGES = {  # every draw fits: vocab + length <= width (the route), and the recipes' 4 heads divide the width
    "vocab": (16, 24, 32),
    "length": (6, 8, 10),
    "width": (48, 56, 64),
}


@dataclass(frozen=True)
class Instance:
    """One world instance: its name, family, spec, student and training choices."""

    name: str
    family: str
    spec: Spec
    hidden: tuple[int, ...]
    optimizer: str
    label_noise: float
    world_seed: int
    knobs: dict = field(default_factory=dict)

    @property
    def recipe(self) -> Path | None:
        """None: the MLP worlds run the shared recipe (`ltc calibrate --recipe`, `POPULATION_RECIPE`)."""
        return None

    @property
    def truths(self) -> dict[str, str]:
        return WORLDS[self.family].truths(self.spec)

    @property
    def verdict_truth(self) -> str:
        return WORLDS[self.family].verdict_truth(self.spec)

    def overrides(self) -> list[str]:
        """`ltc imp` flags that put this instance into the shared recipe."""
        s = self.spec
        data = {"world": self.family, "in_features": s.d, "width": s.width, "num_classes": s.classes, "rank": s.rank,
                "busy": s.busy, "unit_scale": s.unit_scale, "variant": s.variant, "alpha": s.alpha, "coords": s.coords,
                "label_noise": self.label_noise, "world_seed": self.world_seed}
        flags = [f"--data.init_args.{k}={v}" for k, v in data.items()]
        return flags + [f"--model.init_args.net.init_args.in_features={s.d}",
                        f"--model.init_args.net.init_args.hidden=[{', '.join(map(str, self.hidden))}]",
                        f"--model.init_args.net.init_args.num_classes={s.classes}",
                        f"--model.init_args.num_classes={s.classes}",
                        f"--model.init_args.optimizer={self.optimizer}",
                        f"--model.init_args.lr={LEARNING_RATES[self.optimizer]}",
                        f"--experiment=planted_{self.name}"]

    def describe(self) -> dict:
        return {"family": self.family, "d": self.spec.d, "width": self.spec.width, "hidden": list(self.hidden),
                "classes": self.spec.classes, "rank": self.spec.rank, "optimizer": self.optimizer,
                "label_noise": round(self.label_noise, 4), "world_seed": self.world_seed, **self.knobs}


@dataclass(frozen=True)
class SequenceInstance:
    """One planted sequence world: a one-layer `planted_gpt2` and its `SequenceWorldDataModule` on the
    family's route, trained with the family's own recipe (`configs/planted/<family>.yaml`).

    Truths: the route's picture at `resid_pre.0` and `resid_post.0`; `mlp_hidden.0` and `attn.0`
    plant nothing and are not scored (`sequence_world.route_truths`).

    Verdict truth: the route's picture, the sites' common truth as for an MLP world. The battery
    also reads the unplanted `mlp_hidden.0` and `attn.0`, so the verdict word can be driven by them
    (e.g. `mixed`: the route's picture at the stream beside whatever the MLP made of its neurons;
    one dense seed read T2 rho 0.74-0.78 at `mlp_hidden.0` in both worlds, docs/transformers.md).
    `instance_entry` scores such an instance as it scores an MLP world whose hidden layers are
    unplanted: right when both residual sites read their truth and the verdict is neither a
    precondition's nor inconclusive. The verdict truth only names the instance's row of the
    verdict's confusion matrix (where a `mixed` verdict, counted right, sits in the route's row).
    Not scoring the verdict is not on offer: `instance_entry` scores the sites and the verdict
    together, and an empty verdict truth would put the instance in a blank row.
    """

    name: str
    family: str
    vocab: int
    length: int
    width: int
    world_seed: int

    @property
    def route(self) -> str:
        return self.family.removeprefix("sequence_")

    @property
    def recipe(self) -> Path:
        """The family's own recipe, whose route, vocab, length, width and world_seed `overrides` replace."""
        return RECIPES / f"{self.family}.yaml"

    @property
    def truths(self) -> dict[str, str]:
        return route_truths(self.route)

    @property
    def verdict_truth(self) -> str:
        (truth,) = set(self.truths.values())
        return truth

    def world(self) -> dict:
        """The knobs the model and the data must share."""
        return {"route": self.route, "vocab": self.vocab, "length": self.length, "width": self.width,
                "world_seed": self.world_seed}

    @cached_property
    def levels(self) -> int:
        """IMP levels down to the world's ticket regime: the sparsest level of the recipe's prune
        fraction that leaves at least `WEIGHTS_PER_SYMBOL` of the weights IMP prunes per symbol."""
        # transformers is loaded only once a sequence world is run
        from experiments.models.gpt import planted_gpt2

        recipe = yaml.safe_load(self.recipe.read_text())
        imp = recipe["imp"]
        model = planted_gpt2(**{**recipe["model"]["init_args"]["net"]["init_args"], **self.world()})
        params = dict(model.named_parameters())
        prunable = sum(params[n].numel() for n in select_prunable(model, imp.get("include", ()), imp.get("ignore", ())))
        return int(np.floor(np.log(WEIGHTS_PER_SYMBOL * self.vocab / prunable) / np.log(1.0 - imp["prune_fraction"])))

    def overrides(self) -> list[str]:
        """`ltc imp` flags that put the model and the data on this world (the same knobs for both)
        and prune to its ticket regime (`levels`)."""
        world = self.world().items()
        return ([f"--model.init_args.net.init_args.{k}={v}" for k, v in world]
                + [f"--data.init_args.{k}={v}" for k, v in world]
                + [f"--imp.levels={self.levels}", f"--experiment=planted_{self.name}"])

    def describe(self) -> dict:
        """The instance's line in calibration.json (the optimizer as its recipe sets it)."""
        optimizer = yaml.safe_load(self.recipe.read_text())["model"]["init_args"]["optimizer"]
        return {"family": self.family, **self.world(), "levels": self.levels, "optimizer": optimizer}


WorldInstance = Instance | SequenceInstance


def draw_sequence_instance(family: str, index: int, population_seed: int) -> SequenceInstance:
    """Instance `index` of a sequence family, drawn from (population_seed, family, index)."""
    rng = np.random.default_rng(derive_seed(population_seed, family, index))
    vocab, length, width = (int(rng.choice(SEQUENCE_RANGES[k])) for k in ("vocab", "length", "width"))
    return SequenceInstance(f"{family}_{index}", family, vocab, length, width,
                            derive_seed(population_seed, family, index, "world"))


def draw_instance(family: str, index: int, population_seed: int, alpha: float | None = None) -> WorldInstance:
    """Instance `index` of `family`, drawn from (population_seed, family, index)."""
    if family in SEQUENCE_PER_FAMILY:
        return draw_sequence_instance(family, index, population_seed)
    rng = np.random.default_rng(derive_seed(population_seed, family, index))
    pick = lambda key: RANGES[key][int(rng.integers(len(RANGES[key])))]
    d, width, depth, classes, rank = (pick(k) for k in ("in_features", "width", "depth", "classes", "rank"))
    noise = float(rng.uniform(*RANGES["label_noise"]))
    knobs: dict = {}
    spec = {"d": d, "width": width, "classes": classes, "rank": rank}
    if family == "hidden_subcircuit" or family == "mixed":
        spec["busy"] = knobs["busy"] = round(float(rng.uniform(*RANGES["busy"])), 3)
    if family == "hidden_channel":
        spec["unit_scale"] = knobs["unit_scale"] = round(float(rng.uniform(*RANGES["unit_scale"])), 3)
    if family == "mixed":
        spec["variant"] = knobs["variant"] = MIXED_VARIANTS[index % len(MIXED_VARIANTS)]
        if index == 0:  # the narrow rank-1 channel: one latent of 3 input coordinates spread densely over
            spec.update(width=16, rank=1, coords=3, classes=6)  # 16 units, whose best few carry much of it
            knobs["narrow"] = True
    if family == "dial":
        spec["alpha"] = knobs["alpha"] = float(alpha)
    spec["rank"] = min(spec["rank"], spec["d"], spec["width"])
    hidden = (spec["width"], *(pick("later_width") for _ in range(depth - 1)))
    name = f"{family}_{index}" if alpha is None else f"dial_{round(100 * alpha):03d}"
    return Instance(name, family, Spec(**spec), hidden, ("sgd", "adam")[index % 2], noise,
                    derive_seed(population_seed, family, index, "world"), knobs)


def draw_population(population_seed: int, families: list[str] | None = None, quick: bool = False,
                    dial: bool = True, limit: int | None = None) -> list[WorldInstance]:
    """Every instance, round-robin: the first of each family and the dial's first alpha, then the
    second of each, ... (`PER_FAMILY` of a family, one with `quick`; the dial's ends first), so that
    the first `limit` instances are a balanced smaller population. The sequence families
    (`SEQUENCE_PER_FAMILY`) only when `families` names them."""
    chosen = families or list(PER_FAMILY)
    per_family = {**PER_FAMILY, **SEQUENCE_PER_FAMILY}
    counts = {f: 1 if quick else per_family[f] for f in chosen if f in per_family}
    alphas = sorted(QUICK_DIAL if quick else DIAL, key=lambda a: (a not in QUICK_DIAL, a))
    if not (dial and (families is None or "dial" in families)):
        alphas = []
    instances = []
    for i in range(max([*counts.values(), len(alphas)], default=0)):
        instances += [draw_instance(f, i, population_seed) for f, n in counts.items() if i < n]
        if i < len(alphas):
            instances.append(draw_instance("dial", 0, population_seed, alpha=alphas[i]))  # one world, moved
    return instances[:limit]
