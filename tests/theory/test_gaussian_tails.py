"""The tail check of the Gaussian quadrature: divergent or unresolved expectations are refused,
every registered activation is resolved at every variance the theory uses."""

import math

import numpy as np
import pytest
from scipy import integrate

from sigprop.theory import gaussian
from sigprop.theory.activations import get_activation, registered_names
from sigprop.validate import InvalidInput


@pytest.mark.parametrize("name", registered_names())
def test_registered_activations_are_resolved_at_every_variance(name):
    act = get_activation(name)
    q = np.array([1e-8, 1e-2, 1.0, 1e2, 1e4, 1e6])
    for f in (lambda x: act.phi(x) ** 2, lambda x: act.dphi(x) ** 2):
        assert np.all(np.isfinite(gaussian.expect(f, q, kinks=act.kinks)))
    coef = gaussian.hermite_coefficients(act.phi, q, 32, kinks=act.kinks)
    assert np.all(np.isfinite(coef))
    k = gaussian.expect2(act.phi, act.phi, 100.0, 100.0, 0.3, kinks_f=act.kinks, kinks_g=act.kinks)
    assert np.isfinite(k)


def _beyond(logf, zmax=9.0):
    """Share of E|f(z)| beyond |z| = zmax by adaptive quadrature (the reference), with f given
    as log|f| so that the integrand never overflows."""

    def g(z):
        lf = logf(z)
        return 0.0 if lf == -math.inf else math.exp(lf - 0.5 * z * z) / math.sqrt(2 * math.pi)

    def quad(a, b):
        return integrate.quad(g, a, b, epsabs=0, epsrel=1e-12, limit=200)[0]

    return (quad(zmax, np.inf) + quad(-np.inf, -zmax)) / (quad(-np.inf, 0) + quad(0, np.inf))


def _log_power(d):
    return lambda z: 2 * d * math.log(abs(z)) if z else -math.inf


@pytest.mark.parametrize(
    "logf, f",
    [
        *[(_log_power(d), lambda z, d=d: z ** (2 * d)) for d in range(1, 9)],
        *[
            (lambda z, s=s: 2 * s * z, lambda z, s=s: np.exp(2 * s * z))
            for s in (0.25, 0.5, 1, 1.5)
        ],
        (lambda z: 0.2 * z * z, lambda z: np.exp(0.2 * z * z)),
    ],
)
def test_tail_estimate_is_an_upper_bound(logf, f):
    z, w = gaussian.quadrature_rule(1.0)
    est = float(gaussian.tail_fraction(z, w * f(z)))
    ref = _beyond(logf)
    assert ref <= est <= 100 * ref  # an upper bound, and not a vacuous one


def test_polynomials_up_to_degree_16_are_resolved():
    z, w = gaussian.quadrature_rule(1.0)
    # E[z^16] = 15!! = 2027025 is the largest moment the expression language allows (φ = x⁸)
    assert gaussian.tail_fraction(z, w * z**16) <= gaussian.TAIL_RTOL
    assert gaussian.expect(lambda x: x**16, 1.0) == pytest.approx(2027025, rel=3e-10)


@pytest.mark.parametrize("q", [0.25, 0.3, 0.5, 1.0, 10.0])
def test_divergent_expectation_is_refused(q):
    # E[exp(x²)²] = E[exp(2 q z²)] is infinite for q ≥ 1/4
    with pytest.raises(InvalidInput, match="not resolved"):
        gaussian.expect(lambda x: np.exp(2 * x * x), q)


def test_unresolved_expectations_are_refused_everywhere():
    f = lambda x: np.exp(x * x)  # noqa: E731
    with pytest.raises(InvalidInput, match="not resolved"):
        gaussian.expect2(f, f, 0.5, 0.5, 0.5)
    with pytest.raises(InvalidInput, match="not resolved"):
        gaussian.hermite_coefficients(f, np.array([0.1, 1.0]), 8)
    with pytest.raises(InvalidInput, match="not finite"):
        gaussian.expect(lambda x: np.log(x), 1.0)
    # finite but beyond the window: E[exp(4z)] = e^8 has its mass around z = 4, and the
    # |z| ≤ 9 rule is off by 3e-7 there: refused rather than returned
    with pytest.raises(InvalidInput, match="beyond the window"):
        gaussian.expect(lambda x: np.exp(4 * x), 1.0)
    assert gaussian.expect(lambda x: np.exp(2 * x), 1.0) == pytest.approx(math.exp(2), rel=2e-12)
