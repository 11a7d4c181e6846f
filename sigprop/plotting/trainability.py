"""The trainability figure: the prediction made before training against the outcome after it.

One row per split (validation, unseen, ...): the ROC curves of ``score`` and of the
baselines, the effective depth E against the final test accuracy (coloured by the label,
the calibrated budget B as a line), and the calibration of the score (fraction trained per
score bin). Rows come from :func:`sigprop.experiments.runs.trainability.load_split`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sigprop.validate import InvalidInput

__all__ = ["plot_trainability"]


def plot_trainability(
    splits: Mapping[str, list], path: str | os.PathLike, *, budget: float | None = None
) -> Path:
    """Draw ``splits`` (name → rows) as described in the module doc; returns the path."""
    from sklearn.metrics import roc_curve

    from sigprop.diagnostics.trainable.evaluation import (
        BASELINES,
        effective_depths,
        evaluate,
        label_runs,
    )
    from sigprop.diagnostics.trainable.rule import score_of_depth
    from sigprop.plotting.report import figure, save, style

    if not isinstance(splits, Mapping) or not splits:
        raise InvalidInput("no sweep results to plot")
    with style():
        fig, axes = figure(3, len(splits), width=3.4, height=2.9)
        for row, (name, rows) in enumerate(splits.items()):
            ev = evaluate(rows, budget)
            labels = label_runs(rows, ev.reference)
            e = effective_depths(rows)
            score = score_of_depth(e, ev.budget)
            ax = axes[row, 0]
            fpr, tpr, _ = roc_curve(labels, score)
            ax.plot(fpr, tpr, color="k", lw=1.6, label=f"score (AUC {ev.auc:.3f})")
            for i, (base, fn) in enumerate(BASELINES.items()):
                values = np.array([float(fn(r)) for r in rows])
                fpr, tpr, _ = roc_curve(labels, values)
                ax.plot(
                    fpr, tpr, lw=0.9, color=f"C{i}", label=f"{base} ({ev.baseline_auc[base]:.2f})"
                )
            ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=0.8)
            ax.set(
                xlabel="false positive rate",
                ylabel="true positive rate",
                title=f"{name}: {ev.n} runs, {ev.n_trained} trained",
            )
            ax.legend(fontsize=5.5, loc="lower right")
            ax = axes[row, 1]
            acc = np.array([r["final_test_accuracy"] or 0.0 for r in rows])
            finite = np.isfinite(e)
            cap = max(100.0, float(np.max(e[finite], initial=1.0)) * 1.5)
            x = np.where(finite, np.maximum(e, 1e-2), cap)
            for lab, colour, text in ((True, "C2", "trained"), (False, "C3", "did not train")):
                sel = labels == lab
                ax.scatter(x[sel], acc[sel], s=7, color=colour, alpha=0.7, label=text)
            ax.axvline(ev.budget, color="k", ls="--", lw=0.9, label=f"budget B = {ev.budget:g}")
            ax.set_xscale("log")
            ax.set(
                xlabel="effective depth E (e-folds; right edge: cut mask)",
                ylabel="final test accuracy",
            )
            ax.legend(fontsize=5.5, loc="upper right")
            ax = axes[row, 2]
            lo = np.array([b[0] for b in ev.calibration])
            hi = np.array([b[1] for b in ev.calibration])
            frac = np.array([b[3] for b in ev.calibration])
            count = [b[2] for b in ev.calibration]
            ax.bar((lo + hi) / 2, np.nan_to_num(frac), width=(hi - lo) * 0.9, color="C0")
            for xm, f, n in zip((lo + hi) / 2, frac, count):
                ax.text(xm, (0.0 if np.isnan(f) else f) + 0.02, str(n), ha="center", fontsize=6)
            ax.axvline(0.5, color="k", ls="--", lw=0.9)
            ax.set(
                xlim=(0, 1),
                ylim=(0, 1.1),
                xlabel="score",
                ylabel="fraction trained",
                title=f"accuracy {ev.accuracy:.2f}, confusion {list(map(list, ev.confusion))}",
            )
        return save(fig, path, dpi=120)
