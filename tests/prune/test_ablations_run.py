"""The prune_ablations sweep run: one flat JSON-able row with every variant's accuracy."""

import json
import math

import pytest

from sigprop.experiments.runs.ablations import prune_ablations


def test_prune_ablations_row():
    row = prune_ablations(method="magnitude", density=0.2, epochs=1, width=32, depth=3)
    json.dumps(row)
    for kind in ("original", "shuffle", "reinit", "invert"):
        acc = row[f"accuracy_{kind}"]
        assert 0.0 <= acc <= 1.0 and math.isfinite(acc)
    for kind in ("shuffle", "reinit", "invert"):
        assert row[f"drop_{kind}"] == pytest.approx(
            row["accuracy_original"] - row[f"accuracy_{kind}"], abs=0
        )
    # shuffling and re-drawing keep every layer's density; inverting keeps the total
    assert row["layer_density_shuffle"] == row["layer_density"]
    assert row["layer_density_reinit"] == row["layer_density"]
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune_ablations(method="lamp")
