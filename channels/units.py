"""Units of a network, from one owner: which weights belong to each unit at a site, how much of a
unit a mask keeps, relabelling and rescaling units, and aligning the units of two networks by their
weights (`weight_matching`; hidden units are only defined up to a permutation).

A `UnitLayout` says, for a site (named as `channels.sites` resolves it): how many units it has,
how many activation dimensions each unit spans (1 for neurons, channels and coordinates, d_head
for heads), where the units sit in the activation (`act_axis`), the parameter regions that index
each unit (`lth.reparam.Slot`: tensor, axis, block, offset, stride, role), and whether positive
per-unit rescaling is a symmetry of the function. The layouts known:

| model | site | unit | rescaling a symmetry |
|---|---|---|---|
| the project's MLP | `act.i` | row i of `hidden.i` (+ bias), column of the next layer | if ReLU |
| LeNet-300-100, Conv-N | `fcs.i` | row of `fcs.i` (+ bias), column of the next layer | yes (ReLU) |
| Conv-N | `convs.i` | output channel of `convs.i` (+ bias), input channel of the next conv, or its H*W columns of `fcs.0` | yes (ReLU) |
| VGG-16 | `bns.i` | channel of `convs.i`, `bns.i` (+ running statistics), input channel of the next conv or `out` | yes (ReLU) |
| ResNet-20 | `stages.s.b.bn1` | the block's inner channel: conv1, bn1, conv2's input | yes (ReLU) |
| GPT-2, GPT-NeoX, Llama | `mlp_hidden.l` | an MLP neuron: up-projection row (+ the gate's for Llama), down-projection column | ReLU MLPs; always for Llama (up row x s, down column / s) |
| GPT-2, GPT-NeoX, Llama | `attn.l` | a head: its q, k, v slices and its slice of the output projection (Llama with grouped queries: a key-value group) | yes: v x s, output slice / s |
| GPT-2, GPT-NeoX, Llama | `resid_pre.l`, `resid_post.l` | a residual coordinate: every tensor that reads or writes the stream, norm gains and biases | no (norms couple coordinates) |

Heads have a larger symmetry than rescaling (any invertible d_head x d_head map on v, undone on the
output slice); residual coordinates admit rotations once the norms are folded (`lth.rotation`).
The residual layouts of every l name the same coordinates of one stream: permuting them permutes
all of them together (`weight_matching` aligns them once).

A model no layout knows gets `unknown_units(net)`: one line naming it and the unit-level tests
that cannot run on it.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from channels.sites import transformer_blocks
from lth.errors import LTCError
from lth.folding import family, fold_norms
from lth.reparam import CARRIED, IN, OUT, Slot, permute_slots, rescale_slots

NEURON, CHANNEL, HEAD, RESIDUAL = "neuron", "channel", "head", "residual"
UNIT_TESTS = "T3 (ablation of the ticket's units), T4 (unit alignment search) and T5 (weight matching across seeds)"
UNKNOWN = "no unit layout is known for this model"
KNOWN_MODELS = ("the project's MLP, LeNet-300-100, Conv-2/4/6, VGG-16, ResNet-20 (block channels), "
                "GPT-2, GPT-NeoX and Llama-style transformers")


@dataclass(frozen=True)
class UnitLayout:
    """The units of one site: see the module docstring. `n_units` None: as many as the first
    slot's axis holds (the name-only MLP layout, `mlp_unit_layout`)."""

    site: str
    kind: str
    slots: tuple[Slot, ...]
    rescalable: bool
    n_units: int | None = None
    unit_dims: int = 1
    act_axis: int = -1

    @property
    def tensors(self) -> list[str]:
        """The parameter names the units index, each once, in slot order."""
        return list(dict.fromkeys(slot.name for slot in self.slots))

    def count(self, tensors: Mapping[str, torch.Tensor]) -> int:
        """The number of units (from the tensors when the layout does not say)."""
        if self.n_units is not None:
            return self.n_units
        first = next((s for s in self.slots if s.name in tensors), None)
        if first is None:
            raise LTCError(f"none of the tensors of site {self.site!r} ({self.tensors}) are given")
        return (tensors[first.name].shape[first.axis] - first.offset) // first.step


# ---- layouts of plain torch networks ---------------------------------------------------------

def _linear_chain(prefix: str, layers: nn.ModuleList, out: str, site: str, rescalable: Sequence[bool],
                  kind: str = NEURON) -> list[UnitLayout]:
    """Layouts of hidden linear layers `prefix.i` followed by `prefix.{i+1}` or `out`."""
    found = []
    for i, layer in enumerate(layers):
        reader = f"{prefix}.{i + 1}" if i + 1 < len(layers) else out
        slots = [Slot(f"{prefix}.{i}.weight", 0, role=IN), Slot(f"{reader}.weight", 1, role=OUT)]
        if layer.bias is not None:
            slots.insert(1, Slot(f"{prefix}.{i}.bias", 0, role=IN))
        found.append(UnitLayout(site.format(i=i), kind, tuple(slots), rescalable[i], layer.out_features))
    return found


def _mlp_layouts(net: nn.Module) -> list[UnitLayout] | None:
    """The project's MLP (`experiments.models.mlp.MLP`): hidden.i -> act.i -> ... -> out."""
    hidden, acts, out = (getattr(net, n, None) for n in ("hidden", "act", "out"))
    if not (isinstance(hidden, nn.ModuleList) and isinstance(acts, nn.ModuleList) and isinstance(out, nn.Linear)
            and all(isinstance(m, nn.Linear) for m in hidden) and len(acts) == len(hidden)):
        return None
    return _linear_chain("hidden", hidden, "out", "act.{i}", [isinstance(a, nn.ReLU) for a in acts])


def _conv_channel_layouts(net: nn.Module) -> list[UnitLayout]:
    """Conv-N's convolutions `convs.i` (bias, ReLU, no norm): output channels."""
    convs = net.convs
    found = []
    for i, conv in enumerate(convs):
        slots = [Slot(f"convs.{i}.weight", 0, role=IN), Slot(f"convs.{i}.bias", 0, role=IN)]
        if i + 1 < len(convs):
            slots.append(Slot(f"convs.{i + 1}.weight", 1, role=OUT))
        else:  # flattened channel-major into fcs.0: channel c owns H*W consecutive columns
            slots.append(Slot("fcs.0.weight", 1, block=net.fcs[0].in_features // conv.out_channels, role=OUT))
        found.append(UnitLayout(f"convs.{i}", CHANNEL, tuple(slots), True, conv.out_channels, act_axis=1))
    return found


def _batchnorm_slots(bn: str) -> list[Slot]:
    return [Slot(f"{bn}.weight", 0, role=IN), Slot(f"{bn}.bias", 0, role=IN),
            Slot(f"{bn}.running_mean", 0, role=CARRIED), Slot(f"{bn}.running_var", 0, role=CARRIED)]


def _vgg_layouts(net: nn.Module) -> list[UnitLayout]:
    """VGG-16: conv -> BatchNorm -> ReLU; the site is the BatchNorm's output `bns.i`. The conv's
    output channel is carried (BatchNorm undoes its scale), the BatchNorm's affine is the unit's
    incoming scale."""
    found = []
    for i, conv in enumerate(net.convs):
        reader = Slot(f"convs.{i + 1}.weight", 1, role=OUT) if i + 1 < len(net.convs) else Slot("out.weight", 1, role=OUT)
        slots = (Slot(f"convs.{i}.weight", 0, role=CARRIED), *_batchnorm_slots(f"bns.{i}"), reader)
        found.append(UnitLayout(f"bns.{i}", CHANNEL, slots, True, conv.out_channels, act_axis=1))
    return found


def _resnet_layouts(net: nn.Module) -> list[UnitLayout]:
    """ResNet-20: each basic block's inner channels (conv1 -> bn1 -> ReLU -> conv2), at `...bn1`.
    The channels of the residual path are tied across blocks by the shortcuts and are not laid out."""
    found = []
    for s, stage in enumerate(net.stages):
        for b, block in enumerate(stage):
            p = f"stages.{s}.{b}"
            slots = (Slot(f"{p}.conv1.weight", 0, role=CARRIED), *_batchnorm_slots(f"{p}.bn1"),
                     Slot(f"{p}.conv2.weight", 1, role=OUT))
            found.append(UnitLayout(f"{p}.bn1", CHANNEL, slots, True, block.conv1.out_channels, act_axis=1))
    return found


def _vision_layouts(net: nn.Module) -> list[UnitLayout] | None:
    """The benchmark networks of `experiments.models.vision`, recognised by class name (their
    ReLUs are functional calls, invisible in the module tree)."""
    name = type(net).__name__
    if name == "LeNet300100":
        return _linear_chain("fcs", net.fcs, "out", "fcs.{i}", [True] * len(net.fcs))
    if name in ("Conv2", "Conv4", "Conv6", "ConvNet"):
        return _conv_channel_layouts(net) + _linear_chain("fcs", net.fcs, "out", "fcs.{i}", [True] * len(net.fcs))
    if name == "VGG16":
        return _vgg_layouts(net)
    if name == "ResNet20":
        return _resnet_layouts(net)
    return None


# ---- layouts of transformers -------------------------------------------------------------------

@dataclass(frozen=True)
class _Shape:
    """The sizes and parameter-name prefixes of a transformer."""

    family: str
    layers: int
    width: int
    heads: int
    head_dim: int
    kv_heads: int
    base: str        # prefix of the base model's parameters ("transformer." or "")
    blocks: str      # prefix of block l's parameters, with {l}
    unembed: str | None  # the unembedding's weight name, None for a base model


def _module_name(net: nn.Module, module: nn.Module | None) -> str | None:
    if module is None:
        return None
    return next((name for name, m in net.named_modules() if m is module), None)


def _transformer_shape(net: nn.Module) -> _Shape | None:
    fam = family(net)
    found = transformer_blocks(net)
    if fam is None or found is None:
        return None
    config = net.config
    blocks_path, blocks = found
    base = _module_name(net, net.base_model) or ""
    width = int(getattr(config, "n_embd", None) or config.hidden_size)
    heads = int(getattr(config, "n_head", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or width // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    unembed = _module_name(net, net.get_output_embeddings()) if hasattr(net, "get_output_embeddings") else None
    return _Shape(fam, len(blocks), width, heads, head_dim, kv_heads, f"{base}." if base else "",
                  f"{blocks_path}.{{l}}.", f"{unembed}.weight" if unembed else None)


def _param_names(net: nn.Module) -> set[str]:
    return {name for name, _ in net.named_parameters(remove_duplicate=False)} | {n for n, _ in net.named_buffers()}


def _transformer_mlp(shape: _Shape, l: int, config, names: set[str]) -> UnitLayout:
    b = shape.blocks.format(l=l)
    if shape.family == "gpt2":  # Conv1D: weight is (in, out)
        slots = [Slot(f"{b}mlp.c_fc.weight", 1, role=IN), Slot(f"{b}mlp.c_fc.bias", 0, role=IN),
                 Slot(f"{b}mlp.c_proj.weight", 0, role=OUT)]
        n, rescalable = config.n_inner or 4 * shape.width, config.activation_function == "relu"
    elif shape.family == "gpt_neox":
        slots = [Slot(f"{b}mlp.dense_h_to_4h.weight", 0, role=IN), Slot(f"{b}mlp.dense_h_to_4h.bias", 0, role=IN),
                 Slot(f"{b}mlp.dense_4h_to_h.weight", 1, role=OUT)]
        n, rescalable = config.intermediate_size, config.hidden_act == "relu"
    else:  # Llama: down(act(gate x) * up x): the up row scales the neuron, the gate's does not
        slots = [Slot(f"{b}mlp.gate_proj.weight", 0, role=CARRIED), Slot(f"{b}mlp.gate_proj.bias", 0, role=CARRIED),
                 Slot(f"{b}mlp.up_proj.weight", 0, role=IN), Slot(f"{b}mlp.up_proj.bias", 0, role=IN),
                 Slot(f"{b}mlp.down_proj.weight", 1, role=OUT)]
        n, rescalable = config.intermediate_size, True
    return UnitLayout(f"mlp_hidden.{l}", NEURON, tuple(s for s in slots if s.name in names), rescalable, int(n))


def _transformer_heads(shape: _Shape, l: int, names: set[str]) -> UnitLayout:
    b, d, dh = shape.blocks.format(l=l), shape.width, shape.head_dim
    if shape.family == "gpt2":  # c_attn (in, 3d): q | k | v column blocks; c_proj (d, d): head rows
        qkv = [(f"{b}attn.c_attn.{p}", 1 if p == "weight" else 0) for p in ("weight", "bias")]
        slots = [Slot(name, axis, dh, offset, role=role) for name, axis in qkv
                 for offset, role in ((0, CARRIED), (d, CARRIED), (2 * d, IN))]
        slots.append(Slot(f"{b}attn.c_proj.weight", 0, dh, role=OUT))
        return UnitLayout(f"attn.{l}", HEAD, tuple(s for s in slots if s.name in names), True, shape.heads, dh)
    if shape.family == "gpt_neox":  # query_key_value rows: head h holds [q | k | v] of d_head each
        qkv = [f"{b}attention.query_key_value.{p}" for p in ("weight", "bias")]
        slots = [Slot(name, 0, dh, offset, 3 * dh, role) for name in qkv
                 for offset, role in ((0, CARRIED), (dh, CARRIED), (2 * dh, IN))]
        slots.append(Slot(f"{b}attention.dense.weight", 1, dh, role=OUT))
        return UnitLayout(f"attn.{l}", HEAD, tuple(s for s in slots if s.name in names), True, shape.heads, dh)
    # Llama: query heads g*rep .. (g+1)*rep - 1 share key-value head g; the unit is the group
    rep = shape.heads // shape.kv_heads
    slots = []
    for p, axis in (("weight", 0), ("bias", 0)):
        slots += [Slot(f"{b}self_attn.q_proj.{p}", axis, rep * dh, role=CARRIED),
                  Slot(f"{b}self_attn.k_proj.{p}", axis, dh, role=CARRIED),
                  Slot(f"{b}self_attn.v_proj.{p}", axis, dh, role=IN)]
    slots.append(Slot(f"{b}self_attn.o_proj.weight", 1, rep * dh, role=OUT))
    return UnitLayout(f"attn.{l}", HEAD, tuple(s for s in slots if s.name in names), True, shape.kv_heads, rep * dh)


# family -> (embeddings, per-block (parameter, axis, role), final norm); names relative to base / block
_RESIDUAL = {
    "gpt2": (("wte.weight", "wpe.weight"),
             (("ln_1.weight", 0, CARRIED), ("ln_1.bias", 0, IN), ("attn.c_attn.weight", 0, OUT),
              ("attn.c_proj.weight", 1, IN), ("attn.c_proj.bias", 0, IN),
              ("ln_2.weight", 0, CARRIED), ("ln_2.bias", 0, IN), ("mlp.c_fc.weight", 0, OUT),
              ("mlp.c_proj.weight", 1, IN), ("mlp.c_proj.bias", 0, IN)),
             "ln_f"),
    "gpt_neox": (("embed_in.weight",),
                 (("input_layernorm.weight", 0, CARRIED), ("input_layernorm.bias", 0, IN),
                  ("attention.query_key_value.weight", 1, OUT),
                  ("attention.dense.weight", 0, IN), ("attention.dense.bias", 0, IN),
                  ("post_attention_layernorm.weight", 0, CARRIED), ("post_attention_layernorm.bias", 0, IN),
                  ("mlp.dense_h_to_4h.weight", 1, OUT),
                  ("mlp.dense_4h_to_h.weight", 0, IN), ("mlp.dense_4h_to_h.bias", 0, IN)),
                 "final_layer_norm"),
    "llama": (("embed_tokens.weight",),
              (("input_layernorm.weight", 0, CARRIED), ("self_attn.q_proj.weight", 1, OUT),
               ("self_attn.k_proj.weight", 1, OUT), ("self_attn.v_proj.weight", 1, OUT),
               ("self_attn.o_proj.weight", 0, IN), ("self_attn.o_proj.bias", 0, IN),
               ("post_attention_layernorm.weight", 0, CARRIED), ("mlp.gate_proj.weight", 1, OUT),
               ("mlp.up_proj.weight", 1, OUT), ("mlp.down_proj.weight", 0, IN), ("mlp.down_proj.bias", 0, IN)),
              "norm"),
}


def _residual_slots(shape: _Shape, names: set[str]) -> tuple[Slot, ...]:
    embeddings, per_block, final = _RESIDUAL[shape.family]
    slots = [Slot(f"{shape.base}{e}", 1, role=IN) for e in embeddings]
    for l in range(shape.layers):
        slots += [Slot(shape.blocks.format(l=l) + p, axis, role=role) for p, axis, role in per_block]
    slots += [Slot(f"{shape.base}{final}.weight", 0, role=CARRIED), Slot(f"{shape.base}{final}.bias", 0, role=IN)]
    if shape.unembed:
        slots.append(Slot(shape.unembed, 1, role=OUT))
    return tuple(s for s in slots if s.name in names)


def _transformer_layouts(net: nn.Module) -> list[UnitLayout] | None:
    shape = _transformer_shape(net)
    if shape is None:
        return None
    names = _param_names(net)
    residual = _residual_slots(shape, names)
    found = []
    for l in range(shape.layers):
        found += [_transformer_mlp(shape, l, net.config, names), _transformer_heads(shape, l, names)]
        found += [UnitLayout(f"{kind}.{l}", RESIDUAL, residual, False, shape.width) for kind in ("resid_pre", "resid_post")]
    return found


# ---- what a model has ---------------------------------------------------------------------------

def unit_layouts(net: nn.Module) -> list[UnitLayout]:
    """Every unit layout of `net` (see the module docstring); [] for a model none is known for."""
    for builder in (_transformer_layouts, _mlp_layouts, _vision_layouts):
        found = builder(net)
        if found is not None:
            return found
    return []


def layout_for(net: nn.Module, site: str) -> UnitLayout | None:
    """The layout of one site of `net` (None where the site has no units known)."""
    return next((layout for layout in unit_layouts(net) if layout.site == site), None)


def residual_layout(net: nn.Module) -> UnitLayout:
    """The residual coordinates of a GPT-2, GPT-NeoX or Llama model (every tensor reading or
    writing the stream); one LTCError line for other models."""
    layout = layout_for(net, "resid_pre.0")
    if layout is None:
        raise LTCError(f"{type(net).__name__} has no residual stream this framework knows ({KNOWN_MODELS})")
    return layout


def unknown_units(net: nn.Module) -> str | None:
    """One line for a model without unit layouts: its name and the tests that cannot run; None
    when layouts are known."""
    if unit_layouts(net):
        return None
    return (f"{type(net).__name__}: {UNKNOWN}, so {UNIT_TESTS} cannot run "
            f"(known: {KNOWN_MODELS}; add one in channels/units.py)")


_MLP_SITE = re.compile(r"^act\.(\d+)$")


def mlp_unit_layout(names: Iterable[str], site: str) -> UnitLayout | None:
    """The layout of the project's MLP site `act.i` from parameter names alone (what a run
    directory's mask holds); None when the names are no such MLP. Its unit count comes from the
    tensors it is used with; whether rescaling is a symmetry needs the net (`unit_layouts`)."""
    names = set(names)
    match = _MLP_SITE.match(site)
    if not match:
        return None
    i = int(match.group(1))
    writer = f"hidden.{i}.weight"
    reader = f"hidden.{i + 1}.weight" if f"hidden.{i + 1}.weight" in names else "out.weight"
    if writer not in names or reader not in names:
        return None
    slots = [Slot(writer, 0, role=IN), Slot(reader, 1, role=OUT)]
    if f"hidden.{i}.bias" in names:
        slots.insert(1, Slot(f"hidden.{i}.bias", 0, role=IN))
    return UnitLayout(site, NEURON, tuple(slots), rescalable=False)


# ---- operations on units -------------------------------------------------------------------------

def unit_keep_fraction(mask: Mapping[str, torch.Tensor], layout: UnitLayout) -> np.ndarray:
    """u_j = kept / total over the entries of unit j that the mask covers (all its slots)."""
    n = layout.count(mask)
    kept = total = None
    for slot in layout.slots:
        if slot.name not in mask:
            continue
        rows = slot.rows(mask[slot.name], n).double()
        kept = rows.sum(1) if kept is None else kept + rows.sum(1)
        total = rows.shape[1] if total is None else total + rows.shape[1]
    if kept is None:
        raise ValueError(f"the mask covers none of the layout's tensors {layout.tensors}")
    return (kept / total).numpy()


def permute_units(tensors: Mapping[str, torch.Tensor], layout: UnitLayout, perm: Sequence[int]) -> dict[str, torch.Tensor]:
    """Relabel the units of `layout`: new unit j is old unit perm[j] (a state dict: the function is
    unchanged; a mask: it follows its weights). Other tensors unchanged."""
    return permute_slots(tensors, layout.slots, perm)


def rescale_units(tensors: Mapping[str, torch.Tensor], layout: UnitLayout, scales: Sequence[float]) -> dict[str, torch.Tensor]:
    """Unit j's incoming weights times scales[j] > 0, its outgoing weights divided by it: the same
    function where the layout says rescaling is a symmetry (refused elsewhere)."""
    if not layout.rescalable:
        raise LTCError(f"rescaling the units of {layout.site} ({layout.kind}s) changes the function: "
                       "it is a symmetry only of positively homogeneous units")
    return rescale_slots(tensors, layout.slots, scales)


def weight_matching(weights_a: Mapping[str, torch.Tensor], weights_b: Mapping[str, torch.Tensor],
                    layouts: Sequence[UnitLayout], sweeps: int = 5) -> list[np.ndarray]:
    """Permutations of network b's units that best match network a's weights (Ainsworth et al.
    2023): for each layout, maximise sum over its slots of <unit j of a, unit perm[j] of b> (whole
    blocks: a head's q, k, v and output slices together) by the Hungarian algorithm, one layout at
    a time with the others fixed, for a few sweeps. Layouts naming the same slots (the residual
    stream at several sites) share one permutation. Returns one perm per layout (new unit j of b is
    old unit perm[j])."""
    groups: dict[tuple[Slot, ...], int] = {}
    group_of = [groups.setdefault(layout.slots, len(groups)) for layout in layouts]
    unique = [layouts[group_of.index(g)] for g in range(len(groups))]
    perms = [np.arange(layout.count(weights_a)) for layout in unique]

    def permuted_b(skip: int) -> Mapping[str, torch.Tensor]:
        out = weights_b
        for g, (layout, perm) in enumerate(zip(unique, perms)):
            if g != skip:
                out = permute_units(out, layout, perm)
        return out

    for _ in range(sweeps):
        changed = False
        for g, layout in enumerate(unique):
            n, current = len(perms[g]), permuted_b(g)
            cost = np.zeros((n, n))
            for slot in layout.slots:
                if slot.name in weights_a and slot.name in current:
                    a, b = slot.rows(weights_a[slot.name], n).double(), slot.rows(current[slot.name], n).double()
                    cost += (a @ b.T).numpy()
            rows, cols = linear_sum_assignment(-cost)
            new = np.empty(n, dtype=np.int64)
            new[rows] = cols
            changed |= not np.array_equal(new, perms[g])
            perms[g] = new
        if not changed:
            break
    return [perms[g] for g in group_of]


def symmetry_draws(net: nn.Module, seed: int, sigma: float = 1.0) -> list[tuple[UnitLayout, np.ndarray, np.ndarray | None]]:
    """Random symmetries of `net`'s units: per layout (the residual stream once) a permutation and,
    where rescaling is a symmetry, factors s_j ~ lognormal(0, sigma) (None elsewhere)."""
    rng = np.random.default_rng(seed)
    draws, done = [], set()
    for layout in unit_layouts(net):
        if layout.slots in done:
            continue
        done.add(layout.slots)
        perm = rng.permutation(layout.n_units)
        scales = np.exp(rng.normal(0.0, sigma, layout.n_units)) if layout.rescalable else None
        draws.append((layout, perm, scales))
    return draws


def reparametrise(net: nn.Module, seed: int, sigma: float = 1.0) -> nn.Module:
    """A copy of `net` computing the same function in other parameters: transformer norms folded
    into the next weights, every layout's units permuted at random (the residual stream once),
    then every rescalable layout's units rescaled by s_j ~ lognormal(0, sigma) (`symmetry_draws`).
    What a statistic that claims these invariances must give the same answer on."""
    out = copy.deepcopy(net)
    if family(out) is not None:
        fold_norms(out)
    state = {k: v.clone() for k, v in out.state_dict().items()}
    for layout, perm, scales in symmetry_draws(out, seed, sigma):
        state = permute_units(state, layout, perm)
        if scales is not None:
            state = rescale_units(state, layout, scales)
    out.load_state_dict(state)
    return out


def permute_like(tensors: Mapping[str, torch.Tensor], net: nn.Module, seed: int, sigma: float = 1.0) -> dict[str, torch.Tensor]:
    """`tensors` named like `net`'s parameters (a mask) with their units permuted as
    `reparametrise(net, seed, sigma)` permutes them: the mask of the reparametrised network."""
    out = dict(tensors)
    for layout, perm, _ in symmetry_draws(net, seed, sigma):
        out = permute_units(out, layout, perm)
    return out
