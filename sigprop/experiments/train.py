"""One training loop for every experiment in sigprop.

:func:`train` trains any ``nn.Module`` on a :class:`~sigprop.experiments.data.Dataset` with
SGD or Adam and an optional learning-rate schedule, keeps pruned weights at exactly zero,
drives a dynamic-sparsity component (DSR), feeds recorders, shows a tqdm bar, and returns a
frozen :class:`TrainResult`.

Reproducibility
---------------
The shuffling order comes from a local ``torch.Generator`` seeded from ``seed``; anything
that draws from torch's *global* generator inside the model (dropout) runs inside
``torch.random.fork_rng`` seeded from ``seed`` as well, so the caller's global random state is
the same after :func:`train` as before it. On the CPU two calls with the same model state,
data, settings and ``seed`` give bit-identical numbers (with the same number of torch
threads; ``torch.use_deterministic_algorithms`` is global state and is left to the caller —
set it yourself for CUDA).

Masks
-----
Every module with a ``weight_mask`` buffer (``sigprop.nn.masked.masked_modules``: sigprop's
masked and DCT-plus-sparse layers, or anything following that convention) is stepped with
``sigprop.nn.masked.masked_step_`` — pruned gradients zeroed, optimiser step, mask
re-applied (its own ``apply_mask_()`` when it has one, else pruned weights set to 0) — so
neither momentum nor weight decay can revive a pruned weight.

Divergence
----------
A non-finite training loss stops the run: the result has ``diverged=True``, the step in
``diverged_at``, and the metrics of the epochs completed before it. Nothing is raised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sigprop._json import to_jsonable
from sigprop.experiments.data import Dataset, minibatches
from sigprop.experiments.recorders import Recorder
from sigprop.nn.loop import Callback, check_callbacks, fit
from sigprop.nn.masked import masked_modules, reapply_mask_
from sigprop.validate import InvalidInput, positive_int

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainResult", "evaluate", "train"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = (None, "step", "cosine")


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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 2048,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in ``eval()`` mode, without gradients.

    Cross-entropy and top-1 accuracy for int64 labels; mean squared error and NaN accuracy
    for float targets. The model's train/eval mode is restored afterwards. Empty data gives
    ``(nan, nan)``.
    """
    n = int(x.shape[0])
    if n == 0:
        return float("nan"), float("nan")
    classify = not torch.is_floating_point(y)
    was_training = model.training
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        for xb, yb in minibatches(x, y, batch_size, shuffle=False):
            out = model(xb)
            if classify:
                loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum").double()
                correct += (out.argmax(dim=1) == yb).sum()
            else:
                loss_sum += nn.functional.mse_loss(out, yb, reduction="sum").double() / (
                    yb[0].numel()
                )
    finally:
        model.train(was_training)
    acc = correct.item() / n if classify else float("nan")
    return loss_sum.item() / n, acc


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int = 64,
    optimizer: str = "sgd",
    lr: float = 0.01,
    momentum: float | None = None,
    weight_decay: float = 0.0,
    schedule: str | None = None,
    recorders: Sequence[Recorder] = (),
    dsr=None,
    callbacks: Sequence = (),
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    eval_batch_size: int = 2048,
) -> TrainResult:
    """Train ``model`` in place on ``dataset`` and return the per-epoch record.

    Parameters
    ----------
    model : nn.Module
        Any module mapping a batch of inputs to logits ``(B, n_classes)`` (or to regression
        outputs ``(B, k)``). It is moved to ``device`` and trained in place.
    dataset : Dataset
        From :func:`sigprop.experiments.data.load_dataset`. Loss: cross-entropy for
        classification, mean squared error for regression.
    epochs : int
        Passes over the training set (≥ 1).
    batch_size : int
        Mini-batch size; the last batch of an epoch may be smaller.
    optimizer : ``"sgd"`` or ``"adam"``
        ``torch.optim.SGD`` (with ``momentum``, default 0.9) or ``torch.optim.Adam``
        (default betas; ``momentum`` must then be left ``None``).
    lr, weight_decay : float
        Learning rate (> 0) and L2 weight decay (≥ 0) of the optimiser.
    schedule : ``None``, ``"step"`` or ``"cosine"``
        Per-epoch learning-rate schedule: constant; ×0.1 after 50 % and again after 75 % of
        the epochs (the protocol of Hayou et al., arXiv 2002.08797, §5); or cosine annealing
        lr·(1 + cos(π e/E))/2 for epoch e = 0..E−1 (Loshchilov & Hutter, arXiv 1608.03983,
        eq. 5, without restarts).
    recorders : sequence of Recorder
        Diagnostics recorded during training (:mod:`sigprop.experiments.recorders`); names
        must be unique.
    dsr : object with ``step(iteration)`` or None
        A dynamic sparse reparameterisation component (``sigprop.prune.DSR``), stepped after
        every optimiser step (after the masks are re-applied) with the step count from 1.
        If it has an ``attach_optimizer(optimizer)`` method, it is called once with the
        optimiser :func:`train` creates, so it can reset the state of regrown weights.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    seed : int
        Seeds the shuffling order and the model's stochastic layers (see the module docstring).
    progress : bool
        Show a tqdm progress bar (per step, with the latest losses).
    eval_batch_size : int
        Batch size of the per-epoch evaluation.
    """
    _validate(
        model, dataset, epochs, batch_size, optimizer, lr, momentum, weight_decay, schedule, seed
    )
    recorders = tuple(recorders)
    names = [getattr(r, "name", None) for r in recorders]
    for r, n in zip(recorders, names):
        if not isinstance(r, Recorder) or not isinstance(n, str):
            raise InvalidInput(
                f"{r!r} is not a recorder (needs a name and on_train_begin/on_step/"
                "on_epoch_end/result)"
            )
    if len(set(names)) != len(names):
        raise InvalidInput(f"recorder names must be unique, got {names}")
    callbacks = check_callbacks(callbacks)
    if dsr is not None and not callable(getattr(dsr, "step", None)):
        raise InvalidInput("dsr must have a step(iteration) method (e.g. sigprop.prune.DSR)")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {device} requested but CUDA is not available")

    model.to(device)
    float_params = [p for p in model.parameters() if torch.is_floating_point(p)]
    if not float_params:
        raise InvalidInput("the model has no floating-point parameters to train")
    dtype = float_params[0].dtype
    data = dataset.to(device)
    x_tr, x_te, x_va = (t.to(dtype) for t in (data.x_train, data.x_test, data.x_val))
    y_tr, y_te, y_va = data.y_train, data.y_test, data.y_val
    if not data.n_classes:
        y_tr, y_te, y_va = (t.to(dtype) for t in (y_tr, y_te, y_va))
    classify = data.n_classes > 0

    if optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=0.9 if momentum is None else momentum,
            weight_decay=weight_decay,
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if schedule == "step":
        milestones = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    else:
        scheduler = None
    if dsr is not None and callable(getattr(dsr, "attach_optimizer", None)):
        dsr.attach_optimizer(opt)

    masked = list(masked_modules(model).values())
    shuffle_seed, rng_seed = np.random.SeedSequence(seed).generate_state(2).tolist()
    generator = torch.Generator().manual_seed(shuffle_seed)
    n_train = int(x_tr.shape[0])
    steps_per_epoch = math.ceil(n_train / batch_size)
    config = {
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": (0.9 if momentum is None else momentum) if optimizer == "sgd" else None,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "dsr": dsr is not None,
        "device": str(device),
        "seed": seed,
        "dataset": data.name,
    }

    from tqdm.auto import tqdm

    epochs_cb = _Epochs(opt, classify, (x_te, y_te), (x_va, y_va), eval_batch_size, scheduler, data)

    checked = []

    def loss_fn(out, yb):
        if not checked:  # the first batch, before its loss is computed
            _check_output(out, (int(yb.shape[0]), *x_tr.shape[1:]), data)
            checked.append(True)
        epochs_cb.out = out
        if classify:
            return nn.functional.cross_entropy(out, yb)
        return nn.functional.mse_loss(out, yb)

    # the order of the callbacks is the order of the steps of the loop: DSR changes the
    # masks first, then the epoch statistics and evaluation, the recorders and the user's
    # callbacks see the result; the schedule steps and the bar shows the epoch last
    loop_callbacks = [
        *([_DSRStep(dsr)] if dsr is not None else []),
        epochs_cb,
        *recorders,
        *callbacks,
        epochs_cb.closer,
    ]
    was_training = model.training
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(rng_seed)
        for m in masked:
            reapply_mask_(m)
        epochs_cb.bar = tqdm(
            total=epochs * steps_per_epoch, desc="train", unit="step", disable=not progress
        )
        try:
            done = fit(
                model,
                opt,
                _Shuffled(x_tr, y_tr, batch_size, generator),
                epochs=epochs,
                loss_fn=loss_fn,
                callbacks=loop_callbacks,
                masked=masked,
                stop_on_nonfinite=True,
            )
        finally:
            epochs_cb.bar.close()
            model.train(was_training)
    wall = time.perf_counter() - start
    hist = epochs_cb.hist
    n_epochs = len(hist["train_loss"])
    return TrainResult(
        epochs=n_epochs,
        steps=done.steps,
        steps_per_epoch=steps_per_epoch,
        train_loss=tuple(hist["train_loss"]),
        train_accuracy=tuple(hist["train_acc"]),
        test_loss=tuple(hist["test_loss"]),
        test_accuracy=tuple(hist["test_acc"]),
        val_loss=tuple(hist["val_loss"]),
        val_accuracy=tuple(hist["val_acc"]),
        lr=tuple(hist["lr"][:n_epochs]),
        recorders={r.name: r.result() for r in recorders},
        diverged=done.diverged_at is not None,
        diverged_at=done.diverged_at,
        wall_time=wall,
        config=config,
    )


class _Shuffled:
    """The training batches, reshuffled from ``generator`` at every pass (one per epoch)."""

    def __init__(self, x, y, batch_size, generator):
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator

    def __iter__(self):
        return iter(minibatches(self.x, self.y, self.batch_size, generator=self.generator))


class _DSRStep(Callback):
    """A component with ``step(iteration)`` (``sigprop.prune.DSR``) as a loop callback."""

    def __init__(self, dsr):
        self.dsr = dsr

    def on_step(self, step, model, batch, loss):
        self.dsr.step(step)


class _Epochs(Callback):
    """The per-epoch record of :func:`train`: mean training loss and accuracy over the
    epoch's batches, test and validation metrics after it, the learning rate during it;
    :attr:`closer` steps the schedule and updates the bar after every other callback."""

    def __init__(self, opt, classify, test, val, eval_batch_size, scheduler, data):
        self.opt, self.classify, self.test, self.val = opt, classify, test, val
        self.eval_batch_size, self.scheduler, self.data = eval_batch_size, scheduler, data
        self.hist: dict[str, list[float]] = {
            k: []
            for k in (
                "train_loss",
                "train_acc",
                "test_loss",
                "test_acc",
                "val_loss",
                "val_acc",
                "lr",
            )
        }
        self.out = None
        self.bar = None
        self._reset()
        self.closer = _EpochCloser(self)

    def _reset(self):
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0

    def on_step(self, step, model, batch, loss):
        xb, yb = batch
        nb = int(xb.shape[0])
        self.loss_sum += loss.item() * nb
        self.seen += nb
        if self.classify:
            self.correct += int((self.out.detach().argmax(dim=1) == yb).sum())
        self.out = None
        self.bar.update(1)

    def on_epoch_end(self, epoch, model):
        hist = self.hist
        hist["lr"].append(float(self.opt.param_groups[0]["lr"]))
        hist["train_loss"].append(self.loss_sum / self.seen)
        if self.classify:
            hist["train_acc"].append(self.correct / self.seen)
        self._reset()
        te_loss, te_acc = evaluate(model, *self.test, batch_size=self.eval_batch_size)
        hist["test_loss"].append(te_loss)
        if self.classify:
            hist["test_acc"].append(te_acc)
        if self.val[0].shape[0]:
            va_loss, va_acc = evaluate(model, *self.val, batch_size=self.eval_batch_size)
            hist["val_loss"].append(va_loss)
            if self.classify:
                hist["val_acc"].append(va_acc)


class _EpochCloser(Callback):
    def __init__(self, epochs: _Epochs):
        self.epochs = epochs

    def on_epoch_end(self, epoch, model):
        e = self.epochs
        if e.scheduler is not None:
            e.scheduler.step()
        postfix = {
            "loss": f"{e.hist['train_loss'][-1]:.4g}",
            "test_loss": f"{e.hist['test_loss'][-1]:.4g}",
        }
        if e.classify:
            postfix["test_acc"] = f"{e.hist['test_acc'][-1]:.3f}"
        e.bar.set_postfix(postfix)


def _check_output(out: torch.Tensor, in_shape: tuple, data: Dataset) -> None:
    want = (in_shape[0], data.out_features)
    if tuple(out.shape) != want:
        raise InvalidInput(
            f"the model maps a batch of inputs {in_shape} to outputs {tuple(out.shape)}; "
            f"dataset {data.name!r} needs {want}"
        )


def _validate(
    model, dataset, epochs, batch_size, optimizer, lr, momentum, weight_decay, schedule, seed
):
    if not isinstance(model, nn.Module):
        raise InvalidInput(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(dataset, Dataset):
        raise InvalidInput(
            "dataset must be a sigprop.experiments.data.Dataset (use load_dataset), "
            f"got {type(dataset).__name__}"
        )
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        v = positive_int(v, name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    if optimizer not in OPTIMIZERS:
        raise InvalidInput(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise InvalidInput(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise InvalidInput(f"lr must be a finite number > 0, got {lr!r}")
    if (
        not isinstance(weight_decay, int | float)
        or not math.isfinite(weight_decay)
        or weight_decay < 0
    ):
        raise InvalidInput(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if momentum is not None:
        if optimizer != "sgd":
            raise InvalidInput("momentum applies to optimizer='sgd' only (Adam uses its betas)")
        if not isinstance(momentum, int | float) or not 0 <= momentum < 1:
            raise InvalidInput(f"momentum must lie in [0, 1), got {momentum!r}")
