"""Validation shared by the masking modules: masks and scores from the caller are checked
before anything is written."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from sigprop.validate import InvalidInput

__all__ = ["validate_mask"]


def validate_mask(mask: torch.Tensor, shape: torch.Size | tuple, name: str) -> torch.Tensor:
    """Check one mask and return it as a ``torch.bool`` tensor.

    Raises ``ValueError`` naming ``name`` if ``mask`` is not a tensor, has the wrong shape,
    contains NaN, or holds values other than 0/1.
    """
    if not isinstance(mask, torch.Tensor):
        raise InvalidInput(f"mask for {name!r} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise InvalidInput(
            f"mask for {name!r} has shape {tuple(mask.shape)}, the weight has {tuple(shape)}"
        )
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() and torch.isnan(mask).any():
        raise InvalidInput(f"mask for {name!r} contains NaN")
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        raise InvalidInput(f"mask for {name!r} is not binary (values other than 0 and 1)")
    return mask != 0


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite (always true for non-float tensors).

    A sum is finite only if every entry is (NaN and ±inf propagate); a sum of finite
    entries that overflows only sends us to the exact check. Summing in the tensor's own
    dtype costs about a sixteenth of ``torch.isfinite(t).all()`` on CPU (and a tenth of a
    float64 sum), measured for 3.4·10⁶ float32 entries.
    """
    if not t.is_floating_point():
        return True
    t = t.detach()
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def _check_scores(scores: Mapping[str, torch.Tensor], finite: bool = True) -> None:
    if not isinstance(scores, Mapping) or len(scores) == 0:
        raise InvalidInput("scores must be a non-empty mapping {parameter name: score tensor}")
    for name, s in scores.items():
        if not isinstance(s, torch.Tensor):
            raise InvalidInput(f"scores for {name!r} must be a tensor, got {type(s).__name__}")
        if s.is_complex() or s.dtype == torch.bool:
            raise InvalidInput(f"scores for {name!r} must be real numbers, got dtype {s.dtype}")
        if s.numel() == 0:
            raise InvalidInput(f"scores for {name!r} are empty")
        if finite and not _all_finite(s):
            bad = "NaN" if torch.isnan(s).any() else "inf"
            raise InvalidInput(f"scores for {name!r} contain {bad}")
