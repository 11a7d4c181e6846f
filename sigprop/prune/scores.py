"""Pruning-at-initialisation scores: the registry, and every scorer under one name.

:data:`SCORERS` maps a method name to its :class:`~sigprop.prune.scorer.Scorer` (higher
score = keep); :func:`get_scorer` looks a name up and :func:`compute_scores` runs one round.
The scorers live in :mod:`sigprop.prune.saliency` (random, magnitude, SNIP, GraSP, and
:func:`samples_per_class`) and :mod:`sigprop.prune.synflow`; the seam they share is
:mod:`sigprop.prune.scorer`. Every name is re-exported here.

Train/eval mode used by each scorer (``mode=`` of ``prune_at_init`` / ``Scorer.score``
selects another): random, magnitude -- irrelevant (no forward pass); SNIP, GraSP -- the
model's own mode (``None``; GraSP's official protocol is ``mode="train"`` on two
half-batches, see :mod:`sigprop.prune.saliency`); SynFlow -- ``"eval"``, as the official
Synaptic-Flow code (BatchNorm with its running statistics).
"""

from __future__ import annotations

from torch import nn

from sigprop.prune.saliency import LossFn as LossFn
from sigprop.prune.saliency import (
    Scores,
    grasp_scores,
    magnitude_scores,
    random_scores,
    samples_per_class,
    snip_scores,
)
from sigprop.prune.saliency import _check_batch as _check_batch
from sigprop.prune.saliency import _grads as _grads
from sigprop.prune.saliency import _normalise_ as _normalise_
from sigprop.prune.saliency import _weights_and_masks as _weights_and_masks
from sigprop.prune.scorer import DirectSession as DirectSession
from sigprop.prune.scorer import ScoreMethod, Scorer
from sigprop.prune.synflow import SynFlow, SynFlowSession, synflow_scores
from sigprop.validate import InvalidInput

__all__ = [
    "SCORERS",
    "ScoreMethod",
    "Scorer",
    "SynFlow",
    "SynFlowSession",
    "compute_scores",
    "get_scorer",
    "grasp_scores",
    "magnitude_scores",
    "random_scores",
    "samples_per_class",
    "snip_scores",
    "synflow_scores",
]

#: name -> Scorer. Scores follow "higher = keep".
SCORERS: dict[str, Scorer] = {
    "random": ScoreMethod("random", random_scores, needs_data=False, uses_generator=True),
    "magnitude": ScoreMethod("magnitude", magnitude_scores, needs_data=False),
    "snip": ScoreMethod("snip", snip_scores, needs_data=True),
    "grasp": ScoreMethod("grasp", grasp_scores, needs_data=True),
    "synflow": SynFlow(),
}


def get_scorer(name: str) -> Scorer:
    """The registered :class:`Scorer` called ``name``; unknown names raise ``ValueError``."""
    try:
        return SCORERS[name]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown scoring method {name!r}; choose one of {', '.join(SCORERS)}"
        ) from None


def compute_scores(model: nn.Module, method: str, data=None, **kwargs) -> Scores:
    """Scores of ``method`` for ``model`` (one round); ``ValueError`` if data is missing.
    ``mode=`` ("train"/"eval"/None) chooses the train/eval mode (default: the scorer's)."""
    return get_scorer(method).score(model, data, **kwargs)
