"""The Fuss–Catalan law: squared singular values of a product of Ginibre matrices (linear
Gaussian networks; Pennington, Schoenholz & Ganguli 2017, arXiv 1711.04735, §3)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sigprop.theory.gaussian import legendre_rule
from sigprop.theory.spectra.common import check_depth
from sigprop.validate import InvalidInput

# --------------------------------------------------------------------------------------
# Fuss–Catalan: squared singular values of a product of Ginibre matrices
# --------------------------------------------------------------------------------------


def fuss_catalan_moments(depth: int, kmax: int) -> np.ndarray:
    """Moments m_0..m_kmax of the Fuss–Catalan law of order ``depth``.

    The squared singular values of a product of ``depth`` independent N×N matrices with
    i.i.d. N(0, 1/N) entries converge to the Fuss–Catalan law, whose moments are
    m_k = C((L+1)k, k) / (Lk + 1) (Penson & Życzkowski 2011, arXiv 1103.3453, eq. 2;
    Pennington et al. 2017, arXiv 1711.04735, §2.4). Entry ``k`` of the result is m_k
    (m_0 = 1); integers are exact up to conversion to float64.
    """
    depth = check_depth(depth)
    if isinstance(kmax, bool) or not isinstance(kmax, int | np.integer) or kmax < 0:
        raise InvalidInput(f"kmax must be a non-negative integer, got {kmax!r}")
    return np.array(
        [float(math.comb((depth + 1) * k, k) // (depth * k + 1)) for k in range(kmax + 1)]
    )


def fuss_catalan_edge(depth: int) -> float:
    """Upper edge (L+1)^{L+1} / L^L of the Fuss–Catalan support [0, edge] (arXiv 1103.3453)."""
    depth = check_depth(depth)
    return float(math.exp((depth + 1) * math.log(depth + 1) - depth * math.log(depth)))


def _fc_u(phi: np.ndarray, s: int) -> np.ndarray:
    """x(φ) of the Fuss–Catalan parametrisation, decreasing from the edge to 0 on (0, π/(s+1))."""
    return np.exp(
        (s + 1) * np.log(np.sin((s + 1) * phi)) - np.log(np.sin(phi)) - s * np.log(np.sin(s * phi))
    )


def _fc_density_phi(phi: np.ndarray, s: int) -> np.ndarray:
    return np.sin(phi) ** 2 * np.sin(s * phi) ** (s - 1) / (np.pi * np.sin((s + 1) * phi) ** s)


def _fc_phi_of_x(x: np.ndarray, s: int) -> np.ndarray:
    """Invert the monotone map φ ↦ x(φ) by vectorised bisection on log x (exact to 1 ulp)."""
    lo = np.zeros_like(x)
    hi = np.full_like(x, np.pi / (s + 1))
    logx = np.log(x)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        # x(φ) decreases in φ: if x(mid) > x the root lies to the right.
        right = np.log(_fc_u(mid, s)) > logx
        lo = np.where(right, mid, lo)
        hi = np.where(right, hi, mid)
    return 0.5 * (lo + hi)


def fuss_catalan_density(depth: int, x: Any) -> np.ndarray:
    """Density of the Fuss–Catalan law of order ``depth`` at ``x`` (0 outside (0, edge)).

    Uses the parametrisation of the Fuss–Catalan law (Haagerup & Möller; Forrester & Liu;
    stated as Prop. 1.1 of Młotkowski, Sakuma & Ueda, arXiv 1908.07887): for
    φ ∈ (0, π/(L+1)),

        x(φ) = sin((L+1)φ)^{L+1} / (sin φ · sin(Lφ)^L),
        p(x(φ)) = sin²φ · sin(Lφ)^{L−1} / (π · sin((L+1)φ)^L),

    inverted in φ by bisection. For L = 1 this is Marchenko–Pastur, √((4−x)/x)/(2π).
    The density diverges like x^{−L/(L+1)} at 0.
    """
    s = check_depth(depth)
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    inside = (x > 0) & (x < fuss_catalan_edge(s))
    if np.any(inside):
        phi = _fc_phi_of_x(x[inside], s)
        out[inside] = _fc_density_phi(phi, s)
    return out


def fuss_catalan_cdf(depth: int, x: Any) -> np.ndarray:
    """Cumulative distribution function of the Fuss–Catalan law of order ``depth``.

    F(x(φ)) = ∫_φ^{π/(L+1)} p(x(t)) |x′(t)| dt in the parametrisation of
    :func:`fuss_catalan_density`; the integrand is smooth in t, so a 96-point
    Gauss–Legendre rule per evaluation is exact to about 1e-13.
    """
    s = check_depth(depth)
    x = np.asarray(x, dtype=np.float64)
    out = np.where(x >= fuss_catalan_edge(s), 1.0, 0.0)
    inside = (x > 0) & (x < fuss_catalan_edge(s))
    if np.any(inside):
        phi = _fc_phi_of_x(x[inside], s)
        end = np.pi / (s + 1)
        nodes, wts = legendre_rule(96)
        # Map [-1, 1] onto [phi, end] for every evaluation point.
        half = 0.5 * (end - phi)[:, None]
        t = phi[:, None] + half * (nodes[None, :] + 1.0)
        # |x'(t)| = x(t) · |d log x / dt|.
        dlog = (s + 1) ** 2 / np.tan((s + 1) * t) - 1.0 / np.tan(t) - s * s / np.tan(s * t)
        integrand = _fc_density_phi(t, s) * _fc_u(t, s) * np.abs(dlog)
        out[inside] = np.sum(integrand * wts[None, :] * half, axis=1)
    return np.clip(out, 0.0, 1.0)
