"""TensorBoard output of the watcher (the optional ``tensorboard`` extra).

The same scalars as the JSON Lines log, tagged ``QUANTITY/LAYER`` (``grad_norm/0``,
``density/features.3``), model-level ``model/density`` and ``model/effective_density``
when a collapse check ran, and per-layer histograms of the kept weights
(``weights/LAYER``) and of their gradients (``grads/LAYER``), through
``torch.utils.tensorboard.SummaryWriter`` into the log folder. A resumed log purges the
events after its last complete step (``purge_step``), so a crashed run's extra points do
not show twice.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from sigprop.validate import InvalidInput

__all__ = ["TensorBoardSink", "tensorboard_available"]


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (which ``torch.utils.tensorboard`` needs) is
    installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardSink:
    """Writes watcher records as TensorBoard events into ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike, *, purge_step: int | None = None) -> None:
        if not tensorboard_available():
            raise InvalidInput(
                "tensorboard=True needs the tensorboard package: pip install 'sigprop[tensorboard]'"
            )
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            log_dir=str(log_dir), purge_step=purge_step, max_queue=1000, flush_secs=10
        )

    def write(self, step: int, layers: dict, model: dict | None) -> None:
        """``layers``: ``{name: {quantity: float or None}}``; ``model``: model-level
        scalars (``density``, ``effective_density``) or ``None``."""
        for name, entry in layers.items():
            for quantity, value in entry.items():
                if value is not None:
                    self.writer.add_scalar(f"{quantity}/{name}", value, step)
        for key, value in (model or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"model/{key}", value, step)

    def histograms(self, step: int, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
        """``tensors``: ``{"weights": {name: kept values}, "grads": {...}}``."""
        for kind, by_layer in tensors.items():
            for name, values in by_layer.items():
                if values.numel() and bool(torch.isfinite(values).all()):
                    self.writer.add_histogram(f"{kind}/{name}", values.float(), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
