"""Quenched means: a layer's signed weights map the means exactly (linearity of the
expectation over inputs with the weights fixed), the fluctuations propagate sign-averaged.

With input channels independent and fluctuations iid over positions, the predicted mean,
q and cross-sample moment of the output are exact in expectation over the *inputs* for
the one fixed weight draw (Var Σ w x = Σ w² var for independent terms), so Monte Carlo
over inputs alone must agree within its standard error: 5 SE per element (a few hundred
comparisons; a normal deviation beyond 5 SE has probability 6e-7 each). Two positions of
one sample whose windows overlap also share input noise through *different* taps,
Σ_t w_t w_t′ σ², a term of zero sign average that the rule drops: cov_pos is exact where
windows do not overlap (kernel 2, stride 2) and checked there. The sign-averaged rule, fed
the same network, misses each channel's frozen offset Σ_i w_oi μ_i (tested to be off).
"""

import numpy as np
import pytest

from sigprop.theory.propagation import Moments, conv, linear

from . import mc


def _record(shape, mu, noise):
    """Input record: channel means ``mu`` (C,), iid N(0, noise²) fluctuations."""
    white = Moments.gaussian_input(shape, noise**2)
    mean = mu.reshape((shape[0],) + (1,) * (len(shape) - 1))
    return white.plus_mean(np.broadcast_to(mean, white.q_cls.shape))


def _inputs(rng, b, shape, mu, noise):
    return mu.reshape((1, -1) + (1,) * (len(shape) - 1)) + noise * rng.standard_normal((b, *shape))


@pytest.mark.parametrize(("hw", "k", "stride"), [(2, 3, 1), (4, 3, 2), (5, 3, 1), (4, 2, 2)])
def test_conv_quenched_means_against_monte_carlo_over_inputs(hw, k, stride):
    rng = np.random.default_rng(hw * 10 + stride)
    cin, cout, b, reps, noise = 64, 8, 64, 40, 0.7
    shape = (cin, hw, hw)
    mu = rng.uniform(-0.5, 1.5, cin)
    w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
    pad = 1 if k == 3 else 0
    bias = 0.3 * rng.standard_normal(cout)
    rec = _record(shape, mu, noise)
    pred = conv(rec, w * w, stride=stride, padding=pad, b=bias, w=w)
    acc = {key: [] for key in ("q", "mean", "cov_pos", "cov_indep")}
    for _ in range(reps):
        y = mc.conv(_inputs(rng, b, shape, mu, noise), w, stride=stride, padding=pad)
        mc.collect(acc, mc.stats(y + bias[None, :, None, None]))
    mc.se_check(pred.mean, acc["mean"], 5.0, what="mean map")
    mc.se_check(pred.q, acc["q"], 5.0, what="q map")
    mc.se_check(pred.cov_indep, acc["cov_indep"], 5.0, what="cov_indep")
    if k == stride:  # windows do not overlap (module doc)
        mc.se_check(pred.cov_pos, acc["cov_pos"], 5.0, what="cov_pos")
    # the sign-averaged rule on the same network misses the frozen offsets
    annealed = conv(rec, w * w, stride=stride, padding=pad, b=bias)
    dev = np.abs(annealed.q - np.mean(acc["q"], axis=0)) / np.mean(acc["q"], axis=0)
    assert dev.max() > 0.2


def test_linear_quenched_means_on_tokens_against_monte_carlo():
    rng = np.random.default_rng(3)
    cin, cout, t, b, reps, noise = 96, 12, 5, 64, 40, 0.5
    mu = rng.uniform(-1.0, 1.0, cin)
    w = rng.standard_normal((cout, cin)) / np.sqrt(cin)
    bias = 0.2 * rng.standard_normal(cout)
    pred = linear(_record((cin, t), mu, noise), w * w, b=bias, w=w)
    np.testing.assert_allclose(pred.mean_channel(), w @ mu + bias, rtol=1e-12)
    acc = {key: [] for key in ("q", "mean", "cov_pos", "cov_indep")}
    for _ in range(reps):
        x = _inputs(rng, b, (cin, t), mu, noise)
        mc.collect(acc, mc.stats(np.einsum("oc,bct->bot", w, x) + bias[None, :, None]))
    for key, values in acc.items():  # a linear layer reads no window: cov_pos exact too
        mc.se_check(getattr(pred, key), values, 5.0, what=key)


def test_plus_mean_of_centred_is_the_record():
    rng = np.random.default_rng(0)
    _, mom = mc.structured(rng, 2, (6, 3, 4), mu=0.4, su=0.3, sv=0.5, sw=0.7, pair=(0.5, 0.2))
    m = mc.moments_of((6, 3, 4), mom)
    back = m.centred().plus_mean(m.mean_cls)
    np.testing.assert_allclose(back.q_cls, m.q_cls, rtol=1e-12)
    for k in ("cov_pos", "cov_indep", "cov_pair", "cov_pair_pos"):
        np.testing.assert_allclose(getattr(back, k), getattr(m, k), rtol=1e-12, atol=1e-15)
    assert np.all(m.centred().mean_cls == 0)


def test_signed_weights_are_validated():
    m = Moments.gaussian_input((4, 3, 3), 1.0)
    w = np.ones((2, 4, 3, 3))
    with pytest.raises(ValueError, match="signed weights"):
        conv(m, w, padding=1, w=np.ones((2, 4, 1, 1)))
    bad = w.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="signed weights"):
        conv(m, w, padding=1, w=bad)


def test_propagate_takes_quenched_or_annealed_means():
    from sigprop.theory.propagation import TheoryGraph, TheoryNode, propagate

    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 4)) / 2.0
    nodes = (
        TheoryNode("input", "input", (), {"shape": [4]}),
        TheoryNode("a", "elementwise", ("input",), {"activation": "relu"}),
        TheoryNode("fc", "linear", ("a",), {"w2": w * w, "w": w}),
    )
    graph = TheoryGraph(nodes)
    quenched = propagate(graph, q0=1.0).moments["fc"]
    annealed = propagate(graph, q0=1.0, means="annealed").moments["fc"]
    mu = np.sqrt(1.0 / (2.0 * np.pi))  # E[relu(z)], z ~ N(0, 1)
    np.testing.assert_allclose(quenched.mean_channel(), w @ np.full(4, mu), rtol=1e-12)
    np.testing.assert_allclose(annealed.mean_channel(), 0.0)
    with pytest.raises(ValueError, match="means must be"):
        propagate(graph, q0=1.0, means="frozen")
