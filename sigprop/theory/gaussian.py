"""Gaussian expectations E[f(u)] and E[f(u₁)g(u₂)] to float64 precision.

The mean-field maps (Poole et al. 2016, arXiv 1606.05340, eqs. 3–5) are Gaussian integrals
∫Dz f(√q z). Plain Gauss–Hermite quadrature (Poole et al. 2016, arXiv 1606.05340) is exact for polynomials but
converges slowly for

* kinks (ReLU, hard tanh, the φ′ jump of SELU): algebraic convergence, e.g. C(0.5) for
  ReLU off by 5.6e-4 at degree 200 (as in neural-tangents' quadrature kernels; Novak et al. 2019, arXiv 1912.02803);
* sharp smooth functions at large variance: tanh(√q z) has poles at z = ±iπ/(2√q), so at
  q = 10 even 240 Gauss–Hermite nodes leave a 5e-6 relative error.

This module therefore uses a composite Gauss–Legendre rule on the truncated line
|z| ≤ ``zmax`` whose panel edges are the union of

1. a uniform grid in z (the Gaussian weight is resolved on every panel),
2. a geometric ladder 0, ±½, ±1, ±2, ... in the activation's own variable x = m + √q z
   (resolves features of φ at the scale of its complex singularities near the origin),
3. the activation's kinks, mapped to z (the integrand is smooth on every panel).

On every panel the integrand is analytic in a Bernstein ellipse of parameter ≳ 3, so ten
Gauss–Legendre nodes give round-off accuracy; the truncated tail has mass
erfc(zmax/√2) < 1e-18 for the default ``zmax = 9``.

That bound is on the Gaussian weight only: an integrand that grows fast enough carries a
real part of its expectation beyond the window (E[exp(x²)²] is infinite for q ≥ 1/4, yet
the truncated rule returns a finite 3.5e16 at q = 0.5). :func:`expect`, :func:`expect2` and
:func:`hermite_coefficients` therefore check every result with :func:`tail_fraction`: the
mass |w f| of the two outermost bands of width 1.5 in z gives a geometric estimate of the
mass beyond |z| = zmax (for Gaussian-decaying integrands it over-estimates the true
truncation error about tenfold: 4e-9 against 2.6e-10 for E[z¹⁶]); above
:data:`TAIL_RTOL` of the total, or where f is not finite at a node, the expectation is
refused (``InvalidInput``) instead of returned wrong. The check cannot tell a divergent
expectation from one that is finite but lies beyond the window (E[exp(2√q z)] peaks at
z = 2√q), so it refuses both rather than return inf.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from sigprop.validate import InvalidInput, nonneg_array

__all__ = [
    "TAIL_RTOL",
    "expect",
    "expect2",
    "expect2_pairs",
    "hermite_coefficients",
    "hermite_functions",
    "legendre_rule",
    "quadrature_rule",
    "require_resolved",
    "tail_fraction",
]

#: Largest accepted estimate of the share of an expectation beyond the quadrature window.
TAIL_RTOL = 1e-8
_BAND = 1.5

_SQRT_2PI = math.sqrt(2.0 * math.pi)
#: The geometric ladder in x: 0, ±0.5, ±1, ..., ±0.5·2^12.
_LADDER = np.concatenate([[0.0], 0.5 * 2.0 ** np.arange(13), -0.5 * 2.0 ** np.arange(13)])


@functools.lru_cache(maxsize=64)
def legendre_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n-point Gauss–Legendre rule on [−1, 1]: nodes x and weights w (read-only, cached).

    Σ w f(x) = ∫₋₁¹ f exactly for polynomials of degree ≤ 2n − 1 (Golub & Welsch 1969). The
    one Gauss–Legendre rule of ``sigprop.theory``: the panels of :func:`quadrature_rule`, the
    Fuss–Catalan CDF and the max-pooling covariance table all use it.
    """
    x, w = np.polynomial.legendre.leggauss(int(n))
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


#: Half-width of the quadrature window in z (Gaussian mass beyond: erfc(9/√2) < 1e-18).
ZMAX = 9.0


def quadrature_rule(
    q,
    mean=0.0,
    kinks: Sequence[float] = (),
    *,
    zmax: float = ZMAX,
    hz: float = 1.5,
    order: int = 10,
    ladder: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and weights w with Σ w f(mean + √q z) ≈ E[f(mean + √q z)], z ~ N(0, 1).

    ``q`` and ``mean`` broadcast; the result has shape ``broadcast(q, mean).shape + (M,)``
    with the same M for every element (panels that collapse carry zero weight). The weight
    includes the standard normal density, so Σ w = 1 − erfc(zmax/√2).
    """
    q = nonneg_array("q", q, "(a variance) must be non-negative")
    mean = np.asarray(mean, dtype=float)
    shape = np.broadcast_shapes(q.shape, mean.shape)
    s = np.broadcast_to(np.sqrt(q), shape)[..., None]
    m = np.broadcast_to(mean, shape)[..., None]
    fixed = np.linspace(-zmax, zmax, int(math.ceil(2 * zmax / hz)) + 1)
    moving = np.asarray(list(kinks), dtype=float)
    if ladder:
        moving = np.concatenate([moving, _LADDER])
    if moving.size:
        with np.errstate(divide="ignore", invalid="ignore"):
            mapped = (moving - m) / s
        mapped = np.where(np.isfinite(mapped), mapped, -zmax)
        edges = np.concatenate([np.broadcast_to(fixed, shape + fixed.shape), mapped], axis=-1)
    else:
        edges = np.broadcast_to(fixed, shape + fixed.shape)
    edges = np.sort(np.clip(edges, -zmax, zmax), axis=-1)
    a, b = edges[..., :-1, None], edges[..., 1:, None]
    xg, wg = legendre_rule(order)
    half = 0.5 * (b - a)
    z = (0.5 * (a + b) + half * xg).reshape(shape + (-1,))
    w = (half * wg).reshape(shape + (-1,)) * np.exp(-0.5 * z * z) / _SQRT_2PI
    return z, w


def expect(
    f: Callable[[np.ndarray], np.ndarray],
    q,
    *,
    mean=0.0,
    kinks: Sequence[float] = (),
) -> np.ndarray:
    """E[f(mean + √q z)] for z ~ N(0, 1), broadcasting over ``q`` and ``mean``.

    ``kinks`` are the points (in the argument of f) where f or its first derivatives jump;
    the rule splits there. Accuracy: round-off (≈1e-15 relative) for the registered
    activations and their products (tested against adaptive ``scipy.integrate.quad``).
    """
    z, w = quadrature_rule(q, mean, kinks)
    s = np.sqrt(np.asarray(q, dtype=float))[..., None]
    x = np.asarray(mean, dtype=float)[..., None] + s * z
    with np.errstate(all="ignore"):
        wf = w * f(x)
    require_resolved(z, wf, 9.0, "E[f(mean + sqrt(q) z)]", w)
    return np.sum(wf, axis=-1)


def expect2(
    f: Callable[[np.ndarray], np.ndarray],
    g: Callable[[np.ndarray], np.ndarray],
    q1,
    q2,
    c,
    *,
    kinks_f: Sequence[float] = (),
    kinks_g: Sequence[float] = (),
) -> np.ndarray:
    """E[f(u₁) g(u₂)] for centred Gaussians with Var u_i = q_i and Corr(u₁, u₂) = c.

    Written as u₁ = √q₁ z₁, u₂ = √q₂ (c z₁ + √(1−c²) z₂) (Poole et al. 2016, eq. 5): the
    inner expectation over z₂ is a shifted 1-D Gaussian integral of g, the outer one runs
    over z₁ with edges at the kinks of f (scale √q₁) and of g (scale √q₂ |c|), so the rule
    stays accurate for every c ∈ [−1, 1] including c → ±1. Broadcasts over q1, q2, c; costs
    about 2·10⁵ evaluations of f and g per element (an independent check, not a fast path).
    """
    return expect2_pairs([(f, g)], q1, q2, c, kinks_f=kinks_f, kinks_g=kinks_g)[0]


def expect2_pairs(
    pairs: Sequence[tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]],
    q1,
    q2,
    c,
    *,
    kinks_f: Sequence[float] = (),
    kinks_g: Sequence[float] = (),
) -> tuple[np.ndarray, ...]:
    """:func:`expect2` of several pairs (f, g) whose f share the kinks ``kinks_f`` and whose
    g share ``kinks_g``, on one 2-D rule per element (e.g. E[φφ] and E[φ′φ′] of a
    correlation kernel); each expectation has its own resolution check."""
    q1 = nonneg_array("q1", q1, "(a variance) must be non-negative")
    q2 = nonneg_array("q2", q2, "(a variance) must be non-negative")
    c = np.asarray(c, dtype=float)
    if not np.all(np.isfinite(c)):
        raise InvalidInput(f"correlation c must be finite, got {c!r}")
    if np.any(np.abs(c) > 1):
        raise InvalidInput(f"correlation c must lie in [-1, 1], got {c!r}")
    shape = np.broadcast_shapes(q1.shape, q2.shape, c.shape)
    outs = tuple(np.empty(shape) for _ in pairs)
    flat = [np.broadcast_to(a, shape).ravel() for a in (q1, q2, c)]
    for i, (a, b, r) in enumerate(zip(*flat)):
        for out, value in zip(outs, _expect2_scalar(pairs, a, b, r, kinks_f, kinks_g)):
            out.flat[i] = value
    return outs


def _expect2_scalar(pairs, q1, q2, c, kinks_f, kinks_g) -> list[float]:
    s1, s2 = math.sqrt(q1), math.sqrt(q2)
    k1 = list(kinks_f)
    # kinks of g(√q₂ c z₁) seen in the scale of u₁: √q₂ c z₁ = k  ⇔  u₁ = k s1/(s2 c)
    v2 = q2 * max(0.0, 1.0 - c * c)
    if s1 > 0 and s2 * abs(c) > 1e-8 * s1:  # else g's kinks sit beyond |z1| = zmax (or at 0)
        scale = s1 / (s2 * c)
        k1 += list(_LADDER * abs(scale))
        # the inner average smooths each kink of g over a width √v2; resolve that width
        for k in kinks_g:
            k1 += list((k + math.sqrt(v2) * _LADDER) * scale)
    z1, w1 = quadrature_rule(q1, 0.0, k1)
    u1 = s1 * z1
    m2 = s2 * c * z1
    z2, w2 = quadrature_rule(v2, m2, kinks_g)
    u2 = m2[:, None] + math.sqrt(v2) * z2
    what = "E[f(u1) g(u2)]"
    values = []
    for f, g in pairs:
        with np.errstate(all="ignore"):
            wg = w2 * g(u2)
            wf = w1 * f(u1)
            # masses of the 2-D rule, to check both directions of the window
            mass = np.abs(wf)[:, None] * np.abs(wg)
        pure = np.abs(wf)[:, None] * w2
        require_resolved(z2.reshape(-1), mass.reshape(-1), 9.0, what, pure.reshape(-1))
        require_resolved(z1, np.sum(mass, axis=-1), 9.0, what)
        values.append(float(np.sum(wf * np.sum(wg, axis=-1))))
    return values


def hermite_coefficients(
    f: Callable[[np.ndarray], np.ndarray],
    q,
    kmax: int,
    *,
    kinks: Sequence[float] = (),
) -> np.ndarray:
    """a_k = E[f(√q z) He_k(z)]/√(k!) for k = 0, ..., kmax−1 (shape ``q.shape + (kmax,)``).

    With these, the equal-variance Gaussian kernel is a power series in the correlation,
    E[f(u₁)f(u₂)] = Σ_k a_k² c^k (Mehler's formula; Poole et al. 2016, arXiv 1606.05340,
    and Daniely et al. 2016, arXiv 1602.05897, §4 "dual activations"). He_k are the
    probabilists' Hermite polynomials; the normalised recurrence
    h_{k+1} = (z h_k − √k h_{k−1})/√(k+1) avoids factorials. The rule extends to |z| ≤ 13
    (h_k(z)φ(z) ≤ e^{−z²/4} there) with panels short enough to resolve h_k for k ≤ 512
    (20 Gauss–Legendre nodes each) and at most one unit long in x = √q z.

    When every kink is at 0 (smooth φ, ELU, SELU) one node set serves all q and the
    projection is a single matrix product; other kinks need a rule per q (slower).
    """
    kmax = int(kmax)
    if kmax < 1 or kmax > 512:
        raise InvalidInput(f"kmax must be in [1, 512], got {kmax}")
    q = nonneg_array("q", q, "(a variance) must be non-negative")
    s = np.sqrt(q)
    if all(k == 0.0 for k in kinks):
        hz = min(0.5, 1.0 / max(float(np.max(s, initial=0.0)), 1e-300))
        z, w = quadrature_rule(1.0, 0.0, tuple(kinks), zmax=13.0, hz=hz, order=20, ladder=False)
        basis = hermite_functions(z, kmax) * w[:, None]
        with np.errstate(all="ignore"):
            fx = f(s[..., None] * z)
        require_resolved(z, w * fx, 13.0, "E[f(sqrt(q) z) He_k(z)]")
        return fx @ basis
    z, w = quadrature_rule(q, 0.0, kinks, zmax=13.0, hz=0.5, order=20)
    with np.errstate(all="ignore"):
        fw = w * f(s[..., None] * z)
    require_resolved(z, fw, 13.0, "E[f(sqrt(q) z) He_k(z)]")
    out = np.empty(q.shape + (kmax,))
    for k, h in enumerate(_hermite_sequence(z, kmax)):  # one h_k at a time: no (..., M, K) array
        out[..., k] = np.sum(fw * h, axis=-1)
    return out


def _hermite_sequence(z: np.ndarray, kmax: int):
    """h_k(z) = He_k(z)/√(k!) for k = 0, ..., kmax−1, one array at a time, by the normalised
    three-term recurrence h_{k+1} = (z h_k − √k h_{k−1})/√(k+1) (no factorials)."""
    h_prev, h = np.zeros_like(z), np.ones_like(z)
    for k in range(kmax):
        yield h
        h, h_prev = (z * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1), h


def hermite_functions(z, kmax: int) -> np.ndarray:
    """h_k(z) = He_k(z)/√(k!) for k < ``kmax``, stacked on a new last axis (shape
    ``z.shape + (kmax,)``): the orthonormal basis of L²(N(0, 1)) that
    :func:`hermite_coefficients` projects on."""
    z = np.asarray(z, dtype=float)
    out = np.empty(z.shape + (int(kmax),))
    for k, h in enumerate(_hermite_sequence(z, int(kmax))):
        out[..., k] = h
    return out


def _two_sided_tail(zmax: float) -> float:
    return math.erfc(zmax / math.sqrt(2.0))


def tail_fraction(z, wf, zmax: float = 9.0, w=None) -> np.ndarray:
    """Estimated share of Σ|w f| that lies beyond |z| = ``zmax`` (last axis summed).

    With B₁, B₂ the masses Σ|w f| of the bands zmax − 1.5 < |z| ≤ zmax and
    zmax − 3 < |z| ≤ zmax − 1.5 and r = B₁/B₂, the mass beyond is estimated as the
    geometric continuation B₁ r/(1 − r); inf where r ≥ ½ (the integrand does not decay at
    the window edge) or where a value is not finite.

    ``w`` (optional): the quadrature weights alone (of the standard normal measure, with
    any outer factor), so that |f| at the nodes is ``|wf|/w``. Where |f| does not grow from
    the inner band to the outer one, the mass beyond is also bounded by
    max|f|_outer · Σw · 2Φ(−zmax) (|f| ≤ max|f|_outer beyond the window), the smaller of
    the two estimates is used, and the share is taken of max(total, max|f|_outer · Σw): a
    sum of terms of that scale is resolved to its float64 round-off, so an expectation far
    below it (an orthant probability at strong correlation, whose mass starts near the
    edge) is not mistaken for a heavy tail, while any integrand that grows toward the edge
    is judged by the geometric continuation alone.
    """
    a = np.abs(np.asarray(wf, dtype=float))
    az = np.broadcast_to(np.abs(np.asarray(z, dtype=float)), a.shape)
    outer = az > zmax - _BAND
    inner = (az > zmax - 2 * _BAND) & ~outer
    with np.errstate(all="ignore"):
        b1 = np.sum(np.where(outer, a, 0.0), axis=-1)
        b2 = np.sum(np.where(inner, a, 0.0), axis=-1)
        total = np.sum(a, axis=-1)
        r = np.where(b1 == 0, 0.0, b1 / b2)
        beyond = np.where(r < 0.5, b1 * r / (1.0 - r), np.inf)
        if w is not None:
            wa = np.broadcast_to(np.abs(np.asarray(w, dtype=float)), a.shape)
            f = np.where(wa > 0, a / wa, 0.0)
            f1 = np.max(np.where(outer, f, 0.0), axis=-1)
            f2 = np.max(np.where(inner, f, 0.0), axis=-1)
            scale = f1 * np.sum(wa, axis=-1)
            bounded = np.isfinite(f1) & (f1 <= f2)
            beyond = np.where(bounded, np.minimum(beyond, scale * _two_sided_tail(zmax)), beyond)
            total = np.where(bounded, np.maximum(total, scale), total)
        frac = np.where(total > 0, beyond / total, 0.0)
    return np.where(np.isfinite(total), frac, np.inf)


def require_resolved(z, wf, zmax: float, what: str, w=None) -> None:
    """Raise ``InvalidInput`` where :func:`tail_fraction` exceeds :data:`TAIL_RTOL`."""
    if np.all(np.isfinite(wf)):
        frac = tail_fraction(z, wf, zmax, w)
        if np.all(frac <= TAIL_RTOL):
            return
        worst = float(np.max(frac))
        detail = (
            "the integrand does not decay at the window edge"
            if not math.isfinite(worst)
            else f"an estimated {worst:.1e} of it lies beyond the window"
        )
    else:
        detail = "the integrand is not finite at some quadrature nodes"
    raise InvalidInput(
        f"{what} is not resolved by the Gaussian quadrature on |z| <= {zmax:g}: {detail}; "
        "the expectation is infinite or too heavy-tailed (the integrand must grow slower "
        "than exp(z^2/2) and be resolved within the window)"
    )
