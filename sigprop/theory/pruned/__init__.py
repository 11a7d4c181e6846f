"""Theory of pruned layers (package ``sigprop.theory.pruned``; ``sigprop.theory.sparse`` re-exports it): masks, rescaling, layer collapse, Stable ResNet, DCT offsets.

Sources
-------
* Hayou, Ton, Doucet & Teh, *Robust Pruning at Initialization*, ICLR 2021
  (arXiv 2002.08797): the effect of a mask on the variance map (their §3–4), the rescaling
  trick (their §4, Algorithm 1), layer collapse of magnitude and sensitivity pruning
  (their §3 and Appendix), Stable ResNet (their §5).
* Price & Tanner, *Dense for the Price of Sparse*, ICML 2021 (arXiv 2102.07655): the
  DCT-plus-sparse layer y = αDx + Sx + b (their §3).

Where a statement below is derived here rather than quoted (the layer-collapse laws, the
spectral norm and rank of a random sparse matrix), its docstring states the model and the
assumptions, and the tests hold it against numpy simulations of that model.

Conventions: σ's are standard deviations, weights N(0, σ_w²/fan_in), ``density`` is the
fraction of weights KEPT. Pure numpy/scipy.
"""

from sigprop.theory.pruned.coherence import class_cosines, snip_batch_coherence
from sigprop.theory.pruned.collapse import (
    CollapsePoint,
    GlobalPruning,
    first_collapse,
    global_pruning,
    kept_fraction,
    magnitude_score_scales,
    product_normal_sf,
    snip_score_scales,
)
from sigprop.theory.pruned.common import MASKS, SCORES
from sigprop.theory.pruned.dct import (
    SparseNorm,
    SparseRank,
    dct_entries,
    dct_matrix,
    sparse_rank,
    sparse_spectral_norm,
    weyl_singular_value_bounds,
)
from sigprop.theory.pruned.variance import (
    PrunedPropagation,
    effective_sigma_w,
    magnitude_kept_variance,
    mask_variance_factor,
    pruned_propagation,
    rescale_factor,
)
from sigprop.theory.resnet import relu_residual_q, residual_q_map

__all__ = [
    "MASKS",
    "SCORES",
    "CollapsePoint",
    "GlobalPruning",
    "PrunedPropagation",
    "SparseNorm",
    "SparseRank",
    "class_cosines",
    "dct_entries",
    "dct_matrix",
    "effective_sigma_w",
    "first_collapse",
    "global_pruning",
    "kept_fraction",
    "magnitude_kept_variance",
    "magnitude_score_scales",
    "mask_variance_factor",
    "product_normal_sf",
    "pruned_propagation",
    "relu_residual_q",
    "rescale_factor",
    "residual_q_map",
    "snip_batch_coherence",
    "snip_score_scales",
    "sparse_rank",
    "sparse_spectral_norm",
    "weyl_singular_value_bounds",
]
