"""The callbacks :func:`~sigprop.experiments.train.train` adds to the one training loop
(:func:`sigprop.nn.loop.fit`): the shuffled batches, DSR as a callback, the per-epoch
record (training statistics, evaluation, learning rate) and the schedule/bar step."""

from __future__ import annotations

from sigprop.experiments.data import minibatches
from sigprop.experiments.train.evaluate import evaluate
from sigprop.nn.loop import Callback

__all__ = ["DSRStep", "EpochCloser", "EpochRecord", "ShuffledBatches"]


class ShuffledBatches:
    """The training batches, reshuffled from ``generator`` at every pass (one per epoch)."""

    def __init__(self, x, y, batch_size, generator):
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator

    def __iter__(self):
        return iter(minibatches(self.x, self.y, self.batch_size, generator=self.generator))


class DSRStep(Callback):
    """A component with ``step(iteration)`` (``sigprop.prune.DSR``) as a loop callback."""

    def __init__(self, dsr):
        self.dsr = dsr

    def on_step(self, step, model, batch, loss):
        self.dsr.step(step)


class EpochRecord(Callback):
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
        self.closer = EpochCloser(self)

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


class EpochCloser(Callback):
    def __init__(self, epochs: EpochRecord):
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
