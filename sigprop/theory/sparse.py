"""Theory of pruned layers: masks, rescaling, layer collapse, Stable ResNet, DCT offsets.

Sources
-------
* Hayou, Ton, Doucet & Teh, *Robust Pruning at Initialization*, ICLR 2021
  (arXiv 2002.08797): the effect of a mask on the variance map (their §3–4), the rescaling
  trick (their §4, Algorithm 1), layer collapse of magnitude and sensitivity pruning
  (their §3 and Appendix), Stable ResNet (their §5).
* Price & Tanner, *Dense for the Price of Sparse*, ICML 2021 (arXiv 2102.07655): the
  DCT-plus-sparse layer y = αDx + Sx + b (their §3).

Where a statement below is derived here rather than quoted (the layer-collapse laws, the
spectral norm and rank of a random sparse matrix), its docstring states the model and the
assumptions, and the tests hold it against numpy simulations of that model.

Conventions: σ's are standard deviations, weights N(0, σ_w²/fan_in), ``density`` is the
fraction of weights KEPT. Pure numpy/scipy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from sigprop._json import to_jsonable
from sigprop.validate import InvalidInput, density_array, positive_int

__all__ = [
    "MASKS",
    "SCORES",
    "CollapsePoint",
    "GlobalPruning",
    "PrunedPropagation",
    "SparseNorm",
    "SparseRank",
    "class_cosines",
    "dct_matrix",
    "effective_sigma_w",
    "first_collapse",
    "global_pruning",
    "kept_fraction",
    "magnitude_kept_variance",
    "magnitude_score_scales",
    "mask_variance_factor",
    "product_normal_sf",
    "pruned_propagation",
    "relu_residual_q",
    "rescale_factor",
    "residual_q_map",
    "snip_batch_coherence",
    "snip_score_scales",
    "sparse_rank",
    "sparse_spectral_norm",
    "weyl_singular_value_bounds",
]

#: Mask models with a closed-form effect on the variance map.
MASKS = ("random", "magnitude")
#: Score laws for global pruning: |W| (half-normal) and |g·W| (|product of two normals|).
SCORES = ("magnitude", "sensitivity")


class _Result:
    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON data (:func:`sigprop._json.to_jsonable`: arrays become lists,
        non-finite numbers become ``None``)."""
        return to_jsonable(self, type(self).__name__)


def _mask(mask: str) -> str:
    if mask not in MASKS:
        raise InvalidInput(f"mask must be one of {MASKS}, got {mask!r}")
    return mask


# --------------------------------------------------------------------------------------
# Masks and the variance map
# --------------------------------------------------------------------------------------


def magnitude_kept_variance(density: Any) -> np.ndarray:
    """κ(ρ) = E[z² 1{|z| > t}] = ρ + 2tφ(t), t = Φ⁻¹(1 − ρ/2), z ~ N(0, 1).

    The fraction of a Gaussian layer's weight variance that survives keeping the largest
    fraction ρ of |W| (Hayou et al., arXiv 2002.08797, §4; derivation: integrate z²φ(z)
    by parts over |z| > t). κ(0.1) = 0.4393, κ(1) = 1, κ(ρ) ≥ ρ.
    """
    rho = density_array(density, allow_zero=True)
    t = special.ndtri(1.0 - 0.5 * rho)  # = Φ⁻¹(1 − ρ/2); +inf at ρ = 0
    with np.errstate(invalid="ignore"):
        tail = np.where(np.isfinite(t), 2.0 * t * stats.norm.pdf(t), 0.0)
    return rho + tail


def mask_variance_factor(density: Any, mask: str = "random") -> np.ndarray:
    """Factor on σ_w² from a mask of density ρ: ρ (random) or κ(ρ) (magnitude).

    A random mask keeps each weight independently of its value, so Σ_j W_ij² δ_ij has
    expectation ρσ_w² and the q-map and χ₁ see σ_w² → ρσ_w² (arXiv 2002.08797, §3); a
    magnitude mask keeps the largest |W| and retains κ(ρ) of the variance.
    """
    mask = _mask(mask)
    rho = density_array(density, allow_zero=True)
    return rho.copy() if mask == "random" else magnitude_kept_variance(rho)


def effective_sigma_w(sigma_w: Any, density: Any, mask: str = "random") -> np.ndarray:
    """σ_w of the equivalent dense layer: σ_w·√ρ (random) or σ_w·√κ(ρ) (magnitude).

    In the infinite-width limit a masked layer with fan-in N propagates the variance as a
    dense layer with this σ_w (arXiv 2002.08797 §3): q^l = σ_eff² E[φ(h)²] + σ_b² and
    χ₁ = σ_eff² E[φ′(h)²].
    """
    sw = np.asarray(sigma_w, dtype=np.float64)
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise InvalidInput(f"sigma_w must be finite and >= 0, got {sigma_w!r}")
    return sw * np.sqrt(mask_variance_factor(density, mask))


def rescale_factor(density: Any, mask: str = "random") -> np.ndarray:
    """Factor on the kept weights of a unit that restores the dense second moment.

    The rescaling trick (arXiv 2002.08797, §4, Algorithm 1) multiplies the kept weights of
    each output unit (per output channel and kernel position for convolutions) so that
    E[Σ_j W̃_ij²] equals the dense σ_w²: 1/√ρ for a random mask of the unit's density ρ,
    1/√κ(ρ) for a magnitude mask (the kept weights are the large ones). Computed "right"
    (REFERENCES §4: dividing by σ_w², not σ_w⁴ as their code does). A unit with nothing
    kept (ρ = 0) has no finite factor and is returned as ``inf``; ``rescale_`` leaves such
    rows at zero.
    """
    factor = mask_variance_factor(density, mask)
    with np.errstate(divide="ignore"):
        return np.where(factor > 0, 1.0 / np.sqrt(np.where(factor > 0, factor, 1.0)), np.inf)


@dataclasses.dataclass(frozen=True)
class PrunedPropagation(_Result):
    """Mean-field forward propagation through a pruned network.

    Fields
    ------
    q : ndarray, shape (L + 1,)
        q[0] is the input's mean squared coordinate E[x⁰_j²]; q[l] (l ≥ 1) the variance of
        the pre-activation h^l.
    mu1 : ndarray, shape (L,)
        E[φ′(h^l)²], h^l ~ N(0, q^l), l = 1..L.
    chi : ndarray, shape (L,)
        χ^l = σ_eff,l² E[φ′(h^l)²]: layer l's factor of the input–output Jacobian
        (J = Π D^l W^l; ``spectra.jacobian_moments_layers(act, sigma_w_eff, q[1:])``).
    sigma_w_eff : ndarray, shape (L,)
        Effective σ_w of each layer (σ_w itself where rescaled).
    density : ndarray, shape (L,)
    mask : str
    rescaled : bool
    """

    q: np.ndarray
    mu1: np.ndarray
    chi: np.ndarray
    sigma_w_eff: np.ndarray
    density: np.ndarray
    mask: str
    rescaled: bool

    @property
    def gradient_ratio(self) -> np.ndarray:
        """E[(∂ℓ/∂h^l_i)²] / E[(∂ℓ/∂h^L_i)²] for l = 1..L (equal widths).

        Backpropagation δ^l = D^l (W^{l+1})ᵀ δ^{l+1} gives the factor σ_eff,l+1² μ₁(q^l) per
        step (Schoenholz et al. arXiv 1611.01232 §3; = χ₁^{L−l} for equal layers at q*).
        """
        steps = self.sigma_w_eff[1:] ** 2 * self.mu1[:-1]
        return np.concatenate([np.cumprod(steps[::-1])[::-1], [1.0]])


def pruned_propagation(
    activation: Any,
    sigma_w: Any,
    sigma_b: Any,
    density: Any,
    q0: float,
    *,
    mask: str = "random",
    rescaled: bool = False,
) -> PrunedPropagation:
    """q^l, χ^l and gradient ratios of a pruned MLP, layer by layer (arXiv 2002.08797 §3–4).

    h^1 = W^1 x⁰ + b^1 and h^l = W^l φ(h^{l−1}) + b^l with masks of density ρ_l:
    q^1 = σ_eff,1² q0 + σ_b², q^l = σ_eff,l² E[φ(√q^{l−1} z)²] + σ_b², with
    σ_eff,l = :func:`effective_sigma_w` (σ_w,l, ρ_l, mask), or σ_w,l when ``rescaled`` (the
    rescaling trick restores the dense map). Without rescaling a ReLU net with σ_w² = 2,
    σ_b = 0 has q^L = ρ^{L−1} q^1 — the collapse of the variance Hayou et al. describe.

    Parameters
    ----------
    activation : activation spec (``activations.get_activation``).
    sigma_w, sigma_b : float or array (L,)
    density : float or array (L,)
        Fraction of weights kept per layer; its length sets L (a scalar means one layer,
        so pass ``np.full(L, rho)``).
    q0 : float
        Mean squared input coordinate E[x⁰_j²].
    mask, rescaled : the mask model (``"random"``/``"magnitude"``) and whether the kept
        weights were rescaled.
    """
    from sigprop.theory import meanfield

    _mask(mask)
    rho = np.atleast_1d(density_array(density))
    if rho.ndim != 1:
        raise InvalidInput("density must be a scalar or a 1-D per-layer array")
    try:
        sw = np.broadcast_to(np.asarray(sigma_w, dtype=np.float64), rho.shape).copy()
        sb = np.broadcast_to(np.asarray(sigma_b, dtype=np.float64), rho.shape).copy()
    except ValueError as exc:
        raise InvalidInput(f"sigma_w/sigma_b do not match {rho.size} layers: {exc}") from None
    if not np.isfinite(q0) or q0 < 0:
        raise InvalidInput(f"q0 must be finite and >= 0, got {q0!r}")
    eff = np.abs(sw) if rescaled else effective_sigma_w(sw, rho, mask)
    q = np.empty(rho.size + 1)
    q[0] = q0
    q[1] = eff[0] ** 2 * q0 + sb[0] ** 2
    for l in range(1, rho.size):
        q[l + 1] = float(meanfield.q_map(activation, eff[l], sb[l], q[l]))
    mu1 = np.array(
        [float(meanfield.chi1(activation, 1.0, sb[l], q=q[l + 1])) for l in range(rho.size)]
    )
    return PrunedPropagation(q, mu1, eff**2 * mu1, eff, rho, mask, bool(rescaled))


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


def class_cosines(inputs: Any, labels: Any) -> tuple[float, float]:
    """(mean cosine of two inputs of the same class, of different classes) over a batch.

    ``inputs`` (B, ...) and integer ``labels`` (B,); inputs that are all zeros (no
    direction) are left out. With no same-class pair (one example per class) the first value
    is the second (it then carries no weight in :func:`snip_batch_coherence`).
    """
    x = np.asarray(inputs, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if x.ndim < 2 or x.shape[0] != y.size:
        raise InvalidInput(f"inputs (B, ...) and labels (B,) must agree, got {x.shape}, {y.shape}")
    x = x.reshape(x.shape[0], -1)
    norms = np.linalg.norm(x, axis=1)
    keep = norms > 0
    if not np.all(np.isfinite(x)):
        raise InvalidInput("inputs contain NaN or inf")
    if int(keep.sum()) < 2:
        raise InvalidInput("class_cosines needs at least two inputs that are not all zeros")
    unit, y = x[keep] / norms[keep, None], y[keep]
    cos = unit @ unit.T
    same = y[:, None] == y[None, :]
    off = ~np.eye(y.size, dtype=bool)
    if not np.any(~same):
        raise InvalidInput("class_cosines needs examples of at least two classes")
    c_diff = float(cos[~same].mean())
    c_same = float(cos[same & off].mean()) if np.any(same & off) else c_diff
    return float(np.clip(c_same, -1.0, 1.0)), float(np.clip(c_diff, -1.0, 1.0))


def snip_batch_coherence(
    activation: Any,
    q: Any,
    c_same: Any,
    c_diff: Any,
    input_corr: tuple[float, float],
    *,
    labels: Any,
    classes: int,
) -> np.ndarray:
    """ρ_l: how coherently a batch adds up in the SNIP gradient of layer l.

    Model (derived here, for :func:`snip_score_scales`; the kernels are those of Poole et al.
    arXiv 1606.05340 eq. 5 and Schoenholz et al. arXiv 1611.01232 §4). The gradient of W^l
    is Σ_b δ^l_b x^{l−1}_bᵀ; with forward and backward signals independent (mean field),

        ρ_l = mean over pairs b ≠ b' of [E x_b x_b' / E x²] · [E δ_b δ_b' / E δ²],

    evaluated for the two kinds of pairs of the batch: same class (a fraction
    Σ_k m_k(m_k − 1)/(B(B − 1)) of the pairs, m_k examples of class k among B) and different
    classes, each with its own forward correlations.

    * Forward: the input to layer 1 has the data's mean cosine within / across classes
      (``input_corr``, :func:`class_cosines`); the input to layer l ≥ 2 has
      E φ(u)φ(u')/E φ(u)² at the pre-activation variance q^{l−1} and correlation c^{l−1} of
      that kind of pair.
    * Output: cross entropy of softmax(z) over ``classes`` = K logits of i.i.d. coordinates of
      variance q^L, linearised around the uniform distribution: per example
      δ = u − e_y + P z/K (P the centring projector), so E‖δ‖² = (K−1)/K·(1 + q^L/K) and
      E δ_b·δ_b' = [y_b = y_b'] − 1/K + (K−1)/K² q^L c^L_{bb'}. Exact as q^L → 0; against
      Monte Carlo the different-class correlation is off by 0.002 at q^L = 1 and by 0.03 at
      q^L = 4 (K = 10).
    * Backward: E δ^l_b δ^l_b' / E (δ^l)² = that of layer l + 1 times
      E φ′(u)φ′(u')/E φ′(u)² at (q^l, c^l) (the gradient-kernel recursion).

    Parameters
    ----------
    activation : activation spec, or a list of L − 1 specs (the nonlinearity after layers
        1 … L − 1; ``None`` for none; the last layer gives the logits).
    q : array (L,) pre-activation variances q^1 … q^L.
    c_same, c_diff : arrays (L,) pre-activation correlations c^l of two inputs of the same
        class / of different classes (``sigprop.diagnostics.predict`` with that c0).
    input_corr : (c_same⁰, c_diff⁰), the data's mean cosine within / across classes.
    labels : the batch's integer labels (B ≥ 2), in [0, classes).
    classes : K ≥ 2, the number of logits.

    Returns
    -------
    ndarray (L,): ρ_1 … ρ_L.
    """
    from sigprop.theory import meanfield

    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    cs = np.atleast_1d(np.asarray(c_same, dtype=np.float64))
    cd = np.atleast_1d(np.asarray(c_diff, dtype=np.float64))
    c0 = np.asarray(input_corr, dtype=np.float64)
    n = q.size
    if cs.shape != (n,) or cd.shape != (n,) or n < 1:
        raise InvalidInput(
            f"q, c_same and c_diff must be 1-D of one length, got {q.shape}, {cs.shape}, {cd.shape}"
        )
    if not (np.all(np.isfinite(q)) and np.all(q > 0)):
        raise InvalidInput("q must be finite and > 0")
    if c0.shape != (2,):
        raise InvalidInput(f"input_corr must be (c_same, c_diff), got shape {c0.shape}")
    for name, c in (("c_same", cs), ("c_diff", cd), ("input_corr", c0)):
        if not (np.all(np.isfinite(c)) and np.all(np.abs(c) <= 1)):
            raise InvalidInput(f"{name} must be correlations in [−1, 1]")
    if isinstance(classes, bool) or int(classes) != classes or classes < 2:
        raise InvalidInput(f"classes must be an integer ≥ 2, got {classes!r}")
    k = int(classes)
    y = np.asarray(labels).reshape(-1)
    if y.size < 2 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
        raise InvalidInput(f"labels must be ≥ 2 integers in [0, {k}), got {labels!r}")
    acts = list(activation) if isinstance(activation, (list, tuple)) else [activation] * (n - 1)
    if len(acts) != n - 1:
        raise InvalidInput(f"activation: one spec or a list of {n - 1} (layers 1 … L − 1)")
    acts = ["linear" if a is None else a for a in acts]
    batch = y.size
    counts = np.bincount(y, minlength=k).astype(np.float64)
    f_same = float(np.sum(counts * (counts - 1.0))) / (batch * (batch - 1.0))
    # forward correlations of the input to each layer, per kind of pair
    fwd = np.empty((2, n))
    fwd[:, 0] = c0
    back = np.ones((2, n))  # E φ′φ′ / E φ′² at layer l (1 for the logits)
    for i, act in enumerate(acts):
        kern, dkern = meanfield.kernel(act, np.full(3, q[i]), np.array([cs[i], cd[i], 1.0]))
        fwd[:, i + 1] = kern[:2] / kern[2]
        back[:, i] = dkern[:2] / dkern[2]
    q_l = q[-1]
    norm = (k - 1) / k * (1.0 + q_l / k)
    out_same = ((k - 1) / k + (k - 1) / k**2 * q_l * cs[-1]) / norm
    out_diff = (-1.0 / k + (k - 1) / k**2 * q_l * cd[-1]) / norm
    # backward: the correlation at layer l is the output's times the kernels of l … L − 1
    tail = np.cumprod(back[:, ::-1], axis=1)[:, ::-1]  # Π_{j ≥ l} back_j
    dcorr = np.stack([out_same * tail[0], out_diff * tail[1]])
    return f_same * fwd[0] * dcorr[0] + (1.0 - f_same) * fwd[1] * dcorr[1]


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
class GlobalPruning(_Result):
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
class CollapsePoint(_Result):
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


# --------------------------------------------------------------------------------------
# Residual networks: Stable ResNet
# --------------------------------------------------------------------------------------


def _branch_scale(depth: int, branch_scale: Any) -> float:
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise InvalidInput(f"depth (number of residual blocks) must be >= 1, got {depth!r}")
    lam = 1.0 / math.sqrt(depth) if branch_scale is None else float(branch_scale)
    if not np.isfinite(lam) or lam < 0:
        raise InvalidInput(f"branch_scale must be finite and >= 0, got {branch_scale!r}")
    return lam


def residual_q_map(
    activation: Any,
    sigma_w: float,
    sigma_b: float,
    q0: float,
    depth: int,
    branch_scale: float | None = None,
) -> np.ndarray:
    """Variances q^0..q^L of a residual network y^l = y^{l−1} + λ(W^l φ(y^{l−1}) + b^l).

    The branch is independent of the skip at init, so variances add
    (Hayou et al. arXiv 2002.08797 §5; Yang & Schoenholz 2017 for residual mean field):

        q^l = q^{l−1} + λ² (σ_w² E[φ(√q^{l−1} z)²] + σ_b²).

    ``branch_scale=None`` is the Stable ResNet choice λ = 1/√L, which keeps q^L bounded as
    L → ∞; λ = 1 is the standard ResNet, whose variance grows geometrically (ReLU) —
    see :func:`relu_residual_q`.
    """
    from sigprop.theory import meanfield

    lam = _branch_scale(depth, branch_scale)
    if not np.isfinite(q0) or q0 < 0:
        raise InvalidInput(f"q0 must be finite and >= 0, got {q0!r}")
    q = np.empty(depth + 1)
    q[0] = q0
    for l in range(depth):
        q[l + 1] = q[l] + lam**2 * float(meanfield.q_map(activation, sigma_w, sigma_b, q[l]))
    return q


def relu_residual_q(
    q0: float, sigma_w: float, depth: int, branch_scale: float | None = None
) -> np.ndarray:
    """Closed form for ReLU, σ_b = 0: q^l = (1 + λ²σ_w²/2)^l q⁰ (arXiv 2002.08797 §5).

    With λ = 1/√L (default) q^L → e^{σ_w²/2} q⁰ as L → ∞ (bounded); with λ = 1 and the EOC
    σ_w² = 2, q^L = 2^L q⁰.
    """
    lam = _branch_scale(depth, branch_scale)
    return q0 * (1.0 + 0.5 * lam**2 * float(sigma_w) ** 2) ** np.arange(depth + 1)


# --------------------------------------------------------------------------------------
# DCT plus sparse (Price & Tanner)
# --------------------------------------------------------------------------------------


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """The DCT offset D of a linear layer (n_out × n_in), materialised (tests/oracles only).

    D is the top-left n_out × n_in block of the N × N orthonormal DCT-II matrix,
    N = max(n_in, n_out): D[k, n] = c_k cos(π(2n + 1)k / (2N)), c₀ = √(1/N), c_k = √(2/N)
    (Price & Tanner arXiv 2102.07655 §3; REFERENCES §5). Its rows (n_out ≤ n_in) or columns
    (n_out ≥ n_in) are orthonormal, so every singular value is 1 and rank = min(n_in, n_out).
    """
    for name, n in (("n_out", n_out), ("n_in", n_in)):
        n = positive_int(n, name)
    big = max(n_out, n_in)
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    d = np.sqrt(2.0 / big) * np.cos(np.pi * (2 * n + 1) * k / (2 * big))
    d[0, :] = math.sqrt(1.0 / big)
    return d


def weyl_singular_value_bounds(alpha: float, s_norm: Any) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on all min(n_in, n_out) singular values of αD + S: [α − ‖S‖₂, α + ‖S‖₂].

    Weyl's inequality for singular values, |σ_i(A + B) − σ_i(A)| ≤ ‖B‖₂, with σ_i(αD) = |α|
    for every i ≤ min(n_in, n_out) (:func:`dct_matrix`). So αD + S has full rank whenever
    ‖S‖₂ < |α|, at any density of S (Price & Tanner arXiv 2102.07655 §3). (More: det(αD + S)
    restricted to a maximal square block is a polynomial in α with leading coefficient
    ±1, so full rank fails for at most min(n_in, n_out) values of α, whatever S is.)
    Returns (lower, upper), lower clipped at 0.
    """
    a = abs(float(alpha))
    s = np.asarray(s_norm, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise InvalidInput(f"s_norm (spectral norm of S) must be finite and >= 0, got {s_norm!r}")
    return np.maximum(a - s, 0.0), a + s


@dataclasses.dataclass(frozen=True)
class SparseNorm(_Result):
    """Prediction of E‖S‖₂ for S (n_out × n_in) with i.i.d. N(0, std²) entries kept w.p. ρ.

    Fields
    ------
    bulk : float
        std·√ρ·(√n_in + √n_out): the Bai–Yin / Latała scaling, accurate when every row and
        column has many nonzeros (ρ·min(n) ≫ log max(n)).
    max_row_norm, max_col_norm : float
        E max_i ‖S_i,·‖₂ and E max_j ‖S_·,j‖₂ — exact expectations for this model (row
        norm² = std²·χ²_K, K ~ Binomial(n_in, ρ)); both are lower bounds on ‖S‖₂, and the
        norm is dominated by them in the very sparse regime.
    prediction : float
        max(bulk, max_row_norm, max_col_norm).
    regime : str
        ``"dense"`` when the bulk term is the largest, else ``"sparse"``.
    """

    bulk: float
    max_row_norm: float
    max_col_norm: float
    prediction: float
    regime: str


def _expected_max_norm(n_rows: int, n_cols: int, density: float, std: float) -> float:
    """E max over n_rows rows of ‖row‖₂, row entries N(0, std²) kept w.p. density.

    P(max ≤ r) = F(r)^{n_rows}, F(r) = Σ_k P(K = k) P(χ²_k ≤ r²/std²), K ~ Bin(n_cols, ρ)
    (χ²_0 the point mass at 0); E max = ∫_0^∞ (1 − F^{n_rows}) dr on a 1201-point grid.
    """
    binom = stats.binom(n_cols, density)
    k = np.arange(int(binom.ppf(1e-16)), int(binom.isf(1e-16)) + 2)
    pk = binom.pmf(k)
    r_max = math.sqrt(max(float(stats.chi2.isf(1e-16 / n_rows, max(int(k[-1]), 1))), 1.0))
    r = np.linspace(0.0, r_max, 1201)
    chi = np.where(k[None, :] == 0, 1.0, stats.chi2.cdf(r[:, None] ** 2, np.maximum(k, 1)[None, :]))
    cdf = np.clip(chi @ pk, 0.0, 1.0)
    surv_max = -np.expm1(n_rows * np.log(np.maximum(cdf, 1e-300)))
    return float(std * np.trapezoid(surv_max, r))


def sparse_spectral_norm(n_out: int, n_in: int, density: float, std: float = 1.0) -> SparseNorm:
    """Predicted spectral norm of a random sparse S (the sparse part of a DCT-plus layer).

    Model: S_ij = δ_ij g_ij, δ_ij ~ Bernoulli(ρ), g_ij ~ N(0, std²), all independent (random
    support, as in Price & Tanner arXiv 2102.07655 §3 when S is initialised randomly).
    Dense-enough regime (ρ·min(n_in, n_out) ≫ log max(n_in, n_out)): ‖S‖₂ ≈
    std·√ρ(√n_in + √n_out) (Bai–Yin; Latała 2005 for non-identical entries). Very sparse
    regime: ‖S‖₂ is governed by the largest row/column norm, which always bounds it from
    below (a max of ρ·n nonzeros' norms; Bandeira & van Handel arXiv 1408.6185 for the
    general bound). The prediction is the larger of the three; it is a heuristic in the
    crossover region (the tests measure its error against simulation).
    """
    rho = float(density_array(density))
    for name, n in (("n_out", n_out), ("n_in", n_in)):
        n = positive_int(n, name)
    if not np.isfinite(std) or std <= 0:
        raise InvalidInput(f"std must be finite and > 0, got {std!r}")
    bulk = std * math.sqrt(rho) * (math.sqrt(n_in) + math.sqrt(n_out))
    row = _expected_max_norm(n_out, n_in, rho, std)
    col = _expected_max_norm(n_in, n_out, rho, std)
    pred = max(bulk, row, col)
    return SparseNorm(bulk, row, col, pred, "dense" if bulk >= max(row, col) else "sparse")


@dataclasses.dataclass(frozen=True)
class SparseRank(_Result):
    """Expected rank of S alone (n_out × n_in) with a random support of density ρ.

    Fields
    ------
    expected_rank : float
        Asymptotic rank from the Poisson-degree formula (see :func:`sparse_rank`).
    nonempty_rows, nonempty_cols : float
        n_out(1 − (1−ρ)^{n_in}) and n_in(1 − (1−ρ)^{n_out}): expected numbers of non-zero
        rows and columns, whose minimum bounds the rank.
    bound : float
        min(nonempty_rows, nonempty_cols, n_out, n_in).
    full_rank : int
        min(n_in, n_out): the rank of αD + S for ‖S‖₂ < |α| (any density).
    """

    expected_rank: float
    nonempty_rows: float
    nonempty_cols: float
    bound: float
    full_rank: int


def sparse_rank(n_out: int, n_in: int, density: float) -> SparseRank:
    """Expected rank of a random sparse matrix with generic (e.g. Gaussian) nonzeros.

    With real generic values the rank equals the size of a maximum matching of the
    bipartite support graph. For i.i.d. Bernoulli(ρ) support, column degrees are ≈
    Poisson(d = ρ n_out) and row degrees ≈ Poisson(k = ρ n_in); the rank of sparse random
    matrices with such degrees is (Coja-Oghlan, Ergür, Gao, Hetterich & Rolvien,
    arXiv 1906.05757, Theorem 1.1, with Poisson generating functions)

        rank / n_in → 1 − max_{α ∈ [0, 1]} Φ(α),
        Φ(α) = exp(−d e^{−k(1−α)}) − (d/k)[1 − e^{−k(1−α)}(1 + k(1−α))],

    maximised on a 2001-point grid refined by a bounded scalar search. Expected counts of
    non-empty rows/columns give the elementary upper bound. The tests compare both with
    numpy ranks of simulated matrices.
    """
    rho = float(density_array(density))
    for name, n in (("n_out", n_out), ("n_in", n_in)):
        n = positive_int(n, name)
    d = rho * n_out  # mean column degree
    k = rho * n_in  # mean row degree

    def phi(alpha: np.ndarray) -> np.ndarray:
        beta = 1.0 - alpha
        e = np.exp(-k * beta)
        return np.exp(-d * e) - (d / k) * (1.0 - e * (1.0 + k * beta))

    grid = np.linspace(0.0, 1.0, 2001)
    vals = phi(grid)
    i = int(np.argmax(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = optimize.minimize_scalar(
        lambda a: -float(phi(np.array(a))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-12},
    )
    best = max(float(vals[i]), -float(res.fun))
    rank = min(max(n_in * (1.0 - best), 0.0), float(min(n_in, n_out)))
    rows = n_out * -math.expm1(n_in * math.log1p(-rho)) if rho < 1 else float(n_out)
    cols = n_in * -math.expm1(n_out * math.log1p(-rho)) if rho < 1 else float(n_in)
    return SparseRank(
        expected_rank=rank,
        nonempty_rows=rows,
        nonempty_cols=cols,
        bound=min(rows, cols, float(n_out), float(n_in)),
        full_rank=min(n_in, n_out),
    )
