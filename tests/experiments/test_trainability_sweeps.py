"""The trainability sweeps: labels, calibration and metrics on known rows, the run itself, and
the committed results holding the issue's targets (AUC ≥ 0.9 on the validation and unseen
splits, above every baseline, with the budget the calibration split gives)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sigprop.diagnostics.trainable import DEPTH_BUDGET
from sigprop.diagnostics.trainable.evaluation import (
    calibrate_budget,
    effective_depths,
    evaluate,
    label_runs,
    reference_accuracy,
)
from sigprop.experiments.runs import RUNS, trainability_case
from sigprop.experiments.runs.trainability import load_split
from sigprop.validate import InvalidInput

RESULTS = Path(__file__).resolve().parents[2] / "examples" / "trainability" / "results"


def _row(e, acc, *, dataset="digits", ref=False, connected=True, collapsed=0, **extra):
    return {
        "dataset": dataset,
        "method": "dense" if ref else "random",
        "model": "mlp",
        "depth": 2 if ref else 10,
        "sigma_w2_ratio": 1.0,
        "layer": "masked",
        "effective_depth": e,
        "final_test_accuracy": acc,
        "chance": 0.1,
        "connected": connected,
        "collapsed_layers": collapsed,
        "effective_density": 0.5,
        "density_actual": 0.5,
        "snip_sum": 1.0,
        "grasp_sum": 0.0,
        **extra,
    }


def test_label_is_half_way_between_chance_and_the_dense_reference():
    rows = [_row(0.5, 0.9, ref=True), _row(1.0, 0.51), _row(1.0, 0.49)]
    assert reference_accuracy(rows) == {"digits": 0.9}
    assert label_runs(rows).tolist() == [True, True, False]  # threshold 0.1 + 0.4 = 0.5
    with pytest.raises(InvalidInput, match="reference"):
        label_runs([_row(1.0, 0.5, dataset="mnist1d")], {"digits": 0.9})
    assert not label_runs([_row(1.0, math.nan)], {"digits": 0.9})[0]


def test_calibration_finds_the_separating_budget():
    es = [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 9.0]
    rows = [_row(0.1, 0.9, ref=True)] + [_row(e, 0.9 if e <= 4.0 else 0.1) for e in es]
    assert calibrate_budget(rows) == pytest.approx(4.5)
    cut = [_row(0.1, 0.9, ref=True), _row(1.0, 0.9), _row(1.0, 0.1, connected=False)]
    assert math.isinf(effective_depths(cut)[2])
    with pytest.raises(InvalidInput, match="two runs"):
        calibrate_budget([_row(1.0, 0.9, ref=True)])


def test_evaluation_counts_and_auc():
    es = [0.5, 1.0, 2.0, 7.0, 3.0, 9.0, 12.0]
    acc = [0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
    rows = [_row(0.1, 0.9, ref=True)] + [_row(e, a) for e, a in zip(es, acc)]
    ev = evaluate(rows, budget=4.0)
    labels = np.array([True] + [a > 0.5 for a in acc])
    scores = np.exp2(-np.array([0.1, *es]) / 4.0)
    assert ev.auc == pytest.approx(roc_auc_score(labels, scores))
    (tn, fp), (fn, tp) = ev.confusion
    assert (tn, fp, fn, tp) == (2, 1, 1, 4)
    assert ev.n == 8 and ev.n_trained == 5 and len(ev.mistakes) == 2
    assert {m["effective_depth"] for m in ev.mistakes} == {7.0, 3.0}
    assert ev.baseline_auc["density"] == pytest.approx(0.5)
    assert sum(n for _, _, n, _ in ev.calibration) == 8
    assert ev.to_dict()["confusion"] == [[2, 1], [1, 4]]


def test_the_run_is_registered_and_records_prediction_before_training():
    assert RUNS["trainability_case"] is trainability_case
    out = trainability_case(depth=3, width=16, epochs=1, density=0.5, method="snip")
    for key in (
        "score",
        "effective_depth",
        "fan_in_depth",
        "snip_sum",
        "grasp_sum",
        "final_test_accuracy",
        "chance",
        "predict_time",
    ):
        assert key in out
    assert 0 <= out["score"] <= 1 and out["snip_sum"] > 0 and out["chance"] == 0.1
    conv = trainability_case(
        dataset="mnist1d",
        model="conv",
        depth=3,
        width=4,
        epochs=1,
        method="dense",
        density=1.0,
        activation="relu",
        sigma_b=0.0,
    )
    assert conv["density_actual"] == 1.0 and conv["effective_density"] <= 1.0
    dct = trainability_case(layer="dct", depth=3, width=16, epochs=1, density=0.25)
    # the frozen DCT offset carries the signal (connected) but only S's entries can learn
    assert dct["connected"] and dct["min_fan_in"] < 16 * 0.5
    with pytest.raises(InvalidInput, match="random"):
        trainability_case(layer="dct", method="snip", epochs=1)
    with pytest.raises(InvalidInput, match="model"):
        trainability_case(model="vit")


def _split(name):
    path = RESULTS / f"trainability-{name}.jsonl"
    return load_split(path)


def test_committed_calibration_gives_the_library_budget():
    rows = _split("calibration")
    assert len(rows) >= 80
    assert calibrate_budget(rows) == pytest.approx(DEPTH_BUDGET, abs=0.01)


@pytest.mark.parametrize("split,n_min", [("validation", 300), ("unseen", 100)])
def test_committed_sweeps_meet_the_targets(split, n_min):
    rows = _split(split)
    assert len(rows) >= n_min
    ev = evaluate(rows)
    assert ev.budget == DEPTH_BUDGET
    assert ev.auc >= 0.9
    assert all(ev.auc > auc for auc in ev.baseline_auc.values())
    assert 0.1 < ev.n_trained / ev.n < 0.9  # both outcomes are well represented


def test_auc_standard_error_matches_the_bootstrap():
    """Hanley & McNeil's standard error against a bootstrap of a synthetic score."""
    from sigprop.diagnostics.trainable.evaluation import auc_standard_error

    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.45
    scores = rng.normal(labels * 1.5, 1.0)
    auc = roc_auc_score(labels, scores)
    boot = []
    for _ in range(400):
        i = rng.integers(0, 300, 300)
        boot.append(roc_auc_score(labels[i], scores[i]))
    se = auc_standard_error(auc, int(labels.sum()), int((~labels).sum()))
    assert se == pytest.approx(np.std(boot), rel=0.2)
