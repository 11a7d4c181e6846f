"""The :class:`Watcher`: per-layer signal-propagation statistics of any model during training.

Usage in a plain loop (the user's own; nothing else changes)::

    with sigprop.watch(model, "runs/a", every=10) as w:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            w.step()

What a record holds
-------------------
Step 0 is recorded when the watcher is created (the model before training): ``weight_norm``
and ``density`` of every weight layer, ``q`` on ``inputs`` when given (else ``null``),
``grad_norm`` ``null``, the collapse check when the model has masks, and the predicted
values when a ``prediction`` is given. Step N (every ``every``-th call of :meth:`step`,
which comes after the N-th optimiser step) holds

* ``grad_norm``: the norm of each layer's gradient, read from ``.grad`` when :meth:`step`
  is called: the gradient optimiser step N used, zero at pruned positions in every mask
  format, so the norm on the kept weights (call :meth:`step` after ``optimizer.step()``
  and before the next ``zero_grad``);
* ``q``: the mean squared layer output of step N's forward pass(es) with autograd on
  (evaluation passes under ``torch.no_grad`` are ignored); with ``inputs``, instead, q of
  the fixed probe batch after the step, in ``eval()`` mode;
* ``weight_norm`` and ``density`` after the step;
* ``collapse`` (model-level density, effective density, collapsed layers, from
  :func:`sigprop.diagnostics.check_collapse` on the live model) when a mask changed since
  the last check (DSR, regrowth, iterative pruning).

Cost: nothing is measured between recording steps except that the forward hooks that
measure ``q`` are registered for the one step before a record (and removed after it); a
record costs a few reductions per layer and one device synchronisation. See
``benchmarks/bench_watch.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sigprop.validate import InvalidInput, nonneg_int, positive_int
from sigprop.watcher.layers import (
    PreactivationProbe,
    grad_norms,
    kept_counts,
    trained_tensor,
    watched_layers,
    weight_norms,
)
from sigprop.watcher.log import LOG_NAME, QUANTITIES, LogWriter
from sigprop.watcher.tensorboard import TensorBoardSink, histogram_stats, tensorboard_available

__all__ = ["Record", "Watcher", "watch"]

#: The keys of ``predicted`` entries, from :class:`sigprop.diagnostics.Prediction` fields.
PREDICTED_FIELDS = ("q", "density", "weight_grad_ratio", "grad_ratio", "chi")


@dataclass(frozen=True)
class Record:
    """One recorded step, with its numbers still tensors on the model's device.

    ``values``: ``{quantity: (L,) tensor}`` for ``grad_norm``, ``weight_norm``, ``q``
    (float32, NaN where not measured) among the watched quantities; ``kept``: (L,) float64
    kept-weight counts and ``numel`` the layers' sizes (``density = kept / numel``), or
    ``None`` when density is not watched; ``collapse`` and ``predicted`` as in the log.
    """

    step: int
    layers: tuple[str, ...]
    values: dict
    kept: torch.Tensor | None = None
    numel: tuple[int, ...] = ()
    collapse: dict | None = None
    predicted: dict | None = None

    def to_json(self) -> dict:
        """The log line of this record (one device synchronisation)."""
        names = [q for q in QUANTITIES if q in self.values]
        columns = [self.values[q].to(torch.float64) for q in names]
        if self.kept is not None:
            columns.append(self.kept.to(torch.float64))
        table = torch.stack(columns).cpu().tolist() if columns else []
        layers = {}
        for j, name in enumerate(self.layers):
            entry = {q: _finite(table[k][j]) for k, q in enumerate(names)}
            if self.kept is not None:
                n = self.numel[j]
                entry["density"] = _finite(table[-1][j] / n) if n else None
            layers[name] = entry
        out: dict = {"step": self.step, "layers": layers}
        if self.collapse is not None:
            out["collapse"] = self.collapse
        if self.predicted is not None:
            out["predicted"] = self.predicted
        return out


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


class Watcher:
    """Hooks on ``model`` that record its per-layer statistics; see the module docstring.

    Parameters
    ----------
    model : nn.Module
        Any model; its weight layers (:func:`sigprop.nn.kinds.is_weight_layer`: dense,
        sigprop-masked, ``torch.nn.utils.prune``, DCT-plus-sparse) are watched, keyed by
        qualified module name.
    log_dir : path or None
        Folder of the log ``sigprop.jsonl`` (created; an existing log is resumed: its
        torn last line is cut and counting continues after its last complete step, with
        no new step-0 record). ``None``: no files; records are kept in :attr:`records`.
    every : int
        Record every ``every`` steps.
    inputs : tensor, optional
        A fixed probe batch: ``q`` is measured on it (step 0 included) instead of on the
        training forward passes.
    tensorboard : bool or None
        Also write TensorBoard events into ``log_dir``: ``None`` when the ``tensorboard``
        package is installed, ``True`` always (an error without it), ``False`` never.
    prediction : sigprop.diagnostics.Prediction, optional
        From ``predict(describe(model))``: its per-layer values go into the step-0 record
        as ``predicted`` (layer names must be watched layers).
    collapse : bool
        Run the collapse check at step 0 (for a model with masks) and when masks change.
    quantities : sequence of str
        The per-layer quantities to record (default all of ``grad_norm``, ``weight_norm``,
        ``q``, ``density``).
    histogram_every : int
        With TensorBoard, per-layer histograms of the kept weights and gradients at every
        ``histogram_every``-th record (the first included; 0: never). A histogram reads
        every weight, so they come at a tenth of the records' rate by default.
    missing_grad : float
        Value recorded for a layer without a gradient (NaN, written ``null``).
    """

    def __init__(
        self,
        model: nn.Module,
        log_dir: str | os.PathLike | None = None,
        *,
        every: int = 10,
        inputs: torch.Tensor | None = None,
        tensorboard: bool | None = None,
        prediction=None,
        collapse: bool = True,
        quantities: Sequence[str] = QUANTITIES,
        histogram_every: int = 10,
        missing_grad: float = float("nan"),
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidInput(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.every = positive_int(every, "every")
        quantities = tuple(quantities)
        unknown = [q for q in quantities if q not in QUANTITIES]
        if unknown or not quantities:
            raise InvalidInput(f"quantities must be a non-empty subset of {QUANTITIES}")
        if tensorboard not in (None, True, False):
            raise InvalidInput(f"tensorboard must be None, True or False, got {tensorboard!r}")
        self.model = model
        self.quantities = quantities
        self.layers = watched_layers(model)
        if not self.layers:
            raise InvalidInput("the model has no weight layers to watch")
        self.names = tuple(name for name, _ in self.layers)
        self.inputs = None if inputs is None else _check_inputs(inputs)
        self.missing_grad = float(missing_grad)
        self.collapse = bool(collapse)
        self.histogram_every = nonneg_int(histogram_every, "histogram_every")
        self._n_records = 0
        predicted = None if prediction is None else _predicted(prediction, self.names)
        self._probe = PreactivationProbe(self.layers) if "q" in quantities else None
        self._log: LogWriter | None = None
        self._tb: TensorBoardSink | None = None
        self.records: list[Record] | None = None
        self.log_dir = None if log_dir is None else Path(log_dir)
        if self.log_dir is None:
            if tensorboard:
                raise InvalidInput("tensorboard=True needs a log_dir")
            self.records = []
        else:
            self._log = LogWriter(self.log_dir / LOG_NAME)
        self._step = 0 if self._log is None or self._log.last_step is None else self._log.last_step
        resumed = self._log is not None and self._log.last_step is not None
        try:
            if self.log_dir is not None and (
                tensorboard or (tensorboard is None and tensorboard_available())
            ):
                self._tb = TensorBoardSink(
                    self.log_dir, purge_step=self._step + 1 if resumed else None
                )
            self._masks = self._mask_snapshot() if self.collapse else None
            self._closed = False
            if resumed:
                self._masks_changed = True  # the first record after a restart checks
            else:
                self._masks_changed = False
                self._emit(self._measure(0, predicted=predicted))
            self._arm_next()
        except BaseException:
            self.close()
            raise

    # -- the user's calls --------------------------------------------------------------
    @property
    def current_step(self) -> int:
        """The last step counted (0 before the first :meth:`step`)."""
        return self._step

    def step(self, step: int | None = None) -> Record | None:
        """Count one optimiser step (or set the count to ``step``, e.g. a trainer's global
        step) and record it when the count is a multiple of ``every``; returns the
        :class:`Record` or ``None``."""
        if self._closed:
            raise InvalidInput("the watcher is closed")
        self._step = self._step + 1 if step is None else positive_int(step, "step")
        record = None
        if self._step % self.every == 0:
            record = self._measure(self._step)
            self._emit(record)
        self._arm_next()
        return record

    @property
    def tensorboard_cpu_seconds(self) -> float:
        """CPU seconds spent so far by the TensorBoard writer thread (0 without it)."""
        return 0.0 if self._tb is None else self._tb.cpu_seconds

    def flush(self) -> None:
        """Push TensorBoard's pending events to disk (the log itself is never buffered)."""
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Remove every hook, sync and close the files (idempotent)."""
        self._closed = True
        if self._probe is not None:
            self._probe.disarm()
        tb, self._tb = self._tb, None
        log, self._log = self._log, None
        try:
            if tb is not None:
                tb.close()
        finally:
            if log is not None:
                log.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the loop-callback protocol (sigprop.nn.loop) ----------------------------------
    def on_train_begin(self, model: nn.Module) -> None:
        if model is not self.model:
            raise InvalidInput("the watcher watches another model than the one trained")

    def on_step(self, step: int, model: nn.Module, batch, loss) -> None:
        self.step()

    def on_train_end(self, model: nn.Module) -> None:
        self.flush()

    # -- measuring ---------------------------------------------------------------------
    def _arm_next(self) -> None:
        if self._probe is None or self.inputs is not None:
            return
        if (self._step + 1) % self.every == 0:
            self._probe.arm()
        elif self._probe.armed:
            self._probe.disarm()

    def _measure(self, step: int, predicted: dict | None = None) -> Record:
        values: dict = {}
        q = self.quantities
        if "grad_norm" in q:
            if step == 0:
                values["grad_norm"] = torch.full((len(self.layers),), float("nan"))
            else:
                values["grad_norm"] = grad_norms(self.layers, missing=self.missing_grad)
        if "weight_norm" in q:
            values["weight_norm"] = weight_norms(self.layers)
        if "q" in q:
            if self.inputs is not None:
                device, dtype = _device_dtype(self.model)
                probe = self.inputs.to(device=device, dtype=dtype)
                values["q"] = self._probe.on_probe(self.model, probe)
            elif step == 0:
                values["q"] = torch.full((len(self.layers),), float("nan"))
            else:
                values["q"] = self._probe.collect()
        kept, numel = kept_counts(self.layers) if "density" in q else (None, [])
        collapse = None
        if self.collapse and self._masks is not None:
            current = self._mask_snapshot()
            if step == 0 or self._masks_changed or _changed(self._masks, current):
                collapse = self._collapse()
                self._masks_changed = False
            self._masks = current
        return Record(
            step=step,
            layers=self.names,
            values=values,
            kept=kept,
            numel=tuple(numel),
            collapse=collapse,
            predicted=predicted,
        )

    def _emit(self, record: Record) -> None:
        if self.records is not None:
            self.records.append(record)
            return
        line = record.to_json()
        self._log.write(line)
        if self._tb is not None:
            hist = None
            if self.histogram_every and self._n_records % self.histogram_every == 0:
                hist = self._histograms(record.step)
            self._tb.write(record.step, line["layers"], line.get("collapse"), hist)
        self._n_records += 1

    def _histograms(self, step: int) -> dict:
        """Histogram statistics of every layer's kept weights (and gradients after step 0)."""
        weights, grads = {}, {}
        for name, module in self.layers:
            tensor, mask = trained_tensor(module)
            if tensor is None:
                continue
            keep = None if mask is None else mask.detach() != 0
            for out, t in ((weights, tensor), (grads, tensor.grad if step else None)):
                if t is None:
                    continue
                t = t.detach()
                stats = histogram_stats(t if keep is None else t[keep])
                if stats is not None:
                    out[name] = stats
        return {"weights": weights, "grads": grads}

    def _mask_snapshot(self) -> list | None:
        """``mask != 0`` of every layer with a ``weight_mask`` (None per layer without);
        ``None`` when no layer has one."""
        masks = []
        for _, module in self.layers:
            mask = module._buffers.get("weight_mask")
            masks.append(mask.detach() != 0 if isinstance(mask, torch.Tensor) else None)
        return masks if any(m is not None for m in masks) else None

    def _collapse(self) -> dict:
        from sigprop.diagnostics import check_collapse

        try:
            report = check_collapse(self.model)
        except InvalidInput as exc:
            return {"error": " ".join(str(exc).split())}
        total = report.total
        eff = report.effective_kept
        return {
            "density": report.kept / total if total else None,
            "effective_density": eff / total if eff is not None and total else None,
            "collapsed_layers": list(report.collapsed_layers),
            "effectively_collapsed_layers": list(report.effectively_collapsed_layers),
            "connected": report.connected,
        }


def _changed(before: list | None, after: list | None) -> bool:
    if before is None or after is None:
        return before is not after
    flags = []
    for a, b in zip(before, after):
        if (a is None) != (b is None):
            return True
        if a is None:
            continue
        if a.shape != b.shape or a.device != b.device:
            return True
        flags.append((a != b).any())
    return bool(torch.stack(flags).any()) if flags else False


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if torch.is_floating_point(p):
            return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _check_inputs(inputs) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2 or inputs.shape[0] < 1:
        raise InvalidInput("inputs must be a tensor of inputs with a leading batch dimension")
    if not torch.is_floating_point(inputs) or not bool(torch.isfinite(inputs).all()):
        raise InvalidInput("inputs must be finite floating-point numbers")
    return inputs.detach()


def _predicted(prediction, names: tuple[str, ...]) -> dict:
    """``{layer: {field: value}}`` from a :class:`sigprop.diagnostics.Prediction`."""
    pred_names = getattr(prediction, "names", None)
    if not isinstance(pred_names, Sequence) or not all(isinstance(n, str) for n in pred_names):
        raise InvalidInput("prediction must be a sigprop.diagnostics.Prediction (from predict)")
    missing = [n for n in pred_names if n not in names]
    if missing:
        raise InvalidInput(
            f"the prediction's layers {missing[:5]} are not weight layers of the watched model"
        )
    out: dict = {name: {} for name in pred_names}
    for key in PREDICTED_FIELDS:
        column = getattr(prediction, key, None)
        if column is None:
            continue
        column = [float(v) for v in column]
        if len(column) != len(pred_names):
            raise InvalidInput(
                f"prediction.{key} has {len(column)} values for {len(pred_names)} layers"
            )
        for name, v in zip(pred_names, column):
            out[name][key] = _finite(v)
    return out


def watch(
    model: nn.Module,
    log_dir: str | os.PathLike | None,
    every: int = 10,
    inputs: torch.Tensor | None = None,
    tensorboard: bool | None = None,
    **options,
) -> Watcher:
    """Watch ``model`` during the user's own training: a :class:`Watcher` recording into
    ``log_dir/sigprop.jsonl`` every ``every`` steps (call ``.step()`` after each optimiser
    step, ``.close()`` at the end, or use it as a context manager). ``options`` are the
    other keyword arguments of :class:`Watcher` (``prediction``, ``collapse``, ...)."""
    return Watcher(model, log_dir, every=every, inputs=inputs, tensorboard=tensorboard, **options)
