"""Finding the weight layers of a state dict from its keys and shapes.

Masks are recognised by structure, never by a name suffix alone: ``<p>_mask`` is a mask
only beside ``<p>`` or ``<p>_orig`` (a ``causal_mask`` buffer is an ordinary tensor). The
packed ``in_proj_weight`` of ``nn.MultiheadAttention`` is a weight layer named
``<attention>.in_proj``.

Recognised layouts: plain state dicts (a weight is kept iff nonzero), ``torch.nn.utils.prune``
state dicts (``<name>_orig`` plus a 0/1 ``<name>_mask`` buffer), Synaptic-Flow / sigprop
style (``weight`` plus a ``weight_mask`` buffer) and DCT-plus-sparse layers (``weight``,
``weight_mask`` and a scalar ``alpha``). A state dict holding ``weight``, ``weight_orig``
and ``weight_mask`` of one module (``torch.nn.utils.prune`` before ``remove``, with the
computed ``weight = weight_orig * weight_mask`` saved too) is one layer, read from
``weight_orig`` and ``weight_mask``.

A weight layer is a ``*weight``/``*weight_orig`` tensor with at least 2 dimensions: 2-D
linear and 3- to 5-D convolution weights are understood; a higher-rank weight, a weight
with no elements and a non-float weight are refused with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sigprop.io.lazy import LazyTensor
from sigprop.io.records import LayerEntry
from sigprop.io.source import CheckpointError

__all__ = ["MAX_WEIGHT_NDIM", "find_layers", "natural_key"]

#: Highest weight rank understood: ``(out, in, d, h, w)`` of a 3-D convolution.
MAX_WEIGHT_NDIM = 5

_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key putting ``layers.2`` before ``layers.10``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in _NUM.split(name)]


def find_layers(
    where: str, tensors: Mapping[str, LazyTensor]
) -> tuple[tuple[LayerEntry, ...], tuple[str, ...], str, tuple[str, ...]]:
    """``(layers, mask keys, layout, notes)`` of a state dict, layers in key order."""
    # a mask by structure: ``<stem>_mask`` beside ``<stem>`` or ``<stem>_orig``; any other
    # tensor whose name ends in ``_mask`` (a causal mask buffer) is an ordinary tensor
    masks = tuple(
        k
        for k in tensors
        if k.endswith("_mask") and (k[: -len("_mask")] in tensors or k[:-5] + "_orig" in tensors)
    )
    layers: list[LayerEntry] = []
    used_masks: set[str] = set()
    sources: set[str] = set()
    notes: list[str] = []
    for key, t in tensors.items():
        leaf = key.rsplit(".", 1)[-1]
        if key in masks:
            continue
        if leaf.endswith("weight_orig"):
            base = key[: -len("_orig")]
            mask_key = base + "_mask"
            if mask_key not in tensors:
                raise CheckpointError(f"{where}: {key!r} has no matching {mask_key!r}")
            source = "torch.nn.utils.prune"
        elif leaf in ("weight", "in_proj_weight"):
            if key + "_orig" in tensors and key + "_mask" in tensors:
                notes.append(
                    f"{key!r} is torch.nn.utils.prune's weight_orig * weight_mask; the layer "
                    f"is read from {key + '_orig'!r} and {key + '_mask'!r}"
                )
                continue
            base = key
            mask_key = key + "_mask" if key + "_mask" in tensors else None
            source = "weight_mask" if mask_key else "nonzero weights"
        else:
            continue
        if t.ndim == 0:
            raise CheckpointError(f"{where}: weight {key!r} is a 0-d tensor (a scalar)")
        if t.ndim < 2:
            continue  # norm-layer scales, 1-d weights: not a connectivity layer
        if t.ndim > MAX_WEIGHT_NDIM:
            raise CheckpointError(
                f"{where}: weight {key!r} has {t.ndim} dimensions {t.shape}; sigprop reads "
                "linear (2-D) and convolution (3-D to 5-D) weights"
            )
        if t.numel == 0:
            raise CheckpointError(f"{where}: weight {key!r} has no elements (shape {t.shape})")
        if mask_key is not None:
            m = tensors[mask_key]
            if m.shape != t.shape:
                raise CheckpointError(
                    f"{where}: mask {mask_key!r} has shape {m.shape}, weight {key!r} has {t.shape}"
                )
            if m.kind == "c":
                raise CheckpointError(f"{where}: mask {mask_key!r} is complex ({m.dtype_name})")
            used_masks.add(mask_key)
        if t.kind == "c":
            raise CheckpointError(f"{where}: weight {key!r} is complex ({t.dtype_name})")
        if t.kind != "f":
            raise CheckpointError(f"{where}: weight {key!r} has non-float dtype {t.dtype_name}")
        name = base.rsplit(".", 1)[0] if "." in base else base
        if base.rsplit(".", 1)[-1] == "in_proj_weight":  # nn.MultiheadAttention's packed q/k/v
            name = f"{name}.in_proj" if "." in base else "in_proj"
        prefix = name + "." if "." in base else ""
        alpha = prefix + "alpha"
        alpha_key = alpha if mask_key and alpha in tensors and tensors[alpha].numel == 1 else None
        layers.append(LayerEntry(name, key, mask_key, t.shape, source, alpha_key))
        sources.add(source)
    for m in masks:
        if m in used_masks:
            continue
        # a mask of a tensor that is not a weight layer (e.g. a pruned bias)
        stem = m[: -len("_mask")]
        target = tensors[stem] if stem in tensors else tensors[stem + "_orig"]
        if tensors[m].shape != target.shape:
            raise CheckpointError(
                f"{where}: mask {m!r} has shape {tensors[m].shape}, {stem!r} has {target.shape}"
            )
    if not layers:
        raise CheckpointError(
            f"{where}: no weight layers found (no tensor named '*weight' with >= 2 dimensions)"
        )
    if len(sources) == 1:
        layout = {
            "torch.nn.utils.prune": "torch.nn.utils.prune",
            "weight_mask": "weight_mask",
            "nonzero weights": "plain",
        }[sources.pop()]
    else:
        layout = "mixed"
    return tuple(layers), masks, layout, tuple(notes)
