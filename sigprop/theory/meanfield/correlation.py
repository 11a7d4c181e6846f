"""The correlation map C(c), its fixed point c*, χ_c and the depth scales ξ_q, ξ_c (Schoenholz et al. 2017, arXiv 1611.01232)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sigprop._json import to_jsonable
from sigprop.theory import gaussian
from sigprop.theory.activations import Activation, get_activation
from sigprop.theory.meanfield.common import _corr, _variance, sigma_arg
from sigprop.theory.meanfield.expectations import moments
from sigprop.theory.meanfield.fixed_point import (
    _raise_status,
    newton_bracketed,
    q_star,
    solve_q_star,
)
from sigprop.validate import InvalidInput

# ---------------------------------------------------------------------------------------
# the correlation map
# ---------------------------------------------------------------------------------------


def kernel(activation, q, c) -> tuple[np.ndarray, np.ndarray]:
    """(E[φ(u₁)φ(u₂)], E[φ′(u₁)φ′(u₂)]) for Var u_i = q, Corr = c (broadcast).

    Closed forms: ReLU family via the arc-cosine kernel (Cho & Saul 2009, NeurIPS, Eq. 6),
    k(c) = [√(1−c²) + (π − arccos c)c]/(2π) with leaky slope α giving
    q[(1+α²)k(c) − 2αk(−c)]; erf via Williams' arcsine kernel; linear qc. Otherwise the
    2-D composite quadrature :func:`sigprop.theory.gaussian.expect2`.
    """
    act = get_activation(activation)
    q, c = np.broadcast_arrays(_variance("q", q), _corr(c))
    closed = act.closed_kernel(q, c)
    if closed is not None:
        return closed
    pairs = [(act.phi, act.phi), (act.dphi, act.dphi)]
    K, dK = gaussian.expect2_pairs(pairs, q, q, c, kinks_f=act.kinks, kinks_g=act.kinks)
    return K, dK


def c_map(activation, sigma_w, sigma_b, c, q=None) -> np.ndarray:
    """Output correlation of a layer whose two inputs have variance q and correlation c.

    C(c) = (σ_w² E[φ(u₁)φ(u₂)] + σ_b²) / V(q), Var u_i = q (default q*), Corr u = c, where
    V(q) = σ_w² E[φ(u)²] + σ_b² is the output variance (the q-map), so C(1) = 1 at every q;
    at q = q* the denominator is q* itself. Poole et al. 2016, arXiv 1606.05340, eqs. 3 and 5
    (equal variances).
    """
    act = get_activation(activation)
    sw, sb, cc = np.broadcast_arrays(
        sigma_arg("sigma_w", sigma_w), sigma_arg("sigma_b", sigma_b), _corr(c)
    )
    qq = q_star(act, sw, sb) if q is None else _variance("q", q)
    qq = np.broadcast_to(qq, np.broadcast_shapes(np.shape(qq), sw.shape))
    if np.any(qq == 0):
        raise InvalidInput("the correlation map is undefined at q = 0 (no signal variance)")
    K, _ = kernel(act, qq, cc)
    K1, _ = kernel(act, qq, np.ones_like(cc))
    return (sw**2 * K + sb**2) / (sw**2 * K1 + sb**2)


@dataclass(frozen=True)
class _CState:
    q: np.ndarray
    chi1: np.ndarray
    c: np.ndarray
    chi_c: np.ndarray


def _c_state(act: Activation, sw, sb, kern) -> _CState:
    """q*, χ₁, c*, χ_c on flat arrays; ``kern(q, c, idx)`` gives (K, dK)."""
    qs, status = solve_q_star(act, sw, sb, lambda q: moments(act, q))
    _raise_status(act, status, sw, sb)
    x1 = sw**2 * moments(act, qs)["g1"]
    c, xc = solve_c_star(sw, sb, qs, x1, np.flatnonzero((x1 > 1.0) & (qs > 0)), kern)
    return _CState(qs, x1, c, xc)


def solve_c_star(sw, sb, qs, x1, chaos, kern, c0=None) -> tuple[np.ndarray, np.ndarray]:
    """(c*, χ_c) on flat arrays; only the indices ``chaos`` (χ₁ > 1) need a root.

    ``c0`` (optional) are starting points known to lie left of c* (G(c0) >= 0)."""
    w2, b2 = sw**2, sb**2
    c = np.ones_like(qs)
    xc = x1.copy()
    if chaos.size:

        def resid(cv, i):
            j = chaos[i]
            K, dK = kern(qs[j], cv, j)
            return (w2[j] * K + b2[j]) / qs[j] - cv, w2[j] * dK - 1.0

        # G(c) = C(c) − c is convex on [0, 1] (non-negative Hermite coefficients), G(0) >= 0,
        # G(1) = 0 with G′(1) = χ₁ − 1 > 0: one root in [0, 1), Newton from 0 is monotone.
        lo = np.zeros(chaos.size) if c0 is None else c0[chaos]
        hi = np.ones(chaos.size)
        cs = newton_bracketed(resid, lo, hi, x0=lo)
        c[chaos] = cs
        xc[chaos] = w2[chaos] * kern(qs[chaos], cs, chaos)[1]
    return c, xc


def _state(activation, sigma_w, sigma_b):
    act = get_activation(activation)
    sw, sb = np.broadcast_arrays(sigma_arg("sigma_w", sigma_w), sigma_arg("sigma_b", sigma_b))
    st = _c_state(act, sw.ravel(), sb.ravel(), lambda q, c, i: kernel(act, q, c))
    return act, sw, sb, st


def c_star(activation, sigma_w, sigma_b) -> np.ndarray:
    """Stable fixed point c* of the correlation map: 1 if χ₁ <= 1, else the root in [0, 1).

    Poole et al. 2016, arXiv 1606.05340, §3 (c* = 1 is stable iff χ₁ < 1; in the chaotic
    phase a second, stable fixed point c* < 1 appears). Solved by Newton's method from
    c = 0 with a bisection guard (C(c) − c is convex on [0, 1]).
    """
    _, sw, _, st = _state(activation, sigma_w, sigma_b)
    return st.c.reshape(sw.shape)


def chi_c(activation, sigma_w, sigma_b) -> np.ndarray:
    """χ_c = C′(c*) = σ_w² E[φ′(u₁)φ′(u₂)] at (q*, c*) (Schoenholz et al. 2017, eq. 9)."""
    _, sw, _, st = _state(activation, sigma_w, sigma_b)
    return st.chi_c.reshape(sw.shape)


@dataclass(frozen=True)
class DepthScales:
    """Depth scales of Schoenholz et al. 2017 (arXiv 1611.01232, eqs. 6–9).

    Attributes
    ----------
    xi_q:
        −1/log V′(q*): layers over which the variance relaxes to q* (finite on the EOC).
    xi_c:
        −1/log χ_c: layers over which correlations relax to c*; ``inf`` on the EOC.
    chi1, chi_c, q_star, c_star:
        The ingredients, same shape as ``xi_q``.

    ``to_dict()`` writes ``null`` for infinite depth scales.
    """

    xi_q: np.ndarray
    xi_c: np.ndarray
    chi1: np.ndarray
    chi_c: np.ndarray
    q_star: np.ndarray
    c_star: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self, "DepthScales")


def depth_scale(rate: np.ndarray) -> np.ndarray:
    """−1/log(rate) with rate in [0, 1): rate >= 1 gives inf, rate = 0 gives 0."""
    rate = np.asarray(rate, dtype=float)
    with np.errstate(divide="ignore"):
        lg = np.log(np.clip(rate, 0.0, None))
    out = np.where(lg < 0, -1.0 / np.where(lg < 0, lg, -1.0), np.inf)
    return np.where(rate <= 0, 0.0, out)


def depth_scales(activation, sigma_w, sigma_b) -> DepthScales:
    """ξ_q = −1/log V′(q*) and ξ_c = −1/log χ_c (Schoenholz et al. 2017, eqs. 6–9)."""
    act, sw, sb, st = _state(activation, sigma_w, sigma_b)
    vp = sw.ravel() ** 2 * moments(act, st.q)["dg0"]
    shape = sw.shape
    return DepthScales(
        xi_q=depth_scale(np.abs(vp)).reshape(shape),
        xi_c=depth_scale(st.chi_c).reshape(shape),
        chi1=st.chi1.reshape(shape),
        chi_c=st.chi_c.reshape(shape),
        q_star=st.q.reshape(shape),
        c_star=st.c.reshape(shape),
    )
