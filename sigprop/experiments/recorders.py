"""Recorders: diagnostics measured *during* training by :func:`sigprop.experiments.train.train`.

A recorder is any object with a unique ``name`` and the four methods of :class:`Recorder`;
the training loop calls them at fixed points:

``on_train_begin(model)``
    once, after the model is on its device and before the first step (reset state here);
``on_step(step, model, batch, loss)``
    after every optimiser step (masks re-applied, DSR done); ``step`` counts optimiser steps
    from 1, the weight gradients of that step are still in ``.grad``, ``batch = (x, y)`` and
    ``loss`` is the step's (detached) loss tensor;
``on_epoch_end(epoch, model)``
    after every epoch, ``epoch`` counting from 1;
``result() -> dict``
    the recorded series, JSON-serialisable (lists of numbers keyed by layer name).

Layers are the model's *weight layers* (:func:`sigprop.nn.kinds.is_weight_layer`:
``nn.Linear``, ``nn.Conv*``, sigprop's masked and DCT-plus-sparse layers, layers pruned with
``torch.nn.utils.prune``), named as in ``model.named_modules()``, in that order.

One recording mechanism: the gradient-norm, pre-activation and density recorders are thin
adapters over :class:`sigprop.watcher.Watcher` (the ``sigprop.watch`` of the user's own
loops), each watching its one quantity without files and keeping the watcher's records as
tensors on the model's device; they convert them once, in ``result()``, so recording never
forces a device synchronisation. The pre-activation probe runs a forward pass with hooks
only at recording steps (the hooks are removed in between, so ordinary training steps pay
nothing). ``benchmarks/bench_train.py`` measures the overhead against a plain torch loop.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from sigprop.validate import InvalidInput, positive_int
from sigprop.watcher import Watcher
from sigprop.watcher.layers import watched_layers

__all__ = [
    "DensityRecorder",
    "GradientNormRecorder",
    "JacobianRecorder",
    "PreactivationRecorder",
    "Recorder",
    "weight_layers",
]


@runtime_checkable
class Recorder(Protocol):
    """What :func:`~sigprop.experiments.train.train` calls; see the module docstring."""

    name: str

    def on_train_begin(self, model: nn.Module) -> None: ...

    def on_step(
        self,
        step: int,
        model: nn.Module,
        batch: tuple[torch.Tensor, torch.Tensor],
        loss: torch.Tensor,
    ) -> None: ...

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None: ...

    def result(self) -> dict: ...


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every weight layer (:func:`sigprop.nn.kinds.is_weight_layer`),
    the layers the recorders and :class:`~sigprop.watcher.Watcher` record."""
    return watched_layers(model)


def _check_every(every, what: str) -> int:
    return positive_int(every, what)


def _check_probe(probe) -> torch.Tensor:
    if not isinstance(probe, torch.Tensor) or probe.ndim < 2 or probe.shape[0] < 1:
        raise InvalidInput("probe must be a tensor of inputs with a leading batch dimension")
    if not torch.is_floating_point(probe) or not bool(torch.isfinite(probe).all()):
        raise InvalidInput("probe inputs must be finite floating-point numbers")
    return probe


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if torch.is_floating_point(p):
            return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


class _WatchedQuantity:
    """A recorder of one watcher quantity: a fresh in-memory :class:`Watcher` per run."""

    name = "recorder"
    quantity = "grad_norm"

    def __init__(self, every: int) -> None:
        self.every = _check_every(every, "every")
        self._watcher: Watcher | None = None
        self._names: list[str] = []

    def _watcher_options(self) -> dict:
        return {}

    def on_train_begin(self, model: nn.Module) -> None:
        if self._watcher is not None:
            self._watcher.close()
        if not weight_layers(model):
            raise InvalidInput(f"{type(self).__name__}: the model has no weight layers to record")
        self._watcher = Watcher(
            model,
            None,
            every=self.every,
            quantities=(self.quantity,),
            collapse=False,
            tensorboard=False,
            **self._watcher_options(),
        )
        self._names = list(self._watcher.names)

    def on_step(self, step, model, batch, loss) -> None:
        self._watcher.step(step)

    def on_epoch_end(self, epoch, model) -> None:
        pass

    def on_train_end(self, model) -> None:
        self._watcher.close()

    def _records(self) -> list:
        return [] if self._watcher is None else list(self._watcher.records)

    def _series(self, records, column, as_int: bool = False) -> dict:
        names = self._names
        if records:
            table = torch.stack([column(r) for r in records]).cpu()
            table = table.round().long() if as_int else table.double()
            cols = table.T.tolist()
        else:
            cols = [[] for _ in names]
        return {
            "steps": [r.step for r in records],
            "layers": names,
            "values": dict(zip(names, cols)),
        }


class GradientNormRecorder(_WatchedQuantity):
    """Per-layer Frobenius norm ‖∂L/∂W^l‖ of the weight gradient, every ``every`` steps.

    The squared norms are what mean-field theory predicts: at initialisation they scale like
    χ₁^{L−l} across layers (Schoenholz et al. 2017, arXiv 1611.01232, §3, eq. 11–12 — vanishing
    in the ordered phase, exploding in the chaotic one), so square the recorded values to
    compare with :func:`sigprop.diagnostics.gradient_flow` predictions. A masked layer's
    gradient is taken as stored in ``weight.grad`` (zero at pruned positions after the
    masked optimiser step), the one the optimiser used; a layer without a gradient
    records 0.

    ``result()``: ``{"steps": [...], "layers": [...], "values": {layer: [norm per step]}}``.
    """

    name = "gradient_norm"
    quantity = "grad_norm"

    def __init__(self, every: int = 1) -> None:
        super().__init__(every)

    def _watcher_options(self) -> dict:
        return {"missing_grad": 0.0}

    def result(self) -> dict:
        records = [r for r in self._records() if r.step > 0]  # step 0 has no gradient
        return self._series(records, lambda r: r.values["grad_norm"])


class PreactivationRecorder(_WatchedQuantity):
    """Per-layer pre-activation second moment q^l on a fixed probe batch, every ``every`` steps.

    q^l = (1/(B·N_l)) Σ_b Σ_i (h_i^l(x_b))², the empirical counterpart of the mean-field length
    map q^l = σ_w² E[φ(h^{l−1})²] + σ_b² (Poole et al. 2016, arXiv 1606.05340, eq. 3), with
    h^l the output of weight layer l (bias included). Recorded once before training (step 0)
    and after every ``every``-th step, in ``eval()`` mode and without gradients (the model's
    train/eval mode is restored afterwards). The forward hooks exist only during the probe.

    ``result()``: ``{"steps": [...], "layers": [...], "values": {layer: [q per step]}}``.
    """

    name = "preactivation"
    quantity = "q"

    def __init__(self, probe: torch.Tensor, every: int = 10) -> None:
        self.probe = _check_probe(probe)
        super().__init__(every)

    def _watcher_options(self) -> dict:
        return {"inputs": self.probe}

    def result(self) -> dict:
        return self._series(self._records(), lambda r: r.values["q"])


class DensityRecorder(_WatchedQuantity):
    """Per-layer kept-weight counts, at step 0 and every ``every`` steps.

    A layer with a ``weight_mask`` buffer counts its kept (mask ≠ 0) entries; a dense layer
    counts its nonzero weights. Under DSR (Mostafa & Wang 2019, arXiv 1902.05967, Alg. 1) the
    total stays constant while the per-layer counts move: this is the reallocation plot.

    ``result()``: ``{"steps": [...], "layers": [...], "values": {layer: [kept per step]},
    "numel": {layer: total weights}}``.
    """

    name = "density"
    quantity = "density"

    def __init__(self, every: int = 100) -> None:
        super().__init__(every)

    def result(self) -> dict:
        records = self._records()
        out = self._series(records, lambda r: r.kept, as_int=True)
        numel = records[0].numel if records else ()
        out["numel"] = dict(zip(self._names, (int(n) for n in numel)))
        return out


class JacobianRecorder:
    """Input–output Jacobian singular-value statistics on probe inputs, every ``every`` epochs.

    Calls :func:`sigprop.diagnostics.jacobian_spectrum` (float64 by default) on the probe
    inputs before training (epoch 0) and after every ``every``-th epoch, in ``eval()`` mode,
    and keeps the mean, standard deviation, minimum and maximum of the singular values pooled
    over the probe inputs — the statistics Lee et al. report to show that pruning breaks
    dynamical isometry (arXiv 1906.06307, §4, Table 1) — and ``m1``, the mean over inputs of
    the normalised first moment (1/r) Σ_i s_i² of JJᵀ, whose mean-field value is χ₁^L for
    equal widths (Pennington et al. 2017, arXiv 1711.04735, §2.3). Extra keyword arguments go
    to ``jacobian_spectrum`` (its progress bar is off unless ``progress=True`` is passed);
    with ``method="lanczos"`` the singular-value statistics cover the top ``k`` only, while
    ``m1`` is the stochastic-Lanczos estimate over the whole spectrum. Keep the probe small
    (a few inputs): each record costs about one Jacobian per input.

    ``result()``: ``{"epochs": [...], "mean": [...], "std": [...], "min": [...],
    "max": [...], "m1": [...]}``.
    """

    name = "jacobian"

    def __init__(self, probe: torch.Tensor, every: int = 1, **spectrum_kwargs) -> None:
        self.probe = _check_probe(probe)
        self.every = _check_every(every, "every")
        self.spectrum_kwargs = {"progress": False, **spectrum_kwargs}
        self._rows: list[tuple[int, dict]] = []

    def on_train_begin(self, model: nn.Module) -> None:
        self._rows = []
        self._record(0, model)

    def on_step(self, step, model, batch, loss) -> None:
        pass

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None:
        if epoch % self.every == 0:
            self._record(epoch, model)

    def _record(self, epoch: int, model: nn.Module) -> None:
        from sigprop.diagnostics import jacobian_spectrum

        device, _ = _model_device_dtype(model)
        was_training = model.training
        try:
            model.eval()
            spectrum = jacobian_spectrum(model, self.probe.to(device), **self.spectrum_kwargs)
        finally:
            model.train(was_training)
        s = torch.as_tensor(spectrum.singular_values, dtype=torch.float64).flatten()
        self._rows.append(
            (
                epoch,
                {
                    "mean": float(s.mean()),
                    "std": float(s.std(correction=0)),
                    "min": float(s.min()),
                    "max": float(s.max()),
                    "m1": float(np.mean(spectrum.moments[:, 0])),
                },
            )
        )

    def result(self) -> dict:
        out: dict = {"epochs": [e for e, _ in self._rows]}
        for key in ("mean", "std", "min", "max", "m1"):
            out[key] = [row[key] for _, row in self._rows]
        return out
