"""Gaussian moments with means for activations without a closed form (tanh, GELU, SiLU...).

Univariate moments E[φ(X)], E[φ(X)²], E[φ′(X)²], X ~ N(μ, v), elementwise:

* μ = 0 (the usual case after a zero-mean-weight layer without bias): piecewise Chebyshev
  interpolants in s = √v on geometric panels [0, 2⁻⁸], [2⁻⁸, 2⁻⁷], ..., [32, 64]
  (16 points each, barycentric form, Berrut & Trefethen 2004, SIAM Rev. 46) of values
  computed by :func:`sigprop.theory.gaussian.expect` (round-off accurate);
* otherwise a composite Gauss–Legendre rule from
  :func:`sigprop.theory.gaussian.quadrature_rule` with panel edges at the kinks and at
  x ∈ {0, ±½, ±1, ±2, ±4, ±8} (≤ 2e-7 relative error for the registered activations,
  tested), evaluated once per distinct (μ, v).

Bivariate moments for equal marginals N(μ, v) and correlation ρ use Mehler's expansion
(Mehler 1866; the dual-activation form of Daniely et al. 2016, arXiv 1602.05897, §4):
E[φ(X)φ(Y)] = Σ_k a_k² ρ^k, a_k = E[φ(μ + s z) He_k(z)]/√(k!), written as
E[φ²] − Σ_{k<K} a_k² (1 − ρ^k) so that ρ = 1 is exact; the truncation error is at most
at most the left-out mass E[φ²] − Σ_{k<K} a_k² (:meth:`Smooth.tail`); where that exceeds
1e-9 E[φ²] (large s for sign-like φ) a nested composite quadrature E[φ(X) E[φ(Y) | X]]
is used instead (about 3·10⁴ evaluations of φ per element).
"""

from __future__ import annotations

import functools

import numpy as np

from sigprop.theory import gaussian
from sigprop.theory.activations import Activation
from sigprop.theory.chebyshev import barycentric_rows, panel_nodes

__all__ = ["Smooth", "HERMITE_TERMS"]

HERMITE_TERMS = 32
_EDGES = np.concatenate([[0.0], 2.0 ** np.arange(-8, 7)])
_D = 16  # Chebyshev points per panel
_LADDER = (0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 4.0, -4.0, 8.0, -8.0)
_CHUNK = 8192


class Smooth:
    """Moments of a generic :class:`~sigprop.theory.activations.Activation`."""

    def __init__(self, act: Activation):
        self.act = act
        self.name = act.name
        self.kinks = tuple(act.kinks)
        self._table = None

    # -- the zero-mean table --------------------------------------------------------
    def _build(self):
        s = panel_nodes(_EDGES, _D).ravel()
        q = s * s
        act = self.act
        vals = [
            gaussian.expect(act.phi, q, kinks=self.kinks),
            gaussian.expect(lambda x: act.phi(x) ** 2, q, kinks=self.kinks),
            gaussian.expect(lambda x: act.dphi(x) ** 2, q, kinks=self.kinks),
        ]
        coef = gaussian.hermite_coefficients(act.phi, q, HERMITE_TERMS, kinks=self.kinks)
        table = np.concatenate([np.stack(vals, axis=-1), coef], axis=-1)
        self._table = table.reshape(len(_EDGES) - 1, _D, -1)
        return self._table

    def _interp(self, s: np.ndarray) -> np.ndarray:
        table = self._table if self._table is not None else self._build()
        panel, lw = barycentric_rows(_EDGES, s, _D)
        return np.einsum("ed,edk->ek", lw, table[panel])

    # -- direct quadrature ----------------------------------------------------------
    def _direct(self, mu: np.ndarray, v: np.ndarray, hermite: bool) -> np.ndarray:
        """Columns m1, m2, d2 (and a_k with ``hermite``) for flat arrays mu, v."""
        kinks = self.kinks + _LADDER
        ncol = 3 + (HERMITE_TERMS if hermite else 0)
        out = np.empty((mu.size, ncol))
        for lo in range(0, mu.size, _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            if hermite:  # finer panels: h_k oscillates on the scale 1/√k
                z, w = gaussian.quadrature_rule(
                    v[sl], mu[sl], kinks, hz=1.0, order=12, ladder=False
                )
            else:
                z, w = gaussian.quadrature_rule(v[sl], mu[sl], kinks, hz=1.5, order=8, ladder=False)
            x = mu[sl, None] + np.sqrt(v[sl])[:, None] * z
            f, d = self.act.phi(x), self.act.dphi(x)
            out[sl, 0] = np.sum(w * f, axis=-1)
            out[sl, 1] = np.sum(w * f * f, axis=-1)
            out[sl, 2] = np.sum(w * d * d, axis=-1)
            if hermite:
                out[sl, 3:] = np.einsum(
                    "em,em,emk->ek", w, f, gaussian.hermite_functions(z, HERMITE_TERMS)
                )
        return out

    def _columns(self, mu, v, hermite: bool) -> np.ndarray:
        mu, v = np.broadcast_arrays(np.asarray(mu, dtype=float), np.asarray(v, dtype=float))
        shape = mu.shape
        mu, v = mu.ravel(), np.maximum(v.ravel(), 0.0)
        s = np.sqrt(v)
        ncol = 3 + (HERMITE_TERMS if hermite else 0)
        out = np.empty((mu.size, ncol))
        tab = (mu == 0) & (s <= _EDGES[-1])
        if np.any(tab):
            out[tab] = self._interp(s[tab])[:, :ncol]
        rest = np.flatnonzero(~tab)
        if rest.size:
            keys = np.stack([mu[rest], v[rest]], axis=1)
            uniq, inv = np.unique(keys, axis=0, return_inverse=True)
            out[rest] = self._direct(uniq[:, 0], uniq[:, 1], hermite)[np.ravel(inv)]
        return out.reshape(shape + (ncol,))

    # -- public ---------------------------------------------------------------------
    def phi(self, x):
        return self.act.phi(x)

    def dphi(self, x):
        return self.act.dphi(x)

    def moments(self, mu, v) -> dict[str, np.ndarray]:
        """E[φ(X)], E[φ(X)²], E[φ′(X)²] for X ~ N(μ, v), elementwise."""
        c = self._columns(mu, v, hermite=False)
        return {"m1": c[..., 0], "m2": c[..., 1], "d2": c[..., 2]}

    def cross(self, mu, v, rho) -> np.ndarray:
        """E[φ(X)φ(Y)], X, Y ~ N(μ, v) with correlation ρ (Mehler where its truncated
        tail is below 1e-9 E[φ²], nested quadrature elsewhere; see module doc)."""
        mu, v, rho = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (mu, v, rho)))
        rho = np.clip(rho, -1.0, 1.0)
        c = self._columns(mu, v, hermite=True)
        a2 = c[..., 3:] ** 2
        powers = rho[..., None] ** np.arange(HERMITE_TERMS)
        out = c[..., 1] - np.sum(a2 * (1.0 - powers), axis=-1)
        tail = c[..., 1] - np.sum(a2, axis=-1)
        bad = tail > 1e-9 * np.abs(c[..., 1]) + 1e-300
        if np.any(bad):
            out = np.array(out, dtype=float, copy=True).reshape(mu.shape)
            out[bad] = self._nested(mu[bad], v[bad], rho[bad])
        return out

    def dcross(self, mu, v, rho) -> np.ndarray:
        """E[φ′(X)φ′(Y)] = ∂E[φ(X)φ(Y)]/∂Cov (Price 1958, IRE Trans. Inf. Theory 4):
        Σ_k k a_k² ρ^{k−1}/v from the Mehler coefficients; nested quadrature of φ′ where
        the truncated tail Σ_{k≥K} k a_k² may matter."""
        mu, v, rho = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (mu, v, rho)))
        rho = np.clip(rho, -1.0, 1.0)
        c = self._columns(mu, v, hermite=True)
        a2 = c[..., 3:] ** 2
        k = np.arange(HERMITE_TERMS)
        with np.errstate(divide="ignore", invalid="ignore"):
            series = np.sum(k * a2 * rho[..., None] ** np.maximum(k - 1, 0), axis=-1) / v
        tail = c[..., 1] - np.sum(a2, axis=-1)
        bad = (tail > 1e-12 * np.abs(c[..., 1]) + 1e-300) | ~(v > 0)
        out = np.array(series, dtype=float, copy=True).reshape(mu.shape)
        if np.any(bad):
            out[bad] = self._nested(mu[bad], v[bad], rho[bad], self.act.dphi)
        return out

    def _nested(self, mu: np.ndarray, v: np.ndarray, rho: np.ndarray, fn=None) -> np.ndarray:
        """E[f(X) E[f(Y) | X]] by nested composite quadrature, Y | X Gaussian (f = φ by
        default)."""
        fn = self.act.phi if fn is None else fn
        kinks = self.kinks + _LADDER
        out = np.empty(mu.size)
        for lo in range(0, mu.size, 32):
            sl = slice(lo, lo + 32)
            m, var, r = mu[sl], np.maximum(v[sl], 0.0), rho[sl]
            z1, w1 = gaussian.quadrature_rule(var, m, kinks, hz=1.5, order=8, ladder=False)
            s = np.sqrt(var)[:, None]
            x = m[:, None] + s * z1
            m2 = m[:, None] + s * r[:, None] * z1
            v2 = np.broadcast_to((var * (1.0 - r * r))[:, None], m2.shape)
            z2, w2 = gaussian.quadrature_rule(v2, m2, kinks, hz=1.5, order=8, ladder=False)
            y = m2[..., None] + np.sqrt(v2)[..., None] * z2
            inner = np.sum(w2 * fn(y), axis=-1)
            out[sl] = np.sum(w1 * fn(x) * inner, axis=-1)
        return out

    def tail(self, mu, v) -> np.ndarray:
        """E[φ²] − Σ_{k<K} a_k²: the mass the Mehler truncation leaves out."""
        c = self._columns(mu, v, hermite=True)
        return c[..., 1] - np.sum(c[..., 3:] ** 2, axis=-1)


@functools.lru_cache(maxsize=32)
def smooth(act: Activation) -> Smooth:
    """Cached :class:`Smooth` (its table is built on first use)."""
    return Smooth(act)
