"""Activation registry: φ, φ′, φ″ as vectorised numpy functions plus a sympy form.

Every activation used by the mean-field theory (Poole et al. 2016, arXiv 1606.05340;
Schoenholz et al. 2017, arXiv 1611.01232) is an :class:`Activation`. Get one with
:func:`get_activation`, which accepts

* a registered name: ``linear``, ``relu``, ``leaky_relu`` (slope α, default 0.01, or
  ``leaky_relu:0.2``), ``tanh``, ``hard_tanh``, ``erf``, ``sigmoid``, ``elu`` (α, default 1,
  or ``elu:0.5``), ``selu``, ``gelu`` (exact, ``x Φ(x)``), ``silu``, ``softplus``;
* a sympy expression string in ``x`` (``"x*tanh(x)"``); derivatives come from sympy and the
  points where the expression is not smooth (``Abs``, ``Max``, ``Min``, ``Heaviside``,
  ``sign``, ``Piecewise``) are located symbolically, so quadrature can split there;
* an :class:`Activation` (returned unchanged), or one built with
  :meth:`Activation.from_callable`.

The quadrature in :mod:`sigprop.theory.gaussian` is accurate for functions that are analytic
except at the declared ``kinks`` and whose complex singularities stay at a distance of order
one from the real axis away from the origin; every registered activation satisfies this.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from sigprop._json import to_jsonable
from sigprop.validate import InvalidInput

__all__ = ["Activation", "get_activation", "registered_names", "SELU_ALPHA", "SELU_LAMBDA"]

#: SELU constants (Klambauer et al. 2017, arXiv 1706.02515, eq. 14), to float64 precision.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946

_ArrayFn = Callable[[np.ndarray], np.ndarray]


@functools.cache
def _sym():
    """``(sympy, x)`` with ``x`` the real symbol of every sympy form. sympy is imported on
    first use only: it is most of the import time of :mod:`sigprop.theory`."""
    import sympy

    return sympy, sympy.Symbol("x", real=True)


@dataclass(frozen=True)
class Activation:
    """A nonlinearity φ with its first two derivatives.

    Attributes
    ----------
    name:
        Canonical spec string; ``get_activation(name)`` rebuilds the same activation
        (``"tanh"``, ``"leaky_relu:0.2"``, ``"x*tanh(x)"``; ``from_callable`` names are
        labels only).
    phi, dphi, d2phi:
        Vectorised numpy functions φ, φ′, φ″ (float64 arrays in, same-shape arrays out).
        ``d2phi`` is ``None`` for callables given without a second derivative; the theory
        then uses derivative-free Gaussian identities instead.
    sympy_form:
        Zero-argument callable returning φ as a sympy expression in the real symbol ``x``,
        or ``None`` for callables. Read the expression through the property
        :attr:`sympy_expr` (built on first access, so sympy is imported only when needed).
    kinks:
        Points where φ, φ′ or φ″ is not smooth (sorted). Quadrature splits there.
    kind:
        ``"linear"``, ``"relu"`` (ReLU family, slope ``params["alpha"]`` for x < 0),
        ``"erf"`` (closed forms, REFERENCES §2), or ``"generic"``.
    bound:
        sup |φ| when φ is bounded, else ``None`` (used to bracket the fixed point q*).
    torch_name:
        Name of the matching ``sigprop.nn.Activation`` / torch nonlinearity, or ``None``
        where torch has none (user expressions: build it from ``sympy_expr``).
    params:
        Parameters of the nonlinearity, e.g. ``{"alpha": 0.2}`` for leaky ReLU; torch code
        builds the same function from ``torch_name`` and ``params``.
    """

    name: str
    phi: _ArrayFn = field(repr=False)
    dphi: _ArrayFn = field(repr=False)
    d2phi: _ArrayFn | None = field(repr=False)
    sympy_form: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    kinks: tuple[float, ...] = ()
    kind: str = "generic"
    bound: float | None = None
    torch_name: str | None = None
    params: Mapping[str, float] = field(default_factory=dict, compare=False, hash=False)

    @property
    def sympy_expr(self) -> Any:
        """φ as a sympy expression in the real symbol ``x`` (``None`` for callables)."""
        if self.sympy_form is None:
            return None
        expr = self.__dict__.get("_sympy_expr")
        if expr is None:
            expr = self.sympy_form()
            object.__setattr__(self, "_sympy_expr", expr)  # cache on the frozen instance
        return expr

    @property
    def smooth(self) -> bool:
        """True when φ is analytic on the whole real line (no kinks)."""
        return not self.kinks

    @property
    def alpha(self) -> float:
        """Negative-side slope of a ReLU-family activation (1 for ``linear``)."""
        if self.kind == "linear":
            return 1.0
        if self.kind != "relu":
            raise InvalidInput(f"activation {self.name!r} is not in the ReLU family")
        return float(self.params.get("alpha", 0.0))

    @classmethod
    def from_callable(
        cls,
        phi: Callable,
        dphi: Callable,
        d2phi: Callable | None = None,
        *,
        name: str = "custom",
        kinks: tuple[float, ...] = (),
        bound: float | None = None,
    ) -> Activation:
        """Wrap user callables. ``phi``/``dphi``(/``d2phi``) must accept float64 arrays.

        ``kinks`` must list every point where φ, φ′ or φ″ jumps: Gauss quadrature splits
        there, and an undeclared kink costs accuracy (convergence becomes algebraic).
        """
        for label, fn in (("phi", phi), ("dphi", dphi), ("d2phi", d2phi)):
            if fn is not None and not callable(fn):
                raise InvalidInput(f"{label} must be callable, got {type(fn).__name__}")
        probe = np.linspace(-2.0, 2.0, 5)
        for label, fn in (("phi", phi), ("dphi", dphi), ("d2phi", d2phi)):
            if fn is None:
                continue
            with np.errstate(all="ignore"):
                out = np.asarray(fn(probe), dtype=float)
            if out.shape != probe.shape or not np.all(np.isfinite(out)):
                raise InvalidInput(
                    f"{label} of activation {name!r} must map a float64 array to finite "
                    f"values of the same shape"
                )
        return cls(
            name=name,
            phi=_vectorise(phi),
            dphi=_vectorise(dphi),
            d2phi=None if d2phi is None else _vectorise(d2phi),
            kinks=_check_kinks(kinks),
            bound=bound,
        )

    def to_dict(self) -> dict:
        """JSON-serialisable description (name, kind, params, kinks, torch name)."""
        out = {
            "name": self.name,
            "kind": self.kind,
            "params": dict(self.params),
            "kinks": list(self.kinks),
            "bound": self.bound,
            "torch_name": self.torch_name,
            "sympy": None if self.sympy_expr is None else str(self.sympy_expr),
        }
        return to_jsonable(out, "Activation")


def _vectorise(fn: Callable) -> _ArrayFn:
    def wrapped(x):
        x = np.asarray(x, dtype=float)
        return np.broadcast_to(np.asarray(fn(x), dtype=float), x.shape)

    return wrapped


def _check_kinks(kinks) -> tuple[float, ...]:
    out = tuple(sorted(float(k) for k in kinks))
    if not all(math.isfinite(k) for k in out):
        raise InvalidInput(f"kinks must be finite numbers, got {kinks!r}")
    return out


# ---------------------------------------------------------------------------------------
# Registered activations
# ---------------------------------------------------------------------------------------


def _relu_family(alpha: float, name: str) -> Activation:
    a = float(alpha)

    def phi(x):
        x = np.asarray(x, dtype=float)
        return np.where(x > 0, x, a * x)

    def dphi(x):
        x = np.asarray(x, dtype=float)
        return np.where(x > 0, 1.0, a)

    def d2phi(x):
        return np.zeros_like(np.asarray(x, dtype=float))

    def expr():
        sympy, x = _sym()
        return sympy.Piecewise((x, x > 0), (a * x, True)) if a != 0 else sympy.Max(x, 0)

    torch_name = "relu" if a == 0 else "leaky_relu"
    return Activation(
        name=name,
        phi=phi,
        dphi=dphi,
        d2phi=d2phi,
        sympy_form=expr,
        kinks=(0.0,),
        kind="relu",
        torch_name=torch_name,
        params={"alpha": a},
    )


def _linear() -> Activation:
    return Activation(
        name="linear",
        phi=lambda x: np.array(x, dtype=float, copy=True),
        dphi=lambda x: np.ones_like(np.asarray(x, dtype=float)),
        d2phi=lambda x: np.zeros_like(np.asarray(x, dtype=float)),
        sympy_form=lambda: _sym()[1],
        kind="linear",
        torch_name="linear",
    )


def _tanh() -> Activation:
    def dphi(x):
        t = np.tanh(x)
        return 1.0 - t * t

    def d2phi(x):
        t = np.tanh(x)
        return -2.0 * t * (1.0 - t * t)

    return Activation(
        name="tanh",
        phi=np.tanh,
        dphi=dphi,
        d2phi=d2phi,
        sympy_form=lambda: _sym()[0].tanh(_sym()[1]),
        bound=1.0,
        torch_name="tanh",
    )


def _hard_tanh_expr():
    sympy, x = _sym()
    return sympy.Piecewise((-1, x < -1), (x, x <= 1), (1, True))


def _hard_tanh() -> Activation:
    def phi(x):
        return np.clip(np.asarray(x, dtype=float), -1.0, 1.0)

    def dphi(x):
        x = np.asarray(x, dtype=float)
        return np.where(np.abs(x) < 1.0, 1.0, 0.0)

    return Activation(
        name="hard_tanh",
        phi=phi,
        dphi=dphi,
        d2phi=lambda x: np.zeros_like(np.asarray(x, dtype=float)),
        sympy_form=_hard_tanh_expr,
        kinks=(-1.0, 1.0),
        bound=1.0,
        torch_name="hard_tanh",
    )


def _erf() -> Activation:
    c = 2.0 / math.sqrt(math.pi)

    def dphi(x):
        x = np.asarray(x, dtype=float)
        return c * np.exp(-x * x)

    def d2phi(x):
        x = np.asarray(x, dtype=float)
        return -2.0 * x * c * np.exp(-x * x)

    return Activation(
        name="erf",
        phi=special.erf,
        dphi=dphi,
        d2phi=d2phi,
        sympy_form=lambda: _sym()[0].erf(_sym()[1]),
        kind="erf",
        bound=1.0,
        torch_name="erf",
    )


def _sigmoid() -> Activation:
    def dphi(x):
        s = special.expit(x)
        return s * (1.0 - s)

    def d2phi(x):
        s = special.expit(x)
        return s * (1.0 - s) * (1.0 - 2.0 * s)

    return Activation(
        name="sigmoid",
        phi=special.expit,
        dphi=dphi,
        d2phi=d2phi,
        sympy_form=lambda: 1 / (1 + _sym()[0].exp(-_sym()[1])),
        bound=1.0,
        torch_name="sigmoid",
    )


def _elu_like(alpha: float, scale: float, name: str, torch_name: str) -> Activation:
    a, s = float(alpha), float(scale)

    def phi(x):
        x = np.asarray(x, dtype=float)
        return s * np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0)))

    def dphi(x):
        x = np.asarray(x, dtype=float)
        return s * np.where(x > 0, 1.0, a * np.exp(np.minimum(x, 0.0)))

    def d2phi(x):
        x = np.asarray(x, dtype=float)
        return s * np.where(x > 0, 0.0, a * np.exp(np.minimum(x, 0.0)))

    def expr():
        sympy, x = _sym()
        return s * sympy.Piecewise((x, x > 0), (a * (sympy.exp(x) - 1), True))

    params = {"alpha": a} if name.startswith("elu") else {}
    return Activation(
        name=name,
        phi=phi,
        dphi=dphi,
        d2phi=d2phi,
        sympy_form=expr,
        kinks=(0.0,),
        torch_name=torch_name,
        params=params,
    )


def _gelu() -> Activation:
    r2 = math.sqrt(2.0)

    def phi(x):
        x = np.asarray(x, dtype=float)
        return x * special.ndtr(x)

    def dphi(x):
        x = np.asarray(x, dtype=float)
        return special.ndtr(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def d2phi(x):
        x = np.asarray(x, dtype=float)
        return (2.0 - x * x) * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def expr():
        sympy, x = _sym()
        return x * (1 + sympy.erf(x / r2)) / 2

    return Activation(
        name="gelu",
        phi=phi,
        dphi=dphi,
        d2phi=d2phi,
        sympy_form=expr,
        torch_name="gelu",
    )


def _silu() -> Activation:
    def phi(x):
        x = np.asarray(x, dtype=float)
        return x * special.expit(x)

    def dphi(x):
        x = np.asarray(x, dtype=float)
        s = special.expit(x)
        return s * (1.0 + x * (1.0 - s))

    def d2phi(x):
        x = np.asarray(x, dtype=float)
        s = special.expit(x)
        return s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))

    return Activation(
        name="silu",
        phi=phi,
        dphi=dphi,
        d2phi=d2phi,
        sympy_form=lambda: _sym()[1] / (1 + _sym()[0].exp(-_sym()[1])),
        torch_name="silu",
    )


def _softplus() -> Activation:
    def phi(x):
        return np.logaddexp(0.0, np.asarray(x, dtype=float))

    def d2phi(x):
        s = special.expit(x)
        return s * (1.0 - s)

    return Activation(
        name="softplus",
        phi=phi,
        dphi=special.expit,
        d2phi=d2phi,
        sympy_form=lambda: _sym()[0].log(1 + _sym()[0].exp(_sym()[1])),
        torch_name="softplus",
    )


_FACTORIES: dict[str, tuple[Callable[..., Activation], str | None, float | None]] = {
    # name: (factory(param) -> Activation, parameter name, default parameter)
    "linear": (lambda _: _linear(), None, None),
    "relu": (lambda _: _relu_family(0.0, "relu"), None, None),
    "leaky_relu": (lambda a: _relu_family(a, f"leaky_relu:{a!r}"), "alpha", 0.01),
    "tanh": (lambda _: _tanh(), None, None),
    "hard_tanh": (lambda _: _hard_tanh(), None, None),
    "erf": (lambda _: _erf(), None, None),
    "sigmoid": (lambda _: _sigmoid(), None, None),
    "elu": (lambda a: _elu_like(a, 1.0, f"elu:{a!r}" if a != 1.0 else "elu", "elu"), "alpha", 1.0),
    "selu": (lambda _: _elu_like(SELU_ALPHA, SELU_LAMBDA, "selu", "selu"), None, None),
    "gelu": (lambda _: _gelu(), None, None),
    "silu": (lambda _: _silu(), None, None),
    "softplus": (lambda _: _softplus(), None, None),
}
_ALIASES = {
    "identity": "linear",
    "hardtanh": "hard_tanh",
    "swish": "silu",
    "leakyrelu": "leaky_relu",
}


def registered_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_activation` (parameterised ones take ``name:value``)."""
    return tuple(_FACTORIES)


def get_activation(spec: str | Activation) -> Activation:
    """Return the :class:`Activation` for a registered name, ``name:param``, or expression.

    Raises ``ValueError`` naming the registered choices when ``spec`` is neither a known
    name nor a valid sympy expression in ``x``.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise InvalidInput(
            f"activation must be a name, a sympy expression string or an Activation, "
            f"got {type(spec).__name__}"
        )
    return _get_cached(spec.strip())


@functools.lru_cache(maxsize=128)
def _get_cached(spec: str) -> Activation:
    if not spec:
        raise InvalidInput("empty activation name")
    head, sep, tail = spec.partition(":")
    key = _ALIASES.get(head.strip().lower(), head.strip().lower())
    if key in _FACTORIES:
        factory, pname, default = _FACTORIES[key]
        if sep:
            if pname is None:
                raise InvalidInput(f"activation {key!r} takes no parameter, got {spec!r}")
            try:
                value = float(tail)
            except ValueError:
                raise InvalidInput(
                    f"bad {pname} for activation {key!r}: {tail!r} is not a number"
                ) from None
            if not math.isfinite(value):
                raise InvalidInput(f"{pname} of activation {key!r} must be finite, got {value}")
            if key == "elu" and value <= 0:
                raise InvalidInput(f"alpha of elu must be positive, got {value}")
            return factory(value)
        return factory(default)
    if sep:
        raise InvalidInput(f"unknown activation {head!r}; choose one of {', '.join(_FACTORIES)}")
    return _from_expression(spec)


def _from_expression(text: str) -> Activation:
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    sympy, _X = _sym()
    names = ", ".join(_FACTORIES)
    if not all(ch.isalnum() or ch in " _+-*/().,^" for ch in text):
        raise InvalidInput(
            f"unknown activation {text!r}: not a registered name ({names}) "
            "and not an expression in x"
        )
    local = {"x": _X, "erf": sympy.erf, "Heaviside": sympy.Heaviside}
    try:
        expr = parse_expr(
            text.replace("^", "**"),
            local_dict=local,
            transformations=(*standard_transformations, implicit_multiplication_application),
            evaluate=True,
        )
    except Exception as exc:  # sympy raises many types on malformed input
        raise InvalidInput(
            f"unknown activation {text!r}: not a registered name ({names}) and not a "
            f"valid sympy expression in x ({type(exc).__name__})"
        ) from None
    if not isinstance(expr, sympy.Expr) or expr.free_symbols - {_X}:
        extra = sorted(str(s) for s in getattr(expr, "free_symbols", set()) - {_X})
        raise InvalidInput(
            f"unknown activation {text!r}: not a registered name ({names}); as an "
            f"expression it must depend on x only (found {', '.join(extra) or 'no x'})"
        )
    if _X not in expr.free_symbols:
        raise InvalidInput(f"activation expression {text!r} does not depend on x")
    return _activation_from_sympy(expr, str(expr) if str(expr) == text else text)


def _activation_from_sympy(expr, name: str) -> Activation:
    sympy, _X = _sym()
    kinks = _find_kinks(expr, name)
    # derivatives away from the kinks: Dirac deltas at kinks are dropped (the quadrature
    # splits at kinks, and Stein-type kink terms are handled by the theory explicitly)
    d1 = sympy.diff(expr, _X).replace(sympy.DiracDelta, lambda *a: sympy.S.Zero)
    d2 = sympy.diff(d1, _X).replace(sympy.DiracDelta, lambda *a: sympy.S.Zero)
    modules = [{"erf": special.erf, "Heaviside": lambda x, h=0.5: np.heaviside(x, h)}, "numpy"]
    try:
        fns = [_vectorise(sympy.lambdify(_X, e, modules=modules)) for e in (expr, d1, d2)]
    except Exception as exc:  # noqa: BLE001 - sympy printers raise assorted errors
        raise InvalidInput(
            f"activation expression {name!r} cannot be evaluated numerically ({type(exc).__name__})"
        ) from None
    probe = np.linspace(-3.0, 3.0, 13)
    with np.errstate(all="ignore"):
        values = [fn(probe) for fn in fns]
    if not all(np.all(np.isfinite(v)) for v in values):
        raise InvalidInput(f"activation expression {name!r} is not finite on [-3, 3]")
    return Activation(
        name=name,
        phi=fns[0],
        dphi=fns[1],
        d2phi=fns[2],
        sympy_form=lambda: expr,
        kinks=kinks,
    )


def _find_kinks(expr, name: str) -> tuple[float, ...]:
    """Real points where a non-smooth sub-expression switches branch."""
    sympy, _X = _sym()
    switches = []
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, (sympy.Abs, sympy.sign, sympy.Heaviside)):
            switches.append(node.args[0])
        elif isinstance(node, (sympy.Max, sympy.Min)):
            args = node.args
            switches.extend(a - b for i, a in enumerate(args) for b in args[i + 1 :])
        elif isinstance(node, sympy.Piecewise):
            for _, cond in node.args:
                if isinstance(cond, sympy.core.relational.Relational):
                    switches.append(cond.lhs - cond.rhs)
                elif cond not in (sympy.true, sympy.false):
                    raise InvalidInput(
                        f"cannot locate the kinks of activation {name!r}: unsupported "
                        f"Piecewise condition {cond}"
                    )
        elif node.func in (sympy.floor, sympy.ceiling, sympy.frac):
            raise InvalidInput(f"activation {name!r} is discontinuous ({node.func.__name__})")
    points: set[float] = set()
    for sw in switches:
        if _X not in sw.free_symbols:
            continue
        try:
            sols = sympy.solveset(sw, _X, domain=sympy.S.Reals)
        except Exception:  # noqa: BLE001 - sympy solvers raise assorted errors
            sols = None
        if not isinstance(sols, sympy.FiniteSet):
            raise InvalidInput(
                f"cannot locate the kinks of activation {name!r} (switching condition {sw} = 0); "
                "use Activation.from_callable with explicit kinks"
            )
        points.update(float(s) for s in sols)
    return tuple(sorted(points))
