"""Load a Hugging Face transformer and its tokenizer for measurements, by hub name or local directory.

The base model is loaded (`AutoModel`: GPT2Model, BertModel, ...; heads are not needed to read the
residual stream) with eager attention, which autodiff through attention needs, in eval mode with
frozen parameters. `HF_HUB_OFFLINE` is honoured as Hugging Face reads it; a model that is neither
cached nor reachable becomes one `LTCError` line saying how to get it.

Tokenizer: the one saved with the model. A model without one (e.g. a directory written by
`model.save_pretrained` alone) falls back to byte-level ids: each UTF-8 byte of the text, modulo
the model's vocabulary size. Fine for measuring random or toy models, meaningless for trained ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lth.errors import LTCError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class LoadedModel:
    """A model ready for Jacobians, how to tokenise text for it, and its limits."""

    model: nn.Module
    encode: Callable[[str], list[int]]
    tokenizer: str  # "hf" (the model's own) or "bytes" (the fallback)
    max_positions: int | None
    n_layers: int
    width: int


def quiet_transformers() -> None:
    """Keep transformers' and the hub's warnings (e.g. each failed request) off the console: a
    failure reaches the user as one line (`_not_found`)."""
    import huggingface_hub
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()


def _not_found(name: str, exc: OSError) -> LTCError:
    """One line saying why `name` could not be loaded and how to get it."""
    from huggingface_hub import constants

    cause = " ".join(str(exc).split()).split(". ")[0][:200]  # its first sentence
    if Path(name).expanduser().is_dir():
        return LTCError(
            f"cannot load the model in directory {name!r} ({cause}): pass a directory "
            "written by save_pretrained (config.json plus weights)"
        )
    where = f"not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    reach = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub could not be reached"
    return LTCError(
        f"model {name!r} is {where} and {reach}: download it once with network "
        f"(`huggingface-cli download {name}`, or run this command online), point HF_HOME "
        f"at a cache that has it, or pass --model a local directory, e.g. the GPT trained here "
        f"(`ltc lm --config configs/gpt_text_train.yaml`, then --model runs/gpt_text/step-002000) ({cause})"
    )


def _max_positions(config) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _byte_encoder(vocab_size: int) -> Callable[[str], list[int]]:
    return lambda text: [byte % vocab_size for byte in text.encode("utf-8")]


def _hf_encoder(name: str, vocab_size: int) -> Callable[[str], list[int]] | None:
    """The model's own tokenizer, or None when it has none (transformers 5 then hands back one
    that knows only its special tokens)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        return None
    if len(tokenizer) > vocab_size:
        raise LTCError(
            f"the tokenizer of {name!r} has {len(tokenizer)} tokens but the model's "
            f"vocabulary has {vocab_size}: they do not belong together"
        )
    return lambda text: tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def load_model(name: str, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """The base model of `name` (hub name or local directory) on `device` in `dtype`, eval mode."""
    if dtype not in DTYPES:
        raise LTCError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    quiet_transformers()
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(name, attn_implementation="eager")
        model = AutoModel.from_pretrained(name, config=config)
    except OSError as exc:
        raise _not_found(name, exc) from exc
    except ValueError as exc:  # an unknown model_type: the architecture is not in this transformers
        raise LTCError(
            f"transformers cannot build {name!r}: {' '.join(str(exc).split())[:300]}"
        ) from exc
    model = model.to(device=torch.device(device), dtype=DTYPES[dtype]).eval().requires_grad_(False)
    vocab_size = int(config.vocab_size)
    encode = _hf_encoder(name, vocab_size)
    from channels.sites import transformer_blocks

    found = transformer_blocks(model)
    if found is None:
        raise LTCError(
            f"{name!r} ({type(model).__name__}) has no list of transformer blocks this "
            "framework knows (GPT-2, GPT-NeoX, Llama or BERT style)"
        )
    width = getattr(config, "hidden_size", None) or config.n_embd
    return LoadedModel(
        model,
        encode or _byte_encoder(vocab_size),
        "hf" if encode else "bytes",
        _max_positions(config),
        len(found[1]),
        int(width),
    )


def normalise_site(name: str, n_layers: int) -> str:
    """`resid_post.-1` -> `resid_post.11` for a 12-block model (other names unchanged)."""
    match = re.fullmatch(r"(\w+)\.(-?\d+)", name)
    if match is None or not -n_layers <= int(match.group(2)) < n_layers:
        return name
    return f"{match.group(1)}.{int(match.group(2)) % n_layers}"


def model_slug(name: str) -> str:
    """A short file-name-safe name of a model: the last path component of a hub name or directory."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name.rstrip("/")).name) or "model"
