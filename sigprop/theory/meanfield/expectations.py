"""Gaussian moments of an activation: E[φ²], E[φ′²], … at variance q (closed forms, quadrature, the kink terms), and the tabulated moments of deep sweeps (MomentTable)."""

from __future__ import annotations

import functools
import math

import numpy as np

from sigprop.theory import gaussian
from sigprop.theory.activations import Activation, get_activation
from sigprop.theory.chebyshev import barycentric_rows, panel_nodes
from sigprop.theory.meanfield.common import _Q_TINY, _variance
from sigprop.validate import InvalidInput

# ---------------------------------------------------------------------------------------
# one-dimensional Gaussian moments of the activation
# ---------------------------------------------------------------------------------------


def moments(activation, q) -> dict[str, np.ndarray]:
    """Gaussian moments of φ at variance q (broadcast over ``q``).

    Returns ``g0`` = E[φ(√q z)²], ``g1`` = E[φ′(√q z)²] and ``dg0`` = d g0/dq
    = E[φ′² + φφ″] + Σ_kinks φ(b) [φ′(b⁺) − φ′(b⁻)] p_q(b) (Stein's lemma applied to φ²,
    Schoenholz et al. 2017, arXiv 1611.01232, eq. 7; the kink term is the delta function in
    (φ²)″ at a jump of φ′ where φ ≠ 0, e.g. hard tanh at ±1).
    """
    act = get_activation(activation)
    q = _variance("q", q)
    closed = act.closed_moments(q)
    if closed is not None:
        return {k: closed[k] for k in ("g0", "g1", "dg0")}
    return _quad_moments(act, q)


def _quad_moments(act: Activation, q: np.ndarray) -> dict[str, np.ndarray]:
    if act.kinks:  # at q = 0 report the q → 0⁺ limits (one-sided slopes at a kink)
        q = np.where(q == 0, _Q_TINY, q)
    z, w = gaussian.quadrature_rule(q, 0.0, act.kinks)
    x = np.sqrt(q)[..., None] * z
    f = act.phi(x)
    d = act.dphi(x)
    # a callable activation may have moments the window does not resolve (infinite ones)
    gaussian.require_resolved(z, w * f * f, gaussian.ZMAX, f"E[phi^2] of {act.name}")
    gaussian.require_resolved(z, w * d * d, gaussian.ZMAX, f"E[phi'^2] of {act.name}")
    g0 = np.sum(w * f * f, axis=-1)
    g1 = np.sum(w * d * d, axis=-1)
    if act.d2phi is not None:
        dg0 = g1 + np.sum(w * f * act.d2phi(x), axis=-1) + _kink_term(act, q)
    else:
        # derivative-free form of Stein's lemma: d/dq E[h(√q z)] = E[h(√q z)(z² − 1)]/(2q)
        with np.errstate(divide="ignore", invalid="ignore"):
            dg0 = np.sum(w * f * f * (z * z - 1.0), axis=-1) / (2.0 * q)
        small = q == 0
        if np.any(small):
            dg0 = np.where(small, float(act.dphi(np.array(0.0)) ** 2) + _phi0_d2(act), dg0)
    return {"g0": g0, "g1": g1, "dg0": dg0}


def _phi0_d2(act: Activation) -> float:
    """φ(0)φ″(0) for callables without φ″ (central difference of φ′, used only at q = 0)."""
    h = 1e-4
    d2 = (act.dphi(np.array(h)) - act.dphi(np.array(-h))) / (2 * h)
    return float(act.phi(np.array(0.0)) * d2)


def _kink_term(act: Activation, q: np.ndarray) -> np.ndarray:
    out = np.zeros_like(q)
    for b in act.kinks:
        eps = 1e-12 * max(1.0, abs(b))
        jump = float(act.dphi(np.array(b + eps)) - act.dphi(np.array(b - eps)))
        fb = float(act.phi(np.array(b)))
        if jump == 0.0 or fb == 0.0:
            continue
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            dens = np.exp(-0.5 * b * b / q) / np.sqrt(2 * np.pi * q)
        out = out + fb * jump * np.where(q > 0, dens, 0.0)
    return out


# ---------------------------------------------------------------------------------------
# interpolation tables for whole (σ_w, σ_b) grids
# ---------------------------------------------------------------------------------------

_TABLED = ("g0", "g1", "dg0", "dg1")


def moments_with_dg1(act: Activation, q: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`moments` plus dg1 = d/dq E[φ′(√q z)²] (derivative-free Stein identity
    d/dq E[h(√q z)] = E[h(√q z)(z² − 1)]/(2q); closed form for erf, 0 for the ReLU family)."""
    q = np.asarray(q, dtype=float)
    closed = act.closed_moments(q)
    if closed is not None:
        return closed
    m = moments(act, q)
    qq = np.where(q > 0, q, _Q_TINY)
    z, w = gaussian.quadrature_rule(qq, 0.0, act.kinks)
    d = act.dphi(np.sqrt(qq)[..., None] * z)
    m["dg1"] = np.where(q > 0, np.sum(w * d * d * (z * z - 1.0), axis=-1) / (2.0 * qq), 0.0)
    return m


#: Chebyshev points per panel of :class:`MomentTable`
_CHEB_D = 20


class MomentTable:
    """Piecewise Chebyshev interpolants, in s = √q, of the Gaussian moments of φ.

    Every mean-field quantity at a grid point (σ_w, σ_b) depends on the activation only
    through functions of one variable q (the moments g0, g1, dg0 of :func:`moments`) and,
    for the correlation map, through the Hermite coefficients a_k(q) of φ(√q z)
    (:func:`sigprop.theory.gaussian.hermite_coefficients`). Tabulating them once on
    Chebyshev points of geometric panels [0, 2⁻¹⁰], [2⁻¹⁰, 2⁻⁹], ..., [2^{m−1}, 2^m] ⊇
    [0, s_top] (20 points each; barycentric interpolation, Berrut & Trefethen 2004) turns
    a 256×256 phase diagram into a few vectorised passes. In s the tabulated functions are
    smooth down to s = 0 (a_k ∝ s^k), and each panel is at a relative distance ≥ 1 from
    the imaginary axis, where their singularities lie, so interpolation is accurate to
    ~1e-14 (tested against direct quadrature). Queries with s > 2^m fall back to direct
    quadrature.
    """

    def __init__(self, activation, s_top: float, hermite_terms: int = 0):
        self.act = get_activation(activation)
        top = max(-9, math.ceil(math.log2(max(s_top, 2.0**-9))))
        self.edges = np.concatenate([[0.0], 2.0 ** np.arange(-10, top + 1)])
        self.s_nodes = panel_nodes(self.edges, _CHEB_D)
        q = self.s_nodes.ravel() ** 2
        m = moments_with_dg1(self.act, q)
        self.values = np.stack([m[k] for k in _TABLED], axis=-1).reshape(
            self.s_nodes.shape + (len(_TABLED),)
        )
        self.hermite_terms = int(hermite_terms)
        self.hermite = None
        if self.hermite_terms:
            coef = gaussian.hermite_coefficients(
                self.act.phi, q, self.hermite_terms, kinks=self.act.kinks
            )
            self.hermite = coef.reshape(self.s_nodes.shape + (self.hermite_terms,))
            # per panel, the terms that matter: |a_k| > 1e-14 √E[φ²] somewhere on the panel
            # (the coefficients themselves then agree with direct projection to ~1e-14, not
            # only the kernel Σ a_k² c^k; a cut at a_k² > 1e-18 E[φ²] zeroed a_61 = 1.4e-13
            # of tanh at q = 1/8)
            g0 = self.values[..., 0].max(axis=1, keepdims=True)
            keep = np.max(np.abs(self.hermite), axis=1) > 1e-14 * np.sqrt(g0 + 1e-300)
            last = np.where(keep.any(axis=1), self.hermite_terms - np.argmax(keep[:, ::-1], 1), 1)
            self.panel_terms = np.minimum(last + 1, self.hermite_terms)

    @property
    def s_max(self) -> float:
        return float(self.edges[-1])

    def _locate(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Panel index and barycentric weight rows (len(s), D) for s within the table."""
        return barycentric_rows(self.edges, s, _CHEB_D)

    def moments(self, q) -> dict[str, np.ndarray]:
        """:func:`moments` (g0, g1, dg0) plus dg1 = d g1/dq, interpolated where s = √q is
        tabulated."""
        q = np.asarray(q, dtype=float)
        flat = q.ravel()
        s = np.sqrt(flat)
        inside = s <= self.s_max
        out = np.empty((flat.size, len(_TABLED)))
        if np.any(inside):
            panel, lw = self._locate(s[inside])
            out[inside] = np.einsum("pd,pdk->pk", lw, self.values[panel])
        if not np.all(inside):
            m = moments_with_dg1(self.act, flat[~inside])
            out[~inside] = np.stack([m[k] for k in _TABLED], axis=-1)
        return {k: out[:, i].reshape(q.shape) for i, k in enumerate(_TABLED)}

    def hermite_coefficients(self, q) -> np.ndarray:
        """a_k(q), k < hermite_terms, shape (len(q), K); direct projection beyond the table."""
        if self.hermite is None:
            raise InvalidInput("this table was built without Hermite coefficients")
        q = np.asarray(q, dtype=float).ravel()
        s = np.sqrt(q)
        out = np.empty((q.size, self.hermite_terms))
        inside = s <= self.s_max
        if np.any(inside):
            idx = np.flatnonzero(inside)
            panel, lw = self._locate(s[idx])
            out[idx] = 0.0
            for p in np.unique(panel):
                sel = panel == p
                k = self.panel_terms[p]
                out[idx[sel], :k] = lw[sel] @ self.hermite[p][:, :k]
        if not np.all(inside):
            out[~inside] = gaussian.hermite_coefficients(
                self.act.phi, q[~inside], self.hermite_terms, kinks=self.act.kinks
            )
        return out


@functools.lru_cache(maxsize=8)
def moment_table(activation: Activation, s_top_log2: int, hermite_terms: int) -> MomentTable:
    """Cached :class:`MomentTable` covering s ≤ 2^s_top_log2."""
    return MomentTable(activation, 2.0**s_top_log2, hermite_terms)
