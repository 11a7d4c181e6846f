"""Argument checks and numerical constants shared by the mean-field maps."""

from __future__ import annotations

import numpy as np

from sigprop.validate import InvalidInput, nonneg_array

_EPS = np.finfo(float).eps
#: relative tolerance for "exactly critical" homogeneous maps (σ_w = √2 is not exact in float)
_NEUTRAL_RTOL = 1e-12
#: largest q the fixed-point scan explores before declaring divergence
_Q_CAP = 1e12
#: a variance small enough that moments at it are the q → 0⁺ limits (one-sided at kinks)
_Q_TINY = 1e-300


# ---------------------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------------------


def sigma_arg(name: str, value) -> np.ndarray:
    return nonneg_array(name, value, "is a standard deviation and must be >= 0")


def _variance(name: str, value) -> np.ndarray:
    return nonneg_array(name, value, "is a variance and must be >= 0")


def _corr(value) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"correlation c must be finite, got {value!r}")
    if np.any(np.abs(arr) > 1):
        raise InvalidInput(f"correlation c must lie in [-1, 1], got {value!r}")
    return arr


def _first(arrays, mask) -> str:
    idx = np.flatnonzero(mask)[0]
    return ", ".join(f"{n} = {np.ravel(a)[idx]:.6g}" for n, a in arrays)
