"""Model builders for the experiments: MLP, a convnet for 8×8 digits, a 1-D convnet for
mnist1d, and a residual network with optional Stable ResNet scaling.

Every builder returns an ``nn.Sequential`` whose weight layers are dense
(``nn.Linear``/``nn.Conv*``), masked (``MaskedLinear``/``MaskedConv*``) or DCT-plus-sparse
(``DCTPlusSparse*``) according to ``layer``, and whose nonlinearities are
:class:`sigprop.nn.Activation` modules, so ``sigprop.diagnostics.describe`` can walk the
layers in order and map each activation back to ``sigprop.theory``. Residual networks use
:class:`ResidualBlock` (attributes ``branch`` and ``scale``).

Weights start from torch's default initialisation drawn from ``generator``; use
``sigprop.nn.init`` (``eoc_init_``, ``gaussian_init_``, ...) to put the network at a
mean-field point.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sigprop.nn.activation import Activation
from sigprop.nn.dct import DCTPlusSparseConv1d, DCTPlusSparseConv2d, DCTPlusSparseLinear
from sigprop.nn.masked import (
    MaskedConv1d,
    MaskedConv2d,
    MaskedLinear,
    _default_reset,
    as_generator,
    check_density,
)
from sigprop.validate import InvalidInput

__all__ = [
    "LAYER_KINDS",
    "ResidualBlock",
    "conv1d_net",
    "digits_convnet",
    "make_conv",
    "make_linear",
    "mlp",
    "resnet",
]

#: Accepted values of the builders' ``layer`` argument.
LAYER_KINDS = ("dense", "masked", "dct")


def _check_layer(layer: Any, density: Any) -> float:
    if layer not in LAYER_KINDS:
        raise InvalidInput(f"layer must be one of {LAYER_KINDS}, got {layer!r}")
    density = check_density(density)
    if layer == "dense" and density != 1.0:
        raise InvalidInput(
            f"layer='dense' has no mask, so density must be 1.0 (got {density}); "
            "use layer='masked' or layer='dct'"
        )
    return density


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def make_linear(
    in_features: int,
    out_features: int,
    bias: bool = True,
    *,
    layer: str = "dense",
    density: float = 1.0,
    generator: torch.Generator | int | None = None,
) -> nn.Module:
    """One linear layer of kind ``layer`` (``"dense"``, ``"masked"``, ``"dct"``)."""
    density = _check_layer(layer, density)
    gen = as_generator(generator)
    if layer == "masked":
        return MaskedLinear(in_features, out_features, bias, density=density, generator=gen)
    if layer == "dct":
        return DCTPlusSparseLinear(in_features, out_features, bias, density=density, generator=gen)
    module = nn.Linear(in_features, out_features, bias)
    if gen is not None:
        _default_reset(module, gen)
    return module


def make_conv(
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    bias: bool = True,
    *,
    layer: str = "dense",
    density: float = 1.0,
    generator: torch.Generator | int | None = None,
) -> nn.Module:
    """One ``dims``-D (1 or 2) convolution of kind ``layer``."""
    density = _check_layer(layer, density)
    if dims not in (1, 2):
        raise InvalidInput(f"dims must be 1 or 2, got {dims!r}")
    gen = as_generator(generator)
    args = (in_channels, out_channels, kernel_size)
    kw = {"stride": stride, "padding": padding, "bias": bias}
    if layer == "masked":
        cls = MaskedConv2d if dims == 2 else MaskedConv1d
        return cls(*args, **kw, density=density, generator=gen)
    if layer == "dct":
        cls = DCTPlusSparseConv2d if dims == 2 else DCTPlusSparseConv1d
        return cls(*args, **kw, density=density, generator=gen)
    module = (nn.Conv2d if dims == 2 else nn.Conv1d)(*args, **kw)
    if gen is not None:
        _default_reset(module, gen)
    return module


def mlp(
    in_features: int,
    width: int,
    depth: int,
    out_features: int,
    activation: Any = "tanh",
    *,
    layer: str = "dense",
    density: float = 1.0,
    bias: bool = True,
    generator: torch.Generator | int | None = None,
) -> nn.Sequential:
    """Fully connected network with ``depth`` weight layers:
    ``Linear(in, width), φ, Linear(width, width), φ, ..., Linear(width, out)``.

    ``depth`` counts weight layers (the readout included), so there are ``depth - 1``
    hidden layers of ``width`` units, each followed by ``Activation(activation)``;
    ``depth = 1`` is a single linear map. ``layer`` picks dense, masked (``density``
    kept, uniformly random masks) or DCT-plus-sparse layers for every weight layer.
    """
    _check_int("in_features", in_features)
    _check_int("width", width)
    _check_int("depth", depth)
    _check_int("out_features", out_features)
    density = _check_layer(layer, density)
    gen = as_generator(generator)
    act = Activation(activation).spec
    sizes = [in_features] + [width] * (depth - 1) + [out_features]
    modules: list[nn.Module] = []
    for i in range(depth):
        modules.append(
            make_linear(sizes[i], sizes[i + 1], bias, layer=layer, density=density, generator=gen)
        )
        if i < depth - 1:
            modules.append(Activation(act))
    return nn.Sequential(*modules)


def digits_convnet(
    activation: Any = "relu",
    *,
    channels: tuple[int, ...] = (16, 32),
    num_classes: int = 10,
    layer: str = "dense",
    density: float = 1.0,
    bias: bool = True,
    generator: torch.Generator | int | None = None,
) -> nn.Sequential:
    """Convnet for the 8×8 scikit-learn digits, input ``(batch, 1, 8, 8)``:
    ``[Conv2d(3×3, padding 1), φ] × len(channels)`` keeping the 8×8 resolution, then
    ``Flatten`` and a linear readout of ``channels[-1]·64`` features to ``num_classes``."""
    if not channels:
        raise InvalidInput("channels must name at least one convolution width")
    for c in channels:
        _check_int("channels", c)
    _check_int("num_classes", num_classes)
    density = _check_layer(layer, density)
    gen = as_generator(generator)
    act = Activation(activation).spec
    modules: list[nn.Module] = []
    c_in = 1
    for c in channels:
        modules += [
            make_conv(2, c_in, c, 3, 1, 1, bias, layer=layer, density=density, generator=gen),
            Activation(act),
        ]
        c_in = c
    modules += [
        nn.Flatten(),
        make_linear(c_in * 64, num_classes, bias, layer=layer, density=density, generator=gen),
    ]
    return nn.Sequential(*modules)


def conv1d_net(
    activation: Any = "relu",
    *,
    channels: tuple[int, ...] = (32, 32, 32),
    kernel_size: int = 5,
    stride: int = 2,
    length: int = 40,
    in_channels: int = 1,
    num_classes: int = 10,
    layer: str = "dense",
    density: float = 1.0,
    bias: bool = True,
    generator: torch.Generator | int | None = None,
) -> nn.Sequential:
    """1-D convnet for mnist1d signals (Greydanus 2020, arXiv 2011.14439), input
    ``(batch, in_channels, length)``: ``[Conv1d(kernel_size, stride, padding
    kernel_size//2), φ] × len(channels)`` (with the default stride 2 each halves the length,
    rounding up; stride 1 keeps it, for deep nets), then ``Flatten`` and a linear readout
    to ``num_classes``."""
    if not channels:
        raise InvalidInput("channels must name at least one convolution width")
    for c in channels:
        _check_int("channels", c)
    _check_int("kernel_size", kernel_size)
    _check_int("stride", stride)
    _check_int("length", length)
    _check_int("in_channels", in_channels)
    _check_int("num_classes", num_classes)
    density = _check_layer(layer, density)
    gen = as_generator(generator)
    act = Activation(activation).spec
    pad = kernel_size // 2
    modules: list[nn.Module] = []
    c_in, size = in_channels, length
    for c in channels:
        modules += [
            make_conv(
                1,
                c_in,
                c,
                kernel_size,
                stride,
                pad,
                bias,
                layer=layer,
                density=density,
                generator=gen,
            ),
            Activation(act),
        ]
        size = (size + 2 * pad - kernel_size) // stride + 1  # >= 1 for any size >= 1
        c_in = c
    modules += [
        nn.Flatten(),
        make_linear(c_in * size, num_classes, bias, layer=layer, density=density, generator=gen),
    ]
    return nn.Sequential(*modules)


class ResidualBlock(nn.Module):
    """``y = shortcut(x) + scale · branch(x)`` (identity shortcut by default).

    Attributes
    ----------
    branch : nn.Module
        The residual branch (here ``Sequential(φ, layer, ...)``).
    scale : float
        Branch multiplier λ; 1/√L for a Stable ResNet of L blocks (Hayou et al. 2021,
        arXiv 2002.08797, §4), see :func:`sigprop.nn.init.stable_resnet_scale_`.
    shortcut : nn.Module or None
        ``None`` for the identity.
    """

    def __init__(self, branch: nn.Module, scale: float = 1.0, shortcut: nn.Module | None = None):
        super().__init__()
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not math.isfinite(scale)
        ):
            raise InvalidInput(f"scale must be a finite number, got {scale!r}")
        self.branch = branch
        self.scale = float(scale)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + self.scale * self.branch(x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


def resnet(
    in_features: int,
    width: int,
    num_blocks: int,
    out_features: int,
    activation: Any = "relu",
    *,
    kind: str = "mlp",
    branch_depth: int = 1,
    stable: bool = False,
    layer: str = "dense",
    density: float = 1.0,
    bias: bool = True,
    generator: torch.Generator | int | None = None,
) -> nn.Sequential:
    """Residual network of ``num_blocks`` pre-activation blocks
    ``y ← y + λ·(φ → layer)^branch_depth (y)`` (the residual map of Hayou et al., arXiv 2002.08797, for
    ``branch_depth = 1``), between a stem and a readout.

    ``kind="mlp"``: stem ``Linear(in_features, width)``, blocks of ``Linear(width,
    width)``, readout ``φ, Linear(width, out_features)``.
    ``kind="conv"``: input ``(batch, in_features channels, H, W)``; stem ``Conv2d(3×3,
    padding 1)`` to ``width`` channels, blocks of 3×3 convolutions, readout ``φ``, global
    average pooling, ``Flatten``, ``Linear(width, out_features)``.

    ``stable=True`` sets every block's ``scale`` to 1/√num_blocks (Stable ResNet, Hayou et
    al. 2021, arXiv 2002.08797, §4); else 1.
    """
    _check_int("in_features", in_features)
    _check_int("width", width)
    _check_int("num_blocks", num_blocks)
    _check_int("out_features", out_features)
    _check_int("branch_depth", branch_depth)
    if kind not in ("mlp", "conv"):
        raise InvalidInput(f"kind must be 'mlp' or 'conv', got {kind!r}")
    density = _check_layer(layer, density)
    gen = as_generator(generator)
    act = Activation(activation).spec
    opts = {"layer": layer, "density": density, "generator": gen}

    def weight_layer(n_in: int, n_out: int) -> nn.Module:
        if kind == "mlp":
            return make_linear(n_in, n_out, bias, **opts)
        return make_conv(2, n_in, n_out, 3, 1, 1, bias, **opts)

    scale = 1.0 / math.sqrt(num_blocks) if stable else 1.0
    modules: list[nn.Module] = [weight_layer(in_features, width)]
    for _ in range(num_blocks):
        branch: list[nn.Module] = []
        for _ in range(branch_depth):
            branch += [Activation(act), weight_layer(width, width)]
        modules.append(ResidualBlock(nn.Sequential(*branch), scale))
    modules.append(Activation(act))
    if kind == "conv":
        modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    modules.append(make_linear(width, out_features, bias, **opts))
    return nn.Sequential(*modules)
