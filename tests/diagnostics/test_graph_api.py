"""The graph path of describe/predict/measure/gradient_flow: chains unchanged, unmapped
nodes reported by name, attention's temperature not read as a residual scale."""

import numpy as np
import pytest
import torch
from torch import nn

from sigprop.diagnostics import describe, gradient_flow, measure, predict


def _chain():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 5)
    )


def test_chain_keeps_its_layer_predictions_and_gains_nodes():
    model, x = _chain(), torch.randn(16, 20, generator=torch.Generator().manual_seed(1))
    plain, graph = describe(model), describe(model, x)
    assert graph.structure == plain.structure == "sequential" and graph.layers == plain.layers
    a, b = predict(plain, q0=1.0, c0=0.3), predict(graph, q0=1.0, c0=0.3)
    for key in ("q", "c", "chi", "grad_ratio", "weight_grad_ratio"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not a.nodes and set(b.nodes) >= {"0", "1", "2", "3", "4", ""}
    # the annealed engine keeps per-unit moments and the signed biases (E[h_o] = b_o), the
    # chain one q per layer with sign-symmetric biases: the same recursion up to the spread
    # of the per-unit weight sums, O(1/√width) ≈ 1/8 of the per-unit variation, within 2%
    ann = predict(graph, q0=1.0, c0=0.3, means="annealed")
    np.testing.assert_allclose([ann.nodes[n]["q"] for n in ("0", "2", "4")], b.q, rtol=0.02)
    fwd = predict(describe(model.train(), x), q0=1.0, c0=0.3, backward=False)
    assert fwd.nodes["2"]["q"] == b.nodes["2"]["q"] and fwd.nodes["2"]["weight_grad"] is None


class _Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        h = torch.sort(self.conv(x), dim=1).values  # no rule
        return self.head(torch.flatten(h.relu(), 1))


def test_unmapped_nodes_are_named_and_nothing_downstream_is_guessed():
    torch.manual_seed(0)
    model, x = _Odd(), torch.randn(8, 3, 8, 8)
    spec = describe(model, x)
    assert spec.structure == "graph" and spec.unmapped
    assert spec.unmapped[0].startswith("sort: sort (operation 'sort' has no rule")
    pred = predict(spec, q0=1.0)
    assert "conv" in pred.nodes and "head" in pred.unreachable
    assert np.isnan(pred.q[1]) and np.isfinite(pred.q[0])
    flow = gradient_flow(model, x, dtype=torch.float32, progress=False)
    assert flow.theory_reason is not None and "sort" in flow.theory_reason


def test_gradient_flow_predicts_a_torchvision_resnet():
    from sigprop.nn.arch import build_model

    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=10)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    flow = gradient_flow(model, x, dtype=torch.float32, progress=False)
    assert flow.theory_reason is None and flow.theory_grad_ratio is not None
    assert np.all(np.isfinite(flow.theory_grad_ratio))
    # one batch of 8 and one readout: within a decade per layer in the median
    dec = np.abs(np.log10(flow.grad_ratio / flow.theory_grad_ratio))
    assert np.median(dec) < 0.5


def test_timm_attention_scale_is_not_a_residual_scale():
    from sigprop.nn.arch import build_model  # timm through the torchvision shim (nn.arch)

    model = build_model("timm:vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10)
    spec = describe(model)
    assert all(layer.residual_scale is None for layer in spec.layers)
    x = torch.randn(4, 3, 32, 32)
    spec = describe(model, x)
    pred = predict(spec, q0=1.0)
    # class token and position embedding are constants of the graph: everything is reached
    assert not spec.unmapped and not pred.unreachable
    meas = measure(model.eval(), x, spec=spec, dtype=torch.float32)
    assert {"patch_embed.proj", "blocks.11.attn", "head"} <= set(pred.nodes) & set(meas.nodes)


def test_timm_adaptive_pool_with_an_int_output_size_is_translated():
    # timm's SelectAdaptivePool2d holds nn.AdaptiveAvgPool2d(1): one int for both dims
    from sigprop.nn.arch import build_model

    model = build_model("timm:resnet18", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    spec = describe(model, x)
    assert not spec.unmapped
    pred = predict(spec, q0=1.0, backward=False)
    assert not pred.unreachable and "fc" in pred.nodes


@pytest.mark.parametrize(("shift", "tok"), [(0.0, False), (1.5, False), (20.0, True)])
def test_measured_channel_statistics_against_float64(shift, tok):
    # per-channel sums in float64 of a float32 activation: relative error ~1e-7 per element
    # square, ~1e-7·(mean²/var) for the variance by cancellation (400 at shift 20)
    from sigprop.diagnostics.graph.nodes import _stats

    y = torch.randn(16, 8, 5, 5, generator=torch.Generator().manual_seed(0)) * 1.0 + shift
    if tok:
        y = y.reshape(16, 8, 25).transpose(1, 2)  # (B, T, D): channels last
    got = _stats(y, tok)
    yd = y.double().movedim(-1, 1) if tok else y.double()
    per_ch = yd.transpose(0, 1).reshape(8, -1)
    assert got["q"] == pytest.approx(float(yd.pow(2).mean()), rel=1e-6)
    assert got["mean"] == pytest.approx(float(yd.mean()), rel=1e-6, abs=1e-9)
    assert got["avg_sq_ch_mean"] == pytest.approx(float(per_ch.mean(1).pow(2).mean()), rel=1e-6)
    assert got["avg_ch_var"] == pytest.approx(float(per_ch.var(1).mean()), rel=1e-4)
    # pairs (0, 1), (2, 3), ...: the polarisation identity's rounding is ~1e-7 of the
    # pair's squared norms, so ~1e-7 absolute on the correlation
    a, b = yd[0::2], yd[1::2]
    corr = float((a * b).sum()) / (0.5 * float((a * a + b * b).sum()))
    assert got["correlation"] == pytest.approx(corr, abs=1e-6)


def test_measure_nodes_only_skips_the_layer_pass():
    """``measure(layers=False)``: the same per-module records as the full measurement (one
    pass fewer), NaN per-layer arrays, and a refusal without a graph."""
    import math

    from sigprop.validate import InvalidInput

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 4),
    )
    x = torch.randn(8, 3, 8, 8)
    spec = describe(model, x)
    full = measure(model, x, spec=spec, n_probes=1)
    fast = measure(model, x, spec=spec, n_probes=1, layers=False)
    assert fast.nodes == full.nodes
    assert all(math.isnan(v) for v in fast.q) and fast.q0 == full.q0 and fast.c0 == full.c0
    with pytest.raises(InvalidInput, match="graph"):
        measure(model, x, spec=describe(model), layers=False)
