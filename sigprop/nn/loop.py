"""The one training loop of sigprop, and the callback protocol everything that watches it uses.

:func:`fit` is the step every training in the package takes: forward, loss, backward,
pruned gradients zeroed, optimiser step, masks re-applied
(:func:`~sigprop.nn.prunable.masked_step_`), with callbacks at fixed points. It lives here, in
``sigprop.nn`` beside ``masked_step_`` and ``as_batches``, so that both
``sigprop.prune`` (the short trainings of K-starts and dissipating gradients) and
``sigprop.experiments.train`` (full runs with evaluation, schedules and recorders) build on
it without an upward import. It knows nothing of data sets, evaluation or progress bars:
those are callbacks of its callers.

Callbacks
---------
A callback is any object with some of these methods (a missing one is skipped;
:class:`Callback` is a base class with all of them as no-ops):

``on_train_begin(model)``
    once, before the first step, before ``model.train()``;
``on_before_step(step, model)``
    after ``backward()`` with the pruned gradients zeroed, before ``optimizer.step()``: the
    gradients exactly as the optimiser will read them;
``on_step(step, model, batch, loss)``
    after the optimiser step and the masks re-applied; the step's gradients are still in
    ``.grad``, ``batch`` is the ``(inputs, targets)`` pair and ``loss`` the detached loss;
``on_epoch_end(epoch, model)``
    after every completed epoch (``epoch`` counts from 1);
``on_train_end(model)``
    once at the end, also when the loop stops by an exception (close files and bars here).

Steps count optimiser steps from 1. Callbacks run in the order given, so a component that
changes the model (``sigprop.prune.DSR`` re-allocating weights) goes before the callbacks
that record it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from sigprop.nn.prunable import masked_modules, masked_step_
from sigprop.validate import InvalidInput, positive_int

__all__ = ["CALLBACK_METHODS", "Callback", "FitResult", "check_callbacks", "fit"]

#: The methods of the callback protocol, in the order the loop first calls them.
CALLBACK_METHODS = (
    "on_train_begin",
    "on_before_step",
    "on_step",
    "on_epoch_end",
    "on_train_end",
)


class Callback:
    """A callback with every method of the protocol as a no-op; override what you need."""

    def on_train_begin(self, model: nn.Module) -> None:
        pass

    def on_before_step(self, step: int, model: nn.Module) -> None:
        pass

    def on_step(
        self,
        step: int,
        model: nn.Module,
        batch: tuple[torch.Tensor, torch.Tensor],
        loss: torch.Tensor,
    ) -> None:
        pass

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None:
        pass

    def on_train_end(self, model: nn.Module) -> None:
        pass


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did: ``steps`` optimiser steps taken, ``epochs`` completed, and
    ``diverged_at``, the step (from 1) whose loss was not finite (``None`` if none; only
    with ``stop_on_nonfinite=True``; that step took no optimiser step)."""

    steps: int
    epochs: int
    diverged_at: int | None = None


def check_callbacks(callbacks: Iterable) -> list:
    """The callbacks as a list; each must have at least one method of the protocol."""
    if isinstance(callbacks, str | bytes) or not isinstance(callbacks, Iterable):
        raise InvalidInput(f"callbacks must be a sequence, got {type(callbacks).__name__}")
    out = list(callbacks)
    for cb in out:
        if not any(callable(getattr(cb, name, None)) for name in CALLBACK_METHODS):
            raise InvalidInput(
                f"{cb!r} is not a callback: it has none of the methods {', '.join(CALLBACK_METHODS)}"
            )
    return out


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Iterable,
    *,
    epochs: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    callbacks: Iterable = (),
    masked: Iterable[nn.Module] | None = None,
    stop_on_nonfinite: bool = False,
) -> FitResult:
    """Train ``model`` in place: ``epochs`` passes over ``data`` with ``optimizer``.

    Parameters
    ----------
    model : nn.Module
        Trained in place; put in train mode after the callbacks' ``on_train_begin`` (the
        caller restores the mode it wants afterwards).
    optimizer : torch.optim.Optimizer
        Stepped once per batch.
    data : iterable of ``(inputs, targets)``
        Iterated once per epoch, so it must be re-iterable for ``epochs > 1`` (a list, a
        ``DataLoader``, or an object whose ``__iter__`` draws a new shuffle). An epoch
        without a batch raises ``InvalidInput``.
    loss_fn : callable
        ``loss_fn(outputs, targets)`` → scalar loss tensor.
    callbacks : iterable
        See the module docstring.
    masked : iterable of modules, optional
        The masked modules whose pruned weights stay zero (default:
        :func:`~sigprop.nn.prunable.masked_modules` of ``model``).
    stop_on_nonfinite : bool
        Read every loss (one device synchronisation per step) and stop before the backward
        pass of the first non-finite one; :attr:`FitResult.diverged_at` names that step.
    """
    epochs = positive_int(epochs, "epochs")
    cbs = check_callbacks(callbacks)
    masked = list(masked_modules(model).values() if masked is None else masked)
    hooks = {
        name: [getattr(cb, name) for cb in cbs if callable(getattr(cb, name, None))]
        for name in CALLBACK_METHODS
    }
    before = hooks["on_before_step"]
    step = 0
    done = 0
    diverged_at = None
    try:
        for f in hooks["on_train_begin"]:
            f(model)
        model.train()
        for epoch in range(1, epochs + 1):
            n_batches = 0
            for batch in data:
                x, y = batch
                loss = loss_fn(model(x), y)
                step += 1
                if stop_on_nonfinite and not math.isfinite(loss.item()):
                    diverged_at = step
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                masked_step_(
                    optimizer,
                    masked,
                    before_step=(lambda s=step: [f(s, model) for f in before]) if before else None,
                )
                loss = loss.detach()
                for f in hooks["on_step"]:
                    f(step, model, batch, loss)
                n_batches += 1
            if diverged_at is not None:
                break
            if n_batches == 0:
                raise InvalidInput("data holds no batch")
            done = epoch
            for f in hooks["on_epoch_end"]:
                f(epoch, model)
    finally:
        for f in hooks["on_train_end"]:
            f(model)
    return FitResult(
        steps=step if diverged_at is None else step - 1, epochs=done, diverged_at=diverged_at
    )
