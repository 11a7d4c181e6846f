"""``prune_at_init``: the front door of pruning at initialisation.

A method only *scores* (:mod:`sigprop.prune.scores`) or proposes masks after a short
training (:mod:`sigprop.prune.kstarts`, :mod:`sigprop.prune.dissipating`); the loop here is
schedule → ``session.scores()`` → :func:`~sigprop.prune.selection.select` (global top-k, per
layer, or a layer-wise allocation of :mod:`sigprop.prune.allocation`) → ``set_masks``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from sigprop._json import to_jsonable
from sigprop.nn.masked import as_generator, check_density
from sigprop.nn.prunable import require_prunable
from sigprop.prune._checks import _all_finite
from sigprop.prune.allocation import ALLOCATIONS, layer_counts
from sigprop.prune.dissipating import dissipating_masks, kstarts_dissipating_masks
from sigprop.prune.kstarts import kstarts_masks
from sigprop.prune.masks import DensityReport, apply, current_masks, density_report, tied_layers
from sigprop.prune.scorer import _DEFAULT
from sigprop.prune.scores import SCORERS, get_scorer
from sigprop.prune.selection import COUNTINGS, kept_count, schedule, select
from sigprop.validate import InvalidInput

__all__ = ["METHODS", "PruneResult", "prune_at_init"]

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
        return to_jsonable(self, "PruneResult")


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
    generator: torch.Generator | int | None = None,
    progress: bool = True,
    allocation: str | Mapping[str, float] | None = None,
    counting: str = "round",
    mode=_DEFAULT,
    invert: bool = False,
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
        A ``torch.Generator`` or an int seed (one fresh generator for the whole call), or
        ``None`` (torch's default generator). Randomness of ``random`` scores and K-starts'
        candidates; every other method accepts it and is deterministic.
    allocation
        Layer-wise budgets instead of one global ranking (score-based methods, random
        included): ``"uniform"``, ``"erk"``, ``"smart_ratios"`` (see
        :mod:`sigprop.prune.allocation`; recomputed at every round's density) or a mapping
        ``{layer name: density}`` for every pruned layer. Implies ``scope="layer"``.
    counting
        ``"round"`` (default: round(d·N) kept) or ``"official"`` (N − ⌊(1−d)N⌋, the rule of the
        Synaptic-Flow and GraSP reference code; see :func:`~sigprop.prune.selection.kept_count`).
    mode
        Train/eval mode the scores are computed in: ``"train"``, ``"eval"`` or ``None`` (the
        model's own); default the scorer's (:data:`sigprop.prune.scores.SCORERS`: SynFlow
        ``"eval"``, the others ``None``). The model's modes are restored afterwards.
    invert
        Keep the *lowest* scores instead (the "inverted" ablation of Frankle et al. 2021,
        arXiv 2009.08576, Sec. 5): every round's scores are negated before selection.
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
    generator = as_generator(generator)
    if counting not in COUNTINGS:
        raise InvalidInput(f"unknown counting {counting!r}; choose one of {', '.join(COUNTINGS)}")

    if method in _TRAINED:
        if rounds not in (None, 0, 1) or min_per_layer or tuple(dense_layers):
            raise InvalidInput(
                f"{method} does not take rounds, min_per_layer or dense_layers options"
            )
        if allocation is not None or counting != "round" or invert or mode is not _DEFAULT:
            raise InvalidInput(
                f"{method} does not take allocation, counting, invert or mode options"
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

    if allocation is not None:
        if scope not in (None, "layer"):
            raise InvalidInput("a layer-wise allocation needs scope='layer' (or no scope)")
        scope = "layer"
    scope = "global" if scope is None else scope
    scorer = get_scorer(method)
    if scorer.uses_generator:
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
    shapes = {n: tuple(masks[n].shape) for n in pruned}
    budgets = _budgets(allocation, shapes, counting)
    session = scorer.session(model, data, mode=mode, **kwargs)
    for i, d in enumerate(
        tqdm(densities, desc=method, disable=not progress or n_rounds == 1, leave=False)
    ):
        scores = {n: s for n, s in session.scores().items() if n not in tied}
        if i == 0 and d < start:
            _check_informative(scores, masks, dense, method)
        if invert:
            scores = {n: torch.neg(s) for n, s in scores.items()}
        counts = None
        if budgets is not None:  # never above what a layer still has (rounding of a round)
            counts = {n: min(c, int(masks[n].sum())) for n, c in budgets(d).items()}
        masks = select(
            scores,
            d,
            scope=scope,
            current=masks,
            min_per_layer=min_per_layer,
            dense=dense,
            counts=counts,
            counting=counting,
            assume_finite=getattr(session, "finite_scores", False),
        )
        masks.update({name: masks[owner] for name, owner in tied.items()})
        if session.model is not model or len(densities) > 1:
            session.set_masks(masks)
    apply(model, masks)
    info = {"counting": counting, "invert": bool(invert)}
    if allocation is not None:
        info["allocation"] = allocation if isinstance(allocation, str) else "custom"
    return PruneResult(method, density, scope, n_rounds, density_report(model), info)


def _budgets(allocation, shapes, counting):
    """``density -> {layer: count}`` for a layer-wise allocation (``None``: none)."""
    if allocation is None:
        return None
    if isinstance(allocation, str):
        layer_counts(allocation, shapes, 0.5, counting=counting)  # validates the name early
        return lambda d: layer_counts(allocation, shapes, d, counting=counting)
    if not isinstance(allocation, Mapping):
        raise InvalidInput(
            f"allocation must be a name ({', '.join(ALLOCATIONS)}) or a mapping "
            f"{{layer: density}}, got {type(allocation).__name__}"
        )
    unknown = set(allocation) - set(shapes)
    missing = set(shapes) - set(allocation)
    if unknown or missing:
        raise InvalidInput(
            f"allocation must give a density for exactly the pruned layers; unknown "
            f"{sorted(unknown)}, missing {sorted(missing)}"
        )
    fixed = {n: check_density(allocation[n], f"allocation[{n!r}]") for n in shapes}
    top = max(fixed.values())

    def counts(d):  # the given densities, scaled down with the schedule (last round: as given)
        scale = d / density_of(fixed, shapes) if top else 0.0
        return {
            n: kept_count(min(1.0, fixed[n] * scale), math.prod(shapes[n]), counting)
            for n in shapes
        }

    return counts


def density_of(densities: Mapping[str, float], shapes) -> float:
    """Overall density of per-layer ``densities`` over weights of ``shapes``."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    return sum(densities[n] * sizes[n] for n in sizes) / sum(sizes.values())
