"""Shared helpers for reports and report figures: one figure style, Markdown tables, saving.

Used by ``sigprop demo`` (:mod:`sigprop.experiments.demo`) and the notebooks. Everything uses
matplotlib's Agg backend and writes files; nothing is shown on screen.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from sigprop.validate import InvalidInput

#: Colours of the network variants compared throughout the demo (colour-blind safe, Okabe-Ito).
VARIANT_COLORS = {
    "dense": "#000000",
    "pruned": "#D55E00",
    "rescaled": "#0072B2",
    "dct": "#009E73",
}
#: Colours of the three phases of the mean-field theory.
PHASE_COLORS = {"ordered": "#0072B2", "eoc": "#000000", "chaotic": "#D55E00"}
#: Colours of the pruning methods.
METHOD_COLORS = {
    "random": "#999999",
    "magnitude": "#E69F00",
    "snip": "#56B4E9",
    "grasp": "#009E73",
    "synflow": "#CC79A7",
    "synflow, biases in R": "#8C4A75",
}

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "figure.dpi": 100,
    "savefig.dpi": 150,
}


def style():
    """Context manager with the report style; draw and save figures inside it.

    >>> with style():  # doctest: +SKIP
    ...     fig, axes = figure(2)
    ...     axes[0, 0].plot([0, 1])
    ...     save(fig, "out.png")
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    return matplotlib.rc_context(_STYLE)


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 3.2, height: float = 2.6, **kw):
    """A new figure; returns ``(fig, axes)`` with ``axes`` always a 2-D array."""
    import matplotlib.pyplot as plt

    return plt.subplots(
        nrows,
        ncols,
        figsize=(width * ncols, height * nrows),
        squeeze=False,
        constrained_layout=True,
        **kw,
    )


def save(fig, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Save ``fig`` at ``dpi`` atomically (format from the suffix, PNG without one), close it,
    and return the path."""
    import matplotlib.pyplot as plt

    from sigprop.plotting.files import save_figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_figure(
            fig, path, fmt=path.suffix.lstrip(".").lower() or "png", dpi=dpi, bbox_inches="tight"
        )
    finally:
        plt.close(fig)
    return path


def fmt(x: float | int | None, digits: int = 3) -> str:
    """A number for a Markdown table: ``digits`` significant digits, scientific when tiny/huge."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0.0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{max(digits - 1, 1)}e}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; floats go through :func:`fmt`, and a ``|`` inside a
    cell (|b|, |W|) is escaped so that it does not split the cell."""

    def cell(c: object) -> str:
        return (fmt(c) if isinstance(c, (float, int)) else str(c)).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, headers)) + " |"]
    lines.append("|" + "|".join(" --- " for _ in headers) + "|")
    for row in rows:
        cells = [cell(c) for c in row]
        if len(cells) != len(headers):
            raise InvalidInput(f"row has {len(cells)} cells, the table {len(headers)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
