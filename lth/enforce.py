"""Keep pruned weights at exactly zero during training, with plain tensors (no re-parametrisation).

Pruned weights are zeroed once at the start of fit; after that, zeroing the gradients of pruned
entries before each optimiser step (one fused multiply) keeps them at exactly zero through SGD
(momentum, weight decay: buffers stay 0 because grad and weight are 0) and Adam/AdamW (moments
stay 0, so the update 0 / (sqrt(0) + eps) is 0; decoupled decay scales 0 to 0). Tests check
weights, grads and moment buffers after every step. An optimiser that writes to weights in
other ways can call `apply_to_weights` after its step (`attach(..., remask_weights=True)`).
"""
from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from torch import nn

from lth.masks import validate_mask


class MaskEnforcer:
    """Holds one float mask per pruned parameter, on the parameter's device and dtype."""

    def __init__(self, model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
        validate_mask(mask, model)
        params = dict(model.named_parameters())
        # Dense tensors need no work: keep only those with something pruned.
        self.names = [n for n, m in mask.items() if not bool(m.all())]
        self.params = [params[n] for n in self.names]
        self.masks = [mask[n].to(device=params[n].device, dtype=params[n].dtype) for n in self.names]

    def to(self, device: torch.device) -> "MaskEnforcer":
        self.masks = [m.to(device) for m in self.masks]
        return self

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)

    @torch.no_grad()
    def apply_to_grads(self) -> None:
        pairs = [(p.grad, m) for p, m in zip(self.params, self.masks) if p.grad is not None]
        if pairs:
            grads, masks = zip(*pairs)
            torch._foreach_mul_(list(grads), list(masks))

    @torch.no_grad()
    def apply_to_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero the pruned entries of every per-parameter state tensor (moments, momentum buffers)."""
        for p, m in zip(self.params, self.masks):
            for value in optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.mul_(m)

    def attach(self, optimizer: torch.optim.Optimizer, remask_weights: bool = False) -> list:
        """Mask the grads before every `optimizer.step()` (and the weights after it, when asked);
        returns the hook handles. For plain loops that call backward before `step()`; with a
        closure-based step (Lightning) use `MaskCallback`."""
        handles = [optimizer.register_step_pre_hook(lambda *_: self.apply_to_grads())]
        if remask_weights:
            handles.append(optimizer.register_step_post_hook(lambda *_: self.apply_to_weights()))
        return handles


class MaskCallback(pl.Callback):
    """Lightning side of `MaskEnforcer`: masks the weights at the start of fit (and any resumed
    optimiser state), then the gradients after every backward pass.

    Lightning calls `optimizer.step(closure)` with backward inside the closure, so an optimiser
    pre-step hook would run before the gradients exist; `on_after_backward` runs after them.
    """

    def __init__(self, mask: Mapping[str, torch.Tensor]) -> None:
        self.mask = dict(mask)
        self.enforcer: MaskEnforcer | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.enforcer = MaskEnforcer(pl_module.net, self.mask)
        self.enforcer.apply_to_weights()
        for optimizer in trainer.optimizers:
            self.enforcer.apply_to_optimizer_state(optimizer)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.enforcer.apply_to_grads()
