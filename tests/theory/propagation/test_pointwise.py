"""Elementwise, affine, dropout, add, cat, mul and reshapes.

Elementwise rules are exact for Gaussian inputs whose positions share their moments, so
Monte Carlo on exactly Gaussian structured inputs must agree within 5 SE (per channel,
several hundred comparisons); the border approximation is exact for the ReLU family at
zero mean (homogeneity), tested on a non-uniform map."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigprop.theory.propagation import (
    Grad,
    Moments,
    add,
    affine,
    cat,
    conv,
    dropout,
    dropout_backward,
    elementwise,
    elementwise_backward,
    flatten,
    flatten_backward,
    flatten_positions,
    mul,
    mul_backward,
    resolve,
    select_position,
)
from sigprop.validate import InvalidInput

from . import mc

ACTS = ["relu", "relu6", "leaky_relu:0.1", "tanh", "gelu", "hardtanh:-1:2"]


@pytest.mark.parametrize("spec", ACTS)
def test_elementwise_against_monte_carlo(spec):
    rng = np.random.default_rng(len(spec))
    c, shape, b, reps = 64, (64, 3, 3), 16, 40
    kw = dict(mu=0.4, su=0.6, sv=0.7, sw=1.3)
    _, mom = mc.structured(rng, 2, shape, **kw, pair=(0.7, 0.5))
    pred = elementwise(mc.moments_of(shape, mom), spec)
    act = resolve(spec)
    acc = {k: [] for k in ("q", "mean", "cov_pos", "cov_indep", "cov_pair", "cov_pair_pos", "g")}
    for _ in range(reps):
        x, _ = mc.structured(rng, b, shape, **kw, pair=(0.7, 0.5))
        s = mc.stats(act.phi(x), pair=True)
        for k in ("cov_pos", "cov_indep", "cov_pair", "cov_pair_pos"):
            acc[k].append(s[k])
        acc["q"].append(s["q"].mean(axis=(1, 2)))
        acc["mean"].append(s["mean"].mean(axis=(1, 2)))
        delta = rng.standard_normal(x.shape)
        acc["g"].append(((act.dphi(x) * delta) ** 2).mean(axis=(0, 2, 3)))
    mc.se_check(pred.q_channel(), acc["q"], 5.0, what="q")
    mc.se_check(pred.mean_channel(), acc["mean"], 5.0, what="mean")
    for k in ("cov_pos", "cov_indep", "cov_pair", "cov_pair_pos"):
        mc.se_check(getattr(pred, k), acc[k], 5.0, what=k)
    g = elementwise_backward(mc.moments_of(shape, mom), Grad.ones(pred), spec)
    mc.se_check(g.g_channel(), acc["g"], 5.0, what="g")
    assert c == pred.channels


def test_relu_on_a_bordered_map_is_exact():
    """A padded conv gives a non-uniform q map; at zero mean ReLU is homogeneous, so its
    cross moments are exact there too (Monte Carlo, 5 SE)."""
    rng = np.random.default_rng(2)
    cin, cout, hw, b, reps = 64, 8, 4, 8, 60
    w2 = np.full((cout, cin, 3, 3), 2.0 / (cin * 9))
    m = conv(Moments.gaussian_input((cin, hw, hw), 1.0, c0=0.5), w2, padding=1)
    pred = elementwise(m, "relu")
    q, pos, pair = [], [], []
    for _ in range(reps):
        x, _ = mc.structured(rng, b, (cin, hw, hw), sw=1.0, pair=(0.0, 0.5))
        w = rng.standard_normal(w2.shape) * np.sqrt(w2)
        s = mc.stats(np.maximum(mc.conv(x, w, padding=1), 0.0), pair=True)
        q.append(s["q"])
        pos.append(s["cov_pos"])
        pair.append(s["cov_pair"])
    mc.se_check(pred.q, q, 5.0, what="q map")
    mc.se_check(pred.cov_pos, pos, 5.0, what="cov_pos")
    mc.se_check(pred.cov_pair, pair, 5.0, what="cov_pair")


def test_affine_is_exact():
    rng = np.random.default_rng(0)
    m = mc.moments_of((3, 4), mc.structured(rng, 2, (3, 4), mu=0.5, su=0.2, sv=0.3, sw=1.0)[1])
    a, c = np.array([2.0, -1.0, 0.5]), np.array([0.1, 0.0, -3.0])
    y = affine(m, a, c)
    np.testing.assert_allclose(y.mean_channel(), a * 0.5 + c)
    np.testing.assert_allclose(y.q_channel(), a * a * m.q_channel() + 2 * a * c * 0.5 + c * c)
    np.testing.assert_allclose(y.cov_indep, a * a * m.cov_indep + 2 * a * c * 0.5 + c * c)


def test_dropout_against_monte_carlo():
    rng = np.random.default_rng(5)
    shape, p = (32, 4), 0.3
    _, mom = mc.structured(rng, 2, shape, mu=0.2, su=0.3, sv=0.4, sw=1.0)
    pred = dropout(mc.moments_of(shape, mom), p)
    q, pos = [], []
    for _ in range(40):
        x, _ = mc.structured(rng, 16, shape, mu=0.2, su=0.3, sv=0.4, sw=1.0)
        y = x * (rng.random(x.shape) > p) / (1 - p)
        s = mc.stats(y)
        q.append(s["q"].mean(axis=1))
        pos.append(s["cov_pos"])
    mc.se_check(pred.q_channel(), q, 5.0, what="q")
    mc.se_check(pred.cov_pos, pos, 5.0, what="cov_pos")
    assert dropout(pred, p, training=False) is pred
    g = dropout_backward(pred, Grad.ones(pred), p)
    assert g.g_mean() == pytest.approx(1 / (1 - p))
    with pytest.raises(InvalidInput):
        dropout(pred, 1.0)


def _record(rng, shape, c0=0.3):
    m = Moments.gaussian_input(shape, float(rng.uniform(0.5, 2)), c0)
    if len(shape) > 1:
        w2 = rng.random((shape[0], shape[0], 3, 3)) if len(shape) == 3 else None
        if w2 is not None:
            m = conv(m, w2, padding=1, b=rng.standard_normal(shape[0]))
    return m


@given(seed=st.integers(0, 1000), s1=st.floats(-2, 2), s2=st.floats(-2, 2))
def test_add_and_cat_conserve(seed, s1, s2):
    rng = np.random.default_rng(seed)
    a, b = _record(rng, (3, 5, 4)), _record(rng, (3, 5, 4))
    y = add([a, b], [s1, s2])
    cross = 2 * s1 * s2 * np.mean(a.mean * b.mean, axis=(1, 2))
    np.testing.assert_allclose(
        y.q_channel(), s1**2 * a.q_channel() + s2**2 * b.q_channel() + cross, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(y.mean, s1 * a.mean + s2 * b.mean, atol=1e-12)
    z = cat([a, b])
    np.testing.assert_allclose(z.q, np.concatenate([a.q, b.q]))
    np.testing.assert_allclose(z.cov_pair, np.concatenate([a.cov_pair, b.cov_pair]))
    gs = [
        gg.g
        for gg in __import__("sigprop.theory.propagation", fromlist=["cat_backward"]).cat_backward(
            [a, b], Grad.ones(z, 2.0)
        )
    ]
    assert all(np.all(gg == 2.0) for gg in gs)


@given(seed=st.integers(0, 1000))
def test_flatten_conserves(seed):
    rng = np.random.default_rng(seed)
    m = _record(rng, (3, 4, 5))
    f = flatten(m)
    assert f.shape == (60,)
    assert f.q_mean() == pytest.approx(m.q_mean())
    np.testing.assert_allclose(f.q.reshape(m.shape), m.q)
    g = Grad(f.grid, rng.random(60))
    np.testing.assert_allclose(flatten_backward(m, g).g.reshape(-1), g.g)
    t = flatten_positions(m)
    assert t.shape == (3, 20)
    np.testing.assert_allclose(t.q, m.q.reshape(3, 20))
    s = select_position(m, (0, 0))
    np.testing.assert_allclose(s.q, m.q[:, 0, 0])


def test_token_cat_with_a_constant_class_token():
    rng = np.random.default_rng(3)
    tokens = mc.moments_of((4, 6), mc.structured(rng, 2, (4, 6), mu=0.0, su=0.2, sv=0.3, sw=1.0)[1])
    cls_value = rng.standard_normal((4, 1))
    cls = Moments.constant(cls_value)
    y = cat([cls, tokens], axis=0)
    assert y.shape == (4, 7)
    np.testing.assert_allclose(y.q[:, 0], cls_value[:, 0] ** 2)
    # cross-position moments: 6·5 token pairs plus 2·6 cls-token pairs (E = cls·0)
    np.testing.assert_allclose(y.cov_pos, tokens.cov_pos * 30 / 42)


def test_mul_against_monte_carlo_with_a_gate():
    rng = np.random.default_rng(9)
    shape, gshape = (16, 3, 3), (16, 1, 1)
    ka = dict(mu=0.3, su=0.2, sv=0.5, sw=1.0)
    kg = dict(mu=0.5, su=0.1, sv=0.3, sw=0.0)
    a = mc.moments_of(shape, mc.structured(rng, 2, shape, **ka)[1])
    g = mc.moments_of(gshape, mc.structured(rng, 2, gshape, **kg)[1])
    pred = mul(a, g)
    q, pos, ind = [], [], []
    for _ in range(60):
        x, _ = mc.structured(rng, 16, shape, **ka)
        z, _ = mc.structured(rng, 16, gshape, **kg)
        s = mc.stats(x * z)
        q.append(s["q"].mean(axis=(1, 2)))
        pos.append(s["cov_pos"])
        ind.append(s["cov_indep"])
    mc.se_check(pred.q_channel(), q, 5.0, what="q")
    mc.se_check(pred.cov_pos, pos, 5.0, what="cov_pos")
    mc.se_check(pred.cov_indep, ind, 5.0, what="cov_indep")
    ga, gg = mul_backward(a, g, Grad.ones(pred))
    np.testing.assert_allclose(ga.g_channel(), g.q_channel())
    np.testing.assert_allclose(gg.g_channel(), a.q_channel() * 9)  # Σ over 9 positions


@pytest.mark.parametrize("shape", [(5,), (4, 3)])
def test_records_freeze_their_own_arrays_never_the_callers(shape):
    # records are immutable and freeze arrays they are handed without copying them; a
    # caller's constant (a class token, a flat vector) must stay the caller's, writable
    value = np.random.default_rng(0).standard_normal(shape)
    m = Moments.constant(value)
    assert value.flags.writeable
    value[...] = 0.0
    assert np.all(m.mean_cls != 0) and np.all(m.q_cls > 0)  # the record kept its own copy
    assert not m.q_cls.flags.writeable and not m.mean_cls.flags.writeable
    with pytest.raises(ValueError):
        m.mean_cls[...] = 1.0
