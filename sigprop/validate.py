"""The one place where sigprop checks the values it is given.

Every check of user-supplied arguments in the package goes through this module, so that a
bad value always raises one of two types, whatever layer it reached:

:class:`InvalidInput` (a ``ValueError``)
    the value has the right type but lies outside its domain (a density of 1.5, a negative
    σ, a file that cannot be used);
:class:`InvalidType` (both an :class:`InvalidInput` and a ``TypeError``)
    the value has the wrong type (a string where a number is needed).

The command line maps these types, and ``OSError``, to exit status 2 with a one-line
message; any other exception is a fault of sigprop or of a library it calls (exit 3). No
module tells the two apart by reading tracebacks or message texts.

This module imports only the standard library and numpy, so ``sigprop.theory`` can use it
without importing torch.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = [
    "InvalidInput",
    "InvalidType",
    "density",
    "density_array",
    "finite_float",
    "nonneg_array",
    "nonneg_float",
    "nonneg_int",
    "positive_float",
    "positive_int",
    "real_number",
]


class InvalidInput(ValueError):
    """A value given to sigprop is outside its domain (exit status 2 on the command line)."""


class InvalidType(InvalidInput, TypeError):
    """A value given to sigprop has the wrong type (an ``InvalidInput`` and a ``TypeError``)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """``value`` as a Python int >= 1 (Python or numpy integers; bools are refused)."""
    if value is None and allow_none:
        return None
    if not _is_int(value):
        extra = " or None" if allow_none else ""
        raise InvalidType(f"{name} must be a positive integer{extra}, got {value!r}")
    if value < 1:
        extra = " or None" if allow_none else ""
        raise InvalidInput(f"{name} must be a positive integer{extra}, got {value!r}")
    return int(value)


def nonneg_int(value: Any, name: str) -> int:
    """``value`` as a Python int >= 0 (Python or numpy integers; bools are refused)."""
    if not _is_int(value):
        raise InvalidType(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise InvalidInput(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def real_number(value: Any, name: str) -> float:
    """``value`` as a Python float (any real number type except bool; NaN passes)."""
    if not _is_real(value):
        raise InvalidType(f"{name} must be a real number, got {value!r}")
    return float(value)


def finite_float(value: Any, name: str) -> float:
    """``value`` as a finite Python float."""
    out = real_number(value, name)
    if not math.isfinite(out):
        raise InvalidInput(f"{name} must be finite, got {value!r}")
    return out


def nonneg_float(value: Any, name: str) -> float:
    """``value`` as a finite Python float >= 0."""
    out = finite_float(value, name)
    if out < 0:
        raise InvalidInput(f"{name} must be >= 0, got {value!r}")
    return out


def positive_float(value: Any, name: str) -> float:
    """``value`` as a finite Python float > 0."""
    out = finite_float(value, name)
    if out <= 0:
        raise InvalidInput(f"{name} must be > 0, got {value!r}")
    return out


def density(value: Any, name: str = "density") -> float:
    """A density (the fraction of weights KEPT, never the sparsity) as a Python float.

    Any real number (Python or numpy int/float) except a bool, not NaN, in (0, 1]. This is
    the one density rule of the package.
    """
    if not _is_real(value):
        raise InvalidType(f"{name} must be a real number in (0, 1], got {value!r}")
    out = float(value)
    if not (0.0 < out <= 1.0):  # also rejects NaN
        raise InvalidInput(
            f"{name} must lie in (0, 1] (the fraction of weights kept), got {value!r}"
        )
    return out


def density_array(value: Any, name: str = "density", *, allow_zero: bool = False) -> np.ndarray:
    """The array form of :func:`density` (same rule and messages) as float64: real numbers
    (not bools, not strings) in (0, 1], or in [0, 1] with ``allow_zero``."""
    bound = "[0, 1]" if allow_zero else "(0, 1]"
    raw = np.asarray(value)
    if raw.dtype.kind not in "iuf":  # bool, str, complex, object
        raise InvalidType(f"{name} must be a real number in {bound}, got {value!r}")
    rho = raw.astype(np.float64)
    lo_ok = (rho >= 0.0) if allow_zero else (rho > 0.0)
    if not np.all(lo_ok & (rho <= 1.0)):  # also rejects NaN
        raise InvalidInput(
            f"{name} must lie in {bound} (the fraction of weights kept), got {value!r}"
        )
    return rho


def nonneg_array(name: str, value: Any, what: str = "must be non-negative") -> np.ndarray:
    """``value`` as a float array, finite and >= 0 (``what`` completes the error message)."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidType(
            f"{name} must be a real number or an array of them, got {value!r}"
        ) from None
    if arr.size:
        # two reductions, no temporaries (a squared weight array can hold 10⁸ entries):
        # NaN propagates into both, ±inf shows in one of them
        lo, hi = float(arr.min()), float(arr.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InvalidInput(f"{name} must be finite, got {value!r}")
        if lo < 0:
            raise InvalidInput(f"{name} {what}, got {value!r}")
    return arr
