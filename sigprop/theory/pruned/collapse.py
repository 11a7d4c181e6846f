"""Global pruning laws and layer collapse of magnitude and sensitivity (SNIP) pruning
(Hayou et al. 2021, arXiv 2002.08797, §3 and Appendix; derived laws, stated in each docstring)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import optimize, special

from sigprop.theory.pruned.common import SCORES, Result
from sigprop.validate import InvalidInput, density_array, positive_int

# --------------------------------------------------------------------------------------
# Global pruning and layer collapse
# --------------------------------------------------------------------------------------


def _product_normal_logsf(t: Any) -> np.ndarray:
    """log P(|z₁z₂| > t), accurate far into the tail (see :func:`product_normal_sf`)."""
    t = np.asarray(t, dtype=np.float64)
    if np.any(np.isnan(t)):
        raise InvalidInput("t must not be NaN")
    out = np.zeros(t.shape)
    small = (t > 0) & (t <= 2.0)
    if np.any(small):
        out[small] = np.log1p(-(2.0 / np.pi) * special.iti0k0(t[small])[1])
    large = t > 2.0
    if np.any(large):
        v, w = np.polynomial.laguerre.laggauss(40)
        tl = t[large][:, None]
        out[large] = math.log(2.0 / np.pi) - tl[:, 0] + np.log(np.sum(w * special.k0e(tl + v), 1))
    return out


def product_normal_sf(t: Any) -> np.ndarray:
    """P(|z₁z₂| > t) for independent z₁, z₂ ~ N(0, 1).

    The product has density K₀(|u|)/π (modified Bessel function of the second kind), so
    P(|z₁z₂| > t) = (2/π)∫_t^∞ K₀(u) du = 1 − (2/π)∫_0^t K₀. For t ≤ 2 the integral from 0
    is ``scipy.special.iti0k0``; for t > 2 the tail e^{−t}∫_0^∞ e^{−v}[e^{t+v}K₀(t+v)]dv
    is a 40-point Gauss–Laguerre rule on the smooth k0e (relative accuracy ~1e-14), so
    tiny tail probabilities keep their relative precision.
    """
    return np.exp(_product_normal_logsf(t))


def _half_normal_sf(t: np.ndarray) -> np.ndarray:
    """P(|z| > t) = erfc(t/√2)."""
    return special.erfc(np.asarray(t, dtype=np.float64) / math.sqrt(2.0))


def _score_sf(score: str):
    if score == "magnitude":
        return _half_normal_sf
    if score == "sensitivity":
        return product_normal_sf
    raise InvalidInput(f"score must be one of {SCORES}, got {score!r}")


def _score_isf(score: str, p: np.ndarray) -> np.ndarray:
    """Inverse survival function of the unit score law, p ∈ (0, 1]."""
    if score == "magnitude":
        return math.sqrt(2.0) * special.erfcinv(p)
    out = np.empty(p.shape)
    for i, pi in enumerate(p.ravel()):
        if pi >= 1.0:
            out.flat[i] = 0.0
            continue
        # log P(|z₁z₂| > t) decreases from 0 to about −t; [1e-300, 800] brackets p ≥ 1e-340.
        out.flat[i] = optimize.brentq(
            lambda t, pi=pi: float(_product_normal_logsf(t)) - math.log(pi),
            1e-300,
            800.0,
            xtol=1e-14,
            rtol=1e-14,
        )
    return out


def _layer_arrays(scales: Any, numel: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    m = np.atleast_1d(np.asarray(numel, dtype=np.float64))
    if a.ndim != 1 or m.ndim != 1 or a.size != m.size or a.size == 0:
        raise InvalidInput("scales and numel must be 1-D arrays of the same (non-zero) length")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise InvalidInput(f"score scales must be finite and > 0, got {a}")
    if not np.all(np.isfinite(m)) or np.any(m < 1) or np.any(m != np.round(m)):
        raise InvalidInput(f"numel must be positive integers, got {m}")
    return a, m


def magnitude_score_scales(fan_in: Any, sigma_w: Any = 1.0) -> np.ndarray:
    """Scale of |W| in each layer: std(W) = σ_w/√fan_in (weights N(0, σ_w²/fan_in))."""
    n = np.atleast_1d(np.asarray(fan_in, dtype=np.float64))
    if not np.all(np.isfinite(n)) or np.any(n < 1):
        raise InvalidInput(f"fan_in must be >= 1, got {fan_in!r}")
    return np.broadcast_to(np.asarray(sigma_w, dtype=np.float64), n.shape) / np.sqrt(n)


def snip_score_scales(
    weight_var: Any,
    input_second_moment: Any,
    backward_gain: Any,
    last_grad_var: float = 1.0,
    *,
    coherence: Any = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Scale a_l of the SNIP score |g ⊙ W| of layer l = 1..L under a mean-field model.

    Model (derived here; Hayou et al. arXiv 2002.08797 §3 state the χ₁^{L−l} scaling of
    the gradients). For W^l (fan-in n_{l−1}) the gradient is g_ij = Σ_batch δ^l_i x^{l−1}_j;
    at large width δ^l_i and x^{l−1}_j are independent of W^l_ij, and summed over a batch
    g_ij is close to Gaussian. The score is then a_l |z₁ z₂|, z₁, z₂ ~ N(0, 1) independent,
    with

        a_l² = Var(W^l_ij) · E[(x^{l−1}_j)²] · E[(δ^l_i)²],
        E[(δ^l)²] = E[(δ^L)²] Π_{k=l}^{L−1} γ_k,

    γ_k = σ_{k+1}² E[φ′(h^k)²] (n_{k+1}/n_k) the backward gain from layer k+1 to k
    (= χ₁ for equal layers at q*, so a_l ∝ χ₁^{(L−l)/2}).

    Parameters
    ----------
    weight_var : array (L,)
        Var(W^l_ij) = σ_{w,l}² / fan_in_l.
    input_second_moment : float or array (L,)
        E[(x^{l−1}_j)²]: the data's for l = 1, E[φ(h^{l−1})²] after.
    backward_gain : array (L − 1,)
        γ_1 … γ_{L−1}.
    last_grad_var : float
        E[(δ^L)²], a common factor (it does not change which layer collapses).
    coherence, batch_size : array (L,), int
        ρ_l of :func:`snip_batch_coherence` and the batch size B. The gradient is a sum over
        the batch whose terms are correlated, Var(Σ_b δ_b x_b) = B E[δ²]E[x²] (1 + (B − 1)ρ_l),
        so a_l² is multiplied by 1 + (B − 1)ρ_l. Without them the terms are taken as
        uncorrelated (ρ = 0).
    """
    v = np.atleast_1d(np.asarray(weight_var, dtype=np.float64))
    x2 = np.broadcast_to(np.asarray(input_second_moment, dtype=np.float64), v.shape)
    g = np.atleast_1d(np.asarray(backward_gain, dtype=np.float64))
    if g.size != v.size - 1:
        raise InvalidInput(f"backward_gain needs {v.size - 1} entries (L − 1), got {g.size}")
    arrays = (v, x2, g, np.asarray(last_grad_var, dtype=np.float64))
    if any(np.any(~np.isfinite(x)) or np.any(x <= 0) for x in arrays):
        raise InvalidInput(
            "weight_var, input_second_moment, backward_gain and last_grad_var must be > 0"
        )
    delta2 = last_grad_var * np.concatenate([np.cumprod(g[::-1])[::-1], [1.0]])
    if (coherence is None) != (batch_size is None):
        raise InvalidInput("coherence and batch_size go together")
    if coherence is not None:
        rho = np.broadcast_to(np.asarray(coherence, dtype=np.float64), v.shape)
        batch_size = positive_int(batch_size, "batch_size")
        factor = 1.0 + (int(batch_size) - 1) * rho
        if np.any(~np.isfinite(factor)) or np.any(factor <= 0):
            raise InvalidInput("coherence must keep 1 + (B − 1)ρ_l > 0 (a variance)")
        delta2 = delta2 * factor
    return np.sqrt(v * x2 * delta2)


def kept_fraction(scales: Any, threshold: float, score: str = "magnitude") -> np.ndarray:
    """Expected fraction of each layer kept by the global threshold τ: P(a_l Z > τ).

    Magnitude scores (a_l = σ_w/√n_l): erfc(τ√(n_l/2)/σ_w) (arXiv 2002.08797 §3);
    sensitivity scores: :func:`product_normal_sf` (τ/a_l).
    """
    a = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise InvalidInput(f"score scales must be finite and > 0, got {a}")
    if not np.isfinite(threshold) or threshold < 0:
        raise InvalidInput(f"threshold must be finite and >= 0, got {threshold!r}")
    return _score_sf(score)(threshold / a)


@dataclasses.dataclass(frozen=True)
class GlobalPruning(Result):
    """Prediction of one global threshold applied to the scores of all layers.

    Fields
    ------
    score : str
        ``"magnitude"`` (|W|) or ``"sensitivity"`` (|g ⊙ W|).
    density : float
        Target global fraction of weights kept.
    threshold : float
        The global threshold τ on the scores that keeps that fraction in expectation.
    kept_fraction : ndarray, shape (L,)
        Expected fraction kept per layer, P(score_l > τ).
    expected_kept : ndarray, shape (L,)
        numel_l × kept_fraction_l.
    collapsed : ndarray of bool, shape (L,)
        expected_kept < min_kept (the layer is, on average, emptied).
    min_kept : float
    """

    score: str
    density: float
    threshold: float
    kept_fraction: np.ndarray
    expected_kept: np.ndarray
    collapsed: np.ndarray
    min_kept: float


def global_pruning(
    scales: Any, numel: Any, density: float, score: str = "magnitude", min_kept: float = 1.0
) -> GlobalPruning:
    """Per-layer kept fractions under global pruning of i.i.d. scaled scores.

    Layer l's scores are a_l·Z with Z ~ |N(0,1)| (``score="magnitude"``: a_l = std of W,
    :func:`magnitude_score_scales`; layer l keeps erfc(τ/(a_l√2)) = erfc(τ√(n_l/2)/σ_w),
    arXiv 2002.08797 §3) or Z ~ |z₁z₂| (``score="sensitivity"``, :func:`product_normal_sf`,
    a_l from :func:`snip_score_scales`). The threshold τ solves
    Σ_l numel_l P(a_l Z > τ) = density · Σ_l numel_l (monotone in τ; Brent's method on
    log τ). These are expectations: the realised top-k threshold differs by O(1/√numel).
    """
    a, m = _layer_arrays(scales, numel)
    sf = _score_sf(score)
    rho = float(density_array(density))
    total = float(m.sum())

    def kept(tau: float) -> float:
        return float(np.sum(m * sf(tau / a))) / total

    if rho >= 1.0:
        tau = 0.0
    else:
        lo, hi = math.log(1e-300), math.log(800.0 * float(a.max()))
        tau = math.exp(
            optimize.brentq(lambda u: kept(math.exp(u)) - rho, lo, hi, xtol=1e-13, rtol=1e-14)
        )
    frac = kept_fraction(a, tau, score)
    return GlobalPruning(
        score=score,
        density=rho,
        threshold=tau,
        kept_fraction=frac,
        expected_kept=m * frac,
        collapsed=m * frac < min_kept,
        min_kept=float(min_kept),
    )


@dataclasses.dataclass(frozen=True)
class CollapsePoint(Result):
    """Where global pruning first empties a layer.

    Fields
    ------
    layer : int
        Index (0-based) of the first layer whose expected kept count falls to ``min_kept``.
    density : float
        Global density at which that happens (collapse for any smaller density).
    threshold : float
        The score threshold at that point.
    order : ndarray of int, shape (L,)
        Layers in the order they collapse as the density decreases.
    collapse_density : ndarray, shape (L,)
        Global density at which each layer collapses.
    """

    layer: int
    density: float
    threshold: float
    order: np.ndarray
    collapse_density: np.ndarray


def first_collapse(
    scales: Any, numel: Any, score: str = "magnitude", min_kept: float = 1.0
) -> CollapsePoint:
    """First layer to collapse under global pruning, and the global density where it does.

    Layer l empties (expected kept count numel_l P(a_l Z > τ) = min_kept) at
    τ_l = a_l · isf(min_kept/numel_l); as the global density decreases τ grows, so layers
    collapse in increasing order of τ_l, at global density
    D(τ_l) = Σ_k numel_k P(a_k Z > τ_l)/Σ_k numel_k. For magnitude pruning with equal
    σ_w the largest fan-in (smallest a_l) goes first unless its layer is much larger
    (arXiv 2002.08797 §3); for SNIP scores with a_l ∝ χ₁^{(L−l)/2}: the first layers in the
    ordered phase (χ₁ < 1), the last ones in the chaotic phase (χ₁ > 1); on the EOC only
    layer sizes and fan-ins matter. ``min_kept = log 2`` gives the density below which the
    layer is empty with probability > ½ (Poisson approximation of the kept count).
    """
    a, m = _layer_arrays(scales, numel)
    sf = _score_sf(score)
    if not (0.0 < min_kept <= float(m.min())):
        raise InvalidInput(f"min_kept must lie in (0, min(numel)], got {min_kept!r}")
    taus = a * _score_isf(score, np.minimum(min_kept / m, 1.0))
    total = float(m.sum())
    dens = np.array([float(np.sum(m * sf(t / a))) / total for t in taus])
    order = np.argsort(taus, kind="stable")
    first = int(order[0])
    return CollapsePoint(
        layer=first,
        density=float(dens[first]),
        threshold=float(taus[first]),
        order=order,
        collapse_density=dens,
    )
