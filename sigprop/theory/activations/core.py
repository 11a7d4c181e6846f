"""The :class:`Activation` record: φ, φ′, φ″ as vectorised numpy functions plus a sympy form.

Part of :mod:`sigprop.theory.activations` (which documents the accepted specs); the
registered activations live in :mod:`.registered`, user expressions in :mod:`.expression`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sigprop._json import to_jsonable
from sigprop.theory.activations import closed as _closed
from sigprop.validate import InvalidInput

__all__ = ["Activation", "sym", "vectorise"]

_ArrayFn = Callable[[np.ndarray], np.ndarray]


@functools.cache
def sym():
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
        ``"erf"`` (closed forms: Williams 1997, NeurIPS, "Computing with infinite networks"), or ``"generic"``.
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

    @property
    def _family_alpha(self) -> float:
        """:attr:`alpha` for the ReLU family and linear, 0 for the rest (the closed forms'
        argument)."""
        return self.alpha if self.kind in ("linear", "relu") else 0.0

    @property
    def homogeneous_gain(self) -> float | None:
        """E[φ(z)²] when φ is positively homogeneous (linear, ReLU family; then the q-map is
        linear in q and χ₁ = σ_w²·gain at every q), else ``None``."""
        return _closed.homogeneous_gain(self.kind, self._family_alpha)

    @property
    def has_closed_forms(self) -> bool:
        """True when :meth:`closed_moments` and :meth:`closed_kernel` are known exactly."""
        return self.closed_moments(np.ones(1)) is not None

    def closed_moments(self, q) -> dict[str, np.ndarray] | None:
        """Closed-form ``g0``, ``g1``, ``dg0``, ``dg1`` at variance q, or ``None``
        (:mod:`sigprop.theory.activations.closed`)."""
        return _closed.moments(self.kind, self._family_alpha, np.asarray(q, dtype=float))

    def closed_kernel(self, q, c):
        """Closed-form dual kernel ``(K, dK)`` at variance q and correlation c, or ``None``
        (:mod:`sigprop.theory.activations.closed`)."""
        return _closed.kernel(
            self.kind, self._family_alpha, np.asarray(q, dtype=float), np.asarray(c, dtype=float)
        )

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
            phi=vectorise(phi),
            dphi=vectorise(dphi),
            d2phi=None if d2phi is None else vectorise(d2phi),
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


def vectorise(fn: Callable) -> _ArrayFn:
    def wrapped(x):
        x = np.asarray(x, dtype=float)
        return np.broadcast_to(np.asarray(fn(x), dtype=float), x.shape)

    return wrapped


def _check_kinks(kinks) -> tuple[float, ...]:
    out = tuple(sorted(float(k) for k in kinks))
    if not all(math.isfinite(k) for k in out):
        raise InvalidInput(f"kinks must be finite numbers, got {kinks!r}")
    return out
