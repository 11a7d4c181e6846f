"""Linear and conv rules: exact against brute force, and against Monte Carlo.

The forward q-map of a layer with independent weights of variance w2 is exact in
expectation (no Gaussian assumption), so Monte Carlo over weight and input draws must
agree within its standard error: 5 SE per element (a few thousand comparisons), 4 SE
for channel means.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigprop.theory.propagation import (
    Grad,
    Moments,
    conv,
    conv_backward,
    conv_weight_grad,
    elementwise,
    linear,
    linear_backward,
    linear_weight_grad,
)
from sigprop.theory.propagation.weights import Holes, kept_mask
from sigprop.validate import InvalidInput

from . import mc


def _brute_conv(qfull, w2, s, p, d, groups):
    cin, h, w = qfull.shape
    cout, cig, kh, kw = w2.shape
    ho, wo = (h + 2 * p - d * (kh - 1) - 1) // s + 1, (w + 2 * p - d * (kw - 1) - 1) // s + 1
    out = np.zeros((cout, ho, wo))
    cog = cout // groups
    for o, y, x, ty, tx in itertools.product(
        range(cout), range(ho), range(wo), range(kh), range(kw)
    ):
        iy, ix = y * s - p + ty * d, x * s - p + tx * d
        if 0 <= iy < h and 0 <= ix < w:
            gi = o // cog
            out[o, y, x] += w2[o, :, ty, tx] @ qfull[gi * cig : (gi + 1) * cig, iy, ix]
    return out


def _brute_adjoint(gfull, qfull, w2, s, p, d, groups, hw):
    cout, ho, wo = gfull.shape
    _, cig, kh, kw = w2.shape
    h, w = hw
    gin = np.zeros((cig * groups, h, w))
    wg = np.zeros(w2.shape)
    cog = cout // groups
    for o, y, x, ty, tx in itertools.product(
        range(cout), range(ho), range(wo), range(kh), range(kw)
    ):
        iy, ix = y * s - p + ty * d, x * s - p + tx * d
        if 0 <= iy < h and 0 <= ix < w:
            gi = o // cog
            gin[gi * cig : (gi + 1) * cig, iy, ix] += w2[o, :, ty, tx] * gfull[o, y, x]
            wg[o, :, ty, tx] += gfull[o, y, x] * qfull[gi * cig : (gi + 1) * cig, iy, ix]
    return gin, wg


GEOMETRIES = [
    # (C_in, H, W, C_out, k, stride, padding, dilation, groups)
    (4, 7, 6, 6, 3, 1, 1, 1, 1),
    (4, 7, 6, 4, 3, 2, 1, 1, 2),
    (6, 5, 5, 6, 3, 1, 1, 1, 6),  # depthwise
    (3, 9, 8, 5, 3, 1, 2, 2, 1),  # dilated
    (3, 2, 2, 4, 3, 2, 1, 1, 1),  # 3x3 on 2x2: 4 of 9 taps
    (2, 8, 8, 3, 7, 2, 3, 1, 1),  # ResNet stem geometry
]


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_conv_matches_brute_force(geo):
    cin, h, w, cout, k, s, p, d, groups = geo
    rng = np.random.default_rng(sum(geo))
    m0 = Moments.gaussian_input((cin, h, w))
    # a non-uniform input map: the output of a first padded conv
    m = conv(m0, rng.random((cin, cin, 3, 3)), padding=1)
    w2 = rng.random((cout, cin // groups, k, k))
    b2 = rng.random(cout)
    out = conv(m, w2, b2, stride=s, padding=p, dilation=d, groups=groups)
    ref = _brute_conv(m.q, w2, s, p, d, groups) + b2[:, None, None]
    np.testing.assert_allclose(out.q, ref, rtol=1e-12, atol=1e-12)
    g = Grad(out.grid, rng.random(out.q_cls.shape))
    gin_ref, wg_ref = _brute_adjoint(g.g, m.q, w2, s, p, d, groups, (h, w))
    gin = conv_backward(m, g, w2, stride=s, padding=p, dilation=d, groups=groups)
    np.testing.assert_allclose(gin.g, gin_ref, rtol=1e-12, atol=1e-12)
    per = conv_weight_grad(m, g, w2, s, p, d, groups, per_weight=True)
    np.testing.assert_allclose(per, wg_ref * (w2 > 0), rtol=1e-12, atol=1e-12)
    mask = (rng.random(w2.shape) < 0.5).astype(float)
    tot = conv_weight_grad(m, g, w2, s, p, d, groups, mask=mask)
    np.testing.assert_allclose(tot, np.sum(wg_ref * mask), rtol=1e-12)


def test_rank1_path_is_exact_for_product_maps():
    rng = np.random.default_rng(3)
    m0 = Moments.gaussian_input((5, 6, 6))
    m = conv(m0, np.ones((5, 5, 3, 3)), padding=1)  # every channel the same profile
    m = m.replace(q_cls=m.q_cls * rng.random(5)[:, None, None])  # q(i, p) = a(i) f(p)
    w2 = rng.random((4, 5, 3, 3))
    exact = conv(m, w2, stride=2, padding=1)
    fast = conv(m, w2, stride=2, padding=1, budget=0)
    np.testing.assert_allclose(fast.q, exact.q, rtol=1e-12)
    g = Grad(
        exact.grid, np.outer(rng.random(4), np.ones(exact.q_cls[0].size)).reshape(exact.q_cls.shape)
    )
    np.testing.assert_allclose(
        conv_backward(m, g, w2, 2, 1, budget=0).g, conv_backward(m, g, w2, 2, 1).g, rtol=1e-12
    )
    np.testing.assert_allclose(
        conv_weight_grad(m, g, w2, 2, 1, budget=0), conv_weight_grad(m, g, w2, 2, 1), rtol=1e-12
    )


@pytest.mark.parametrize("hw", [2, 4, 8])
def test_conv_against_monte_carlo(hw):
    """256 input channels, 3x3, padding 1, stride 2, structured input (shared channel
    means, per-sample offsets): q per output channel and position, cov_pos, cov_indep."""
    rng = np.random.default_rng(hw)
    cin, cout, b, reps = 256, 16, 8, 30
    shape = (cin, hw, hw)
    kw = dict(mu=0.3, su=0.5, sv=0.6, sw=1.0)
    w2 = (rng.random((cout, cin, 3, 3)) + 0.5) * (2.0 / (cin * 9))
    b2 = np.full(cout, 0.1)
    _, mom = mc.structured(rng, 2, shape, **kw)
    pred = conv(mc.moments_of(shape, mom), w2, b2, stride=2, padding=1)
    qs, pos, ind = [], [], []
    for _ in range(reps):
        x, _ = mc.structured(rng, b, shape, **kw)
        w = rng.standard_normal(w2.shape) * np.sqrt(w2)
        bias = rng.standard_normal(cout) * np.sqrt(b2)
        y = mc.conv(x, w, stride=2, padding=1) + bias[None, :, None, None]
        s = mc.stats(y)
        qs.append(s["q"])
        ind.append(s["cov_indep"])
        if "cov_pos" in s:
            pos.append(s["cov_pos"])
    mc.se_check(pred.q, qs, 5.0, what="q map")
    mc.se_check(pred.q_channel(), np.mean(qs, axis=(2, 3)), 4.0, what="q per channel")
    mc.se_check(pred.cov_indep, ind, 5.0, what="cov_indep")
    if pos:
        mc.se_check(pred.cov_pos, pos, 5.0, what="cov_pos")


def test_linear_against_monte_carlo_with_signed_bias():
    rng = np.random.default_rng(7)
    cin, cout, t, b, reps = 128, 8, 5, 16, 40
    w2 = rng.random((cout, cin)) * (2.0 / cin)
    bias = rng.standard_normal(cout)
    kw = dict(mu=-0.2, su=0.4, sv=0.3, sw=0.8)
    _, mom = mc.structured(rng, 2, (cin, t), **kw, pair=(0.5, 0.2))
    pred = linear(mc.moments_of((cin, t), mom), w2, b=bias)
    np.testing.assert_allclose(pred.mean_channel(), bias)
    acc = {k: [] for k in ("q", "mean", "cov_pos", "cov_indep", "cov_pair", "cov_pair_pos")}
    for _ in range(reps):
        x, _ = mc.structured(rng, b, (cin, t), **kw, pair=(0.5, 0.2))
        w = rng.standard_normal(w2.shape) * np.sqrt(w2)
        y = np.einsum("oc,bct->bot", w, x) + bias[None, :, None]
        s = mc.stats(y, pair=True)
        for k in acc:
            acc[k].append(s[k])
    mc.se_check(pred.q, acc["q"], 5.0, what="q")
    for k in ("cov_pos", "cov_indep"):
        mc.se_check(getattr(pred, k), acc[k], 5.0, what=k)
    for k in ("cov_pair", "cov_pair_pos"):  # one pair per batch: noisier, same rule
        mc.se_check(getattr(pred, k), acc[k], 5.0, what=k)


def test_linear_backward_and_weight_grad_are_exact_sums():
    rng = np.random.default_rng(1)
    m = Moments.gaussian_input((6, 4), 2.0)
    w2 = rng.random((3, 6))
    g = Grad(m.grid, np.full((3, 1), 0.5))
    np.testing.assert_allclose(linear_backward(m, g, w2).g_channel(), 0.5 * w2.sum(axis=0))
    # Σ_kept Σ_p g q = 0.5 · 2 · 4 positions per kept weight
    assert linear_weight_grad(m, g, w2) == pytest.approx(4.0 * w2.size)


@given(
    lam=st.floats(0.01, 100.0),
    hw=st.integers(1, 6),
    k=st.sampled_from([1, 3]),
    s=st.integers(1, 2),
)
def test_linear_rules_are_homogeneous(lam, hw, k, s):
    rng = np.random.default_rng(hw * 10 + k)
    m = conv(Moments.gaussian_input((3, hw, hw), 1.3, c0=0.4), rng.random((3, 3, 3, 3)), padding=1)
    w2 = rng.random((2, 3, k, k))
    a = conv(m, w2, stride=s, padding=k // 2)
    scaled = m.replace(
        **{
            f: getattr(m, f) * lam
            for f in ("q_cls", "cov_pos", "cov_indep", "cov_pair", "cov_pair_pos")
        }
    )
    b = conv(scaled, w2, stride=s, padding=k // 2)
    np.testing.assert_allclose(b.q_cls, lam * a.q_cls, rtol=1e-12)
    for f in ("cov_pos", "cov_indep", "cov_pair"):
        np.testing.assert_allclose(getattr(b, f), lam * getattr(a, f), rtol=1e-12)


@given(h=st.integers(7, 40), w=st.integers(7, 40), q0=st.floats(0.1, 10.0))
def test_dense_conv_away_from_borders_is_the_dense_q_map(h, w, q0):
    """Xiao et al. 2018: a position all of whose taps see data follows Σ w2 q + b2."""
    rng = np.random.default_rng(h * w)
    w2 = rng.random((4, 3, 3, 3))
    b2 = rng.random(4)
    out = conv(Moments.gaussian_input((3, h, w), q0), w2, b2, padding=1)
    dense = w2.sum(axis=(1, 2, 3)) * q0 + b2
    np.testing.assert_allclose(
        out.q[:, 1:-1, 1:-1], np.broadcast_to(dense[:, None, None], (4, h - 2, w - 2)), rtol=1e-12
    )
    # the interior collapses to one class; borders keep theirs (3 per dim)
    assert [ax.n for ax in out.grid] == [3, 3]


def test_conv_refuses_bad_weights():
    m = Moments.gaussian_input((4, 5, 5))
    with pytest.raises(InvalidInput):
        conv(m, -np.ones((2, 4, 3, 3)))
    with pytest.raises(InvalidInput):
        conv(m, np.ones((2, 3, 3, 3)))  # wrong fan-in
    with pytest.raises(InvalidInput):
        conv(m, np.ones((3, 2, 3, 3)), groups=2)  # 3 outputs do not split into 2 groups
    with pytest.raises(InvalidInput):
        conv(m, np.ones((2, 4, 7, 7)))  # kernel larger than the unpadded map


@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    seed=st.integers(0, 99),
)
def test_class_grids_are_exact_on_random_geometries(h, w, k, s, d, seed):
    """Two stacked convs on compressed grids equal the brute-force full maps, forward and
    backward, for any kernel, stride, dilation and padding that fits."""
    p = min(k // 2 + d - 1, (d * (k - 1)) // 2)
    if h + 2 * p < d * (k - 1) + 1 or w + 2 * p < d * (k - 1) + 1:
        return
    rng = np.random.default_rng(seed)
    m = conv(Moments.gaussian_input((2, h, w)), rng.random((3, 2, 3, 3)), padding=1)
    w2 = rng.random((2, 3, k, k))
    out = conv(m, w2, stride=s, padding=p, dilation=d)
    np.testing.assert_allclose(out.q, _brute_conv(m.q, w2, s, p, d, 1), rtol=1e-12, atol=1e-14)
    g = Grad(out.grid, rng.random(out.q_cls.shape))
    gin, wg = _brute_adjoint(g.g, m.q, w2, s, p, d, 1, (h, w))
    np.testing.assert_allclose(conv_backward(m, g, w2, s, p, d).g, gin, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        conv_weight_grad(m, g, w2, s, p, d, per_weight=True), wg, rtol=1e-12, atol=1e-14
    )


def test_linear_weight_grad_total_is_the_sum_of_the_per_weight_terms():
    # the total is computed as Σ A ⊙ (M Q) + uᵀMv (no C_out × C_in temporaries); it must
    # equal the masked sum of the per-weight map, cross terms and batch size included
    rng = np.random.default_rng(2)
    m = Moments.gaussian_input((5, 3, 4), 1.3)
    m = elementwise(conv(m, rng.random((6, 5, 3, 3)), padding=1), "relu")  # cov_pos > 0
    w2 = rng.random((7, 6))
    mask = (rng.random((7, 6)) < 0.5).astype(float)
    x = linear(m, w2 * mask)
    gx = Grad(x.grid, rng.random((7, *x.q_cls.shape[1:])), rng.random(7), rng.random(7))
    assert np.any(m.cov_pos != 0)  # the cross terms are exercised
    for b in (1, 8):
        per = linear_weight_grad(m, gx, w2, mask=mask, per_weight=True, batch_size=b)
        total = linear_weight_grad(m, gx, w2, mask=mask, batch_size=b)
        assert total == pytest.approx(float(per.sum()), rel=1e-12)


def test_no_mask_is_the_kept_pattern_and_all_kept_needs_no_mask():
    # mask=None reads w2 > 0 as the mask; with every weight kept the rules sum without one
    # (no float64 mask is built), with a few exact zeros they subtract those terms: all
    # must equal the explicit 0/1 mask to rounding
    rng = np.random.default_rng(5)
    m = elementwise(conv(Moments.gaussian_input((4, 5, 5), 0.9), rng.random((6, 4, 3, 3))), "relu")
    holes = rng.random((50, 6)) + 0.1
    holes[[3, 17], [5, 0]] = 0.0  # two exact zeros in 300: held as their indices (Holes)
    assert isinstance(kept_mask(None, holes), Holes)
    for w2 in (rng.random((7, 6)) + 0.1, rng.random((7, 6)) * (rng.random((7, 6)) < 0.5), holes):
        x = linear(m, w2)
        c = w2.shape[0]
        gx = Grad(x.grid, rng.random((c, *x.q_cls.shape[1:])), rng.random(c), rng.random(c))
        ones = (w2 > 0).astype(float)
        for b in (1, 8):
            for per_weight in (False, True):
                np.testing.assert_allclose(
                    linear_weight_grad(m, gx, w2, per_weight=per_weight, batch_size=b),
                    linear_weight_grad(m, gx, w2, mask=ones, per_weight=per_weight, batch_size=b),
                    rtol=1e-12,
                )
    for w2 in (
        rng.random((3, 6, 3, 3)) + 0.1,
        rng.random((3, 6, 3, 3)) * (rng.random((3, 6, 3, 3)) < 0.5),
    ):
        y = conv(m, w2, stride=2, padding=1)
        g = Grad(y.grid, rng.random(y.q_cls.shape), rng.random(3), rng.random(3))
        ones = (w2 > 0).astype(float)
        # per weight, and totals on the exact and the rank-1 path (budget 1), batch 1 and 8
        for per_weight, budget, b in [
            (False, 1e9, 1),
            (True, 1e9, 1),
            (False, 1.0, 8),
            (False, 1e9, 8),
        ]:
            kw = dict(per_weight=per_weight, budget=budget, batch_size=b)
            np.testing.assert_allclose(
                conv_weight_grad(m, g, w2, 2, 1, **kw),
                conv_weight_grad(m, g, w2, 2, 1, mask=ones, **kw),
                rtol=1e-12,
            )
