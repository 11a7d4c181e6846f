"""Residual networks in the mean-field limit: the residual q-map and Stable ResNet's 1/√L
branch scaling (Hayou et al. 2021, arXiv 2002.08797, §5; Yang & Schoenholz 2017,
arXiv 1712.08969, §3)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sigprop.validate import InvalidInput

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
