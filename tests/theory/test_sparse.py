"""Theory of pruned layers against closed forms, quadrature and numpy simulations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.fft
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, special

from sigprop.theory import eoc_init, meanfield, sparse

# ----------------------------------------------------------------------------- masks


def test_magnitude_kept_variance_reference_value():
    # REFERENCES §4: κ(0.1) = 0.439; t = Φ⁻¹(0.95) = 1.6448536…, κ = 0.1 + 2tφ(t).
    assert sparse.magnitude_kept_variance(0.1) == pytest.approx(0.4392860643, abs=1e-9)
    assert sparse.magnitude_kept_variance(1.0) == 1.0
    assert sparse.magnitude_kept_variance(0.0) == 0.0


@given(rho=st.floats(1e-6, 1.0))
def test_magnitude_kept_variance_matches_quadrature(rho):
    t = special.ndtri(1 - rho / 2)
    tail, _ = integrate.quad(lambda z: z * z * math.exp(-z * z / 2), t, np.inf, epsrel=1e-13)
    # Adaptive quadrature of 2∫_t^∞ z²φ(z)dz; both sides are accurate to ~1e-13.
    expected = 2 * tail / math.sqrt(2 * math.pi)
    assert sparse.magnitude_kept_variance(rho) == pytest.approx(expected, rel=1e-10, abs=1e-15)


@given(a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_magnitude_kept_variance_is_monotone_and_above_density(a, b):
    lo, hi = min(a, b), max(a, b)
    k_lo, k_hi = sparse.magnitude_kept_variance([lo, hi])
    assert k_lo <= k_hi + 1e-15  # monotone in ρ
    assert lo - 1e-15 <= k_lo <= 1.0  # keeping the largest weights keeps more than ρ


def test_magnitude_kept_variance_matches_simulation():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(2_000_000)
    for rho in (0.5, 0.1, 0.01):
        kept = np.sort(np.abs(w))[-int(rho * w.size) :]
        # MC: the kept second moment's standard error is < 1e-3 at 2e6 samples.
        assert np.sum(kept**2) / w.size == pytest.approx(
            sparse.magnitude_kept_variance(rho), abs=2e-3
        )


@given(rho=st.floats(1e-4, 1.0), mask=st.sampled_from(sparse.MASKS), sw=st.floats(0.1, 3.0))
def test_rescaling_restores_the_dense_second_moment(rho, mask, sw):
    eff = sparse.effective_sigma_w(sw, rho, mask)
    # Exact identity: the rescale factor undoes the mask's variance factor.
    assert eff * sparse.rescale_factor(rho, mask) == pytest.approx(sw, rel=1e-12)
    assert eff <= sw * (1 + 1e-15)


def test_rescale_factor_of_an_empty_unit_is_infinite_and_full_mask_is_one():
    np.testing.assert_array_equal(sparse.rescale_factor([0.0, 1.0], "random"), [np.inf, 1.0])
    assert sparse.rescale_factor(1.0, "magnitude") == 1.0


def test_rescaled_rows_have_the_dense_second_moment_in_simulation():
    rng = np.random.default_rng(1)
    fan_in, units, sw = 500, 400, 1.3
    w = rng.standard_normal((units, fan_in)) * sw / math.sqrt(fan_in)
    for rho in (0.3, 0.05):
        rand = rng.random(w.shape) < rho
        # Per unit: the factor uses that unit's own density (kept count / fan_in).
        unit_rho = rand.mean(axis=1, keepdims=True)
        w_r = w * rand * sparse.rescale_factor(unit_rho, "random")
        # Σ_j W̃_ij² over 400 units: relative MC error ≈ √(2/(ρ·fan_in·400)) < 1.5%.
        assert np.mean(np.sum(w_r**2, axis=1)) == pytest.approx(sw**2, rel=0.03)
        thr = np.quantile(np.abs(w), 1 - rho)
        mag = np.abs(w) > thr
        w_m = w * mag * sparse.rescale_factor(rho, "magnitude")
        assert np.mean(np.sum(w_m**2, axis=1)) == pytest.approx(sw**2, rel=0.03)


# ----------------------------------------------------------------------------- propagation


def test_pruned_relu_network_loses_variance_geometrically():
    rho, depth = 0.3, 6
    p = sparse.pruned_propagation("relu", math.sqrt(2), 0.0, np.full(depth, rho), 1.0)
    # Exact for ReLU at σ_w² = 2: q^1 = ρσ_w² q0, then q^{l+1} = ρ q^l (arXiv 2002.08797 §3).
    np.testing.assert_allclose(p.q[1:], 2 * rho * rho ** np.arange(depth), rtol=1e-13)
    np.testing.assert_allclose(p.chi, rho, rtol=1e-13)
    r = sparse.pruned_propagation(
        "relu", math.sqrt(2), 0.0, np.full(depth, rho), 1.0, rescaled=True
    )
    np.testing.assert_allclose(r.q[1:], 2.0, rtol=1e-13)
    np.testing.assert_allclose(r.gradient_ratio, 1.0, rtol=1e-13)


def test_gradient_ratio_is_chi_power_at_the_fixed_point():
    pt = eoc_init("tanh", 0.3)
    sw = pt.sigma_w * 0.9  # ordered phase
    qs = float(meanfield.q_star("tanh", sw, 0.3))
    chi = float(meanfield.chi1("tanh", sw, 0.3))
    depth = 7
    # Input on the fixed point: q^1 = σ_w² q0 + σ_b² = q*.
    p = sparse.pruned_propagation("tanh", sw, 0.3, np.ones(depth), (qs - 0.09) / sw**2)
    np.testing.assert_allclose(p.q[1:], qs, rtol=1e-10)
    np.testing.assert_allclose(p.gradient_ratio, chi ** np.arange(depth - 1, -1, -1), rtol=1e-9)


@pytest.mark.parametrize("mask", sparse.MASKS)
def test_pruned_tanh_network_variances_match_simulation(mask):
    rng = np.random.default_rng(2)
    pt = eoc_init("tanh", 0.1)
    width, depth, batch, rho, nets = 400, 10, 32, 0.2, 4
    qs = np.zeros(depth)
    for _ in range(nets):
        x = rng.standard_normal((batch, width))
        for l in range(depth):
            w = rng.standard_normal((width, width)) * pt.sigma_w / math.sqrt(width)
            if mask == "random":
                w = w * (rng.random(w.shape) < rho)
            else:
                w = w * (np.abs(w) > np.quantile(np.abs(w), 1 - rho))
            h = x @ w.T + rng.standard_normal(width) * 0.1
            qs[l] += np.mean(h**2) / nets
            x = np.tanh(h)
    pred = sparse.pruned_propagation("tanh", pt.sigma_w, 0.1, np.full(depth, rho), 1.0, mask=mask)
    # Averaged over 4 networks: the per-network draw of the biases (σ_b² dominates q once
    # the mask has shrunk it: sd √(2/400) = 7% of that part per network) and of the kept
    # weights leave a few % error; measured ≤ 3.7%. Tolerance 6%. Without the mask factor
    # the prediction would be off by far more (ρ = 0.2 or κ(0.2) = 0.65 per layer).
    np.testing.assert_allclose(qs, pred.q[1:], rtol=0.06)


def test_residual_relu_q_map_closed_form_and_stable_resnet_bound():
    depth, sw = 50, math.sqrt(2)
    q = sparse.residual_q_map("relu", sw, 0.0, 1.3, depth)
    # ReLU closed form (REFERENCES §2) against the general map with meanfield.q_map.
    np.testing.assert_allclose(q, sparse.relu_residual_q(1.3, sw, depth), rtol=1e-12)
    assert q[-1] <= math.exp(sw**2 / 2) * 1.3  # (1 + x/L)^L ≤ e^x: bounded Stable ResNet
    std = sparse.relu_residual_q(1.0, sw, depth, branch_scale=1.0)
    assert std[-1] == pytest.approx(2.0**depth, rel=1e-12)


def test_residual_tanh_q_map_matches_simulation():
    rng = np.random.default_rng(4)
    width, depth, batch, sw, sb = 400, 16, 32, 1.5, 0.2
    lam = 1 / math.sqrt(depth)
    y = rng.standard_normal((batch, width)) * math.sqrt(0.5)
    qs = [np.mean(y**2)]
    for _ in range(depth):
        w = rng.standard_normal((width, width)) * sw / math.sqrt(width)
        y = y + lam * (np.tanh(y) @ w.T + rng.standard_normal(width) * sb)
        qs.append(np.mean(y**2))
    pred = sparse.residual_q_map("tanh", sw, sb, qs[0], depth)
    # 32 × 400 samples per layer: ~1.5% sampling error; measured ≤ 2%.
    np.testing.assert_allclose(qs, pred, rtol=0.05)


# ----------------------------------------------------------------------------- collapse


def test_product_normal_sf_matches_bessel_quadrature_and_simulation():
    for t in (0.01, 0.5, 1.9, 2.1, 6.0, 40.0):
        ref, _ = integrate.quad(special.k0, t, np.inf, epsabs=0, epsrel=1e-13, limit=200)
        # Closed form / Gauss–Laguerre vs adaptive quadrature: relative 1e-11 down to 1e-18.
        assert sparse.product_normal_sf(t) == pytest.approx(2 * ref / math.pi, rel=1e-11)
    rng = np.random.default_rng(5)
    z = np.abs(rng.standard_normal(10**6) * rng.standard_normal(10**6))
    for t in (0.1, 1.0, 3.0):
        # Binomial standard error ≤ 5e-4 at 1e6 samples.
        assert np.mean(z > t) == pytest.approx(sparse.product_normal_sf(t), abs=2e-3)


@given(p=st.floats(1e-250, 1.0, exclude_max=True))
def test_product_normal_isf_inverts_sf(p):
    t = sparse._score_isf("sensitivity", np.array([p]))
    # Brent on log sf: relative accuracy of the probability ~1e-12.
    assert sparse.product_normal_sf(t)[0] == pytest.approx(p, rel=1e-10)


def _global_top_k(scores, density):
    flat = np.concatenate([s.ravel() for s in scores])
    k = int(round(density * flat.size))
    thr = np.partition(flat, flat.size - k)[flat.size - k]
    return [np.count_nonzero(s >= thr) for s in scores]


@pytest.mark.parametrize("score", sparse.SCORES)
def test_global_pruning_kept_fractions_match_simulation(score):
    rng = np.random.default_rng(6)
    fan_in = np.array([784, 300, 100, 30])
    numel = np.array([30000, 20000, 10000, 3000])
    a = sparse.magnitude_score_scales(fan_in, 1.2)
    if score == "sensitivity":
        a = a * np.array([0.5, 1.0, 2.0, 4.0])  # an ordered-like gradient profile
    pred = sparse.global_pruning(a, numel, 0.05, score)
    assert np.sum(pred.expected_kept) == pytest.approx(0.05 * numel.sum(), rel=1e-10)
    np.testing.assert_array_equal(
        sparse.kept_fraction(a, pred.threshold, score), pred.kept_fraction
    )
    if score == "magnitude":  # REFERENCES §4 form: erfc(t√(n_l/2)/σ_w)
        np.testing.assert_allclose(
            pred.kept_fraction,
            special.erfc(pred.threshold * np.sqrt(fan_in / 2) / 1.2),
            rtol=1e-12,
        )
    draw = {
        "magnitude": lambda n: np.abs(rng.standard_normal(n)),
        "sensitivity": lambda n: np.abs(rng.standard_normal(n) * rng.standard_normal(n)),
    }[score]
    kept = _global_top_k([ai * draw(int(m)) for ai, m in zip(a, numel)], 0.05)
    # Counts are ~binomial around the expectation (the realised threshold adds a
    # correlated O(1/√total) shift): 5 sd + 3 is a 1e-6-level false-alarm bound.
    sd = np.sqrt(pred.expected_kept)
    assert np.all(np.abs(kept - pred.expected_kept) <= 5 * sd + 3)


def test_magnitude_collapse_largest_fan_in_first_and_at_the_predicted_density():
    fan_in = np.array([400, 200, 100])
    numel = np.array([4000, 4000, 4000])
    a = sparse.magnitude_score_scales(fan_in)
    c = sparse.first_collapse(a, numel)
    assert c.layer == 0 and c.order.tolist() == [0, 1, 2]
    # Median collapse: at min_kept = log 2 the layer is empty with probability ½ (Poisson).
    med = sparse.first_collapse(a, numel, min_kept=math.log(2))
    rng = np.random.default_rng(7)
    empty_at = {0.5: 0, 1.0: 0, 2.0: 0}
    n_seeds = 60
    for _ in range(n_seeds):
        scores = [ai * np.abs(rng.standard_normal(int(m))) for ai, m in zip(a, numel)]
        for f in empty_at:
            empty_at[f] += _global_top_k(scores, f * med.density)[0] == 0
    # At half / twice the median collapse density the predicted expected counts are 0.07 /
    # 5.8, so the layer is empty with P ≈ 0.93 / 0.003 (Poisson); at the median about half:
    # the binomial sd of a frequency over 60 seeds is ≤ 0.065, so these are > 3 sd bands.
    assert empty_at[0.5] / n_seeds >= 0.75
    assert empty_at[2.0] / n_seeds <= 0.1
    assert 0.25 <= empty_at[1.0] / n_seeds <= 0.75


def test_sensitivity_collapse_order_by_phase():
    depth, numel = 8, np.full(8, 10000)
    for chi, first in ((0.8, 0), (1.25, depth - 1)):
        a = chi ** ((depth - 1 - np.arange(depth)) / 2)
        c = sparse.first_collapse(a, numel, "sensitivity")
        # Ordered phase: the first layer empties first; chaotic: the last (Hayou et al. §3).
        assert c.layer == first
        assert c.order.tolist() == (list(range(depth)) if first == 0 else list(range(depth))[::-1])
    # On the EOC all layers are alike and collapse only at ≈ one weight per layer.
    c = sparse.first_collapse(np.ones(depth), numel, "sensitivity")
    assert c.density == pytest.approx(1 / 10000, rel=1e-9)


def _numpy_snip_scores(sw, sb, width, depth, batch, rng):
    """|g ⊙ W| of a tanh MLP with squared loss on random targets (manual backprop)."""
    ws = [rng.standard_normal((width, width)) * sw / math.sqrt(width) for _ in range(depth)]
    bs = [rng.standard_normal(width) * sb for _ in range(depth)]
    xs = [rng.standard_normal((batch, width))]
    for w, b in zip(ws, bs):
        xs.append(np.tanh(xs[-1] @ w.T + b))
    delta = (xs[-1] - rng.standard_normal((batch, width))) * (1 - xs[-1] ** 2)
    scores = [None] * depth
    for l in range(depth - 1, -1, -1):
        scores[l] = np.abs((delta.T @ xs[l]) * ws[l])
        if l:
            delta = (delta @ ws[l]) * (1 - xs[l] ** 2)
    return scores


@pytest.mark.parametrize("sw", [0.9, 1.2, 2.5])  # ordered, ≈ EOC (χ₁ = 1.003), chaotic
def test_snip_score_model_predicts_real_snip_pruning(sw):
    width, depth, batch, sb, dens = 200, 8, 32, 0.1, 0.05
    rng = np.random.default_rng(8)
    scores = _numpy_snip_scores(sw, sb, width, depth, batch, rng)
    kept = np.array(_global_top_k(scores, dens)) / width**2
    prop = sparse.pruned_propagation("tanh", sw, sb, np.ones(depth), 1.0)
    a = sparse.snip_score_scales(
        np.full(depth, sw**2 / width),
        np.r_[1.0, (prop.q[2:] - sb**2) / sw**2],  # E x² of the data, then E tanh(h)²
        sw**2 * prop.mu1[:-1],
    )
    pred = sparse.global_pruning(a, np.full(depth, width**2), dens, "sensitivity").kept_fraction
    # The model (independent Gaussian gradient, incoherent batch) is approximate: measured
    # kept fractions within a factor 1.6 of the prediction wherever ≥ 50 weights are kept.
    ok = pred * width**2 >= 50
    assert np.all(np.abs(np.log(kept[ok] / pred[ok])) < math.log(2.0))
    if sw > 2:  # chaotic: the last layer is pruned hardest, in both
        assert np.argmin(kept) == np.argmin(pred) == depth - 1
    if sw < 1:  # ordered: early layers are pruned harder than late ones, in both
        assert kept[: depth // 2].mean() < kept[depth // 2 :].mean()
        assert pred[: depth // 2].mean() < pred[depth // 2 :].mean()


# ----------------------------------------------------------------------------- DCT offset


@given(n_out=st.integers(1, 48), n_in=st.integers(1, 48))
def test_dct_offset_is_a_partial_isometry_of_full_rank(n_out, n_in):
    d = sparse.dct_matrix(n_out, n_in)
    sv = np.linalg.svd(d, compute_uv=False)
    # Orthonormal rows/columns of the DCT-II: every singular value 1 to round-off.
    np.testing.assert_allclose(sv, 1.0, atol=1e-12)
    assert sv.size == min(n_out, n_in)


@given(n_out=st.integers(1, 40), n_in=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_dct_offset_matches_scipy_dct(n_out, n_in, seed):
    x = np.random.default_rng(seed).standard_normal(n_in)
    big = max(n_out, n_in)
    ref = scipy.fft.dct(np.pad(x, (0, big - n_in)), type=2, norm="ortho")[:n_out]
    # Independent oracle (FFT-based DCT-II of the zero-padded input, truncated): 1e-12.
    np.testing.assert_allclose(sparse.dct_matrix(n_out, n_in) @ x, ref, atol=1e-12)


@given(
    shape=st.tuples(st.integers(2, 30), st.integers(2, 30)),
    ratio=st.floats(0.0, 0.99),
    density=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_dct_plus_sparse_singular_values_obey_weyl(shape, ratio, density, seed):
    rng = np.random.default_rng(seed)
    alpha = 1.7
    s = rng.standard_normal(shape) * (rng.random(shape) < density)
    norm = np.linalg.norm(s, 2)
    if norm > 0:
        s = s * (ratio * alpha / norm)
    lo, hi = sparse.weyl_singular_value_bounds(alpha, np.linalg.norm(s, 2))
    sv = np.linalg.svd(alpha * sparse.dct_matrix(*shape) + s, compute_uv=False)
    assert sv.size == min(shape)
    assert np.all(sv >= lo - 1e-12) and np.all(sv <= hi + 1e-12)
    assert np.linalg.matrix_rank(alpha * sparse.dct_matrix(*shape) + s) == min(shape)


@pytest.mark.parametrize("shape", [(400, 400), (200, 800)])
def test_sparse_spectral_norm_matches_simulation(shape):
    rng = np.random.default_rng(9)
    for rho in (0.3, 0.03, 0.005, 5e-4):
        pred = sparse.sparse_spectral_norm(*shape, rho, std=0.7)
        emp = np.mean(
            [
                np.linalg.norm(0.7 * rng.standard_normal(shape) * (rng.random(shape) < rho), 2)
                for _ in range(3)
            ]
        )
        # Measured ratio empirical/prediction: 0.99–1.03 when one term dominates, up to
        # 1.17 in the dense–sparse crossover (ρ·n ≈ 4–12), where max(…) underestimates.
        assert 0.93 <= emp / pred.prediction <= 1.25
        assert emp >= 0.97 * max(pred.max_row_norm, pred.max_col_norm)  # always a lower bound
    assert sparse.sparse_spectral_norm(*shape, 0.3).regime == "dense"
    assert sparse.sparse_spectral_norm(*shape, 5e-4).regime == "sparse"


@pytest.mark.parametrize("shape", [(300, 300), (200, 500)])
def test_sparse_rank_matches_simulation(shape):
    rng = np.random.default_rng(10)
    for rho in (0.05, 0.005, 0.002, 5e-4):
        pred = sparse.sparse_rank(*shape, rho)
        ranks = [
            np.linalg.matrix_rank(rng.standard_normal(shape) * (rng.random(shape) < rho))
            for _ in range(4)
        ]
        # Asymptotic formula vs finite n: measured |difference| ≤ 3% of min(shape) beyond
        # the MC spread (sd up to 8 ranks at these sizes); tolerance 4% + 3 sd of the mean.
        sd = max(np.std(ranks), 1.0) / math.sqrt(len(ranks))
        assert abs(np.mean(ranks) - pred.expected_rank) <= 0.04 * min(shape) + 3 * sd
        assert pred.expected_rank <= pred.bound + 1e-9
        assert pred.full_rank == min(shape)


@given(n_out=st.integers(10, 2000), n_in=st.integers(10, 2000), rho=st.floats(1e-5, 1.0))
def test_sparse_rank_is_transpose_symmetric(n_out, n_in, rho):
    a = sparse.sparse_rank(n_out, n_in, rho)
    b = sparse.sparse_rank(n_in, n_out, rho)
    # rank(S) = rank(Sᵀ): the formula in the other orientation must agree (grid + bounded
    # search maximise Φ to ~1e-12).
    assert a.expected_rank == pytest.approx(b.expected_rank, rel=1e-6, abs=1e-6)
    assert 0.0 <= a.expected_rank <= min(n_out, n_in)


def test_rank_collapse_of_sparse_part_vs_full_rank_of_dct_plus_sparse():
    n = 256
    ranks = [sparse.sparse_rank(n, n, rho).expected_rank for rho in (1e-1, 1e-2, 1e-3, 1e-4)]
    # S alone loses rank as density falls (about ρn² for ρn ≪ 1), D + S never does.
    assert ranks[0] == pytest.approx(n, rel=1e-3)
    assert ranks[-1] == pytest.approx(1e-4 * n * n, rel=0.05)
    assert all(x > y for x, y in zip(ranks, ranks[1:]))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [True, np.bool_(True), "0.5", 0.5 + 0j, float("nan"), -0.1, 1.5])
def test_density_rule_matches_the_torch_side(bad):
    # same rule as sigprop.nn.check_density: real numbers (no bools, no strings) in (0, 1]
    # (effective_sigma_w also accepts 0: [0, 1])
    with pytest.raises(ValueError, match="density must"):
        sparse.effective_sigma_w(1.0, bad)


def test_density_accepts_numpy_and_integer_reals():
    # np.float32(0.5) is exactly 0.5; the integer 1 is density 1 (nothing pruned)
    assert sparse.effective_sigma_w(2.0, np.float32(0.5)) == pytest.approx(
        math.sqrt(2.0), rel=1e-15
    )
    assert sparse.effective_sigma_w(2.0, 1) == pytest.approx(2.0, rel=1e-15)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="density"):
        sparse.effective_sigma_w(1.0, 1.5)
    with pytest.raises(ValueError, match="density"):
        sparse.pruned_propagation("tanh", 1.0, 0.1, [0.5, 0.0], 1.0)
    with pytest.raises(ValueError, match="mask"):
        sparse.mask_variance_factor(0.5, "snip")
    with pytest.raises(ValueError, match="score"):
        sparse.global_pruning([1.0], [10], 0.5, score="grasp")
    with pytest.raises(ValueError, match="numel"):
        sparse.global_pruning([1.0, 1.0], [10, 2.5], 0.5)
    with pytest.raises(ValueError, match="backward_gain"):
        sparse.snip_score_scales([1.0, 1.0], 1.0, [1.0, 1.0])
    with pytest.raises(ValueError, match="n_in"):
        sparse.dct_matrix(3, 0)
    with pytest.raises(ValueError, match="depth"):
        sparse.residual_q_map("relu", 1.0, 0.0, 1.0, 0)
    with pytest.raises(ValueError, match="min_kept"):
        sparse.first_collapse([1.0, 2.0], [10, 10], min_kept=20)


def test_results_are_json_serialisable():
    a = sparse.magnitude_score_scales([100, 10])
    for result in (
        sparse.global_pruning(a, [1000, 100], 0.1),
        sparse.first_collapse(a, [1000, 100]),
        sparse.sparse_rank(50, 60, 0.01),
        sparse.sparse_spectral_norm(50, 60, 0.01),
        sparse.pruned_propagation("relu", 1.4, 0.0, [0.5, 0.5], 1.0),
    ):
        json.dumps(result.to_dict(), allow_nan=False)


# ----------------------------------------------------------------------------- SNIP batch coherence


def _snip_coherence_net(seed, width=400, depth=6, k=4, m=8, sw=1.3, sb=0.2, sw_out=0.2):
    """Measured ρ_l of a numpy tanh MLP on a class-structured batch (cross entropy, manual
    backprop), and the mean-field prediction from its q^l and same/different-class c^l."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), m)
    x = 0.6 * rng.standard_normal((k, width))[y] + 0.8 * rng.standard_normal((k * m, width))
    ws = [rng.standard_normal((width, width)) * sw / math.sqrt(width) for _ in range(depth - 1)]
    ws.append(rng.standard_normal((k, width)) * sw_out / math.sqrt(width))
    bs = [rng.standard_normal(w.shape[0]) * sb for w in ws]
    ins = [x]
    for w, b in zip(ws[:-1], bs[:-1]):
        ins.append(np.tanh(ins[-1] @ w.T + b))
    z = ins[-1] @ ws[-1].T + bs[-1]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = (p - np.eye(k)[y]) / y.size
    off = ~np.eye(y.size, dtype=bool)
    measured = np.empty(depth)
    for l in range(depth - 1, -1, -1):
        kx = ins[l] @ ins[l].T / width
        kd = delta @ delta.T / delta.shape[1]
        measured[l] = (kx * kd)[off].mean() / (np.diag(kx).mean() * np.diag(kd).mean())
        if l:
            delta = (delta @ ws[l]) * (1 - ins[l] ** 2)
    c0 = sparse.class_cosines(x, y)
    q0 = float(np.mean(x**2))
    q, c = [], ([], [])
    for l in range(depth):  # the q- and c-maps, layer by layer (last layer: σ_w,out)
        s2 = (sw_out if l == depth - 1 else sw) ** 2
        if l == 0:
            e2, e12 = q0, [q0 * c0[0], q0 * c0[1]]
        else:
            kern, _ = meanfield.kernel("tanh", np.full(3, q[-1]), [c[0][-1], c[1][-1], 1.0])
            e2, e12 = kern[2], kern[:2]
        q.append(s2 * e2 + sb**2)
        for t in (0, 1):
            c[t].append((s2 * e12[t] + sb**2) / q[-1])
    predicted = sparse.snip_batch_coherence("tanh", q, c[0], c[1], c0, labels=y, classes=k)
    return measured, predicted, q[-1]


@pytest.mark.parametrize(
    "case",
    [
        # a readout of small variance (q^L ≈ 0.05): the label part of the output kernel
        dict(k=4, m=8, sw_out=0.2),
        # q^L ≈ 1.2: the logit part (K−1)/K² q^L c^L weighs in too
        dict(k=10, m=10, sw_out=2.0),
    ],
)
def test_snip_batch_coherence_against_wide_networks(case):
    # 6 networks of width 400 near the tanh EOC: the measured ρ_l agree with the prediction
    # within 3 standard errors over the networks (measured ≤ 1.5 SE). An off-by-one layer in
    # the forward or backward correlations, a missing q^L term or a wrong pair fraction
    # each move the prediction by 4.6 SE or more in the second case.
    runs = [_snip_coherence_net(seed, **case) for seed in range(6)]
    measured = np.array([r[0] for r in runs])
    predicted = np.mean([r[1] for r in runs], axis=0)
    se = measured.std(axis=0, ddof=1) / math.sqrt(len(runs))
    assert np.all(np.abs(measured.mean(axis=0) - predicted) <= 3 * se), (
        measured.mean(axis=0),
        predicted,
        se,
    )
    assert np.all(predicted > 0.01)  # coherent: 1 + (B − 1)ρ well above 1


def test_snip_batch_coherence_closed_form_for_linear_layers():
    # φ = identity (or no activation, None): forward correlations are the pre-activations'
    # own and the backward factors 1, so ρ_l = f c_same^{l−1} r_same + (1 − f) c_diff^{l−1}
    # r_diff with the output correlations r of the linearised softmax -- by hand, for an
    # unbalanced batch (f = Σ m_k(m_k − 1)/(B(B − 1))).
    k, q = 5, np.array([1.0, 0.8, 0.3])
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    cs, cd, c0 = np.array([0.5, 0.6, 0.7]), np.array([0.1, 0.2, 0.25]), (0.4, 0.05)
    rho = sparse.snip_batch_coherence("linear", q, cs, cd, c0, labels=labels, classes=k)
    none = sparse.snip_batch_coherence([None, None], q, cs, cd, c0, labels=labels, classes=k)
    np.testing.assert_array_equal(rho, none)
    f = (3 * 2 + 2 * 1 + 0 + 4 * 3) / (10 * 9)
    norm = (k - 1) / k * (1 + q[-1] / k)
    r_same = ((k - 1) / k + (k - 1) / k**2 * q[-1] * cs[-1]) / norm
    r_diff = (-1 / k + (k - 1) / k**2 * q[-1] * cd[-1]) / norm
    fwd_same, fwd_diff = np.r_[c0[0], cs[:-1]], np.r_[c0[1], cd[:-1]]
    expected = f * fwd_same * r_same + (1 - f) * fwd_diff * r_diff
    np.testing.assert_allclose(rho, expected, rtol=1e-13, atol=1e-16)  # round-off only
    # and it enters the SNIP scales as 1 + (B − 1)ρ in variance
    a0 = sparse.snip_score_scales([1.0, 1.0, 1.0], 1.0, [1.0, 1.0])
    a1 = sparse.snip_score_scales([1.0, 1.0, 1.0], 1.0, [1.0, 1.0], coherence=rho, batch_size=10)
    np.testing.assert_allclose(a1**2 / a0**2, 1 + 9 * rho, rtol=1e-14)


def test_class_cosines():
    x = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    y = np.array([0, 0, 1, 1])
    c_same, c_diff = sparse.class_cosines(x, y)
    # the zero input is left out: one same-class pair (cos 45°), two different-class ones
    assert c_same == pytest.approx(math.sqrt(0.5), rel=1e-15)
    assert c_diff == pytest.approx((0.0 + math.sqrt(0.5)) / 2, rel=1e-15)
    # one example per class: no same-class pair, the first value is the second
    assert sparse.class_cosines(x[:3], np.array([0, 1, 2])) == pytest.approx(
        (sparse.class_cosines(x[:3], np.array([0, 1, 2]))[1],) * 2
    )
    with pytest.raises(ValueError, match="two classes"):
        sparse.class_cosines(x, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="not all zeros"):
        sparse.class_cosines(np.zeros((3, 2)), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="agree"):
        sparse.class_cosines(x, y[:3])


def test_snip_batch_coherence_bad_input():
    y = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="one length"):
        sparse.snip_batch_coherence(
            "tanh", [1.0, 1.0], [0.5], [0.1, 0.1], (0.1, 0.0), labels=y, classes=2
        )
    with pytest.raises(ValueError, match="correlations"):
        sparse.snip_batch_coherence(
            "tanh", [1.0, 1.0], [1.5, 0.5], [0.1, 0.1], (0.1, 0), labels=y, classes=2
        )
    with pytest.raises(ValueError, match="input_corr"):
        sparse.snip_batch_coherence(
            "tanh", [1.0, 1.0], [0.5, 0.5], [0.1, 0.1], 0.1, labels=y, classes=2
        )
    with pytest.raises(ValueError, match="classes"):
        sparse.snip_batch_coherence(
            "tanh", [1.0, 1.0], [0.5, 0.5], [0.1, 0.1], (0.1, 0.0), labels=y, classes=1
        )
    with pytest.raises(ValueError, match="labels"):
        sparse.snip_batch_coherence(
            "tanh", [1.0, 1.0], [0.5, 0.5], [0.1, 0.1], (0.1, 0.0), labels=y + 1, classes=2
        )
    with pytest.raises(ValueError, match="activation"):
        sparse.snip_batch_coherence(
            ["tanh", "tanh"], [1.0, 1.0], [0.5] * 2, [0.1] * 2, (0, 0), labels=y, classes=2
        )
    with pytest.raises(ValueError, match="go together"):
        sparse.snip_score_scales([1.0, 1.0], 1.0, [1.0], coherence=[0.1, 0.1])
    with pytest.raises(ValueError, match="variance"):
        sparse.snip_score_scales([1.0, 1.0], 1.0, [1.0], coherence=[-1.0, 0.1], batch_size=10)
