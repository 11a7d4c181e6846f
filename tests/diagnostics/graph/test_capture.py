"""The one tracer: node kinds, module outputs and shapes on sigprop, torchvision and timm
models, plus the torchvision import path where its C extension cannot load."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from sigprop.diagnostics.graph import KINDS, capture
from sigprop.nn import MaskedConv2d, MaskedLinear
from sigprop.nn.arch import build_model, import_torchvision, parse_arch_spec
from sigprop.validate import InvalidInput


def test_torchvision_imports_here():
    # CI installs torchvision; the real-architecture tests must never silently skip
    tv = import_torchvision()
    assert hasattr(tv.models, "resnet18")


@pytest.mark.parametrize(
    ("spec", "kwargs", "shape", "expected"),
    [
        ("torchvision:resnet18", {}, (3, 32, 32), {"conv": 20, "batchnorm": 20, "add": 8}),
        ("torchvision:vgg16_bn", {}, (3, 32, 32), {"conv": 13, "maxpool": 5, "linear": 3}),
        ("torchvision:densenet121", {}, (3, 32, 32), {"conv": 120, "cat": 62, "avgpool": 3}),
        ("torchvision:mobilenet_v2", {}, (3, 32, 32), {"conv": 52, "add": 10}),
        (
            "timm:vit_tiny_patch16_224",
            {"img_size": 32, "patch_size": 4},
            (3, 32, 32),
            {"attention": 12, "layernorm": 25},
        ),
    ],
)
def test_real_architectures_are_captured(spec, kwargs, shape, expected):
    model = build_model(spec, **kwargs)
    g = capture(model, input_shape=shape)
    kinds = Counter(n.kind for n in g.nodes.values())
    assert set(kinds) <= set(KINDS)
    for kind, count in expected.items():
        assert kinds[kind] == count, (kind, kinds)
    # every module whose forward ran outside a leaf has its output node
    names = {name for name, _ in model.named_modules()}
    leaf_children = {
        name
        for name in names
        for leaf in (n.module for n in g.nodes.values() if n.kind == "attention")
        if leaf and name.startswith(leaf + ".")
    }
    assert names - leaf_children <= set(g.module_outputs)
    out = g.nodes[g.outputs[0]]
    assert out.shape == (1000,) and out.batched


def test_shapes_match_a_real_forward():
    model = build_model("torchvision:resnet18", num_classes=10)
    g = capture(model, torch.zeros(4, 3, 32, 32))
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=name: seen.__setitem__(n, tuple(o.shape[1:])))
        for name, m in model.named_modules()
        if name
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(4, 3, 32, 32))
    for h in hooks:
        h.remove()
    for name, shape in seen.items():
        assert g.nodes[g.module_outputs[name]].shape == shape, name


def test_sigprop_layers_are_leaves_and_unknown_modules_are_named():
    class Odd(nn.Module):
        def forward(self, x):
            return x.clamp(min=0)

    model = nn.Sequential(MaskedLinear(8, 16), nn.Tanh(), Odd(), MaskedLinear(16, 4))
    g = capture(model, input_shape=(8,))
    kinds = [n.kind for n in g.nodes.values()]
    assert kinds == ["input", "linear", "act", "unmapped", "linear", "output"]
    (odd,) = g.unmapped
    assert "clamp" in odd.attrs["reason"]
    assert g.module_outputs["2"] == odd.name


def test_bare_leaf_models_and_default_arguments():
    enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2, enable_nested_tensor=False
    )
    g = capture(enc, input_shape=(7, 32))
    assert [n.kind for n in g.nodes.values()] == ["input", "transformer_encoder", "output"]
    assert g.module_outputs[""] == g.outputs[0]
    assert g.nodes[g.outputs[0]].shape == (7, 32)
    conv = MaskedConv2d(3, 5, 3, padding=1)
    g = capture(conv, input_shape=(3, 6, 6))
    assert [n.kind for n in g.nodes.values()] == ["input", "conv", "output"]
    assert g.nodes[g.outputs[0]].module == ""


def test_untraceable_models_and_bad_arguments_are_refused():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(InvalidInput, match="could not trace"):
        capture(Branchy(), input_shape=(3,))
    with pytest.raises(InvalidInput, match="does not run"):
        capture(nn.Linear(3, 4), input_shape=(5,))
    with pytest.raises(InvalidInput):
        capture("resnet", input_shape=(3,))


@pytest.mark.parametrize("bad", ["resnet18", "torchvision:", "os.path:join;rm", 7, "a b:c"])
def test_arch_specs_are_validated(bad):
    with pytest.raises(InvalidInput):
        parse_arch_spec(bad)


def test_unknown_architectures_are_refused():
    with pytest.raises(InvalidInput, match="no model"):
        build_model("torchvision:resnet1000")
    with pytest.raises(InvalidInput, match="cannot import"):
        build_model("no_such_module_here:factory")
