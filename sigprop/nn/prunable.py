"""Walkers over a model's prunable layers: every module with a ``weight_mask`` buffer
(sigprop's masked and DCT-plus-sparse layers, torch layers made prunable by
``sigprop.prune.attach_masks``), and the masked optimiser step every training loop uses
(zero the pruned gradients, step, re-mask), so an optimiser never revives a pruned weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from sigprop.validate import InvalidInput

__all__ = [
    "apply_masks_",
    "masked_modules",
    "masked_step_",
    "prunable_layers",
    "reapply_mask_",
    "require_prunable",
]


def masked_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module of ``model`` with a ``weight_mask`` buffer, keyed ``"<module>.weight"``
    (``model.named_modules()`` order), in any storage: sigprop masked and DCT-plus-sparse
    layers (compact storage included), and ``nn.Linear``/``nn.Conv*`` made prunable by
    ``sigprop.prune.attach_masks``. What training loops re-mask after a step."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(getattr(module, "_buffers", {}).get("weight_mask"), Tensor):
            out[f"{name}.weight" if name else "weight"] = module
    return out


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The prunable layers of ``model``, keyed by the weight's qualified parameter name.

    A prunable layer has a ``weight`` ``nn.Parameter`` and a ``weight_mask`` buffer of the
    same shape. Order is ``model.named_modules()`` order. A ``weight_mask`` of a different
    shape, or a ``weight_mask`` without a ``weight`` parameter (a DCT-plus-sparse layer in
    compact storage, whose support is fixed), raises ``ValueError``.
    """
    out: dict[str, nn.Module] = {}
    for key, module in masked_modules(model).items():
        weight = module._parameters.get("weight")
        if weight is None:
            raise InvalidInput(
                f"layer {key!r} has a weight_mask but no weight parameter (compact storage?); "
                "its support cannot be re-pruned — call .to_dense_storage() on it first"
            )
        mask = module._buffers["weight_mask"]
        if mask.shape != weight.shape:
            raise InvalidInput(
                f"layer {key!r}: weight_mask has shape {tuple(mask.shape)}, "
                f"weight has {tuple(weight.shape)}"
            )
        out[key] = module
    return out


def require_prunable(model: nn.Module) -> dict[str, nn.Module]:
    """:func:`prunable_layers`, raising ``ValueError`` when there is none."""
    layers = prunable_layers(model)
    if not layers:
        raise InvalidInput(
            "model has no prunable layer (a module with a `weight` parameter and a "
            "`weight_mask` buffer); build it from sigprop.nn masked layers or call "
            "sigprop.prune.attach_masks(model) to make its nn.Linear/nn.Conv layers prunable"
        )
    return layers


@torch.no_grad()
def reapply_mask_(module: nn.Module) -> None:
    """Zero the pruned weights of one masked module in place: its ``apply_mask_()`` (sigprop
    layers), otherwise ``weight.masked_fill_(weight_mask == 0, 0)`` (a layer made prunable by
    ``attach_masks``; ``masked_fill`` so a NaN/inf at a pruned position is cleared too)."""
    apply = getattr(module, "apply_mask_", None)
    if callable(apply):
        apply()
    else:
        module.weight.masked_fill_(module.weight_mask == 0, 0.0)


def apply_masks_(model: nn.Module) -> int:
    """:func:`reapply_mask_` on every module of :func:`masked_modules`; return how many. Use
    it after writing weights directly (e.g. a custom optimiser step)."""
    modules = masked_modules(model).values()
    for module in modules:
        reapply_mask_(module)
    return len(modules)


def masked_step_(
    optimizer: torch.optim.Optimizer,
    modules: Iterable[nn.Module],
    *,
    before_step: Callable[[], None] | None = None,
) -> None:
    """One optimiser step that keeps pruned weights exactly zero (the step of every masked
    training loop: ``sigprop.experiments.train``, ``sigprop.prune.short_train``).

    After ``backward()``: the gradients of pruned weights are zeroed (the layers' hooks do it
    already; done again so that any optimiser, and ``before_step``, sees masked gradients),
    ``before_step()`` runs (e.g. to read gradients), ``optimizer.step()``, then
    :func:`reapply_mask_` on every module (momentum/weight decay/Adam cannot revive a weight).
    ``modules`` are masked modules, e.g. ``masked_modules(model).values()``.
    """
    modules = list(modules)
    with torch.no_grad():
        for m in modules:
            weight = m._parameters.get("weight")
            if weight is not None and weight.grad is not None:
                weight.grad.mul_(m.weight_mask.to(weight.grad.dtype))
    if before_step is not None:
        before_step()
    optimizer.step()
    for m in modules:
        reapply_mask_(m)
