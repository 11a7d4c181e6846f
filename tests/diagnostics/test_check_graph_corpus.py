"""``sigprop check`` on real architectures' state dicts, with and without ``--arch``.

torchvision ResNet-18, VGG-16-BN, DenseNet-121, MobileNet-V2 (weights=None) and an
``nn.TransformerEncoder`` language-model stack, pruned with ``torch.nn.utils.prune`` (one conv
fully pruned inside a block, the stem fully pruned, global L1, ``ln_structured``), saved as
torch.nn.utils.prune state dicts, plain state dicts after ``prune.remove`` and safetensors.

The truth is measured on the live model, not inferred: the network is *connected* iff its
output depends on its input (the probe's spread over random inputs in eval mode is > 0;
batch norm in eval mode is affine, so a cut network's output is exactly constant).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

from sigprop.cli import main
from sigprop.diagnostics.collapse import check_collapse
from sigprop.io import load_checkpoint
from sigprop.nn.arch import build_model

from .helpers import AttentionHead

SHAPE = (3, 32, 32)


def _live_connected(model: nn.Module, shape=SHAPE) -> bool:
    return not check_collapse(model, probe=True, input_shape=shape).probe["input_independent"]


def _zero(model: nn.Module, name: str) -> None:
    prune.identity(model.get_submodule(name), "weight")
    with torch.no_grad():
        model.get_submodule(name).weight_mask.zero_()


def _save(model: nn.Module, path, fmt: str) -> None:
    if fmt == "prune":
        torch.save(model.state_dict(), path)
        return
    for module in model.modules():
        if hasattr(module, "weight_orig"):
            prune.remove(module, "weight")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "plain":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))


def _case(arch: str, prune_fn, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # test-side seeding of torch's default init
    model = build_model(arch, num_classes=10).eval()
    prune_fn(model)
    return model


CASES = {
    "resnet18 block conv": (
        "torchvision:resnet18",
        lambda m: _zero(m, "layer2.1.conv1"),
        "bypassed",
    ),
    "resnet18 stem": ("torchvision:resnet18", lambda m: _zero(m, "conv1"), "disconnected"),
    "densenet121 dense layer": (
        "torchvision:densenet121",
        lambda m: _zero(m, "features.denseblock2.denselayer3.conv2"),
        "bypassed",
    ),
    "mobilenet_v2 residual depthwise": (
        "torchvision:mobilenet_v2",
        lambda m: _zero(m, "features.3.conv.1.0"),
        "bypassed",
    ),
    "mobilenet_v2 strided block": (
        "torchvision:mobilenet_v2",
        lambda m: _zero(m, "features.2.conv.1.0"),
        "disconnected",
    ),
}


#: every format for one case, one format each for the others (keeps the corpus fast)
CASE_FORMATS = [
    ("resnet18 block conv", "prune"),
    ("resnet18 block conv", "plain"),
    ("resnet18 block conv", "safetensors"),
    ("resnet18 stem", "plain"),
    ("densenet121 dense layer", "prune"),
    ("mobilenet_v2 residual depthwise", "safetensors"),
    ("mobilenet_v2 strided block", "plain"),
]


@pytest.mark.parametrize(("case", "fmt"), CASE_FORMATS)
def test_verdicts_with_arch_match_the_live_model(tmp_path, case, fmt):
    arch, prune_fn, expected = CASES[case]
    model = _case(arch, prune_fn)
    truth = _live_connected(model)
    assert truth == (expected == "bypassed")
    path = tmp_path / ("m.safetensors" if fmt == "safetensors" else "m.pt")
    _save(model, path, fmt)
    report = check_collapse(load_checkpoint(path), arch=arch, input_shape=SHAPE)
    assert report.graph == f"arch:{arch}"
    assert report.connected is truth
    assert report.effective_exact
    if expected == "bypassed":
        assert report.verdict == "collapsed but bypassed"
        assert report.bypassed_layers and report.skips
        assert all(layer.block for layer in report.layers if layer.bypassed)
    else:
        assert report.verdict == "disconnected" and not report.bypassed_layers
    # without --arch: no graph for these key layouts, never "healthy", and the hint names it
    plain = check_collapse(load_checkpoint(path))
    assert plain.connected is None and not plain.healthy
    assert any(f"--arch {arch}" in n for n in plain.notes)


def test_global_l1_pruning_resnet18(tmp_path):
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=10).eval()
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for sparsity in (0.9, 0.99, 0.999):
        # 90% of what is left each time: global L1 at 90, 99 and 99.9% (|w| never changes, so
        # the survivors are the same as one-shot pruning, up to the rounding of the counts),
        # with torch's ranking over the remaining weights only
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.9)
        kept = sum(int(m.weight_mask.sum()) for m, _ in params)
        total = sum(m.weight.numel() for m, _ in params)
        assert kept == pytest.approx((1 - sparsity) * total, abs=3)  # one per rounding
        truth = _live_connected(model)
        torch.save(model.state_dict(), tmp_path / "g.pt")
        report = check_collapse(
            load_checkpoint(tmp_path / "g.pt"), arch="torchvision:resnet18", input_shape=SHAPE
        )
        assert report.kept == kept
        assert report.connected is truth
        assert report.effective_kept <= report.channel_effective_kept <= report.kept


def test_vgg16_bn_stem_pruned_without_and_with_arch(tmp_path):
    # VGG has no skips: the chain read from the key order is its real graph
    model = _case("torchvision:vgg16_bn", lambda m: _zero(m, "features.0"))
    assert not _live_connected(model)
    _save(model, tmp_path / "v.pt", "plain")
    del model
    ckpt = load_checkpoint(tmp_path / "v.pt")
    chained = check_collapse(ckpt)
    assert chained.graph == "chain" and chained.verdict == "disconnected"
    report = check_collapse(ckpt, arch="torchvision:vgg16_bn", input_shape=SHAPE)
    assert report.verdict == "disconnected" and report.collapsed_layers == ("features.0",)


def test_ln_structured_channels_resnet18(tmp_path):
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=10).eval()
    prune.ln_structured(model.layer3[0].conv1, "weight", amount=0.5, n=2, dim=0)
    torch.save(model.state_dict(), tmp_path / "s.pt")
    report = check_collapse(
        load_checkpoint(tmp_path / "s.pt"), arch="torchvision:resnet18", input_shape=SHAPE
    )
    layer = next(layer for layer in report.layers if layer.name == "layer3.0.conv1")
    removed = int((model.layer3[0].conv1.weight_mask.flatten(1).sum(1) == 0).sum())
    assert len(layer.dead_in) == removed == 128
    assert report.verdict == "healthy" and report.connected is _live_connected(model)


def test_batchnorm_beta_makes_a_dead_channel_constant(tmp_path):
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=10).eval()
    conv, bn = model.layer1[0].conv1, model.layer1[0].bn1
    prune.identity(conv, "weight")
    with torch.no_grad():
        conv.weight_mask[:3] = 0  # channels 0-2 get no input
        bn.bias[1] = 0.5  # channel 1 then emits beta = 0.5: constant, not zero
        model.layer1[0].bn2.weight[5] = 0.0  # gamma = 0: channel 5 of conv2 is cut
    torch.save(model.state_dict(), tmp_path / "b.pt")
    report = check_collapse(
        load_checkpoint(tmp_path / "b.pt"), arch="torchvision:resnet18", input_shape=SHAPE
    )
    layers = {layer.name: layer for layer in report.layers}
    assert layers["layer1.0.conv1"].dead_in == (0, 1, 2)
    assert layers["layer1.0.conv1"].constant_channels == (1,)
    assert 5 in layers["layer1.0.conv2"].dead_out  # gamma = 0: no way out
    probe = check_collapse(model, input_shape=SHAPE, probe=True).probe["channels"]
    assert probe["layer1.0.conv1"]["zero"] == [0, 1, 2]  # before BN: zero; BN adds beta


_LM = """
import torch
from torch import nn


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 8)
        self.register_buffer("causal_mask", torch.triu(torch.full((6, 6), float("-inf")), 1))

    def forward(self, x):
        return self.head(self.enc(self.emb(x)))


def make():
    return LM()
"""


@pytest.mark.parametrize("fmt", ["prune", "plain", "safetensors"])
def test_transformer_encoder_stack(tmp_path, monkeypatch, fmt):
    (tmp_path / "lmfactory.py").write_text(_LM)
    monkeypatch.syspath_prepend(str(tmp_path))
    import lmfactory

    torch.manual_seed(0)
    model = lmfactory.make().eval()
    params = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    params += [(layer.self_attn, "in_proj_weight") for layer in model.enc.layers]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.6)
    total = sum(getattr(m, p).numel() for m, p in params)
    zeros = sum(int((getattr(m, p) == 0).sum()) for m, p in params)
    live = check_collapse(model, input_shape=(6, 8), probe=True)
    assert live.graph == "fx" and live.total == total  # in_proj_weight counted, once
    assert live.sparsity == pytest.approx(zeros / total, abs=1e-12)
    assert live.connected is (not live.probe["input_independent"])
    path = tmp_path / ("lm.safetensors" if fmt == "safetensors" else "lm.pt")
    _save(model, path, fmt)
    ckpt = load_checkpoint(path)  # the causal_mask buffer is no pruning mask
    assert "causal_mask" not in ckpt.masks
    report = check_collapse(ckpt, arch="lmfactory:make", input_shape=(6, 8))
    assert report.total == total and report.sparsity == live.sparsity
    assert report.connected is live.connected
    assert report.verdict == live.verdict
    # the last layer's feed-forward fully pruned: its residual carries the signal
    fresh = lmfactory.make().eval()
    with torch.no_grad():
        fresh.enc.layers[1].linear1.weight.zero_()
    cut = check_collapse(fresh, input_shape=(6, 8), probe=True)
    assert not cut.probe["input_independent"]
    assert cut.verdict == "collapsed but bypassed" and cut.connected
    assert "enc.layers.1.linear1" in cut.bypassed_layers


def test_cli_exit_codes_and_text_for_bypass_and_unknown(tmp_path, capsys):
    model = _case("torchvision:resnet18", lambda m: _zero(m, "layer1.0.conv1"))
    torch.save(model.state_dict(), tmp_path / "r.pt")
    args = ["check", str(tmp_path / "r.pt"), "--arch", "torchvision:resnet18"]
    assert main([*args, "--input-shape", "3,32,32"]) == 1
    out = capsys.readouterr().out
    assert "input->output path  yes" in out
    status = [ln for ln in out.splitlines() if ln.startswith("status:")]
    assert status == ["status: COLLAPSED BUT BYPASSED (layer1.0: identity skip)"]
    assert main([*args, "--input-shape", "3,32,32", "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["status"] == "collapsed but bypassed" and d["graph"] == "arch:torchvision:resnet18"
    assert d["connected"] is True and d["effective_exact"] is True
    # no graph: exit 4, never healthy
    assert main(["check", str(tmp_path / "r.pt"), "--json"]) == 1  # a layer is empty
    capsys.readouterr()
    with torch.no_grad():
        model.layer1[0].conv1.weight_mask.fill_(1)
    torch.save(model.state_dict(), tmp_path / "ok.pt")
    assert main(["check", str(tmp_path / "ok.pt"), "--json"]) == 4
    d = json.loads(capsys.readouterr().out)
    assert d["status"] == "connectivity unknown" and d["connectivity_checked"] is False
    assert main(["check", str(tmp_path / "ok.pt")]) == 4
    out = capsys.readouterr().out
    assert "status: CONNECTIVITY UNKNOWN" in out and "status: healthy" not in out
    assert "--arch torchvision:resnet18" in out


def test_arch_mismatch_is_refused_with_names(tmp_path, capsys):
    torch.save({"fc.weight": torch.ones(3, 4)}, tmp_path / "x.pt")
    assert main(["check", str(tmp_path / "x.pt"), "--arch", "torchvision:resnet18"]) == 2
    err = capsys.readouterr().err
    assert "does not fit torchvision:resnet18" in err and "missing keys" in err


def test_mobilenet_v2_layerwise_95_is_connected_but_input_independent(tmp_path):
    # structure is not function: ReLU6 clamps the one surviving sign at init
    torch.manual_seed(0)
    model = build_model("torchvision:mobilenet_v2", num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            prune.l1_unstructured(m, "weight", amount=0.95)
    torch.save(model.state_dict(), tmp_path / "mb.pt")
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    assert torch.equal(y, y[:1].expand_as(y))  # the truth, measured on the live model
    args = ["check", str(tmp_path / "mb.pt"), "--arch", "torchvision:mobilenet_v2"]
    assert main([*args, "--input-shape", "3,32,32"]) == 0  # structurally connected
    assert main([*args, "--input-shape", "3,32,32", "--probe"]) == 1


def test_pt2_of_a_pruned_multihead_attention_counts_each_weight_once(tmp_path):
    torch.manual_seed(0)
    model = AttentionHead().eval()
    prune.l1_unstructured(model.a, "in_proj_weight", amount=0.5)
    prune.l1_unstructured(model.a.out_proj, "weight", amount=0.5)
    with pytest.warns(UserWarning):
        program = torch.export.export(model, (torch.randn(2, 5, 16),))
    torch.export.save(program, tmp_path / "a.pt2")
    report = check_collapse(load_checkpoint(tmp_path / "a.pt2"))
    assert [layer.name for layer in report.layers] == ["a.in_proj", "a.out_proj", "o"]
    assert report.total == 48 * 16 + 16 * 16 + 3 * 16
    assert report.kept == 384 + 128 + 48
    live = check_collapse(model)
    assert live.total == report.total and live.kept == report.kept
