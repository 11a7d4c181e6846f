"""sigprop.prune: pruning at initialisation and dynamic sparse reparameterisation.

``prune_at_init(model, method, density, data=None, ...)`` (:mod:`sigprop.prune.at_init`) is
the front door. A method only *scores* (:mod:`sigprop.prune.scores`: random, magnitude,
SNIP, GraSP -- :mod:`~sigprop.prune.saliency` -- and SynFlow -- :mod:`~sigprop.prune.synflow`
-- each a :class:`~sigprop.prune.scorer.Scorer`) or proposes masks after a short training
(:mod:`sigprop.prune.kstarts`, :mod:`sigprop.prune.dissipating`); masking is shared:
global or layer-wise top-k with exact counts and deterministic ties and iterative schedules
(:mod:`sigprop.prune.selection`), layer-wise budgets -- uniform, ERK, smart ratios
(:mod:`sigprop.prune.allocation`) --, application and bookkeeping
(:mod:`sigprop.prune.masks`) and ``torch.nn.utils.prune`` interop
(:mod:`sigprop.prune.interop`). :func:`ablations` runs the sanity checks of Frankle et al.
2021 (:mod:`sigprop.prune.sanity`). :class:`~sigprop.prune.dsr.DSR` reallocates weights
during training (Mostafa & Wang 2019).

A prunable layer is any module with a ``weight`` parameter and a ``weight_mask`` buffer
(``sigprop.nn`` layers; ``nn.Linear``/``nn.Conv*`` after :func:`attach_masks`). ``density`` is
always the fraction of weights kept.
"""

from __future__ import annotations

from sigprop.prune.allocation import ALLOCATIONS, layer_counts, layer_densities
from sigprop.prune.at_init import METHODS, PruneResult, prune_at_init
from sigprop.prune.dissipating import dissipating_masks, kstarts_dissipating_masks
from sigprop.prune.dsr import DSR, DSRRecord, dsr_dense_layers
from sigprop.prune.interop import convert_from_torch_prune, from_torch_prune, to_torch_prune
from sigprop.prune.kstarts import kstarts_masks, short_train
from sigprop.prune.masks import (
    DensityReport,
    LayerDensity,
    apply,
    attach_masks,
    current_masks,
    density_report,
    prunable_layers,
    tied_layers,
)
from sigprop.prune.sanity import ABLATIONS, Ablation, AblationResult, ablations
from sigprop.prune.scorer import Scorer
from sigprop.prune.scores import (
    SCORERS,
    compute_scores,
    get_scorer,
    grasp_scores,
    magnitude_scores,
    random_scores,
    samples_per_class,
    snip_scores,
    synflow_scores,
)
from sigprop.prune.selection import COUNTINGS, kept_count, schedule, select

__all__ = [
    "ABLATIONS",
    "ALLOCATIONS",
    "Ablation",
    "AblationResult",
    "COUNTINGS",
    "DSR",
    "METHODS",
    "DSRRecord",
    "DensityReport",
    "LayerDensity",
    "PruneResult",
    "SCORERS",
    "Scorer",
    "ablations",
    "apply",
    "attach_masks",
    "compute_scores",
    "convert_from_torch_prune",
    "current_masks",
    "density_report",
    "dissipating_masks",
    "dsr_dense_layers",
    "from_torch_prune",
    "get_scorer",
    "grasp_scores",
    "kept_count",
    "kstarts_dissipating_masks",
    "kstarts_masks",
    "layer_counts",
    "layer_densities",
    "magnitude_scores",
    "prunable_layers",
    "prune_at_init",
    "random_scores",
    "samples_per_class",
    "schedule",
    "select",
    "short_train",
    "snip_scores",
    "synflow_scores",
    "tied_layers",
    "to_torch_prune",
]
