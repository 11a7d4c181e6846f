"""The kinks of a checked expression: the real points where abs, sign, heaviside, max or min
switches branch, found exactly from the tree.

A switching condition s(x) = t (``abs(s)``, ``sign(s)``, ``heaviside(s)``: s = 0;
``max(a, b)``/``min(a, b)``: a − b = 0) is solved by peeling the tree: a constant shift or
factor moves to the right-hand side, a strictly monotone function (``exp``, ``log``,
``tanh``, ``erf``, ``erfc``, ``atan``, ``asinh``, ``sinh``, ``sigmoid``, ``softplus``,
``sqrt``) is inverted on its range, an even one (``cosh``, ``abs``, even powers) gives
both branches, and a polynomial of degree ≤ 4 in x is solved exactly (closed form up to
degree 2, bracketing between the critical points above). Anything
else (``sin(x) = 0`` has infinitely many solutions) is refused: the quadrature must know
every kink to stay accurate. Every step is a bounded computation; nothing is searched.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from scipy import special

from sigprop.theory.expression.grammar import ExpressionError, Node, unparse
from sigprop.theory.expression.jets import evaluate

__all__ = ["find_kinks"]

#: Degree up to which a polynomial switching condition is solved.
MAX_POLY_DEGREE = 4

#: strictly increasing / decreasing functions: name -> (open range, inverse)
_MONOTONE = {
    "exp": ((0.0, math.inf), math.log),
    "log": ((-math.inf, math.inf), math.exp),
    "tanh": ((-1.0, 1.0), math.atanh),
    "erf": ((-1.0, 1.0), lambda t: float(special.erfinv(t))),
    "erfc": ((0.0, 2.0), lambda t: float(special.erfcinv(t))),
    "atan": ((-math.pi / 2, math.pi / 2), math.tan),
    "asinh": ((-math.inf, math.inf), math.sinh),
    "sinh": ((-math.inf, math.inf), math.asinh),
    "sigmoid": ((0.0, 1.0), lambda t: math.log(t / (1.0 - t))),
    "softplus": ((0.0, math.inf), lambda t: math.log(math.expm1(t))),
}


#: Most solve steps for one expression (nested abs/cosh/even powers double the branches).
MAX_STEPS = 4096


class _Unsolvable(Exception):
    pass


_STEPS = threading.local()  # solve steps taken for the expression being solved (per thread)


def _spend() -> None:
    _STEPS.n = getattr(_STEPS, "n", 0) + 1
    if _STEPS.n > MAX_STEPS:
        raise _Unsolvable


def find_kinks(tree: Node, text: str) -> tuple[float, ...]:
    """Sorted kinks of ``tree``; :class:`ExpressionError` where a switching condition is not
    one this module can solve exactly."""
    points: set[float] = set()
    _STEPS.n = 0
    for node in tree.walk():
        if node.op != "call" or not node.has_x:
            continue
        try:
            if node.value in ("abs", "sign", "heaviside"):
                points |= _solve(node.args[0], 0.0)
            elif node.value in ("max", "min"):
                points |= _switch(*node.args)
        except (_Unsolvable, OverflowError, ValueError, ZeroDivisionError, RuntimeError):
            raise ExpressionError(
                f"cannot locate the kinks of activation {text!r} (where {unparse(node)} "
                "switches branch, or it switches too often); use Activation.from_callable with explicit "
                "kinks"
            ) from None
    return tuple(sorted({float(p) + 0.0 for p in points if math.isfinite(p)}))  # no -0.0


def _switch(a: Node, b: Node) -> set[float]:
    """Solutions of a(x) = b(x)."""
    if not b.has_x:
        return _solve(a, b.const)
    if not a.has_x:
        return _solve(b, a.const)
    pa, pb = _poly(a), _poly(b)
    if pa is None or pb is None:
        raise _Unsolvable
    n = max(len(pa), len(pb))
    diff = np.zeros(n)
    diff[: len(pa)] += pa
    diff[: len(pb)] -= pb
    return _poly_roots(diff, 0.0)


def _solve(node: Node, t: float) -> set[float]:
    """All real x with f(x) = t, f the function of ``node`` (which contains x)."""
    _spend()
    if not math.isfinite(t):
        return set()
    op = node.op
    if op in ("add", "sub", "mul") and all(a.has_x for a in node.args):
        # x on both sides: only a polynomial can be solved (peeling first keeps the
        # structure: (x − 1)**3 = 0 is solved as x − 1 = 0, not as an expanded cubic whose
        # triple root float64 resolves only to eps^(1/3))
        poly = _poly(node)
        if poly is None:
            raise _Unsolvable
        return _poly_roots(poly, t)
    if op == "x":
        return {t}
    if op == "neg":
        return _solve(node.args[0], -t)
    if op in ("add", "sub", "mul", "div"):
        a, b = node.args
        if op == "add":
            return _solve(b, t - a.const) if not a.has_x else _solve(a, t - _const(b))
        if op == "sub":
            return _solve(b, a.const - t) if not a.has_x else _solve(a, t + _const(b))
        if op == "mul":
            k, other = (a.const, b) if not a.has_x else (_const(b), a)
            if k == 0:
                raise _Unsolvable
            return _solve(other, t / k)
        if not b.has_x:  # a / k
            return _solve(a, t * b.const)
        if a.has_x or a.const == 0:  # u / v, or 0 / v
            raise _Unsolvable
        return set() if t == 0 else _solve(b, a.const / t)  # k / v
    if op == "pow":
        return _solve_power(node.args[0], node.args[1].const, t)
    name = node.value
    if name in ("max", "min"):
        return _solve_extremum(node, t)
    (u,) = node.args
    if name in _MONOTONE:
        (lo, hi), inverse = _MONOTONE[name]
        return _solve(u, inverse(t)) if lo < t < hi else set()
    if name == "sqrt":
        return _solve(u, t * t) if t >= 0 else set()
    if name == "cosh":
        if t <= 1:  # cosh(u) = 1 is its minimum: touched, not crossed
            return set()
        r = math.acosh(t)
        return _solve(u, r) | _solve(u, -r)
    if name == "abs":
        if t <= 0:  # |u| = 0 touches without crossing; the kink of abs itself is walked too
            return set()
        return _solve(u, t) | _solve(u, -t)
    raise _Unsolvable  # sin, cos, sign, heaviside


def _const(node: Node) -> float:
    if node.has_x:
        raise _Unsolvable  # a sum or product of two non-polynomial terms in x
    return node.const


def _solve_power(v: Node, p: float, t: float) -> set[float]:
    if float(p).is_integer():
        n = int(p)
        if n < 0:
            return set() if t == 0 else _solve_power(v, -n, 1.0 / t)
        if n % 2:
            return _solve(v, math.copysign(abs(t) ** (1.0 / n), t))
        if t <= 0:  # v^n = 0 for even n touches 0 without a sign change: no switch
            return set()
        r = t ** (1.0 / n)
        return _solve(v, r) | _solve(v, -r)
    if t < 0 or (t == 0 and p < 0):
        return set()
    return _solve(v, t ** (1.0 / p))


def _solve_extremum(node: Node, t: float) -> set[float]:
    """max(a, b) = t: a = t where b ≤ t, or b = t where a ≤ t (min: ≥)."""
    a, b = node.args
    sign = 1.0 if node.value == "max" else -1.0
    out: set[float] = set()
    for this, other in ((a, b), (b, a)):
        if not this.has_x:
            continue
        for x0 in _solve(this, t):
            o = other.const if not other.has_x else float(evaluate(other, np.float64(x0)))
            if sign * (o - t) <= 1e-12 * (1.0 + abs(t)):
                out.add(x0)
    return out


def _poly(node: Node) -> np.ndarray | None:
    """Coefficients (ascending) when the sub-tree is a polynomial of degree ≤ 4 in x."""
    if not node.has_x:
        return np.array([node.const])
    op = node.op
    if op == "x":
        return np.array([0.0, 1.0])
    if op == "call":
        return None
    parts = [_poly(a) for a in node.args] if op != "pow" else [_poly(node.args[0])]
    if any(p is None for p in parts):
        return None
    if op == "neg":
        return -parts[0]
    if op in ("add", "sub"):
        a, b = parts
        out = np.zeros(max(len(a), len(b)))
        out[: len(a)] += a
        out[: len(b)] += b if op == "add" else -b
        return out
    if op == "mul":
        out = np.polynomial.polynomial.polymul(*parts)
    elif op == "div":
        if node.args[1].has_x:
            return None
        return parts[0] / node.args[1].const
    else:  # pow
        p = node.args[1].const
        if not (float(p).is_integer() and 0 <= p <= MAX_POLY_DEGREE):
            return None
        out = np.polynomial.polynomial.polypow(parts[0], int(p))
    return out if _degree(out) <= MAX_POLY_DEGREE else None


def _degree(c: np.ndarray) -> int:
    nz = np.flatnonzero(c)
    return int(nz[-1]) if nz.size else 0


def _poly_roots(coef: np.ndarray, t: float) -> set[float]:
    c = np.array(coef, dtype=float)
    c[0] -= t
    d = _degree(c)
    c = c[: d + 1]
    if not np.all(np.isfinite(c)):
        raise _Unsolvable
    if d == 0:
        return set()  # constant: no isolated switching point
    if d == 1:
        return {-c[0] / c[1]}
    if d == 2:
        a, b, cc = c[2], c[1], c[0]
        disc = b * b - 4 * a * cc
        if disc <= 8e-16 * (b * b + abs(4 * a * cc)):
            return set()  # no real root, or a double one (no sign change: not a kink)
        q = -0.5 * (b + math.copysign(math.sqrt(disc), b))  # stable form
        roots = {q / a}
        if q != 0:
            roots.add(cc / q)
        return roots
    return _bracketed_roots(c)


def _bisect(poly, a: float, b: float, fa: float) -> float:
    """The sign change of ``poly`` in [a, b] (fa = poly(a)), to adjacent float64 numbers."""
    for _ in range(2200):  # enough to halve any float interval down to one ulp
        m = a + 0.5 * (b - a)
        if m in (a, b):
            break
        with np.errstate(all="ignore"):
            fm = float(poly(m))
        if fm == 0.0:
            return m
        if (fm < 0) == (fa < 0):
            a, fa = m, fm
        else:
            b = m
    return a if abs(fa) <= abs(float(poly(b))) else b


def _bracketed_roots(c: np.ndarray) -> set[float]:
    """Sign changes of the polynomial c (ascending, degree 3 or 4) on the real line.

    The critical points (real roots of c′, by recursion down to the closed-form quadratic)
    cut the line into intervals on which c is monotone; each interval between the Cauchy
    bound's end points holds a root iff c changes sign on it, found to
    float precision (bisection to adjacent floats). Roots of even multiplicity (no sign change) are not kinks: a
    switching condition that touches 0 without crossing it switches no branch.
    """
    bound = 1.0 + float(np.max(np.abs(c[:-1] / c[-1])))  # Cauchy: every root is inside
    if bound > 1e12:  # roots up to 1e12 away: not a kink of an activation, an ill-posed one
        raise _Unsolvable
    crit = [r for r in _poly_roots(np.polynomial.polynomial.polyder(c), 0.0) if abs(r) < bound]
    edges = [-bound, *sorted(crit), bound]
    roots: set[float] = set()
    poly = np.polynomial.Polynomial(c)
    for a, b in zip(edges[:-1], edges[1:]):
        with np.errstate(all="ignore"):
            fa, fb = float(poly(a)), float(poly(b))
        if fa == 0.0:
            roots.add(a)
        elif fa * fb < 0:
            roots.add(_bisect(poly, a, b, fa))
    return roots
