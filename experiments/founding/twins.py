"""Randomised twins of a trained model: its architecture with what training built destroyed.

- `init`: the same network at initialisation, i.e. the training's own step-0 checkpoint (not built
  here: `experiments.founding.training` takes it from the checkpoint folder);
- `permuted`: every weight matrix (each parameter with two or more dimensions: attention and MLP
  projections, token and position embeddings) has its entries permuted uniformly at random, seeded
  by (seed, parameter name). Each matrix keeps its multiset of entries (its distribution of weight
  magnitudes, norm, mean, kurtosis) while the arrangement training made (rows, columns, their
  alignment across layers) is gone; vectors (biases, LayerNorm gains) stay as trained, and tied
  parameters stay tied (each is permuted once).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from experiments.models.hf import quiet_transformers
from lth.errors import LTCError
from lth.seeds import generator

TWIN_INFO = "twin.json"


@torch.no_grad()
def permute_matrices(model: nn.Module, seed: int) -> list[str]:
    """Permute the entries of every parameter with >= 2 dimensions in place; returns their names."""
    names = []
    for name, param in model.named_parameters():  # shared (tied) parameters are listed once
        if param.dim() < 2:
            continue
        order = torch.randperm(param.numel(), generator=generator("permuted-twin", seed, name))
        param.copy_(param.flatten()[order.to(param.device)].view_as(param))
        names.append(name)
    return names


def save_permuted_twin(source: Path, target: Path, seed: int = 0) -> Path:
    """The permuted twin of the Hugging Face model in `source`, saved (with its tokenizer) in `target`.

    Written to a temporary folder and renamed, `twin.json` (source, seed, permuted matrices) last;
    an existing finished twin is kept.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    if (target / TWIN_INFO).is_file():
        return target
    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(source)
    except ValueError:  # not a causal LM (an encoder): its base model
        model = AutoModel.from_pretrained(source)
    except OSError as exc:
        raise LTCError(f"cannot load {source} to build its permuted twin: {' '.join(str(exc).split())[:200]}") from exc
    names = permute_matrices(model, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        try:
            AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
        except (OSError, ValueError, TypeError, KeyError):
            pass  # no tokenizer saved with the source: the twin reads bytes as the source does
        (tmp / TWIN_INFO).write_text(json.dumps({"kind": "permuted", "source": str(source), "seed": seed,
                                                 "permuted": names}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
