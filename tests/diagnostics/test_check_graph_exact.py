"""Exact weight-level effective sparsity (Vysogorets & Kempe, arXiv 2107.02306, Sec. 3).

Checked against the definition two ways, both exact (integer arithmetic; the counts are
made in float32 where they are bounded below 2^24, as on every net here, and the oracle
runs in float64):

* functionally: zeroing every weight called ineffective leaves the output of the real
  network (float64, biases and batch-norm shifts zero so that an unreached unit is exactly
  zero) unchanged *to the bit* on random inputs, while the kept effective weights are not
  all removable;
* against the paper's SynFlow-style oracle: a linearised copy with weights ``|W| * mask``
  made 0/1, an all-ones input, ``R`` the summed output; a weight is effective iff
  ``mask * dR/dW > 0``. Path counts on these small nets stay far below 2^53, so the oracle is
  exact. Max pooling is a window sum in the oracle (the path semantics of the definition).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sigprop.diagnostics.collapse import check_collapse
from sigprop.diagnostics.collapse import exact as E
from sigprop.diagnostics.collapse.exact import effective_masks
from sigprop.diagnostics.graph import capture


class _Net(nn.Module):
    """Padded VGG-style convs, a residual block, max pooling, a flatten and a classifier."""

    def __init__(self, width: int = 8, pool: str = "max") -> None:
        super().__init__()
        self.pool = pool
        self.c1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.b1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.b2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.c3 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(2 * width * 2 * 2, 5, bias=False)

    def _pool(self, x):
        if self.pool == "max":
            return F.max_pool2d(x, 2)
        return F.avg_pool2d(x, 2) * 4  # window sum: the oracle's path semantics

    def forward(self, x):
        x = self._pool(torch.relu(self.c2(torch.relu(self.c1(x)))))
        x = x + self.b2(torch.relu(self.b1(x)))
        x = torch.relu(self.c3(x))
        return self.fc(torch.flatten(x, 1))


def _pruned(density: float, seed: int) -> _Net:
    torch.manual_seed(seed)  # test-side seeding of torch's default init
    net = _Net().double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(torch.rand(m.weight.shape, generator=g) < density)
    return net


def _oracle(net: _Net, shape) -> dict[str, torch.Tensor]:
    lin = _Net(pool="sum").double()
    params = {}
    for (name, p), (_, q) in zip(net.named_parameters(), lin.named_parameters()):
        with torch.no_grad():
            q.copy_((p != 0).double())
        params[name.rsplit(".", 1)[0]] = q
    # ReLU of nonnegative values is the identity: the oracle is the linearised net
    lin(torch.ones(1, *shape, dtype=torch.float64)).sum().backward()
    return {n: (q.detach() != 0) & (q.grad > 0) for n, q in params.items()}


@pytest.mark.parametrize(("density", "seed"), [(0.02, 0), (0.05, 1), (0.1, 2), (0.3, 3)])
def test_exact_masks_equal_the_synflow_oracle(density, seed):
    net = _pruned(density, seed)
    shape = (3, 8, 8)
    masks, reason = effective_masks(capture(net, input_shape=shape))
    assert reason is None
    oracle = _oracle(net, shape)
    for name, mask in masks.items():
        assert torch.equal(mask, oracle[name]), name


@pytest.mark.parametrize(("density", "seed"), [(0.02, 0), (0.05, 1), (0.1, 4)])
def test_zeroing_ineffective_weights_leaves_the_output_bit_identical(density, seed):
    net = _pruned(density, seed).eval()
    shape = (3, 8, 8)
    masks, _ = effective_masks(capture(net, input_shape=shape))
    x = torch.randn(16, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    before = net(x)
    removed = 0
    with torch.no_grad():
        for name, mask in masks.items():
            w = net.get_submodule(name).weight
            removed += int(((w != 0) & ~mask).sum())
            w.mul_(mask)
    assert torch.equal(net(x), before)
    report = check_collapse(_pruned(density, seed), input_shape=shape)
    assert report.effective_exact
    assert report.kept - report.effective_kept == removed
    # channel level is an upper bound on the exact count, layer by layer, and here a loose
    # one: it keeps weights whose removal the bit-identical output above proves harmless
    for layer in report.layers:
        assert layer.effective_kept <= layer.channel_effective_kept
    assert report.channel_effective_kept > report.effective_kept


def test_small_feature_maps_and_padding_are_counted():
    # a 3x3 conv on a 1x1 map with padding 1: only the centre tap ever sees the input
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(2, 1))
    report = check_collapse(net, input_shape=(2, 1, 1))
    conv = report.layers[0]
    assert conv.channel_effective_kept == 36 and conv.effective_kept == 4  # 2x2 centre taps
    assert report.effective_exact and report.connected


def _random_pruned(spec: str, density: float, seed: int) -> nn.Module:
    """A torchvision model (weights=None, 10 classes) with its conv and linear weights zeroed
    at random, keeping each with probability ``density``."""
    from sigprop.nn.arch import build_model

    torch.manual_seed(0)
    model = build_model(spec, num_classes=10)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in _weight_layers(model):
            m.weight.mul_(torch.rand(m.weight.shape, generator=g) < density)
    return model


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_vgg16_at_density_001_exact_is_at_most_channel_level():
    model = _random_pruned("torchvision:vgg16", 0.01, seed=0)
    report = check_collapse(model, input_shape=(3, 32, 32))
    assert report.effective_exact, report.notes
    for layer in report.layers:
        assert layer.effective_kept <= layer.channel_effective_kept, layer.name
    assert report.effective_sparsity >= report.channel_effective_sparsity


def test_the_count_bound_chooses_float32_only_below_2_to_the_24():
    assert E.count_bound([10, 300, 7], 3) == 900
    assert E.counting_dtype(10**6, E.FLOAT32_COUNTS - 1) == torch.float32
    assert E.counting_dtype(10**6, E.FLOAT32_COUNTS) == torch.float64
    assert E.counting_dtype(10**6) == torch.float64  # no bound: float64 while it fits
    assert E.counting_dtype(E.FLOAT64_BYTES) == torch.float32


def test_float32_counts_equal_float64_counts_on_a_pruned_resnet(monkeypatch):
    # torchvision ResNet-18 at 32x32 (bound: 64 x 16 x 16 activations, 512x512x3x3 weights,
    # read by at most 2 operations: 4.7e6 < 2^24) against the same count forced to float64
    model = _random_pruned("torchvision:resnet18", 0.03, seed=1)
    captured = capture(model, input_shape=(3, 32, 32))
    weights = [m.weight.numel() for m in _weight_layers(model)]
    assert E._count_bound(captured, weights) < E.FLOAT32_COUNTS
    fast, reason = effective_masks(captured)
    assert reason is None
    monkeypatch.setattr(E, "counting_dtype", lambda numel, bound=None: torch.float64)
    slow, _ = effective_masks(captured)
    assert fast.keys() == slow.keys()
    for name in fast:
        assert torch.equal(fast[name], slow[name]), name
    assert 0 < sum(int(m.sum()) for m in fast.values()) < sum(int(m.numel()) for m in fast.values())
