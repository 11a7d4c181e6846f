"""Pooling rules against Monte Carlo. Inputs are equicorrelated Gaussians within a sample
(mc.structured), the model of the max-pool rule and the far-field model of the average
rule, so both must agree within 5 SE per position and channel; the input pair's
same-window maximum covariance uses the Hoeffding table (also 5 SE)."""

import numpy as np
import pytest

from sigprop.theory.propagation import (
    Grad,
    Moments,
    adaptive_avg_pool,
    adaptive_avg_pool_backward,
    avg_pool,
    avg_pool_backward,
    max_pool,
    max_pool_backward,
)
from sigprop.theory.propagation.pool import max_moments, max_pair_cov

from . import mc


@pytest.mark.parametrize("hw,k,s,p", [(8, 3, 2, 1), (7, 3, 2, 1), (6, 2, 2, 0), (5, 3, 1, 1)])
def test_max_pool_against_monte_carlo(hw, k, s, p):
    rng = np.random.default_rng(hw * 10 + k)
    shape, b, reps = (8, hw, hw), 16, 40
    kw = dict(mu=0.3, su=0.5, sv=0.7, sw=1.0)
    _, mom = mc.structured(rng, 2, shape, **kw, pair=(0.5, 0.6))
    m = mc.moments_of(shape, mom)
    pred = max_pool(m, k, s, p)
    gin = max_pool_backward(m, Grad.ones(pred), k, s, p)
    acc = {
        key: [] for key in ("q", "mean", "cov_pos", "cov_indep", "cov_pair", "cov_pair_pos", "g")
    }
    for _ in range(reps):
        x, _ = mc.structured(rng, b, shape, **kw, pair=(0.5, 0.6))
        y, _ = mc.max_pool(x, k, s, p)
        st = mc.stats(y, pair=True)
        for key in acc:
            if key in st:
                acc[key].append(st[key])
        d = rng.standard_normal(y.shape)
        # channel-averaged: one window hit has probability 1/n, so per element the
        # estimate is far from Gaussian at this sample size
        acc["g"].append((mc.max_pool_vjp(x, d, k, s, p) ** 2).mean(axis=(0, 1)))
    mc.se_check(pred.q, acc["q"], 5.0, what="q")
    mc.se_check(pred.mean, acc["mean"], 5.0, what="mean")
    for key in ("cov_pos", "cov_indep", "cov_pair", "cov_pair_pos"):
        mc.se_check(getattr(pred, key), acc[key], 5.0, what=key)
    mc.se_check(gin.g.mean(axis=0), acc["g"], 5.0, what="g")


def test_max_order_statistics():
    assert max_moments(2)[0] == pytest.approx(1 / np.sqrt(np.pi))
    assert max_moments(2)[1] == pytest.approx(1.0)
    e1, e2 = max_moments(9)
    assert e1 == pytest.approx(1.4850126, abs=1e-6)  # tabulated E[max of 9 normals]
    assert max_pair_cov(9, 0.0) == pytest.approx(0.0, abs=1e-9)
    assert max_pair_cov(9, 1.0) == pytest.approx(e2 - e1 * e1)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200000, 9))
    z2 = 0.5 * z + np.sqrt(0.75) * rng.standard_normal(z.shape)
    a, b = z.max(1), z2.max(1)
    cov = np.mean((a - a.mean()) * (b - b.mean()))
    assert max_pair_cov(9, 0.5) == pytest.approx(cov, abs=4 * np.std(a * b) / np.sqrt(z.shape[0]))


@pytest.mark.parametrize(
    "hw,k,s,p,cip",
    [(8, 2, 2, 0, True), (7, 3, 2, 1, True), (7, 3, 2, 1, False), (6, 3, 1, 1, False)],
)
def test_avg_pool_against_monte_carlo(hw, k, s, p, cip):
    rng = np.random.default_rng(hw + k + 10 * cip)
    shape, b, reps = (8, hw, hw), 16, 40
    kw = dict(mu=0.3, su=0.5, sv=0.7, sw=1.0)
    _, mom = mc.structured(rng, 2, shape, **kw, pair=(0.5, 0.6))
    m = mc.moments_of(shape, mom)
    pred = avg_pool(m, k, s, p, count_include_pad=cip)
    gin = avg_pool_backward(m, Grad.ones(pred), k, s, p, count_include_pad=cip)
    acc = {key: [] for key in ("q", "cov_pos", "cov_indep", "cov_pair", "cov_pair_pos", "g")}
    for _ in range(reps):
        x, _ = mc.structured(rng, b, shape, **kw, pair=(0.5, 0.6))
        y = mc.avg_pool(x, k, s, p, cip)
        st = mc.stats(y, pair=True)
        for key in acc:
            if key in st:
                acc[key].append(st[key])
        # the adjoint of average pooling, by the chain rule through a linear map
        d = rng.standard_normal(y.shape)
        acc["g"].append(_avg_vjp(x.shape, d, k, s, p, cip) ** 2)
    mc.se_check(pred.q, acc["q"], 5.0, what="q")
    for key in ("cov_pos", "cov_indep", "cov_pair", "cov_pair_pos"):
        mc.se_check(getattr(pred, key), acc[key], 5.0, what=key)
    mc.se_check(gin.g, np.mean(acc["g"], axis=1), 5.0, what="g")


def _avg_vjp(shape, d, k, s, p, cip):
    b, c, h, w = shape
    out = np.zeros((b, c, h + 2 * p, w + 2 * p))
    ho, wo = d.shape[2:]
    ones = np.pad(np.ones((h, w)), p)
    for y in range(ho):
        for x in range(wo):
            win = (slice(y * s, y * s + k), slice(x * s, x * s + k))
            div = k * k if cip else ones[win].sum()
            out[:, :, win[0], win[1]] += d[:, :, y : y + 1, x : x + 1] / div
    return out[:, :, p : p + h, p : p + w]


@pytest.mark.parametrize("hw,out", [(8, 1), (8, 3), (1, 7), (5, 2)])
def test_adaptive_avg_pool(hw, out):
    """Exact windows; from 1x1 to 7x7 (VGG at 32x32) every output copies the input."""
    rng = np.random.default_rng(hw * out)
    shape = (4, hw, hw)
    _, mom = mc.structured(rng, 2, shape, mu=0.2, su=0.4, sv=0.5, sw=1.0)
    m = mc.moments_of(shape, mom)
    pred = adaptive_avg_pool(m, out)
    assert pred.spatial == (out, out)
    q, pos = [], []
    for _ in range(40):
        x, _ = mc.structured(rng, 16, shape, mu=0.2, su=0.4, sv=0.5, sw=1.0)
        idx = [((i * hw) // out, -((-(i + 1) * hw) // out)) for i in range(out)]
        y = np.stack(
            [np.stack([x[:, :, a:b, c:d].mean(axis=(2, 3)) for c, d in idx], -1) for a, b in idx],
            -2,
        )
        st = mc.stats(y)
        q.append(st["q"])
        if "cov_pos" in st:
            pos.append(st["cov_pos"])
    mc.se_check(pred.q, q, 5.0, what="q")
    if pos:
        mc.se_check(pred.cov_pos, pos, 5.0, what="cov_pos")
    if hw == 1:
        np.testing.assert_allclose(pred.q, np.broadcast_to(m.q, pred.q.shape))
        g = adaptive_avg_pool_backward(m, Grad.ones(pred), out)
        np.testing.assert_allclose(g.g, out * out)  # 49 copies of one input


@pytest.mark.parametrize("hw,k,s,p", [(4, 2, 2, 0), (5, 3, 2, 1)])
def test_max_pool_of_a_position_dependent_mean_map_against_monte_carlo(hw, k, s, p):
    # a network's own (quenched) means vary with position: each entry of a window has its
    # own mean, a per-sample channel offset (sv) and iid noise (sw); the rule's model
    rng = np.random.default_rng(hw + k)
    c, b, reps, sv, sw = 8, 64, 40, 0.4, 0.6
    mean_map = rng.normal(0.0, 0.8, (c, hw, hw))
    shape = (c, hw, hw)
    const = Moments.constant(mean_map)
    n = const.q_cls.shape
    noise = Moments(
        const.grid, np.full(n, sv**2 + sw**2), np.zeros(n), np.full(c, sv**2), np.zeros(c)
    )
    pred = max_pool(noise.plus_mean(const.mean_cls), k, s, p)
    acc = {key: [] for key in ("q", "mean", "cov_pos", "cov_indep")}
    for _ in range(reps):
        x = (
            mean_map
            + sv * rng.standard_normal((b, c, 1, 1))
            + sw * rng.standard_normal((b, *shape))
        )
        mc.collect(acc, mc.stats(mc.max_pool(x, k, s, p)[0]))
    mc.se_check(pred.q, acc["q"], 5.0, what="q")
    mc.se_check(pred.mean, acc["mean"], 5.0, what="mean")
    mc.se_check(pred.cov_indep, acc["cov_indep"], 5.0, what="cov_indep")
    if acc["cov_pos"]:
        mc.se_check(pred.cov_pos, acc["cov_pos"], 5.0, what="cov_pos")
    # the window-averaged mean of the equal-mean model is far off here
    flat = noise.plus_mean(np.broadcast_to(mean_map.mean(axis=(1, 2), keepdims=True), n))
    assert np.max(np.abs(max_pool(flat, k, s, p).mean_channel() - pred.mean_channel())) > 0.1
