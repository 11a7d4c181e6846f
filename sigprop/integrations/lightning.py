"""``SigpropCallback``: :func:`sigprop.watch` inside a Lightning ``Trainer``.

::

    from sigprop.integrations.lightning import SigpropCallback
    trainer = lightning.Trainer(callbacks=[SigpropCallback(every=10)])

The callback creates a :class:`sigprop.watcher.Watcher` on the ``LightningModule`` when
training starts (on the global-zero process only, so a multi-process run writes one log)
and counts the trainer's ``global_step``: a record is written after every ``every``-th
optimiser step, read in ``on_train_batch_end``, where the step's gradients are still in
``.grad`` (Lightning clears them before the next training step; with gradient accumulation
only the batches that end with an optimiser step count). The log goes to ``log_dir``, by
default ``<trainer.log_dir>/sigprop`` (``default_root_dir`` without a logger); a run
resumed from a checkpoint appends to the same log. The watcher is closed at the end of
training, on an exception and at teardown.

Needs the ``lightning`` package (the ``lightning`` extra). Where torchvision is installed
but its compiled extension cannot load (a CUDA torchvision next to a CPU torch), importing
Lightning fails inside torchvision; this module imports torchvision through
:func:`sigprop.nn.arch.import_torchvision` first, which handles that case.
"""

from __future__ import annotations

import importlib.util
import os

if importlib.util.find_spec("lightning") is None:
    raise ImportError(
        "sigprop.integrations.lightning needs Lightning: pip install 'sigprop[lightning]'"
    )
if importlib.util.find_spec("torchvision") is not None:
    from sigprop.nn.arch import import_torchvision

    import_torchvision()

import lightning.pytorch as pl  # noqa: E402

from sigprop.validate import positive_int  # noqa: E402
from sigprop.watcher import Watcher  # noqa: E402

__all__ = ["SigpropCallback"]


class SigpropCallback(pl.Callback):
    """Record per-layer signal-propagation statistics of the ``LightningModule``.

    Parameters are those of :class:`sigprop.watcher.Watcher` (``every``, ``inputs``,
    ``tensorboard``, ``prediction`` and the other keyword options); ``log_dir=None`` uses
    ``<trainer.log_dir>/sigprop``. :attr:`watcher` is the running watcher (``None`` before
    and after training and on processes other than global zero); :attr:`path` the log
    folder.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        every: int = 10,
        inputs=None,
        tensorboard: bool | None = None,
        **options,
    ) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.every = positive_int(every, "every")
        self.inputs = inputs
        self.tensorboard = tensorboard
        self.options = options
        self.watcher: Watcher | None = None
        #: The log folder of the last run (set when training starts).
        self.path: str | None = None
        self._last_step = 0

    def _log_dir(self, trainer) -> str:
        if self.log_dir is not None:
            return os.fspath(self.log_dir)
        root = trainer.log_dir or trainer.default_root_dir
        return os.path.join(root, "sigprop")

    def on_train_start(self, trainer, pl_module) -> None:
        self._close()
        if not trainer.is_global_zero:
            return
        self.path = self._log_dir(trainer)
        self.watcher = Watcher(
            pl_module,
            self.path,
            every=self.every,
            inputs=self.inputs,
            tensorboard=self.tensorboard,
            **self.options,
        )
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.watcher is None:
            return
        step = trainer.global_step
        if step != self._last_step:  # this batch ended with an optimiser step
            self._last_step = step
            self.watcher.step(step)

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()

    def teardown(self, trainer, pl_module, stage) -> None:
        self._close()

    def _close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
