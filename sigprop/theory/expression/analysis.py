"""Domain and growth of a checked expression, decided from its tree (abstract interpretation).

Every node gets, bottom-up,

* ``lo``, ``hi``: an interval (floats, ±inf allowed) containing f(x) for every real x
  (interval arithmetic; monotone functions map the end points, 0·∞ = 0);
* ``up``, ``down``: asymptotic bounds as |x| → ∞ on the positive and negative parts of f,
  f ≤ c·s_up(|x|) and f ≥ −c·s_down(|x|) for some c, on the scale
  ``ZERO`` (0) < ``C`` (a constant) < ``P(d)`` (|x|^d) < ``E(p)`` (exp(a|x|^p)) < ``TOP``
  (no bound); constants c are never needed, only the scale;
* ``d1``, ``d2``: the same kind of bound on |f′| and |f″| (chain rule on the scale).

The domain rules use the intervals: a denominator, a negative power or ``log`` needs an
argument interval that excludes 0 (``log``: lies in (0, ∞)), a fractional power needs a
base ≥ 0 (> 0 when the power is below 2, else φ′ or φ″ is infinite where the base is 0).
When the interval arithmetic cannot prove the rule (it over-approximates), the expression
is refused with the reason: sound, not complete.

Growth decides whether the Gaussian moments of the mean-field theory exist: if |g(x)| ≤
c·exp(a|x|^p) with p < 2 for g = φ, φ′, φ″, then E[g(√q z)²] < ∞ for every q. A bound of
scale exp(a x²) or above is refused, since for such φ (e.g. exp(x²)) E[φ(√q z)²] is
infinite from q = 1/(4a) on, and the maps the theory iterates are undefined there. A
polynomial bound above degree :data:`MAX_DEGREE` is refused as well: the rule
|z| ≤ 9 of :mod:`sigprop.theory.gaussian` resolves E[z^{2d}] to ~1e-10 only up to d = 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sigprop.theory.expression.grammar import ExpressionError, Node, constant_value, unparse

__all__ = ["MAX_DEGREE", "Bounds", "analyse", "describe_scale"]

#: Largest polynomial degree of the growth of φ, φ′, φ″.
MAX_DEGREE = 8

# scale values: (rank, parameter); tuples compare in the order of the docstring
ZERO = (0, 0.0)
C = (1, 0.0)
TOP = (4, 0.0)
#: log v for v ≤ c|x|^d is bounded by |x|^ε for every ε > 0: this ε stands for "log".
_LOG = 1e-3


def _P(d: float):
    return (2, float(d)) if d > 0 else C


def _E(p: float):
    return (3, float(p))


def describe_scale(s) -> str:
    rank, p = s
    return {
        0: "zero",
        1: "bounded",
        2: f"|x|^{p:g}" if p != _LOG else "log|x|",
        3: f"exp(c|x|^{p:g})",
        4: "faster than any exp(c|x|^p)",
    }[rank]


def _mul(a, b):
    if a == ZERO or b == ZERO:
        return ZERO
    if TOP in (a, b):
        return TOP
    if a[0] == 3 or b[0] == 3:
        return _E(max(s[1] for s in (a, b) if s[0] == 3))
    if a[0] == 2 and b[0] == 2:
        return _P(a[1] + b[1])
    return a if a[0] == 2 else b


def _pow(a, k: float):
    """Scale of |f|^k (k > 0) for |f| of scale a."""
    if a[0] == 2:
        return _P(a[1] * k)
    return a


def _exp_of(up):
    """Scale of exp(u) for u ≤ c·s_up."""
    if up in (ZERO, C):
        return C
    if up[0] == 2:
        return _E(up[1])
    return TOP


def _log_of(up):
    """Scale of log v (upper side) for v ≤ c·s_up."""
    if up in (ZERO, C):
        return up
    if up[0] == 2:
        return _P(_LOG)
    if up[0] == 3:
        return _P(up[1])
    return TOP


@dataclass(frozen=True)
class Bounds:
    lo: float
    hi: float
    up: tuple
    down: tuple
    d1: tuple
    d2: tuple

    @property
    def mag(self):
        return max(self.up, self.down)


def _make(lo, hi, up, down, d1, d2) -> Bounds:
    """Bounds with the asymptotic side tightened by the global interval."""
    if hi <= 0:
        up = ZERO
    elif hi < math.inf:
        up = min(up, C)
    if lo >= 0:
        down = ZERO
    elif lo > -math.inf:
        down = min(down, C)
    return Bounds(lo, hi, up, down, d1, d2)


def analyse(tree: Node) -> Bounds:
    """Bounds of the whole tree; :class:`ExpressionError` where a domain rule fails."""
    return _bounds(tree)


def check_growth(b: Bounds) -> None:
    """Refuse growth of φ, φ′ or φ″ at the Gaussian scale or above, or polynomial growth
    above :data:`MAX_DEGREE`."""
    for label, s in (
        ("the expression", b.mag),
        ("its first derivative", b.d1),
        ("its second derivative", b.d2),
    ):
        if s >= _E(2.0):
            raise ExpressionError(
                f"{label} may grow like {describe_scale(s)}: E[phi(sqrt(q) z)^2] would be "
                "infinite for large q (growth must stay below exp(c x^2))"
            )
        if s[0] == 2 and s[1] > MAX_DEGREE:
            raise ExpressionError(
                f"{label} grows like |x|^{s[1]:g}; polynomial growth above degree "
                f"{MAX_DEGREE} is not resolved by the Gaussian quadrature"
            )


def _safe(op: str, name, vals) -> float:
    """An interval end point: constant_value with overflow mapped to ±inf."""
    try:
        v = constant_value(op, name, list(vals))
    except OverflowError:
        return math.copysign(math.inf, vals[0]) if name in ("sinh", "neg") else math.inf
    return v


def _imul(a: float, b: float) -> float:
    return 0.0 if a == 0 or b == 0 else a * b


def _interval_mul(a: Bounds, b: Bounds) -> tuple[float, float]:
    p = [_imul(x, y) for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
    return min(p), max(p)


def _bounds(node: Node) -> Bounds:
    if not node.has_x:
        c = node.const
        return _make(c, c, C, C, ZERO, ZERO)
    op = node.op
    if op == "x":
        return Bounds(-math.inf, math.inf, _P(1), _P(1), C, ZERO)
    args = [_bounds(a) for a in node.args]
    if op == "neg":
        (a,) = args
        return Bounds(-a.hi, -a.lo, a.down, a.up, a.d1, a.d2)
    if op in ("add", "sub"):
        a, b = args
        if op == "sub":
            b = Bounds(-b.hi, -b.lo, b.down, b.up, b.d1, b.d2)
        return _make(
            a.lo + b.lo, a.hi + b.hi, max(a.up, b.up), max(a.down, b.down),
            max(a.d1, b.d1), max(a.d2, b.d2),
        )  # fmt: skip
    if op == "mul":
        return _product(*args)
    if op == "div":
        return _product(args[0], _reciprocal(node.args[1], args[1]))
    if op == "pow":
        return _power(node, args[0], node.args[1].const)
    return _call(node, args)


def _product(a: Bounds, b: Bounds) -> Bounds:
    lo, hi = _interval_mul(a, b)
    up = max(_mul(a.down, b.down), _mul(a.up, b.up))
    down = max(_mul(a.down, b.up), _mul(a.up, b.down))
    d1 = max(_mul(a.d1, b.mag), _mul(a.mag, b.d1))
    d2 = max(_mul(a.d2, b.mag), _mul(a.d1, b.d1), _mul(a.mag, b.d2))
    return _make(lo, hi, up, down, d1, d2)


def _nonzero(node: Node, b: Bounds, what: str) -> None:
    if b.lo <= 0 <= b.hi:
        raise ExpressionError(
            f"{what} {unparse(node)} may vanish on the real line (its range is within "
            f"[{b.lo:g}, {b.hi:g}]); write it so that it is provably non-zero"
        )


def _reciprocal(node: Node, b: Bounds) -> Bounds:
    _nonzero(node, b, "the denominator")
    ends = [0.0 if math.isinf(v) else 1.0 / v for v in (b.lo, b.hi)]
    # 1/v is bounded by 1/min|v|; (1/v)′ = −v′/v², (1/v)″ = 2v′²/v³ − v″/v²
    return _make(min(ends), max(ends), C, C, b.d1, max(_mul(b.d1, b.d1), b.d2))


def _power(node: Node, b: Bounds, p: float) -> Bounds:
    base = node.args[0]
    if float(p).is_integer():
        n = int(p)
        if n == 0:
            return _make(1.0, 1.0, C, C, ZERO, ZERO)
        if n < 0:
            _nonzero(base, b, "the base of a negative power,")
            ends = [_ipow(v, n) for v in (b.lo, b.hi)]
            return _make(min(ends), max(ends), C, C, b.d1, max(_mul(b.d1, b.d1), b.d2))
        ends = [_ipow(v, n) for v in (b.lo, b.hi)]
        if n % 2 == 0:
            lo = 0.0 if b.lo < 0 < b.hi else min(ends)
            up, down = _pow(b.mag, n), ZERO
        else:
            lo = min(ends)
            up, down = _pow(b.up, n) if b.up != ZERO else ZERO, _pow(b.down, n)
            down = down if b.down != ZERO else ZERO
        hi = max(ends)
        m1 = _pow(b.mag, n - 1) if n > 1 else C
        m2 = _pow(b.mag, n - 2) if n > 2 else (C if n == 2 else ZERO)
        d1 = _mul(m1, b.d1)
        d2 = max(_mul(m2, _mul(b.d1, b.d1)), _mul(m1, b.d2))
        return _make(lo, hi, up, down, d1, d2)
    text = unparse(node)
    if b.lo < 0:
        raise ExpressionError(
            f"{text}: a fractional power needs a base that is never negative "
            f"(the range of {unparse(base)} is within [{b.lo:g}, {b.hi:g}])"
        )
    if p < 2 and b.lo <= 0:
        raise ExpressionError(
            f"{text}: the derivatives of a power below 2 are infinite where the base is 0; "
            f"write the base so that it is provably positive"
        )
    ends = [_fpow(v, p) for v in (b.lo, b.hi)]
    up = _pow(b.up, p) if p > 0 else C
    m1 = _pow(b.mag, p - 1) if p > 1 else C  # v^(p−1) with v ≥ lo > 0 where p < 1
    m2 = _pow(b.mag, p - 2) if p > 2 else C
    d1 = _mul(m1, b.d1)
    d2 = max(_mul(m2, _mul(b.d1, b.d1)), _mul(m1, b.d2))
    return _make(min(ends), max(ends), up, ZERO, d1, d2)


def _ipow(v: float, n: int) -> float:
    if math.isinf(v):
        return 0.0 if n < 0 else (math.inf if n % 2 == 0 or v > 0 else -math.inf)
    try:
        return float(v) ** n
    except OverflowError:
        return math.inf if n % 2 == 0 or v > 0 else -math.inf
    except ZeroDivisionError:  # pragma: no cover - excluded by _nonzero
        return math.inf


def _fpow(v: float, p: float) -> float:
    if math.isinf(v):
        return 0.0 if p < 0 else math.inf
    try:
        return math.pow(v, p)
    except OverflowError:
        return math.inf


#: Functions bounded with bounded first and second derivatives.
_BOUNDED_SMOOTH = ("tanh", "erf", "erfc", "sin", "cos", "atan", "sigmoid")
_DECREASING = ("erfc",)


def _call(node: Node, args: list[Bounds]) -> Bounds:
    name = node.value
    if name in ("max", "min"):
        a, b = args
        d1, d2 = max(a.d1, b.d1), max(a.d2, b.d2)
        if name == "max":
            return _make(
                max(a.lo, b.lo), max(a.hi, b.hi), max(a.up, b.up), min(a.down, b.down), d1, d2
            )
        return _make(min(a.lo, b.lo), min(a.hi, b.hi), min(a.up, b.up), max(a.down, b.down), d1, d2)
    (u,) = args
    smooth_d1 = u.d1
    smooth_d2 = max(_mul(u.d1, u.d1), u.d2)
    if name in ("sin", "cos"):
        return _make(-1.0, 1.0, C, C, smooth_d1, smooth_d2)
    if name in ("sign", "heaviside"):
        lo, hi = (_safe("call", name, [v]) for v in (u.lo, u.hi))
        return _make(lo, hi, C, C, ZERO, ZERO)
    if name == "abs":
        if u.lo >= 0:
            lo, hi = u.lo, u.hi
        elif u.hi <= 0:
            lo, hi = -u.hi, -u.lo
        else:
            lo, hi = 0.0, max(-u.lo, u.hi)
        return _make(lo, hi, u.mag, ZERO, u.d1, u.d2)
    if name == "log":
        if u.lo <= 0:
            raise ExpressionError(
                f"{unparse(node)}: the argument of log must be provably positive "
                f"(its range is within [{u.lo:g}, {u.hi:g}])"
            )
        lo, hi = _safe("call", "log", [u.lo]), _safe("call", "log", [u.hi])
        return _make(lo, hi, _log_of(u.up), C, smooth_d1, smooth_d2)
    if name == "sqrt":
        return _power(Node("pow", (node.args[0], Node("num", value=0.5, const=0.5))), u, 0.5)
    ends = [_safe("call", name, [v]) for v in (u.lo, u.hi)]
    if name == "cosh":
        lo = 1.0 if u.lo <= 0 <= u.hi else min(ends)
        m = _exp_of(u.mag)
        return _make(lo, max(ends), m, ZERO, _mul(m, u.d1), _mul(m, smooth_d2))
    lo, hi = (ends[1], ends[0]) if name in _DECREASING else (ends[0], ends[1])
    if name in _BOUNDED_SMOOTH:
        return _make(lo, hi, C, C, smooth_d1, smooth_d2)
    if name == "exp":
        m = _exp_of(u.up)
        return _make(lo, hi, m, ZERO, _mul(m, u.d1), _mul(m, smooth_d2))
    if name == "sinh":
        m = _exp_of(u.mag)
        up = _exp_of(u.up) if u.up != ZERO else ZERO
        down = _exp_of(u.down) if u.down != ZERO else ZERO
        return _make(lo, hi, up, down, _mul(m, u.d1), _mul(m, smooth_d2))
    if name == "asinh":  # |asinh u| ≤ log(1 + 2|u|); derivatives bounded factors
        up = _log_of(u.up) if u.up != ZERO else ZERO
        down = _log_of(u.down) if u.down != ZERO else ZERO
        return _make(lo, hi, up, down, smooth_d1, smooth_d2)
    if name == "softplus":  # 0 < softplus(u) ≤ max(u, 0) + log 2
        return _make(lo, hi, max(u.up, C), ZERO, smooth_d1, smooth_d2)
    raise AssertionError(f"no bounds rule for {name}")  # the grammar lists no other
