"""Activation sites: where in a network to read, or overwrite, an activation.

A site is either a module's output by dotted path (``net.2``, ``features.0.conv``), the whole
network's ``input`` or ``output``, or, for Hugging Face transformers, a named place in block
``l`` of the model's block list:

- ``resid_pre.{l}``: the hidden states entering block l (the residual stream before it);
- ``resid_post.{l}``: the hidden states leaving block l (before any final norm);
- ``mlp_hidden.{l}``: the MLP's hidden activation after its nonlinearity, i.e. the input
  of the MLP's output projection;
- ``attn_out.{l}``: the attention sub-layer's output, before it joins the residual;
- ``attn.{l}``: the heads' outputs before the output projection (the input of GPT-2's
  ``attn.c_proj``, GPT-NeoX's ``attention.dense``, Llama's ``self_attn.o_proj``), shape
  (..., n_heads * d_head) with head h at ``[h * d_head, (h + 1) * d_head)``: the site of the
  attention heads as units (``channels.units``).

Negative ``l`` counts from the last block. Sites are read with forward hooks (`capture`,
`run_sites`) and overwritten with `replace`, so every measurement runs the model's own code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lth.errors import LTCError

# Where Hugging Face models keep their list of blocks, wrappers (LMHead, ForSequenceClassification)
# first, then the bare base models.
BLOCK_LISTS = (
    "transformer.h",  # GPT-2
    "gpt_neox.layers",  # GPT-NeoX / Pythia
    "model.layers",  # Llama-style
    "bert.encoder.layer",  # BERT-style
    "encoder.layer",
    "h",
    "layers",
)

# Per-block sites: (module path inside the block, take its input or output), first match wins.
BLOCK_SITES: dict[str, tuple[tuple[str, str], ...]] = {
    "resid_pre": (("", "input"),),
    "resid_post": (("", "output"),),
    "mlp_hidden": (
        ("mlp.c_proj", "input"),  # GPT-2
        ("mlp.dense_4h_to_h", "input"),  # GPT-NeoX
        ("mlp.down_proj", "input"),  # Llama
        ("output.dense", "input"),  # BERT
    ),
    "attn_out": (
        ("attention.output.dense", "output"),  # BERT: its BertSelfOutput adds the residual
        ("attn", "output"),  # GPT-2
        ("self_attn", "output"),  # Llama
        ("attention", "output"),  # GPT-NeoX
    ),
    "attn": (
        ("attn.c_proj", "input"),  # GPT-2
        ("attention.dense", "input"),  # GPT-NeoX
        ("self_attn.o_proj", "input"),  # Llama
        ("attention.output.dense", "input"),  # BERT
    ),
}

# The network's own input and output (when no submodule has these names): `input->output` is
# the Jacobian of the whole network, its Gram's eigenvectors live in input space.
ROOT_SITES: dict[str, Literal["input", "output"]] = {"input": "input", "output": "output"}

_NAMED_SITE = re.compile(r"^(" + "|".join(BLOCK_SITES) + r")\.(-?\d+)$")


@dataclass(frozen=True)
class Site:
    """Which module to hook, whether to take its input or output, and which tuple element.

    The input is the module's first positional argument (or its ``hidden_states`` keyword);
    when the value is a tuple, element ``index`` is the activation (None: it must be a tensor).
    """

    name: str
    module_path: str
    module: nn.Module = field(repr=False, compare=False)
    take: Literal["input", "output"] = "output"
    index: int | None = None

    def pick(self, value: Any) -> Tensor:
        """The site's tensor out of the hooked value."""
        if isinstance(value, (tuple, list)) and self.index is not None:
            value = value[self.index]
        if not isinstance(value, Tensor):
            raise LTCError(
                f"site {self.name!r} ({self.module_path or 'model'} {self.take}) is a "
                f"{type(value).__name__}, not a tensor; pick a submodule whose {self.take} is a tensor"
            )
        return value

    def put(self, value: Any, new: Tensor) -> Any:
        """The hooked value with the site's tensor swapped for ``new`` (same shape)."""
        old = self.pick(value)
        if new.shape != old.shape:
            raise LTCError(
                f"replacement for site {self.name!r} has shape {tuple(new.shape)}, "
                f"the activation has {tuple(old.shape)}"
            )
        if isinstance(value, Tensor):
            return new
        items = list(value)
        items[self.index] = new
        return type(value)(items) if isinstance(value, list) else tuple(items)


def _config_of(model: nn.Module) -> Any:
    """The Hugging Face config of a model, or None for a plain torch module."""
    config = getattr(model, "config", None)
    return config if hasattr(config, "model_type") else None


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """(path, block list) of a Hugging Face transformer; None for other models."""
    if _config_of(model) is None:
        return None
    for path in BLOCK_LISTS:
        try:
            blocks = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return path, blocks
    return None


def _block_site(block: nn.Module, kind: str) -> tuple[str, str] | None:
    """(relative module path, take) of site ``kind`` inside one block, or None if absent."""
    for path, take in BLOCK_SITES[kind]:
        try:
            block.get_submodule(path)
        except AttributeError:
            continue
        return path, take
    return None


def available_sites(model: nn.Module) -> list[str]:
    """Every site name of ``model``: the named transformer sites, then all module paths."""
    names = []
    found = transformer_blocks(model)
    if found is not None:
        _, blocks = found
        for kind in BLOCK_SITES:
            if _block_site(blocks[0], kind) is not None:
                names += [f"{kind}.{layer}" for layer in range(len(blocks))]
    return names + list(ROOT_SITES) + [path for path, _ in model.named_modules() if path]


def _summarise(names: list[str], limit: int = 24) -> str:
    """A short listing: named families folded to ``resid_pre.{0..11}``, then up to ``limit``."""
    families: dict[str, list[int]] = {}
    paths = []
    for name in names:
        match = _NAMED_SITE.match(name)
        if match:
            families.setdefault(match.group(1), []).append(int(match.group(2)))
        else:
            paths.append(name)
    shown = [f"{kind}.{{{min(ls)}..{max(ls)}}}" for kind, ls in families.items()] + paths
    more = f", ... ({len(shown) - limit} more, see channels.sites.available_sites)"
    return ", ".join(shown[:limit]) + (more if len(shown) > limit else "")


def resolve_site(model: nn.Module, name: str | Site) -> Site:
    """The `Site` behind a name; an unknown name raises LTCError listing the available ones."""
    if isinstance(name, Site):
        return name
    match = _NAMED_SITE.match(name)
    found = transformer_blocks(model)
    if match and found is not None:
        kind, layer = match.group(1), int(match.group(2))
        blocks_path, blocks = found
        if not -len(blocks) <= layer < len(blocks):
            raise LTCError(
                f"site {name!r}: layer {layer} out of range, the model has {len(blocks)} blocks "
                f"(use 0..{len(blocks) - 1} or negative indices)"
            )
        layer %= len(blocks)
        inner = _block_site(blocks[layer], kind)
        if inner is not None:
            path, take = inner
            module_path = ".".join(p for p in (blocks_path, str(layer), path) if p)
            return Site(name, module_path, model.get_submodule(module_path), take, index=0)
    elif not match:
        try:
            return Site(name, name, model.get_submodule(name))
        except AttributeError:
            if name in ROOT_SITES:
                return Site(name, "", model, ROOT_SITES[name])
    raise LTCError(f"unknown site {name!r}; available sites: {_summarise(available_sites(model))}")


def resolve_sites(model: nn.Module, names: Sequence[str | Site]) -> list[Site]:
    """`resolve_site` for each name."""
    return [resolve_site(model, name) for name in names]


def _input_value(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs.get("hidden_states")


def _hook(site: Site, on_value: Callable[[Any], Any]) -> torch.utils.hooks.RemovableHandle:
    """Register a hook calling ``on_value(value)`` on the site's input or output; a non-None
    return value replaces it."""
    if site.take == "output":
        return site.module.register_forward_hook(lambda module, args, output: on_value(output))

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        new = on_value(_input_value(args, kwargs))
        if new is None:
            return None
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}

    return site.module.register_forward_pre_hook(pre_hook, with_kwargs=True)


class _SitesCaptured(Exception):
    """Raised by `capture(stop=True)` hooks to end a forward pass once every site is read."""


@contextmanager
def capture(
    model: nn.Module, sites: Sequence[str | Site], keep_graph: bool = False, stop: bool = False
) -> Iterator[dict[str, Tensor]]:
    """Record each site's activation during forward passes run inside the block.

    Yields a dict site name -> the latest activation, detached unless ``keep_graph`` (then
    gradients can flow from, and to, it). With ``stop=True`` the forward pass ends as soon as
    every site is recorded (the layers after them are skipped) and the block exits quietly at
    that point. Hooks are removed on exit, also on exceptions.
    """
    resolved = resolve_sites(model, sites)
    records: dict[str, Tensor] = {}

    def recorder(site: Site) -> Callable[[Any], None]:
        def record(value: Any) -> None:
            tensor = site.pick(value)
            records[site.name] = tensor if keep_graph else tensor.detach()
            if stop and len(records) == len(resolved):
                raise _SitesCaptured

        return record

    handles = [_hook(site, recorder(site)) for site in resolved]
    try:
        yield records
    except _SitesCaptured:
        pass
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def replace(
    model: nn.Module, site: str | Site, value: Tensor | Callable[[Tensor], Tensor]
) -> Iterator[Site]:
    """Run forward passes inside the block with the activation at ``site`` replaced by ``value``
    (a tensor, or a function of the original activation).

    The replacement feeds through the model's own code (for ``resid_pre`` it becomes the
    block's input), so autograd and torch.func see later sites as functions of ``value``.
    """
    resolved = resolve_site(model, site)
    make = value if callable(value) else lambda old: value
    handle = _hook(resolved, lambda old: resolved.put(old, make(resolved.pick(old))))
    try:
        yield resolved
    finally:
        handle.remove()


def call_model(model: nn.Module, inputs: Tensor | Mapping[str, Any] | tuple) -> Any:
    """``model(inputs)``, ``model(**inputs)`` for a mapping, ``model(*inputs)`` for a tuple."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def run_sites(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Any] | tuple,
    sites: Sequence[str | Site],
    keep_graph: bool = False,
) -> dict[str, Tensor]:
    """One forward pass, stopped once every site is recorded; returns site name -> activation."""
    with capture(model, sites, keep_graph=keep_graph, stop=True) as records:
        call_model(model, inputs)
    missing = [
        name
        for name in (s.name if isinstance(s, Site) else s for s in sites)
        if name not in records
    ]
    if missing:
        raise LTCError(f"sites {missing} were not reached by the forward pass")
    return records


def site_function(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Any] | tuple,
    site_a: str | Site,
    site_b: str | Site,
) -> Callable[[Tensor], Tensor]:
    """f(a) = the activation at ``site_b`` when the activation at ``site_a`` is set to ``a``.

    A pure function of ``a`` for fixed inputs (model in eval mode), usable with
    torch.autograd.functional and torch.func.
    """
    a, b = resolve_site(model, site_a), resolve_site(model, site_b)

    def f(value: Tensor) -> Tensor:
        with replace(model, a, value):
            return run_sites(model, inputs, [b], keep_graph=True)[b.name]

    return f
