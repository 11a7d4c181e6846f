"""Torch twins of the activations registered in :mod:`sigprop.theory.activations`.

A model built by :mod:`sigprop.nn.models` uses :class:`Activation` modules, so that
``sigprop.diagnostics.describe`` can read ``module.spec`` / ``module.name`` /
``module.params`` and hand the *same* nonlinearity to the mean-field theory
(``sigprop.theory.get_activation(module.spec)``).

Spec syntax (shared with the theory registry and the ``sigprop eoc`` CLI): a registered
name (``"tanh"``), optionally with its one parameter after a colon
(``"leaky_relu:0.2"``, ``"elu:0.5"``), or a theory ``Activation`` object (its ``name`` and
``params`` are used).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigprop.validate import InvalidInput

__all__ = [
    "ACTIVATIONS",
    "ELEMENTWISE_MODULES",
    "Activation",
    "is_elementwise",
    "parse_activation_spec",
    "theory_spec",
]


def _leaky_relu(x: Tensor, alpha: float) -> Tensor:
    return F.leaky_relu(x, negative_slope=alpha)


def _elu(x: Tensor, alpha: float) -> Tensor:
    return F.elu(x, alpha=alpha)


def _softplus(x: Tensor) -> Tensor:
    # log(1 + e^x) evaluated stably for every x (no threshold switch as in F.softplus,
    # whose linear branch above x = 20 differs from the theory's phi by up to e^-20).
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


#: name -> (function, {parameter name: default value}).  The defaults are those of
#: ``sigprop.theory.activations`` (a test holds the two registries against each other).
#: Definitions: ELU (Clevert et al., arXiv 1511.07289, eq. 1), SELU (Klambauer et al.,
#: arXiv 1706.02515, eq. 2, torch's constants), GELU x·Φ(x) in its exact erf form
#: (Hendrycks & Gimpel, arXiv 1606.08415, §2), SiLU x·σ(x) (Elfwing et al., arXiv
#: 1702.03118, eq. 3), softplus log(1 + eˣ).
ACTIVATIONS: dict[str, tuple[Callable[..., Tensor], dict[str, float]]] = {
    "linear": (lambda x: x, {}),
    "relu": (F.relu, {}),
    "leaky_relu": (_leaky_relu, {"alpha": 0.01}),
    "tanh": (torch.tanh, {}),
    "hard_tanh": (F.hardtanh, {}),
    "relu6": (F.relu6, {}),
    "erf": (torch.erf, {}),
    "sigmoid": (torch.sigmoid, {}),
    "elu": (_elu, {"alpha": 1.0}),
    "selu": (F.selu, {}),
    "gelu": (lambda x: F.gelu(x, approximate="none"), {}),
    "silu": (F.silu, {}),
    "softplus": (_softplus, {}),
}


_ALIASES = {
    "identity": "linear",
    "hardtanh": "hard_tanh",
    "swish": "silu",
    "leakyrelu": "leaky_relu",
}


def parse_activation_spec(spec: Any) -> tuple[str, dict[str, float]]:
    """Return ``(name, params)`` for an activation spec.

    ``spec`` is a registered name (or alias: ``identity``, ``hardtanh``, ``swish``,
    ``leakyrelu``), ``"name:value"`` for the one-parameter activations (``leaky_relu``,
    ``elu``), a theory ``Activation`` (its ``torch_name`` and ``params`` are used), or a
    expression in ``x`` that ``sigprop.theory.get_activation`` accepts (then
    ``name`` is the expression and ``params`` is empty). Raises ``ValueError`` naming the
    choices for an unknown name, a parameter given to an activation without one, or a
    non-finite parameter.
    """
    if isinstance(spec, Activation):
        return spec.name, dict(spec.params)
    if not isinstance(spec, str) and hasattr(spec, "torch_name"):  # a theory Activation
        torch_name = spec.torch_name
        if torch_name is None:
            return _expression(getattr(spec, "name", None), spec)
        if torch_name not in ACTIVATIONS:
            raise InvalidInput(f"activation {spec.name!r} has no torch twin {torch_name!r}")
        defaults = ACTIVATIONS[torch_name][1]
        params = {k: float(v) for k, v in dict(spec.params or {}).items() if k in defaults}
        return torch_name, _check_params(torch_name, {**defaults, **params})
    if not isinstance(spec, str):
        raise InvalidInput(
            f"activation spec must be a name such as 'tanh' or 'leaky_relu:0.2', got {spec!r}"
        )
    head, sep, value = spec.strip().partition(":")
    name = head.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in ACTIVATIONS:
        if sep:
            raise InvalidInput(f"unknown activation {spec!r}; choose one of {sorted(ACTIVATIONS)}")
        return _expression(spec.strip(), None)
    defaults = dict(ACTIVATIONS[name][1])
    if sep:
        if not defaults:
            raise InvalidInput(f"activation {name!r} takes no parameter, got {spec!r}")
        try:
            number = float(value)
        except ValueError:
            raise InvalidInput(f"activation parameter in {spec!r} is not a number") from None
        (key,) = defaults
        defaults[key] = number
    return name, _check_params(name, defaults)


def _check_params(name: str, params: dict[str, float]) -> dict[str, float]:
    for key, value in params.items():
        if not math.isfinite(value):
            raise InvalidInput(f"activation {name!r}: parameter {key} must be finite, got {value}")
    if name == "elu" and params["alpha"] <= 0:
        raise InvalidInput(f"alpha of elu must be positive, got {params['alpha']}")
    return params


def _expression(text: str | None, theory_activation: Any) -> tuple[str, dict[str, float]]:
    """Validate an expression activation through the theory registry and check that it
    evaluates in torch; return ``(expression, {})``."""
    if not text:
        raise InvalidInput(f"activation {theory_activation!r} has neither a torch twin nor a name")
    _expression_fn(text)  # InvalidInput if the theory or torch cannot use it
    return text, {}


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Both operands as tensors (one of them may be a Python float constant)."""
    like = a if isinstance(a, Tensor) else b
    return (
        torch.as_tensor(a, dtype=like.dtype, device=like.device),
        torch.as_tensor(b, dtype=like.dtype, device=like.device),
    )


def _heaviside(u: Tensor) -> Tensor:
    # H(u) with H(0) = ½ and derivative 0 (torch.heaviside has no autograd formula)
    one, half = torch.ones_like(u), torch.full_like(u, 0.5)
    return torch.where(u > 0, one, torch.where(u < 0, torch.zeros_like(u), half))


@functools.cache
def _torch_ops():
    """The torch operations of the expression language (same formulas as its numpy ops)."""
    from sigprop.theory.expression import Ops

    return Ops(
        exp=torch.exp,
        log=torch.log,
        sqrt=torch.sqrt,
        tanh=torch.tanh,
        sinh=torch.sinh,
        cosh=torch.cosh,
        sin=torch.sin,
        cos=torch.cos,
        atan=torch.atan,
        asinh=torch.asinh,
        erf=torch.erf,
        erfc=torch.erfc,
        abs=torch.abs,
        sign=torch.sign,
        heaviside=_heaviside,
        maximum=lambda a, b: torch.maximum(*_pair(a, b)),
        minimum=lambda a, b: torch.minimum(*_pair(a, b)),
        sigmoid=torch.sigmoid,
        softplus=_softplus,
        power=torch.pow,
    )


@functools.lru_cache(maxsize=64)
def _expression_fn(text: str) -> Callable[[Tensor], Tensor]:
    """φ of an expression activation in torch: the checked tree of the theory's expression
    language (:mod:`sigprop.theory.expression`) walked with torch operations, so the text is
    never evaluated and torch computes the formula the theory computes."""
    from sigprop.theory import get_activation  # numpy only, imported on demand
    from sigprop.theory.expression import parse_expression

    get_activation(text)  # InvalidInput naming the registered choices and the broken rule
    expr = parse_expression(text)
    ops = _torch_ops()

    def fn(x: Tensor) -> Tensor:
        out = expr(x, 0, ops)
        return out if isinstance(out, Tensor) else torch.full_like(x, float(out))

    probe = fn(torch.linspace(-3.0, 3.0, 13, dtype=torch.float64))
    if probe.shape != (13,) or not bool(torch.isfinite(probe).all()):
        raise InvalidInput(f"activation expression {text!r} is not finite in torch on [-3, 3]")
    return fn


class Activation(nn.Module):
    """Elementwise nonlinearity φ, the torch twin of ``sigprop.theory.get_activation(spec)``.

    Parameters
    ----------
    spec
        A registered name (``linear``, ``relu``, ``leaky_relu``, ``tanh``, ``hard_tanh``, ``relu6``,
        ``erf``, ``sigmoid``, ``elu``, ``selu``, ``gelu`` (exact erf form), ``silu``,
        ``softplus``), ``"leaky_relu:0.2"``-style with the parameter, a theory
        ``Activation``, or an expression in ``x`` (``"x*tanh(x)"``) of the safe language
        of :mod:`sigprop.theory.expression`, evaluated over its checked tree with torch
        operations.

    Attributes
    ----------
    name : str
        Registered name (or the expression).
    params : dict[str, float]
        Parameters (``{"alpha": α}`` for ``leaky_relu`` and ``elu``, else empty).
    spec : str
        Canonical spec string that ``sigprop.theory.get_activation`` accepts.
    """

    def __init__(self, spec: Any = "tanh") -> None:
        super().__init__()
        self.name, self.params = parse_activation_spec(spec)

    @property
    def spec(self) -> str:
        if not self.params:
            return self.name
        (value,) = self.params.values()
        return f"{self.name}:{value!r}"

    def forward(self, x: Tensor) -> Tensor:
        # Looked up on each call (not stored) so that the module pickles.
        entry = ACTIVATIONS.get(self.name)
        if entry is None:
            return _expression_fn(self.name)(x)
        return entry[0](x, **self.params)

    def extra_repr(self) -> str:
        return repr(self.spec)


# --------------------------------------------------------------------------- torch modules
#: The ``torch.nn`` activation classes that act elementwise (each output entry is a function
#: of the same input entry only). The one table the torch side uses: SynFlow bypasses these
#: modules to linearise a network, ``jacobian_spectrum`` treats them as diagonal Jacobians.
#: (``RReLU`` draws a random slope per entry in train mode; it is elementwise all the same.)
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
)

#: ``torch.nn`` class -> name in the theory registry (``sigprop.theory.activations``) for the
#: classes whose function (with the parameters checked in :func:`theory_spec`) is the
#: theory's.
_THEORY_NAMES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.ELU: "elu",
    nn.SELU: "selu",
    nn.Softplus: "softplus",
    nn.ReLU6: "relu6",  # before its base class Hardtanh in every MRO walk
    nn.Hardtanh: "hard_tanh",
    nn.LeakyReLU: "leaky_relu",
}


def is_elementwise(module: nn.Module) -> bool:
    """True for a :class:`Activation` or an instance (subclasses included) of one of
    :data:`ELEMENTWISE_MODULES`."""
    return isinstance(module, (Activation, *ELEMENTWISE_MODULES))


def theory_spec(module: nn.Module) -> str | None:
    """The theory spec (``"relu"``, ``"leaky_relu:0.2"``) of an activation module, or ``None``
    when the theory registry has no such function.

    A :class:`Activation` (or subclass) gives its ``spec``. A ``torch.nn`` activation, or a
    subclass that keeps its ``forward``, maps through its class; torch parameters that the
    theory's function does not have (``Hardtanh`` bounds other than ±1, tanh-approximated
    GELU, ``Softplus`` with β ≠ 1) give ``None``. The torch and theory functions agree
    (``tests/nn`` checks the registries against each other); note that ``nn.Softplus``
    switches to the identity above ``threshold`` (20 by default), a difference below e⁻²⁰.
    """
    if isinstance(module, Activation):
        return module.spec
    base = next((c for c in type(module).__mro__ if c in _THEORY_NAMES), None)
    if base is None or type(module).forward is not base.forward:
        return None
    name = _THEORY_NAMES[base]
    if base is nn.LeakyReLU:
        return f"leaky_relu:{module.negative_slope!r}"
    if base is nn.ELU:
        return f"elu:{module.alpha!r}"
    if base is nn.Hardtanh and (module.min_val, module.max_val) != (-1.0, 1.0):
        return None
    if base is nn.GELU and module.approximate != "none":
        return None
    if base is nn.Softplus and module.beta != 1.0:
        return None
    return name
