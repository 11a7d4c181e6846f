"""The one training loop: callback order and arguments, masks, divergence, bad input."""

import math

import pytest
import torch
from torch import nn

from sigprop.nn import MaskedLinear
from sigprop.nn.loop import CALLBACK_METHODS, Callback, fit
from sigprop.validate import InvalidInput


def _model():
    g = torch.Generator().manual_seed(0)
    return nn.Sequential(MaskedLinear(6, 8, density=0.5, generator=g), nn.Tanh(), nn.Linear(8, 3))


def _data(n_batches=3):
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g))
        for _ in range(n_batches)
    ]


class Log(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, model):
        self.calls.append(("begin", model.training))

    def on_before_step(self, step, model):
        layer = model[0]
        pruned = layer.weight.grad[layer.weight_mask == 0]
        self.calls.append(("before", step, bool((pruned == 0).all())))

    def on_step(self, step, model, batch, loss):
        layer = model[0]
        self.calls.append(("step", step, bool((layer.weight[layer.weight_mask == 0] == 0).all())))
        assert not loss.requires_grad and batch[0].shape == (4, 6)

    def on_epoch_end(self, epoch, model):
        self.calls.append(("epoch", epoch))

    def on_train_end(self, model):
        self.calls.append(("end",))


def test_callbacks_are_called_in_order_with_masked_gradients_and_weights():
    model = _model()
    model.eval()
    log = Log()
    partial = type(
        "OnlyEpochs", (), {"on_epoch_end": lambda self, e, m: log.calls.append(("p", e))}
    )()
    result = fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1),
        _data(),
        epochs=2,
        loss_fn=nn.functional.cross_entropy,
        callbacks=[log, partial],
    )
    assert (result.steps, result.epochs, result.diverged_at) == (6, 2, None)
    expected = [("begin", False)]
    for epoch in (1, 2):
        for step in range(3 * epoch - 2, 3 * epoch + 1):
            expected += [("before", step, True), ("step", step, True)]
        expected += [("epoch", epoch), ("p", epoch)]
    assert log.calls == [*expected, ("end",)]
    assert model.training  # the loop trains in train mode; restoring is the caller's choice
    assert set(CALLBACK_METHODS) == {m for m in dir(Callback) if m.startswith("on_")}


def test_nonfinite_loss_stops_before_its_backward():
    model = _model()
    data = _data()
    data[1] = (torch.full((4, 6), float("nan")), data[1][1])
    log = Log()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = fit(
        model,
        opt,
        data,
        epochs=3,
        loss_fn=nn.functional.cross_entropy,
        callbacks=[log],
        stop_on_nonfinite=True,
    )
    assert (result.steps, result.epochs, result.diverged_at) == (1, 0, 2)
    assert [c[0] for c in log.calls] == ["begin", "before", "step", "end"]
    assert all(math.isfinite(float(p.detach().abs().sum())) for p in model.parameters())


def test_train_end_runs_when_a_callback_raises():
    class Boom(Callback):
        def on_step(self, step, model, batch, loss):
            raise InvalidInput("boom")

    log = Log()
    model = _model()
    with pytest.raises(InvalidInput, match="boom"):
        fit(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            _data(),
            epochs=1,
            loss_fn=nn.functional.cross_entropy,
            callbacks=[log, Boom()],
        )
    assert log.calls[-1] == ("end",)


def test_bad_input():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(InvalidInput, match="not a callback"):
        fit(
            model, opt, _data(), epochs=1, loss_fn=nn.functional.cross_entropy, callbacks=[object()]
        )
    with pytest.raises(InvalidInput, match="sequence"):
        fit(model, opt, _data(), epochs=1, loss_fn=nn.functional.cross_entropy, callbacks="x")
    with pytest.raises(InvalidInput, match="no batch"):
        fit(model, opt, [], epochs=1, loss_fn=nn.functional.cross_entropy)
    with pytest.raises(InvalidInput, match="epochs"):
        fit(model, opt, _data(), epochs=0, loss_fn=nn.functional.cross_entropy)
