"""The sanity checks of Frankle et al. 2021 (arXiv 2009.08576, Sec. 5) for any pruning method.

"Pruning Neural Networks at Initialization: Why are We Missing the Mark?" ablates a mask in
three ways and trains each result; for SNIP, GraSP, SynFlow (and magnitude pruning) the
accuracy is unchanged by the first two -- only the per-layer fractions matter, not which
weights are kept nor their values -- and inverting the scores hurts SNIP and SynFlow but
not GraSP. :func:`ablations` builds, from copies of one initial model:

``"original"``
    the method's mask (:func:`~sigprop.prune.at_init.prune_at_init`);
``"shuffle"``
    the mask randomly permuted inside each layer: every layer keeps exactly its count;
``"reinit"``
    the same mask on freshly drawn weights. By default each prunable layer's weights are
    drawn from that layer's own initial values: a random permutation of them (an exact
    draw from the same distribution for any i.i.d. initialisation; for a layer already
    pruned before, i.i.d. draws from its unpruned values). Pass ``reinit(model, generator)``
    to re-draw with an initialiser instead (e.g. for orthogonal initialisations, which a
    permutation does not preserve);
``"invert"``
    the method run with ``invert=True``: every round keeps the *lowest* scores, with the
    same per-layer or global count (score-based methods only).

Only the prunable layers' weights and masks differ between the models; biases,
normalisation layers and buffers are the initial model's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sigprop._json import to_jsonable
from sigprop.nn.masked import as_generator
from sigprop.nn.prunable import require_prunable
from sigprop.prune.at_init import METHODS, PruneResult, prune_at_init
from sigprop.prune.masks import DensityReport, apply, current_masks, density_report, tied_layers
from sigprop.prune.scores import SCORERS
from sigprop.validate import InvalidInput

__all__ = ["ABLATIONS", "Ablation", "AblationResult", "ablations"]

#: the ablations :func:`ablations` can run
ABLATIONS = ("shuffle", "reinit", "invert")


@dataclass(frozen=True)
class Ablation:
    """One variant: ``name``, the pruned ``model`` (a copy), its bool ``masks`` and its
    :class:`~sigprop.prune.masks.DensityReport`."""

    name: str
    model: nn.Module
    masks: dict[str, torch.Tensor]
    report: DensityReport

    def to_dict(self) -> dict:
        """``name`` and ``report`` (the model and its masks are left out)."""
        return to_jsonable({"name": self.name, "report": self.report}, "Ablation")


@dataclass(frozen=True)
class AblationResult:
    """``method``, ``density``, the ``original`` pruning (:class:`Ablation`, with the
    :class:`~sigprop.prune.at_init.PruneResult` as ``prune``) and ``variants``
    (``{name: Ablation}`` for the ablations run)."""

    method: str
    density: float
    original: Ablation
    prune: PruneResult
    variants: dict[str, Ablation] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Ablation:
        return self.original if name == "original" else self.variants[name]

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "method": self.method,
                "density": self.density,
                "original": self.original.to_dict(),
                "prune": self.prune,
                "variants": {n: v.to_dict() for n, v in self.variants.items()},
            },
            "AblationResult",
        )


def _variant(name: str, model: nn.Module) -> Ablation:
    return Ablation(name, model, current_masks(model), density_report(model))


def shuffle_masks(masks, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Each mask randomly permuted (its kept count unchanged), from ``generator``."""
    out = {}
    for name, mask in masks.items():
        flat = mask.reshape(-1)
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[torch.randperm(flat.numel(), generator=generator)[: int(flat.sum())]] = True
        out[name] = keep.reshape(mask.shape).to(mask.device)
    return out


def redraw_weights_(model: nn.Module, generator: torch.Generator | None) -> None:
    """Re-draw every prunable weight from its layer's own initial values (module docstring)."""
    tied = tied_layers(model)
    with torch.no_grad():
        for name, layer in require_prunable(model).items():
            if name in tied:
                continue
            w = layer.weight
            flat = w.detach().reshape(-1)
            kept = layer.weight_mask.detach().reshape(-1) != 0
            if bool(kept.all()):
                new = flat[torch.randperm(flat.numel(), generator=generator).to(flat.device)]
            else:
                pool = flat[kept]
                if pool.numel() == 0:
                    continue
                pick = torch.randint(pool.numel(), (flat.numel(),), generator=generator)
                new = pool[pick.to(pool.device)]
            w.copy_(new.reshape(w.shape))


def ablations(
    model: nn.Module,
    method: str,
    density: float,
    data=None,
    *,
    kinds=ABLATIONS,
    generator: torch.Generator | int | None = 0,
    reinit: Callable[[nn.Module, torch.Generator | None], None] | None = None,
    progress: bool = False,
    **prune_kwargs,
) -> AblationResult:
    """Prune copies of ``model`` with ``method`` at ``density`` and ablate the mask.

    ``kinds``: any of ``"shuffle"``, ``"reinit"``, ``"invert"`` (module docstring);
    ``generator`` (int seed, ``torch.Generator``; default seed 0) drives the shuffles, the
    re-draws and the method's own randomness; ``reinit(model, generator)`` replaces the
    default re-draw; ``prune_kwargs`` go to :func:`~sigprop.prune.at_init.prune_at_init`
    (``scope``, ``allocation``, ``rounds``, ...) for the original and the inverted runs.
    ``model`` itself is not modified.
    """
    if method not in METHODS:
        raise InvalidInput(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in ABLATIONS]
    if bad or len(set(kinds)) != len(kinds):
        raise InvalidInput(
            f"kinds must be distinct names among {', '.join(ABLATIONS)}, got {kinds}"
        )
    if "invert" in kinds and method not in SCORERS:
        raise InvalidInput(f"{method} has no scores to invert; leave 'invert' out of kinds")
    if reinit is not None and not callable(reinit):
        raise InvalidInput("reinit must be a callable reinit(model, generator)")
    gen = as_generator(0 if generator is None else generator)
    first = copy.deepcopy(model)
    result = prune_at_init(
        first, method, density, data, generator=gen, progress=progress, **prune_kwargs
    )
    original = _variant("original", first)
    tied = tied_layers(model)
    variants = {}
    for kind in kinds:
        work = copy.deepcopy(model)
        if kind == "invert":
            prune_at_init(
                work,
                method,
                density,
                data,
                generator=gen,
                progress=progress,
                invert=True,
                **prune_kwargs,
            )
        else:
            masks = original.masks
            if kind == "shuffle":
                owners = {n: m for n, m in masks.items() if n not in tied}
                masks = shuffle_masks(owners, gen)
                masks.update({n: masks[o] for n, o in tied.items()})
            else:
                (redraw_weights_ if reinit is None else reinit)(work, gen)
            apply(work, masks)
        variants[kind] = _variant(kind, work)
    return AblationResult(method, result.density, original, result, variants)
