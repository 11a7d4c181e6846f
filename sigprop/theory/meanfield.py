"""Mean-field signal propagation: q-map, c-map, fixed points, χ₁, χ_c and depth scales.

For a network h^l = W^l φ(h^{l−1}) + b^l with W_ij ~ N(0, σ_w²/N), b_i ~ N(0, σ_b²)
(σ's are standard deviations), in the infinite-width limit (Poole et al. 2016,
arXiv 1606.05340; Schoenholz et al. 2017, arXiv 1611.01232):

* variance map (Poole eq. 3):   V(q) = σ_w² E[φ(√q z)²] + σ_b²,  fixed point q* = V(q*);
* correlation map (Poole eq. 5): C(c) = (σ_w² E[φ(u₁)φ(u₂)] + σ_b²)/q*, Var u_i = q*,
  Corr(u₁, u₂) = c, so C(1) = 1;
* χ₁ = C′(1) = σ_w² E[φ′(√q* z)²] (Poole eq. 7, Schoenholz eq. 5): ordered for χ₁ < 1
  (c* = 1 attracts), chaotic for χ₁ > 1 (a stable c* < 1), edge of chaos at χ₁ = 1;
* depth scales (Schoenholz eqs. 6–9): ξ_q = −1/log V′(q*) with
  V′(q) = σ_w² E[φ′² + φφ″] (Stein's lemma; Schoenholz eq. 7), and ξ_c = −1/log χ_c with
  χ_c = C′(c*) = σ_w² E[φ′(u₁)φ′(u₂)] at (q*, c*) (Schoenholz eq. 9); in the ordered phase
  c* = 1 and ξ_c = −1/log χ₁.

Every function broadcasts over numpy arrays of σ_w, σ_b (and q, c). Closed forms are used
for the ReLU family (Cho & Saul 2009, arc-cosine kernel), linear and erf (Williams 1997); other activations use the composite
Gauss quadrature of :mod:`sigprop.theory.gaussian` (1-D maps) and its 2-D form (c-map).

Which fixed point
-----------------
q* is the fixed point reached from small inputs (the limit q⁰ → 0⁺ of V^l(q⁰)): the
smallest root of V(q) = q, or 0 when σ_b = 0, φ(0) = 0 and V(q) < q just above 0. For
positively homogeneous φ (ReLU family, linear) with σ_b = 0 at σ_w² E[φ(z)²] = 1 every q is a
fixed point (q^l = q⁰) and :func:`q_star` raises; where q^l grows without bound (e.g. ELU
with σ_w² ≥ 2, ReLU with σ_w² > 2) it raises too.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sigprop._json import to_jsonable
from sigprop.theory import gaussian
from sigprop.theory.activations import Activation, get_activation
from sigprop.validate import InvalidInput, nonneg_array

__all__ = [
    "FixedPointNotUnique",
    "NoFixedPoint",
    "q_map",
    "q_star",
    "c_map",
    "c_star",
    "chi1",
    "chi_c",
    "depth_scales",
    "DepthScales",
    "q_map_derivative",
    "moments",
    "kernel",
    "MomentTable",
    "moment_table",
]

_EPS = np.finfo(float).eps
#: relative tolerance for "exactly critical" homogeneous maps (σ_w = √2 is not exact in float)
_NEUTRAL_RTOL = 1e-12
#: largest q the fixed-point scan explores before declaring divergence
_Q_CAP = 1e12
#: a variance small enough that moments at it are the q → 0⁺ limits (one-sided at kinks)
_Q_TINY = 1e-300


# ---------------------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------------------


def _sigma(name: str, value) -> np.ndarray:
    return nonneg_array(name, value, "is a standard deviation and must be >= 0")


def _variance(name: str, value) -> np.ndarray:
    return nonneg_array(name, value, "is a variance and must be >= 0")


def _corr(value) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"correlation c must be finite, got {value!r}")
    if np.any(np.abs(arr) > 1):
        raise InvalidInput(f"correlation c must lie in [-1, 1], got {value!r}")
    return arr


def _first(arrays, mask) -> str:
    idx = np.flatnonzero(mask)[0]
    return ", ".join(f"{n} = {np.ravel(a)[idx]:.6g}" for n, a in arrays)


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
    if act.kind == "linear":
        return {"g0": q.copy(), "g1": np.ones_like(q), "dg0": np.ones_like(q)}
    if act.kind == "relu":
        s = 0.5 * (1.0 + act.alpha**2)
        return {"g0": s * q, "g1": np.full_like(q, s), "dg0": np.full_like(q, s)}
    if act.kind == "erf":
        # E[erf(u)erf(v)] = (2/π) arcsin(2Σ₁₂/√((1+2Σ₁₁)(1+2Σ₂₂))) (Williams 1997, Neural Computation 10(5))
        r = np.sqrt(1.0 + 4.0 * q)
        return {
            "g0": (2.0 / np.pi) * np.arcsin(2.0 * q / (1.0 + 2.0 * q)),
            "g1": 4.0 / (np.pi * r),
            "dg0": 4.0 / (np.pi * (1.0 + 2.0 * q) * r),
        }
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
# the variance map and its fixed point
# ---------------------------------------------------------------------------------------


def q_map(activation, sigma_w, sigma_b, q) -> np.ndarray:
    """V(q) = σ_w² E[φ(√q z)²] + σ_b² (Poole et al. 2016, arXiv 1606.05340, eq. 3)."""
    sw, sb = _sigma("sigma_w", sigma_w), _sigma("sigma_b", sigma_b)
    m = moments(activation, q)
    return sw**2 * m["g0"] + sb**2


def q_map_derivative(activation, sigma_w, sigma_b, q) -> np.ndarray:
    """V′(q) = σ_w² E[φ′² + φφ″] (Schoenholz et al. 2017, arXiv 1611.01232, eq. 7).

    ``sigma_b`` does not enter V′ but is validated and broadcast like everywhere else.
    """
    sw, sb = _sigma("sigma_w", sigma_w), _sigma("sigma_b", sigma_b)
    m = moments(activation, q)
    return sw**2 * m["dg0"] + 0.0 * sb


def q_star(activation, sigma_w, sigma_b) -> np.ndarray:
    """Fixed point q* of the variance map, reached from small inputs (see module doc).

    Vectorised safeguarded Newton iteration on V(q) − q with a bisection bracket (exact
    bound σ_w² sup φ² + σ_b² for bounded φ, a doubling scan otherwise); converges to
    round-off. Raises :class:`NoFixedPoint` where no finite fixed point exists and
    :class:`FixedPointNotUnique` where every q is a fixed point (homogeneous φ exactly at
    criticality with σ_b = 0); both are ``InvalidInput``.
    """
    act = get_activation(activation)
    sw, sb = np.broadcast_arrays(_sigma("sigma_w", sigma_w), _sigma("sigma_b", sigma_b))
    out, status = _q_star(act, sw.ravel(), sb.ravel(), lambda q: moments(act, q))
    _raise_status(act, status, sw.ravel(), sb.ravel())
    return out.reshape(sw.shape)


_FINITE, _DIVERGES, _NEUTRAL = 0, 1, 2


class NoFixedPoint(InvalidInput):
    """The variance map has no finite fixed point (q^l grows without bound with depth)."""


class FixedPointNotUnique(InvalidInput):
    """The variance map is the identity: every q is a fixed point (homogeneous φ at
    criticality with σ_b = 0), so q* is not defined."""


def _raise_status(act, status, sw, sb) -> None:
    if np.any(status == _DIVERGES):
        where = _first((("sigma_w", sw), ("sigma_b", sb)), status == _DIVERGES)
        raise NoFixedPoint(
            f"no finite fixed point q* for {act.name} at {where}: the variance q^l grows "
            "without bound with depth (chaotic growth of the q-map)"
        )
    if np.any(status == _NEUTRAL):
        where = _first((("sigma_w", sw), ("sigma_b", sb)), status == _NEUTRAL)
        raise FixedPointNotUnique(
            f"q* is not unique for {act.name} at {where}: the q-map is the identity "
            "(every q is a fixed point, q^l = q^0)"
        )


def _q_star(act: Activation, sw, sb, mom, x0=None) -> tuple[np.ndarray, np.ndarray]:
    """Core solver on flat arrays; ``mom(q)`` returns the moments dict, ``x0`` an optional
    starting guess for the Newton stage. Returns (q*, status)."""
    n = sw.size
    out = np.zeros(n)
    status = np.full(n, _FINITE)
    if n == 0:
        return out, status
    w2, b2 = sw**2, sb**2
    if act.kind in ("linear", "relu"):
        slope = w2 * (0.5 * (1.0 + act.alpha**2) if act.kind == "relu" else 1.0)
        neutral = np.abs(slope - 1.0) <= _NEUTRAL_RTOL
        grows = (slope > 1.0) & ~neutral
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(slope < 1.0, b2 / (1.0 - slope), np.nan)
        out = np.where(neutral & (b2 == 0), np.nan, out)
        status[grows | (neutral & (b2 > 0))] = _DIVERGES
        status[neutral & (b2 == 0)] = _NEUTRAL
        out[status == _DIVERGES] = np.nan
        return out, status

    phi0 = float(act.phi(np.array(0.0)))
    f0 = b2 + w2 * phi0**2  # F(0) = V(0) − 0 >= 0
    lo = np.zeros(n)
    hi = np.full(n, np.nan)
    todo = np.ones(n, dtype=bool)

    # F(0) = 0: q = 0 is a fixed point; it is q* unless V(q) > q just above 0.
    zero = f0 == 0
    if np.any(zero):
        # V′(0⁺)/σ_w² = lim g0(q)/q = g1(0⁺) = mean of the squared one-sided slopes at 0
        slope0 = float(mom(np.array([0.0]))["g1"][0])
        vs = w2[zero] * slope0
        qs = 1e-6  # at exact criticality the sign of V(q) − q above 0 decides
        dev = float(mom(np.array([qs]))["g0"][0]) / qs - slope0
        above = (vs > 1 + _NEUTRAL_RTOL) | ((np.abs(vs - 1) <= _NEUTRAL_RTOL) & (dev > 0))
        idx = np.flatnonzero(zero)
        todo[idx[~above]] = False  # q* = 0
        lo[idx[above]] = 0.0  # F > 0 just above 0: the positive root is wanted

    # upper end of the bracket
    if act.bound is not None:
        hi[todo] = w2[todo] * act.bound**2 + b2[todo]
        hi[todo & (hi <= 0)] = np.nan
    scan = todo & ~np.isfinite(hi)
    if np.any(scan):
        t = np.where(f0 > 0, f0, 1e-8)
        active = scan.copy()
        while np.any(active):
            idx = np.flatnonzero(active)
            with np.errstate(over="ignore", invalid="ignore"):
                fv = w2[idx] * mom(t[idx])["g0"] + b2[idx] - t[idx]
            fv = np.where(np.isnan(fv), np.inf, fv)
            done = fv <= 0
            hi[idx[done]] = t[idx[done]]
            lo[idx[~done]] = t[idx[~done]]
            t[idx[~done]] *= 2.0
            over = t[idx] > _Q_CAP * np.maximum(1.0, f0[idx])
            status[idx[~done & over]] = _DIVERGES
            active[idx[done | over]] = False
        todo &= status == _FINITE

    idx = np.flatnonzero(todo)
    if idx.size:
        out[idx] = _newton_bracketed(
            lambda q, i: _fixed_point_residual(mom, w2[idx[i]], b2[idx[i]], q),
            lo[idx],
            hi[idx],
            x0=None if x0 is None else x0[idx],
        )
    out[status != _FINITE] = np.nan
    return out, status


def _fixed_point_residual(mom, w2, b2, q):
    m = mom(q)
    return w2 * m["g0"] + b2 - q, w2 * m["dg0"] - 1.0


def _newton_bracketed(fn, lo, hi, *, x0=None, maxiter: int = 200) -> np.ndarray:
    """Vectorised safeguarded Newton for a root of F in (lo, hi] with F(lo) > 0 >= F(hi).

    ``fn(x, idx)`` returns (F, F′) at x for the elements ``idx``; ``x0`` is an optional
    starting guess (default ``hi``). A Newton step that leaves the current bracket is
    replaced by bisection, so every element converges; iteration stops at round-off
    (step below 4 ulp of x).
    """
    lo, hi = lo.astype(float).copy(), hi.astype(float).copy()
    x = hi.copy()
    if x0 is not None:
        x0 = np.asarray(x0, dtype=float)
        usable = np.isfinite(x0) & (x0 > lo) & (x0 < hi)
        x[usable] = x0[usable]
    active = np.ones(lo.size, dtype=bool)
    for _ in range(maxiter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        xi = x[idx]
        f, df = fn(xi, idx)
        root = f == 0
        pos = f > 0
        lo[idx[pos]] = xi[pos]
        hi[idx[~pos & ~root]] = xi[~pos & ~root]
        with np.errstate(divide="ignore", invalid="ignore"):
            step = f / df
        xn = xi - step
        bad = ~np.isfinite(xn) | (xn <= lo[idx]) | (xn >= hi[idx])
        l, h = lo[idx], hi[idx]
        # bisection, geometric where the bracket spans decades (roots far below hi)
        split = np.where(
            l > 0, np.where(h > 1e3 * l, np.sqrt(l * h), 0.5 * (l + h)), np.ldexp(h, -8)
        )
        xn = np.where(bad, split, xn)
        xn = np.where(root, xi, xn)
        tol = 4 * _EPS * np.maximum(np.abs(xn), 1e-300)
        conv = root | (np.abs(xn - xi) <= tol) | (hi[idx] - lo[idx] <= tol)
        x[idx] = xn
        active[idx[conv]] = False
    return x


# ---------------------------------------------------------------------------------------
# χ₁ and depth scale of the variance
# ---------------------------------------------------------------------------------------


def chi1(activation, sigma_w, sigma_b, q=None) -> np.ndarray:
    """χ₁ = σ_w² E[φ′(√q z)²] at q = q* (default) or the given q.

    Poole et al. 2016, arXiv 1606.05340, eq. 7; Schoenholz et al. 2017, arXiv 1611.01232,
    eq. 5: the slope of the correlation map at c = 1 and the per-layer growth factor of the
    squared gradient norm.
    """
    act = get_activation(activation)
    sw, sb = np.broadcast_arrays(_sigma("sigma_w", sigma_w), _sigma("sigma_b", sigma_b))
    qq = q_star(act, sw, sb) if q is None else _variance("q", q)
    return sw**2 * moments(act, qq)["g1"]


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
    if act.kind in ("linear", "relu"):
        a = act.alpha
        ac = np.arccos(np.clip(c, -1.0, 1.0))
        k = (np.sqrt(np.maximum(1.0 - c * c, 0.0)) + (np.pi - ac) * c) / (2 * np.pi)
        km = (np.sqrt(np.maximum(1.0 - c * c, 0.0)) - ac * c) / (2 * np.pi)  # k(−c)
        K = q * ((1 + a * a) * k - 2 * a * km)
        dK = ((1 + a * a) * (np.pi - ac) + 2 * a * ac) / (2 * np.pi)
        return K, dK
    if act.kind == "erf":
        r = 2.0 * q / (1.0 + 2.0 * q)
        K = (2.0 / np.pi) * np.arcsin(r * c)
        with np.errstate(divide="ignore", invalid="ignore"):
            dK = np.where(q > 0, (2.0 / np.pi) * r / np.sqrt(1.0 - (r * c) ** 2) / q, 4 / np.pi)
        return K, dK
    K = gaussian.expect2(act.phi, act.phi, q, q, c, kinks_f=act.kinks, kinks_g=act.kinks)
    dK = gaussian.expect2(act.dphi, act.dphi, q, q, c, kinks_f=act.kinks, kinks_g=act.kinks)
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
        _sigma("sigma_w", sigma_w), _sigma("sigma_b", sigma_b), _corr(c)
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
    qs, status = _q_star(act, sw, sb, lambda q: moments(act, q))
    _raise_status(act, status, sw, sb)
    x1 = sw**2 * moments(act, qs)["g1"]
    c, xc = _c_fixed_point(sw, sb, qs, x1, np.flatnonzero((x1 > 1.0) & (qs > 0)), kern)
    return _CState(qs, x1, c, xc)


def _c_fixed_point(sw, sb, qs, x1, chaos, kern, c0=None) -> tuple[np.ndarray, np.ndarray]:
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
        cs = _newton_from_left(resid, lo, hi)
        c[chaos] = cs
        xc[chaos] = w2[chaos] * kern(qs[chaos], cs, chaos)[1]
    return c, xc


def _newton_from_left(fn, lo, hi, *, maxiter: int = 200) -> np.ndarray:
    """Root of a convex G with G(lo) >= 0 > G(hi⁻): Newton from ``lo`` with bisection guard."""
    x = lo.copy()
    lo, hi = lo.copy(), hi.copy()
    active = np.ones(x.size, dtype=bool)
    for _ in range(maxiter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        xi = x[idx]
        f, df = fn(xi, idx)
        pos = f >= 0
        lo[idx[pos]] = xi[pos]
        hi[idx[~pos]] = xi[~pos]
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = xi - f / df
        bad = ~np.isfinite(xn) | (xn < lo[idx]) | (xn >= hi[idx])
        xn = np.where(bad, 0.5 * (lo[idx] + hi[idx]), xn)
        xn = np.where(f == 0, xi, xn)
        conv = (f == 0) | (np.abs(xn - xi) <= 4 * _EPS * np.maximum(np.abs(xn), 1e-300))
        x[idx] = xn
        active[idx[conv]] = False
    return x


def _state(activation, sigma_w, sigma_b):
    act = get_activation(activation)
    sw, sb = np.broadcast_arrays(_sigma("sigma_w", sigma_w), _sigma("sigma_b", sigma_b))
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


def _xi(rate: np.ndarray) -> np.ndarray:
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
        xi_q=_xi(np.abs(vp)).reshape(shape),
        xi_c=_xi(st.chi_c).reshape(shape),
        chi1=st.chi1.reshape(shape),
        chi_c=st.chi_c.reshape(shape),
        q_star=st.q.reshape(shape),
        c_star=st.c.reshape(shape),
    )


# ---------------------------------------------------------------------------------------
# interpolation tables for whole (σ_w, σ_b) grids
# ---------------------------------------------------------------------------------------

_TABLED = ("g0", "g1", "dg0", "dg1")


def _moments_with_dg1(act: Activation, q: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`moments` plus dg1 = d/dq E[φ′(√q z)²] (derivative-free Stein identity
    d/dq E[h(√q z)] = E[h(√q z)(z² − 1)]/(2q); closed form for erf, 0 for the ReLU family)."""
    q = np.asarray(q, dtype=float)
    m = moments(act, q)
    if act.kind in ("linear", "relu"):
        m["dg1"] = np.zeros_like(q)
    elif act.kind == "erf":
        m["dg1"] = -8.0 / (np.pi * (1.0 + 4.0 * q) ** 1.5)
    else:
        qq = np.where(q > 0, q, _Q_TINY)
        z, w = gaussian.quadrature_rule(qq, 0.0, act.kinks)
        d = act.dphi(np.sqrt(qq)[..., None] * z)
        m["dg1"] = np.where(q > 0, np.sum(w * d * d * (z * z - 1.0), axis=-1) / (2.0 * qq), 0.0)
    return m


_CHEB_D = 20
_CHEB_X = np.cos((2 * np.arange(_CHEB_D) + 1) * np.pi / (2 * _CHEB_D))
_CHEB_W = (-1.0) ** np.arange(_CHEB_D) * np.sin(
    (2 * np.arange(_CHEB_D) + 1) * np.pi / (2 * _CHEB_D)
)


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
        a, b = self.edges[:-1, None], self.edges[1:, None]
        self.s_nodes = 0.5 * (a + b) + 0.5 * (b - a) * _CHEB_X
        q = self.s_nodes.ravel() ** 2
        m = _moments_with_dg1(self.act, q)
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
        panel = np.clip(np.searchsorted(self.edges, s, side="right") - 1, 0, len(self.edges) - 2)
        a, b = self.edges[panel], self.edges[panel + 1]
        t = (2.0 * s - a - b) / (b - a)
        diff = t[:, None] - _CHEB_X[None, :]
        exact = diff == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            lw = _CHEB_W / diff
        lw = np.where(exact.any(axis=1, keepdims=True), exact.astype(float), lw)
        return panel, lw / lw.sum(axis=1, keepdims=True)

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
            m = _moments_with_dg1(self.act, flat[~inside])
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
