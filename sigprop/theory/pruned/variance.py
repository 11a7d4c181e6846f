"""A mask's effect on the variance map and the rescaling trick (Hayou et al. 2021,
arXiv 2002.08797, §3–4 and Algorithm 1)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import special

from sigprop.theory.pruned.common import Result, check_mask
from sigprop.validate import InvalidInput, density_array

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
        # φ(t) written out (scipy.stats's import alone costs every torch-side start ~0.2 s)
        tail = np.where(
            np.isfinite(t), 2.0 * t * np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi), 0.0
        )
    return rho + tail


def mask_variance_factor(density: Any, mask: str = "random") -> np.ndarray:
    """Factor on σ_w² from a mask of density ρ: ρ (random) or κ(ρ) (magnitude).

    A random mask keeps each weight independently of its value, so Σ_j W_ij² δ_ij has
    expectation ρσ_w² and the q-map and χ₁ see σ_w² → ρσ_w² (arXiv 2002.08797, §3); a
    magnitude mask keeps the largest |W| and retains κ(ρ) of the variance.
    """
    mask = check_mask(mask)
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
    (Hayou et al., arXiv 2002.08797, §4: dividing by σ_w², not σ_w⁴ as their code does). A unit with nothing
    kept (ρ = 0) has no finite factor and is returned as ``inf``; ``rescale_`` leaves such
    rows at zero.
    """
    factor = mask_variance_factor(density, mask)
    with np.errstate(divide="ignore"):
        return np.where(factor > 0, 1.0 / np.sqrt(np.where(factor > 0, factor, 1.0)), np.inf)


@dataclasses.dataclass(frozen=True)
class PrunedPropagation(Result):
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

    check_mask(mask)
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
