"""K-starts (Haroon 2022, arXiv 2209.02201) and the short training it needs.

K-starts draws ``k`` random masks of the target density at initialisation, trains each
candidate for the first epoch(s), and keeps the *fittest* mask -- "adopted from how
evolutionary algorithms find the best individual"; fitness is "magnitude of network weights,
magnitude of gradient accumulation over an epoch or a combination of both" (abstract). The
paper has no official code and its k, epochs and fitness combination are not pinned down
in it, so they are parameters here, with these defaults:

* ``k = 5`` candidates: a small population; the cost is ``k * epochs`` short trainings;
* ``epochs = 1``: the abstract's gradient fitness is accumulated "over an epoch";
* ``fitness = "both"``: the abstract reports the combination; "both" adds the two
  fitnesses, each divided by its maximum over the candidates (so neither scale dominates);
* ``scope = "layer"``: "k random p-sparse matrices" -- every weight matrix has density p.

The chosen mask is applied to the model *at its initial weights* (the candidates' trained
weights are discarded), as befits pruning at initialisation.

:func:`short_train` is the short SGD training shared with dissipating gradients: a few epochs
over a re-iterable data set, masks respected (gradients of pruned weights zeroed before the
step and masks re-applied after it). It runs the one training loop of the package,
:func:`sigprop.nn.loop.fit` (which ``sigprop.experiments.train`` builds on too); the
fitness of a candidate is a callback of that loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sigprop.nn.loop import Callback, check_callbacks, fit
from sigprop.nn.masked import as_generator
from sigprop.nn.prunable import require_prunable
from sigprop.nn.utils import as_batches
from sigprop.prune.masks import apply, current_masks, select
from sigprop.prune.saliency import _check_batch, random_scores
from sigprop.validate import InvalidInput, positive_int

__all__ = ["FITNESSES", "kstarts_masks", "short_train"]

FITNESSES = ("magnitude", "gradient", "both")


def short_train(
    model: nn.Module,
    data,
    *,
    epochs: int,
    lr: float = 0.1,
    momentum: float = 0.0,
    loss_fn: Callable | None = None,
    on_backward: Callable[[nn.Module], None] | None = None,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
    callbacks: Iterable = (),
    progress: bool = False,
    desc: str = "train",
) -> None:
    """Train ``model`` in place with SGD for ``epochs`` passes over ``data``, masks respected.

    ``data`` is a batch ``(inputs, targets)`` or a *re-iterable* of batches (a list or a
    ``DataLoader``; a one-shot iterator is rejected when ``epochs > 1``). The steps are those
    of the one training loop, :func:`sigprop.nn.loop.fit`: forward, ``loss_fn`` (cross
    entropy by default), backward, gradients of pruned weights zeroed, ``on_backward(model)``
    (e.g. to accumulate gradient magnitudes), SGD step, masks re-applied so pruned weights
    stay exactly zero. ``on_epoch_end(model, epoch)`` is called after every epoch (``epoch``
    counts from 1); ``callbacks`` are further loop callbacks (:mod:`sigprop.nn.loop`), run
    after those two. The model is left in train mode.
    """
    epochs = positive_int(epochs, "epochs")
    if not lr > 0:
        raise InvalidInput(f"lr must be positive, got {lr!r}")
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    data = as_batches(data, method="short training")
    if epochs > 1 and getattr(data, "one_shot", False):
        raise InvalidInput("data must be re-iterable (a list or a DataLoader), got an iterator")
    layers = require_prunable(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    fit(
        model,
        opt,
        _FiniteInputs(data),
        epochs=epochs,
        loss_fn=loss_fn,
        callbacks=[
            _Hooks(on_backward, on_epoch_end),
            *check_callbacks(callbacks),
            _EpochBar(epochs, desc, progress),
        ],
        masked=layers.values(),
    )


class _FiniteInputs:
    """The batches of ``data``, each checked for finite inputs when reached."""

    def __init__(self, data):
        self.data = data

    def __iter__(self):
        for batch in self.data:
            yield _check_batch(batch, "short training")


class _Hooks(Callback):
    """:func:`short_train`'s ``on_backward(model)`` and ``on_epoch_end(model, epoch)``."""

    def __init__(self, on_backward, on_epoch_end):
        self.backward, self.epoch_end = on_backward, on_epoch_end

    def on_before_step(self, step, model):
        if self.backward is not None:
            self.backward(model)

    def on_epoch_end(self, epoch, model):
        if self.epoch_end is not None:
            self.epoch_end(model, epoch)


class _EpochBar(Callback):
    """A tqdm bar over the epochs (closed when the loop ends)."""

    def __init__(self, epochs, desc, progress):
        self.bar = tqdm(total=epochs, desc=desc, disable=not progress, leave=False)

    def on_epoch_end(self, epoch, model):
        self.bar.update(1)

    def on_train_end(self, model):
        self.bar.close()


class _GradientMagnitude(Callback):
    """K-starts' gradient fitness: Σ over steps of Σ |∂L/∂w| over the kept weights of
    ``layers``, read as the optimiser sees the gradients (before its step), in float64."""

    def __init__(self, layers):
        self.layers = layers
        self.total = torch.zeros((), dtype=torch.float64)

    def on_before_step(self, step, model):
        for m in self.layers.values():
            if m.weight.grad is not None:
                self.total += m.weight.grad.detach().abs().sum().to(torch.float64)


def kstarts_masks(
    model: nn.Module,
    density: float,
    data,
    *,
    k: int = 5,
    epochs: int = 1,
    fitness: str = "both",
    scope: str = "layer",
    lr: float = 0.1,
    momentum: float = 0.0,
    loss_fn: Callable | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict]:
    """K-starts (Haroon 2022, arXiv 2209.02201): the fittest of ``k`` random masks.

    Each candidate is a random mask of ``density`` (exact counts, ``scope`` as in
    :func:`~sigprop.prune.masks.select`, never reviving a weight the model already pruned)
    applied to a copy of ``model``, trained by :func:`short_train` for ``epochs``. Fitness:

    * ``"magnitude"``: Σ |w| over the kept weights after the short training;
    * ``"gradient"``: Σ over steps of Σ |∂L/∂w| over the kept weights;
    * ``"both"``: magnitude / max(magnitude) + gradient / max(gradient) over candidates.

    Returns ``(masks, info)``: the fittest candidate's bool masks (ties: the first drawn) and
    a JSON-able dict with ``fitness`` (per candidate, the criterion used), ``magnitude`` and
    ``gradient`` (per candidate) and ``chosen`` (its index). ``model`` is not modified.
    """
    k = positive_int(k, "k (number of random starts)")
    generator = as_generator(generator)  # an int seed: one generator for all candidates
    if fitness not in FITNESSES:
        raise InvalidInput(f"unknown fitness {fitness!r}; choose one of {', '.join(FITNESSES)}")
    data = as_batches(data, method="kstarts")
    current = current_masks(model)
    candidates, magnitudes, gradients = [], [], []
    for i in tqdm(range(int(k)), desc="kstarts", disable=not progress, leave=False):
        masks = select(
            random_scores(model, generator=generator), density, scope=scope, current=current
        )
        trial = copy.deepcopy(model)
        apply(trial, masks)
        layers = require_prunable(trial)
        grad_sum = _GradientMagnitude(layers)
        short_train(
            trial,
            data,
            epochs=epochs,
            lr=lr,
            momentum=momentum,
            loss_fn=loss_fn,
            callbacks=[grad_sum],
            desc=f"kstarts candidate {i}",
        )
        mag = sum(float(m.weight.detach().abs().sum()) for m in layers.values())
        candidates.append(masks)
        magnitudes.append(mag)
        gradients.append(float(grad_sum.total))
    if fitness == "magnitude":
        fit = list(magnitudes)
    elif fitness == "gradient":
        fit = list(gradients)
    else:
        max_m = max(magnitudes) or 1.0
        max_g = max(gradients) or 1.0
        fit = [m / max_m + g / max_g for m, g in zip(magnitudes, gradients)]
    chosen = max(range(len(fit)), key=lambda i: (fit[i], -i))
    info = {
        "k": int(k),
        "epochs": int(epochs),
        "fitness_criterion": fitness,
        "fitness": fit,
        "magnitude": magnitudes,
        "gradient": gradients,
        "chosen": chosen,
    }
    return candidates[chosen], info
