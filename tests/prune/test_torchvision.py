"""Every method on torchvision ResNet-18 and VGG-16-BN (weights=None, 32x32, batch 2):
exact kept counts, layer collapse only where the method's theory predicts it and then
reported, masks applied in place and honoured by a training step; ``generator`` as an int
and as a ``torch.Generator``.

VGG-16-BN gets the CIFAR head of the Synaptic-Flow code (ganguli-lab/Synaptic-Flow
``Models/lottery_vgg.py``: global average pooling and one Linear(512, 10)) instead of
torchvision's ImageNet classifier of 119·10⁶ weights, which 32x32 inputs do not need.
"""

import copy

import pytest
import torch
from torch import nn

import sigprop.prune as sp
from sigprop.nn.arch import build_model

#: methods whose theory predicts layer collapse at extreme global sparsity (Hayou et al.,
#: arXiv 2002.08797, Sec. 3, for magnitude and gradient-times-weight scores; Tanaka et al.,
#: arXiv 2006.05467, Sec. 4, for SNIP and GraSP); SynFlow, random and layer-wise K-starts
#: must not empty a layer
MAY_COLLAPSE = {"magnitude", "snip", "grasp", "dissipating"}
OPTIONS = {
    "synflow": {"rounds": 10},
    "kstarts": {"k": 2, "epochs": 1},
    "dissipating": {"epochs": 1},
    "kstarts+dissipating": {"k": 2, "kstarts_epochs": 1, "epochs": 1},
}


def _build(name):
    try:
        model = build_model(f"torchvision:{name}", num_classes=10)
    except ValueError as exc:  # torchvision missing
        pytest.skip(str(exc))
    if name == "vgg16_bn":
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(512, 10)
    sp.attach_masks(model)
    return model


@pytest.fixture(scope="module")
def models():
    return {name: _build(name) for name in ("resnet18", "vgg16_bn")}


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 32, 32, generator=g), torch.tensor([3, 7])


def _check(model, res, density, method):
    layers = sp.prunable_layers(model)
    total = sum(m.weight.numel() for m in layers.values())
    scope = res.scope
    if scope == "global":
        assert res.report.kept == sp.kept_count(density, total)
    else:
        for layer in res.report.layers:
            assert layer.kept == sp.kept_count(density, layer.total)
    # the report is the model's masks (applied in place), and pruned weights are zero
    for layer in res.report.layers:
        m = layers[layer.name]
        assert int((m.weight_mask != 0).sum()) == layer.kept
        assert not bool((m.weight.detach()[m.weight_mask == 0] != 0).any())
    empty = {layer.name for layer in res.report.layers if layer.kept == 0}
    assert empty == set(res.report.empty_layers)
    if method == "synflow" and empty:
        # SynFlow's guarantee (Tanaka et al., arXiv 2006.05467, Sec. 5) is that no input-output
        # path is cut; a residual shortcut convolution in parallel with its block can empty
        # (its flow is a small share of R) while paths remain: R without biases stays > 0
        session = sp.scores.SynFlowSession(model, input_shape=(3, 32, 32), include_bias=False)
        assert float(session.objective().detach()) > 0
        assert all("downsample" in name for name in empty)
    elif method not in MAY_COLLAPSE:
        assert not empty, f"{method} emptied {sorted(empty)}"


def _train_step(model):
    model.train()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model(x)
    for m in sp.prunable_layers(model).values():
        assert not bool((m.weight.detach()[m.weight_mask == 0] != 0).any())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg16_bn"])
@pytest.mark.parametrize("density", [0.1, 0.01])
@pytest.mark.parametrize("method", sp.METHODS)
def test_every_method_on_torchvision(models, arch, density, method):
    model = copy.deepcopy(models[arch])
    res = sp.prune_at_init(
        model, method, density, _data(), generator=0, progress=False, **OPTIONS.get(method, {})
    )
    _check(model, res, density, method)
    if density == 0.1:
        _train_step(model)


@pytest.mark.parametrize("method", sp.METHODS)
def test_generator_int_and_torch_generator(models, method):
    base = models["resnet18"]
    got = []
    for gen in (7, torch.Generator().manual_seed(7)):
        model = copy.deepcopy(base)
        sp.prune_at_init(
            model, method, 0.1, _data(), generator=gen, progress=False, **OPTIONS.get(method, {})
        )
        got.append(sp.current_masks(model))
    # an int seed is torch.Generator().manual_seed(seed): the same masks
    for n in got[0]:
        assert torch.equal(got[0][n], got[1][n])
