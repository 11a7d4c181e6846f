"""The :func:`train` function: settings checked, optimiser and schedule built, the one
training loop run with the callbacks of :mod:`~sigprop.experiments.train.callbacks`."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from sigprop.experiments.data import Dataset
from sigprop.experiments.recorders import Recorder
from sigprop.experiments.train.callbacks import DSRStep, EpochRecord, ShuffledBatches
from sigprop.experiments.train.result import TrainResult
from sigprop.nn.loop import check_callbacks, fit
from sigprop.nn.prunable import masked_modules, reapply_mask_
from sigprop.validate import InvalidInput, positive_int

__all__ = ["OPTIMIZERS", "SCHEDULES", "train"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = (None, "step", "cosine")


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
    callbacks : sequence
        Further callbacks of the loop (:mod:`sigprop.nn.loop`: any object with some of
        ``on_train_begin``, ``on_before_step``, ``on_step``, ``on_epoch_end``,
        ``on_train_end``), called after DSR and the recorders, e.g. a
        :class:`sigprop.watcher.Watcher`.
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

    epochs_cb = EpochRecord(
        opt, classify, (x_te, y_te), (x_va, y_va), eval_batch_size, scheduler, data
    )

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
        *([DSRStep(dsr)] if dsr is not None else []),
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
                ShuffledBatches(x_tr, y_tr, batch_size, generator),
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
