"""Validating ``sigprop.diagnostics.trainability`` on the trainability sweeps.

The rows are the ``trainability_case`` runs of ``examples/trainability/<split>/*.toml``
(``calibration``, ``validation``, ``unseen``). Each row holds the prediction made before
training and the accuracies after it.

**Label.** A run *trained* when its final test accuracy recovers at least half of what the
shallowest dense network learns above chance on the same data and budget:

    trained ⇔ acc ≥ chance + ½ (acc_ref − chance),

acc_ref the mean final test accuracy of the split's dense depth-2 MLPs at the edge of chaos
on that dataset (digits ≈ 0.93 → 0.52; mnist1d ≈ 0.37 → 0.24; the teacher task, 4 classes).
It asks whether the network learns at all, not how well; it is fixed before looking at any
prediction and is the same for every split.

**Metrics.** ROC AUC of ``score`` (threshold-free; ``sklearn.metrics``) with its standard
error (Hanley & McNeil 1982), the confusion matrix
and accuracy of ``trainable``, a calibration table (fraction trained per score bin), the
AUC of the baselines a practitioner would use (the density; "no layer collapsed"; SNIP's
and GraSP's score sums over the kept weights), and the runs the rule gets wrong with its
reasons.

**Calibration.** :func:`calibrate_budget` picks the depth budget B of
:mod:`sigprop.diagnostics.trainable.rule` that maximises the balanced accuracy of
E ≤ B on the calibration split only (the midpoint of the best interval of E); it is never
refitted on the other splits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from sigprop.validate import InvalidInput

__all__ = [
    "BASELINES",
    "TrainabilityEvaluation",
    "auc_standard_error",
    "calibrate_budget",
    "effective_depths",
    "evaluate",
    "label_runs",
    "reference_accuracy",
]

#: Baselines: name → (row → score, higher = predicted more trainable).
BASELINES = {
    "density": lambda r: r["density_actual"],
    "no layer collapsed": lambda r: float(
        r["connected"] is not False and r["collapsed_layers"] == 0
    ),
    "SNIP score sum": lambda r: r["snip_sum"],
    "GraSP score sum": lambda r: r["grasp_sum"],
}


def _is_reference(r: Mapping) -> bool:
    return (
        r["method"] == "dense"
        and r["model"] == "mlp"
        and r["depth"] == 2
        and r["sigma_w2_ratio"] == 1.0
        and r.get("layer", "masked") == "masked"
    )


def reference_accuracy(rows: Iterable[Mapping]) -> dict[str, float]:
    """Dataset → mean final test accuracy of its dense depth-2 EOC MLPs (module doc)."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        if _is_reference(r):
            acc.setdefault(r["dataset"], []).append(r["final_test_accuracy"])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def label_runs(rows: list[Mapping], reference: Mapping[str, float] | None = None) -> np.ndarray:
    """Boolean "trained" per row (module doc); ``reference`` defaults to the rows' own."""
    ref = reference_accuracy(rows) if reference is None else dict(reference)
    out = np.zeros(len(rows), dtype=bool)
    for i, r in enumerate(rows):
        if r["dataset"] not in ref:
            raise InvalidInput(
                f"no dense depth-2 reference run for dataset {r['dataset']!r} in this split"
            )
        chance = r["chance"]
        threshold = chance + 0.5 * (ref[r["dataset"]] - chance)
        acc = r["final_test_accuracy"]
        out[i] = acc is not None and math.isfinite(acc) and acc >= threshold
    return out


def effective_depths(rows: Iterable[Mapping]) -> np.ndarray:
    """E per row, ``inf`` where the mask cuts the network (score 0; the rule's ``is_cut``
    on the row's ``connected``, ``effective_density`` and ``collapsed_layers`` count)."""
    from sigprop.diagnostics.trainable.rule import is_cut

    return np.array(
        [
            math.inf
            if is_cut(r["connected"], r["effective_density"], r["collapsed_layers"])
            else float(r["effective_depth"])
            for r in rows
        ]
    )


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an ROC AUC from ``n_pos`` positives and ``n_neg`` negatives
    (Hanley & McNeil 1982, Radiology 143:29, eq. 2, with their exponential approximations
    Q₁ = A/(2 − A), Q₂ = 2A²/(1 + A))."""
    a = float(auc)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def _balanced_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    parts = [np.mean(pred[labels == v] == v) for v in (True, False) if np.any(labels == v)]
    return float(np.mean(parts))


def calibrate_budget(rows: list[Mapping], reference: Mapping[str, float] | None = None) -> float:
    """The depth budget B maximising the balanced accuracy of E ≤ B on ``rows`` (module
    doc): the midpoint between the two consecutive finite E values that bound the best
    interval (the smallest such interval when several tie)."""
    labels = label_runs(rows, reference)
    e = effective_depths(rows)
    finite = np.unique(e[np.isfinite(e)])
    if finite.size < 2:
        raise InvalidInput("calibration needs at least two runs with a finite effective depth")
    cuts = (finite[:-1] + finite[1:]) / 2.0
    acc = np.array([_balanced_accuracy(e <= b, labels) for b in cuts])
    return float(cuts[int(np.argmax(acc))])


@dataclass(frozen=True)
class TrainabilityEvaluation:
    """The prediction against the labels on one split (module doc).

    ``auc_se`` is the AUC's standard error (:func:`auc_standard_error`); ``confusion`` is
    ``[[TN, FP], [FN, TP]]`` (rows: did not train / trained; columns:
    predicted not trainable / trainable); ``calibration`` rows are (score bin low, high,
    runs, fraction trained); ``mistakes`` the misclassified runs (parameters, score,
    accuracy, reasons).
    """

    n: int
    n_trained: int
    budget: float
    auc: float
    auc_se: float
    accuracy: float
    balanced_accuracy: float
    confusion: tuple[tuple[int, int], tuple[int, int]]
    baseline_auc: dict
    calibration: tuple[tuple[float, float, int, float], ...]
    reference: dict
    mistakes: tuple[dict, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        from sigprop._json import to_jsonable

        return to_jsonable({k: getattr(self, k) for k in self.__dataclass_fields__})


_KEYS = (
    "dataset",
    "model",
    "activation",
    "depth",
    "width",
    "sigma_w2_ratio",
    "layer",
    "method",
    "density",
    "rescale",
    "seed",
)


def evaluate(
    rows: list[Mapping],
    budget: float | None = None,
    *,
    reference: Mapping[str, float] | None = None,
    bins: int = 5,
) -> TrainabilityEvaluation:
    """Score, ``trainable`` and the baselines against the labels of ``rows`` (module doc);
    ``budget`` defaults to the calibrated :data:`~sigprop.diagnostics.trainable.DEPTH_BUDGET`."""
    from sklearn.metrics import roc_auc_score

    from sigprop.diagnostics.trainable import DEPTH_BUDGET
    from sigprop.diagnostics.trainable.rule import score_of_depth

    b = DEPTH_BUDGET if budget is None else float(budget)
    ref = reference_accuracy(rows) if reference is None else dict(reference)
    labels = label_runs(rows, ref)
    if labels.all() or not labels.any():
        raise InvalidInput("the split needs runs that trained and runs that did not")
    e = effective_depths(rows)
    score = score_of_depth(e, b)
    pred = score >= 0.5
    tn = int(np.sum(~pred & ~labels))
    fp = int(np.sum(pred & ~labels))
    fn = int(np.sum(~pred & labels))
    tp = int(np.sum(pred & labels))
    baseline = {}
    for name, fn_ in BASELINES.items():
        values = np.array([float(fn_(r)) for r in rows])
        baseline[name] = float(roc_auc_score(labels, values))
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (score >= lo) & ((score < hi) if hi < 1.0 else (score <= hi))
        n_in = int(inside.sum())
        table.append(
            (float(lo), float(hi), n_in, float(labels[inside].mean()) if n_in else math.nan)
        )
    auc = float(roc_auc_score(labels, score))
    mistakes = []
    for i in np.flatnonzero(pred != labels):
        r = rows[i]
        mistakes.append(
            {
                **{k: r.get(k) for k in _KEYS},
                "score": float(score[i]),
                "effective_depth": float(e[i]),
                "final_test_accuracy": r["final_test_accuracy"],
                "trained": bool(labels[i]),
                "reasons": r.get("reasons", ""),
            }
        )
    return TrainabilityEvaluation(
        n=len(rows),
        n_trained=int(labels.sum()),
        budget=b,
        auc=auc,
        auc_se=auc_standard_error(auc, int(labels.sum()), int((~labels).sum())),
        accuracy=float(np.mean(pred == labels)),
        balanced_accuracy=_balanced_accuracy(pred, labels),
        confusion=((tn, fp), (fn, tp)),
        baseline_auc=baseline,
        calibration=tuple(table),
        reference=ref,
        mistakes=tuple(mistakes),
    )
