"""The figures of ``sigprop demo`` (:mod:`sigprop.experiments.claims`): theory against
measurement for signal flow, layer collapse, Jacobian spectra and training.

Each function takes the plain numbers a section records (its ``results.json`` entry: dicts of
lists and floats), draws in the report style (:mod:`sigprop.plotting.report`), saves a PNG to
``path`` and returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sigprop.validate import InvalidInput

__all__ = [
    "plot_layer_collapse",
    "plot_signal_flow",
    "plot_spectra_by_variant",
    "plot_training_comparison",
]


def _finish(fig, path, title: str, *, legend=None, ncol: int = 5, below: float = 0.0) -> Path:
    """The figure's title, a shared legend below it (the handles of the axes ``legend``),
    saved as PNG; returns the path."""
    from sigprop.plotting.report import save

    if legend is not None:
        handles, labels = legend.get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=ncol,
            frameon=False,
            bbox_to_anchor=(0.5, below),
        )
    if title:
        fig.suptitle(title, fontsize=9)
    return save(fig, path)


def _nonempty(data: Mapping, what: str) -> None:
    if not isinstance(data, Mapping) or not data:
        raise InvalidInput(f"no {what} to plot")


def plot_signal_flow(
    phases: Mapping, path: str | os.PathLike, *, sigma_w: Mapping[str, float], title: str = ""
) -> Path:
    """Per-layer q^l, c^l and weight-gradient ratios (rows) for each phase (columns): theory
    as lines, measurements as circles, one colour per network variant.

    ``phases`` maps phase → variant → ``{"q_predicted", "q_measured", "c_predicted",
    "c_measured", "weight_grad_ratio_predicted", "weight_grad_ratio_measured"}`` (sequences
    over the weight layers; a ``None`` series is skipped); ``sigma_w`` maps phase → σ_w for
    the column titles.
    """
    from sigprop.plotting.report import PHASE_COLORS, VARIANT_COLORS, figure, style

    _nonempty(phases, "phases")
    names = list(phases)
    with style():
        fig, axes = figure(len(names), 3, width=3.0, height=2.3)
        for j, phase in enumerate(names):
            for variant, r in phases[phase].items():
                color = VARIANT_COLORS[variant]
                layers = np.arange(1, len(r["q_predicted"]) + 1)
                for i, (key, ylog) in enumerate(
                    (("q", True), ("c", False), ("weight_grad_ratio", True))
                ):
                    ax = axes[i, j]
                    pred, meas = r[f"{key}_predicted"], r[f"{key}_measured"]
                    if pred is None or meas is None:
                        continue
                    ax.plot(layers, pred, "-", color=color, lw=1.2, label=f"{variant} (theory)")
                    ax.plot(
                        layers,
                        meas,
                        "o",
                        color=color,
                        ms=3,
                        mfc="none",
                        label=f"{variant} (measured)",
                    )
                    if ylog:
                        ax.set_yscale("log")
            axes[0, j].set_title(
                f"{phase} (σ_w² = {sigma_w[phase] ** 2:.3g})", color=PHASE_COLORS.get(phase)
            )
            axes[0, j].set_ylabel(r"$q^l$ (pre-activation variance)")
            axes[1, j].set_ylabel(r"$c^l$ (correlation of an input pair)")
            axes[2, j].set_ylabel(
                r"$\|\partial L/\partial W^l\|^2\,/\,\|\partial L/\partial W^L\|^2$"
            )
            axes[2, j].set_xlabel("layer $l$")
        return _finish(fig, path, title, legend=axes[0, 0], ncol=6, below=-0.04)


def plot_layer_collapse(results: Mapping, path: str | os.PathLike, *, title: str = "") -> Path:
    """Two panels: per-layer kept fraction of each method at the lowest density (with the
    theory's curve for global magnitude pruning, dashed), and effective against direct
    density per method (Vysogorets & Kempe, arXiv 2107.02306).

    ``results`` holds ``"layers"`` (names), ``"sizes"`` (weights per layer), ``"runs"``
    (label → ``{"method", "density", "layer_density", "effective_sparsity"}``) and
    ``"theory"["magnitude_layer_density"]`` (density as ``f"{d:g}"`` → kept fraction per
    layer).
    """
    from sigprop.plotting.report import METHOD_COLORS, figure, style

    runs = results["runs"]
    _nonempty(runs, "pruning runs")
    densities = sorted({r["density"] for r in runs.values()})
    lowest = densities[0]
    with style():
        fig, axes = figure(2, 1, width=3.8, height=2.9)
        ax = axes[0, 0]
        layers = np.arange(1, len(results["layers"]) + 1)
        floor = 0.5 / max(results["sizes"])  # where an empty layer is drawn on the log axis
        for r in runs.values():
            if r["density"] != lowest:
                continue
            d = np.maximum(np.asarray(r["layer_density"], dtype=float), floor)
            ax.plot(layers, d, "-o", ms=3, color=METHOD_COLORS.get(r["method"]), label=r["method"])
        curve = results["theory"]["magnitude_layer_density"].get(f"{lowest:g}")
        if curve is not None:
            ax.plot(layers, np.maximum(curve, floor), "k--", lw=1, label="magnitude (theory)")
        ax.axhline(floor, color="0.5", lw=0.8, ls=":")
        ax.text(layers[0], floor * 1.3, "layer empty", fontsize=7, color="0.4")
        ax.set_yscale("log")
        ax.set_xlabel("layer $l$")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("fraction of layer $l$ kept")
        ax.set_title(f"per-layer density at global density {lowest:g}")
        ax.legend(frameon=False, fontsize=7)
        ax = axes[0, 1]
        for method in dict.fromkeys(r["method"] for r in runs.values()):
            pts = [
                (r["density"], 1.0 - r["effective_sparsity"])
                for r in runs.values()
                if r["method"] == method and r["effective_sparsity"] is not None
            ]
            if not pts:
                continue
            x, y = np.array(sorted(pts)).T
            ax.plot(
                x, np.maximum(y, floor), "-o", ms=3, color=METHOD_COLORS.get(method), label=method
            )
        lim = [min(densities) / 2, 1.0]
        ax.plot(lim, lim, color="0.6", lw=0.8, ls="--", label="effective = direct")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("density ρ (fraction kept)")
        ax.set_ylabel("effective density")
        ax.set_title("kept and on an input→output path")
        ax.legend(frameon=False, fontsize=7)
        return _finish(fig, path, title)


def plot_spectra_by_variant(variants: Mapping, path: str | os.PathLike, *, title: str = "") -> Path:
    """One panel per network: histogram of log10 λ (λ = squared singular value of the
    Jacobian) with the free-probability law mapped to log10 λ, p(log10 λ) = ln(10) λ ρ(λ)
    (Pennington et al., arXiv 1711.04735), and the predicted m₁ as a dotted line.

    ``variants`` maps name → ``{"squared_singular_values", "dtype", "m1_predicted",
    "m1_measured", "law_x", "law_density"}`` (``law_x`` ``None`` without a law). Values below
    the SVD's resolution floor (:func:`sigprop.diagnostics.compare.resolution_floor`) are
    round-off and left out of the histogram, which stays normalised to all values (like the
    law). (:func:`sigprop.plotting.spectra.plot_jacobian_spectrum` draws one spectrum on a
    linear axis, with atoms.)
    """
    from sigprop.diagnostics.compare import resolution_floor
    from sigprop.plotting.report import VARIANT_COLORS, figure, style

    _nonempty(variants, "spectra")
    with style():
        fig, axes = figure(len(variants), 1, width=3.0, height=2.5)
        for j, (variant, r) in enumerate(variants.items()):
            ax = axes[0, j]
            lam = np.asarray(r["squared_singular_values"], dtype=float)
            floor = resolution_floor(lam, dtype=r["dtype"])
            lam = lam.ravel()
            n_all = lam.size
            lam = lam[lam > floor]
            color = VARIANT_COLORS[variant]
            if lam.size:
                counts, edges = np.histogram(np.log10(lam), bins=40)
                ax.stairs(
                    counts / (n_all * np.diff(edges)),
                    edges,
                    fill=True,
                    color=color,
                    alpha=0.35,
                    label="measured",
                )
            if r["law_x"] is not None:
                x = np.asarray(r["law_x"], dtype=float)
                rho = np.asarray(r["law_density"], dtype=float)
                ok = (x > floor) & np.isfinite(rho)
                ax.plot(
                    np.log10(x[ok]),
                    np.log(10) * x[ok] * rho[ok],
                    "-",
                    color=color,
                    lw=1.3,
                    label="free probability",
                )
            ax.axvline(np.log10(r["m1_predicted"]), color="0.3", ls=":", lw=1, label="m₁ predicted")
            ax.set_title(f"{variant}: m₁ pred {r['m1_predicted']:.3g}, meas {r['m1_measured']:.3g}")
            ax.set_xlabel(r"$\log_{10}\lambda$ ($\lambda$: squared singular value of $J$)")
            ax.set_ylabel(r"density of $\log_{10}\lambda$")
            ax.legend(frameon=False, loc="upper left")
        return _finish(fig, path, title)


def plot_training_comparison(
    runs: Mapping,
    path: str | os.PathLike,
    *,
    chance: float | None = None,
    labels: Mapping[str, str] | None = None,
    title: str = "",
) -> Path:
    """Training loss and test accuracy per epoch of several networks, one colour per
    variant (``VARIANT_COLORS``), with the chance level as a dotted line.

    ``runs`` maps variant → ``{"train_loss", "test_accuracy"}`` (per epoch); ``labels``
    names the variants in the legend. (:func:`sigprop.plotting.training.plot_learning_curves`
    draws train and test curves of arbitrary runs.)
    """
    from sigprop.plotting.report import VARIANT_COLORS, figure, style

    _nonempty(runs, "training runs")
    labels = dict(labels or {})
    with style():
        fig, axes = figure(2, 1, width=3.3, height=2.5)
        for name, r in runs.items():
            epochs = np.arange(1, len(r["test_accuracy"]) + 1)
            color = VARIANT_COLORS[name]
            label = labels.get(name, name)
            axes[0, 0].plot(epochs, r["train_loss"], "-o", color=color, ms=3, label=label)
            axes[0, 1].plot(epochs, r["test_accuracy"], "-o", color=color, ms=3, label=label)
        if chance is not None:
            axes[0, 1].axhline(chance, color="0.5", ls=":", lw=1, label="chance")
        axes[0, 0].set_ylabel("training loss (cross-entropy)")
        axes[0, 1].set_ylabel("test accuracy")
        for ax in axes[0]:
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
        return _finish(fig, path, title, legend=axes[0, 1], ncol=5, below=-0.08)
