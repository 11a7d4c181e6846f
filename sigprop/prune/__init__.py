"""sigprop.prune: pruning at initialisation and dynamic sparse reparameterisation.

``prune_at_init(model, method, density, data=None, ...)`` is the front door. A method only
*scores* (:mod:`sigprop.prune.scores`: random, magnitude, SNIP, GraSP, SynFlow) or proposes
masks after a short training (:mod:`sigprop.prune.kstarts`, :mod:`sigprop.prune.dissipating`);
masking -- global or layer-wise top-k with exact counts and deterministic ties, iterative
schedules, application, bookkeeping and ``torch.nn.utils.prune`` interop -- is shared
(:mod:`sigprop.prune.masks`). :class:`~sigprop.prune.dsr.DSR` reallocates weights during
training (Mostafa & Wang 2019).

A prunable layer is any module with a ``weight`` parameter and a ``weight_mask`` buffer
(``sigprop.nn`` layers; ``nn.Linear``/``nn.Conv*`` after :func:`attach_masks`). ``density`` is
always the fraction of weights kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from sigprop.nn.masked import check_density, require_prunable
from sigprop.prune.dissipating import dissipating_masks, kstarts_dissipating_masks
from sigprop.prune.dsr import DSR, DSRRecord, dsr_dense_layers
from sigprop.prune.kstarts import kstarts_masks, short_train
from sigprop.prune.masks import (
    DensityReport,
    LayerDensity,
    _all_finite,
    apply,
    attach_masks,
    convert_from_torch_prune,
    current_masks,
    density_report,
    from_torch_prune,
    prunable_layers,
    schedule,
    select,
    tied_layers,
    to_torch_prune,
)
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
from sigprop.validate import InvalidInput

__all__ = [
    "DSR",
    "METHODS",
    "DSRRecord",
    "DensityReport",
    "LayerDensity",
    "PruneResult",
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
    "kstarts_dissipating_masks",
    "kstarts_masks",
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

_TRAINED = {
    "kstarts": kstarts_masks,
    "dissipating": dissipating_masks,
    "kstarts+dissipating": kstarts_dissipating_masks,
}

#: Every method ``prune_at_init`` accepts.
METHODS = (*SCORERS, *_TRAINED)


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_at_init` did.

    Fields: ``method``; ``density`` (the requested fraction kept); ``scope`` (``"global"`` or
    ``"layer"``); ``rounds`` (pruning rounds, 1 for one-shot, 0 for the training-based
    methods); ``report`` (:class:`DensityReport` of the pruned model: kept/total per layer,
    empty layers); ``info`` (method-specific, JSON-able: e.g. K-starts' fitness per
    candidate, dissipating gradients' removals per epoch).
    """

    method: str
    density: float
    scope: str
    rounds: int
    report: DensityReport
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "density": self.density,
            "scope": self.scope,
            "rounds": self.rounds,
            "report": self.report.to_dict(),
            "info": self.info,
        }


def _check_finite_parameters(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if not _all_finite(p):
            raise InvalidInput(f"parameter {name!r} contains NaN or inf")


def _check_informative(scores, masks, dense, method: str) -> None:
    """Refuse to rank weights whose scores are all equal (the mask would be index order).

    Happens e.g. for magnitude or SynFlow scores of a zero-initialised sparse part of a
    DCT-plus-sparse layer (Price & Tanner, arXiv 2102.07655, initialise S = 0).
    """
    lo, hi = math.inf, -math.inf
    for n, s in scores.items():
        if n in dense:
            continue
        vals, keep = s.detach(), masks[n].to(s.device)
        if not bool(keep.all()):  # (boolean indexing costs ~10 passes: only when needed)
            vals = vals[keep]
        if vals.numel():
            low, high = torch.aminmax(vals)
            lo, hi = min(lo, float(low)), max(hi, float(high))
    if lo == hi:
        raise InvalidInput(
            f"{method} scores are all equal ({lo}) over the unpruned weights, so they cannot "
            "rank them (zero weights, e.g. the zero-initialised sparse part of a "
            "DCT-plus-sparse layer?); use 'random' or initialise the weights first"
        )


def prune_at_init(
    model: nn.Module,
    method: str,
    density: float,
    data=None,
    *,
    scope: str | None = None,
    rounds: int | None = None,
    schedule_kind: str = "exponential",
    min_per_layer: int = 0,
    dense_layers=(),
    generator: torch.Generator | None = None,
    progress: bool = True,
    **kwargs,
) -> PruneResult:
    """Prune ``model`` in place at initialisation to ``density`` (fraction kept).

    Parameters
    ----------
    model
        A model with prunable layers (``weight`` + ``weight_mask``). Weights already pruned
        stay pruned; ``density`` counts from all weights of the pruned layers.
    method
        ``"random"``, ``"magnitude"``, ``"snip"``, ``"grasp"``, ``"synflow"`` (scores,
        see :mod:`sigprop.prune.scores`), ``"kstarts"``, ``"dissipating"`` or
        ``"kstarts+dissipating"`` (short training, see :mod:`sigprop.prune.kstarts`,
        :mod:`sigprop.prune.dissipating`).
    data
        A batch ``(inputs, targets)`` or an iterable of batches. Required by snip, grasp and
        the training-based methods; synflow only reads the input shape from it.
    scope, min_per_layer, dense_layers
        Masking options of :func:`~sigprop.prune.masks.select` for the score-based methods.
        ``scope`` (``"global"`` or ``"layer"``) defaults to ``"global"``, except for
        K-starts, whose random candidates are layer-wise unless told (see
        :func:`~sigprop.prune.kstarts.kstarts_masks`); for the combination it is the scope of
        the dissipating stage.
    rounds, schedule_kind
        Iterative pruning for score-based methods: ``rounds`` rounds (default 100 for
        synflow -- Tanaka et al. 2020, arXiv 2006.05467, Sec. 6 -- and 1 otherwise) with
        densities from :func:`~sigprop.prune.masks.schedule`, starting from the model's
        current density over the pruned layers; scores are recomputed on the pruned model
        each round and the mask recomputed over the surviving weights. (With
        ``scope="layer"`` on a model whose layers are unequally sparse already, a layer
        sparser than a round's density makes that round raise ``ValueError``.)
    generator
        Randomness for ``random`` scores and K-starts' candidates.
    progress
        Show a tqdm bar over rounds / training.
    **kwargs
        Method options: ``loss_fn`` (snip, grasp, training methods), ``temperature``
        (grasp), ``input_shape``/``dtype`` (synflow), ``k``/``epochs``/``fitness``/``lr``
        (kstarts), ``epochs``/``fraction``/``lr`` (dissipating), and for the combination
        ``intermediate_density``/``kstarts_epochs``.

    Returns
    -------
    PruneResult
    """
    if method not in METHODS:
        raise InvalidInput(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    density = check_density(density)
    _check_finite_parameters(model)
    require_prunable(model)

    if method in _TRAINED:
        if rounds not in (None, 0, 1) or min_per_layer or tuple(dense_layers):
            raise InvalidInput(
                f"{method} does not take rounds, min_per_layer or dense_layers options"
            )
        if method != "dissipating":
            kwargs["generator"] = generator
        if scope is not None:
            kwargs["scope"] = scope
        masks, info = _TRAINED[method](model, density, data, progress=progress, **kwargs)
        for name, owner in tied_layers(model).items():  # one mask per weight tensor
            if owner in masks:
                masks[name] = masks[owner]
        apply(model, masks)
        used = scope or ("layer" if method == "kstarts" else "global")
        return PruneResult(method, density, used, 0, density_report(model), info)

    scope = "global" if scope is None else scope
    scorer = get_scorer(method)
    if method == "random":
        kwargs["generator"] = generator
    n_rounds = scorer.default_rounds if rounds is None else rounds
    masks = current_masks(model)
    dense = set(dense_layers)
    if dense - set(masks):
        raise InvalidInput(f"dense_layers {sorted(dense - set(masks))} are not prunable layers")
    # a weight tensor shared by several layers is ranked once, under its first layer's name,
    # and every layer holding it gets that mask
    tied = tied_layers(model)
    dense = {tied.get(n, n) for n in dense}
    pruned = [n for n in masks if n not in dense and n not in tied]
    if not pruned:
        raise InvalidInput("every prunable layer is in dense_layers; nothing to prune")
    start = sum(int(masks[n].sum()) for n in pruned) / sum(masks[n].numel() for n in pruned)
    if density > start:
        raise InvalidInput(
            f"density {density} is above the model's current density {start:.6g} over the "
            "pruned layers (pruning never revives a weight)"
        )
    densities = schedule(density, n_rounds, schedule_kind, start=start)
    session = scorer.session(model, data, **kwargs)
    for i, d in enumerate(
        tqdm(densities, desc=method, disable=not progress or n_rounds == 1, leave=False)
    ):
        scores = {n: s for n, s in session.scores().items() if n not in tied}
        if i == 0 and d < start:
            _check_informative(scores, masks, dense, method)
        masks = select(
            scores,
            d,
            scope=scope,
            current=masks,
            min_per_layer=min_per_layer,
            dense=dense,
        )
        masks.update({name: masks[owner] for name, owner in tied.items()})
        if session.model is not model or len(densities) > 1:
            session.set_masks(masks)
    apply(model, masks)
    return PruneResult(method, density, scope, n_rounds, density_report(model), {})
