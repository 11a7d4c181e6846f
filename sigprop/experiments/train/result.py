"""The frozen record a training run returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from sigprop._json import to_jsonable

__all__ = ["TrainResult"]


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train`. Per-epoch tuples have one entry per completed epoch.

    Attributes
    ----------
    epochs : int
        Epochs completed (fewer than requested when the run diverged).
    steps : int
        Optimiser steps taken.
    steps_per_epoch : int
        Mini-batches per epoch (to convert recorder steps into epochs).
    train_loss, train_accuracy : tuple of float
        Mean loss and accuracy over the epoch's mini-batches, as seen during the epoch
        (model in train mode, weights changing). Accuracy is empty for regression.
    test_loss, test_accuracy : tuple of float
        Loss and accuracy on the whole test set after each epoch (``eval()`` mode).
    val_loss, val_accuracy : tuple of float
        The same on the validation set; empty when the data set has none.
    lr : tuple of float
        Learning rate used during each epoch.
    recorders : dict
        ``{recorder.name: recorder.result()}``.
    diverged : bool
        ``True`` when a non-finite training loss stopped the run.
    diverged_at : int or None
        The step (counting from 1) whose loss was not finite.
    wall_time : float
        Seconds spent in the loop (evaluation and recording included).
    config : dict
        The settings of the run (optimiser, lr, schedule, batch size, seed, device, ...).
    """

    epochs: int
    steps: int
    steps_per_epoch: int
    train_loss: tuple[float, ...]
    train_accuracy: tuple[float, ...]
    test_loss: tuple[float, ...]
    test_accuracy: tuple[float, ...]
    val_loss: tuple[float, ...]
    val_accuracy: tuple[float, ...]
    lr: tuple[float, ...]
    recorders: dict = field(default_factory=dict)
    diverged: bool = False
    diverged_at: int | None = None
    wall_time: float = 0.0
    config: dict = field(default_factory=dict)

    @property
    def final_test_accuracy(self) -> float:
        """Test accuracy after the last completed epoch (NaN if none or regression)."""
        return self.test_accuracy[-1] if self.test_accuracy else float("nan")

    @property
    def final_train_accuracy(self) -> float:
        """Training accuracy of the last completed epoch (NaN if none or regression)."""
        return self.train_accuracy[-1] if self.train_accuracy else float("nan")

    @property
    def best_test_accuracy(self) -> float:
        """Best test accuracy over the completed epochs (NaN if none or regression)."""
        return max(self.test_accuracy) if self.test_accuracy else float("nan")

    @property
    def final_test_loss(self) -> float:
        """Test loss after the last completed epoch (NaN if none)."""
        return self.test_loss[-1] if self.test_loss else float("nan")

    def to_dict(self) -> dict:
        """JSON-serialisable dict of every field and the ``final_*``/``best_*`` values, via
        :func:`sigprop._json.to_jsonable`: non-finite numbers become ``None`` (strict JSON has
        no NaN) and a recorder result that is not JSON data raises ``TypeError``."""
        out = {
            "epochs": self.epochs,
            "steps": self.steps,
            "steps_per_epoch": self.steps_per_epoch,
            "train_loss": self.train_loss,
            "train_accuracy": self.train_accuracy,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
            "lr": self.lr,
            "recorders": self.recorders,
            "diverged": self.diverged,
            "diverged_at": self.diverged_at,
            "wall_time": self.wall_time,
            "config": self.config,
            "final_test_accuracy": self.final_test_accuracy,
            "final_train_accuracy": self.final_train_accuracy,
            "best_test_accuracy": self.best_test_accuracy,
            "final_test_loss": self.final_test_loss,
        }
        return to_jsonable(out, "TrainResult")
