"""Closed-form Gaussian moments and dual kernels of the activations that have them.

Each function takes the activation's ``kind`` and parameters and returns ``None`` where no
closed form is known; :class:`~sigprop.theory.activations.Activation` exposes them as
methods, and the mean-field maps fall back to quadrature on ``None``.

* ReLU family φ(x) = max(x, 0) + α min(x, 0) and linear (α = 1): positively homogeneous,
  E[φ(√q z)²] = q(1 + α²)/2; dual kernel from the arc-cosine kernel of degree 1 (Cho & Saul
  2009, NeurIPS, Eq. 6), k(c) = [√(1−c²) + (π − arccos c)c]/(2π), giving
  K = q[(1 + α²)k(c) − 2αk(−c)] and ∂K/∂(qc) = [(1 + α²)(π − arccos c) + 2α arccos c]/(2π).
* erf: E[erf(u)erf(v)] = (2/π) arcsin(2Σ₁₂/√((1+2Σ₁₁)(1+2Σ₂₂))) (Williams 1997,
  Neural Computation 10(5)), hence g0, g1 = 4/(π√(1+4q)) and their q-derivatives.
"""

from __future__ import annotations

import numpy as np

__all__ = ["homogeneous_gain", "moments", "kernel"]


def homogeneous_gain(kind: str, alpha: float) -> float | None:
    """E[φ(z)²] for a positively homogeneous φ (linear, ReLU family), else ``None``:
    then E[φ(√q z)²] = gain·q and E[φ′²] = gain at every q."""
    if kind == "linear":
        return 1.0
    if kind == "relu":
        return 0.5 * (1.0 + alpha * alpha)
    return None


def moments(kind: str, alpha: float, q: np.ndarray) -> dict[str, np.ndarray] | None:
    """``g0`` = E[φ²], ``g1`` = E[φ′²], ``dg0`` = dg0/dq, ``dg1`` = dg1/dq at variance q."""
    gain = homogeneous_gain(kind, alpha)
    if gain is not None:
        return {
            "g0": gain * q,
            "g1": np.full_like(q, gain),
            "dg0": np.full_like(q, gain),
            "dg1": np.zeros_like(q),
        }
    if kind == "erf":
        r = np.sqrt(1.0 + 4.0 * q)
        return {
            "g0": (2.0 / np.pi) * np.arcsin(2.0 * q / (1.0 + 2.0 * q)),
            "g1": 4.0 / (np.pi * r),
            "dg0": 4.0 / (np.pi * (1.0 + 2.0 * q) * r),
            "dg1": -8.0 / (np.pi * r**3),
        }
    return None


def kernel(kind: str, alpha: float, q: np.ndarray, c: np.ndarray):
    """``(K, dK)``: K = E[φ(u₁)φ(u₂)] and dK = E[φ′(u₁)φ′(u₂)] for Var u = q, Corr u = c."""
    if homogeneous_gain(kind, alpha) is not None:
        a = alpha
        ac = np.arccos(np.clip(c, -1.0, 1.0))
        k = (np.sqrt(np.maximum(1.0 - c * c, 0.0)) + (np.pi - ac) * c) / (2 * np.pi)
        km = (np.sqrt(np.maximum(1.0 - c * c, 0.0)) - ac * c) / (2 * np.pi)  # k(−c)
        K = q * ((1 + a * a) * k - 2 * a * km)
        dK = ((1 + a * a) * (np.pi - ac) + 2 * a * ac) / (2 * np.pi)
        return K, dK
    if kind == "erf":
        r = 2.0 * q / (1.0 + 2.0 * q)
        K = (2.0 / np.pi) * np.arcsin(r * c)
        with np.errstate(divide="ignore", invalid="ignore"):
            dK = np.where(q > 0, (2.0 / np.pi) * r / np.sqrt(1.0 - (r * c) ** 2) / q, 4 / np.pi)
        return K, dK
    return None
