"""What kind of layer is this module? The one classification the whole package uses.

A *weight layer* is a linear map whose weights the theory, the pruners and the checker see:
``nn.Linear`` and ``nn.Conv1d/2d/3d`` (and their subclasses: sigprop's masked layers, torch's
``NonDynamicallyQuantizableLinear``), anything else carrying a ``weight`` of rank >= 2 with a
``weight_mask`` buffer (sigprop's convention, also Synaptic-Flow's) or a
``torch.nn.utils.prune`` reparametrisation (``weight_orig`` + ``weight_mask``), and the
DCT-plus-sparse layers (Price & Tanner 2021, arXiv 2102.07655), recognised by their DCT
offset ``alpha``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WEIGHT_KINDS", "is_dct_layer", "is_weight_layer", "layer_kind"]

#: The values :func:`layer_kind` returns for weight layers.
WEIGHT_KINDS = ("linear", "conv", "dct_linear", "dct_conv")

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _weight(module: nn.Module) -> torch.Tensor | None:
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None


def is_dct_layer(module: nn.Module) -> bool:
    """True for a DCT-plus-sparse layer (a weight and a DCT offset scale ``alpha``)."""
    return _weight(module) is not None and isinstance(getattr(module, "alpha", None), torch.Tensor)


def is_weight_layer(module: nn.Module) -> bool:
    """True for linear/conv layers, masked layers and DCT-plus-sparse layers (module doc)."""
    if isinstance(module, (nn.Linear, *_CONV_TYPES)):
        return True
    weight = _weight(module)
    if weight is None or weight.ndim < 2:
        return False
    return "weight_mask" in module._buffers or is_dct_layer(module)


def layer_kind(module: nn.Module) -> str | None:
    """``"linear"``, ``"conv"``, ``"dct_linear"`` or ``"dct_conv"`` for a weight layer (by the
    weight's rank: a weight of rank > 2 is a convolution kernel), ``None`` for anything else."""
    if not is_weight_layer(module):
        return None
    conv = _weight(module).ndim > 2
    if is_dct_layer(module):
        return "dct_conv" if conv else "dct_linear"
    return "conv" if conv else "linear"
