"""Per-layer flow: predicted against measured q^l and gradient-norm ratios (log scale)."""

from __future__ import annotations

import os

import numpy as np

from sigprop.validate import InvalidInput

__all__ = ["plot_layer_flow"]


def plot_layer_flow(
    prediction,
    path: str | os.PathLike,
    *,
    measurement=None,
    gradient_flow=None,
    title: str | None = None,
) -> str:
    """Two panels over the weight layers: q^l (predicted line, measured markers) and the
    backward ratios ‖δ^l‖²/‖δ^L‖² (predicted Π_{k>l} χ^k, measured from ``measurement`` and/or
    ``gradient_flow``; weight-gradient ratios too when ``gradient_flow`` is given), log scale.

    ``prediction`` is a ``Prediction``; ``measurement`` a ``Measurement``; ``gradient_flow`` a
    ``GradientFlow``; all for the same layers. Returns the path written.
    """
    from sigprop.plotting.report import figure, save, style

    names = tuple(prediction.names)
    for other, label in ((measurement, "measurement"), (gradient_flow, "gradient_flow")):
        if other is not None and tuple(other.names) != names:
            raise InvalidInput(f"{label} is for different layers than the prediction")
    layers = np.arange(1, len(names) + 1)
    with style():
        fig, axes = figure(2, width=3.6, height=2.8)
        ax = axes[0, 0]
        ax.plot(layers, prediction.q, "-", color="#000000", label="predicted")
        if measurement is not None:
            ax.plot(layers, measurement.q, "o", color="#D55E00", ms=4, label="measured")
        ax.set_yscale("log")
        ax.set_xlabel("layer l")
        ax.set_ylabel("q^l (pre-activation variance)")
        ax.legend()
        ax = axes[0, 1]
        ax.plot(layers, prediction.grad_ratio, "-", color="#000000", label="predicted Π χ")
        if measurement is not None:
            ax.plot(
                layers,
                measurement.grad_ratio,
                "o",
                color="#D55E00",
                ms=4,
                label="measured (probes)",
            )
        if gradient_flow is not None:
            ax.plot(
                layers,
                gradient_flow.delta_ratio,
                "s",
                color="#0072B2",
                ms=4,
                mfc="none",
                label="measured (loss)",
            )
            if gradient_flow.theory_grad_ratio is not None:
                ax.plot(
                    layers,
                    gradient_flow.theory_grad_ratio,
                    "--",
                    color="#009E73",
                    label="predicted ‖∇W‖²",
                )
            ax.plot(
                layers,
                gradient_flow.grad_ratio,
                "^",
                color="#009E73",
                ms=4,
                mfc="none",
                label="measured ‖∇W‖²",
            )
        ax.set_yscale("log")
        ax.set_xlabel("layer l")
        ax.set_ylabel("ratio to the last layer")
        ax.legend()
        if title:
            fig.suptitle(title)
        return str(save(fig, path))
