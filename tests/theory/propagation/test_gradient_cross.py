"""Gradient cross moments (g_pos: two positions of one sample; g_indep: two batch members)
through the backward rules, against Monte Carlo with coherent output gradients
δ(b, c, p) = a U(b, c) + e(b, c, p) (g = a² + e², g_pos = a²), 5 SE, plus the stated 3%
of the BatchNorm projection's ŷŷᵀ approximation."""

import numpy as np
import pytest

from sigprop.theory.propagation import (
    Grad,
    Moments,
    adaptive_avg_pool,
    adaptive_avg_pool_backward,
    batchnorm_train_backward,
    conv,
    conv_backward,
    elementwise_backward,
)

from . import mc


def _coherent(rng, b, shape, a=0.8, e=0.6):
    u = rng.standard_normal((b, shape[0]) + (1,) * (len(shape) - 1))
    return a * u + e * rng.standard_normal((b,) + tuple(shape))


def _gstats(d):
    s = mc.stats(d)
    return s["q"].mean(axis=tuple(range(1, s["q"].ndim))), s["cov_pos"], s["cov_indep"]


def test_global_pool_makes_gradients_coherent():
    m = Moments.gaussian_input((3, 4, 4))
    p = adaptive_avg_pool(m, 1)
    g = adaptive_avg_pool_backward(m, Grad.ones(p, 2.0), 1)
    np.testing.assert_allclose(g.g_channel(), 2.0 / 256)
    np.testing.assert_allclose(g.g_pos, 2.0 / 256)
    np.testing.assert_allclose(g.g_indep, 0.0)


@pytest.mark.parametrize("shape", [(16, 4, 4), (16, 2, 2)])
def test_batchnorm_backward_with_coherent_gradients(shape):
    rng = np.random.default_rng(shape[1])
    b, reps, a, e = 32, 40, 0.8, 0.6
    kw = dict(mu=0.5, su=0.5, sv=0.6, sw=1.0)
    _, mom = mc.structured(rng, 2, shape, **kw)
    m = mc.moments_of(shape, mom)
    grid = m.grid
    gin = Grad(grid, np.full(m.q_cls.shape, a * a + e * e), np.full(shape[0], a * a), None)
    pred = batchnorm_train_backward(m, gin, b)
    acc = [[], [], []]
    for _ in range(reps):
        x, _ = mc.structured(rng, b, shape, **kw)
        dx = mc.bn_train_vjp(x, _coherent(rng, b, shape, a, e))
        for lst, v in zip(acc, _gstats(dx)):
            lst.append(v)
    mc.se_check(pred.g_channel(), acc[0], 5.0, 0.03, "g")
    mc.se_check(pred.g_pos, acc[1], 5.0, 0.03, "g_pos")
    mc.se_check(pred.g_indep, acc[2], 5.0, 0.03, "g_indep")
    # the batch-mean removal: Σ over batch and positions of δ_x vanishes
    p = np.prod(shape[1:])
    row = pred.g_channel() + (p - 1) * pred.g_pos + (b - 1) * p * pred.g_indep
    np.testing.assert_allclose(row, 0.0, atol=1e-3 * np.max(pred.g_channel()))


def test_conv_backward_cross_moments():
    rng = np.random.default_rng(1)
    cin, cout, hw, b, reps = 16, 64, 6, 8, 40
    w2 = rng.random((cout, cin, 3, 3)) * 2.0 / (cout * 9)
    m = Moments.gaussian_input((cin, hw, hw))
    out = conv(m, w2, stride=2, padding=1)
    a, e = 0.8, 0.6
    g = Grad(out.grid, np.full(out.q_cls.shape, a * a + e * e), np.full(cout, a * a), None)
    pred = conv_backward(m, g, w2, stride=2, padding=1)
    acc = [[], [], []]
    for _ in range(reps):
        w = rng.choice([-1.0, 1.0], w2.shape) * np.sqrt(w2)
        d = _coherent(rng, b, out.shape, a, e)
        dx = mc.conv_transpose(d, w, (hw, hw), 2, 1)
        for lst, v in zip(acc, _gstats(dx)):
            lst.append(v)
    mc.se_check(pred.g_channel(), acc[0], 5.0, what="g")
    mc.se_check(pred.g_pos, acc[1], 5.0, what="g_pos")
    mc.se_check(pred.g_indep, acc[2], 5.0, what="g_indep")


@pytest.mark.parametrize("spec", ["relu", "tanh"])
def test_elementwise_backward_cross_moments(spec):
    from sigprop.theory.propagation import resolve

    rng = np.random.default_rng(len(spec))
    shape, b, reps, a, e = (16, 3, 3), 16, 40, 0.8, 0.6
    kw = dict(mu=0.3, su=0.6, sv=0.7, sw=1.0)
    _, mom = mc.structured(rng, 2, shape, **kw)
    m = mc.moments_of(shape, mom)
    # a component shared by the whole batch adds 0.1 to g, g_pos and g_indep
    g = Grad(
        m.grid,
        np.full(m.q_cls.shape, a * a + e * e + 0.1),
        np.full(16, a * a + 0.1),
        np.full(16, 0.1),
    )
    pred = elementwise_backward(m, g, spec)
    act = resolve(spec)
    acc = [[], [], []]
    for _ in range(reps):
        x, _ = mc.structured(rng, b, shape, **kw)
        d = _coherent(rng, b, shape, a, e) + np.sqrt(0.1) * rng.standard_normal((1, 16, 1, 1))
        for lst, v in zip(acc, _gstats(act.dphi(x) * d)):
            lst.append(v)
    mc.se_check(pred.g_channel(), acc[0], 5.0, what="g")
    mc.se_check(pred.g_pos, acc[1], 5.0, what="g_pos")
    mc.se_check(pred.g_indep, acc[2], 5.0, what="g_indep")
