"""Activation registry: φ, φ′, φ″ as vectorised numpy functions plus a sympy form.

Every activation used by the mean-field theory (Poole et al. 2016, arXiv 1606.05340;
Schoenholz et al. 2017, arXiv 1611.01232) is an :class:`Activation`. Get one with
:func:`get_activation`, which accepts

* a registered name: ``linear``, ``relu``, ``leaky_relu`` (slope α, default 0.01, or
  ``leaky_relu:0.2``), ``tanh``, ``hard_tanh``, ``relu6``, ``erf``, ``sigmoid``, ``elu`` (α, default 1,
  or ``elu:0.5``), ``selu``, ``gelu`` (exact, ``x Φ(x)``), ``silu``, ``softplus``;
* an expression in ``x`` (``"x*tanh(x)"``, ``"max(x, 0)"``, ``"x/(1+abs(x))"``) in the safe
  language of :mod:`sigprop.theory.expression`: the text is parsed, never evaluated as
  Python; φ′ and φ″ come from forward-mode derivatives over the checked tree, and the
  points where the expression is not smooth (``abs``, ``max``, ``min``, ``heaviside``,
  ``sign``) are solved exactly, so quadrature can split there;
* an :class:`Activation` (returned unchanged), or one built with
  :meth:`Activation.from_callable`.

The quadrature in :mod:`sigprop.theory.gaussian` is accurate for functions that are analytic
except at the declared ``kinks`` and whose complex singularities stay at a distance of order
one from the real axis away from the origin; every registered activation satisfies this.

Modules: :mod:`.core` (the :class:`Activation` record), :mod:`.registered` (the registered
activations).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from sigprop.theory.activations.core import Activation, vectorise
from sigprop.theory.activations.registered import ALIASES, FACTORIES, SELU_ALPHA, SELU_LAMBDA
from sigprop.validate import InvalidInput

__all__ = ["Activation", "get_activation", "registered_names", "SELU_ALPHA", "SELU_LAMBDA"]


def registered_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_activation` (parameterised ones take ``name:value``)."""
    return tuple(FACTORIES)


def get_activation(spec: str | Activation) -> Activation:
    """Return the :class:`Activation` for a registered name, ``name:param``, or expression.

    Raises ``InvalidInput`` (a ``ValueError``) naming the registered choices and the broken
    rule of the expression language when ``spec`` is neither a known name nor an allowed
    expression in ``x``.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise InvalidInput(
            f"activation must be a name, an expression string in x or an Activation, "
            f"got {type(spec).__name__}"
        )
    return _get_cached(spec.strip())


@functools.lru_cache(maxsize=128)
def _get_cached(spec: str) -> Activation:
    if not spec:
        raise InvalidInput("empty activation name")
    head, sep, tail = spec.partition(":")
    key = ALIASES.get(head.strip().lower(), head.strip().lower())
    if key in FACTORIES:
        factory, pname, default = FACTORIES[key]
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
        shown = head[:40] + ("..." if len(head) > 40 else "")
        raise InvalidInput(f"unknown activation {shown!r}; choose one of {', '.join(FACTORIES)}")
    return _from_expression(spec)


def _from_expression(text: str) -> Activation:
    from sigprop.theory.expression import ExpressionError, allowed_summary, parse_expression

    try:
        expr = parse_expression(text)
    except ExpressionError as exc:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InvalidInput(
            f"unknown activation {shown!r}: not a registered name ({', '.join(FACTORIES)}) "
            f"and not an allowed expression in x: {exc.rule} ({allowed_summary()})"
        ) from None
    fns = [vectorise(functools.partial(expr, order=k)) for k in (0, 1, 2)]
    probe = np.linspace(-3.0, 3.0, 13)
    if not all(np.all(np.isfinite(fn(probe))) for fn in fns):
        raise InvalidInput(f"activation expression {text!r} is not finite on [-3, 3]")
    return Activation(
        name=text,
        phi=fns[0],
        dphi=fns[1],
        d2phi=fns[2],
        sympy_form=expr.sympy,
        kinks=expr.kinks,
    )
