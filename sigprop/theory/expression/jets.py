"""Evaluate a checked expression tree and its first two derivatives (forward-mode jets).

Each node yields the jet (f, f′, f″) of its sub-expression from its children's jets by the
chain rule, with the derivatives of every allowed function written out below. The walk is
over the checked tree only (depth ≤ ``MAX_DEPTH``), so its cost is linear in the size of the
text; no code is generated and nothing is evaluated as Python. The array operations come
from an :class:`Ops` table, so the same walk serves numpy (the theory) and torch (the
``sigprop.nn`` twin), and both evaluate the same formula in the same order.

At a kink the derivative of ``abs``, ``sign``, ``heaviside``, ``max`` and ``min`` is the
one-sided average (sign(0) = 0, H(0) = ½), and the Dirac masses of φ″ at kinks are left out:
the quadrature splits at the kinks and the theory adds kink terms itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from sigprop.theory.expression.grammar import Node

__all__ = ["Ops", "NUMPY_OPS", "evaluate"]

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@dataclass(frozen=True)
class Ops:
    """Array primitives of one backend. Every function takes arrays (or Python floats
    mixed with arrays, for ``maximum``/``minimum``/``power``) and acts elementwise;
    ``heaviside(u)`` is 1 for u > 0, 0 for u < 0 and ½ at 0; ``power(v, p)`` is ``v**p``
    for a Python number ``p``."""

    exp: Callable
    log: Callable
    sqrt: Callable
    tanh: Callable
    sinh: Callable
    cosh: Callable
    sin: Callable
    cos: Callable
    atan: Callable
    asinh: Callable
    erf: Callable
    erfc: Callable
    abs: Callable
    sign: Callable
    heaviside: Callable
    maximum: Callable
    minimum: Callable
    sigmoid: Callable
    softplus: Callable
    power: Callable


NUMPY_OPS = Ops(
    exp=np.exp,
    log=np.log,
    sqrt=np.sqrt,
    tanh=np.tanh,
    sinh=np.sinh,
    cosh=np.cosh,
    sin=np.sin,
    cos=np.cos,
    atan=np.arctan,
    asinh=np.arcsinh,
    erf=special.erf,
    erfc=special.erfc,
    abs=np.abs,
    sign=np.sign,
    heaviside=lambda u: np.heaviside(u, 0.5),
    maximum=np.maximum,
    minimum=np.minimum,
    sigmoid=special.expit,
    softplus=lambda u: np.logaddexp(0.0, u),
    power=np.power,
)


def evaluate(tree: Node, x: Any, order: int = 0, ops: Ops = NUMPY_OPS) -> Any:
    """The ``order``-th derivative (0, 1 or 2) of the tree's function at ``x``."""
    if order not in (0, 1, 2):
        raise ValueError(f"order must be 0, 1 or 2, got {order}")
    return _jet(tree, x, order, ops)[order]


def _jet(node: Node, x, order: int, ops: Ops) -> tuple:
    if not node.has_x:
        return (node.const, 0.0, 0.0)
    if node.op == "x":
        return (x, 1.0, 0.0)
    if node.op == "neg":
        a = _jet(node.args[0], x, order, ops)
        return (-a[0], -a[1], -a[2]) if order else (-a[0], 0.0, 0.0)
    if node.op in ("add", "sub", "mul", "div"):
        return _binary(
            node.op, _jet(node.args[0], x, order, ops), _jet(node.args[1], x, order, ops), order
        )
    if node.op == "pow":
        return _power(_jet(node.args[0], x, order, ops), node.args[1].const, order, ops)
    args = [_jet(a, x, order, ops) for a in node.args]
    if node.value in ("max", "min"):
        return _extremum(node.value, args[0], args[1], order, ops)
    return _unary(node.value, args[0], order, ops)


def _binary(op: str, a, b, order: int) -> tuple:
    a0, a1, a2 = a
    b0, b1, b2 = b
    if op == "add":
        return (a0 + b0, a1 + b1, a2 + b2) if order else (a0 + b0, 0.0, 0.0)
    if op == "sub":
        return (a0 - b0, a1 - b1, a2 - b2) if order else (a0 - b0, 0.0, 0.0)
    if op == "mul":
        f0 = a0 * b0
        if not order:
            return (f0, 0.0, 0.0)
        f1 = a1 * b0 + a0 * b1
        f2 = a2 * b0 + 2.0 * a1 * b1 + a0 * b2 if order > 1 else 0.0
        return (f0, f1, f2)
    f0 = a0 / b0
    if not order:
        return (f0, 0.0, 0.0)
    f1 = (a1 - f0 * b1) / b0
    f2 = (a2 - 2.0 * f1 * b1 - f0 * b2) / b0 if order > 1 else 0.0
    return (f0, f1, f2)


def _power(a, p: float, order: int, ops: Ops) -> tuple:
    a0, a1, a2 = a
    if float(p).is_integer():
        n = int(p)
        if n == 0:
            return (1.0, 0.0, 0.0)
        if n == 1:
            return a
        f0 = a0**n
        if not order:
            return (f0, 0.0, 0.0)
        g1 = n * a0 ** (n - 1)
        g2 = 0.0
        if order > 1:
            g2 = 2.0 if n == 2 else n * (n - 1) * a0 ** (n - 2)
    else:
        f0 = ops.power(a0, p)
        if not order:
            return (f0, 0.0, 0.0)
        g1 = p * ops.power(a0, p - 1.0)
        g2 = p * (p - 1.0) * ops.power(a0, p - 2.0) if order > 1 else 0.0
    return _chain(f0, g1, g2, a1, a2, order)


def _chain(f0, g1, g2, u1, u2, order: int) -> tuple:
    """Jet of g(u) from g(u), g′(u), g″(u) and the jet of u."""
    f1 = g1 * u1
    f2 = g2 * u1 * u1 + g1 * u2 if order > 1 else 0.0
    return (f0, f1, f2)


def _extremum(name: str, a, b, order: int, ops: Ops) -> tuple:
    a0, b0 = a[0], b[0]
    f0 = ops.maximum(a0, b0) if name == "max" else ops.minimum(a0, b0)
    if not order:
        return (f0, 0.0, 0.0)
    h = ops.heaviside(a0 - b0 if name == "max" else b0 - a0)  # weight of a (½ at a tie)
    f1 = h * a[1] + (1.0 - h) * b[1]
    f2 = h * a[2] + (1.0 - h) * b[2] if order > 1 else 0.0
    return (f0, f1, f2)


def _unary(name: str, a, order: int, ops: Ops) -> tuple:
    u, u1, u2 = a
    if name in ("sign", "heaviside"):
        return (getattr(ops, name)(u), 0.0, 0.0)
    if name == "abs":
        f0 = ops.abs(u)
        if not order:
            return (f0, 0.0, 0.0)
        s = ops.sign(u)
        return (f0, s * u1, s * u2 if order > 1 else 0.0)
    f0, g1, g2 = _derivatives(name, u, order, ops)
    if not order:
        return (f0, 0.0, 0.0)
    return _chain(f0, g1, g2, u1, u2, order)


def _derivatives(name: str, u, order: int, ops: Ops) -> tuple:
    """(g(u), g′(u), g″(u)) for the smooth allowed functions (derivatives only up to
    ``order``; the others are 0.0)."""
    if name == "exp":
        f = ops.exp(u)
        return (f, f, f)
    if name == "log":
        f = ops.log(u)
        if not order:
            return (f, 0.0, 0.0)
        r = 1.0 / u
        return (f, r, -r * r)
    if name == "sqrt":
        f = ops.sqrt(u)
        if not order:
            return (f, 0.0, 0.0)
        g1 = 0.5 / f
        return (f, g1, -0.5 * g1 / u if order > 1 else 0.0)
    if name == "tanh":
        t = ops.tanh(u)
        if not order:
            return (t, 0.0, 0.0)
        g1 = 1.0 - t * t
        return (t, g1, -2.0 * t * g1)
    if name in ("sinh", "cosh"):
        if not order:
            return (getattr(ops, name)(u), 0.0, 0.0)
        sh, ch = ops.sinh(u), ops.cosh(u)
        return (sh, ch, sh) if name == "sinh" else (ch, sh, ch)
    if name == "sin":
        s = ops.sin(u)
        return (s, ops.cos(u) if order else 0.0, -s)
    if name == "cos":
        c = ops.cos(u)
        return (c, -ops.sin(u) if order else 0.0, -c)
    if name == "atan":
        f = ops.atan(u)
        if not order:
            return (f, 0.0, 0.0)
        r = 1.0 / (1.0 + u * u)
        return (f, r, -2.0 * u * r * r)
    if name == "asinh":
        f = ops.asinh(u)
        if not order:
            return (f, 0.0, 0.0)
        r = 1.0 / ops.sqrt(1.0 + u * u)
        return (f, r, -u * r * r * r)
    if name in ("erf", "erfc"):
        f = getattr(ops, name)(u)
        if not order:
            return (f, 0.0, 0.0)
        g1 = _TWO_OVER_SQRT_PI * ops.exp(-u * u)
        if name == "erfc":
            g1 = -g1
        return (f, g1, -2.0 * u * g1)
    if name in ("sigmoid", "softplus"):
        s = ops.sigmoid(u)
        ds = s * (1.0 - s)
        if name == "sigmoid":
            return (s, ds, ds * (1.0 - 2.0 * s))
        return (ops.softplus(u), s, ds)
    raise AssertionError(f"no derivative rule for {name}")  # the grammar lists no other
