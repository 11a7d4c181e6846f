"""Validated weight arrays of the linear and convolutional rules (:mod:`.dense`): squared
weights ``w2`` (finite, >= 0), 0/1 masks, signed weights ``w`` (``w2 = w²``) and biases,
each checked once per engine node and marked :class:`Checked`."""

from __future__ import annotations

import numpy as np

from sigprop.validate import InvalidInput, nonneg_array

__all__ = [
    "Checked",
    "Holes",
    "bias_terms",
    "check_mask",
    "check_signed",
    "check_w2",
    "kept_mask",
    "kept_only",
    "kept_sum",
    "w2_array",
]


def bias_terms(c_out: int, b2, b):
    if b is not None:
        b = np.asarray(b, dtype=float)
        if b.shape != (c_out,) or not np.all(np.isfinite(b)):
            raise InvalidInput(f"bias b must be a finite array of shape ({c_out},)")
        if b2 is not None and not np.allclose(np.asarray(b2, dtype=float), b * b):
            raise InvalidInput("b2 must equal b**2 when both are given")
        return b * b, b
    if b2 is None:
        return np.zeros(c_out), np.zeros(c_out)
    b2 = nonneg_array("b2", b2, "(a squared bias) must be non-negative")
    if b2.shape != (c_out,):
        raise InvalidInput(f"b2 must have shape ({c_out},), got {b2.shape}")
    return b2, np.zeros(c_out)


class Checked(np.ndarray):
    """Marks a weight or mask array this package has already validated (a view; the
    engine validates each node's arrays once, not in every rule that reads them)."""


def check_w2(w2, name: str = "w2") -> np.ndarray:
    """``w2`` as a validated float array (finite, >= 0), marked :class:`Checked`."""
    if isinstance(w2, Checked):
        return w2
    return nonneg_array(name, w2, "(a squared weight) must be non-negative").view(Checked)


def check_mask(mask, w2, name: str = "mask") -> np.ndarray | None:
    """A 0/1 mask of w2's shape, marked Checked; ``None`` stays ``None`` (the rules read
    it as the kept pattern w2 > 0, see :func:`kept_mask`)."""
    if mask is None or isinstance(mask, Checked):
        return mask
    m = np.asarray(mask, dtype=float)
    if m.shape != np.shape(w2):
        raise InvalidInput(f"{name} has shape {m.shape}, the weight {np.shape(w2)}")
    if not np.all((m == 0) | (m == 1)):
        raise InvalidInput(f"{name} entries must be 0 or 1")
    return m.view(Checked)


def w2_array(w2, ndim: int) -> np.ndarray:
    w2 = check_w2(w2).view(np.ndarray)
    if w2.ndim != ndim:
        raise InvalidInput(f"w2 must have {ndim} dimensions, got shape {w2.shape}")
    return w2


class Holes:
    """A kept pattern that keeps every weight of a (C_out, C_in) layer but a few exact
    zeros, held as their (rows, cols): a dense float64 mask of VGG's 25088 x 4096
    classifier (822 MB, whose random init holds about a dozen exact zeros) costs seconds of
    page faults for a product that is a sum minus a dozen terms."""

    #: the largest fraction of zeros held this way (beyond it a dense mask is cheaper)
    MAX_FRACTION = 0.01

    def __init__(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
        self.rows, self.cols, self.shape = rows, cols, shape


def kept_mask(mask, w2: np.ndarray) -> np.ndarray | Holes | None:
    """The layer's 0/1 mask; for ``None`` the kept pattern w2 > 0: ``None`` again when every
    weight is kept (the rules then sum without a mask), a :class:`Holes` when a matrix has
    a few exact zeros, else a dense 0/1 array."""
    if mask is None:
        if w2.size == 0 or w2.min() > 0:
            return None
        if w2.ndim == 2:
            zeros = np.flatnonzero(w2 == 0)
            if zeros.size <= Holes.MAX_FRACTION * w2.size:
                rows, cols = np.unravel_index(zeros, w2.shape)
                return Holes(rows, cols, w2.shape)
        return np.greater(w2, 0, out=np.empty(w2.shape), casting="unsafe")
    return check_mask(mask, w2).view(np.ndarray)


def kept_sum(mask: np.ndarray | Holes | None, x: np.ndarray) -> np.ndarray:
    """M @ x over the input axis of x; with every weight kept (``None``), x summed over it
    (broadcast against the output axis by the caller); for :class:`Holes` that sum per
    output row less the terms of its zeros."""
    if mask is None:
        return x.sum(axis=0)
    if isinstance(mask, Holes):
        out = np.repeat(x.sum(axis=0)[None], mask.shape[0], axis=0)
        np.subtract.at(out, mask.rows, x[mask.cols])
        return out
    return mask @ x


def kept_only(mask: np.ndarray | Holes | None, per: np.ndarray) -> np.ndarray:
    """``per`` (the weight's shape) with the pruned entries zeroed."""
    if mask is None:
        return per
    if isinstance(mask, Holes):
        per = per.copy()
        per[mask.rows, mask.cols] = 0.0
        return per
    return per * mask


def check_signed(w, w2) -> np.ndarray:
    """Signed weights ``w`` of ``w2``'s shape (``w2 = w²``), finite, marked Checked."""
    if isinstance(w, Checked):
        return w
    w = np.asarray(w, dtype=float)
    if w.shape != np.shape(w2) or not np.isfinite(np.sum(w)):
        raise InvalidInput(f"signed weights w must be finite with w2's shape {np.shape(w2)}")
    return w.view(Checked)
