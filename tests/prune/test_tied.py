"""Tied (shared) weights: one mask per weight tensor, whatever the number of layers using it.

Before, two layers sharing a weight got two independent masks from ``prune_at_init`` (random:
densities 0.297 and 0.336) and each zeroed the shared weight where it pruned, so only the
intersection (0.105) was kept.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sigprop.nn import MaskedLinear
from sigprop.prune import apply, attach_masks, density_report, prune_at_init, tied_layers


def _tied_model():
    torch.manual_seed(0)  # test-side seeding of torch's default init
    a, b = MaskedLinear(8, 8), MaskedLinear(8, 8)
    b.weight = a.weight
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), a, nn.Tanh(), b, nn.Tanh(), nn.Linear(8, 2))
    attach_masks(model)
    return model, a, b


def _data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(32, 8, generator=g), torch.randint(0, 2, (32,), generator=g)


def test_tied_layers_are_found():
    model, _, _ = _tied_model()
    assert tied_layers(model) == {"4.weight": "2.weight"}


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow"])
def test_one_mask_per_weight_tensor(method):
    model, a, b = _tied_model()
    kw = {"input_shape": (8,)} if method == "synflow" else {}
    data = _data() if method in ("snip", "grasp") else None
    result = prune_at_init(
        model, method, 0.3, data, generator=torch.Generator().manual_seed(1), progress=False, **kw
    )
    assert torch.equal(a.weight_mask, b.weight_mask)
    kept_shared = int(a.weight_mask.sum())
    # the shared weight keeps what its (single) mask keeps, not an intersection of two
    assert int((a.weight != 0).sum()) == kept_shared
    # exact global count over the distinct tensors (64 + 64 + 16 weights)
    distinct = 64 + 64 + 16
    assert result.report.kept == round(0.3 * distinct)
    assert result.report.total == distinct
    assert [layer.kept for layer in result.report.layers][1:3] == [kept_shared, kept_shared]


def test_apply_writes_a_shared_mask_to_every_layer_holding_it():
    model, a, b = _tied_model()
    mask = torch.rand(8, 8, generator=torch.Generator().manual_seed(2)) < 0.5
    apply(model, {"2.weight": mask})
    assert torch.equal(b.weight_mask.bool(), mask)
    assert int((a.weight != 0).sum()) == int(mask.sum())


def test_apply_refuses_two_masks_for_one_weight():
    model, a, _ = _tied_model()
    before = a.weight_mask.clone()
    ones, zeros = torch.ones(8, 8), torch.zeros(8, 8)
    with pytest.raises(ValueError, match="share one weight tensor"):
        apply(model, {"2.weight": ones, "4.weight": zeros})
    assert torch.equal(a.weight_mask, before)  # nothing written


def test_density_report_counts_a_shared_weight_once():
    model, _, _ = _tied_model()
    report = density_report(model)
    assert len(report.layers) == 4
    assert report.total == 64 + 64 + 16
