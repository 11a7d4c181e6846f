"""The first two moments of JJᵀ (arXiv 1711.04735 §2.5, eq. 17)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from sigprop._json import to_jsonable
from sigprop.theory.spectra.common import (
    S1,
    check_depth,
    check_weights,
)
from sigprop.theory.spectra.layers import exp_or_inf, fixed_point_q, layer_arrays, layer_laws
from sigprop.validate import InvalidInput

# --------------------------------------------------------------------------------------
# Moments of JJᵀ
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JacobianMoments:
    """First two moments of the squared singular values of J (arXiv 1711.04735 §2.5).

    Fields
    ------
    m1 : float
        (1/N) E tr JJᵀ = Π_l χ_l (= χ₁^L for equal layers); ``inf`` past float64 range
        (deep chaotic networks), when ``log_m1`` still holds the value.
    m2 : float
        (1/N) E tr (JJᵀ)² = m1² (1 + Σ_l (μ₂,l/μ₁,l² − 1 − s₁,l)).
    variance : float
        σ²_{JJᵀ} = m2 − m1² (arXiv 1711.04735 eq. 17 for equal layers), evaluated as
        m1² · Σ_l (μ₂,l/μ₁,l² − 1 − s₁,l), without the cancellation of m2 − m1².
    chi : ndarray, shape (L,)
        χ_l = σ_{w,l}² μ₁,l per layer.
    mu1, mu2 : ndarray, shape (L,)
        μ_k,l = E[φ′(h_l)^{2k}], h_l ~ N(0, q_l).
    s1 : ndarray, shape (L,)
        S_{WWᵀ} = σ_w⁻²(1 + s₁ z + …): −1 Gaussian, 0 orthogonal.
    q : ndarray, shape (L,)
        Pre-activation variance of each layer.
    sigma_w : ndarray, shape (L,)
        Weight standard deviation (times √fan_in) of each layer.
    weights : str
        ``"gaussian"`` or ``"orthogonal"``.
    """

    m1: float
    m2: float
    variance: float
    chi: np.ndarray
    mu1: np.ndarray
    mu2: np.ndarray
    s1: np.ndarray
    q: np.ndarray
    sigma_w: np.ndarray
    weights: str

    @property
    def depth(self) -> int:
        return int(self.chi.size)

    @property
    def log_m1(self) -> float:
        """log m1 = Σ_l log χ_l: finite even where ``m1`` overflows or underflows."""
        return float(np.sum(np.log(self.chi)))

    @property
    def normalized_variance(self) -> float:
        """σ²_{JJᵀ} / m1² = Σ_l (μ₂,l/μ₁,l² − 1 − s₁,l), additive over layers under free
        multiplication (arXiv 1711.04735 eq. 17); finite at any depth."""
        return float(np.sum(self.mu2 / self.mu1**2 - 1.0 - self.s1))

    def to_dict(self) -> dict[str, Any]:
        out = to_jsonable(self, type(self).__name__)
        out["depth"] = self.depth
        out["log_m1"] = self.log_m1
        out["normalized_variance"] = self.normalized_variance
        return out


def jacobian_moments_layers(
    activation: Any, sigma_w: Any, q: Any, weights: str = "gaussian"
) -> JacobianMoments:
    """Moments of JJᵀ for layers with their own σ_w and pre-activation variance q.

    Per layer l (J = Π D^l W^l, W^l with entries of variance σ_{w,l}²/N, D^l = φ′(h^l),
    h^l ~ N(0, q_l)): the free multiplicative convolution multiplies the means and adds
    the normalised variances, since log S(z) = −log m₁ − (m₂/m₁² − 1) z + O(z²)
    (arXiv 1711.04735 eq. 10–17, generalised from equal layers to a product over layers):

        m1 = Π_l σ_{w,l}² μ₁,l,   m2/m1² − 1 = Σ_l (μ₂,l/μ₁,l² − 1 − s₁,l).

    A layer pruned to density ρ (random mask) has effective σ_w² = ρσ_w² at width → ∞
    (see :func:`sigprop.theory.sparse.effective_sigma_w`); pass that σ_w here.

    Parameters
    ----------
    activation : activation spec accepted by ``activations.get_activation``, or a list of
        L specs, one per layer (``"linear"`` for a layer without nonlinearity).
    sigma_w : float or array (L,)
        Weight standard deviations (entries N(0, σ_w²/fan_in)).
    q : float or array (L,)
        Variance of the pre-activation of each layer (what φ′ is evaluated on).
    weights : ``"gaussian"`` or ``"orthogonal"``.
    """
    weights = check_weights(weights)
    sw, qq = layer_arrays(sigma_w, q)
    laws, index = layer_laws(activation, qq, 128)
    mu1 = np.array([laws[i].moment(1) for i in index])
    mu2 = np.array([laws[i].moment(2) for i in index])
    if np.any(mu1 <= 0):
        raise InvalidInput("E[φ′(h)²] = 0 on some layer: the Jacobian vanishes identically")
    chi = sw**2 * mu1
    s1 = np.full(sw.shape, S1[weights])
    # Products in log space: χ^L over/underflows for deep networks away from the EOC; inf
    # (or 0) is then the honest float64 value, without overflow warnings or inf − inf.
    log_m1 = float(np.sum(np.log(chi)))
    nvar = float(np.sum(mu2 / mu1**2 - 1.0 - s1))
    m1 = exp_or_inf(log_m1)
    m2 = exp_or_inf(2.0 * log_m1 + math.log1p(nvar))
    variance = exp_or_inf(2.0 * log_m1 + math.log(nvar)) if nvar > 0 else 0.0
    return JacobianMoments(
        m1=m1,
        m2=m2,
        variance=variance,
        chi=chi,
        mu1=mu1,
        mu2=mu2,
        s1=s1,
        q=qq,
        sigma_w=sw,
        weights=weights,
    )


def jacobian_moments(
    activation: Any,
    sigma_w: float,
    sigma_b: float,
    depth: int,
    weights: str = "gaussian",
    q: float | None = None,
) -> JacobianMoments:
    """Moments of JJᵀ for ``depth`` equal layers (arXiv 1711.04735 eq. 16–17).

    m1 = χ₁^L and σ²_{JJᵀ} = m1² L (μ₂/μ₁² − 1 − s₁), with μ_k = E[φ′(√q z)^{2k}] and
    s₁ = −1 (Gaussian) or 0 (orthogonal). ``q=None`` uses the fixed point q*(σ_w, σ_b)
    (``meanfield.q_star``), i.e. inputs already on the fixed point, as in the paper.
    At criticality this gives L (linear Gaussian), 0 (linear orthogonal), 2L (ReLU
    Gaussian, m1 = 1) and L (ReLU orthogonal).
    """
    depth = check_depth(depth)
    qq = fixed_point_q(activation, sigma_w, sigma_b, q)
    return jacobian_moments_layers(
        activation, np.full(depth, float(sigma_w)), np.full(depth, qq), weights
    )
