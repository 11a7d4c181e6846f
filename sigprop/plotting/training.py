"""Training figures: learning curves, recorder series, accuracy against density per method.

All functions draw with matplotlib's Agg backend in the report style
(:mod:`sigprop.plotting.report`), save a PNG to ``path`` and return the path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sigprop.validate import InvalidInput, InvalidType

__all__ = ["plot_accuracy_vs_density", "plot_learning_curves", "plot_recorder"]


def _as_dict(result) -> dict:
    if isinstance(result, Mapping):
        return dict(result)
    to_dict = getattr(result, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise InvalidInput(f"expected a TrainResult or its to_dict(), got {type(result).__name__}")


def _series(values) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def plot_learning_curves(
    results,
    path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Loss and accuracy per epoch of one or several training runs.

    ``results`` is a :class:`~sigprop.experiments.train.TrainResult` (or its ``to_dict()``)
    or a sequence of them; ``labels`` names each run in the legend. Left panel: training
    loss (dashed, averaged over the epoch's mini-batches) and test loss (solid); right
    panel: the same for accuracy (omitted for regression runs). A diverged run ends with a
    cross at its last completed epoch.
    """
    if isinstance(results, Mapping) or hasattr(results, "to_dict"):
        results = [results]
    runs = [_as_dict(r) for r in results]
    if not runs:
        raise InvalidInput("no training results to plot")
    if labels is None:
        labels = [f"run {i}" for i in range(len(runs))] if len(runs) > 1 else [""]
    if len(labels) != len(runs):
        raise InvalidInput(f"{len(labels)} labels for {len(runs)} results")
    has_acc = any(r["test_accuracy"] for r in runs)

    from sigprop.plotting.report import figure, save, style

    with style():
        fig, axes = figure(2 if has_acc else 1, width=3.4, height=2.6)
        panels = [("loss", axes[0, 0])] + ([("accuracy", axes[0, 1])] if has_acc else [])
        for i, (run, label) in enumerate(zip(runs, labels)):
            color = f"C{i % 10}"
            for metric, ax in panels:
                test = _series(run[f"test_{metric}"])
                train = _series(run[f"train_{metric}"])
                epochs = range(1, len(test) + 1)
                name = f"{label} " if label else ""
                if train:
                    ax.plot(epochs, train, "--", color=color, label=f"{name}train")
                if test:
                    ax.plot(epochs, test, "-", color=color, label=f"{name}test")
                    if run.get("diverged"):
                        ax.plot([len(test)], [test[-1]], "x", color=color, markersize=7)
        for metric, ax in panels:
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
            ax.legend()
        axes[0, 0].set_yscale("log")
        if title:
            fig.suptitle(title)
        return save(fig, path)


def plot_recorder(
    result,
    recorder: str,
    path: str | os.PathLike,
    *,
    log: bool = True,
    per_epoch: bool = False,
    title: str | None = None,
) -> Path:
    """Per-layer series of a recorder over training (one line per weight layer).

    ``recorder`` is a recorder name in ``result.recorders``: ``"gradient_norm"`` (the
    gradient-norm flow; on a log axis the layers of an ordered-phase network are separated
    by factors χ₁^{1/2} at initialisation, Schoenholz et al., arXiv 1611.01232, §3),
    ``"preactivation"`` (q^l) or ``"density"`` (kept weights: DSR's reallocation). The
    x-axis is the optimiser step, or the epoch with ``per_epoch=True``.
    """
    run = _as_dict(result)
    recs = run.get("recorders") or {}
    if recorder not in recs:
        raise InvalidInput(f"no recorder {recorder!r} in the result (have {sorted(recs)})")
    data = recs[recorder]
    if "values" not in data or "steps" not in data:
        raise InvalidInput(f"recorder {recorder!r} has no per-layer series to plot")
    steps = list(data["steps"])
    x = [s / run["steps_per_epoch"] for s in steps] if per_epoch else steps

    from sigprop.plotting.report import figure, save, style

    ylabel = {
        "gradient_norm": "‖∂L/∂W‖",
        "preactivation": "q (pre-activation second moment)",
        "density": "kept weights",
    }.get(recorder, recorder)
    with style():
        fig, axes = figure(width=4.2, height=2.8)
        ax = axes[0, 0]
        layers = list(data["values"])
        for i, name in enumerate(layers):
            ax.plot(x, _series(data["values"][name]), color=f"C{i % 10}", label=name)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("epoch" if per_epoch else "step")
        ax.set_ylabel(ylabel)
        ax.legend(title="layer", ncol=2 if len(layers) > 6 else 1)
        if title:
            ax.set_title(title)
        return save(fig, path)


def plot_accuracy_vs_density(
    rows,
    path: str | os.PathLike,
    *,
    metric: str = "final_test_accuracy",
    group: str = "method",
    x: str = "density",
    where: Mapping | None = None,
    dense: float | None = None,
    title: str | None = None,
) -> Path:
    """Accuracy against density, one line per method, mean ± standard deviation over seeds.

    ``rows`` are sweep rows as plain dicts (``key``, ``status``, ``params``, ``result``), one
    per run: the experiments side loads and deduplicates them
    (``sigprop.experiments.sweep.plot_accuracy_vs_density`` takes a results file). Only
    ``ok`` rows count. ``group`` is the parameter that makes the lines (default
    ``"method"``); ``x`` is a parameter or a result key (``"density"``,
    ``"density_actual"``, ``"effective_density"``), drawn on a log axis; ``where`` keeps
    rows whose parameters equal the given values (e.g. ``{"depth": 8}``). ``dense`` draws
    the dense baseline's accuracy as a horizontal line. Points are means over the rows
    sharing (group, x) — the seeds — with sample standard deviations as error bars.
    """
    from sigprop.plotting.report import METHOD_COLORS, figure, save, style

    if isinstance(rows, str | bytes | os.PathLike) or not isinstance(rows, Iterable):
        raise InvalidType(
            "rows must be a list of sweep rows (load a results file with "
            "sigprop.experiments.sweep.load_results)"
        )
    rows = [r for r in rows if isinstance(r, Mapping) and r.get("status") == "ok"]
    where = dict(where or {})
    rows = [r for r in rows if all(r["params"].get(k) == v for k, v in where.items())]
    points: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        params, result = r["params"], r["result"] or {}
        xv = params.get(x, result.get(x))
        yv = result.get(metric)
        if xv is None or yv is None or group not in params:
            continue
        points.setdefault(str(params[group]), {}).setdefault(float(xv), []).append(float(yv))
    if not points:
        raise InvalidInput(
            f"no ok rows with parameter {group!r}, x {x!r} and result {metric!r} to plot"
            + (f" where {where}" if where else "")
        )
    with style():
        fig, axes = figure(width=3.8, height=2.8)
        ax = axes[0, 0]
        for i, (name, by_x) in enumerate(sorted(points.items())):
            xs = sorted(by_x)
            means = [sum(by_x[v]) / len(by_x[v]) for v in xs]
            stds = [
                math.sqrt(sum((y - m) ** 2 for y in by_x[v]) / (len(by_x[v]) - 1))
                if len(by_x[v]) > 1
                else 0.0
                for v, m in zip(xs, means)
            ]
            color = METHOD_COLORS.get(name, f"C{i % 10}")
            ax.errorbar(xs, means, yerr=stds, marker="o", color=color, capsize=2, label=name)
        if dense is not None:
            ax.axhline(dense, color="black", linestyle=":", linewidth=1, label="dense")
        ax.set_xscale("log")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(metric.replace("_", " "))
        ax.legend(title=group)
        if title:
            ax.set_title(title)
        return save(fig, path)
