"""Interop with ``torch.nn.utils.prune``: read and write its ``<name>_orig`` / ``<name>_mask``
format."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from sigprop.nn.prunable import require_prunable
from sigprop.prune._checks import validate_mask
from sigprop.validate import InvalidInput

__all__ = ["convert_from_torch_prune", "from_torch_prune", "to_torch_prune"]


def _state_dict_of(src) -> Mapping[str, torch.Tensor]:
    if isinstance(src, nn.Module):
        return src.state_dict()
    if isinstance(src, Mapping):
        return src
    raise InvalidInput(
        f"expected an nn.Module or a state dict (mapping of tensors), got {type(src).__name__}"
    )


def from_torch_prune(src) -> dict[str, torch.Tensor]:
    """Masks of a model or state dict in the ``torch.nn.utils.prune`` format.

    Every ``<name>_mask`` entry gives the mask of parameter ``<name>``; the parameter itself
    must be present as ``<name>_orig`` (``torch.nn.utils.prune``) or ``<name>`` (sigprop and
    Synaptic-Flow layers) with the same shape (a ``*_mask`` buffer with no such parameter is
    not a pruning mask and is skipped). Returns ``{<name>: bool mask}``. A state dict
    with no mask raises ``ValueError`` (after ``prune.remove`` the masks are gone; zeros in the
    weights alone do not say what was pruned).
    """
    sd = _state_dict_of(src)
    out = {}
    for key, value in sd.items():
        if not key.endswith("_mask"):
            continue
        name = key[: -len("_mask")]
        param = sd.get(f"{name}_orig", sd.get(name))
        if param is None:  # a buffer that merely ends in "_mask", not a parameter's mask
            continue
        out[name] = validate_mask(value, param.shape, name)
    if not out:
        raise InvalidInput("no `<name>_mask` entries found: this is not a masked model/state dict")
    return out


def convert_from_torch_prune(src) -> dict[str, torch.Tensor]:
    """A ``torch.nn.utils.prune`` state dict rewritten in sigprop's format.

    ``<name>_orig`` + ``<name>_mask`` become ``<name>`` (= orig * mask, pruned values zeroed)
    + ``<name>_mask`` (float 0/1 in the parameter's dtype); every other entry is copied.
    Load the result with ``model.load_state_dict`` into a model with sigprop masked layers.
    """
    sd = _state_dict_of(src)
    masks = from_torch_prune(sd)
    out = {}
    for key, value in sd.items():
        if key.endswith("_orig") and key[: -len("_orig")] in masks:
            name = key[: -len("_orig")]
            out[name] = value.detach() * masks[name].to(value.dtype)
        elif key.endswith("_mask") and key[: -len("_mask")] in masks:
            name = key[: -len("_mask")]
            param = sd.get(f"{name}_orig", sd.get(name))
            out[key] = masks[name].to(param.dtype)
        else:
            out[key] = value
    return out


def to_torch_prune(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in the ``torch.nn.utils.prune`` format.

    For every prunable layer, ``<m>.weight`` becomes ``<m>.weight_orig`` and
    ``<m>.weight_mask`` is a float 0/1 tensor in the weight's dtype; other entries are
    unchanged. It loads (``strict=True``) into the same architecture built from ``nn.Linear``
    / ``nn.Conv*`` on which ``torch.nn.utils.prune`` (e.g. ``prune.identity``) was applied.
    """
    layers = require_prunable(model)
    sd = model.state_dict()
    out = {}
    for key, value in sd.items():
        if key in layers:
            out[f"{key}_orig"] = value.detach().clone()
        elif key.endswith("_mask") and key[: -len("_mask")] in layers:
            weight = sd[key[: -len("_mask")]]
            out[key] = (value != 0).to(weight.dtype)
        else:
            out[key] = value
    return out
