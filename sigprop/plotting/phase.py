"""Mean-field phase diagram: ξ_c heat map, edge of chaos, q* contours.

The figure follows Schoenholz et al. 2017 (arXiv 1611.01232, Fig. 1) and Poole et al. 2016
(arXiv 1606.05340, Fig. 2): axes σ_w² and σ_b² (variances), colour = correlation depth
scale ξ_c on a log scale (it diverges on the edge of chaos), the EOC curve χ₁ = 1, and
labelled contours of the fixed-point variance q*.
"""

from __future__ import annotations

import errno
import os

import numpy as np

from sigprop.plotting.files import save_figure
from sigprop.validate import InvalidInput


def plot_phase_diagram(
    activation,
    path: str | os.PathLike,
    *,
    grid: int = 256,
    sigma_w2_max: float = 4.0,
    sigma_b2_max: float = 0.5,
    sigma_w2_min: float | None = None,
    dpi: int = 200,
) -> str:
    """Compute the phase diagram on a ``grid × grid`` mesh and save it to ``path``.

    The image format is the one the suffix names (``.png``, ``.pdf``, ``.svg``, ...; PNG
    without a suffix) and the file is written under exactly ``path``: a regular file is
    replaced atomically (written to a temporary file in the same directory, then renamed);
    an existing non-regular file (a device, a FIFO) or a symbolic link is written in place.
    Returns the path as given. Raises ``InvalidInput`` (a ``ValueError``) for a bad grid,
    range or suffix (before any computation), ``OSError`` for an unwritable path.
    """
    from sigprop.theory import get_activation, phase_diagram
    from sigprop.theory.eoc import eoc_curve

    act = get_activation(activation)  # refused activations never pay for matplotlib
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    path = os.fspath(path)
    fmt = _image_format(path)
    grid = int(grid)
    if grid < 8 or grid > 2048:
        raise InvalidInput(f"grid must be between 8 and 2048 points per axis, got {grid}")
    w2_min = sigma_w2_max / 16 if sigma_w2_min is None else float(sigma_w2_min)
    for name, v in (("sigma_w2_max", sigma_w2_max), ("sigma_b2_max", sigma_b2_max)):
        if not (np.isfinite(v) and v > 0):
            raise InvalidInput(f"{name} must be a positive finite variance, got {v}")
    if not (0 < w2_min < sigma_w2_max):
        raise InvalidInput(f"sigma_w2_min must lie in (0, sigma_w2_max), got {w2_min}")
    w2 = np.linspace(w2_min, sigma_w2_max, grid)
    b2 = np.linspace(0.0, sigma_b2_max, grid)
    pd = phase_diagram(act, np.sqrt(w2), np.sqrt(b2))

    fig, ax = plt.subplots(figsize=(6.4, 4.8), constrained_layout=True)
    xi = np.ma.masked_invalid(np.where(pd.xi_c > 0, pd.xi_c, np.nan))
    finite_xi = xi.compressed()
    finite_xi = finite_xi[np.isfinite(finite_xi)]
    if finite_xi.size:
        vmin = max(float(np.min(finite_xi)), 1e-2)
        vmax = max(min(float(np.max(finite_xi)), 1e3), vmin * 10)
    else:
        vmin, vmax = 1e-1, 1e2
    xi_plot = np.ma.masked_invalid(np.clip(pd.xi_c, vmin, vmax))
    extent = (w2[0], w2[-1], b2[0], b2[-1])
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("0.85")
    im = ax.imshow(
        xi_plot,
        origin="lower",
        extent=extent,
        aspect="auto",
        cmap=cmap,
        norm=LogNorm(vmin=vmin, vmax=vmax),
        interpolation="nearest",
    )
    cb = fig.colorbar(im, ax=ax, pad=0.02)
    cb.set_label(r"correlation depth scale $\xi_c$ (layers)")

    q = np.ma.masked_invalid(pd.q_star)
    if q.count() > 4 and float(q.max()) > float(q.min()):
        # q* diverges where the q-map loses its fixed point: contour its bulk only
        levels = _nice_levels(float(q.min()), float(np.percentile(q.compressed(), 90)))
        cs = ax.contour(w2, b2, q, levels=levels, colors="white", linewidths=0.7, alpha=0.8)
        row = np.ma.filled(q[int(0.6 * (len(b2) - 1))], np.nan)
        spots = []
        for v in levels:  # one label per contour, at 60% height, away from the frame
            cross = np.flatnonzero(np.diff(np.sign(row - v)) != 0)
            if cross.size:
                spots.append((w2[cross[0]], b2[int(0.6 * (len(b2) - 1))]))
        ax.clabel(cs, fmt=lambda v: f"$q^*={v:g}$", fontsize=7, inline=True, manual=spots or False)

    eoc_w2, eoc_b2 = _eoc_line(act, b2, eoc_curve)
    if eoc_w2 is not None:
        inside = (eoc_w2 >= w2[0]) & (eoc_w2 <= w2[-1])
        ax.plot(eoc_w2[inside], eoc_b2[inside], color="red", lw=2.0, label=r"EOC ($\chi_1=1$)")
    elif act.homogeneous_gain is not None:
        w_eoc = 1.0 / act.homogeneous_gain
        ax.plot([w_eoc], [0.0], "o", color="red", ms=7, clip_on=False, label="EOC (σ_b = 0 only)")
    if np.any(~pd.finite):
        ax.plot([], [], "s", color="0.85", label=r"$q^l \to \infty$ (no finite $q^*$)")
    ax.set_xlabel(r"weight variance $\sigma_w^2$")
    ax.set_ylabel(r"bias variance $\sigma_b^2$")
    ax.set_title(f"Mean-field phase diagram: {act.name}")
    _label_phases(ax, pd, w2, b2)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ax.set_xlim(w2[0], w2[-1])
    ax.set_ylim(b2[0], b2[-1])
    try:
        save_figure(fig, path, fmt=fmt, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def _image_format(path: str) -> str:
    """The matplotlib format named by the suffix of ``path`` (``png`` without one); the
    directory must exist. Checked before the diagram is computed."""
    from matplotlib.backend_bases import FigureCanvasBase

    if not path:
        raise InvalidInput("the output path is empty")
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in supported:
        raise InvalidInput(
            f"cannot write a {suffix!r} image to {path!r}; use one of the suffixes "
            f"{', '.join('.' + k for k in sorted(supported))} (or none, for PNG)"
        )
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"{os.strerror(errno.ENOENT)} (directory)", path)
    return suffix or "png"


def _nice_levels(lo: float, hi: float) -> list[float]:
    import matplotlib.ticker as mticker

    lv = mticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    return [v for v in lv if lo < v < hi]


def _eoc_line(act, b2, eoc_curve):
    """EOC σ_w² along the σ_b² axis, or (None, None) where the activation has no EOC curve."""
    if act.homogeneous_gain is not None:
        return None, None
    sb = np.sqrt(b2)
    w2 = np.full(sb.shape, np.nan)
    try:
        w2[:] = eoc_curve(act, sb).sigma_w ** 2
    except ValueError:
        # part of the σ_b range has no EOC (e.g. GELU at small σ_b): solve point by point
        for i, s in enumerate(sb):
            try:
                w2[i] = float(eoc_curve(act, np.array([s])).sigma_w[0] ** 2)
            except ValueError:
                continue
    if not np.any(np.isfinite(w2)):
        return None, None
    return w2, b2


def _label_phases(ax, pd, w2, b2) -> None:
    chaotic = pd.chaotic
    ordered = pd.finite & ~chaotic
    for mask, text in ((ordered, "ordered"), (chaotic, "chaotic")):
        if mask.sum() < 0.15 * mask.size:  # label only phases wide enough for the text
            continue
        jj, ii = np.nonzero(mask.T)
        x = w2[int(np.median(jj))]
        y = b2[int(np.percentile(ii, 75))]
        ax.text(x, y, text, color="white", fontsize=11, ha="center", va="center", weight="bold")
