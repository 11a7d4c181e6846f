"""Per-layer density of a pruned network: direct (kept/total) against effective (kept weights
on an input-output path / total), as in Vysogorets & Kempe (arXiv 2107.02306, Fig. 1).
Collapsed layers (nothing kept) and layers off every path are marked."""

from __future__ import annotations

import os
from pathlib import Path

from sigprop.validate import InvalidInput


def plot_collapse(report, path: str | os.PathLike, *, log: bool = False, dpi: int = 150) -> Path:
    """Bar chart of direct and effective density per layer of a
    :class:`sigprop.diagnostics.collapse.CollapseReport`; saved to ``path`` (PNG).

    ``log=True`` uses a logarithmic density axis (useful at extreme sparsity; zero
    densities are then drawn at the axis floor). Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from sigprop.plotting.report import figure, save, style

    layers = list(report.layers)
    if not layers:
        raise InvalidInput("the report has no layers to plot")
    names = [layer.name for layer in layers]
    direct = np.array([layer.density for layer in layers])
    has_effective = report.effective_sparsity is not None
    effective = np.array([layer.effective_density for layer in layers])
    x = np.arange(len(layers))
    with style():
        fig, axes = figure(width=max(3.2, 0.45 * len(layers) + 1.5), height=2.8)
        ax = axes[0, 0]
        floor = 0.0
        if log:
            positive = np.concatenate([direct[direct > 0], effective[effective > 0]])
            floor = float(positive.min()) / 3 if positive.size else 1e-6
            ax.set_yscale("log")
            ax.set_ylim(floor, 1.5)
        width = 0.4 if has_effective else 0.7
        ax.bar(
            x - (width / 2 if has_effective else 0),
            np.maximum(direct, floor),
            width,
            color="#999999",
            label="direct density",
        )
        if has_effective:
            ax.bar(
                x + width / 2,
                np.maximum(effective, floor),
                width,
                color="#D55E00",
                label="effective density",
            )
        top = 1.5 if log else 1.05
        for i, layer in enumerate(layers):
            if layer.collapsed:
                ax.annotate("collapsed", (i, top), ha="center", va="top", fontsize=7, rotation=90)
            elif has_effective and layer.effectively_collapsed:
                ax.annotate("no path", (i, top), ha="center", va="top", fontsize=7, rotation=90)
        if not log:
            ax.set_ylim(0, 1.05)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_ylabel("fraction of weights kept")
        title = f"sparsity {100 * report.sparsity:.1f}%"
        if has_effective:
            title += f", effective {100 * report.effective_sparsity:.1f}%"
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return save(fig, path, dpi=dpi)
