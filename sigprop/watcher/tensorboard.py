"""TensorBoard output of the watcher (the optional ``tensorboard`` extra).

The same scalars as the JSON Lines log, tagged ``QUANTITY/LAYER`` (``grad_norm/0``,
``density/features.3``), model-level ``model/density`` and ``model/effective_density``
when a collapse check ran, and per-layer histograms of the kept weights
(``weights/LAYER``) and of their gradients (``grads/LAYER``), through
``torch.utils.tensorboard.SummaryWriter`` into the log folder. A resumed log purges the
events after its last complete step (``purge_step``), so a crashed run's extra points do
not show twice.

Cost: the events are written by a background thread (``SummaryWriter`` builds a protobuf
per scalar, which would otherwise sit in the training loop); histograms are reduced on the
model's device to 64 equal-width buckets plus min, max, count, sum and sum of squares
(:func:`histogram_stats`, O(n) torch reductions instead of TensorBoard's sort of every
value on the CPU) and written with ``add_histogram_raw``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import queue
import threading

import torch

from sigprop.validate import InvalidInput

__all__ = ["HISTOGRAM_BINS", "TensorBoardSink", "histogram_stats", "tensorboard_available"]

#: Buckets of a histogram.
HISTOGRAM_BINS = 64


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (which ``torch.utils.tensorboard`` needs) is
    installed."""
    return importlib.util.find_spec("tensorboard") is not None


def histogram_stats(values: torch.Tensor, bins: int = HISTOGRAM_BINS) -> torch.Tensor | None:
    """``[min, max, count, sum, sum of squares, counts of `bins` equal-width buckets]`` of
    ``values`` as one float64 tensor on their device (``None`` when empty or not finite).
    The buckets span [min, max]; a constant tensor has one bucket holding every value."""
    v = values.detach().flatten().to(torch.float64)
    if v.numel() == 0:
        return None
    lo, hi = v.min(), v.max()
    head = torch.stack(
        [
            lo,
            hi,
            torch.tensor(float(v.numel()), dtype=torch.float64, device=v.device),
            v.sum(),
            v.square().sum(),
        ]
    )
    counts = torch.histc(v, bins=bins, min=0, max=0)  # min = max = 0: the data's range
    return torch.cat([head, counts])


class TensorBoardSink:
    """Writes watcher records as TensorBoard events into ``log_dir`` from a thread."""

    def __init__(self, log_dir: str | os.PathLike, *, purge_step: int | None = None) -> None:
        if not tensorboard_available():
            raise InvalidInput(
                "tensorboard=True needs the tensorboard package: pip install 'sigprop[tensorboard]'"
            )
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            log_dir=str(log_dir), purge_step=purge_step, max_queue=1000, flush_secs=10
        )
        self._queue: queue.Queue = queue.Queue(maxsize=64)  # a slow disk slows the loop
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sigprop-tensorboard")
        self._thread.daemon = True
        self._thread.start()

    def write(
        self, step: int, layers: dict, model: dict | None, histograms: dict | None = None
    ) -> None:
        """Queue one record: ``layers`` ``{name: {quantity: float or None}}``, ``model``
        model-level scalars or ``None``, ``histograms`` ``{"weights"|"grads": {name:
        histogram_stats tensor}}`` or ``None``."""
        if self._error is not None:
            raise self._error
        self._queue.put(("record", step, layers, model, histograms))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item[0] == "stop":
                    return
                if item[0] == "flush":
                    self.writer.flush()
                    continue
                self._write(*item[1:])
            except BaseException as exc:  # reported by the next write
                self._error = exc
            finally:
                self._queue.task_done()

    def _write(self, step, layers, model, histograms) -> None:
        for name, entry in layers.items():
            for quantity, value in entry.items():
                if value is not None:
                    self.writer.add_scalar(f"{quantity}/{name}", value, step)
        for key, value in (model or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"model/{key}", value, step)
        for kind, by_layer in (histograms or {}).items():
            for name, stats in by_layer.items():
                s = stats.cpu().tolist()
                lo, hi, num, total, total_sq, counts = s[0], s[1], s[2], s[3], s[4], s[5:]
                if not (math.isfinite(lo) and math.isfinite(hi)):
                    continue  # a diverged run: no histogram rather than a broken one
                if hi == lo:
                    limits, counts = [hi], [num]
                else:
                    width = (hi - lo) / len(counts)
                    limits = [lo + width * (i + 1) for i in range(len(counts))]
                    limits[-1] = hi
                self.writer.add_histogram_raw(
                    f"{kind}/{name}", lo, hi, num, total, total_sq, limits, counts, step
                )

    def flush(self) -> None:
        """Write every queued record and flush the event file."""
        self._queue.put(("flush",))
        self._queue.join()

    def close(self) -> None:
        self._queue.put(("stop",))
        self._thread.join()
        self.writer.close()
