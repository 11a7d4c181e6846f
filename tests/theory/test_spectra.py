"""Free-probability Jacobian spectra: closed forms, quadrature and Monte Carlo twins."""

from __future__ import annotations

import functools
import json
import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from sigprop.theory import eoc_init, spectra

# ----------------------------------------------------------------------------- helpers


def _network_squared_singular_values(
    act,
    dact,
    sigma_w,
    sigma_b,
    q0,
    depth,
    width,
    rng,
    weights="gaussian",
    density=1.0,
    exact_zeros=False,
):
    """Squared singular values of the input–output Jacobian of a numpy MLP at init.

    ``exact_zeros``: the network has structural zero singular values (ReLU); the SVD
    returns them as round-off, ~N·eps·σ_max, and they are set to 0.
    """
    h = rng.standard_normal(width) * math.sqrt(q0)
    x = act(h)
    jac = np.eye(width)
    for _ in range(depth):
        if weights == "gaussian":
            w = rng.standard_normal((width, width)) * sigma_w / math.sqrt(width)
        else:
            qmat, r = np.linalg.qr(rng.standard_normal((width, width)))
            w = sigma_w * qmat * np.sign(np.diag(r))
        if density < 1.0:
            w = w * (rng.random((width, width)) < density)
        h = w @ x + rng.standard_normal(width) * sigma_b
        jac = dact(h)[:, None] * (w @ jac)
        x = act(h)
    sv = np.linalg.svd(jac, compute_uv=False)
    if exact_zeros:
        sv = np.where(sv < 1e-11 * sv.max(), 0.0, sv)
    return sv**2


def _ks(samples, cdf):
    """Kolmogorov–Smirnov distance between an empirical sample and a CDF with atoms."""
    x = np.sort(samples)
    n = x.size
    f = cdf(x)
    f_left = cdf(np.nextafter(x, -np.inf))
    return max(np.max(np.arange(1, n + 1) / n - f), np.max(f_left - np.arange(n) / n))


def _tanh_d(h):
    e = np.exp(-2.0 * np.abs(h))  # sech²h without overflow
    return 4.0 * e / (1.0 + e) ** 2


@functools.cache
def _legendre_rule(n):
    return np.polynomial.legendre.leggauss(n)


def _gauss_legendre(f, a, b, n=400):
    """∫_a^b f by n-point Gauss–Legendre (f vectorised)."""
    x, w = _legendre_rule(n)
    return 0.5 * (b - a) * np.sum(w * f(a + 0.5 * (b - a) * (x + 1.0)))


# ----------------------------------------------------------------------------- Fuss–Catalan


def test_fuss_catalan_moments_are_the_fuss_catalan_numbers():
    # OEIS A000108 (Catalan, L = 1), A001764 (L = 2), A002293 (L = 3): exact integers.
    assert spectra.fuss_catalan_moments(1, 5).tolist() == [1, 1, 2, 5, 14, 42]
    assert spectra.fuss_catalan_moments(2, 5).tolist() == [1, 1, 3, 12, 55, 273]
    assert spectra.fuss_catalan_moments(3, 4).tolist() == [1, 1, 4, 22, 140]
    assert spectra.fuss_catalan_edge(1) == 4.0
    assert spectra.fuss_catalan_edge(2) == pytest.approx(27 / 4, rel=1e-15)


def test_fuss_catalan_density_is_marchenko_pastur_at_depth_one():
    x = np.linspace(0.01, 3.99, 50)
    mp = np.sqrt((4 - x) / x) / (2 * np.pi)
    # Both are closed forms evaluated in float64: agreement to round-off (1e-12 relative).
    np.testing.assert_allclose(spectra.fuss_catalan_density(1, x), mp, rtol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_fuss_catalan_density_integrates_to_its_moments(depth):
    edge = spectra.fuss_catalan_edge(depth)
    expected = spectra.fuss_catalan_moments(depth, 3)

    # x = edge·sin(πt/2)^{2(L+1)} removes both endpoint singularities (x^{-L/(L+1)} at 0,
    # √(edge − x) at the edge), so Gauss–Legendre in t converges fast.
    def integrand(t, k):
        s = np.sin(0.5 * np.pi * t)
        x = edge * s ** (2 * (depth + 1))
        dxdt = edge * (depth + 1) * np.pi * s ** (2 * depth + 1) * np.cos(0.5 * np.pi * t)
        return x**k * spectra.fuss_catalan_density(depth, x) * dxdt

    for k in range(4):
        val = _gauss_legendre(lambda t, k=k: integrand(t, k), 0.0, 1.0)
        # 400 nodes on a smooth integrand: measured error below 1e-10.
        assert val == pytest.approx(expected[k], rel=1e-9)


@pytest.mark.parametrize("depth", [1, 3, 8])
def test_fuss_catalan_cdf_matches_quadrature_of_the_density(depth):
    edge = spectra.fuss_catalan_edge(depth)
    for t0 in [1e-4 * edge, 0.1 * edge, 0.5 * edge]:
        # Tail mass above t0 with x = t0 + (edge − t0) sin²(πs/2) (smooth at the √ edge).
        def tail(s, t0=t0):
            x = t0 + (edge - t0) * np.sin(0.5 * np.pi * s) ** 2
            dx = (edge - t0) * 0.5 * np.pi * np.sin(np.pi * s)
            return spectra.fuss_catalan_density(depth, x) * dx

        # Independent of the φ-parametrised CDF; 400 nodes: error below 1e-11.
        assert spectra.fuss_catalan_cdf(depth, t0) == pytest.approx(
            1.0 - _gauss_legendre(tail, 0.0, 1.0), abs=1e-9
        )
    assert spectra.fuss_catalan_cdf(depth, 0.0) == 0.0
    assert spectra.fuss_catalan_cdf(depth, edge) == 1.0


@pytest.mark.parametrize("depth", [1, 3])
def test_product_of_ginibre_matrices_follows_fuss_catalan(depth):
    rng = np.random.default_rng(0)
    n = 400
    prod = np.eye(n)
    for _ in range(depth):
        prod = rng.standard_normal((n, n)) / math.sqrt(n) @ prod
    ev = np.linalg.svd(prod, compute_uv=False) ** 2
    # KS of 400 eigenvalues: they are far more rigid than i.i.d. samples, whose 1% critical
    # value would be 0.08; finite-N corrections are O(1/N). Measured 0.007 for both depths.
    assert _ks(ev, lambda t: spectra.fuss_catalan_cdf(depth, t)) < 0.03
    # Moments: MC mean within 2% (the variance of the normalised trace is O(1/N²)).
    assert ev.mean() == pytest.approx(1.0, rel=0.02)


# ----------------------------------------------------------------------------- derivative law


def test_derivative_law_is_exact_for_piecewise_linear_activations():
    relu = spectra.derivative_law("relu", 0.7)
    assert relu.nodes.size == 0
    np.testing.assert_array_equal(relu.atoms, [0.0, 1.0])
    np.testing.assert_allclose(relu.atom_masses, [0.5, 0.5], rtol=1e-15)
    hard = spectra.derivative_law("hard_tanh", 0.5)
    p = math.erf(1.0 / math.sqrt(2 * 0.5))  # P(|h| < 1)
    np.testing.assert_allclose(hard.atom_masses, [1 - p, p], rtol=1e-14)
    assert spectra.derivative_law("linear", 3.0).moment(2) == 1.0


@pytest.mark.parametrize("q", [0.05, 0.2733, 1.0, 4.0])
def test_derivative_law_moments_match_adaptive_quadrature(q):
    law = spectra.derivative_law("tanh", q)
    for k in (1, 2):
        ref, _ = integrate.quad(
            lambda z, k=k: _tanh_d(math.sqrt(q) * z) ** (2 * k) * math.exp(-z * z / 2),
            -np.inf,
            np.inf,
            epsabs=1e-14,
            epsrel=1e-13,
        )
        # Gauss–Legendre on ±8.5√q with ≥ 16 nodes per unit of h: measured ≤ 1e-14.
        assert law.moment(k) == pytest.approx(ref / math.sqrt(2 * math.pi), rel=1e-12)
    assert np.sum(law.node_weights) == pytest.approx(1.0, abs=1e-14)


# ----------------------------------------------------------------------------- moments


def test_jacobian_moments_critical_closed_forms():
    depth = 6
    sq2 = math.sqrt(2.0)
    # Pennington et al. 2017, §2.5: at criticality σ²_{JJᵀ} = L (linear Gaussian),
    # 0 (linear orthogonal), 2L (ReLU Gaussian), L (ReLU orthogonal). Exact arithmetic up to
    # round-off.
    cases = [
        ("linear", 1.0, "gaussian", depth),
        ("linear", 1.0, "orthogonal", 0.0),
        ("relu", sq2, "gaussian", 2 * depth),
        ("relu", sq2, "orthogonal", depth),
    ]
    for act, sw, weights, var in cases:
        m = spectra.jacobian_moments(act, sw, 0.0, depth, weights, q=1.0)
        assert m.m1 == pytest.approx(1.0, rel=1e-13)
        assert m.variance == pytest.approx(var, abs=1e-12)
    # ReLU at the EOC: q* is not unique, the spectrum does not depend on q.
    assert spectra.jacobian_moments("relu", sq2, 0.0, depth).variance == pytest.approx(2 * depth)


def test_jacobian_moments_hard_tanh_closed_form():
    q = 0.4
    p = math.erf(1.0 / math.sqrt(2 * q))
    m = spectra.jacobian_moments("hard_tanh", 1.0 / math.sqrt(p), 0.0, 5, q=q)
    # Critical hard tanh (σ_w² p = 1): σ²_{JJᵀ} = L/p for Gaussian weights (arXiv 1711.04735).
    assert m.m1 == pytest.approx(1.0, rel=1e-13)
    assert m.variance == pytest.approx(5 / p, rel=1e-12)
    m = spectra.jacobian_moments("hard_tanh", 1.0 / math.sqrt(p), 0.0, 5, "orthogonal", q=q)
    assert m.variance == pytest.approx(5 * (1 - p) / p, rel=1e-12)


def test_jacobian_moments_at_the_tanh_eoc_use_q_star_and_chi1():
    pt = eoc_init("tanh", 0.1)
    m = spectra.jacobian_moments("tanh", pt.sigma_w, 0.1, 10)
    assert m.q[0] == pytest.approx(pt.q_star, rel=1e-12)
    # m1 = χ₁^L = 1 on the EOC (χ₁ from meanfield, here through the law's own quadrature).
    assert m.m1 == pytest.approx(1.0, rel=1e-10)
    d = m.to_dict()
    assert d["depth"] == 10 and isinstance(d["chi"], list)


@given(
    sw=st.lists(st.floats(0.3, 2.0), min_size=1, max_size=6),
    q=st.floats(0.01, 3.0),
    weights=st.sampled_from(spectra.WEIGHT_KINDS),
)
def test_layer_moments_are_products_and_sums(sw, q, weights):
    sw = np.asarray(sw)
    qs = q * np.linspace(0.5, 1.5, sw.size)
    m = spectra.jacobian_moments_layers("tanh", sw, qs, weights)
    single = [spectra.jacobian_moments_layers("tanh", [s], [qi], weights) for s, qi in zip(sw, qs)]
    # Free multiplication: means multiply, normalised variances add (exact identities).
    assert m.m1 == pytest.approx(np.prod([s.m1 for s in single]), rel=1e-12)
    assert m.normalized_variance == pytest.approx(
        sum(s.normalized_variance for s in single), rel=1e-12, abs=1e-14
    )
    assert m.variance >= 0.0


def test_masked_linear_network_moments_match_monte_carlo():
    rng = np.random.default_rng(3)
    density, depth, width = 0.5, 4, 400
    m = spectra.jacobian_moments_layers("linear", np.full(depth, math.sqrt(density)), 1.0)
    ev = np.concatenate(
        [
            _network_squared_singular_values(
                lambda h: h, np.ones_like, 1.0, 0.0, 1.0, depth, width, rng, density=density
            )
            for _ in range(2)
        ]
    )
    # Masked layers: σ_w² → ρσ_w² (m1 = ρ^L). MC over 800 eigenvalues: the normalised
    # trace fluctuates by O(1/N); the sparse mask adds a (3/ρ−2)/N = 1% per-layer correction
    # to m2 that the N → ∞ theory omits. 5% on m1, 10% on m2.
    assert ev.mean() == pytest.approx(m.m1, rel=0.05)
    assert np.mean(ev**2) == pytest.approx(m.m2, rel=0.10)


# ----------------------------------------------------------------------------- densities


@pytest.mark.parametrize("depth", [1, 4, 30])
def test_linear_gaussian_density_is_fuss_catalan(depth):
    d = spectra.jacobian_density("linear", 1.0, 0.0, depth, q=1.0)
    edge = spectra.fuss_catalan_edge(depth)
    assert d.edge == pytest.approx(edge, rel=1e-4)  # edge located by 64-point probing
    inner = d.x < 0.999 * edge
    fc = spectra.fuss_catalan_density(depth, d.x[inner])
    # ε = 1e-7·x Poisson smoothing: 1e-7 relative in the bulk, ~√ε close to the edge.
    np.testing.assert_allclose(d.density[inner], fc, rtol=1e-4)
    grid = np.geomspace(1e-20, 1.0, 15) * edge
    # CDF from the grid (log-trapezoid): measured ≤ 5e-4 up to depth 30.
    np.testing.assert_allclose(d.cdf(grid), spectra.fuss_catalan_cdf(depth, grid), atol=1e-3)
    assert d.max_residual < 1e-10


def test_a_very_deep_scaled_chain_is_solved_down_to_its_grid_floor():
    # depth 80 and σ_w = 1.5: the bulk sits at s = σ_w^{2L} ≈ 1e28 and the default grid
    # reaches down to 1e-280 (the continuation path spans ~300 decades; its length in
    # decades once overflowed to inf); the law is Fuss–Catalan scaled by s.
    depth, sw = 80, 1.5
    d = spectra.jacobian_density_layers("linear", np.full(depth, sw), 1.0, n_points=16)
    s = sw ** (2 * depth)
    assert d.edge == pytest.approx(s * spectra.fuss_catalan_edge(depth), rel=1e-4)
    assert np.all(np.isfinite(d.density)) and d.x[0] == pytest.approx(1e-280)
    # (the closed form's sin((L+1)φ)^L underflows far below the bulk at this depth)
    inner = (d.x < 0.999 * d.edge) & (d.x >= 1e-2 * d.edge)
    fc = spectra.fuss_catalan_density(depth, d.x[inner] / s) / s
    np.testing.assert_allclose(d.density[inner], fc, rtol=1e-4)  # as at depth 30 above
    assert d.max_residual < 1e-10


@pytest.mark.parametrize("depth", [2, 10, 30])
def test_cdf_below_the_grid_follows_the_local_power_law(depth):
    # A grid starting well inside the bulk leaves mass M₀ below x[0]: near 0 the
    # Fuss–Catalan density is a power law ρ ∝ x^{−L/(L+1)}, so the CDF there is
    # M₀ (t/x[0])^{1/(L+1)} -- not a straight line, which for deep nets would put the
    # mass orders of magnitude too close to x[0] (KS distances of tenths).
    edge = spectra.fuss_catalan_edge(depth)
    x = np.geomspace(1e-6, 0.999, 300) * edge
    d = spectra.jacobian_density("linear", 1.0, 0.0, depth, q=1.0, x=x)
    # the mass below x[0] is what the grid and the atoms leave of 1, so it carries the
    # grid's quadrature error: measured 4e-4 (L = 2) and less for deeper laws
    assert d.continuous_mass_below() == pytest.approx(
        float(spectra.fuss_catalan_cdf(depth, x[0])), abs=1e-3
    )
    below = np.geomspace(1e-14, 0.5, 12) * x[0]
    exact = spectra.fuss_catalan_cdf(depth, below)
    # the local exponent at x[0] drifts from 1/(L+1) further down: absolute CDF error
    # measured ≤ 4e-4 / 3e-3 / 1.2e-2 (L = 2 / 10 / 30) down to 14 decades below x[0],
    # where a straight line from 0 would be off by the whole mass there (0.26 at L = 30)
    np.testing.assert_allclose(d.cdf(below), exact, atol=0.02)
    assert d.cdf(0.0) == 0.0
    # continuous at x[0]
    assert d.cdf(x[0] * (1 - 1e-12)) == pytest.approx(float(d.cdf(x[0])), rel=1e-9)


def test_scaled_linear_gaussian_density_is_scaled_fuss_catalan():
    sw, depth = 1.3, 3
    scale = sw ** (2 * depth)
    x = np.linspace(0.05, 6.0, 40) * scale
    d = spectra.jacobian_density("linear", sw, 0.0, depth, q=1.0, x=x)
    np.testing.assert_allclose(
        d.density, spectra.fuss_catalan_density(depth, x / scale) / scale, rtol=1e-5
    )


def test_orthogonal_linear_network_is_a_point_mass():
    d = spectra.jacobian_density("linear", 1.1, 0.0, 5, "orthogonal", q=1.0)
    np.testing.assert_allclose(d.atoms, [1.1**10], rtol=1e-14)
    np.testing.assert_allclose(d.atom_masses, [1.0])
    assert d.cdf(1.1**10) == 1.0 and d.cdf(0.99 * 1.1**10) == 0.0


def test_orthogonal_relu_has_atoms_at_zero_and_one():
    # L = 1: JJᵀ = D WWᵀ D = 2D² has atoms at 0 and 2, mass ½ each (Belinschi's rule).
    d = spectra.jacobian_density("relu", math.sqrt(2), 0.0, 1, "orthogonal")
    np.testing.assert_allclose(d.atoms, [0.0, 2.0])
    np.testing.assert_allclose(d.atom_masses, [0.5, 0.5])


@pytest.mark.parametrize(
    ("act", "dact", "sigma_b", "depth", "weights", "tol"),
    [
        # tol: KS for 800 Jacobian eigenvalues (two width-400 networks). Eigenvalues are far
        # more rigid than i.i.d. samples (whose 1% KS critical value would be 0.058);
        # finite-width corrections are O(1/N) in the bulk, and for ReLU the fraction of
        # exact zeros exceeds ½ by O(1/√N) (rank J = the fewest active units in a layer).
        # Measured: 0.013 (tanh Gaussian), 0.013 (tanh orthogonal), 0.025 (ReLU).
        ("tanh", _tanh_d, 0.1, 8, "gaussian", 0.05),
        ("tanh", _tanh_d, 0.1, 8, "orthogonal", 0.05),
        ("relu", lambda h: (h > 0) * 1.0, 0.0, 4, "gaussian", 0.05),
    ],
)
def test_density_matches_monte_carlo_networks(act, dact, sigma_b, depth, weights, tol):
    pt = eoc_init(act, sigma_b)
    d = spectra.jacobian_density(act, pt.sigma_w, sigma_b, depth, weights)
    # Moments of the computed density against the exact ones (grid quadrature ~1e-3).
    mass = 1.0 - np.sum(d.atom_masses)
    assert d.cdf(d.edge) == pytest.approx(1.0, abs=2e-3)
    assert np.trapezoid(d.density * d.x, d.x) == pytest.approx(d.m1, rel=5e-3)
    assert np.trapezoid(d.density * d.x**2, d.x) == pytest.approx(d.m2, rel=5e-3)
    assert mass > 0
    rng = np.random.default_rng(11)
    phi = {"tanh": np.tanh, "relu": lambda h: np.maximum(h, 0.0)}[act]
    q0 = pt.q_star if act == "tanh" else 1.0
    ev = np.concatenate(
        [
            _network_squared_singular_values(
                phi, dact, pt.sigma_w, sigma_b, q0, depth, 400, rng, weights, exact_zeros=mass < 1
            )
            for _ in range(2)
        ]
    )
    assert _ks(ev, d.cdf) < tol


def test_mixed_activations_per_layer():
    acts = ["tanh", "tanh", "linear"]
    m = spectra.jacobian_moments_layers(acts, [1.2, 1.2, 0.8], [0.3, 0.3, 0.3])
    t = spectra.jacobian_moments_layers("tanh", [1.2, 1.2], [0.3, 0.3])
    # A linear Gaussian layer multiplies m1 by σ² and adds 1 to the normalised variance.
    assert m.m1 == pytest.approx(t.m1 * 0.64, rel=1e-13)
    assert m.normalized_variance == pytest.approx(t.normalized_variance + 1.0, rel=1e-13)
    with pytest.raises(ValueError, match="activations"):
        spectra.jacobian_moments_layers(["tanh"], [1.0, 1.0], [0.3, 0.3])


def test_mixed_relu_linear_density_matches_monte_carlo():
    # Two ReLU layers then a linear read-out layer: J = W³ D² W² D¹ W¹.
    rng = np.random.default_rng(12)
    width, sw = 400, math.sqrt(2)
    d = spectra.jacobian_density_layers(["relu", "relu", "linear"], [sw, sw, 1.0], 1.0)
    np.testing.assert_allclose(d.atom_masses, [0.5])
    ev = []
    for _ in range(2):
        jac = np.eye(width)
        h = rng.standard_normal(width)
        for layer in range(3):
            w = rng.standard_normal((width, width)) / math.sqrt(width)
            w = w * (sw if layer < 2 else 1.0)
            h = w @ (np.maximum(h, 0) if layer else h)
            jac = (w @ jac) * ((h > 0)[:, None] if layer < 2 else 1.0)
        sv = np.linalg.svd(jac, compute_uv=False)
        ev.append(np.where(sv < 1e-11 * sv.max(), 0.0, sv) ** 2)
    # Same KS budget as the single-activation Monte Carlo tests (measured 0.021).
    assert _ks(np.concatenate(ev), d.cdf) < 0.05


def test_per_layer_density_reduces_to_equal_layers():
    pt = eoc_init("tanh", 0.1)
    x = np.linspace(0.05, 5.0, 25)
    a = spectra.jacobian_density("tanh", pt.sigma_w, 0.1, 3, x=x)
    b = spectra.jacobian_density_layers(
        "tanh", [pt.sigma_w] * 3, [pt.q_star * (1 + 1e-15)] * 2 + [pt.q_star], x=x
    )
    # Two distinct (numerically equal) laws vs one grouped law: same equations.
    np.testing.assert_allclose(a.density, b.density, rtol=1e-8)


@settings(max_examples=12)  # each example solves the S-transform equations (~0.2 s)
@given(depth=st.integers(1, 6), weights=st.sampled_from(spectra.WEIGHT_KINDS))
def test_density_is_nonnegative_and_cdf_monotone(depth, weights):
    x = np.linspace(0.01, 8.0, 30)
    d = spectra.jacobian_density("relu", math.sqrt(2), 0.0, depth, weights, x=x)
    assert np.all(d.density >= 0)
    c = d.cdf(np.linspace(0.0, 10.0, 50))
    assert np.all(np.diff(c) >= -1e-15) and c[0] >= 0.5 - 1e-12 and c[-1] <= 1.0


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="depth"):
        spectra.fuss_catalan_moments(0, 3)
    with pytest.raises(ValueError, match="weights"):
        spectra.jacobian_moments("tanh", 1.0, 0.1, 3, "unitary", q=1.0)
    with pytest.raises(ValueError, match="q"):
        spectra.derivative_law("tanh", -1.0)
    with pytest.raises(ValueError, match="layers"):
        spectra.jacobian_moments_layers("tanh", [1.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="grid"):
        spectra.jacobian_density("linear", 1.0, 0.0, 2, q=1.0, x=[0.0, 1.0])
    with pytest.raises(ValueError, match="sigma_w"):
        spectra.jacobian_moments_layers("tanh", [np.nan], [1.0])


def test_results_are_json_serialisable():
    d = spectra.jacobian_density("relu", math.sqrt(2), 0.0, 2, n_points=16)
    json.dumps(d.to_dict(), allow_nan=False)
    json.dumps(spectra.derivative_law("tanh", 0.5, n_nodes=8).to_dict(), allow_nan=False)
    json.dumps(spectra.jacobian_moments("tanh", 1.2, 0.1, 4).to_dict(), allow_nan=False)


def test_moments_past_float64_range_stay_consistent():
    # Deep chaotic tanh: χ₁^L ≈ 1.86^2000 overflows float64. m1, m2 and the variance are then
    # honestly inf (no inf − inf = NaN, no RuntimeWarning under filterwarnings=error), while
    # log m1 and the normalised variance stay finite and exact.
    deep = spectra.jacobian_moments("tanh", 3.0, 0.0, 2000)
    one = spectra.jacobian_moments("tanh", 3.0, 0.0, 1)
    assert math.isinf(deep.m1) and math.isinf(deep.m2) and math.isinf(deep.variance)
    # sums of 2000 equal float64 terms: a few hundred ulp at most
    assert deep.log_m1 == pytest.approx(2000 * math.log(one.m1), rel=1e-12)
    assert deep.normalized_variance == pytest.approx(2000 * one.normalized_variance, rel=1e-12)
    d = deep.to_dict()
    assert d["m1"] is None and d["variance"] is None  # strict JSON: non-finite → null
    assert d["log_m1"] == pytest.approx(deep.log_m1, rel=0)
    json.dumps(d, allow_nan=False)
    # Deep ordered network: m1 underflows to 0 and so does the variance (not NaN).
    small = spectra.jacobian_moments("tanh", 0.5, 0.0, 2000)
    assert small.m1 == 0.0 and small.variance == 0.0 and math.isfinite(small.log_m1)


@given(sw=st.floats(0.3, 2.0), q=st.floats(0.01, 3.0), depth=st.integers(1, 20))
def test_variance_equals_m2_minus_m1_squared(sw, q, depth):
    m = spectra.jacobian_moments_layers("tanh", [sw] * depth, [q] * depth)
    # variance is computed as m1²·nvar; m2 − m1² is the definition (eq. 17). They agree up
    # to the cancellation in m2 − m1², a few ulp of m2 relative to the variance.
    assert m.variance == pytest.approx(m.m2 - m.m1**2, rel=1e-9, abs=1e-12 * m.m2)


def test_spectra_and_sparse_do_not_import_torch():
    import subprocess

    code = (
        "import sigprop.theory.spectra, sigprop.theory.sparse, sys; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fuss_catalan_parametrisation_inverts_to_round_off():
    x = np.array([1e-12, 0.3, 2.0, 6.7])
    phi = spectra._fc_phi_of_x(x, 2)
    # Near x → 0, φ → π/3 where x ∝ (π/3 − φ)³: one ulp of φ (2e-16) is ~3e-11 of x.
    np.testing.assert_allclose(spectra._fc_u(phi, 2), x, rtol=1e-10)


def test_derivative_law_at_huge_variance():
    """A constant piece is an atom at any q without a √q-sized rule (ReLU at q = 1e12 was
    a 10⁵-node Legendre eigenproblem); a smooth activation keeps its fixed-size rule (GELU
    at q = 1e6 was refused past a 2048-node cap, which a q-independent rule cannot reach)."""
    import time

    from sigprop.theory.spectra.derivative_law import derivative_law

    t = time.perf_counter()
    law = derivative_law("relu", 1e12)
    assert time.perf_counter() - t < 1.0
    assert law.moment(1) == pytest.approx(0.5) and law.zero_mass == pytest.approx(0.5)
    gelu = derivative_law("gelu", 1e6)
    assert gelu.nodes.size < 400  # positive-weight nodes of a 390-node rule
    # φ′ → 1 (h ≫ 1), 0 (h ≪ −1): μ₁ = ½ + O(1/√q)
    assert gelu.moment(1) == pytest.approx(0.5, abs=1e-3)
