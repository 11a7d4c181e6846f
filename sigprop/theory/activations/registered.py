"""The registered activations of :func:`sigprop.theory.activations.get_activation`.

Each factory returns an :class:`~sigprop.theory.activations.core.Activation` with closed-form
numpy φ, φ′, φ″ and a sympy form. Definitions: ELU (Clevert et al., arXiv 1511.07289, eq. 1),
SELU (Klambauer et al. 2017, arXiv 1706.02515, eq. 2 and 14), GELU x·Φ(x) (Hendrycks &
Gimpel, arXiv 1606.08415, §2), SiLU x·σ(x) (Elfwing et al., arXiv 1702.03118, eq. 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import special

from sigprop.theory.activations.core import Activation, sym

__all__ = ["ALIASES", "FACTORIES", "SELU_ALPHA", "SELU_LAMBDA"]

#: SELU constants (Klambauer et al. 2017, arXiv 1706.02515, eq. 14), to float64 precision.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946


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
        sympy, x = sym()
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
        sympy_form=lambda: sym()[1],
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
        sympy_form=lambda: sym()[0].tanh(sym()[1]),
        bound=1.0,
        torch_name="tanh",
    )


def _hard_tanh_expr():
    sympy, x = sym()
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


def _relu6_expr():
    sympy, x = sym()
    return sympy.Piecewise((0, x < 0), (x, x <= 6), (6, True))


def _relu6() -> Activation:
    """min(max(x, 0), 6) (MobileNet-V2's activation, Sandler et al. 2018, arXiv 1801.04381)."""

    def phi(x):
        return np.clip(np.asarray(x, dtype=float), 0.0, 6.0)

    def dphi(x):
        x = np.asarray(x, dtype=float)
        return np.where((x > 0.0) & (x < 6.0), 1.0, 0.0)

    return Activation(
        name="relu6",
        phi=phi,
        dphi=dphi,
        d2phi=lambda x: np.zeros_like(np.asarray(x, dtype=float)),
        sympy_form=_relu6_expr,
        kinks=(0.0, 6.0),
        bound=6.0,
        torch_name="relu6",
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
        sympy_form=lambda: sym()[0].erf(sym()[1]),
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
        sympy_form=lambda: 1 / (1 + sym()[0].exp(-sym()[1])),
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
        sympy, x = sym()
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
        sympy, x = sym()
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
        sympy_form=lambda: sym()[1] / (1 + sym()[0].exp(-sym()[1])),
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
        sympy_form=lambda: sym()[0].log(1 + sym()[0].exp(sym()[1])),
        torch_name="softplus",
    )


FACTORIES: dict[str, tuple[Callable[..., Activation], str | None, float | None]] = {
    # name: (factory(param) -> Activation, parameter name, default parameter)
    "linear": (lambda _: _linear(), None, None),
    "relu": (lambda _: _relu_family(0.0, "relu"), None, None),
    "leaky_relu": (lambda a: _relu_family(a, f"leaky_relu:{a!r}"), "alpha", 0.01),
    "tanh": (lambda _: _tanh(), None, None),
    "hard_tanh": (lambda _: _hard_tanh(), None, None),
    "relu6": (lambda _: _relu6(), None, None),
    "erf": (lambda _: _erf(), None, None),
    "sigmoid": (lambda _: _sigmoid(), None, None),
    "elu": (lambda a: _elu_like(a, 1.0, f"elu:{a!r}" if a != 1.0 else "elu", "elu"), "alpha", 1.0),
    "selu": (lambda _: _elu_like(SELU_ALPHA, SELU_LAMBDA, "selu", "selu"), None, None),
    "gelu": (lambda _: _gelu(), None, None),
    "silu": (lambda _: _silu(), None, None),
    "softplus": (lambda _: _softplus(), None, None),
}
ALIASES = {
    "identity": "linear",
    "hardtanh": "hard_tanh",
    "swish": "silu",
    "leakyrelu": "leaky_relu",
}
