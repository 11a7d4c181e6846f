"""Piecewise Chebyshev interpolation: values tabulated on the Chebyshev points of each panel
of a partition, read back by the barycentric formula.

On a panel [a, b] mapped to t ∈ [−1, 1], the d Chebyshev points of the first kind
t_j = cos((2j+1)π/(2d)) with weights w_j = (−1)^j sin((2j+1)π/(2d)) give the interpolant
p(t) = Σ_j w_j f_j/(t − t_j) / Σ_j w_j/(t − t_j) (the "second" barycentric formula,
Berrut & Trefethen 2004, SIAM Rev. 46(3), Sec. 5 and Eq. 4.2), stable for any t in the
panel and exact at the nodes. The mean-field moment tables
(:class:`sigprop.theory.meanfield.MomentTable`) and the propagation engine's zero-mean
moment tables (:mod:`sigprop.theory.propagation.smooth`) both tabulate on geometric panels
in s = √q with these two functions.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["barycentric_rows", "chebyshev_points", "panel_nodes"]


@functools.lru_cache(maxsize=8)
def chebyshev_points(d: int) -> tuple[np.ndarray, np.ndarray]:
    """The d Chebyshev points of the first kind on [−1, 1] and their barycentric weights
    (read-only arrays)."""
    j = np.arange(int(d))
    angle = (2 * j + 1) * np.pi / (2 * int(d))
    x, w = np.cos(angle), (-1.0) ** j * np.sin(angle)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def panel_nodes(edges: np.ndarray, d: int) -> np.ndarray:
    """The Chebyshev points of every panel [edges[i], edges[i+1]], shape (panels, d)."""
    x, _ = chebyshev_points(d)
    a, b = edges[:-1, None], edges[1:, None]
    return 0.5 * (a + b) + 0.5 * (b - a) * x


def barycentric_rows(edges: np.ndarray, s: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """For points ``s`` (1-D) within [edges[0], edges[-1]]: the panel holding each one and
    the row of d interpolation weights, shape (len(s), d), such that the interpolant of
    values ``table[panel]`` (tabulated at :func:`panel_nodes`) is ``Σ_j rows[:, j] ·
    table[panel, j]``. A point on a node gets the unit row of that node."""
    x, w = chebyshev_points(d)
    panel = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(edges) - 2)
    a, b = edges[panel], edges[panel + 1]
    t = (2.0 * s - a - b) / (b - a)
    diff = t[:, None] - x[None, :]
    exact = diff == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = w / diff
    rows = np.where(exact.any(axis=1, keepdims=True), exact.astype(float), rows)
    return panel, rows / rows.sum(axis=1, keepdims=True)
