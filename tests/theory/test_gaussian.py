"""Gaussian expectations against adaptive quadrature and closed forms."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from sigprop.theory import gaussian
from sigprop.theory.activations import get_activation


def quad_expect(f, q, kinks=()):
    """Independent reference: adaptive quad split at 0 and the kinks (epsrel 1e-13)."""
    s = math.sqrt(q)
    pts = sorted({0.0, *[k / s for k in kinks]})
    edges = [-np.inf, *pts, np.inf]

    def g(z):
        return float(f(np.array(s * z))) * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    return sum(
        integrate.quad(g, a, b, epsabs=0, epsrel=1e-13, limit=400)[0]
        for a, b in zip(edges[:-1], edges[1:])
    )


def relu_kernel(c):
    """Arc-cosine kernel E[relu(u)relu(v)] at unit variances (Cho & Saul 2009)."""
    return (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / (2 * math.pi)


@pytest.mark.parametrize("name", ["tanh", "hard_tanh", "selu", "elu", "gelu", "softplus"])
@pytest.mark.parametrize("q", [1e-6, 0.3, 4.0, 100.0])
def test_expect_matches_adaptive_quad(name, q):
    act = get_activation(name)
    for f in (lambda x: act.phi(x) ** 2, lambda x: act.dphi(x) ** 2):
        ref = quad_expect(f, q, act.kinks)
        # quad is converged to ~1e-13; the composite rule to round-off
        assert gaussian.expect(f, q, kinks=act.kinks) == pytest.approx(ref, rel=5e-13)


def test_published_tanh_and_relu_numbers():
    # REFERENCES §8, quoted to 10 digits
    t = get_activation("tanh")
    assert gaussian.expect(lambda x: t.phi(x) ** 2, 1.0) == pytest.approx(0.3942944904, abs=1e-10)
    assert gaussian.expect(lambda x: t.dphi(x) ** 2, 1.0) == pytest.approx(0.4644029025, abs=1e-10)
    k = gaussian.expect2(t.phi, t.phi, 1.0, 1.0, 0.5) / gaussian.expect(
        lambda x: t.phi(x) ** 2, 1.0
    )
    assert k == pytest.approx(0.4725513994, abs=1e-10)
    r = get_activation("relu")
    c05 = gaussian.expect2(r.phi, r.phi, 1.0, 1.0, 0.5, kinks_f=(0.0,), kinks_g=(0.0,))
    assert 2 * c05 == pytest.approx(0.6089977810, abs=1e-10)


@pytest.mark.parametrize("c", [-1.0, -0.5, 0.0, 0.5, 0.999999, 1.0])
def test_expect2_relu_closed_form_including_c_near_one(c):
    r = get_activation("relu")
    got = gaussian.expect2(r.phi, r.phi, 2.0, 2.0, c, kinks_f=(0.0,), kinks_g=(0.0,))
    # plain Gauss–Hermite is off by ~5e-4 here (REFERENCES §8); the split rule is exact
    assert got == pytest.approx(2.0 * relu_kernel(c), rel=1e-13, abs=1e-15)


@settings(max_examples=15)  # each example is a 2-D quadrature (~0.3 s)
@given(
    q1=st.floats(0.01, 20.0),
    q2=st.floats(0.01, 20.0),
    c=st.floats(-1.0, 1.0),
)
def test_expect2_erf_arcsine_kernel_unequal_variances(q1, q2, c):
    e = get_activation("erf")
    got = gaussian.expect2(e.phi, e.phi, q1, q2, c)
    ref = (2 / math.pi) * math.asin(
        2 * c * math.sqrt(q1 * q2) / math.sqrt((1 + 2 * q1) * (1 + 2 * q2))
    )
    # closed form of Williams (1997), REFERENCES §2; both float64, a few ulp of O(1) values
    assert got == pytest.approx(ref, abs=2e-14)


def test_expect2_broadcasts():
    t = get_activation("tanh")
    out = gaussian.expect2(t.phi, t.phi, np.array([[1.0], [2.0]]), 1.0, np.array([0.1, 0.5, 0.9]))
    assert out.shape == (2, 3)
    assert out[0, 1] == pytest.approx(gaussian.expect2(t.phi, t.phi, 1.0, 1.0, 0.5), rel=1e-15)


@pytest.mark.parametrize(
    "name, q, tail",
    # smooth φ: coefficients decay like exp(−c√k), tail < 1e-8 at K = 512; SELU's φ′ jump
    # makes a_k² ~ k^(−5/2), so the tail is ~K^(−3/2) ≈ 1e-5
    [("tanh", 0.5, 1e-8), ("tanh", 3.0, 1e-8), ("selu", 1.0, 2e-5), ("gelu", 2.0, 1e-8)],
)
def test_hermite_series_reproduces_the_kernel(name, q, tail):
    act = get_activation(name)
    a = gaussian.hermite_coefficients(act.phi, np.array(q), 512, kinks=act.kinks)
    # Σ a_k² = E[φ²]: the truncated tail is positive and small
    g0 = gaussian.expect(lambda x: act.phi(x) ** 2, q, kinks=act.kinks)
    assert np.sum(a**2) <= g0 * (1 + 1e-14)
    assert np.sum(a**2) == pytest.approx(g0, rel=tail)
    # Mehler: Σ a_k² c^k = E[φ(u1)φ(u2)] at c = 0.6 (tail damped by 0.6^512)
    k2 = gaussian.expect2(act.phi, act.phi, q, q, 0.6, kinks_f=act.kinks, kinks_g=act.kinks)
    assert np.sum(a**2 * 0.6 ** np.arange(512)) == pytest.approx(k2, rel=1e-13)


def test_hermite_kinks_away_from_zero_use_per_q_rule():
    ht = get_activation("hard_tanh")
    q = np.array([0.5, 2.0])
    a = gaussian.hermite_coefficients(ht.phi, q, 64, kinks=ht.kinks)
    for i, qi in enumerate(q):
        # Stein: E[φ(√q z) He_1(z)] = √q E[φ′(√q z)] = √q P(|u| < 1)
        assert a[i, 1] == pytest.approx(math.sqrt(qi) * math.erf(1 / math.sqrt(2 * qi)), rel=1e-13)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: gaussian.expect(np.tanh, -1.0), "non-negative"),
        (lambda: gaussian.expect(np.tanh, np.nan), "finite"),
        (lambda: gaussian.expect2(np.tanh, np.tanh, 1.0, 1.0, 1.5), r"\[-1, 1\]"),
        (lambda: gaussian.expect2(np.tanh, np.tanh, 1.0, 1.0, np.nan), "finite"),
        (lambda: gaussian.hermite_coefficients(np.tanh, 1.0, 0), "kmax"),
    ],
)
def test_bad_input(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_hermite_functions_are_orthonormal_under_the_gaussian():
    # E[h_j(z) h_k(z)] = δ_jk for z ~ N(0, 1), by the engine's own rule, and the values are
    # He_k(z)/√(k!) (numpy's probabilists' Hermite series) on a 2-D z. The window is wider
    # than hermite_coefficients' |z| ≤ 13: a product h_j h_k φ does not decay like the
    # h_k φ ≤ e^(−z²/4) of a coefficient (Cramér's bound), and h_39² still has 0.7% of its
    # mass beyond 13
    z, w = gaussian.quadrature_rule(1.0, 0.0, (), zmax=20.0, hz=0.5, order=20, ladder=False)
    h = gaussian.hermite_functions(z, 40)
    # round-off: a few ulps of each term of Σ_i w_i |h_j(z_i) h_k(z_i)| (the h_k are large
    # at the window's edge, where the Gaussian weight makes up for it)
    scale = np.abs(h).T @ (w[:, None] * np.abs(h))
    err = np.abs(h.T @ (w[:, None] * h) - np.eye(40))
    assert np.all(err <= 64 * np.finfo(float).eps * scale)
    grid = np.linspace(-4.0, 4.0, 12).reshape(3, 4)
    got = gaussian.hermite_functions(grid, 6)
    assert got.shape == (3, 4, 6)
    for k in range(6):
        coef = np.zeros(k + 1)
        coef[k] = 1.0 / math.sqrt(math.factorial(k))
        np.testing.assert_allclose(got[..., k], np.polynomial.hermite_e.hermeval(grid, coef))
