"""Gaussian moments of piecewise-linear activations with non-zero means, in closed form.

Every continuous piecewise-linear φ is φ(x) = a0 + a1·x + Σ_k c_k (x − b_k)⁺ (ReLU, leaky
ReLU, hard tanh, ReLU6 = min(max(x, 0), 6), the identity). For X ~ N(μ, s²) and, for the
bivariate moments, (X, Y) with equal marginals and correlation ρ, every term reduces to
truncated moments of the univariate and bivariate normal:

* E[(X − b)⁺] = uΦ(α) + sϕ(α), E[((X − b)⁺)²] = (u² + s²)Φ(α) + usϕ(α), u = μ − b, α = u/s;
* E[(U − h)⁺(V − k)⁺] for a standard bivariate normal (U, V; ρ) from
  L = P(U > h, V > k), E[U 1] = ϕ(h)Φ((ρh − k)/r) + ρϕ(k)Φ((ρk − h)/r) and
  E[UV 1] = ρL + ρhϕ(h)Φ((ρh − k)/r) + ρkϕ(k)Φ((ρk − h)/r) + rϕ(h)ϕ((k − ρh)/r),
  r = √(1 − ρ²) (Rosenbaum 1961, J. R. Stat. Soc. B 23, "Moments of a truncated bivariate
  normal distribution"); the orthant probability L from Owen's T function (Owen 1956,
  Ann. Math. Stat. 27, eq. 2.1), vectorised by ``scipy.special.owens_t``.

Exact up to round-off (tested against 2-D quadrature); |ρ| is clipped to 1 − 1e-12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from sigprop.validate import InvalidInput

__all__ = ["PiecewiseLinear", "bvn_upper"]

_RHO_MAX = 1.0 - 1e-12
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _pdf(x):
    return _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def bvn_upper(h, k, rho) -> np.ndarray:
    """P(U > h, V > k) for a standard bivariate normal of correlation ρ (|ρ| < 1)."""
    x, y = -np.asarray(h, dtype=float), -np.asarray(k, dtype=float)
    rho = np.asarray(rho, dtype=float)
    x, y, rho = np.broadcast_arrays(x, y, rho)
    x = np.where(x == 0, 1e-300, x)
    y = np.where(y == 0, 1e-300, y)
    r = np.sqrt(1.0 - rho * rho)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ax = (y - rho * x) / (x * r)
        ay = (x - rho * y) / (y * r)
    beta = np.where(np.sign(x) * np.sign(y) < 0, 0.5, 0.0)  # (x·y can underflow)
    out = 0.5 * (special.ndtr(x) + special.ndtr(y)) - special.owens_t(x, ax)
    out = out - special.owens_t(y, ay) - beta
    return np.clip(out, 0.0, 1.0)


@dataclass(frozen=True)
class PiecewiseLinear:
    """φ(x) = a0 + a1·x + Σ_k c_k (x − b_k)⁺ with breakpoints b sorted ascending."""

    name: str
    a0: float
    a1: float
    knots: tuple[float, ...]
    jumps: tuple[float, ...]

    def __post_init__(self):
        if len(self.knots) != len(self.jumps):
            raise InvalidInput("one slope change per breakpoint")
        if list(self.knots) != sorted(self.knots):
            raise InvalidInput("breakpoints must be sorted")
        vals = (self.a0, self.a1) + tuple(self.knots) + tuple(self.jumps)
        if not all(math.isfinite(v) for v in vals):
            raise InvalidInput("piecewise-linear coefficients must be finite")

    # -- pointwise ----------------------------------------------------------------
    def phi(self, x):
        x = np.asarray(x, dtype=float)
        out = self.a0 + self.a1 * x
        for b, c in zip(self.knots, self.jumps):
            out = out + c * np.maximum(x - b, 0.0)
        return out

    def dphi(self, x):
        x = np.asarray(x, dtype=float)
        out = np.full_like(x, self.a1)
        for b, c in zip(self.knots, self.jumps):
            out = out + c * (x > b)
        return out

    @property
    def kinks(self) -> tuple[float, ...]:
        return tuple(self.knots)

    # -- Gaussian moments -----------------------------------------------------------
    def moments(self, mu, v) -> dict[str, np.ndarray]:
        """E[φ(X)], E[φ(X)²], E[φ′(X)²] for X ~ N(μ, v), elementwise."""
        mu, v = np.broadcast_arrays(np.asarray(mu, dtype=float), np.asarray(v, dtype=float))
        if self.knots == (0.0,) and self.a0 == 0.0 and not np.any(mu):
            # ReLU family at zero mean: φ = a1 x + c x⁺, homogeneous
            c, a1 = self.jumps[0], self.a1
            v = np.maximum(v, 0.0)
            return {
                "m1": c * np.sqrt(v) * _INV_SQRT_2PI,
                "m2": v * (a1 * a1 + a1 * c + 0.5 * c * c),
                "d2": np.full(v.shape, a1 * a1 + a1 * c + 0.5 * c * c),
            }
        s = np.sqrt(np.maximum(v, 0.0))
        det = s <= 1e-12 * np.abs(mu)  # relative: the rules are scale-free
        ss = np.where(det, 1.0, s) if det.any() else s
        if self.knots == (0.0,) and self.a0 == 0.0:  # ReLU family: one truncated moment
            c, a1 = self.jumps[0], self.a1
            al = mu / ss
            cdf, pdf = special.ndtr(al), _pdf(al)
            e2 = (mu * mu + ss * ss) * cdf + mu * ss * pdf  # E[(x⁺)²] = E[x x⁺]
            out = {
                "m1": a1 * mu + c * (mu * cdf + ss * pdf),
                "m2": a1 * a1 * (mu * mu + ss * ss) + (2 * a1 * c + c * c) * e2,
                "d2": a1 * a1 + (2 * a1 * c + c * c) * cdf,
            }
            if det.any():
                f, d = self.phi(mu), self.dphi(mu)
                for key, val in (("m1", f), ("m2", f * f), ("d2", d * d)):
                    out[key] = np.where(det, val, out[key])
            return out
        m1 = self.a0 + self.a1 * mu
        m2 = self.a0**2 + 2 * self.a0 * self.a1 * mu + self.a1**2 * (mu * mu + ss * ss)
        d2 = np.full_like(mu, self.a1**2)
        er, er2, tail = [], [], []
        for b in self.knots:
            u = mu - b
            al = u / ss
            cdf, pdf = special.ndtr(al), _pdf(al)
            er.append(u * cdf + ss * pdf)
            er2.append((u * u + ss * ss) * cdf + u * ss * pdf)
            tail.append(cdf)
        for k, (b, c) in enumerate(zip(self.knots, self.jumps)):
            m1 = m1 + c * er[k]
            m2 = m2 + 2 * self.a0 * c * er[k] + 2 * self.a1 * c * (er2[k] + b * er[k])
            d2 = d2 + 2 * self.a1 * c * tail[k]
            for l in range(len(self.knots)):
                j = max(k, l)  # knots ascending: E[r_k r_l] = E[r_j²] + (b_j − b_i) E[r_j]
                i = min(k, l)
                m2 = m2 + c * self.jumps[l] * (er2[j] + (self.knots[j] - self.knots[i]) * er[j])
                d2 = d2 + c * self.jumps[l] * tail[j]
        if np.any(det):
            f, d = self.phi(mu), self.dphi(mu)
            m1, m2, d2 = (np.where(det, a, b) for a, b in ((f, m1), (f * f, m2), (d * d, d2)))
        return {"m1": m1, "m2": m2, "d2": d2}

    def cross(self, mu, v, rho) -> np.ndarray:
        """E[φ(X)φ(Y)] for X, Y ~ N(μ, v) with correlation ρ, elementwise."""
        mu, rho, ss, det = _pair_inputs(mu, v, rho)
        r = np.sqrt(1.0 - rho * rho)
        out = self.a0**2 + 2 * self.a0 * self.a1 * mu + self.a1**2 * (mu * mu + rho * ss * ss)
        hs, er, er2, pdf = [], [], [], []
        for b in self.knots:
            u = mu - b
            al = u / ss
            cdf, p = special.ndtr(al), _pdf(al)
            hs.append(-al)
            pdf.append(p)
            er.append(u * cdf + ss * p)
            er2.append((u * u + ss * ss) * cdf + u * ss * p)
        for k, c in enumerate(self.jumps):
            u = mu - self.knots[k]
            ex_r = mu * er[k] + rho * (er2[k] - u * er[k])  # E[X (Y − b_k)⁺]
            out = out + 2 * self.a0 * c * er[k] + 2 * self.a1 * c * ex_r
        n = len(self.knots)
        for k in range(n):
            for l in range(k, n):
                h, kk = hs[k], hs[l]
                ph, pk = pdf[k], pdf[l]
                ch = special.ndtr((rho * h - kk) / r)
                ck = special.ndtr((rho * kk - h) / r)
                lo = bvn_upper(h, kk, rho)
                eu_ = ph * ch + rho * pk * ck
                ev_ = pk * ck + rho * ph * ch
                euv = rho * lo + rho * h * ph * ch + rho * kk * pk * ck
                euv = euv + r * ph * _pdf((kk - rho * h) / r)
                term = ss * ss * (euv - kk * eu_ - h * ev_ + h * kk * lo)
                mult = 1.0 if k == l else 2.0
                out = out + mult * self.jumps[k] * self.jumps[l] * term
        if np.any(det):
            f = self.phi(mu)
            out = np.where(det, f * f, out)
        return out


def _pair_inputs(mu, v, rho):
    """Broadcast (μ, v, ρ); ρ clipped inside (−1, 1); the standard deviation (1 where the
    input is deterministic, |σ| ≤ 10⁻¹²|μ|: relative, the rules are scale-free) and that
    deterministic mask."""
    mu, v, rho = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (mu, v, rho)))
    s = np.sqrt(np.maximum(v, 0.0))
    det = s <= 1e-12 * np.abs(mu)
    return mu, np.clip(rho, -_RHO_MAX, _RHO_MAX), np.where(det, 1.0, s), det


def _dcross(self, mu, v, rho) -> np.ndarray:
    """E[φ′(X)φ′(Y)] for X, Y ~ N(μ, v) with correlation ρ: orthant probabilities."""
    mu, rho, ss, det = _pair_inputs(mu, v, rho)
    hs = [(b - mu) / ss for b in self.knots]
    out = np.full(mu.shape, self.a1**2)
    for k, c in enumerate(self.jumps):
        out = out + 2 * self.a1 * c * special.ndtr(-hs[k])
        for l, cl in enumerate(self.jumps):
            out = out + c * cl * bvn_upper(hs[k], hs[l], rho)
    if np.any(det):
        d = self.dphi(mu)
        out = np.where(det, d * d, out)
    return out


PiecewiseLinear.dcross = _dcross


def relu_family(alpha: float, name: str) -> PiecewiseLinear:
    """max(x, 0) + α min(x, 0) = αx + (1 − α)(x)⁺."""
    return PiecewiseLinear(name, 0.0, float(alpha), (0.0,), (1.0 - float(alpha),))


def clamp(lo: float, hi: float, name: str) -> PiecewiseLinear:
    """min(max(x, lo), hi) = lo + (x − lo)⁺ − (x − hi)⁺."""
    lo, hi = float(lo), float(hi)
    if not lo < hi:
        raise InvalidInput(f"clamp needs lo < hi, got {lo}, {hi}")
    return PiecewiseLinear(name, lo, 0.0, (lo, hi), (1.0, -1.0))
