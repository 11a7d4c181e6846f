"""``sigprop.diagnostics.trainability``: its indicators against independent computations and
wide random networks, the rule's invariants, and the reasons it gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import polygamma

from sigprop.diagnostics import describe, predict, trainability
from sigprop.diagnostics.trainable import DEPTH_BUDGET, Indicators, judge
from sigprop.diagnostics.trainable.rule import effective_depth, score
from sigprop.nn.init import eoc_init_, gaussian_init_, rescale_
from sigprop.nn.models import mlp, resnet
from sigprop.prune import prune_at_init
from sigprop.theory import meanfield
from sigprop.validate import InvalidInput


def _exact_chain(act, depth, sigma_w, sigma_b, width=64, n_in=64, n_out=10, density=1.0):
    """A float64 MLP whose layers have exactly σ_w² = fan_in·mean(W²) and σ_b² = mean(b²), so
    ``describe`` hands the theory the intended σ's without sampling noise."""
    model = mlp(n_in, width, depth, n_out, act, layer="masked", density=density, generator=0)
    model = model.double()
    gaussian_init_(model, sigma_w, sigma_b, generator=1)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "weight_mask"):
                w = m.weight * m.weight_mask
                m.weight.mul_(sigma_w / math.sqrt(w.shape[1] * float((w**2).mean())))
                if sigma_b > 0:
                    m.bias.mul_(sigma_b / math.sqrt(float((m.bias**2).mean())))
                else:
                    m.bias.zero_()
    return model


def _wide_tanh_chain(n, depth, sigma_w, sigma_b, gen):
    """Plain float64 ``Linear``/``Tanh`` chain of width n with exact empirical σ's."""
    layers = []
    for i in range(depth):
        lin = torch.nn.Linear(n, n, dtype=torch.float64)
        with torch.no_grad():
            w = torch.randn(n, n, generator=gen, dtype=torch.float64)
            lin.weight.copy_(w * (sigma_w / math.sqrt(n * float((w**2).mean()))))
            b = torch.randn(n, generator=gen, dtype=torch.float64)
            lin.bias.copy_(b * (sigma_b / math.sqrt(float((b**2).mean()))))
        layers.append(lin)
        if i < depth - 1:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).eval()


# --------------------------------------------------------------------------- the c-map slope


@pytest.mark.parametrize(
    "act,sigma_w,sigma_b,density",
    [
        ("tanh", 1.3, 0.2, 1.0),
        ("relu", 1.4, 0.1, 0.3),
        ("gelu", 1.6, 0.5, 1.0),
        ("erf", 2.0, 0.05, 0.5),
    ],
)
def test_c_slope_product_is_the_derivative_of_the_output_correlation(
    act, sigma_w, sigma_b, density
):
    """Π_l c_slope (Price's theorem, layer by layer) against a central difference of the
    predicted c^L in c0: two independent computations of dc^L/dc^0."""
    spec = describe(_exact_chain(act, 6, sigma_w, sigma_b, density=density))
    c0, h = 0.4, 1e-5
    pred = predict(spec, q0=0.8, c0=c0)
    hi = predict(spec, q0=0.8, c0=c0 + h).c[-1]
    lo = predict(spec, q0=0.8, c0=c0 - h).c[-1]
    assert np.prod(pred.c_slope) == pytest.approx((hi - lo) / (2 * h), rel=1e-6)


def test_correlation_depth_at_the_fixed_point_is_depth_over_xi_c():
    """Started so that layer 1 lands on (q*, c*), every further layer's slope is χ_c
    (Schoenholz et al. eq. 9), so D = −ln(σ_w² q0/q*) − (L − 1) ln χ_c — with q*, c*, χ_c from
    meanfield's own fixed-point solvers."""
    sw, sb, depth = 1.8, 0.3, 12  # chaotic tanh: c* < 1
    q_star = float(meanfield.q_star("tanh", sw, sb))
    c_star = float(meanfield.c_star("tanh", sw, sb))
    chi_c = float(meanfield.chi_c("tanh", sw, sb))
    assert c_star < 0.99 and chi_c < 1
    q0 = (q_star - sb**2) / sw**2
    c0 = (c_star * q_star - sb**2) / (sw**2 * q0)
    model = _exact_chain("tanh", depth, sw, sb)
    spec = describe(model)
    pred = predict(spec, q0=q0, c0=c0)
    slopes = np.asarray(pred.c_slope)
    assert slopes[1:-1] == pytest.approx(chi_c, rel=1e-6)
    expected = -math.log(sw**2 * q0 / q_star) - (depth - 1) * math.log(chi_c)
    # the read-out layer (no activation after it) is still a tanh-fed layer at the fixed point
    assert -np.sum(np.log(slopes)) == pytest.approx(expected, rel=1e-6)
    # trainability's D is this sum (c0 given; q0 = 1 without data, so rescale the input)
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x * math.sqrt(q0 / float((x**2).mean()))
    d = trainability(model, x, c0=c0).indicators.correlation_depth
    assert d == pytest.approx(expected, rel=1e-6)


def test_correlation_depth_against_wide_random_networks():
    """dc^L/dc^0 measured on width-1000 tanh MLPs (pairs at c0 ± h from common random
    vectors, so most sampling noise cancels) against the prediction; the tolerance is four
    standard errors over the independent networks plus the O(1/N) finite-width bias."""
    n, depth, sw, sb, h = 1000, 5, 1.6, 0.2, 0.1
    gen = torch.Generator().manual_seed(5)
    slopes = []
    for _ in range(8):
        model = _wide_tanh_chain(n, depth, sw, sb, gen)
        with torch.no_grad():
            u = torch.randn(16, n, generator=gen, dtype=torch.float64)
            v = torch.randn(16, n, generator=gen, dtype=torch.float64)
            v = v - (v * u).sum(1, keepdim=True) / (u * u).sum(1, keepdim=True) * u
            v = v * (u.norm(dim=1, keepdim=True) / v.norm(dim=1, keepdim=True))

            def out_corr(c, u=u, v=v, model=model):
                xb = c * u + math.sqrt(1 - c * c) * v
                ya, yb = model(u), model(xb)
                return torch.nn.functional.cosine_similarity(ya, yb, dim=1).mean()

            slopes.append(float((out_corr(0.5 + h) - out_corr(0.5 - h)) / (2 * h)))
    spec = describe(model)
    q0 = float((u**2).mean())
    pred_hi = predict(spec, q0=q0, c0=0.5 + h).c[-1]
    pred_lo = predict(spec, q0=q0, c0=0.5 - h).c[-1]
    predicted = (pred_hi - pred_lo) / (2 * h)
    mean, se = float(np.mean(slopes)), float(np.std(slopes, ddof=1) / math.sqrt(len(slopes)))
    assert abs(mean - predicted) < 4 * se + 2.0 / n * depth


# --------------------------------------------------------------------------- finite fan-in


@pytest.mark.parametrize("k", [2, 5, 20, 100])
def test_log_chi_square_variance_is_trigamma(k):
    """The derivation of β: Var ln(χ²_k/k) = ψ′(k/2) ≈ 2/k (Monte Carlo, 4 standard errors)."""
    rng = np.random.default_rng(k)
    x = np.log(rng.chisquare(k, size=400_000) / k)
    var = x.var()
    # standard error of a sample variance: sqrt((m4 − var²)/n)
    se = math.sqrt((np.mean((x - x.mean()) ** 4) - var**2) / x.size)
    assert abs(var - float(polygamma(1, k / 2))) < 4 * se
    assert float(polygamma(1, k / 2)) == pytest.approx(2 / k, rel=2.5 / k)


def test_fan_in_depth_counts_effective_inputs_per_unit():
    """Masks with exactly k kept inputs per unit (all on paths): β = Σ_l 1/k_l."""
    model = mlp(32, 40, 4, 10, "tanh", layer="masked")
    eoc_init_(model, "tanh", sigma_b=0.05, generator=0)
    ks = [4, 8, 5, 40]
    layers = [m for m in model.modules() if hasattr(m, "weight_mask")]
    with torch.no_grad():
        for m, k in zip(layers, ks):
            # circulant: row r keeps columns r, r+1, …, r+k−1 (mod fan-in), so every unit has
            # k inputs and every column an output: every kept weight lies on a path
            rows, cols = m.weight_mask.shape
            mask = torch.zeros_like(m.weight_mask)
            for r in range(rows):
                mask[r, [(r + j) % cols for j in range(k)]] = 1
            m.weight_mask.copy_(mask)
            m.apply_mask_()
    ind = trainability(model).indicators
    per_layer = [float(m.weight_mask.sum()) / m.weight_mask.shape[0] for m in layers]
    assert ind.effective_density == pytest.approx(ind.density)
    assert per_layer == ks
    assert ind.fan_in_depth == pytest.approx(sum(1 / k for k in ks), rel=1e-12)
    assert ind.min_fan_in == pytest.approx(min(per_layer))


# --------------------------------------------------------------------------- the rule


def _ind(d=1.0, g=-1.0, beta=0.1, connected=True, collapsed=(), eff=0.5):
    return Indicators(
        structure="sequential",
        depth=10,
        names=tuple(f"l{i}" for i in range(10)),
        q0=1.0,
        c0=0.5,
        chi=(1.0,) * 10,
        q=(1.0,) * 10,
        log_grad_ratio=g,
        correlation_depth=d,
        signal_fraction=1.0,
        jacobian_spread=None,
        density=0.5,
        effective_density=eff,
        connected=connected,
        collapsed_layers=tuple(collapsed),
        bypassed_layers=(),
        min_fan_in=10.0,
        fan_in_depth=beta,
        sigma_w2_loss=None,
        data=False,
    )


finite = st.floats(min_value=0.0, max_value=200.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(d=finite, g=st.floats(-200, 200), beta=finite, extra=st.floats(0.0, 50.0))
def test_score_is_in_unit_interval_and_monotone(d, g, beta, extra):
    s = score(_ind(d, g, beta))
    assert 0.0 <= s <= 1.0
    for worse in (
        _ind(d + extra, g, beta),
        _ind(d, g + math.copysign(extra, g or 1), beta),
        _ind(d, g, beta + extra),
    ):
        assert score(worse) <= s
    t = judge(_ind(d, g, beta))
    assert t.trainable == (effective_depth(_ind(d, g, beta)) <= DEPTH_BUDGET)
    assert t.score == s
    assert t.reasons and all(isinstance(r, str) and r for r in t.reasons)


@settings(max_examples=50, deadline=None)
@given(d=finite, g=st.floats(-200, 200), beta=finite)
def test_a_cut_mask_scores_zero_whatever_the_mean_field_says(d, g, beta):
    for ind in (
        _ind(d, g, beta, connected=False),
        _ind(d, g, beta, collapsed=("l3",)),
        _ind(d, g, beta, eff=0.0),
    ):
        t = judge(ind)
        assert t.score == 0.0 and not t.trainable and math.isinf(t.effective_depth)
        assert len(t.reasons) == 1


def test_depth_budget_overrides_the_calibrated_constant():
    ind = _ind(d=8.0, g=-2.0, beta=0.0)
    assert not judge(ind).trainable
    t = judge(ind, depth_budget=10.0)
    assert t.trainable and t.score == pytest.approx(2 ** (-0.8))
    with pytest.raises(InvalidInput):
        judge(ind, depth_budget=-1.0)


# --------------------------------------------------------------------------- reasons, end to end


def _pruned(act="tanh", depth=20, density=0.1, rescale=False, sigma_b=0.05, method="random"):
    model = mlp(64, 100, depth, 10, act, layer="masked")
    eoc_init_(model, act, sigma_b=sigma_b, generator=0)
    if density < 1:
        prune_at_init(model, method, density, None, generator=0, progress=False)
    if rescale:
        rescale_(model)
    return model


def test_unrescaled_random_mask_is_ordered_and_rescaling_restores_it():
    bad = trainability(_pruned())
    assert not bad.trainable and bad.indicators.log_grad_ratio < -20
    assert "rescale_" in bad.reasons[0] and "ordered" in bad.reasons[0]
    good = trainability(_pruned(rescale=True))
    assert good.trainable and abs(good.indicators.log_grad_ratio) < 3


def test_chaotic_and_sparse_fan_in_reasons():
    model = mlp(64, 100, 30, 10, "tanh", layer="masked")
    gaussian_init_(model, 2.5, 0.05, generator=0)
    t = trainability(model)
    assert not t.trainable and "chaotic" in " ".join(t.reasons)
    sparse = trainability(_pruned(depth=5, density=0.01, rescale=True, method="synflow"))
    assert "effective inputs" in sparse.reasons[0]


def test_disconnected_mask_scores_zero():
    model = _pruned(depth=4, density=1.0)
    with torch.no_grad():
        layer = [m for m in model.modules() if hasattr(m, "weight_mask")][2]
        layer.weight_mask.zero_()
        layer.apply_mask_()
    t = trainability(model)
    assert t.score == 0.0 and not t.trainable and t.indicators.connected is False
    assert t.reasons[0].startswith("no input→output path")


def test_residual_graph_bypassed_branch():
    """A sigprop ResNet traced into the graph engine; a fully pruned branch is bypassed, not
    a collapse."""
    model = resnet(16, 32, 4, 10, "relu", layer="masked", stable=True, generator=0)
    eoc_init_(model, "relu", generator=0)
    branch = [m for m in model.modules() if hasattr(m, "weight_mask")][2]
    with torch.no_grad():
        branch.weight_mask.zero_()
        branch.apply_mask_()
    t = trainability(model, torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
    assert t.indicators.structure == "residual"
    assert t.indicators.bypassed_layers and t.score > 0
    assert t.trainable


def test_inputs_are_checked():
    model = _pruned(depth=3, density=1.0)
    with pytest.raises(InvalidInput, match="two samples"):
        trainability(model, torch.randn(1, 64))
    with pytest.raises(InvalidInput, match="tensor"):
        trainability(model, [[1.0, 2.0]])
    with pytest.raises(InvalidInput, match=r"\(-1, 1\)"):
        trainability(model, c0=1.0)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(36, 3),
    )
    with pytest.raises(InvalidInput, match="input_shape"):
        trainability(conv)
    t = trainability(conv, input_shape=(1, 8, 8))
    assert t.indicators.structure == "graph" and t.indicators.depth == 2
    pair = trainability(model, (torch.randn(8, 64), torch.zeros(8, dtype=torch.long)))
    assert pair.indicators.data and pair.to_dict()["indicators"]["depth"] == 3


def test_hidden_jacobian_spread_against_wide_networks():
    """m₂/m₁² − 1 of the square hidden block's Jacobian (free probability) against the
    singular values of that block's Jacobian in float64 networks of width 400 (three
    networks, two inputs each); tolerance four standard errors over the six plus the
    O(L/N) finite-width bias of the normalised second moment."""
    from sigprop.diagnostics.predict import hidden_jacobian_spread

    n, gen = 400, torch.Generator().manual_seed(1)
    values, predicted = [], []
    for seed in range(3):
        model = mlp(n, n, 5, 10, "tanh").double()
        gaussian_init_(model, 1.3, 0.1, generator=seed)
        x = torch.randn(2, n, generator=gen, dtype=torch.float64)
        spec = describe(model)
        predicted.append(hidden_jacobian_spread(spec, predict(spec, q0=float((x**2).mean()))))
        with torch.no_grad():
            h = model[1](model[0](x))
        for row in h:
            s2 = torch.linalg.svdvals(torch.autograd.functional.jacobian(model[2:8], row)) ** 2
            values.append(float((s2**2).mean() / s2.mean() ** 2 - 1))
    pred = float(np.mean(predicted))
    se = float(np.std(values, ddof=1) / math.sqrt(len(values)))
    assert abs(np.mean(values) - pred) < 4 * se + pred * 3 / n
    assert hidden_jacobian_spread(describe(mlp(8, 16, 2, 3)), None) is None


def test_torch_prune_masks_are_read():
    """``torch.nn.utils.prune`` hooks (weight_orig × weight_mask) are a mask like sigprop's:
    the same random mask, applied both ways, gives the same prediction."""
    import torch.nn.utils.prune as torch_prune

    ours = _pruned(depth=8, density=0.2)
    plain = mlp(64, 100, 8, 10, "tanh")
    eoc_init_(plain, "tanh", sigma_b=0.05, generator=0)
    masked = [m for m in ours.modules() if hasattr(m, "weight_mask")]
    for src, dst in zip(masked, [m for m in plain.modules() if isinstance(m, torch.nn.Linear)]):
        with torch.no_grad():
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        torch_prune.custom_from_mask(dst, "weight", src.weight_mask.bool())
    a, b = trainability(ours), trainability(plain)
    assert b.indicators.density == pytest.approx(a.indicators.density)
    assert b.effective_depth == pytest.approx(a.effective_depth, rel=1e-9)
