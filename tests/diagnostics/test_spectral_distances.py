"""W₁/KS between measured squared singular values and a predicted law, at round-off level."""

import numpy as np
import pytest

from sigprop.diagnostics.compare import resolution_floor, spectral_distances


def _log_uniform_cdf(lo_dec, hi_dec):
    def cdf(t):
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(divide="ignore"):
            u = (np.log10(np.where(t > 0, t, 1e-300)) - lo_dec) / (hi_dec - lo_dec)
        return np.clip(np.where(t > 0, u, 0.0), 0.0, 1.0)

    return cdf


def test_values_spanning_forty_decades_without_an_atom_are_not_zeroed():
    # A deep tanh network's squared singular values span tens of decades with no atom at
    # 0. Exact quantiles of a log-uniform law on [1e-40, 1]: KS must be the quantile
    # offset 1/(2n), not the mass below some fixed relative threshold (0.7 below 1e-12).
    n = 1000
    samples = 10.0 ** (-40 + 40 * (np.arange(n) + 0.5) / n)
    w1, ks = spectral_distances(samples, _log_uniform_cdf(-40, 0))
    assert ks <= 1.0 / n + 1e-12
    assert w1 < 1e-3


@pytest.mark.parametrize("dtype, round_off", [(np.float64, 1e-33), (np.float32, 1e-15)])
def test_round_off_zeros_count_for_an_atom_at_zero(dtype, round_off):
    # ReLU-like: mass 1/2 at 0 (computed as round-off of the dtype's SVD, ≈ (ε σ_max)²)
    # and 1/2 uniform on (0, 1]. Both halves are matched to 1/n.
    n = 500
    rng = np.random.default_rng(0)
    zeros = round_off * rng.random(n)
    bulk = (np.arange(n) + 0.5) / n
    samples = np.concatenate([zeros, bulk]).astype(dtype)

    def cdf(t):
        t = np.asarray(t, dtype=np.float64)
        return np.where(t >= 0, 0.5 + 0.5 * np.clip(t, 0, 1), 0.0)

    assert resolution_floor(samples) > round_off
    _, ks = spectral_distances(samples, cdf)
    assert ks <= 1.0 / (2 * n) + 1e-6  # float32 rounding of the bulk quantiles


def test_a_wrong_law_is_still_detected():
    n = 1000
    samples = 10.0 ** (-40 + 40 * (np.arange(n) + 0.5) / n)
    _, ks = spectral_distances(samples, _log_uniform_cdf(-30, 0))
    # |F_true − F_wrong| = −d/120 at t = 10^d grows downwards; the comparison stops at the
    # resolution floor t₀ = (nε)² ≈ 5e-26, where it is largest
    d0 = np.log10(resolution_floor(samples))
    assert ks == pytest.approx(-d0 / 120, abs=2.0 / n)
    assert ks > 0.2


def test_a_float32_spectrum_stored_as_float64_uses_float32_round_off():
    # JacobianSpectrum stores singular values as float64 whatever precision computed them:
    # its `dtype` sets ε. Two inputs of a width-100 float32 Jacobian with a ReLU-like atom:
    # round-off zeros of order (ε₃₂ σ_max)² ≈ 1e-14 must count as zeros.
    rng = np.random.default_rng(1)
    zeros = 1e-14 * rng.random((2, 50))
    bulk = np.tile((np.arange(50) + 0.5) / 50, (2, 1))
    samples = np.concatenate([zeros, bulk], axis=1)  # float64, shape (2, 100)

    def cdf(t):
        t = np.asarray(t, dtype=np.float64)
        return np.where(t >= 0, 0.5 + 0.5 * np.clip(t, 0, 1), 0.0)

    assert resolution_floor(samples, dtype="float32") == pytest.approx(
        (100 * float(np.finfo(np.float32).eps)) ** 2 * samples.max()  # N = 100, not 200
    )
    assert resolution_floor(samples, dtype="float32") > zeros.max()
    _, ks = spectral_distances(samples, cdf, dtype="float32")
    assert ks <= 1.0 / 100 + 1e-12
    # read as a float64 computation the same values would be a bulk, not an atom
    assert resolution_floor(samples) < zeros.min()


def test_signed_samples_are_compared_everywhere():
    # not squared singular values: no floor, and the jump at the smallest sample counts
    from scipy.stats import norm

    _, ks = spectral_distances(np.array([-1.0, 5.0]), norm(loc=-3.0).cdf)
    assert ks == pytest.approx(norm.cdf(2.0), abs=1e-12)  # F(−1) = 0.977, F_emp(−1⁻) = 0


def test_resolution_floor_and_bad_input():
    assert resolution_floor(np.array([0.0, 0.0])) == 0.0
    assert resolution_floor(np.ones(10), zero_tol=1e-3) == pytest.approx(1e-3)
    assert resolution_floor(np.ones(10, dtype=np.float32)) == pytest.approx(
        (10 * float(np.finfo(np.float32).eps)) ** 2
    )
    assert resolution_floor(np.ones((3, 10)), dtype="torch.float64") == pytest.approx(
        (10 * float(np.finfo(np.float64).eps)) ** 2
    )
    with pytest.raises(ValueError, match="finite"):
        spectral_distances(np.array([np.nan]), _log_uniform_cdf(-1, 0))
    with pytest.raises(ValueError, match="callable"):
        spectral_distances(np.ones(3), None)
