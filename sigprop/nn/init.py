"""Initialisation at a chosen mean-field point, the rescaling trick, Stable ResNet scaling.

Conventions (as everywhere in sigprop): σ's are standard deviations; a weight layer with
fan-in n (``weight[0].numel()``, i.e. ``in_ch/groups · Π kernel`` for a convolution) gets
weights N(0, σ_w²/n) and biases N(0, σ_b²) (Poole et al. 2016, arXiv 1606.05340, §2;
Schoenholz et al. 2017, arXiv 1611.01232, §2).

Which layers: every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` of the model, including the
masked layers of :mod:`sigprop.nn.masked` (their pruned weights are zeroed again after the
draw, so the kept weights are i.i.d. from the stated law). DCT-plus-sparse layers are left
alone: their offset α·D already fixes the layer's scale and their sparse part starts at
zero (Price & Tanner, arXiv 2102.07655, §3).

Each initialised layer gets an attribute ``sigprop_init`` (an :class:`InitRecord`) with the
σ_w, σ_b and activation used; :func:`rescale_` reads σ_w from it when not given. The
record is a plain attribute: it survives ``copy.deepcopy`` but not a state-dict round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sigprop._json import to_jsonable
from sigprop.nn.activation import Activation
from sigprop.nn.kinds import is_dct_layer, is_weight_layer, layer_kind
from sigprop.nn.masked import MaskedMixin, as_generator
from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "InitRecord",
    "LayerRescale",
    "RescaleResult",
    "eoc_init_",
    "gaussian_init_",
    "init_layers",
    "orthogonal_init_",
    "rescale_",
    "stable_resnet_scale_",
]


@dataclass(frozen=True)
class InitRecord:
    """How a layer was initialised.

    Attributes
    ----------
    scheme: ``"eoc"``, ``"gaussian"`` or ``"orthogonal"``.
    sigma_w: weight scale σ_w: per-entry variance σ_w²/fan_in. For ``"orthogonal"`` the
        equivalent scale ``gain · √min(1, fan_in/fan_out_rows)`` (rows of the flattened
        weight have squared norm σ_w² on average).
    sigma_b: bias standard deviation.
    activation: activation spec the point was computed for (``None`` if not given).
    """

    scheme: str
    sigma_w: float
    sigma_b: float
    activation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self, "InitRecord")


@dataclass(frozen=True)
class LayerRescale:
    """Outcome of :func:`rescale_` for one layer.

    Attributes
    ----------
    name: qualified module name.
    sigma_w: reference σ_w used for the dense second moment.
    units: number of rescaling units (rows; (channel, position) pairs for a convolution).
    rescaled_units: units with at least one pruned and one nonzero kept weight (rescaled).
    empty_units: units with no kept weight (left at zero).
    mean_factor, max_factor: mean and max multiplicative factor over rescaled units (1.0
        if there were none).
    """

    name: str
    sigma_w: float
    units: int
    rescaled_units: int
    empty_units: int
    mean_factor: float
    max_factor: float

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self, "LayerRescale")


@dataclass(frozen=True)
class RescaleResult:
    """Per-layer outcome of :func:`rescale_`, in module order (``layers``)."""

    layers: tuple[LayerRescale, ...]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self, "RescaleResult")


def init_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs the initialisers touch: linear and convolution layers
    (masked ones included), DCT-plus-sparse layers excluded."""
    return [(name, m) for name, m in model.named_modules() if layer_kind(m) in ("linear", "conv")]


def _check_sigma(name: str, value: Any, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "> 0" if positive else ">= 0"
        raise InvalidInput(f"{name} must be finite and {kind} (a standard deviation), got {value}")
    return value


def _layers_or_raise(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Module):
        raise InvalidInput(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = init_layers(model)
    if not layers:
        raise InvalidInput(
            "model has no linear or convolution layer to initialise (DCT-plus-sparse layers "
            "are never re-initialised: their scale is set by the DCT offset)"
        )
    return layers


def _draw_bias(module: nn.Module, sigma_b: float, gen: torch.Generator | None) -> None:
    if module.bias is None:
        return
    if sigma_b == 0:
        module.bias.zero_()
    else:
        module.bias.normal_(0.0, sigma_b, generator=gen)


@torch.no_grad()
def gaussian_init_(
    model: nn.Module,
    sigma_w: float,
    sigma_b: float = 0.0,
    *,
    generator: torch.Generator | int | None = None,
    activation: Any = None,
    _scheme: str = "gaussian",
) -> nn.Module:
    """Draw every weight N(0, σ_w²/fan_in) and every bias N(0, σ_b²), in place, at any
    point of the (σ_w, σ_b) phase diagram (arXiv 1606.05340 §2). Pruned weights of masked
    layers are zeroed again after the draw. ``activation`` is only recorded. Returns
    ``model``."""
    sigma_w = _check_sigma("sigma_w", sigma_w, positive=True)
    sigma_b = _check_sigma("sigma_b", sigma_b, positive=False)
    gen = as_generator(generator)
    act = _spec_of(activation)
    for _, module in _layers_or_raise(model):
        fan_in = module.weight[0].numel()
        module.weight.normal_(0.0, sigma_w / math.sqrt(fan_in), generator=gen)
        _draw_bias(module, sigma_b, gen)
        if isinstance(module, MaskedMixin):
            module.apply_mask_()
        module.sigprop_init = InitRecord(_scheme, sigma_w, sigma_b, act)
    return model


def eoc_init_(
    model: nn.Module,
    activation: Any = None,
    sigma_b: float = 0.0,
    *,
    generator: torch.Generator | int | None = None,
):
    """Initialise at the exact edge of chaos: weights N(0, σ_w²/fan_in), biases
    N(0, σ_b²), with σ_w solving χ₁ = σ_w² E[φ′(√q* z)²] = 1 at the fixed point
    q* = σ_w² E[φ(√q* z)²] + σ_b² (Schoenholz et al. 2017, arXiv 1611.01232, eq. 3 and
    §3; computed by ``sigprop.theory.eoc_init``).

    Parameters
    ----------
    model
        Any module; its linear/conv layers (masked ones included) are initialised.
    activation
        Activation spec (``"tanh"``, ``"leaky_relu:0.2"``, a ``sigprop.nn.Activation``,
        a theory ``Activation``). ``None``: the one activation the model's
        ``sigprop.nn.Activation`` modules share (``ValueError`` if none or several).
    sigma_b
        Bias standard deviation σ_b (not the variance).
    generator
        ``torch.Generator`` or int seed.

    Returns
    -------
    The ``sigprop.theory`` ``EOCPoint`` used (σ_w, σ_b, q*, χ₁). Raises ``ValueError``
    where no EOC exists (e.g. ReLU with σ_b > 0).
    """
    from sigprop.theory import eoc_init

    spec = _spec_of(activation) if activation is not None else _model_activation(model)
    sigma_b = _check_sigma("sigma_b", sigma_b, positive=False)
    point = eoc_init(spec, sigma_b)
    gaussian_init_(
        model, point.sigma_w, sigma_b, generator=generator, activation=spec, _scheme="eoc"
    )
    return point


@torch.no_grad()
def orthogonal_init_(
    model: nn.Module,
    gain: float = 1.0,
    sigma_b: float = 0.0,
    *,
    generator: torch.Generator | int | None = None,
) -> nn.Module:
    """Orthogonal weights (Saxe et al. 2014, arXiv 1312.6120; the dynamical-isometry
    setting of Pennington et al. 2017, arXiv 1711.04735, §2): each weight, flattened to
    (out, fan_in), is ``gain`` times a Haar-random matrix with orthonormal rows (out ≤
    fan_in) or columns (out > fan_in) (``torch.nn.init.orthogonal_``); biases N(0, σ_b²).
    Masked layers are zeroed again at pruned positions. Returns ``model``."""
    gain = _check_sigma("gain", gain, positive=True)
    sigma_b = _check_sigma("sigma_b", sigma_b, positive=False)
    gen = as_generator(generator)
    for _, module in _layers_or_raise(model):
        rows, fan_in = module.weight.shape[0], module.weight[0].numel()
        nn.init.orthogonal_(module.weight, gain=gain, generator=gen)
        _draw_bias(module, sigma_b, gen)
        if isinstance(module, MaskedMixin):
            module.apply_mask_()
        equivalent = gain * math.sqrt(min(1.0, fan_in / rows))
        module.sigprop_init = InitRecord("orthogonal", equivalent, sigma_b, None)
    return model


@torch.no_grad()
def rescale_(model: nn.Module, sigma_w: float | None = None) -> RescaleResult:
    """The rescaling trick of Hayou et al. 2021 (arXiv 2002.08797, §4 "Rescaling trick",
    with its conv form in the appendix), empirical form, done right.

    For every masked layer — sigprop's ``MaskedLinear``/``MaskedConv*``, any ``nn.Linear``/
    ``nn.Conv*`` made prunable by :mod:`sigprop.prune` (a pruned torchvision ResNet or VGG,
    with or without BatchNorm), a ``torch.nn.utils.prune`` layer (``weight_orig`` is
    rescaled) — and every *unit* — an
    output row of a linear layer, an (output channel, kernel position) pair of a
    convolution, whose inputs are the n_u = in_ch/groups input channels — the kept weights
    are multiplied by one factor so that their sum of squares equals the dense expectation

        Σ_j W̃_uj² = n_u · σ_w² / fan_in        (= σ_w² for a linear row),

    i.e. the unit's pre-activation variance is that of the dense network and the q-map of
    the pruned network is the dense one. This *empirical* (row-norm) form is exact for
    any mask, including magnitude masks whose kept weights are larger than average (a
    density-only factor 1/√ρ_u would over-scale those by κ(ρ)/ρ). The official code
    divides by σ_w⁴ instead of σ_w² and hard-codes ReLU (Hayou et al., arXiv 2002.08797, §4); here σ_w is the
    layer's own dense scale.

    Rules: a unit with nothing pruned is a dense unit and is left unchanged (so a full
    mask changes nothing); a unit with no kept weight, or whose kept weights are all zero,
    stays zero (no NaN/inf); rescaling twice equals rescaling once (the second pass finds
    every sum of squares already on target). DCT-plus-sparse layers are skipped.

    Parameters
    ----------
    sigma_w
        Dense weight scale σ_w (weights were N(0, σ_w²/fan_in) before pruning). ``None``:
        each layer's own dense scale — its ``sigprop_init.sigma_w`` (set by
        :func:`eoc_init_`, :func:`gaussian_init_`, :func:`orthogonal_init_`), else
        σ_w² = fan_in·E[w²] of the dense weight (``weight_orig`` of ``torch.nn.utils.prune``,
        or the mean square :mod:`sigprop.prune` recorded before writing the first mask:
        torchvision's kaiming init is then matched layer by layer); ``InvalidInput`` if none
        is known.

    Returns
    -------
    :class:`RescaleResult` with per-layer counts and factors.
    """
    if sigma_w is not None:
        sigma_w = _check_sigma("sigma_w", sigma_w, positive=True)
    results = []
    for name, module in model.named_modules():
        if is_dct_layer(module) or not isinstance(module._buffers.get("weight_mask"), torch.Tensor):
            continue
        if not is_weight_layer(module):
            continue
        ref = sigma_w if sigma_w is not None else _dense_sigma_w(name, module)
        results.append(_rescale_layer(name, module, ref))
    if not results:
        raise InvalidInput(
            "rescale_: model has no masked layer (sigprop masked layers, layers made prunable "
            "by sigprop.prune, or torch.nn.utils.prune)"
        )
    return RescaleResult(tuple(results))


def _dense_sigma_w(name: str, module: nn.Module) -> float:
    """The dense σ_w of a pruned layer, σ_w² = fan_in · E[w²] of the dense weight: from the
    init record (:func:`eoc_init_` & co.), from ``weight_orig`` (``torch.nn.utils.prune``
    keeps the dense values), or from the mean square ``sigprop.prune`` recorded before it
    wrote the first mask."""
    record = getattr(module, "sigprop_init", None)
    if record is not None:
        return float(record.sigma_w)
    orig = module._parameters.get("weight_orig")
    fan_in = orig[0].numel() if orig is not None else module.weight[0].numel()
    if orig is not None:
        return math.sqrt(float(orig.detach().double().pow(2).mean()) * fan_in)
    dense_sq = module.__dict__.get("sigprop_dense_sq")
    if dense_sq is None and bool(module.weight_mask.all()):  # nothing pruned: it is dense
        dense_sq = float(module.weight.detach().double().pow(2).mean())
    if dense_sq is not None:
        return math.sqrt(dense_sq * fan_in)
    raise InvalidInput(
        f"rescale_: layer {name!r} has no recorded dense scale; pass sigma_w= (the dense "
        "weight scale), initialise with eoc_init_/gaussian_init_, or prune with "
        "sigprop.prune / torch.nn.utils.prune (both keep the dense scale)"
    )


def _rescale_layer(name: str, module: nn.Module, sigma_w: float) -> LayerRescale:
    orig = module._parameters.get("weight_orig")  # torch.nn.utils.prune
    weight = (orig if orig is not None else module.weight).data
    mask = module.weight_mask.to(weight.dtype)
    if not torch.isfinite(weight[mask != 0]).all():
        raise InvalidInput(f"rescale_: layer {name!r}: kept weights contain NaN or inf")
    weight.mul_(mask)  # pruned positions exactly zero (clears NaN stored there too)
    fan_in = weight[0].numel()
    n_unit = weight.shape[1]  # inputs per unit: in_features, or in_ch/groups
    target = n_unit * sigma_w**2 / fan_in
    # Accumulate in float64 so the factor (and "twice == once") is exact to float64.
    sum_sq = (weight.to(torch.float64) ** 2).sum(dim=1)
    kept = mask.sum(dim=1)
    pruned_some = kept < n_unit
    live = pruned_some & (sum_sq > 0)
    factor = torch.ones_like(sum_sq)
    factor[live] = torch.sqrt(target / sum_sq[live])
    weight.mul_(factor.unsqueeze(1).to(weight.dtype))
    if orig is not None:  # the pruned weight torch recomputes before each forward
        module.weight = orig * module.weight_mask
    rescaled = factor[live]
    return LayerRescale(
        name=name,
        sigma_w=float(sigma_w),
        units=int(sum_sq.numel()),
        rescaled_units=int(live.sum()),
        empty_units=int((kept == 0).sum()),
        mean_factor=float(rescaled.mean()) if rescaled.numel() else 1.0,
        max_factor=float(rescaled.max()) if rescaled.numel() else 1.0,
    )


def stable_resnet_scale_(model: nn.Module, num_blocks: int | None = None) -> int:
    """Stable ResNet (Hayou et al. 2021, arXiv 2002.08797, §4 "Stable Resnet"): set the
    ``scale`` of every :class:`~sigprop.nn.models.ResidualBlock` to 1/√L, L the number of
    residual blocks (or ``num_blocks``), so that the residual q-map stays bounded with
    depth (the residual ReLU map of Hayou et al., arXiv 2002.08797, Stable ResNet: (1 + σ_w²/(2L))^L → e^{σ_w²/2} for ReLU). Returns L."""
    from sigprop.nn.models import ResidualBlock

    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    if not blocks:
        raise InvalidInput("stable_resnet_scale_: model has no ResidualBlock")
    depth = len(blocks) if num_blocks is None else positive_int(num_blocks, "num_blocks")
    for block in blocks:
        block.scale = 1.0 / math.sqrt(depth)
    return depth


def _spec_of(activation: Any) -> str | None:
    if activation is None:
        return None
    return Activation(activation).spec


def _model_activation(model: nn.Module) -> str:
    specs = {m.spec for m in model.modules() if isinstance(m, Activation)}
    if len(specs) != 1:
        found = sorted(specs) if specs else "none"
        raise InvalidInput(
            "eoc_init_: pass activation= (the model's sigprop.nn.Activation modules give "
            f"{found}; exactly one is needed to infer it)"
        )
    return specs.pop()
