"""Normalisation rules against Monte Carlo of numpy BatchNorm / LayerNorm / GroupNorm.

Inputs are exactly Gaussian with shared-channel, per-sample and per-position parts
(mc.structured). Tolerance: 5 SE per channel plus, for rules that divide by E[σ²] instead
of averaging x̃x̃′/σ² (module doc of norm), a stated 2% (forward) / 5% (backward)."""

import numpy as np
import pytest

from sigprop.theory.propagation import (
    Grad,
    Moments,
    add,
    batchnorm_eval,
    batchnorm_train,
    batchnorm_train_backward,
    groupnorm,
    groupnorm_backward,
    layernorm,
    layernorm_backward,
)

from . import mc


def _layernorm(x, eps=1e-5):  # x (B, C, T): normalise over C
    m = x.mean(axis=1, keepdims=True)
    v = x.var(axis=1, keepdims=True)
    return (x - m) / np.sqrt(v + eps)


def _layernorm_vjp(x, d, eps=1e-5):
    m = x.mean(axis=1, keepdims=True)
    v = x.var(axis=1, keepdims=True)
    xh = (x - m) / np.sqrt(v + eps)
    return (d - d.mean(1, keepdims=True) - xh * (d * xh).mean(1, keepdims=True)) / np.sqrt(v + eps)


def _groupnorm(x, groups, eps=1e-5):
    b, c = x.shape[:2]
    xg = x.reshape(b, groups, -1)
    m, v = xg.mean(-1, keepdims=True), xg.var(-1, keepdims=True)
    return ((xg - m) / np.sqrt(v + eps)).reshape(x.shape), (xg, m, v)


def _groupnorm_vjp(x, d, groups, eps=1e-5):
    b = x.shape[0]
    xg = x.reshape(b, groups, -1)
    dg = d.reshape(b, groups, -1)
    m, v = xg.mean(-1, keepdims=True), xg.var(-1, keepdims=True)
    xh = (xg - m) / np.sqrt(v + eps)
    out = (dg - dg.mean(-1, keepdims=True) - xh * (dg * xh).mean(-1, keepdims=True)) / np.sqrt(
        v + eps
    )
    return out.reshape(x.shape)


@pytest.mark.parametrize("shape", [(64, 1, 1), (32, 4, 4)])
def test_batchnorm_train_against_monte_carlo(shape):
    rng = np.random.default_rng(shape[1])
    b, reps = 32, 40
    kw = dict(mu=0.7, su=0.8, sv=0.6, sw=1.0)
    _, mom = mc.structured(rng, 2, shape, **kw, pair=(0.5, 0.5))
    m = mc.moments_of(shape, mom)
    gamma, beta = rng.uniform(0.5, 1.5, shape[0]), rng.uniform(-0.3, 0.3, shape[0])
    pred = batchnorm_train(m, b, gamma, beta)
    gpred = batchnorm_train_backward(m, Grad.ones(pred), b, gamma, beta)
    acc = {k: [] for k in ("q", "cov_pos", "cov_indep", "cov_pair", "sq", "var", "g")}
    for _ in range(reps):
        x, _ = mc.structured(rng, b, shape, **kw, pair=(0.5, 0.5))
        y = mc.bn_train(x, gamma=gamma, beta=beta)
        s = mc.stats(y, pair=True)
        acc["q"].append(s["q"].mean(axis=(1, 2)))
        acc["cov_indep"].append(mc.stats(y)["cov_indep"])
        acc["cov_pair"].append(s["cov_pair"])
        if "cov_pos" in s:
            acc["cov_pos"].append(s["cov_pos"])
        acc["sq"].append(y.mean(axis=(0, 2, 3)) ** 2)
        acc["var"].append(y.var(axis=(0, 2, 3), ddof=1))
        d = rng.standard_normal(x.shape)
        dx = mc.bn_train_vjp(x, d) * gamma[None, :, None, None]
        acc["g"].append((dx * dx).mean(axis=(0, 2, 3)))
    mc.se_check(pred.q_channel(), acc["q"], 5.0, 0.02, "q")
    mc.se_check(pred.cov_indep, acc["cov_indep"], 5.0, 0.02, "cov_indep")
    mc.se_check(pred.cov_pair, acc["cov_pair"], 5.0, 0.02, "cov_pair")
    if acc["cov_pos"]:
        mc.se_check(pred.cov_pos, acc["cov_pos"], 5.0, 0.02, "cov_pos")
    # Brock et al.'s summaries over the same batch: the batch mean is β exactly
    mc.se_check(pred.channel_sq_mean(b), acc["sq"], 5.0, 0.02, "channel squared mean")
    mc.se_check(pred.channel_var(b), acc["var"], 5.0, 0.02, "channel variance")
    mc.se_check(gpred.g_channel(), acc["g"], 5.0, 0.05, "g")


def test_batchnorm_backward_explodes_like_yang_et_al():
    """Large-B limit of the BN-ReLU-linear chain gain: π/(π − 1) (Yang et al. 2019)."""
    from sigprop.theory.propagation import (
        elementwise,
        elementwise_backward,
        linear,
        linear_backward,
    )

    n = 512
    m = Moments.gaussian_input((n,), 1.0)
    w2 = np.full((n, n), 2.0 / n)
    for _ in range(3):  # reach the BN fixed point
        m = elementwise(batchnorm_train(linear(m, w2), 4096), "relu")
    h = linear(m, w2)
    bn = batchnorm_train(h, 4096)
    r = elementwise(bn, "relu")
    g = Grad.ones(linear(r, w2))
    g1 = linear_backward(r, g, w2)
    g2 = elementwise_backward(bn, g1, "relu")
    g3 = batchnorm_train_backward(h, g2, 4096)
    g4 = linear_backward(m, g3, w2)
    # one layer: linear → BN → ReLU → (next linear): g4 is g1 one layer down
    assert g4.g_mean() / g1.g_mean() == pytest.approx(np.pi / (np.pi - 1), rel=2e-3)


def test_batchnorm_eval_is_affine():
    m = Moments.gaussian_input((3, 2, 2), 2.0)
    y = batchnorm_eval(
        m, [1.0, 2.0, 3.0], [0.0, 1.0, -1.0], [0.5, 0.0, 1.0], [2.0, 1.0, 4.0], eps=0.0
    )
    a = np.array([1.0, 2.0, 3.0]) / np.sqrt([2.0, 1.0, 4.0])
    c = np.array([0.0, 1.0, -1.0]) - np.array([0.5, 0.0, 1.0]) * a
    np.testing.assert_allclose(y.q_channel(), a * a * 2.0 + c * c)
    np.testing.assert_allclose(y.mean_channel(), c)


def test_layernorm_against_monte_carlo():
    rng = np.random.default_rng(4)
    c, t, b, reps = 48, 6, 16, 40
    offset = (
        rng.standard_normal((c, t)) * 0.5
    )  # a deterministic per-token offset (position embedding)
    kw = dict(mu=0.0, su=0.3, sv=0.5, sw=1.0)
    _, mom = mc.structured(rng, 2, (c, t), **kw, pair=(0.4, 0.4))
    m = add([mc.moments_of((c, t), mom), Moments.constant(offset, track_pair=True)])
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c)
    pred = layernorm(m, gamma, beta)
    gpred = layernorm_backward(m, Grad.ones(pred), gamma, beta)
    acc = {k: [] for k in ("q", "mean", "cov_pos", "cov_indep", "cov_pair", "g")}
    for _ in range(reps):
        x, _ = mc.structured(rng, b, (c, t), **kw, pair=(0.4, 0.4))
        x = x + offset
        y = _layernorm(x) * gamma[None, :, None] + beta[None, :, None]
        s = mc.stats(y, pair=True)
        for k in ("q", "mean"):
            acc[k].append(s[k])
        acc["cov_pos"].append(s["cov_pos"])
        acc["cov_indep"].append(mc.stats(y)["cov_indep"])
        acc["cov_pair"].append(s["cov_pair"])
        d = rng.standard_normal(x.shape) * gamma[None, :, None]
        dx = _layernorm_vjp(x, d)
        acc["g"].append((dx * dx).mean(axis=0))
    mc.se_check(pred.q, acc["q"], 5.0, 0.02, "q")
    mc.se_check(pred.mean, acc["mean"], 5.0, 0.02, "mean")
    for k in ("cov_pos", "cov_indep", "cov_pair"):
        mc.se_check(getattr(pred, k), acc[k], 5.0, 0.02, k)
    mc.se_check(gpred.g, acc["g"], 5.0, 0.05, "g")


def test_groupnorm_against_monte_carlo():
    rng = np.random.default_rng(6)
    shape, groups, b, reps = (16, 3, 3), 4, 16, 40
    kw = dict(mu=0.5, su=0.4, sv=0.6, sw=1.0)
    _, mom = mc.structured(rng, 2, shape, **kw)
    m = mc.moments_of(shape, mom)
    pred = groupnorm(m, groups)
    gpred = groupnorm_backward(m, Grad.ones(pred), groups)
    acc = {k: [] for k in ("q", "cov_pos", "cov_indep", "g")}
    for _ in range(reps):
        x, _ = mc.structured(rng, b, shape, **kw)
        y, _ = _groupnorm(x, groups)
        s = mc.stats(y)
        acc["q"].append(s["q"].mean(axis=(1, 2)))
        acc["cov_pos"].append(s["cov_pos"])
        acc["cov_indep"].append(s["cov_indep"])
        dx = _groupnorm_vjp(x, rng.standard_normal(x.shape), groups)
        acc["g"].append((dx * dx).mean(axis=(0, 2, 3)))
    for k in ("q", "cov_pos", "cov_indep"):
        val = pred.q_channel() if k == "q" else getattr(pred, k)
        mc.se_check(val, acc[k], 5.0, 0.02, k)
    mc.se_check(gpred.g_channel(), acc["g"], 5.0, 0.05, "g")
