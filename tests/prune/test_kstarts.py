"""K-starts and dissipating gradients on the one training loop: short_train's hooks and
callbacks see the same steps, DSR is a loop callback."""

import torch
from torch import nn

import sigprop.prune as sp
from sigprop.nn import MaskedLinear, apply_masks_
from sigprop.nn.loop import Callback, fit


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        MaskedLinear(10, 12, density=0.5, generator=g), nn.Tanh(), MaskedLinear(12, 3, generator=g)
    )
    x, y = torch.randn(40, 10, generator=g), torch.randint(0, 3, (40,), generator=g)
    return model, [(x[:20], y[:20]), (x[20:], y[20:])]


def test_short_train_hooks_and_callbacks_see_the_same_gradients():
    import copy

    model, data = _setup()
    other = copy.deepcopy(model)
    via_hook, via_callback = [], []

    class Grads(Callback):
        def on_before_step(self, step, model):
            via_callback.append(model[0].weight.grad.clone())

    sp.short_train(
        model,
        data,
        epochs=2,
        lr=0.05,
        momentum=0.9,
        on_backward=lambda m: via_hook.append(m[0].weight.grad.clone()),
    )
    sp.short_train(other, data, epochs=2, lr=0.05, momentum=0.9, callbacks=[Grads()])
    assert len(via_hook) == len(via_callback) == 4
    assert all(torch.equal(a, b) for a, b in zip(via_hook, via_callback))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))
    mask = model[0].weight_mask
    assert all(
        torch.count_nonzero(g[mask == 0]) == 0 for g in via_hook
    )  # as the optimiser sees them


def test_dsr_as_a_loop_callback_matches_explicit_steps():
    import copy

    model, data = _setup(1)
    twin = copy.deepcopy(model)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    dsr = sp.DSR(model, prune_interval=2, target_prune_fraction=0.1, generator=g1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dsr.attach_optimizer(opt)
    fit(model, opt, data, epochs=3, loss_fn=nn.functional.cross_entropy, callbacks=[dsr])

    dsr2 = sp.DSR(twin, prune_interval=2, target_prune_fraction=0.1, generator=g2)
    opt2 = torch.optim.SGD(twin.parameters(), lr=0.1)
    dsr2.attach_optimizer(opt2)
    step = 0
    for _ in range(3):
        for x, y in data:
            loss = nn.functional.cross_entropy(twin(x), y)
            opt2.zero_grad(set_to_none=True)
            loss.backward()
            opt2.step()
            apply_masks_(twin)  # what the loop's masked step does after the optimiser
            step += 1
            dsr2.step(step)
    assert [r.to_dict() for r in dsr.history] == [r.to_dict() for r in dsr2.history]
    assert len(dsr.history) == 3
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values())
    )
