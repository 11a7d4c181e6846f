"""The variance map V(q), its fixed point q* and χ₁ (Poole et al. 2016, arXiv 1606.05340; Schoenholz et al. 2017, arXiv 1611.01232)."""

from __future__ import annotations

import numpy as np

from sigprop.theory.activations import Activation, get_activation
from sigprop.theory.meanfield.common import (
    _EPS,
    _NEUTRAL_RTOL,
    _Q_CAP,
    _first,
    _variance,
    sigma_arg,
)
from sigprop.theory.meanfield.expectations import moments
from sigprop.validate import InvalidInput

# ---------------------------------------------------------------------------------------
# the variance map and its fixed point
# ---------------------------------------------------------------------------------------


def q_map(activation, sigma_w, sigma_b, q) -> np.ndarray:
    """V(q) = σ_w² E[φ(√q z)²] + σ_b² (Poole et al. 2016, arXiv 1606.05340, eq. 3)."""
    sw, sb = sigma_arg("sigma_w", sigma_w), sigma_arg("sigma_b", sigma_b)
    m = moments(activation, q)
    return sw**2 * m["g0"] + sb**2


def q_map_derivative(activation, sigma_w, sigma_b, q) -> np.ndarray:
    """V′(q) = σ_w² E[φ′² + φφ″] (Schoenholz et al. 2017, arXiv 1611.01232, eq. 7).

    ``sigma_b`` does not enter V′ but is validated and broadcast like everywhere else.
    """
    sw, sb = sigma_arg("sigma_w", sigma_w), sigma_arg("sigma_b", sigma_b)
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
    sw, sb = np.broadcast_arrays(sigma_arg("sigma_w", sigma_w), sigma_arg("sigma_b", sigma_b))
    out, status = solve_q_star(act, sw.ravel(), sb.ravel(), lambda q: moments(act, q))
    _raise_status(act, status, sw.ravel(), sb.ravel())
    return out.reshape(sw.shape)


FINITE, _DIVERGES, _NEUTRAL = 0, 1, 2


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


def solve_q_star(act: Activation, sw, sb, mom, x0=None) -> tuple[np.ndarray, np.ndarray]:
    """Core solver on flat arrays; ``mom(q)`` returns the moments dict, ``x0`` an optional
    starting guess for the Newton stage. Returns (q*, status)."""
    n = sw.size
    out = np.zeros(n)
    status = np.full(n, FINITE)
    if n == 0:
        return out, status
    w2, b2 = sw**2, sb**2
    gain = act.homogeneous_gain
    if gain is not None:
        slope = w2 * gain
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
        todo &= status == FINITE

    idx = np.flatnonzero(todo)
    if idx.size:
        out[idx] = newton_bracketed(
            lambda q, i: _fixed_point_residual(mom, w2[idx[i]], b2[idx[i]], q),
            lo[idx],
            hi[idx],
            x0=None if x0 is None else x0[idx],
        )
    out[status != FINITE] = np.nan
    return out, status


def _fixed_point_residual(mom, w2, b2, q):
    m = mom(q)
    return w2 * m["g0"] + b2 - q, w2 * m["dg0"] - 1.0


def newton_bracketed(fn, lo, hi, *, x0=None, maxiter: int = 200) -> np.ndarray:
    """Vectorised safeguarded Newton for a root of F in (lo, hi] with F(lo) > 0 >= F(hi).

    ``fn(x, idx)`` returns (F, F′) at x for the elements ``idx``; ``x0`` is an optional
    starting guess in [lo, hi) (default ``hi``; ``x0 = lo`` starts from the left, which for
    a convex F converges monotonically to the smallest root). A Newton step that leaves the
    current bracket is
    replaced by bisection, so every element converges; iteration stops at round-off
    (step below 4 ulp of x).
    """
    lo, hi = lo.astype(float).copy(), hi.astype(float).copy()
    x = hi.copy()
    if x0 is not None:
        x0 = np.asarray(x0, dtype=float)
        usable = np.isfinite(x0) & (x0 >= lo) & (x0 < hi)
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
    sw, sb = np.broadcast_arrays(sigma_arg("sigma_w", sigma_w), sigma_arg("sigma_b", sigma_b))
    qq = q_star(act, sw, sb) if q is None else _variance("q", q)
    return sw**2 * moments(act, qq)["g1"]
