"""rescale_ on pruned torchvision architectures (Hayou et al. 2021, arXiv 2002.08797, §4):
masks from sigprop.prune and from torch.nn.utils.prune, dense scale read from the layer."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from sigprop.nn import prunable_layers, rescale_
from sigprop.nn.arch import build_model
from sigprop.prune import apply, attach_masks, prune_at_init
from sigprop.validate import InvalidInput


def _convs(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _unit_sum_sq(weight):
    return (weight.detach().double() ** 2).sum(dim=1)


def _part(arch):
    # VGG's ImageNet classifier (120M weights) is not what these tests are about: its
    # convolutional trunk is
    model = build_model(arch, num_classes=10)
    return model.features if hasattr(model, "features") else model


@pytest.mark.parametrize("arch", ["torchvision:resnet18", "torchvision:vgg11_bn"])
def test_rescale_restores_each_units_dense_second_moment(arch):
    torch.manual_seed(0)
    model = _part(arch)
    attach_masks(model)
    dense = {n: float((m.weight.detach().double() ** 2).mean()) for n, m in _convs(model)}
    prune_at_init(model, "random", 0.1, generator=0)
    result = rescale_(model)
    assert len(result.layers) == len(dense)
    for name, module in _convs(model):
        w, mask = module.weight, module.weight_mask
        n_unit = w.shape[1]
        target = n_unit * dense[name]  # Σ_j W̃_uj² = n_u σ_w²/fan_in, σ_w²/fan_in = E[w²]
        s = _unit_sum_sq(w)
        live = (mask.sum(dim=1) < n_unit) & (s > 0)
        assert torch.allclose(s[live], torch.full_like(s[live], target), rtol=1e-6), name
        assert torch.all(w[mask == 0] == 0)
    again = rescale_(model)  # twice == once
    assert all(abs(r.mean_factor - 1.0) < 1e-6 for r in again.layers)


def test_rescale_torch_prune_scales_weight_orig_and_the_forward_sees_it():
    torch.manual_seed(1)
    model = _part("torchvision:vgg11")
    convs = _convs(model)
    dense = {n: float((m.weight.detach().double() ** 2).mean()) for n, m in convs}
    torch_prune.global_unstructured(
        [(m, "weight") for _, m in convs], pruning_method=torch_prune.RandomUnstructured, amount=0.9
    )
    rescale_(model)
    for name, module in convs:
        s = _unit_sum_sq(module.weight_orig * module.weight_mask)
        live = (module.weight_mask.sum(dim=1) < module.weight_orig.shape[1]) & (s > 0)
        target = module.weight_orig.shape[1] * dense[name]
        assert torch.allclose(s[live], torch.full_like(s[live], target), rtol=1e-6), name
        assert torch.equal(module.weight, module.weight_orig * module.weight_mask)


def test_rescale_restores_the_dense_signal_of_a_pruned_vgg():
    # VGG-11 trunk without BatchNorm, eval mode, N(0,1) inputs, every conv but the first
    # pruned at random to density 0.1 (the first has 3 input channels, so most of its
    # (channel, position) units would keep no weight at all and stay empty — the trick
    # cannot restore those). Pruning multiplies the variance by ≈ 0.1 per layer (7 layers:
    # ≈ 1e-7); rescaled, every unit's Σ W² is on the dense expectation and ReLU and max
    # pooling are positively homogeneous, so q returns to the dense value up to the dense
    # net's own finite-size spread: each layer's q averages ≥ 64 channels whose Σ W² over
    # ≥ 576 weights fluctuate by √(2/576) ≈ 6%, i.e. ≲ 1% per layer, ≲ 3% over 7 layers,
    # plus the batch's sampling error (16 × ≥ 4 positions × ≥ 64 channels, ≲ 5%). The
    # bound below, 25%, is far from the unrescaled 1e-7 and above that noise.
    torch.manual_seed(2)
    x = torch.randn(16, 3, 32, 32)
    dense = _part("torchvision:vgg11").eval()
    pruned = _part("torchvision:vgg11").eval()
    pruned.load_state_dict(dense.state_dict())
    with torch.no_grad():
        q_dense = float(dense(x).pow(2).mean())
    attach_masks(pruned)
    gen = torch.Generator().manual_seed(0)
    keys = list(prunable_layers(pruned))
    masks = {
        k: torch.rand(prunable_layers(pruned)[k].weight.shape, generator=gen) < 0.1
        for k in keys[1:]
    }
    apply(pruned, masks)
    with torch.no_grad():
        q_pruned = float(pruned(x).pow(2).mean())
    rescale_(pruned)
    with torch.no_grad():
        q_rescaled = float(pruned(x).pow(2).mean())
    assert q_pruned < 1e-4 * q_dense
    assert abs(math.log(q_rescaled / q_dense)) < math.log(1.25)


def test_rescale_without_a_known_dense_scale_is_refused():
    model = _part("torchvision:vgg11")
    conv = model[0]
    conv.register_buffer("weight_mask", (torch.rand_like(conv.weight) < 0.5).float())
    with pytest.raises(InvalidInput, match="no recorded dense scale"):
        rescale_(model)
