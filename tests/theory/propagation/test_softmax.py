"""Softmax moments of iid Gaussian logits: Laplace-transform integrals vs Monte Carlo
(4 SE), limits, and the failure of the small-σ approximation e^{σ²}/T."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import special

from sigprop.theory.propagation import softmax_overlap, softmax_stats

CASES = [(0.5, 16), (1.0, 2), (2.0, 16), (2.0, 65), (3.5, 33)]


@pytest.mark.parametrize("sigma,t", CASES)
def test_stats_against_monte_carlo(sigma, t):
    rng = np.random.default_rng(int(sigma * 10) + t)
    n = 40000
    a = special.softmax(sigma * rng.standard_normal((n, t)), axis=1)
    s2 = (a * a).sum(1)
    st_ = softmax_stats(sigma, t)
    for key, sample in (("S2", s2), ("S3", (a**3).sum(1)), ("S22", s2 * s2)):
        se = sample.std() / math.sqrt(n)
        assert abs(st_[key] - sample.mean()) < 4 * se, key


@pytest.mark.parametrize("sigma,t", CASES)
@pytest.mark.parametrize("lam", [-0.5, 0.4, 0.95])
def test_overlap_against_monte_carlo(sigma, t, lam):
    rng = np.random.default_rng(t + int(100 * lam) + 100)
    n = 30000
    z = rng.standard_normal((n, t))
    z2 = lam * z + math.sqrt(1 - lam * lam) * rng.standard_normal((n, t))
    v = (special.softmax(sigma * z, 1) * special.softmax(sigma * z2, 1)).sum(1)
    assert abs(softmax_overlap(sigma, t, lam) - v.mean()) < 4 * v.std() / math.sqrt(n)


@given(sigma=st.floats(0.0, 4.0), t=st.integers(1, 80))
def test_limits(sigma, t):
    s = softmax_stats(sigma, t)
    assert 1.0 / t - 1e-9 <= s["S2"] <= 1.0 + 1e-9
    assert softmax_overlap(sigma, t, 0.0) == pytest.approx(1.0 / t)
    assert softmax_overlap(sigma, t, 1.0) == pytest.approx(s["S2"])
    assert softmax_stats(0.0, t)["S2"] == pytest.approx(1.0 / t)


def test_small_sigma_formula_fails_at_large_sigma():
    exact = softmax_stats(2.0, 65)["S2"]
    assert math.exp(4.0) / 65 > 5 * exact  # e^{σ²}/T overshoots five-fold at σ = 2
    assert softmax_stats(0.1, 65)["S2"] == pytest.approx(math.exp(0.01) / 65, rel=2e-3)
