"""Models masked by sigprop save with their graph: ``torch.save(model)`` and ``torch.export``
after any number of forward passes and a training step, and ``sigprop check`` reads both
back with the right masks."""

from __future__ import annotations

import json

import pytest
import torch

from sigprop.cli import main
from sigprop.nn.models import mlp
from sigprop.prune import attach_masks, prune_at_init


def _models():
    plain = torch.nn.Sequential(
        torch.nn.Linear(8, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 3),
    )
    attach_masks(plain)
    ours = mlp(8, 16, 3, 3, "tanh", layer="masked", generator=0)
    return {"attach_masks": plain, "sigprop.nn": ours}


def _used(model):
    """Forward passes and one SGD step, as a training run leaves a model."""
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        model(x)
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad()
    model(x)
    return x


@pytest.mark.parametrize("kind", ["attach_masks", "sigprop.nn"])
def test_torch_save_after_training_and_check_reads_it(kind, tmp_path, capsys):
    model = _models()[kind]
    prune_at_init(model, "random", 0.3, None, generator=0, progress=False)
    x = _used(model)
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert torch.equal(loaded(x), model(x))
    # the gradient masking is re-established in the loaded copy
    loaded(x).square().mean().backward()
    for m in loaded.modules():
        if "weight_mask" in m._buffers:
            assert not bool((m.weight.grad * (1 - m.weight_mask)).any())
    assert main(["check", str(path), "--trust-pickle", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kept"] == sum(
        int(m.weight_mask.sum()) for m in model.modules() if "weight_mask" in m._buffers
    )


@pytest.mark.parametrize("kind", ["attach_masks", "sigprop.nn"])
def test_torch_export_after_training_and_check_reads_it(kind, tmp_path, capsys):
    model = _models()[kind]
    prune_at_init(model, "random", 0.3, None, generator=0, progress=False)
    x = _used(model)
    program = torch.export.export(model, (x,))
    assert torch.allclose(program.module()(x), model(x))
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    assert main(["check", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    kept = sum(int(m.weight_mask.sum()) for m in model.modules() if "weight_mask" in m._buffers)
    assert report["kept"] == kept and report["connected"] is True
