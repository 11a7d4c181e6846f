"""sigprop.nn.masked's model-walking helpers: masked_modules, prunable_layers/require_prunable,
reapply_mask_/apply_masks_ and masked_step_ (the step of every masked training loop)."""

import pytest
import torch
from torch import nn

from sigprop.nn import DCTPlusSparseLinear, MaskedLinear
from sigprop.nn.prunable import (
    apply_masks_,
    masked_modules,
    masked_step_,
    prunable_layers,
    require_prunable,
)
from sigprop.prune import attach_masks


def _model(storage="dense"):
    gen = torch.Generator().manual_seed(0)
    plain = nn.Linear(5, 5)
    model = nn.Sequential(
        MaskedLinear(4, 5, density=0.5, generator=gen),
        nn.Tanh(),
        plain,
        nn.Tanh(),
        DCTPlusSparseLinear(5, 3, density=0.4, generator=gen, storage=storage),
    )
    attach_masks(model)  # only the plain nn.Linear receives a mask
    with torch.no_grad():
        plain.weight_mask.copy_((torch.rand(5, 5, generator=gen) < 0.5).float())
    return model


def test_masked_modules_and_prunable_layers():
    model = _model()
    keys = ["0.weight", "2.weight", "4.weight"]
    assert list(masked_modules(model)) == keys
    assert list(prunable_layers(model)) == keys == list(require_prunable(model))
    compact = _model("compact")
    assert list(masked_modules(compact)) == keys  # every storage is re-masked by training
    with pytest.raises(ValueError, match="compact storage"):
        prunable_layers(compact)
    with pytest.raises(ValueError, match="no prunable layer"):
        require_prunable(nn.Sequential(nn.Linear(2, 2)))


def test_apply_masks_covers_attached_layers_and_clears_nan():
    model = _model()
    plain = model[2]
    with torch.no_grad():
        plain.weight.fill_(float("nan"))
        plain.weight.masked_fill_(plain.weight_mask != 0, 1.0)
        model[0].weight.add_(1.0)
    assert apply_masks_(model) == 3
    for m in masked_modules(model).values():
        assert bool((m.weight[m.weight_mask == 0] == 0).all())


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_masked_step_keeps_pruned_weights_zero(opt_name):
    model = _model()
    params = list(model.parameters())
    opt = (
        torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
        if opt_name == "sgd"
        else torch.optim.AdamW(params, lr=0.1, weight_decay=0.1)
    )
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    seen = []
    modules = masked_modules(model).values()
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        masked_step_(opt, modules, before_step=lambda: seen.append(model[2].weight.grad.clone()))
    # the gradients handed to before_step are masked, and no pruned weight came back: exact 0
    assert all(bool((g[model[2].weight_mask == 0] == 0).all()) for g in seen)
    for m in modules:
        assert bool((m.weight[m.weight_mask == 0] == 0).all())
        assert bool((m.weight[m.weight_mask != 0] != 0).any())
