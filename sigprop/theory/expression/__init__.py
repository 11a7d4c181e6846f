"""A safe expression language for user activations φ(x), e.g. ``"x*tanh(x)"``.

User text is never evaluated as Python and never handed to ``sympify``/``parse_expr``
(which evaluate Python: a quote-free expression walking attributes from ``x`` reaches
``eval``). Instead:

1. **Parse** (:mod:`.grammar`). The text (at most :data:`MAX_LENGTH` = 400 ASCII
   characters of ``[A-Za-z0-9_ +-*/^().,]``, parentheses nested at most
   :data:`MAX_DEPTH` = 32 deep) is parsed by :func:`ast.parse` in ``mode="eval"`` — a
   parser, nothing is compiled to run — and every node is checked against the grammar::

       expr := x | NUMBER | pi | e | -expr | +expr | expr (+ | - | * | /) expr
             | expr ** CONST | expr ^ CONST | FUNCTION(expr[, expr])

   ``^`` is ``**`` (the character set has no quotes or ``#``, so replacing the character
   is a token-level replacement). NUMBER is an int or float literal with |v| ≤ 10⁶ (no
   complex literal, no bool); CONST is any sub-expression without x whose value has
   |p| ≤ 16 (``x**2``, ``x**(1/2)``, ``x**-1``). Every sub-expression without x is
   computed once in float and must be real, finite and at most 10¹² in magnitude (so
   ``9**9**9`` is refused at once). The tree has at most :data:`MAX_NODES` = 128 nodes and
   depth 32, checked by an explicit stack before anything recursive runs. Attributes,
   subscripts, keywords, comparisons, conditionals, lambdas, comprehensions, strings and
   every name other than ``x``, ``pi``, ``e``/``E`` and the functions are refused.

2. **Functions** (fixed arity, names matched without regard to case, so sympy's ``Abs``,
   ``Max``, ``Heaviside`` work): ``abs``, ``asinh``, ``atan``, ``cos``, ``cosh``,
   ``erf``, ``erfc``, ``exp``, ``heaviside`` (H(0) = ½), ``log``, ``max(a, b)``,
   ``min(a, b)``, ``sigmoid`` (1/(1+e^{−u})), ``sign``, ``sin``, ``sinh``, ``softplus``
   (log(1+e^u)), ``sqrt``, ``tanh``; ``arctan``/``arcsinh`` are synonyms. Discontinuous
   functions with infinitely many jumps (``floor``, ...) are refused.

3. **Domain and growth** (:mod:`.analysis`): interval arithmetic over the tree proves that
   every denominator and negative power is non-zero, every ``log`` argument positive and
   every fractional power's base non-negative on the whole real line (else refused), and an
   asymptotic growth bound on φ, φ′, φ″ refuses growth like exp(c x²) or faster, for which
   E[φ(√q z)²] is infinite at large q (``exp(x**2)``: from q = 1/4 on), and polynomial
   growth above degree 8.

4. **Kinks** (:mod:`.kinks`): the switching points of abs, sign, heaviside, max and min,
   solved exactly from the tree; refused where they cannot be (``max(sin(x), 0)``).

5. **Numbers** (:mod:`.jets`): φ, φ′, φ″ are computed by walking the checked tree with
   forward-mode derivatives (explicit derivative of each allowed function). Decision: no
   ``lambdify`` — it would generate and ``exec`` Python source; a walk over a tree of at
   most 128 checked nodes is as fast for arrays, its cost is linear in the text (sympy's
   second derivative of a nested text can be hundreds of kilobytes), and the same walk
   with torch operations (:class:`Ops`) is the ``sigprop.nn`` twin, so both evaluate one
   formula. The sympy form (:meth:`Expression.sympy`) is built from the checked tree with
   sympy's constructors, on demand only (display, ``to_dict``).

Every refusal raises :class:`ExpressionError` (an ``InvalidInput``) naming the rule.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from sigprop.theory.expression.analysis import MAX_DEGREE, analyse, check_growth
from sigprop.theory.expression.grammar import (
    CONSTANTS,
    FUNCTIONS,
    MAX_CONSTANT,
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_LENGTH,
    MAX_LITERAL,
    MAX_NODES,
    ExpressionError,
    Node,
    allowed_summary,
    parse_tree,
    unparse,
)
from sigprop.theory.expression.jets import NUMPY_OPS, Ops, evaluate
from sigprop.theory.expression.kinks import find_kinks

__all__ = [
    "CONSTANTS",
    "FUNCTIONS",
    "MAX_CONSTANT",
    "MAX_DEGREE",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_LENGTH",
    "MAX_LITERAL",
    "MAX_NODES",
    "NUMPY_OPS",
    "Expression",
    "ExpressionError",
    "Node",
    "Ops",
    "allowed_summary",
    "parse_expression",
    "to_sympy",
    "unparse",
]


@dataclass(frozen=True)
class Expression:
    """A checked activation expression: call it for φ (``order=1``, ``2``: φ′, φ″).

    ``kinks`` are the points where φ, φ′ or φ″ is not smooth; ``lo``/``hi`` an interval
    containing every value of φ on the real line.
    """

    text: str
    tree: Node = field(repr=False)
    kinks: tuple[float, ...] = ()
    lo: float = float("-inf")
    hi: float = float("inf")

    def __call__(self, x: Any, order: int = 0, ops: Ops = NUMPY_OPS) -> Any:
        if ops is NUMPY_OPS:
            import numpy as np

            with np.errstate(all="ignore"):  # overflow to inf is the value, not news
                return evaluate(self.tree, x, order, ops)
        return evaluate(self.tree, x, order, ops)

    def sympy(self) -> Any:
        """φ as a sympy expression in the real symbol ``x`` (imports sympy)."""
        return to_sympy(self.tree)


def parse_expression(text: str) -> Expression:
    """Check ``text`` (grammar, domain, growth, kinks) and return the :class:`Expression`.

    Raises :class:`ExpressionError` (an ``InvalidInput``) naming the rule that fails.
    """
    tree = parse_tree(text)
    if not tree.has_x:
        raise ExpressionError("the expression does not depend on x")
    bounds = analyse(tree)
    check_growth(bounds)
    kinks = find_kinks(tree, text.strip())
    return Expression(text.strip(), tree, kinks, bounds.lo, bounds.hi)


def to_sympy(tree: Node) -> Any:
    """The sympy expression of a checked tree, built with sympy's constructors."""
    import sympy

    return _to_sympy(tree, sympy, _symbol())


@functools.cache
def _symbol():
    import sympy

    return sympy.Symbol("x", real=True)


def _to_sympy(node: Node, sp, x):
    op = node.op
    if op == "x":
        return x
    if op == "num":
        return sp.Integer(node.value) if isinstance(node.value, int) else sp.Float(node.value)
    if op == "const":
        return sp.pi if node.value == "pi" else sp.E
    args = [_to_sympy(a, sp, x) for a in node.args]
    if op == "neg":
        return -args[0]
    if op == "add":
        return args[0] + args[1]
    if op == "sub":
        return args[0] - args[1]
    if op == "mul":
        return args[0] * args[1]
    if op == "div":
        return args[0] / args[1]
    if op == "pow":
        p = node.args[1].const
        exponent = sp.Integer(int(p)) if float(p).is_integer() else args[1]
        return args[0] ** exponent
    name = node.value
    if name == "sigmoid":
        return 1 / (1 + sp.exp(-args[0]))
    if name == "softplus":
        return sp.log(1 + sp.exp(args[0]))
    fn = {
        "abs": sp.Abs,
        "asinh": sp.asinh,
        "atan": sp.atan,
        "cos": sp.cos,
        "cosh": sp.cosh,
        "erf": sp.erf,
        "erfc": sp.erfc,
        "exp": sp.exp,
        "heaviside": sp.Heaviside,
        "log": sp.log,
        "max": sp.Max,
        "min": sp.Min,
        "sign": sp.sign,
        "sin": sp.sin,
        "sinh": sp.sinh,
        "sqrt": sp.sqrt,
        "tanh": sp.tanh,
    }[name]  # the closed allow-list of the grammar
    if name in ("max", "min"):
        # unevaluated: sympy's Max/Min simplification compares its arguments symbolically,
        # seconds for a nested 128-node tree; the form is for display and cross-checks
        return fn(*args, evaluate=False)
    return fn(*args)
