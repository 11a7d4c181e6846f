"""Text → checked expression tree: the grammar, its allow-list and its bounds.

The text is parsed by Python's :mod:`ast` in ``mode="eval"`` (a parser only: nothing is
compiled to run or evaluated) and every node is checked against a closed grammar before the
checked tree (:class:`Node`) is built. The module docstring of
:mod:`sigprop.theory.expression` states the grammar and the reasons for each bound.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

from sigprop.validate import InvalidInput

__all__ = [
    "FUNCTIONS",
    "CONSTANTS",
    "MAX_LENGTH",
    "MAX_NODES",
    "MAX_DEPTH",
    "MAX_LITERAL",
    "MAX_CONSTANT",
    "MAX_EXPONENT",
    "Node",
    "ExpressionError",
    "parse_tree",
]

#: Longest accepted text (characters, before ``^`` becomes ``**``).
MAX_LENGTH = 400
#: Most nodes in the checked tree (numbers, ``x``, operators, calls).
MAX_NODES = 128
#: Deepest nesting of operators and calls (also of parentheses in the raw text).
MAX_DEPTH = 32
#: Largest magnitude of a numeric literal.
MAX_LITERAL = 1e6
#: Largest magnitude of the value of any constant sub-expression (``2**16``, ``pi*1e6``).
MAX_CONSTANT = 1e12
#: Largest magnitude of an exponent (a constant sub-expression) of ``**``.
MAX_EXPONENT = 16

#: Allowed functions: canonical name -> number of arguments. Names are matched without
#: regard to case (``Abs``, ``Max``, ``Heaviside`` as in sympy); ``arctan``/``arcsinh``
#: are synonyms of ``atan``/``asinh``.
FUNCTIONS: dict[str, int] = {
    "abs": 1,
    "asinh": 1,
    "atan": 1,
    "cos": 1,
    "cosh": 1,
    "erf": 1,
    "erfc": 1,
    "exp": 1,
    "heaviside": 1,
    "log": 1,
    "max": 2,
    "min": 2,
    "sigmoid": 1,
    "sign": 1,
    "sin": 1,
    "sinh": 1,
    "softplus": 1,
    "sqrt": 1,
    "tanh": 1,
}
_FUNCTION_ALIASES = {"arctan": "atan", "arcsinh": "asinh"}
#: Named constants (real numbers): ``pi``, ``e`` (also ``E``).
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
#: Functions refused with a specific reason (the rest of sympy's names are just unknown).
_DISCONTINUOUS = ("floor", "ceiling", "ceil", "frac", "round", "trunc", "mod")

_ALLOWED_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ \t+-*/^().,"
)
_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}
_BINOP_TEXT = {ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.BitXor: "^"}


class ExpressionError(InvalidInput):
    """An activation expression outside the grammar (an :class:`InvalidInput`); ``rule``
    is the rule it breaks, in words."""

    def __init__(self, rule: str):
        super().__init__(rule)
        self.rule = rule


def allowed_summary() -> str:
    """One line listing what the grammar accepts (appended to every refusal)."""
    return (
        "allowed: the variable x, numbers, pi, e, + - * / and ** or ^ with a constant "
        f"exponent, and the functions {', '.join(sorted(FUNCTIONS))}"
    )


@dataclass(frozen=True, eq=False)
class Node:
    """One node of a checked expression tree.

    ``op`` is ``"x"``, ``"num"`` (``value`` the number), ``"const"`` (``value`` ``"pi"`` or
    ``"e"``), ``"neg"``, ``"add"``, ``"sub"``, ``"mul"``, ``"div"``, ``"pow"`` (the
    exponent, ``args[1]``, is constant) or ``"call"`` (``value`` the canonical function
    name). ``const`` is the float value of a sub-tree without ``x`` (``None`` where ``x``
    occurs), computed once when the tree is built and bounded by :data:`MAX_CONSTANT`.
    """

    op: str
    args: tuple[Node, ...] = ()
    value: float | int | str | None = None
    const: float | None = None

    @property
    def has_x(self) -> bool:
        return self.const is None

    def walk(self):
        """Every node of the tree, parents before children (iterative)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.args))


def parse_tree(text: str) -> Node:
    """Check ``text`` against the grammar and return its tree; :class:`ExpressionError`
    (an ``InvalidInput``) naming the broken rule otherwise."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters")
    bad = sorted(set(text) - _ALLOWED_CHARS)
    if bad:
        shown = "".join(bad[:8]).encode("ascii", "backslashreplace").decode()
        raise ExpressionError(f"character(s) {shown!r} are not part of the grammar")
    depth = 0
    for ch in text:  # before the parser sees it: nesting is bounded up front
        depth += ch == "("
        depth -= ch == ")"
        if depth > MAX_DEPTH:
            raise ExpressionError(f"parentheses are nested deeper than {MAX_DEPTH}")
    # `^` means `**` (sympy's convention). The character set has no quote and no `#`, so
    # there are no strings or comments in which a `^` could stand for something else.
    source = text.replace("^", "**").strip()
    if not source:
        raise ExpressionError("the expression is empty")
    try:
        tree = ast.parse(source, mode="eval")  # parse only; nothing is compiled to run
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(
            f"not a valid expression (syntax error{where}; write products with '*', e.g. 2*x)"
        ) from None
    except (ValueError, MemoryError, RecursionError):  # e.g. a NUL byte; bounded anyway
        raise ExpressionError("not a valid expression") from None
    _check_shape(tree.body)
    return _build(tree.body)


def _check_shape(root: ast.AST) -> None:
    """Node count, depth and node kinds, by an explicit stack (no recursion), so that
    nothing recursive ever sees a tree deeper than :data:`MAX_DEPTH`."""
    count = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ExpressionError(f"the expression has more than {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise ExpressionError(f"the expression is nested deeper than {MAX_DEPTH}")
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                sym = _BINOP_TEXT.get(type(node.op), type(node.op).__name__)
                raise ExpressionError(f"operator {sym!r} is not allowed")
            stack += [(node.left, depth + 1), (node.right, depth + 1)]
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub | ast.UAdd):
                raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
            stack.append((node.operand, depth + 1))
        elif isinstance(node, ast.Call):
            if node.keywords:
                raise ExpressionError("keyword arguments are not allowed")
            if isinstance(node.func, ast.Attribute):
                raise ExpressionError("attribute access ('.') is not allowed")
            if not isinstance(node.func, ast.Name):
                raise ExpressionError("only the listed functions can be called, by name")
            if any(isinstance(a, ast.Starred) for a in node.args):
                raise ExpressionError("starred arguments are not allowed")
            stack += [(a, depth + 1) for a in node.args]
        elif isinstance(node, ast.Constant):
            pass  # checked in _number
        elif isinstance(node, ast.Name):
            pass  # checked in _build
        elif isinstance(node, ast.Attribute):
            raise ExpressionError("attribute access ('.') is not allowed")
        elif isinstance(node, ast.Subscript):
            raise ExpressionError("subscripts are not allowed")
        elif isinstance(node, ast.Compare | ast.BoolOp | ast.IfExp):
            raise ExpressionError("comparisons and conditionals are not allowed")
        else:
            raise ExpressionError(f"{type(node).__name__} is not allowed")


def _number(node: ast.Constant) -> Node:
    v = node.value
    if type(v) not in (int, float):  # bool, complex, str, bytes, None, Ellipsis
        raise ExpressionError(f"literal {v!r} is not a real number")
    if not math.isfinite(v) or abs(v) > MAX_LITERAL:
        raise ExpressionError(f"number {v!r} is larger than {MAX_LITERAL:g} in magnitude")
    return Node("num", value=v, const=float(v))


def _build(node: ast.AST) -> Node:
    """Checked tree from a shape-checked ast (recursion depth ≤ MAX_DEPTH)."""
    if isinstance(node, ast.Constant):
        return _number(node)
    if isinstance(node, ast.Name):
        name = node.id
        if name == "x":
            return Node("x")
        key = name.lower()
        if key in CONSTANTS and name in ("pi", "e", "E"):
            return Node("const", value=key, const=CONSTANTS[key])
        if _function_name(name) is not None:
            raise ExpressionError(f"function {name!r} must be called with arguments")
        if name in ("I", "j", "J", "oo", "zoo", "nan"):
            raise ExpressionError(f"name {name!r} is not allowed (real numbers only)")
        raise ExpressionError(f"unknown name {name!r}: the expression must depend on x only")
    if isinstance(node, ast.UnaryOp):
        arg = _build(node.operand)
        if isinstance(node.op, ast.UAdd):
            return arg
        return _fold(Node("neg", (arg,)))
    if isinstance(node, ast.BinOp):
        op = _BINOPS[type(node.op)]
        left, right = _build(node.left), _build(node.right)
        if op == "pow":
            if right.has_x:
                raise ExpressionError(
                    "the exponent of ** must be a constant (write exp(...) for powers in x)"
                )
            if abs(right.const) > MAX_EXPONENT:
                raise ExpressionError(
                    f"the exponent {right.const:g} of ** exceeds {MAX_EXPONENT} in magnitude"
                )
        return _fold(Node(op, (left, right)))
    if isinstance(node, ast.Call):
        name = _function_name(node.func.id)
        if name is None:
            raw = node.func.id
            if raw.lower() in _DISCONTINUOUS:
                raise ExpressionError(f"function {raw!r} is not allowed: it is discontinuous")
            raise ExpressionError(f"function {raw!r} is not allowed")
        arity = FUNCTIONS[name]
        if len(node.args) != arity:
            raise ExpressionError(
                f"function {name!r} takes {arity} argument{'s' if arity > 1 else ''}, "
                f"got {len(node.args)}"
            )
        return _fold(Node("call", tuple(_build(a) for a in node.args), value=name))
    raise ExpressionError(f"{type(node).__name__} is not allowed")  # pragma: no cover


def _function_name(name: str) -> str | None:
    key = name.lower()
    key = _FUNCTION_ALIASES.get(key, key)
    return key if key in FUNCTIONS else None


def _fold(node: Node) -> Node:
    """Attach the float value of a constant sub-tree (all children constant), checked to be
    real, finite and at most :data:`MAX_CONSTANT` in magnitude."""
    if any(a.has_x for a in node.args):
        return node
    vals = [a.const for a in node.args]
    try:
        v = constant_value(node.op, node.value, vals)
    except (OverflowError, ZeroDivisionError, ValueError):
        v = None
    if v is None or isinstance(v, complex) or not math.isfinite(v):
        raise ExpressionError(
            f"a constant part of the expression ({_describe(node)}) is not a finite real number"
        )
    if abs(v) > MAX_CONSTANT:
        raise ExpressionError(
            f"a constant part of the expression exceeds {MAX_CONSTANT:g} in magnitude"
        )
    return Node(node.op, node.args, node.value, float(v))


def _describe(node: Node) -> str:
    return unparse(node) if len(unparse(node)) <= 40 else unparse(node)[:37] + "..."


def constant_value(op: str, name, vals: list[float]):
    """Value of one operator on constant operands (Python floats; raises OverflowError,
    ZeroDivisionError or ValueError where it is not a finite real number)."""
    if op == "neg":
        return -vals[0]
    if op == "add":
        return vals[0] + vals[1]
    if op == "sub":
        return vals[0] - vals[1]
    if op == "mul":
        return vals[0] * vals[1]
    if op == "div":
        return vals[0] / vals[1]
    if op == "pow":
        base, p = vals
        if base < 0 and not float(p).is_integer():
            return None
        return math.pow(base, p)
    u = vals[0]
    if name == "heaviside":
        return 1.0 if u > 0 else (0.0 if u < 0 else 0.5)
    if name == "sign":
        return float((u > 0) - (u < 0))
    if name == "max":
        return max(vals)
    if name == "min":
        return min(vals)
    if name == "sigmoid":
        return 1.0 / (1.0 + math.exp(-u)) if u >= 0 else math.exp(u) / (1.0 + math.exp(u))
    if name == "softplus":
        return max(u, 0.0) + math.log1p(math.exp(-abs(u)))
    fn = {
        "abs": abs,
        "asinh": math.asinh,
        "atan": math.atan,
        "cos": math.cos,
        "cosh": math.cosh,
        "erf": math.erf,
        "erfc": math.erfc,
        "exp": math.exp,
        "log": math.log,
        "sin": math.sin,
        "sinh": math.sinh,
        "sqrt": math.sqrt,
        "tanh": math.tanh,
    }[name]
    return fn(u)


_INFIX = {"add": " + ", "sub": " - ", "mul": "*", "div": "/", "pow": "**"}


def unparse(node: Node) -> str:
    """The tree as text in the grammar (fully parenthesised where it matters)."""
    if node.op == "x":
        return "x"
    if node.op == "num":
        return repr(node.value)
    if node.op == "const":
        return str(node.value)
    if node.op == "neg":
        return f"-{_atom(node.args[0])}"
    if node.op in _INFIX:
        a, b = node.args
        return f"{_atom(a)}{_INFIX[node.op]}{_atom(b)}"
    return f"{node.value}({', '.join(unparse(a) for a in node.args)})"


def _atom(node: Node) -> str:
    text = unparse(node)
    simple = node.op in ("x", "const", "call") or (node.op == "num" and node.value >= 0)
    return text if simple else f"({text})"
