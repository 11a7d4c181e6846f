"""Which moment engine an activation spec gets: closed forms or quadrature.

:func:`resolve` accepts what :func:`sigprop.theory.activations.get_activation` accepts
(registered names, ``name:param``, sympy expressions in x, an ``Activation``) plus the
piecewise-linear names of this package: ``relu6`` (= min(max(x, 0), 6), MobileNet-V2),
``hardtanh:LO:HI`` and ``clamp:LO:HI``. Piecewise-linear activations (linear, the ReLU
family, hard tanh, and any expression or callable that is affine between its declared
kinks, e.g. ``Min(Max(x, 0), 6)``) get the closed forms of :mod:`.pwl`; every other
activation the quadrature of :mod:`.smooth`.
"""

from __future__ import annotations

import functools

import numpy as np

from sigprop.theory.activations import Activation, get_activation
from sigprop.theory.propagation.pwl import PiecewiseLinear, clamp, relu_family
from sigprop.theory.propagation.smooth import smooth
from sigprop.validate import InvalidInput

__all__ = ["resolve"]


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"bad number {text!r} in activation {spec!r}") from None
    if not np.isfinite(value):
        raise InvalidInput(f"activation {spec!r} needs finite parameters")
    return value


def _own(spec: str):
    head, _, tail = spec.partition(":")
    head = head.strip().lower()
    if head == "relu6" and not tail:
        return clamp(0.0, 6.0, "relu6")
    if head in ("hardtanh", "clamp") and tail:
        parts = tail.split(":")
        if len(parts) != 2:
            raise InvalidInput(f"{head} takes two parameters LO:HI, got {spec!r}")
        lo, hi = (_number(p, spec) for p in parts)
        return clamp(lo, hi, spec)
    return None


def _affine_pieces(act: Activation) -> PiecewiseLinear | None:
    """The piecewise-linear form of ``act`` if it is affine between its kinks."""
    kinks = list(act.kinks)
    if not kinks:
        return None
    edges = [kinks[0] - 4.0] + kinks + [kinks[-1] + 4.0]
    slopes, offsets = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        x = np.linspace(lo, hi, 7)[1:-1]
        with np.errstate(all="ignore"):
            y = np.asarray(act.phi(x), dtype=float)
        if not np.all(np.isfinite(y)):
            return None
        slope, offset = np.polyfit(x, y, 1)
        scale = 1.0 + np.max(np.abs(y))
        if np.max(np.abs(slope * x + offset - y)) > 1e-12 * scale:
            return None
        slopes.append(float(slope))
        offsets.append(float(offset))
    for j, b in enumerate(kinks):  # continuity at each kink
        left, right = slopes[j] * b + offsets[j], slopes[j + 1] * b + offsets[j + 1]
        if abs(left - right) > 1e-10 * (1.0 + abs(left)):
            return None
    jumps = tuple(slopes[j + 1] - slopes[j] for j in range(len(kinks)))
    a1 = slopes[0]
    a0 = offsets[0]  # φ(x) = a0 + a1 x on the leftmost piece, where every (x − b)⁺ = 0
    return PiecewiseLinear(act.name, a0, a1, tuple(kinks), jumps)


@functools.lru_cache(maxsize=64)
def _resolve_str(spec: str):
    own = _own(spec)
    if own is not None:
        return own
    return _resolve_act(get_activation(spec))


def _resolve_act(act: Activation):
    if act.kind == "linear":
        return PiecewiseLinear(act.name, 0.0, 1.0, (), ())
    if act.kind == "relu":
        return relu_family(act.alpha, act.name)
    pieces = _affine_pieces(act)
    if pieces is not None:
        return pieces
    return smooth(act)


def resolve(spec):
    """Moment engine (``.moments(mu, v)``, ``.cross(mu, v, rho)``, ``.phi``, ``.dphi``)."""
    if isinstance(spec, PiecewiseLinear):
        return spec
    if isinstance(spec, Activation):
        return _resolve_act(spec)
    if isinstance(spec, str):
        return _resolve_str(spec.strip())
    raise InvalidInput(
        f"activation must be a name, an expression string, an Activation or a "
        f"PiecewiseLinear, got {type(spec).__name__}"
    )
