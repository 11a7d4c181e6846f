"""Dissipating gradients (Haroon 2022, arXiv 2209.02201) and its combination with K-starts.

"Dissipating gradients [...] aims at eliminating weights that remain within a fraction of
their initial value during the first couple of epochs" (abstract); "the approach also takes
the most epochs to achieve higher sparsity"; the combination with K-starts "outperforms
either method". There is no official code and the exact fraction and epochs are not pinned
down in the paper. This module implements the following reading, with exact kept counts:

1. train a copy of the model (masks respected) with :func:`~sigprop.prune.kstarts.short_train`
   (the one training loop, :func:`sigprop.nn.loop.fit`; step 2 is a callback of it);
2. after every epoch e, compute each kept weight's relative movement
   r = max_{e' ≤ e} |w_{e'} − w_0| / |w_0| (0/0 counts as 0, x/0 as moved a lot);
   the weights with r ≤ ``fraction`` have "remained within a fraction of their initial
   value": remove them at once (smallest r first), but never below the target count, and
   keep training the survivors;
3. after the last epoch, if more weights than the target remain, remove the ones that
   moved least (smallest r) until exactly ``round(density * N)`` are kept.

The resulting mask is applied to the model *at its initial weights*. Defaults: ``epochs=2``
("the first couple of epochs") and ``fraction=0.1`` (a weight that moved by less than 10 %
of its initial value); both are parameters.

:func:`kstarts_dissipating_masks` combines the two: K-starts picks the fittest random mask
at an intermediate density, then dissipating gradients prunes inside it to the target.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from sigprop.nn.loop import Callback
from sigprop.nn.masked import check_density
from sigprop.nn.prunable import require_prunable
from sigprop.nn.utils import as_batches
from sigprop.prune.kstarts import kstarts_masks, short_train
from sigprop.prune.masks import (
    apply,
    current_masks,
    kept_count,
    select,
)
from sigprop.validate import InvalidInput, positive_int

__all__ = ["dissipating_masks", "kstarts_dissipating_masks", "relative_movement"]

#: stands for "moved by an unbounded relative amount" (a weight that left an initial 0)
_MOVED_FROM_ZERO = 1e300


def relative_movement(w: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """|w − w0| / |w0| in float64, with 0/0 = 0 and x/0 = 1e300 for x > 0."""
    w, w0 = w.detach().to(torch.float64), w0.detach().to(torch.float64)
    delta = (w - w0).abs()
    base = w0.abs()
    safe = torch.where(base > 0, base, torch.ones_like(base))
    r = delta / safe
    moved = torch.where(delta > 0, torch.full_like(r, _MOVED_FROM_ZERO), torch.zeros_like(r))
    return torch.where(base > 0, r, moved)


def _keep_counts(
    movement: dict[str, torch.Tensor],
    current: dict[str, torch.Tensor],
    targets: dict[str, int] | int,
    scope: str,
    fraction: float | None,
) -> dict[str, torch.Tensor]:
    """New masks removing dissipated weights (r ≤ fraction; all excess if ``None``)."""

    def new_count(names):
        kept = sum(int(current[n].sum()) for n in names)
        if fraction is None:
            return kept, targets if isinstance(targets, int) else targets[names[0]]
        dissipated = sum(int((current[n] & (movement[n] <= fraction)).sum()) for n in names)
        target = targets if isinstance(targets, int) else targets[names[0]]
        return kept, max(target, kept - dissipated)

    if scope == "global":
        names = list(movement)
        kept, count = new_count(names)
        if count == kept:
            return current
        total = sum(movement[n].numel() for n in names)
        return select(movement, count / total, scope="global", current=current)
    out = {}
    for n in movement:
        kept, count = new_count([n])
        if count == kept:
            out[n] = current[n]
        elif count == 0:
            out[n] = torch.zeros_like(current[n])
        else:
            out[n] = select({n: movement[n]}, count / movement[n].numel(), current=current)[n]
    return out


def dissipating_masks(
    model: nn.Module,
    density: float,
    data,
    *,
    epochs: int = 2,
    fraction: float = 0.1,
    scope: str = "global",
    lr: float = 0.1,
    momentum: float = 0.0,
    loss_fn: Callable | None = None,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Dissipating gradients (Haroon 2022, arXiv 2209.02201): prune weights that stay put.

    See the module docstring for the algorithm. ``scope="global"`` keeps exactly
    ``round(density * N)`` weights over all layers, ``"layer"`` that many per layer. Weights
    the model has already pruned stay pruned. Returns ``(masks, info)``; ``info`` holds
    ``removed_by_threshold`` (per epoch), ``removed_at_end`` and the parameters used.
    ``model`` is not modified.
    """
    density = check_density(density)
    epochs = positive_int(epochs, "epochs")
    if not (0.0 <= fraction) or math.isnan(fraction):
        raise InvalidInput(f"fraction must be a non-negative number, got {fraction!r}")
    if scope not in ("global", "layer"):
        raise InvalidInput(f"unknown scope {scope!r}; choose one of global, layer")
    data = as_batches(data, method="dissipating")
    work = copy.deepcopy(model)
    layers = require_prunable(work)
    w0 = {n: m.weight.detach().clone() for n, m in layers.items()}
    current = current_masks(work)
    if scope == "global":
        total = sum(m.numel() for m in current.values())
        targets: dict[str, int] | int = kept_count(density, total)
        avail = sum(int(m.sum()) for m in current.values())
        if targets == 0:
            raise InvalidInput(f"density {density} keeps no weight out of {total}")
        if targets > avail:
            raise InvalidInput(
                f"density {density} keeps {targets} weights but only {avail} are unpruned"
            )
    else:
        targets = {n: kept_count(density, m.numel()) for n, m in current.items()}
        for n, t in targets.items():
            if t > int(current[n].sum()):
                raise InvalidInput(f"layer {n!r}: density {density} keeps more than are unpruned")
    dissipate = _Dissipate(layers, w0, current, targets, scope, fraction)
    short_train(
        work,
        data,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        loss_fn=loss_fn,
        callbacks=[dissipate],
        progress=progress,
        desc="dissipating",
    )
    current = dissipate.current
    before = sum(int(c.sum()) for c in current.values())
    final = _keep_counts(dissipate.movement, current, targets, scope, None)
    info = {
        "epochs": int(epochs),
        "fraction": float(fraction),
        "removed_by_threshold": dissipate.removed,
        "removed_at_end": before - sum(int(c.sum()) for c in final.values()),
    }
    return final, info


class _Dissipate(Callback):
    """Step 2 of the algorithm (module docstring) as a callback of the training loop: after
    every epoch, update each weight's largest relative movement so far and remove the
    weights that stayed within ``fraction`` of their initial value (never below the target)."""

    def __init__(self, layers, w0, current, targets, scope, fraction):
        self.layers, self.w0, self.current = layers, w0, current
        self.targets, self.scope, self.fraction = targets, scope, fraction
        self.movement = {n: torch.zeros(w.shape, dtype=torch.float64) for n, w in w0.items()}
        self.removed: list[int] = []

    def on_epoch_end(self, epoch, model):
        for n, m in self.layers.items():
            self.movement[n] = torch.maximum(
                self.movement[n], relative_movement(m.weight, self.w0[n]).cpu()
            )
        before = sum(int(c.sum()) for c in self.current.values())
        self.current = _keep_counts(
            self.movement, self.current, self.targets, self.scope, self.fraction
        )
        apply(model, self.current)
        self.removed.append(before - sum(int(c.sum()) for c in self.current.values()))


def kstarts_dissipating_masks(
    model: nn.Module,
    density: float,
    data,
    *,
    intermediate_density: float | None = None,
    k: int = 5,
    kstarts_epochs: int = 1,
    fitness: str = "both",
    epochs: int = 2,
    fraction: float = 0.1,
    scope: str = "global",
    lr: float = 0.1,
    momentum: float = 0.0,
    loss_fn: Callable | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict]:
    """K-starts followed by dissipating gradients (Haroon 2022, arXiv 2209.02201).

    K-starts (:func:`~sigprop.prune.kstarts.kstarts_masks`, layer-wise random candidates)
    picks the fittest mask at ``intermediate_density`` (default √density: each stage
    removes the same factor, density = √density · √density); dissipating gradients
    (:func:`dissipating_masks`) then prunes inside that mask, from the initial weights, to
    ``density``. Returns ``(masks, info)`` with ``info = {"kstarts": ..., "dissipating":
    ..., "intermediate_density": ...}``. ``model`` is not modified.
    """
    density = check_density(density)
    mid = math.sqrt(density) if intermediate_density is None else intermediate_density
    mid = check_density(mid, "intermediate_density")
    if mid < density:
        raise InvalidInput(f"intermediate_density {mid} is below the target density {density}")
    data = as_batches(data, method="kstarts+dissipating")
    first, info_k = kstarts_masks(
        model,
        mid,
        data,
        k=k,
        epochs=kstarts_epochs,
        fitness=fitness,
        scope="layer",
        lr=lr,
        momentum=momentum,
        loss_fn=loss_fn,
        generator=generator,
        progress=progress,
    )
    staged = copy.deepcopy(model)
    apply(staged, first)
    final, info_d = dissipating_masks(
        staged,
        density,
        data,
        epochs=epochs,
        fraction=fraction,
        scope=scope,
        lr=lr,
        momentum=momentum,
        loss_fn=loss_fn,
        progress=progress,
    )
    return final, {"intermediate_density": mid, "kstarts": info_k, "dissipating": info_d}
