"""SigpropCallback inside a real Lightning Trainer (skipped where Lightning is not installed)."""

import importlib.util

import pytest
import torch
from torch import nn

from sigprop.watcher import read_log

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="needs lightning"),
    # Lightning's own advice (data-loader workers, logging intervals) is not under test
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def _pl():
    import importlib

    # sigprop's integration first: it makes a broken torchvision importable for Lightning
    importlib.import_module("sigprop.integrations.lightning")
    return importlib.import_module("lightning.pytorch")


def _module():
    pl = _pl()

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
            with torch.no_grad():
                for p in self.net.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) / 4)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


class _GradientSpy:
    """Reads the gradients in on_before_optimizer_step: exactly what the optimiser steps on."""

    def __new__(cls):
        pl = _pl()

        class Spy(pl.Callback):
            def __init__(self):
                self.norms = {}

            def on_before_optimizer_step(self, trainer, pl_module, optimizer):
                self.norms[trainer.global_step + 1] = [
                    float(p.grad.norm())
                    for n, p in pl_module.named_parameters()
                    if n.endswith("weight")
                ]

        return Spy()


@pytest.mark.parametrize("accumulate", [1, 2])
def test_callback_records_the_trainers_optimiser_steps(tmp_path, accumulate):
    from sigprop.integrations.lightning import SigpropCallback

    pl = _pl()

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    callback, spy = SigpropCallback(every=2, tensorboard=False), _GradientSpy()
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[callback, spy],
        default_root_dir=str(tmp_path),
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    module = _module()
    trainer.fit(module, loader)
    log = read_log(callback.path)
    steps = trainer.global_step
    assert steps == 16 // accumulate
    assert list(log.steps) == [0, *range(2, steps + 1, 2)]
    for i, step in enumerate(log.steps[1:], start=1):
        assert list(log.values["grad_norm"][i]) == spy.norms[step]  # exact
    assert log.layers == ("net.0", "net.2")
    assert callback.watcher is None  # closed at the end of training
    for m in module.modules():
        assert not m._forward_hooks
