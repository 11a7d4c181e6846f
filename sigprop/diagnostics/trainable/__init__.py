"""Will this (pruned) network train? The theory's answer before training.

``trainability(model, inputs=None)`` computes the mean-field indicators of
:mod:`.indicators` for the model as it is — masks of every format, any architecture the
describe/predict engine handles — and combines them with the documented rule of :mod:`.rule`
(score = 2^(−max(D, |G|)/B), zero for a cut mask) into a :class:`Trainability`: ``score``
in [0, 1] (higher = more trainable), ``trainable`` and the ``reasons`` that decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sigprop.diagnostics.trainable.indicators import DEFAULT_C0, Indicators, compute_indicators
from sigprop.diagnostics.trainable.rule import (
    DEPTH_BUDGET,
    effective_depth,
    reasons,
    score,
    structural_failure,
)
from sigprop.validate import positive_float

__all__ = [
    "DEFAULT_C0",
    "DEPTH_BUDGET",
    "Indicators",
    "Trainability",
    "compute_indicators",
    "effective_depth",
    "judge",
    "trainability",
]


@dataclass(frozen=True)
class Trainability:
    """The prediction: ``score`` in [0, 1] (monotone in the e-folds E of signal or gradient
    loss: 2^(−E/B)), ``trainable`` (score ≥ ½, i.e. E ≤ B), ``reasons`` (the indicators that
    decide, in words), ``effective_depth`` E (``inf`` where the mask cuts the network),
    ``depth_budget`` B and every ``indicators``."""

    score: float
    trainable: bool
    reasons: tuple[str, ...]
    effective_depth: float
    depth_budget: float
    indicators: Indicators

    def to_dict(self) -> dict:
        from sigprop._json import to_jsonable

        return {
            "score": self.score,
            "trainable": self.trainable,
            "reasons": list(self.reasons),
            "effective_depth": to_jsonable(self.effective_depth),
            "depth_budget": self.depth_budget,
            "indicators": self.indicators.to_dict(),
        }


def judge(ind: Indicators, depth_budget: float | None = None) -> Trainability:
    """The rule of :mod:`.rule` applied to precomputed indicators."""
    b = DEPTH_BUDGET if depth_budget is None else positive_float(depth_budget, "depth_budget")
    s = score(ind, b)
    return Trainability(
        score=s,
        trainable=bool(s >= 0.5),
        reasons=reasons(ind, b),
        effective_depth=math.inf if structural_failure(ind) else effective_depth(ind),
        depth_budget=b,
        indicators=ind,
    )


def trainability(
    model,
    inputs=None,
    *,
    depth_budget: float | None = None,
    input_shape=None,
    batch_size: int | None = None,
    c0: float | None = None,
) -> Trainability:
    """Predict whether ``model`` trains, from the theory alone (no training step).

    Parameters
    ----------
    model: a torch module, dense or pruned (``sigprop.nn`` masked and DCT-plus-sparse
        layers, ``torch.nn.utils.prune`` hooks, zeros after ``prune.remove``).
    inputs: optional batch (or ``(inputs, targets)`` pair) of real data: sets the input
        moments q0, c0 and the example input of traced models. Without it the data-free
        predictions use q0 = 1, c0 = ``c0`` or :data:`DEFAULT_C0`.
    depth_budget: B, the e-folds of signal or gradient loss a training run absorbs
        (default :data:`DEPTH_BUDGET`, fixed on the calibration sweep).
    input_shape: per-sample input shape, needed without ``inputs`` for models that are not
        plain chains (their graph is traced on an N(0, 1) batch of this shape).
    batch_size: B of train-mode BatchNorm in the graph engine (default: the example's).

    Raises
    ------
    InvalidInput: a model without weight layers, one the theory cannot reach in full, bad
        inputs.
    """
    ind = compute_indicators(model, inputs, input_shape=input_shape, batch_size=batch_size, c0=c0)
    return judge(ind, depth_budget)
