"""The edge of chaos (EOC): σ_w(σ_b) with χ₁ = 1, EOC initialisation, phase diagrams.

The EOC is the curve in the (σ_w, σ_b) plane where χ₁ = σ_w² E[φ′(√q* z)²] = 1
(Poole et al. 2016, arXiv 1606.05340, §3; Schoenholz et al. 2017, arXiv 1611.01232, §3).
Along it we parametrise by q = q*: χ₁ = 1 gives σ_w² = 1/E[φ′(√q z)²] and the fixed-point
equation q = σ_w² E[φ(√q z)²] + σ_b² then gives

    σ_b² = B(q) := q − E[φ(√q z)²]/E[φ′(√q z)²],

one scalar equation per σ_b, solved by a vectorised safeguarded Newton iteration (no
nested root finding). The solution is accepted only if q is the fixed point the network
actually reaches (:func:`sigprop.theory.meanfield.q_star`); otherwise there is no EOC.
ReLU-family activations have an EOC only at σ_b = 0, σ_w² = 2/(1+α²) (Hayou, Doucet, Rousseau 2019, arXiv 1902.06853, §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sigprop._json import to_jsonable
from sigprop.theory import meanfield as mf
from sigprop.theory.activations import Activation, get_activation
from sigprop.theory.meanfield import common as mf_common
from sigprop.theory.meanfield import correlation as mf_corr
from sigprop.theory.meanfield import expectations as mf_mom
from sigprop.theory.meanfield import fixed_point as mf_fp
from sigprop.validate import InvalidInput

__all__ = ["EOCPoint", "EOCCurve", "eoc_sigma_w", "eoc_curve", "eoc_init"]


@dataclass(frozen=True)
class EOCPoint:
    """One point on the edge of chaos.

    Attributes
    ----------
    sigma_w, sigma_b:
        Weight and bias standard deviations (weights N(0, σ_w²/fan_in)).
    q_star:
        Fixed-point pre-activation variance at this point. For positively homogeneous φ
        (ReLU family, linear) every q is a fixed point on the EOC; ``q_star`` is then the
        input variance ``q0`` passed to :func:`eoc_init`, which the network preserves.
    chi1:
        χ₁ at (σ_w, σ_b, q*): 1 up to round-off.
    activation:
        Canonical activation name.
    xi_q:
        Variance depth scale −1/log V′(q*) (finite on the EOC; ``inf`` where V′ = 1).
    """

    sigma_w: float
    sigma_b: float
    q_star: float
    chi1: float
    activation: str = ""
    xi_q: float = math.inf

    @property
    def sigma_w2(self) -> float:
        return self.sigma_w**2

    def to_dict(self) -> dict[str, Any]:
        out = {
            "activation": self.activation,
            "sigma_w": self.sigma_w,
            "sigma_b": self.sigma_b,
            "sigma_w2": self.sigma_w**2,
            "sigma_b2": self.sigma_b**2,
            "q_star": self.q_star,
            "chi1": self.chi1,
            "xi_q": self.xi_q,  # non-finite → None
            "xi_c": None,  # ξ_c diverges on the EOC
        }
        return to_jsonable(out, "EOCPoint")


@dataclass(frozen=True)
class EOCCurve:
    """The EOC σ_w(σ_b) over an array of σ_b (all fields have the shape of ``sigma_b``)."""

    activation: str
    sigma_b: np.ndarray
    sigma_w: np.ndarray
    q_star: np.ndarray
    chi1: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self, "EOCCurve")


def _homogeneous_sigma_w(act: Activation, sb: np.ndarray) -> np.ndarray:
    if np.any(sb > 0):
        where = sb[sb > 0].flat[0]
        raise InvalidInput(
            f"no edge of chaos for {act.name} at sigma_b = {where:.6g}: a ReLU-family "
            "activation has chi1 = sigma_w^2 (1+alpha^2)/2 independent of q, so its only EOC "
            "point is sigma_b = 0 with sigma_w^2 = 2/(1+alpha^2)"
        )
    return np.full(sb.shape, math.sqrt(1.0 / act.homogeneous_gain))


def _solve(act: Activation, sb: np.ndarray, mom) -> tuple[np.ndarray, np.ndarray]:
    """(σ_w, q*) on the EOC for flat σ_b; ``mom(q)`` gives moments (g0, g1)."""
    b2 = sb**2
    phi0 = float(act.phi(np.array(0.0)))
    n = sb.size
    q = np.zeros(n)
    slope0 = float(mom(np.array([0.0]))["g1"][0])  # E[φ′²] as q → 0⁺
    at_zero = (b2 == 0) & (phi0 == 0.0)
    if slope0 == 0 and np.any(at_zero):
        raise InvalidInput(
            f"no edge of chaos for {act.name} at sigma_b = 0: phi(0) = phi'(0) = 0, so q* = 0 "
            "and chi1 = 0 for every sigma_w"
        )
    todo = np.flatnonzero(~at_zero)
    if todo.size:
        # B(q) <= q, so the root is >= σ_b²; scan upward by doubling for the bracket.
        lo = np.zeros(todo.size)
        hi = np.full(todo.size, np.nan)
        t = np.maximum(b2[todo], 1e-8)
        active = np.ones(todo.size, dtype=bool)
        while np.any(active):
            i = np.flatnonzero(active)
            m = mom(t[i])
            bval = t[i] - m["g0"] / m["g1"] - b2[todo[i]]
            done = bval >= 0
            hi[i[done]] = t[i[done]]
            lo[i[~done]] = t[i[~done]]
            t[i[~done]] *= 2.0
            over = t[i] > 1e12 * max(1.0, float(np.max(b2)))
            if np.any(over & ~done):
                bad = todo[i[over & ~done]][0]
                raise InvalidInput(
                    f"no edge of chaos for {act.name} at sigma_b = {sb[bad]:.6g}: "
                    "chi1 stays below 1 for every sigma_w with a finite fixed point"
                )
            active[i[done]] = False

        def resid(x, i):
            m = mom(x)
            g0, g1 = m["g0"], m["g1"]
            # B′(q) = 1 − g0′/g1 + g0 g1′/g1², g1′ by the derivative-free Stein identity
            g1p = m["dg1"]
            return -(x - g0 / g1 - b2[todo[i]]), -(1.0 - m["dg0"] / g1 + g0 * g1p / g1**2)

        q[todo] = mf_fp.newton_bracketed(resid, lo, hi)
    g1 = mom(q)["g1"]
    with np.errstate(divide="ignore"):
        sw = 1.0 / np.sqrt(g1)
    return sw, q


def _eoc_moments(act: Activation, sb: np.ndarray):
    """Moments g0, g1 and their q-derivatives for the EOC equation: direct quadrature for
    a few σ_b, a cached :class:`~sigprop.theory.meanfield.MomentTable` for curves."""
    if sb.size >= 16 and not act.has_closed_forms:
        s_top = max(2.0, 4.0 * float(np.max(sb, initial=0.0)))
        return mf.moment_table(act, math.ceil(math.log2(s_top)), 0).moments
    return lambda q: mf_mom.moments_with_dg1(act, np.asarray(q, dtype=float))


def _eoc(act: Activation, sb: np.ndarray, q0: float | None):
    flat = sb.ravel()
    if act.homogeneous_gain is not None:
        sw = _homogeneous_sigma_w(act, flat)
        q = np.full(flat.shape, np.nan if q0 is None else float(q0))
        return sw, q
    mom = _eoc_moments(act, flat)
    sw, q = _solve(act, flat, mom)
    if not np.all(np.isfinite(sw)):
        bad = np.flatnonzero(~np.isfinite(sw))[0]
        raise InvalidInput(
            f"no edge of chaos for {act.name} at sigma_b = {flat[bad]:.6g}: E[phi'^2] vanishes "
            f"at the candidate q = {q[bad]:.6g}"
        )
    # verify: q must be the fixed point reached from small inputs at (σ_w, σ_b)
    qs, status = mf_fp.solve_q_star(act, sw, flat, mom)  # no starting guess: find q* afresh
    # The fixed point's condition number is 1/|V′(q) − 1|, which vanishes with q at the EOC
    # (tanh: V′(q) − 1 ≈ −2σ_w²q as σ_b → 0), so allow for the round-off that amplifies.
    slope = np.abs(mf.q_map_derivative(act, sw, flat, np.maximum(q, 1e-300)) - 1.0)
    tol = 1e-8 * np.maximum(q, 1e-12) + 1e3 * np.finfo(float).eps * q / np.maximum(slope, 1e-300)
    ok = (status == mf_fp.FINITE) & (np.abs(qs - q) <= tol)
    ok |= (status == mf_fp.FINITE) & (q == 0) & (qs == 0)
    if not np.all(ok):
        bad = np.flatnonzero(~ok)[0]
        raise InvalidInput(
            f"no edge of chaos for {act.name} at sigma_b = {flat[bad]:.6g}: chi1 = 1 only at "
            f"q = {q[bad]:.6g} (sigma_w = {sw[bad]:.6g}), which is not the stable fixed point "
            "of the variance map there"
        )
    return sw, q


def eoc_sigma_w(activation, sigma_b) -> np.ndarray:
    """σ_w on the edge of chaos for each σ_b (array in, array out; σ's standard deviations).

    Raises ``ValueError`` where no EOC exists (ReLU family with σ_b > 0; activations whose
    χ₁ never reaches 1 at a finite stable fixed point).
    """
    act = get_activation(activation)
    sb = mf_common.sigma_arg("sigma_b", sigma_b)
    sw, _ = _eoc(act, sb, q0=1.0)
    return sw.reshape(sb.shape)


def eoc_curve(activation, sigma_b) -> EOCCurve:
    """The EOC over an array of σ_b: σ_w, q* and χ₁ (= 1 to round-off) for each σ_b.

    For the ReLU family q* is not unique on the EOC and is reported as NaN.
    """
    act = get_activation(activation)
    sb = mf_common.sigma_arg("sigma_b", sigma_b)
    sw, q = _eoc(act, sb, q0=None)
    if act.homogeneous_gain is not None:
        x1 = sw**2 * mf.moments(act, np.ones_like(sw))["g1"]
    else:
        x1 = sw**2 * mf.moments(act, q)["g1"]
    shape = sb.shape
    return EOCCurve(act.name, sb.copy(), sw.reshape(shape), q.reshape(shape), x1.reshape(shape))


def eoc_init(activation, sigma_b: float = 0.0, *, q0: float = 1.0) -> EOCPoint:
    """The EOC point (σ_w, σ_b, q*, χ₁) for a scalar σ_b, for initialising a network.

    ``q0`` is used only for positively homogeneous φ (ReLU family, linear), where every
    q is a fixed point on the EOC: then ``q_star = q0``, the input variance the network
    preserves exactly.
    """
    act = get_activation(activation)
    sb = mf_common.sigma_arg("sigma_b", sigma_b)
    if sb.ndim != 0:
        raise InvalidInput("eoc_init takes a scalar sigma_b; use eoc_curve for arrays")
    if not (math.isfinite(q0) and q0 > 0):
        raise InvalidInput(f"q0 must be a positive finite variance, got {q0!r}")
    sw, q = _eoc(act, sb, q0=q0)
    sw_, q_ = float(sw[0]), float(q[0])
    x1 = float(sw_**2 * mf.moments(act, np.array(q_))["g1"])
    vp = float(sw_**2 * mf.moments(act, np.array(q_))["dg0"])
    return EOCPoint(
        sigma_w=sw_,
        sigma_b=float(sb),
        q_star=q_,
        chi1=x1,
        activation=act.name,
        xi_q=float(mf_corr.depth_scale(abs(vp))),
    )


# ---------------------------------------------------------------------------------------
# phase diagrams
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseDiagram:
    """Mean-field quantities on a (σ_b, σ_w) grid (Schoenholz et al. 2017, arXiv 1611.01232).

    Attributes
    ----------
    activation:
        Canonical activation name.
    sigma_w, sigma_b:
        The 1-D axes (standard deviations), lengths n_w and n_b.
    q_star, chi1, xi_q, c_star, chi_c, xi_c:
        Arrays of shape (n_b, n_w) (row i ↔ sigma_b[i], column j ↔ sigma_w[j]); NaN where
        q* is not finite (the variance grows without bound) or not unique.
    c_star_error:
        A-priori bound on |Δc*| from truncating the Hermite series of the correlation map
        after K terms, σ_w² T₀ c*^K / (q*(1 − χ_c)) with T₀ = E[φ²] − Σ_{k<K} a_k² (zero for
        closed-form activations and in the ordered phase). It is below 1e-10 except in a
        thin band next to the EOC where c* → 1.
    """

    activation: str
    sigma_w: np.ndarray
    sigma_b: np.ndarray
    q_star: np.ndarray
    chi1: np.ndarray
    xi_q: np.ndarray
    c_star: np.ndarray
    chi_c: np.ndarray
    xi_c: np.ndarray
    c_star_error: np.ndarray

    @property
    def finite(self) -> np.ndarray:
        """True where a finite, unique q* exists."""
        return np.isfinite(self.q_star)

    @property
    def chaotic(self) -> np.ndarray:
        """True in the chaotic phase (χ₁ > 1)."""
        return np.nan_to_num(self.chi1, nan=0.0) > 1.0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self, "PhaseDiagram")


#: Hermite terms used for the correlation map on grids (coefficients to k = 511)
HERMITE_TERMS = 512
_CHUNK = 4096
_SHORT = 48


def _coarse_guess(act, SW, SB, mom) -> np.ndarray | None:
    """q* on every 8th grid line, interpolated to the full grid (a Newton starting point)."""
    nb, nw = SW.shape
    if nb * nw < 4096:
        return None
    ib = np.unique(np.r_[np.arange(0, nb, 8), nb - 1])
    iw = np.unique(np.r_[np.arange(0, nw, 8), nw - 1])
    cs, cb = SW[np.ix_(ib, iw)].ravel(), SB[np.ix_(ib, iw)].ravel()
    qc, status = mf_fp.solve_q_star(act, cs, cb, mom)
    qc = np.where(status == mf_fp.FINITE, qc, np.nan).reshape(ib.size, iw.size)
    rows = np.stack([np.interp(np.arange(nw), iw, r) for r in qc])
    full = np.stack([np.interp(np.arange(nb), ib, col) for col in rows.T], axis=1)
    return full.ravel()


def _axis(name: str, value) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInput(f"{name} must be a non-empty 1-D array of standard deviations")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{name} must be finite")
    if np.any(arr < 0):
        raise InvalidInput(f"{name} is a standard deviation and must be >= 0")
    return arr


def phase_diagram(activation, sigma_w, sigma_b, *, hermite_terms: int = HERMITE_TERMS):
    """q*, χ₁, ξ_q, c*, χ_c, ξ_c on the grid ``sigma_b × sigma_w`` in one vectorised call.

    Same definitions as :mod:`sigprop.theory.meanfield` (Poole et al. 2016, arXiv
    1606.05340; Schoenholz et al. 2017, arXiv 1611.01232, eqs. 3–9). Closed forms are used
    for ReLU family, linear and erf. For other activations the moments come from a cached
    :class:`~sigprop.theory.meanfield.MomentTable` and the correlation map from its Hermite
    series E[φ(u₁)φ(u₂)] = Σ_k a_k(q*)² c^k (Mehler's formula), truncated after
    ``hermite_terms`` terms; ``c_star_error`` bounds the truncation error per point.
    Points without a finite fixed point are NaN (no exception).
    """
    act = get_activation(activation)
    sw_axis, sb_axis = _axis("sigma_w", sigma_w), _axis("sigma_b", sigma_b)
    SW, SB = np.meshgrid(sw_axis, sb_axis)
    sw, sb = SW.ravel(), SB.ravel()
    w2, b2 = sw**2, sb**2
    closed = act.has_closed_forms
    if closed:
        table = None

        def mom(q):
            return mf.moments(act, q)

    else:
        if act.bound is not None:
            s_top = math.sqrt(float(np.max(w2)) * act.bound**2 + float(np.max(b2)))
        else:
            s_top = math.sqrt(4.0 * max(1.0, float(np.max(w2 + b2))))
        top = max(-9, math.ceil(math.log2(max(s_top, 2.0**-9))))
        table = mf.moment_table(act, top, int(hermite_terms))
        mom = table.moments

    qs, status = mf_fp.solve_q_star(act, sw, sb, mom, x0=_coarse_guess(act, SW, SB, mom))
    ok = status == mf_fp.FINITE
    qv = np.where(ok, qs, 0.0)
    m = mom(qv)
    x1 = np.where(ok, w2 * m["g1"], np.nan)
    vp = np.where(ok, w2 * m["dg0"], np.nan)
    chaos = np.flatnonzero(ok & (x1 > 1.0) & (qv > 0))
    err = np.zeros_like(qs)
    if closed:
        c, xc = mf_corr.solve_c_star(sw, sb, qv, x1, chaos, lambda q, c, i: mf.kernel(act, q, c))
    else:
        c = np.ones_like(qs)
        xc = x1.copy()
        chaos = chaos[np.argsort(qv[chaos], kind="stable")]  # similar q share a term count
        for start in range(0, chaos.size, _CHUNK):
            idx = chaos[start : start + _CHUNK]
            A = table.hermite_coefficients(qv[idx]) ** 2
            nz = np.flatnonzero(A.any(axis=0))
            A = A[:, : (nz[-1] + 1 if nz.size else 1)]  # terms beyond are below round-off
            sub = np.arange(idx.size)
            # stage 1: a short series; its root lies left of c* (dropped terms are >= 0),
            # so it is a valid monotone start for Newton on the full series (stage 2)
            short = _HermiteKernel(A[:, :_SHORT], qv[idx])
            c0, _ = mf_corr.solve_c_star(sw[idx], sb[idx], qv[idx], x1[idx], sub, short)
            kern = _HermiteKernel(A, qv[idx])
            cc, xcc = mf_corr.solve_c_star(sw[idx], sb[idx], qv[idx], x1[idx], sub, kern, c0=c0)
            c[idx], xc[idx] = cc, xcc
            tail = np.maximum(m["g0"][idx] - A.sum(axis=1), 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                bound = w2[idx] * tail * cc ** A.shape[1] / (qv[idx] * (1.0 - xcc))
            err[idx] = np.where(xcc < 1, bound, np.inf)
    nan = ~ok
    shape = SW.shape

    def grid(a):
        a = np.where(nan, np.nan, a)
        return a.reshape(shape)

    return PhaseDiagram(
        activation=act.name,
        sigma_w=sw_axis.copy(),
        sigma_b=sb_axis.copy(),
        q_star=grid(qs),
        chi1=grid(x1),
        xi_q=grid(mf_corr.depth_scale(np.abs(np.nan_to_num(vp)))),
        c_star=grid(c),
        chi_c=grid(xc),
        xi_c=grid(mf_corr.depth_scale(np.nan_to_num(xc))),
        c_star_error=grid(err),
    )


class _HermiteKernel:
    """(K, dK) from squared Hermite coefficients A (rows per point): K = Σ A_k c^k and
    dK = E[φ′(u₁)φ′(u₂)] = Σ k A_k c^{k−1}/q (Price's theorem, ∂K/∂c = q E[φ′φ′])."""

    def __init__(self, A: np.ndarray, q: np.ndarray):
        self.A = A
        self.kA = A[:, 1:] * np.arange(1, A.shape[1])
        self.q = q

    def __call__(self, q, c, idx):
        c = np.asarray(c, dtype=float)
        A = self.A[idx]
        # drop trailing terms below round-off at the largest c of this call
        cmax = float(np.max(c, initial=0.0))
        scale = float(np.max(np.sum(A, axis=1), initial=0.0)) + 1e-300
        big = np.max(A, axis=0) * (cmax ** np.arange(A.shape[1])) > 1e-18 * scale
        n = int(np.flatnonzero(big)[-1]) + 1 if np.any(big) else 1
        m = c.size
        powers = np.empty((m, n))
        powers[:, 0] = 1.0
        if n > 1:
            np.cumprod(np.broadcast_to(c[:, None], (m, n - 1)), axis=1, out=powers[:, 1:])
        K = np.einsum("ik,ik->i", A[:, :n], powers)
        dK = np.einsum("ik,ik->i", self.kA[idx, : n - 1], powers[:, : n - 1])
        return K, dK / self.q[idx]
