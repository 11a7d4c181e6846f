"""Signal-propagation plots (Brock et al. 2021, arXiv 2101.08692, §3): theory over measurement.

Per residual block (a model with residual sums) or per weight layer (a chain such as a VGG)
the plot shows, on a log scale against depth,

* the average channel squared mean, mean_c (mean over batch × space of x_c)²;
* the average channel variance, mean_c Var_{batch × space}(x_c);
* for residual blocks, the average channel variance of the residual branch (the input of
  the block's residual sum that is not the shortcut),

the engine's prediction as lines and the hooks' measurement as points, and a second panel
with the gradient flow: per weight layer ‖∇W ⊙ M‖² / ‖∇W_last ⊙ M_last‖² for the random
readout (the engine's backward convention, :mod:`sigprop.diagnostics.graph.nodes`).

:func:`signal_propagation_records` extracts the numbers (also what ``sigprop spp --json``
prints); :func:`plot_signal_propagation` draws them. Rows the prediction or the measurement
lacks are kept with ``None`` and listed in ``missing``: nothing is dropped silently.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["plot_signal_propagation", "signal_propagation_records"]

#: the quantities of the signal panel: (record key, label)
QUANTITIES = (
    ("avg_sq_ch_mean", "avg. channel squared mean"),
    ("avg_ch_var", "avg. channel variance"),
    ("branch_var", "residual-branch variance"),
)
#: name parts that mark a residual sum's input as the shortcut, not the branch
_SHORTCUT = frozenset({"downsample", "shortcut", "skip", "identity"})


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _branch(block: str, parts) -> str | None:
    """The residual branch among the sum's inputs: inside the block and not a shortcut
    (a shortcut projection such as torchvision's ``downsample``); the first such input."""
    inside = [p for p in parts if p and p.startswith(block + ".")]
    branch = [p for p in inside if not _SHORTCUT & set(p[len(block) + 1 :].split("."))]
    return branch[0] if branch else None


def _rel(pred: float | None, meas: float | None) -> float | None:
    if pred is None or meas is None or meas == 0:
        return None
    return abs(pred - meas) / abs(meas)


def signal_propagation_records(
    prediction, measurement, *, block_parts: Mapping[str, tuple] | None = None
) -> dict:
    """The numbers of the plot.

    Parameters
    ----------
    prediction, measurement
        :func:`sigprop.diagnostics.predict` and :func:`sigprop.diagnostics.measure` results
        of a graph spec (``describe(model, example_input)``): their ``nodes`` records.
    block_parts
        block name → module names of the residual sum's inputs
        (``describe(...).graph.block_parts``); without it no branch variance is shown.

    Returns
    -------
    dict
        ``unit`` ("block" or "layer"), ``rows`` (per block or weight layer: ``name``,
        ``branch``, ``predicted`` and ``measured`` dicts of ``q``, ``avg_sq_ch_mean``,
        ``avg_ch_var``, ``branch_var``, and ``q_rel_err``), ``gradients`` (per weight layer:
        ``name``, ``predicted``/``measured`` ``weight_grad_ratio``), ``missing`` (row or
        layer names without a predicted or measured record, with the side that lacks it)
        and ``q_median_rel_err`` over the rows with both sides.
    """
    pn, mn = dict(prediction.nodes or {}), dict(measurement.nodes or {})
    if not pn:
        raise ValueError("the prediction has no per-module records (describe with example_input)")
    blocks = tuple(prediction.blocks or ())
    parts = dict(block_parts or {})
    unit = "block" if blocks else "layer"
    names = blocks if blocks else tuple(prediction.names)
    rows, missing = [], []
    for name in names:
        branch = _branch(name, parts.get(name, ())) if blocks else None
        row = {"name": name, "branch": branch}
        for side, nodes in (("predicted", pn), ("measured", mn)):
            rec = nodes.get(name)
            if rec is None:
                missing.append({"name": name, "lacks": side})
            vals = {k: _num(rec.get(k)) if rec else None for k in ("q", *dict(QUANTITIES))}
            b = nodes.get(branch) if branch else None
            vals["branch_var"] = _num(b.get("avg_ch_var")) if b else None
            if branch and b is None:
                missing.append({"name": branch, "lacks": side})
            row[side] = vals
        row["q_rel_err"] = _rel(row["predicted"]["q"], row["measured"]["q"])
        rows.append(row)
    grads = []
    for name in prediction.names:
        p, m = pn.get(name), mn.get(name)
        if p is None or m is None:
            if name not in names:
                missing.append({"name": name, "lacks": "predicted" if p is None else "measured"})
            continue
        grads.append(
            {
                "name": name,
                "predicted": _num(p.get("weight_grad_ratio")),
                "measured": _num(m.get("weight_grad_ratio")),
            }
        )
    errs = sorted(r["q_rel_err"] for r in rows if r["q_rel_err"] is not None)
    median = None
    if errs:
        k = len(errs)
        median = errs[k // 2] if k % 2 else 0.5 * (errs[k // 2 - 1] + errs[k // 2])
    return {
        "unit": unit,
        "rows": rows,
        "gradients": grads,
        "missing": missing,
        "q_median_rel_err": median,
    }


def _series(rows, side: str, key: str):
    xs, ys = [], []
    for i, r in enumerate(rows):
        v = r[side][key]
        if v is not None and v > 0:  # a log axis shows no zero (train-mode BN's mean)
            xs.append(i)
            ys.append(v)
    return xs, ys


def plot_signal_propagation(
    prediction,
    measurement,
    path: str | os.PathLike,
    *,
    block_parts: Mapping[str, tuple] | None = None,
    title: str | None = None,
    records: dict | None = None,
    dpi: int = 150,
) -> Path:
    """Draw the signal-propagation plot (module doc) and save it atomically as a PNG.

    ``records`` is :func:`signal_propagation_records`'s result when already computed.
    Returns the path written. Zero values (the channel means after train-mode BatchNorm)
    cannot appear on the log axis and are left out of the drawing only (the records keep
    them).
    """
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    from sigprop.plotting.files import save_figure

    rec = records or signal_propagation_records(prediction, measurement, block_parts=block_parts)
    rows = rec["rows"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax, axg = fig.subplots(1, 2, width_ratios=(3, 2))
    colors = ("C0", "C1", "C2")
    for (key, label), color in zip(QUANTITIES, colors):
        xp, yp = _series(rows, "predicted", key)
        xm, ym = _series(rows, "measured", key)
        if not xp and not xm:
            continue
        if xp:
            ax.plot(xp, yp, "-", color=color, label=f"{label} (theory)")
        if xm:
            ax.plot(xm, ym, "o", color=color, ms=4, mfc="none", label=f"{label} (measured)")
    unit = rec["unit"]
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["name"] for r in rows], rotation=90, fontsize=6)
    ax.set_yscale("log")
    ax.set_xlabel("residual block" if unit == "block" else "weight layer (output)")
    ax.set_title("signal propagation (Brock et al. 2021)")
    ax.legend(fontsize=7)
    g = rec["gradients"]
    for side, style in (("predicted", "-"), ("measured", "o")):
        pts = [(i, r[side]) for i, r in enumerate(g) if r[side] is not None and r[side] > 0]
        if pts:
            axg.plot(*zip(*pts), style, color="C3", ms=4, mfc="none", label=side)
    axg.set_yscale("log")
    axg.set_xlabel("weight layer")
    axg.set_ylabel("‖∇W⊙M‖² / last layer's")
    axg.set_title("gradient flow")
    if g:
        axg.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, fmt="png", dpi=dpi)
