"""Gaussian moments with means: closed forms (piecewise linear) and quadrature (smooth),
against the independent adaptive rules of sigprop.theory.gaussian (expect, expect2)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, special, stats

from sigprop.theory import gaussian
from sigprop.theory.activations import Activation
from sigprop.theory.propagation import PiecewiseLinear, resolve
from sigprop.theory.propagation.pwl import bvn_upper
from sigprop.validate import InvalidInput

PWL = ["relu", "leaky_relu:0.2", "relu6", "hard_tanh", "hardtanh:-2:0.5", "linear", "Abs(x)"]
SMOOTH = ["tanh", "gelu", "silu", "sigmoid", "softplus", "elu", "erf"]


def _ref_moments(act, mu, s):
    kinks = act.kinks
    out = []
    for f in (act.phi, lambda x: act.phi(x) ** 2, lambda x: act.dphi(x) ** 2):
        try:
            out.append(float(gaussian.expect(f, s * s, mean=mu, kinks=kinks)))
        except InvalidInput:
            # expect's tail check is conservative where the mass starts near its window's
            # edge (relu at mu = -3, s = 0.5: mass only for z > 6; true share beyond
            # |z| = 9 about 2e-9, estimated 1e-7): adaptive quad, split at the kinks
            out.append(_quad_moment(f, mu, s, kinks))
    return out


def _quad_moment(f, mu, s, kinks):
    g = lambda z: f(np.asarray(mu + s * z)) * stats.norm.pdf(z)  # noqa: E731
    cuts = sorted({(k - mu) / s for k in kinks})
    edges = [-np.inf, *cuts, np.inf]
    return sum(
        integrate.quad(g, a, b, epsabs=1e-16, epsrel=1e-12, limit=200)[0]
        for a, b in zip(edges[:-1], edges[1:])
    )


def _ref_cross(act, mu, s, rho):
    kinks = [k - mu for k in act.kinks]
    f = lambda x: act.phi(x + mu)  # noqa: E731
    return float(gaussian.expect2(f, f, s * s, s * s, rho, kinks_f=kinks, kinks_g=kinks))


def test_piecewise_linear_specs_resolve_to_closed_forms():
    for spec in PWL + ["Min(Max(x, 0), 6)"]:
        assert isinstance(resolve(spec), PiecewiseLinear), spec
    r6 = resolve("Min(Max(x, 0), 6)")
    np.testing.assert_allclose(r6.knots, (0.0, 6.0))
    np.testing.assert_allclose(r6.jumps, (1.0, -1.0), atol=1e-12)
    assert not isinstance(resolve("tanh"), PiecewiseLinear)
    custom = Activation.from_callable(np.tanh, lambda x: 1 - np.tanh(x) ** 2, name="t")
    assert not isinstance(resolve(custom), PiecewiseLinear)
    with pytest.raises(InvalidInput):
        resolve("clamp:1")
    with pytest.raises(InvalidInput):
        resolve("clamp:3:1")
    with pytest.raises(InvalidInput):
        resolve(3.0)


@pytest.mark.parametrize("spec", PWL)
@given(mu=st.floats(-6, 6), s=st.floats(0.01, 8.0))
def test_pwl_univariate(spec, mu, s):
    act = resolve(spec)
    got = act.moments(mu, s * s)
    ref = _ref_moments(act, mu, s)
    for k, r in zip(("m1", "m2", "d2"), ref):
        assert float(got[k]) == pytest.approx(r, rel=1e-9, abs=1e-12 * (1 + s * s + mu * mu))


@pytest.mark.parametrize("spec", ["relu", "relu6", "hardtanh:-2:0.5", "leaky_relu:0.2"])
@given(mu=st.floats(-4, 4), s=st.floats(0.05, 6.0), rho=st.floats(-1.0, 1.0))
def test_pwl_bivariate(spec, mu, s, rho):
    act = resolve(spec)
    got = float(act.cross(mu, s * s, rho))
    ref = _ref_cross(act, mu, s, rho)
    assert got == pytest.approx(ref, rel=1e-7, abs=1e-9 * (1 + s * s + mu * mu))


def test_pwl_degenerate_variance_is_the_point_value():
    act = resolve("relu6")
    m = act.moments(np.array([-1.0, 3.0, 7.0]), 0.0)
    np.testing.assert_allclose(m["m1"], [0.0, 3.0, 6.0])
    np.testing.assert_allclose(m["m2"], [0.0, 9.0, 36.0])
    np.testing.assert_allclose(act.cross(np.array([3.0]), 0.0, 0.3), [9.0])


def _orthant_quad(h, k, rho):
    """P(U > h, V > k) = ∫_h^∞ φ(u) Φ((ρu − k)/√(1 − ρ²)) du by adaptive quadrature."""
    r = np.sqrt(1.0 - rho * rho)
    f = lambda u: stats.norm.pdf(u) * special.ndtr((rho * u - k) / r)  # noqa: E731
    return integrate.quad(f, h, np.inf, epsabs=1e-14, epsrel=1e-12, limit=200)[0]


@given(h=st.floats(-5, 5), k=st.floats(-5, 5), rho=st.floats(-0.999, 0.999))
def test_orthant_probability(h, k, rho):
    # the reference is 1-D adaptive quadrature, independent of the Owen's-T closed form;
    # the 2-D rule of gaussian.expect2 cannot resolve probabilities whose whole mass lies
    # at the edge of its |z| <= 9 window to a relative 1e-8 and refuses them
    assert float(bvn_upper(h, k, rho)) == pytest.approx(_orthant_quad(h, k, rho), abs=1e-9)


@pytest.mark.parametrize(
    ("h", "k", "rho"), [(0.0, 2.0, -0.9375), (0.0, 4.0, -0.75), (0.0, 3.0, -0.875)]
)
def test_expect2_resolves_small_orthants(h, k, rho):
    # a bounded integrand whose mass starts near the window edge is resolved, not refused
    # as heavy-tailed (gaussian.tail_fraction with the quadrature weights)
    got = gaussian.expect2(
        lambda x: (x > h) * 1.0, lambda y: (y > k) * 1.0, 1.0, 1.0, rho, kinks_f=[h], kinks_g=[k]
    )
    assert float(got) == pytest.approx(_orthant_quad(h, k, rho), rel=1e-6, abs=1e-18)


@pytest.mark.parametrize("spec", SMOOTH)
def test_smooth_univariate_table_and_direct(spec):
    act = resolve(spec)
    rng = np.random.default_rng(len(spec))
    s = np.concatenate([[0.0, 1e-4, 0.3, 1.0, 3.0, 12.0], rng.uniform(0.01, 6, 10)])
    mu = np.concatenate([np.zeros(6), rng.uniform(-3, 3, 10)])  # zero mean: table path
    got = act.moments(mu, s * s)
    for i in range(s.size):
        ref = _ref_moments(act.act, mu[i], s[i])
        for k, r in zip(("m1", "m2", "d2"), ref):
            assert float(got[k][i]) == pytest.approx(r, rel=1e-6, abs=1e-12), (k, mu[i], s[i])


@pytest.mark.parametrize("spec", SMOOTH)
def test_smooth_bivariate(spec):
    act = resolve(spec)
    cases = [
        (0.0, 0.7, 0.3),
        (0.0, 5.0, 0.9),
        (0.4, 1.2, -0.6),
        (-1.0, 0.2, 0.999),
        (0.3, 2.0, 1.0),
    ]
    for mu, s, rho in cases:
        got = float(act.cross(mu, s * s, rho))
        ref = _ref_cross(act.act, mu, s, rho)
        scale = float(act.moments(mu, s * s)["m2"])
        assert got == pytest.approx(ref, abs=1e-7 * scale + 1e-14), (mu, s, rho)
