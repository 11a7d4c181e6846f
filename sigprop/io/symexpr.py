"""The grammar of the symbolic-shape expressions a ``.pt2`` archive may carry.

``torch.export.load`` turns every ``expr_str`` string of ``models/<name>.json`` into a sympy
expression with ``sympy.sympify``, which *evaluates* the text as Python: an edited
``expr_str`` runs arbitrary code. sigprop reads the graph of an archive itself and never
parses these strings, but refuses an archive holding one that torch.export 2.x could not
have written, so that no such archive is passed on (``trust_pickle=True`` hands an archive
to ``torch.export.load``) and a doctored file is reported as what it is.

torch writes these strings with ``sympy.srepr``: nested calls such as
``Add(Mul(Integer(2), Symbol('s74', positive=True, integer=True)), Integer(3))``.
:func:`check_expr` parses the text with :mod:`ast` (parsing evaluates nothing) and accepts
only calls of the sympy and ``torch.utils._sympy.functions`` classes torch uses for shapes,
``Symbol`` with a size-variable name and boolean assumption keywords, bounded integer
literals, ``Rational``/``Float`` literals, and the names ``oo``, ``zoo``, ``nan``, ``true``,
``false``; with bounded length, node count and depth, and no power tower of constants
(``Pow(Integer(9), Pow(Integer(9), Integer(9)))`` would take sympy forever).
"""

from __future__ import annotations

import ast
import re

from sigprop.io import limits

__all__ = ["ALLOWED_FUNCTIONS", "check_expr"]

#: Callables an ``expr_str`` may use: sympy core classes and relations, and the shape
#: functions of ``torch.utils._sympy.functions`` (the ``sympy_functions`` table of
#: torch/_export/serde/serialize.py).
ALLOWED_FUNCTIONS = frozenset(
    """Symbol Integer Rational Float Add Mul Pow Mod Max Min Abs floor ceiling
    Eq Ne Lt Le Gt Ge Equality Unequality StrictLessThan StrictGreaterThan LessThan
    GreaterThan And Or Not Piecewise ExprCondPair
    FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift
    RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator
    TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity""".split()
)
_CONSTANT_NAMES = frozenset("oo zoo nan true false".split())
_ASSUMPTIONS = frozenset(
    """integer positive negative nonnegative nonpositive nonzero zero real finite infinite
    rational irrational even odd extended_real extended_positive extended_negative
    extended_nonnegative extended_nonpositive extended_nonzero commutative""".split()
)
_POWERS = frozenset("Pow PowByNatural FloatPow LShift RShift".split())
_SYMBOL_NAME = re.compile(r"[a-z]{1,4}[0-9]{1,10}")
_FLOAT_TEXT = re.compile(r"-?[0-9]{1,40}(\.[0-9]{0,40})?(e[-+]?[0-9]{1,4})?")
_CHARS = re.compile(r"[A-Za-z0-9_ (),'=.\-+]*")
_MAX_EXPONENT = 64


class ExprRefused(Exception):
    """``expr_str`` is outside the grammar; the message says which rule."""


def check_expr(text: object) -> None:
    """Raise :class:`ExprRefused` unless ``text`` is a symbolic-shape expression torch writes."""
    if not isinstance(text, str):
        raise ExprRefused("is not a string")
    if len(text) > limits.MAX_EXPR_CHARS:
        raise ExprRefused(f"is longer than {limits.MAX_EXPR_CHARS} characters")
    if not _CHARS.fullmatch(text):
        raise ExprRefused("holds characters outside the expression grammar")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ExprRefused("is not a well-formed expression") from None
    count = [0]
    _check(tree.body, 1, count)


def _int_literal(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) is int
    ):
        return -node.operand.value
    return None


def _has_symbol(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "Symbol"
        for n in ast.walk(node)
    )


def _has_power(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _POWERS
        for n in ast.walk(node)
    )


def _exponent(node: ast.AST) -> int | None:
    """The value of ``Integer(k)`` or a bare integer literal, else None."""
    value = _int_literal(node)
    if value is not None:
        return value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Integer"
        and len(node.args) == 1
    ):
        return _int_literal(node.args[0])
    return None


def _check(node: ast.AST, depth: int, count: list[int]) -> None:
    count[0] += 1
    if count[0] > limits.MAX_EXPR_NODES:
        raise ExprRefused(f"has more than {limits.MAX_EXPR_NODES} nodes")
    if depth > limits.MAX_EXPR_DEPTH:
        raise ExprRefused(f"nests deeper than {limits.MAX_EXPR_DEPTH}")
    value = _int_literal(node)
    if value is not None:
        if abs(value) > limits.MAX_EXPR_INT:
            raise ExprRefused(f"holds an integer beyond {limits.MAX_EXPR_INT}")
        return
    if isinstance(node, ast.Name):
        if node.id not in _CONSTANT_NAMES:
            raise ExprRefused(f"uses the name {node.id[:40]!r}")
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        if isinstance(node.operand, ast.Name) and node.operand.id in ("oo", "zoo"):
            return
        raise ExprRefused("negates something other than an integer or infinity")
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ExprRefused(f"uses a {type(node).__name__} (only calls of shape functions)")
    name = node.func.id
    if name not in ALLOWED_FUNCTIONS:
        raise ExprRefused(f"calls {name[:40]!r}, which is not a shape function")
    if name == "Symbol":
        _check_symbol(node)
        return
    if name == "Float":
        _check_float(node)
        return
    if node.keywords:
        raise ExprRefused(f"passes keywords to {name}")
    if name in ("Integer", "Rational") and not all(_int_literal(a) is not None for a in node.args):
        raise ExprRefused(f"{name} takes integer literals only")
    if name in _POWERS and len(node.args) == 2:
        base, exp = node.args
        k = _exponent(exp)
        if k is not None and abs(k) > _MAX_EXPONENT:
            raise ExprRefused(f"raises to the power {k} (limit {_MAX_EXPONENT})")
        if not _has_symbol(node) and (_has_power(base) or (k is None and _has_power(exp))):
            raise ExprRefused("holds a tower of constant powers")
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            raise ExprRefused("unpacks arguments")
        _check(arg, depth + 1, count)


def _check_symbol(node: ast.Call) -> None:
    if len(node.args) != 1 or not (
        isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
    ):
        raise ExprRefused("Symbol takes one name")
    if not _SYMBOL_NAME.fullmatch(node.args[0].value):
        raise ExprRefused(f"names a symbol {node.args[0].value[:40]!r} (expected s0, u1, ...)")
    for kw in node.keywords:
        if kw.arg not in _ASSUMPTIONS or not (
            isinstance(kw.value, ast.Constant) and type(kw.value.value) is bool
        ):
            raise ExprRefused("gives a Symbol an assumption outside the grammar")


def _check_float(node: ast.Call) -> None:
    if len(node.args) != 1 or not (
        isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and _FLOAT_TEXT.fullmatch(node.args[0].value)
    ):
        raise ExprRefused("Float takes one decimal literal")
    for kw in node.keywords:
        if (
            kw.arg != "precision"
            or _int_literal(kw.value) is None
            or not (0 < _int_literal(kw.value) <= 1024)
        ):
            raise ExprRefused("gives a Float a keyword outside the grammar")
