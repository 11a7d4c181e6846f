"""Compressed position grids: which positions of a feature map share their moments.

Under zero padding the per-position moments of a convolutional network differ only near
the borders (Xiao et al. 2018, arXiv 1806.05393, §2: away from borders the diagonal of the
kernel follows the dense q-map). Every position map of this package is therefore stored on
a *separable class grid*: along each spatial dimension an :class:`Axis` maps every index
to a class, and two positions whose classes agree along every dimension provably carry the
same moments. A (C, H, W) map is stored as a (C, n_H, n_W) array of class values.

Classes are built exactly, never by comparing floats: a conv/pool output index gets the
class of the tuple of input classes its taps read (−1 for a padded tap), so an interior
run of a 224-wide map collapses to one class while every border index keeps its own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from sigprop.validate import InvalidInput

__all__ = [
    "Axis",
    "Grid",
    "uniform_axis",
    "axis_from_keys",
    "refine",
    "expand",
    "wsum",
    "int_tuple",
    "class_weights",
    "tap_index",
    "window_index",
    "forward_table",
    "backward_table",
    "tap_counts",
]

#: A grid is one Axis per spatial dimension (empty for a flat feature vector).
Grid = tuple


@dataclass(frozen=True, eq=False)
class Axis:
    """Class map of one spatial dimension.

    ``cls[i]`` is the class of index i; classes are numbered 0..n−1 in order of first
    appearance, so ``rep[c]`` (the first index of class c) increases with c.
    """

    cls: np.ndarray

    def __post_init__(self):
        cls = np.asarray(self.cls, dtype=np.int64)
        if cls.ndim != 1 or cls.size == 0:
            raise InvalidInput("an axis needs a non-empty 1-D class map")
        cls.setflags(write=False)
        object.__setattr__(self, "cls", cls)
        n = int(cls.max()) + 1
        counts = np.bincount(cls, minlength=n).astype(float)
        first = np.full(n, cls.size, dtype=np.int64)
        np.minimum.at(first, cls, np.arange(cls.size))
        for name, value in (("counts", counts), ("rep", first)):
            value.setflags(write=False)
            object.__setattr__(self, "_" + name, value)
        object.__setattr__(self, "_n", n)

    @property
    def length(self) -> int:
        return int(self.cls.size)

    @property
    def n(self) -> int:
        return self._n

    @property
    def counts(self) -> np.ndarray:
        return self._counts

    @property
    def rep(self) -> np.ndarray:
        return self._rep

    def same(self, other: Axis) -> bool:
        return self.cls.shape == other.cls.shape and bool(np.all(self.cls == other.cls))


def uniform_axis(length: int) -> Axis:
    """Every index of the dimension in one class."""
    return Axis(np.zeros(int(length), dtype=np.int64))


def axis_from_keys(keys: np.ndarray) -> Axis:
    """Axis whose classes are the distinct rows of ``keys`` (shape (L, m)), numbered by
    first appearance."""
    keys = np.asarray(keys).reshape(keys.shape[0], -1)
    if keys.shape[1] > 16 or keys.dtype.kind == "f":  # long or float rows: sort them whole
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        return _by_first(first, inverse)
    code = np.zeros(keys.shape[0], dtype=np.int64)
    for col in keys.T:  # fold the columns into one small integer code per row
        _, inv = np.unique(col, return_inverse=True)
        inv = np.ravel(inv)
        code = code * (int(inv.max()) + 1) + inv
        _, code = np.unique(code, return_inverse=True)
        code = np.ravel(code)
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    return _by_first(first, inverse)


def _by_first(first: np.ndarray, inverse: np.ndarray) -> Axis:
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return Axis(rank[np.ravel(inverse)])


def coarser(a: Axis, b: Axis) -> bool:
    """True when every class of ``b`` lies within one class of ``a``."""
    return a.length == b.length and bool(np.array_equal(a.cls[b.rep][b.cls], a.cls))


def refine(a: Axis, b: Axis) -> tuple[Axis, np.ndarray, np.ndarray]:
    """Common refinement of two class maps of the same dimension.

    Returns the refined axis and, for each of its classes, the class it has in ``a`` and
    in ``b``.
    """
    if a.length != b.length:
        raise InvalidInput(f"cannot combine dimensions of lengths {a.length} and {b.length}")
    if a.same(b):
        ids = np.arange(a.n)
        return a, ids, ids
    ax = axis_from_keys(np.stack([a.cls, b.cls], axis=1))
    rep = ax.rep
    return ax, a.cls[rep], b.cls[rep]


def refine_grids(grids) -> tuple[tuple, list]:
    """Common refinement of several grids of the same spatial shape; returns the grid and,
    per input grid, the per-dimension class index arrays that map onto it."""
    grids = list(grids)
    dims = len(grids[0])
    if any(len(g) != dims for g in grids):
        raise InvalidInput("records with different numbers of spatial dimensions")
    axes = []
    maps = [[] for _ in grids]
    for d in range(dims):
        keys = np.stack([g[d].cls for g in grids], axis=1)
        lengths = {g[d].length for g in grids}
        if len(lengths) != 1:
            raise InvalidInput(f"spatial sizes differ along dimension {d}: {sorted(lengths)}")
        ax = None
        for cand in grids:  # one of the grids often refines all the others
            if all(g[d] is cand[d] or coarser(g[d], cand[d]) for g in grids):
                ax = cand[d]
                break
        if ax is None:
            ax = axis_from_keys(keys)
        axes.append(ax)
        rep = ax.rep
        for k, g in enumerate(grids):
            maps[k].append(g[d].cls[rep])
    return tuple(axes), maps


def take(values: np.ndarray, index_maps, offset: int = 1) -> np.ndarray:
    """``values[:, i0][:, :, i1]...``: re-index the class axes of a (C, *n) array."""
    out = values
    for d, idx in enumerate(index_maps):
        out = np.take(out, idx, axis=offset + d)
    return out


def expand(values: np.ndarray, grid) -> np.ndarray:
    """Class values (C, *n) as the full map (C, *L)."""
    return take(values, [ax.cls for ax in grid])


def class_weights(grid) -> np.ndarray:
    """Fraction of all positions in each class, shape (*n) (sums to 1)."""
    return _class_weights(tuple(grid))


@functools.lru_cache(maxsize=512)
def _class_weights(grid: tuple) -> np.ndarray:
    w = np.ones(())
    for ax in grid:
        w = np.multiply.outer(w, ax.counts / ax.length)
    w.setflags(write=False)
    return w


def wsum(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ over the trailing class axes of values (C, *n) weighted by weights (*n) → (C,)."""
    if not weights.ndim:
        return values * weights
    return values.reshape(values.shape[0], -1) @ weights.reshape(-1)


def int_tuple(v, n: int, name: str, minimum: int) -> tuple[int, ...]:
    """One int per spatial dim (a single value is repeated), each >= ``minimum``."""
    try:
        vals = tuple(int(x) for x in np.atleast_1d(v))
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be integers, got {v!r}") from None
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n or any(x < minimum for x in vals):
        raise InvalidInput(f"{name} must be {n} integers >= {minimum}, got {v!r}")
    return vals


def out_length(length: int, k: int, stride: int, pad: int, dil: int, ceil_mode: bool) -> int:
    """Output length of a conv/pool window (torch's rule, incl. ceil_mode)."""
    span = dil * (k - 1) + 1
    num = length + 2 * pad - span
    if num < 0:
        raise InvalidInput(f"kernel span {span} exceeds the padded input length {length + 2 * pad}")
    if ceil_mode:
        out = -(-num // stride) + 1
        if (out - 1) * stride >= length + pad:  # last window must start inside input/left pad
            out -= 1
    else:
        out = num // stride + 1
    return int(out)


def tap_index(length, k, stride, pad, dil, ceil_mode=False) -> np.ndarray:
    """(k, L_out) input index of tap t at output index y (−1 where the tap is padding)."""
    lout = out_length(length, k, stride, pad, dil, ceil_mode)
    idx = np.arange(lout)[None, :] * stride - pad + np.arange(k)[:, None] * dil
    return np.where((idx >= 0) & (idx < length), idx, -1)


def window_index(length: int, out: int) -> np.ndarray:
    """Adaptive pooling windows (torch's start = ⌊iL/out⌋, end = ⌈(i+1)L/out⌉) as a
    (k_max, out) index table padded with −1."""
    i = np.arange(out)
    start = (i * length) // out
    end = -((-(i + 1) * length) // out)
    kmax = int(np.max(end - start))
    idx = start[None, :] + np.arange(kmax)[:, None]
    return np.where(idx < end[None, :], idx, -1)


def forward_table(axis_in: Axis, idx: np.ndarray) -> tuple[Axis, np.ndarray]:
    """Output axis of a windowed op and its tap table.

    ``idx`` is a (k, L_out) tap index table. Returns the output Axis (an output class is a
    distinct tuple of input classes over the taps) and the (k, n_out) table of the input
    class each tap reads at the class representative, ``axis_in.n`` standing for padding.
    """
    pad_cls = axis_in.n
    keys = np.where(idx >= 0, axis_in.cls[np.maximum(idx, 0)], pad_cls)
    ax = axis_from_keys(keys.T)
    return ax, keys[:, ax.rep]


def backward_table(axis_out: Axis, idx: np.ndarray, length_in: int) -> tuple[Axis, np.ndarray]:
    """Input-side axis and table for the transpose of a windowed op.

    For each input index and tap, the output index whose tap reads it (at most one per
    tap). Returns the input Axis (a class is a distinct tuple of output classes over the
    taps) and the (k, n_in) table of output classes, ``axis_out.n`` standing for none.
    """
    k, lout = idx.shape
    none = axis_out.n
    keys = np.full((k, length_in), none, dtype=np.int64)
    for t in range(k):
        ok = idx[t] >= 0
        keys[t, idx[t, ok]] = axis_out.cls[np.arange(lout)[ok]]
    ax = axis_from_keys(keys.T)
    return ax, keys[:, ax.rep]


def tap_counts(idx: np.ndarray) -> np.ndarray:
    """Number of output indices at which each tap reads data, shape (k,)."""
    return (idx >= 0).sum(axis=1).astype(float)


def count_matrices(axis_out: Axis, axis_in: Axis, idx: np.ndarray) -> np.ndarray:
    """(k, n_out, n_in): number of output indices of class a whose tap t reads an input
    index of class b (used for weight gradients, Σ_p g(p) q(p + t))."""
    k, lout = idx.shape
    out = np.zeros((k, axis_out.n, axis_in.n))
    for t in range(k):
        ok = idx[t] >= 0
        np.add.at(out[t], (axis_out.cls[np.arange(lout)[ok]], axis_in.cls[idx[t, ok]]), 1.0)
    return out
