"""Sympy derivations of the mean-field closed forms, used as independent cross-checks.

Each function derives its formula by symbolic integration (not by quoting it), so the tests
can hold the numerical code of :mod:`sigprop.theory.meanfield` against an independent
derivation:

* ReLU / leaky ReLU covariance (arc-cosine kernel; Cho & Saul 2009, NeurIPS, eq. 6 with
  n = 1) by integrating in polar coordinates;
* the ReLU-family q-map slope and EOC σ_w² = 2/(1+α²) (Hayou et al. 2019, arXiv 1902.06853,
  §3);
* the erf kernel (2/π) arcsin(2Σ₁₂/√((1+2Σ₁₁)(1+2Σ₂₂))) (Williams 1997, NeurIPS) via
  Price's theorem ∂E[f(u₁)g(u₂)]/∂Σ₁₂ = E[f′(u₁)g′(u₂)] and a Gaussian integral, and
  χ₁ = 4σ_w²/(π√(1+4q)) for erf;
* the small-q expansion of the tanh q-map, which fixes the tanh EOC at σ_b = 0 to σ_w = 1
  (Poole et al. 2016, arXiv 1606.05340, §3).
"""

from __future__ import annotations

import functools

import sympy as sp

from sigprop.validate import InvalidInput

__all__ = [
    "relu_kernel",
    "leaky_relu_kernel",
    "relu_family_q_slope",
    "leaky_relu_eoc_sigma_w2",
    "erf_kernel",
    "erf_chi1",
    "tanh_q_map_series",
    "tanh_eoc_sigma_w_at_zero_bias",
]

c = sp.Symbol("c", real=True)
q = sp.Symbol("q", positive=True)
alpha = sp.Symbol("alpha", real=True)
sigma_w = sp.Symbol("sigma_w", positive=True)


@functools.lru_cache(maxsize=1)
def relu_kernel() -> sp.Expr:
    """E[relu(u₁)relu(u₂)] for unit variances and correlation c, as an expression in c.

    Write u₁ = r cos θ, u₂ = r cos(θ − ψ) with cos ψ = c (z₁, z₂ in polar coordinates);
    both are positive for θ ∈ (ψ − π/2, π/2), and the radial integral is ∫ r³e^{−r²/2} = 2.
    """
    r, t, psi = sp.symbols("r theta psi", positive=True)
    radial = sp.integrate(r**3 * sp.exp(-(r**2) / 2), (r, 0, sp.oo))
    angular = sp.integrate(sp.cos(t) * sp.cos(t - psi), (t, psi - sp.pi / 2, sp.pi / 2))
    expr = sp.simplify(radial * angular / (2 * sp.pi))
    return sp.simplify(expr.subs(psi, sp.acos(c)))


def leaky_relu_kernel() -> sp.Expr:
    """E[φ(u₁)φ(u₂)] for leaky ReLU (slope α), unit variances: φ(x) = relu(x) − α relu(−x)."""
    k = relu_kernel()
    return sp.expand((1 + alpha**2) * k - 2 * alpha * k.subs(c, -c))


def relu_family_q_slope() -> sp.Expr:
    """E[φ(√q z)²]/q for leaky ReLU: (1 + α²)/2 (the q-map is linear in q)."""
    x = sp.Symbol("x", real=True)
    dens = sp.exp(-(x**2) / (2 * q)) / sp.sqrt(2 * sp.pi * q)
    pos = sp.integrate(x**2 * dens, (x, 0, sp.oo))
    neg = sp.integrate(alpha**2 * x**2 * dens, (x, -sp.oo, 0))
    return sp.simplify((pos + neg) / q)


def leaky_relu_eoc_sigma_w2() -> sp.Expr:
    """σ_w² solving χ₁ = σ_w² E[φ′²] = σ_w²(1+α²)/2 = 1 (χ₁ does not depend on q)."""
    s2 = sp.Symbol("s2", positive=True)
    chi1 = s2 * (1 + alpha**2) / 2  # E[φ′²] = P(u>0)·1 + P(u<0)·α²
    (sol,) = sp.solve(sp.Eq(chi1, 1), s2)
    return sp.simplify(sol)


@functools.lru_cache(maxsize=1)
def erf_kernel() -> tuple[sp.Expr, tuple[sp.Symbol, sp.Symbol, sp.Symbol]]:
    """E[erf(u₁)erf(u₂)] as an expression in (Σ₁₁, Σ₂₂, Σ₁₂) = (a, b, s).

    By Price's theorem the Σ₁₂-derivative is E[erf′(u₁)erf′(u₂)] = (4/π) E[e^{−uᵀu}]
    = (4/π) det(I + 2Σ)^{−1/2} (Gaussian integral of a quadratic form); integrating it over
    Σ₁₂ from 0 (where the kernel vanishes because erf is odd) gives the arcsine kernel.
    """
    a, b = sp.symbols("a b", positive=True)
    s, r = sp.symbols("s r", real=True)
    cov = sp.Matrix([[a, r], [r, b]])
    det = sp.expand((sp.eye(2) + 2 * cov).det())  # (1+2a)(1+2b) − 4r²
    big = sp.Symbol("A", positive=True)  # stands for (1+2a)(1+2b) > 0
    const = sp.expand((1 + 2 * a) * (1 + 2 * b))
    if sp.expand(det - const + 4 * r**2) != 0:
        raise ArithmeticError("unexpected determinant of I + 2Σ")
    deriv = (4 / sp.pi) / sp.sqrt(big - 4 * r**2)
    expr = sp.integrate(deriv, (r, 0, s), conds="none")
    return sp.simplify(expr.subs(big, const)), (a, b, s)


def erf_chi1() -> sp.Expr:
    """χ₁ = σ_w² E[erf′(√q z)²] = σ_w² (4/π) E[e^{−2qz²}] = 4σ_w²/(π√(1+4q))."""
    z = sp.Symbol("z", real=True)
    e = sp.integrate(
        (4 / sp.pi) * sp.exp(-2 * q * z**2) * sp.exp(-(z**2) / 2) / sp.sqrt(2 * sp.pi),
        (z, -sp.oo, sp.oo),
    )
    return sp.simplify(sigma_w**2 * e)


def tanh_q_map_series(order: int = 4) -> sp.Expr:
    """E[tanh(√q z)²] as a power series in q to O(q^order) (term-wise Gaussian moments).

    The series is asymptotic, not convergent, but its first terms fix the small-q
    behaviour: E[tanh²] = q − 2q² + O(q³).
    """
    x = sp.Symbol("x", real=True)
    taylor = sp.series(sp.tanh(x) ** 2, x, 0, 2 * order).removeO()
    poly = sp.Poly(taylor, x)
    out = sp.S.Zero
    for (k,), coef in poly.terms():
        if k % 2 == 0:  # E[z^k] = (k−1)!! for even k
            out += coef * sp.factorial2(k - 1) * q ** (k // 2)
    return sp.expand(out)


def tanh_eoc_sigma_w_at_zero_bias() -> sp.Expr:
    """σ_w on the tanh EOC at σ_b = 0.

    With σ_b = 0, q = 0 is a fixed point with V′(0) = σ_w² (first series coefficient); it is
    the stable q* for σ_w ≤ 1 because the q² coefficient is negative, and χ₁(q* = 0) =
    σ_w² tanh′(0)² = σ_w², so χ₁ = 1 at σ_w = 1.
    """
    series = tanh_q_map_series(3)
    slope = series.coeff(q, 1)
    curvature = series.coeff(q, 2)
    if not curvature < 0:
        raise InvalidInput("unexpected sign of the tanh q-map curvature")
    (sol,) = sp.solve(sp.Eq(sigma_w**2 * slope, 1), sigma_w)
    return sol
