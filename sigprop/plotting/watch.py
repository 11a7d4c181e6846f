"""Figures of a :func:`sigprop.watch` log: gradient flow over training, DSR's density
reallocation, theory beside measurement at initialisation.

Drawn with matplotlib's Agg backend in the report style (:mod:`sigprop.plotting.report`);
the function saves a PNG and returns its path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sigprop.validate import InvalidInput

__all__ = ["plot_watch"]


def plot_watch(log, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw a watcher log.

    ``log`` is a :class:`sigprop.watcher.WatchLog` or a log folder / file (read with
    :func:`sigprop.watcher.read_log` and its bounds). Panels:

    1. gradient flow: a heat map of log₁₀ ‖∂L/∂W^l‖, weight layer × step (first layer at
       the top). In the ordered phase the norms fall by a factor χ₁^{1/2} per layer towards
       the input (Schoenholz et al., arXiv 1611.01232, §3), so the map shows vanishing or
       exploding gradients as a vertical gradient of colour;
    2. density of every layer over training (the reallocation of DSR, Mostafa & Wang,
       arXiv 1902.05967, Alg. 1, or any regrowth), with the model's effective density
       (Vysogorets & Kempe, arXiv 2107.02306) where the log has collapse checks;
    3. with a prediction in the log: predicted q^l and ‖∂L/∂W^l‖²/‖∂L/∂W^L‖² beside the
       measured ones (q at step 0, or its first record; gradients at the first record that
       has them).
    """
    from sigprop.watcher import WatchLog, read_log

    if not isinstance(log, WatchLog):
        log = read_log(log)
    grad = log.values["grad_norm"]
    has_grad = ~np.all(np.isnan(grad), axis=1)
    if not has_grad.any():
        raise InvalidInput(f"{log.path}: the log has no gradient norms to draw")
    pred = {n: v for n, v in log.predicted.items() if n in log.layers}

    from sigprop.plotting.report import figure, save, style

    n_panels = 3 if pred else 2
    with style():
        fig, axes = figure(n_panels, width=3.6, height=2.9)
        _gradient_map(fig, axes[0, 0], log, has_grad)
        _densities(axes[0, 1], log)
        if pred:
            _theory(axes[0, 2], log, pred, has_grad)
        if title:
            fig.suptitle(title)
        return save(fig, path)


def _edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around each recorded step (midpoints; the ends extend by half a gap)."""
    s = steps.astype(float)
    if s.size == 1:
        return np.array([s[0] - 0.5, s[0] + 0.5])
    mid = (s[1:] + s[:-1]) / 2
    return np.concatenate([[s[0] - (mid[0] - s[0])], mid, [s[-1] + (s[-1] - mid[-1])]])


def _gradient_map(fig, ax, log, has_grad) -> None:
    steps = log.steps[has_grad]
    grad = log.values["grad_norm"][has_grad]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(grad > 0, np.log10(grad), np.nan).T  # (layers, steps)
    z = np.ma.masked_invalid(z)
    mesh = ax.pcolormesh(
        _edges(steps), np.arange(len(log.layers) + 1), z, cmap="viridis", shading="flat"
    )
    ax.set_ylim(len(log.layers), 0)  # the first layer at the top
    ax.set_yticks(np.arange(len(log.layers)) + 0.5)
    ax.set_yticklabels(_short(log.layers), fontsize=6 if len(log.layers) > 12 else 7.5)
    ax.set_xlabel("step")
    ax.set_ylabel("layer")
    ax.set_title("gradient flow")
    ax.grid(False)
    fig.colorbar(mesh, ax=ax, label="log10 ‖∂L/∂W‖")


def _densities(ax, log) -> None:
    density = log.values["density"]
    for j, name in enumerate(log.layers):
        ok = ~np.isnan(density[:, j])
        if ok.any():
            ax.plot(log.steps[ok], density[ok, j], color=f"C{j % 10}", label=_short([name])[0])
    eff = [(s, c["effective_density"]) for s, c in log.collapse if c.get("effective_density")]
    if eff:
        xs, ys = zip(*eff)
        ax.plot(xs, ys, "k--", marker="o", label="model, effective")
    finite = density[np.isfinite(density) & (density > 0)]
    if finite.size and finite.max() > 10 * finite.min():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("density (fraction kept)")
    ax.set_title("density per layer")
    if len(log.layers) <= 12 or eff:
        ax.legend(ncol=2 if len(log.layers) > 6 else 1, loc="best")


def _theory(ax, log, pred, has_grad) -> None:
    names = [n for n in log.layers if n in pred]
    idx = [log.layers.index(n) for n in names]
    x = np.arange(1, len(names) + 1)
    q_pred = np.array([pred[n].get("q", np.nan) for n in names], dtype=float)
    q = log.values["q"][:, idx]
    q_rows = np.flatnonzero(~np.all(np.isnan(q), axis=1))
    if np.isfinite(q_pred).any():
        ax.plot(x, q_pred, "-", color="C0", label="q, theory")
    if q_rows.size:
        ax.plot(x, q[q_rows[0]], "o", color="C0", label=f"q, step {log.steps[q_rows[0]]}")
    ratio_pred = np.array([pred[n].get("weight_grad_ratio", np.nan) for n in names], dtype=float)
    first = np.flatnonzero(has_grad)[0]
    g = log.values["grad_norm"][first, idx]
    if np.isfinite(ratio_pred).any() and np.isfinite(g[-1]) and g[-1] > 0:
        ax.plot(x, ratio_pred, "-", color="C3", label="‖∇W‖² ratio, theory")
        ax.plot(x, (g / g[-1]) ** 2, "s", color="C3", label=f"‖∇W‖² ratio, step {log.steps[first]}")
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_title("theory vs measurement")
    ax.legend()


def _short(names) -> list[str]:
    return [n if len(n) <= 18 else "…" + n[-17:] for n in names]
