"""Acceptance (issue 10): describe/predict/measure/compare on real architectures.

torchvision resnet18, resnet50, vgg16, vgg16_bn, densenet121, mobilenet_v2 (weights=None,
32×32 inputs), an ``nn.TransformerEncoder`` (2 layers, d = 64, 4 heads, 32 tokens) and a
timm ViT-Tiny (4 blocks, 8×8 patches of 32×32 inputs: 16 tokens and the class token), in
train and eval mode, dense and random-pruned to density 0.1 with
``torch.nn.utils.prune.global_unstructured(..., RandomUnstructured)``, one batch of B = 32
iid N(0, 1) inputs, float32 on the torch side. Checked: the predicted ``q`` at every block
output within a median relative error of 10% and a maximum of 30% of the measured one,
and per weight layer |log10(measured / predicted)| of the weight-gradient ratio
‖∇W ⊙ M‖² / ‖∇W_last ⊙ M_last‖² (random readout, the engine's backward convention) at
most 0.3 decades in the median.

Finite-size noise (why these tolerances, and why some cases are expected to fail)
-------------------------------------------------------------------------------
The engine predicts expectations over the weights' signs with the measured squared weights
(and over the inputs). With train-mode BatchNorm every channel is re-centred and re-scaled
by its batch statistics, so one network's measured q at a block output is an average of
C·P·B squares of nearly independent, nearly Gaussian entries: relative standard error
≈ √(2/(C·P·B)) (≤ 1.3% here: C ≥ 64 with P·B ≥ 32·4, or C = 512-2048 at P = 1), plus the
O(1/fan-in) non-Gaussianity of finite-width pre-activations and the Gaussian-input
assumption of max-pooling and of BatchNorm's normalisation (the end-to-end Monte-Carlo
test of the engine bounds these by 3%): a median of 10% is far outside this noise, a
maximum of 30% leaves room for the few narrow nodes (the 64-channel stems). The weight
gradient of one readout is a sum over many kept weights of products δ·x that share δ and
x, with relative fluctuation √(2/(B·P)) at the smallest maps (≈ 25% at P = 1) besides the
gradient-independence approximation: 0.3 decades (a factor 2) in the median.

Without batch statistics (eval-mode BatchNorm at init is the identity; VGG-16 has no norm
at all) the channel means of every ReLU layer feed the next layer's per-channel offset
Σ_i w_oi μ_i, a number frozen by the weights' signs. The sign-averaged ("annealed") theory
replaces it by its mean square Σ_i w_oi² μ_i²; per layer the measured q then deviates by a
relative ≈ s·√(2/C) (s the offsets' share of q, → 1 deep in a ReLU network), compounding
over depth to 0.2–0.9 (resnet18 eval at density 0.1: median 0.56, max 0.89). The engine's
default maps the means through the signed weights exactly ("quenched", ``dense.py``), which
brings the eval-mode ResNets, DenseNet and MobileNet within the bars (resnet18 eval 0.1:
median 0.020, max 0.051). Max-pooling then sees windows whose entries differ in mean, which
its rule takes into account (``pool.py``), and the mean maps of small feature maps are
convolved exactly (a signed map's rank-1 factorisation is poor there): VGG-16 without batch
statistics goes from median 0.24 (annealed) to 0.004, max 0.021.
Cases outside the bars are marked ``xfail(strict=True)`` with the numbers measured (a
limit of the mean field, not a tolerance to widen).
"""

import functools
import gc

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from sigprop.diagnostics import compare, describe, measure, predict
from sigprop.diagnostics.predict import input_moments
from sigprop.nn.arch import build_model

B = 32
MODELS = [
    "resnet18",
    "resnet50",
    "vgg16",
    "vgg16_bn",
    "densenet121",
    "mobilenet_v2",
    "transformer",
    "vit",
]


def _build(name):
    torch.manual_seed(0)
    if name == "transformer":
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.1, batch_first=True)
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), (32, 64)
    if name == "vit":  # patch embedding, class token, position embedding, x[:, 0] readout
        spec = "timm:vit_tiny_patch16_224"
        return build_model(spec, img_size=32, patch_size=8, num_classes=10, depth=4), (3, 32, 32)
    return build_model(f"torchvision:{name}"), (3, 32, 32)


def _prune(model, density):
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    params += [
        (m, "in_proj_weight") for m in model.modules() if isinstance(m, nn.MultiheadAttention)
    ]
    torch.manual_seed(1)
    prune.global_unstructured(params, pruning_method=prune.RandomUnstructured, amount=1 - density)


def _full(name, train, density):
    model, shape = _build(name)
    if density < 1:
        _prune(model, density)
    model.train(train)
    x = torch.randn(B, *shape, generator=torch.Generator().manual_seed(2))
    spec = describe(model, x)
    q0, c0 = input_moments(x)
    pred = predict(spec, q0=q0, c0=c0)
    meas = measure(model, x, spec=spec, dtype=torch.float32)
    return model, spec, pred, meas, compare(pred, meas)


@functools.cache
def _run(name, train, density):
    """The numbers both tests read (the models and graphs are dropped: memory)."""
    model, spec, pred, meas, agree = _full(name, train, density)
    blocks = _blocks(name, model, spec)
    layers = [n for n in spec.graph.weights if n in agree.nodes]
    out = {
        "unmapped": spec.unmapped,
        "unreachable": pred.unreachable,
        "missing": [n for n in blocks if n not in pred.nodes or n not in meas.nodes],
        "q_err": {n: agree.nodes[n]["q_rel_err"] for n in blocks if n in agree.nodes},
        "decades": {n: agree.nodes[n].get("weight_grad_ratio_decades", np.nan) for n in layers},
    }
    del model, spec, pred, meas, agree
    gc.collect()
    return out


def _blocks(name, model, spec):
    if name.startswith("resnet"):
        return [*spec.blocks, "fc"]
    if name.startswith("vgg"):
        relus = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.ReLU)]
        return relus + ["classifier.1", "classifier.4", "classifier.6"]
    if name == "densenet121":
        parts = [f"features.denseblock{i}" for i in range(1, 5)]
        parts += [f"features.transition{i}" for i in range(1, 4)]
        return parts + ["features.norm5", "classifier"]
    if name == "mobilenet_v2":
        return [f"features.{i}" for i in range(len(model.features))] + ["classifier.1"]
    if name == "vit":
        parts = [f"blocks.{i}.{s}" for i in range(4) for s in ("attn", "mlp.fc2")]
        return [*spec.blocks, *parts, "head"]
    # post-norm layers: the block outputs are LayerNorms (q = 1 by construction), so the
    # residual branches' outputs are checked too
    parts = [f"layers.{i}.{s}" for i in range(2) for s in ("self_attn", "linear1", "linear2")]
    return [*spec.blocks, *parts]


# (model, train, density) -> measured numbers, for the genuine limit (module doc)
_Q_LIMIT = {
    # no batch statistics, and depthwise filters that keep ~1 of 9 weights at density 0.1
    ("mobilenet_v2", False, 0.1): "median 0.13, max 0.24",
    # the attention outputs (0.16-0.31): the attention rule's approximations (README) with
    # ~19 kept weights per projection output; block outputs are within 0.3%
    ("vit", True, 0.1): "median 0.02, max 0.31",
    ("vit", False, 0.1): "median 0.02, max 0.31",
}
# The default suite runs one case per kind of graph (residual sums, BatchNorm in train mode,
# concatenation, depthwise convolutions, attention, eval-mode BatchNorm's quenched means);
# the whole matrix of issue #10 (8 models × train/eval × dense/pruned, ~3 min on 2 cores) is
# `python -m pytest -m acceptance tests/diagnostics/test_graph_predict.py`.
_DEFAULT = {
    ("resnet18", True, 1.0),
    ("resnet18", True, 0.1),
    ("resnet18", False, 0.1),
    ("vgg16_bn", True, 1.0),
    ("densenet121", True, 0.1),
    ("mobilenet_v2", True, 0.1),
    ("transformer", True, 1.0),
    ("transformer", False, 0.1),
    ("vit", True, 1.0),
}

CASES = [(m, t, d) for m in MODELS for t in (True, False) for d in (1.0, 0.1)]


def _param(case):
    reason = _Q_LIMIT.get(case)
    marks = (
        [pytest.mark.xfail(strict=True, reason=f"limit of the mean field: {reason}")]
        if reason
        else []
    )
    if case not in _DEFAULT:
        marks.append(pytest.mark.acceptance)
    return pytest.param(
        *case, marks=marks, id=f"{case[0]}-{'train' if case[1] else 'eval'}-{case[2]}"
    )


@pytest.mark.parametrize("name,train,density", [_param(c) for c in CASES])
def test_block_outputs_and_gradient_ratios(name, train, density):
    # one computation per case for both bars (a case costs seconds): the gradient ratios
    # are checked first, so a case whose q is a known limit still has its gradients tested
    r = _run(name, train, density)
    assert not r["unmapped"] and not r["unreachable"] and not r["missing"]
    dec = np.array(list(r["decades"].values()), dtype=float)
    assert len(dec) >= 4
    assert np.all(np.isfinite(dec))
    assert np.median(dec) <= 0.3, {k: round(v, 3) for k, v in r["decades"].items()}
    err = np.array(list(r["q_err"].values()), dtype=float)
    assert len(err) >= 2
    assert np.median(err) <= 0.10, {k: round(v, 3) for k, v in r["q_err"].items()}
    assert err.max() <= 0.30, {k: round(v, 3) for k, v in r["q_err"].items()}


def test_block_names_and_records():
    model, spec, pred, meas, _ = _full("resnet18", True, 1.0)
    assert spec.blocks == tuple(f"layer{i}.{j}" for i in range(1, 5) for j in range(2))
    assert pred.blocks == meas.blocks == spec.blocks
    names = {n for n, _ in model.named_modules()}
    assert set(pred.nodes) <= names and {"conv1", "layer1.0.bn2", "fc", ""} <= set(pred.nodes)
    keys = {"q", "mean", "correlation", "avg_sq_ch_mean", "avg_ch_var", "weight_grad"}
    assert keys <= set(pred.nodes["conv1"]) and keys <= set(meas.nodes["conv1"])
    # train-mode BatchNorm: zero channel means, unit variance (γ = 1, β = 0)
    assert pred.nodes["bn1"]["avg_sq_ch_mean"] == pytest.approx(0.0, abs=1e-12)
    assert meas.nodes["bn1"]["avg_ch_var"] == pytest.approx(1.0, rel=1e-3)


def test_quenched_means_of_a_deep_plain_stack_on_a_small_map():
    # eight 512-channel 3x3 convs on a 4x4 map, ReLU, no norm, no skips: border profiles of
    # the channel means differ, so the mean maps are convolved exactly (dense.py's
    # MEAN_BUDGET_FACTOR; with the rank-1 path q was off by 104% at the last layer). Bars:
    # the module's 10% median / 30% max, met here at a few % (C·P·B = 512·16·16 squares)
    torch.manual_seed(0)
    layers, c = [], 3
    for _ in range(8):
        layers += [nn.Conv2d(c, 512, 3, padding=1, bias=False), nn.ReLU()]
        c = 512
    model = nn.Sequential(*layers).eval()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    x = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    spec = describe(model, x)
    q0, c0 = input_moments(x)
    meas = measure(model, x, spec=spec, layers=False)
    agree = compare(predict(spec, q0=q0, c0=c0, backward=False), meas)
    err = np.array([agree.nodes[str(i)]["q_rel_err"] for i in range(1, 16, 2)])
    assert np.median(err) <= 0.10 and err.max() <= 0.30, err.round(3)
    # the sign-averaged means drift (measured: 14% at the last layer, quenched 1.9%)
    annealed = compare(predict(spec, q0=q0, c0=c0, backward=False, means="annealed"), meas)
    assert annealed.nodes["15"]["q_rel_err"] > 0.1 > agree.nodes["15"]["q_rel_err"], (
        annealed.nodes["15"]["q_rel_err"],
        agree.nodes["15"]["q_rel_err"],
    )
