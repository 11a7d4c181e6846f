"""Jacobian spectra: empirical squared singular values over the free-probability law.

The histogram is of the eigenvalues of JJᵀ pooled over inputs (``JacobianSpectrum.squared``);
the curve is the continuous part of the predicted law (Pennington, Schoenholz & Ganguli
2017, arXiv 1711.04735, Fig. 2 style), and its atoms (e.g. ReLU's mass at 0) are listed
with the fraction of measured values that sit on them.
"""

from __future__ import annotations

import os

import numpy as np

from sigprop.validate import InvalidInput

__all__ = ["plot_jacobian_spectrum"]


def plot_jacobian_spectrum(
    spectrum,
    path: str | os.PathLike,
    *,
    law=None,
    bins: int = 60,
    zero_tol: float | None = None,
    title: str | None = None,
) -> str:
    """Histogram of ``spectrum``'s squared singular values with the predicted ``law`` over it.

    Parameters
    ----------
    spectrum: a ``JacobianSpectrum`` with all singular values (``method`` not ``"lanczos"``).
    path: the PNG to write.
    law: a ``sigprop.theory.spectra.JacobianDensity`` (``Prediction.jacobian_density``) or
        ``None`` for the histogram alone.
    zero_tol: values at round-off level (below
        :func:`sigprop.diagnostics.compare.resolution_floor`, by default (N·ε)² times the
        largest, ε of ``spectrum.dtype``) are counted as zeros and reported instead of
        histogrammed.

    Returns the path written.
    """
    from sigprop.diagnostics.compare import resolution_floor
    from sigprop.plotting.report import figure, save, style

    if spectrum.method == "lanczos":
        raise InvalidInput(
            "a Lanczos spectrum has only the top singular values; use method='exact'"
        )
    if bins < 1:
        raise InvalidInput(f"bins must be ≥ 1, got {bins}")
    raw = np.asarray(spectrum.squared)
    values = raw.astype(np.float64).ravel()
    zeros = values <= resolution_floor(raw, zero_tol, dtype=spectrum.dtype)
    frac_zero = float(zeros.mean())
    # histogram normalised to the total count, so it is comparable with the continuous part
    # of a law that also has atoms
    with style():
        fig, axes = figure(width=4.2, height=3.0)
        ax = axes[0, 0]
        kept = values[~zeros]
        hist_weights = np.full(kept.size, 1.0 / values.size)
        upper = max(kept.max() if kept.size else 1.0, float(law.edge) if law is not None else 0.0)
        edges = np.linspace(0.0, upper * 1.02, bins + 1)
        ax.hist(
            kept,
            bins=edges,
            weights=hist_weights / np.diff(edges)[0],
            color="#999999",
            alpha=0.7,
            label=f"measured ({spectrum.singular_values.shape[0]} inputs)",
        )
        lines = []
        if frac_zero > 0:
            lines.append(f"measured mass at 0: {frac_zero:.3f}")
        if law is not None:
            x = np.asarray(law.x)
            ax.plot(x, np.asarray(law.density), color="#D55E00", lw=1.4, label="free probability")
            for atom, mass in zip(np.asarray(law.atoms), np.asarray(law.atom_masses)):
                lines.append(f"predicted atom at {atom:.3g}: mass {mass:.3f}")
            finite = np.asarray(law.density)[x > 0.02 * upper]
            if finite.size:  # the density may diverge at 0: scale the axis to the bulk
                ax.set_ylim(0, 1.3 * max(float(finite.max()), _hist_peak(kept, edges, values.size)))
        if lines:
            ax.text(
                0.98,
                0.75,
                "\n".join(lines),
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
            )
        ax.set_xlabel("squared singular value of J")
        ax.set_ylabel("density")
        ax.set_title(title or "Input–output Jacobian spectrum")
        ax.legend(loc="upper right")
        return str(save(fig, path))


def _hist_peak(kept: np.ndarray, edges: np.ndarray, total: int) -> float:
    counts, _ = np.histogram(kept, bins=edges)
    return float(counts.max() / total / np.diff(edges)[0]) if counts.size else 1.0
