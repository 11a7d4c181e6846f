"""Masked (pruned) linear and convolutional layers.

A masked layer is the usual torch layer plus a float 0/1 buffer ``weight_mask`` of the
weight's shape (the buffer name ``torch.nn.utils.prune`` uses). The forward pass uses
``weight * weight_mask``; pruned weights are stored as exact zeros and stay zero:

* the accumulated gradient ``weight.grad`` is zeroed at pruned positions by a hook, so no
  loss term (not even one that reads ``weight`` directly, such as an explicit L2 penalty)
  gives a pruned weight a gradient; with a zero weight and a zero gradient, SGD (momentum, weight
  decay), Adam and AdamW leave it at zero;
* :meth:`apply_mask_` re-zeroes pruned weights after anything that writes ``weight``
  directly (loading a state dict, a custom update); :func:`apply_masks_` does it for a
  whole model.

The masked layers subclass ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d``, so code that
walks ``isinstance(m, nn.Linear)`` sees them. Their fan-in (for initialisation and the
rescaling trick) is ``weight[0].numel()`` (``in_ch/groups · k_h · k_w`` for convolutions).
"""

from __future__ import annotations

import math
import weakref
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigprop.validate import InvalidInput
from sigprop.validate import density as check_density

__all__ = [
    "MaskedConv1d",
    "MaskedConv2d",
    "MaskedLinear",
    "MaskedMixin",
    "as_generator",
    "check_density",
    "random_mask",
    "validate_mask",
]


def as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """``None`` stays ``None`` (torch's default generator), an int seeds a fresh CPU
    generator, a ``torch.Generator`` is used as is."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise InvalidInput(
        f"generator must be a torch.Generator, an int seed or None, got {generator!r}"
    )


def random_mask(
    shape: torch.Size | tuple[int, ...],
    density: float,
    *,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """A 0/1 tensor of ``shape`` with exactly ``round(density · numel)`` ones at uniformly
    random positions (a uniformly random subset of that size, drawn from ``generator``).

    ``round`` is Python's (ties to even). A density so small that the count rounds to 0
    gives an all-zero mask (a fully pruned layer), which is legitimate input for the
    collapse diagnostics.
    """
    density = check_density(density)
    numel = math.prod(shape)
    kept = round(density * numel)
    mask = torch.zeros(numel, dtype=dtype, device=device)
    if kept == numel:
        mask.fill_(1.0)
    elif kept > 0:
        idx = torch.randperm(numel, generator=as_generator(generator))[:kept]
        mask[idx.to(mask.device)] = 1.0
    return mask.view(*shape)


def validate_mask(mask: Any, shape: torch.Size, *, name: str = "mask") -> Tensor:
    """Check that ``mask`` is a binary tensor of ``shape``; return it as a tensor.

    Raises ``ValueError`` naming the problem: not a tensor/array, wrong shape, complex
    dtype, NaN/inf entries, or entries other than 0 and 1.
    """
    if not isinstance(mask, Tensor):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, RuntimeError, ValueError):
            raise InvalidInput(f"{name} must be a tensor, got {type(mask).__name__}") from None
    if mask.is_complex():
        raise InvalidInput(f"{name} has complex dtype {mask.dtype}; a mask is real 0/1")
    if (
        mask.dtype
        not in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
        and not mask.is_floating_point()
    ):
        raise InvalidInput(f"{name} has unsupported dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise InvalidInput(f"{name} has shape {tuple(mask.shape)}, expected {tuple(shape)}")
    if mask.is_floating_point():
        if torch.isnan(mask).any():
            raise InvalidInput(f"{name} contains NaN")
        if torch.isinf(mask).any():
            raise InvalidInput(f"{name} contains inf")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        bad = mask[(mask != 0) & (mask != 1)].flatten()[0].item()
        raise InvalidInput(f"{name} is not binary: it contains {bad!r} (only 0 and 1 allowed)")
    return mask


class MaskedMixin:
    """Mask bookkeeping shared by the masked layers (and the sparse part of the
    DCT-plus-sparse layers). The host class must have ``weight`` and register the
    ``weight_mask`` buffer through :meth:`_init_mask`."""

    weight: nn.Parameter
    weight_mask: Tensor

    def _init_mask(self, density: float, generator: torch.Generator | None) -> None:
        mask = random_mask(
            self.weight.shape,
            density,
            generator=generator,
            dtype=self.weight.dtype,
            device=self.weight.device,
        )
        self.register_buffer("weight_mask", mask)
        self.apply_mask_()

    # -- the gradient hook --------------------------------------------------------------
    def _ensure_grad_hook(self) -> None:
        """Register (once per parameter object) a hook that zeroes ``weight.grad`` at pruned
        positions, in place, each time a gradient is accumulated into it
        (``register_post_accumulate_grad_hook``). Done lazily in ``forward`` so that it
        follows the parameter through ``deepcopy``/pickling (which drop tensor hooks).
        Gradients returned by ``torch.autograd.grad`` are not accumulated and so not
        hooked; through this layer's own forward they are zero at pruned positions anyway
        (the forward reads ``weight`` only through the mask)."""
        # Read the Parameter itself (not through ``Module.__getattr__``, which torch.fx
        # replaces by a proxy while tracing).
        w = self._parameters["weight"]
        ref = self.__dict__.get("_hooked_weight")
        if ref is not None and ref() is w:
            return
        if w.requires_grad:
            module_ref = weakref.ref(self)

            def _mask_grad(param: Tensor) -> None:
                module = module_ref()
                if (
                    module is not None
                    and param.grad is not None
                    and not module._grad_is_masked(param.grad)
                ):
                    # An in-place product: one pass, several times faster than masked_fill_
                    # with a random boolean mask. (A NaN/inf gradient at a pruned position
                    # stays NaN; that only happens once the loss itself is not finite, and
                    # apply_mask_ clears such weights.)
                    param.grad.mul_(module.weight_mask.to(param.grad.dtype))

            w.register_post_accumulate_grad_hook(_mask_grad)
            self.__dict__["_hooked_weight"] = weakref.ref(w)

    def _grad_is_masked(self, grad: Tensor) -> bool:
        """Whether ``grad`` is known to be zero at every pruned position already (so the
        gradient hook can skip its pass over the full weight). False here; layers whose
        backward builds the gradient from the kept entries only override it."""
        return False

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_hooked_weight", None)  # a weakref (unpicklable); re-made in forward
        return state

    # -- public API ---------------------------------------------------------------------
    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Set pruned weights to exactly 0 in place (``masked_fill``, so a NaN/inf stored
        at a pruned position is cleared rather than kept by ``NaN · 0``). Raises
        ``ValueError`` if a *kept* weight is NaN or inf."""
        keep = self.weight_mask.to(torch.bool)
        self.weight.masked_fill_(~keep, 0.0)
        if not torch.isfinite(self.weight).all():
            raise InvalidInput(
                f"{type(self).__name__}: weight contains NaN or inf at kept positions"
            )

    @torch.no_grad()
    def set_mask(self, mask: Any) -> None:
        """Replace the mask (validated: shape, dtype, NaN/inf, binary) and zero the newly
        pruned weights. Newly kept positions keep whatever ``weight`` stores there (0 for a
        weight pruned before)."""
        mask = validate_mask(mask, self.weight.shape, name=f"{type(self).__name__} mask")
        self.weight_mask.copy_(
            mask.to(dtype=self.weight_mask.dtype, device=self.weight_mask.device)
        )
        self.apply_mask_()

    @property
    def density(self) -> float:
        """Fraction of weights kept (``kept / numel``)."""
        return self.kept / self.weight_mask.numel()

    @property
    def kept(self) -> int:
        """Number of kept weights."""
        return int(self.weight_mask.sum().item())

    def unit_density(self) -> Tensor:
        """Per-unit kept fraction, the unit of the rescaling trick (Hayou et al. 2021,
        arXiv 2002.08797, §4): one value per output unit for a linear layer (shape
        ``(out_features,)``), one per output channel *and* kernel position for a
        convolution (shape ``(out_ch, *kernel_size)``; the kept fraction over the input
        channels)."""
        return self.weight_mask.mean(dim=1)

    def row_density(self) -> Tensor:
        """Kept fraction per output unit / output channel over its whole fan-in, shape
        ``(out,)``."""
        return self.weight_mask.flatten(1).mean(dim=1)

    @property
    def fan_in(self) -> int:
        return self.weight[0].numel()

    def masked_weight(self) -> Tensor:
        """``weight * weight_mask`` (what the forward pass uses)."""
        return self.weight * self.weight_mask

    def _mask_repr(self) -> str:
        return f"density={self.density:.4g}"


def _copy_dense_into(new: MaskedMixin, layer: nn.Module, mask: Any) -> MaskedMixin:
    """``from_dense``'s common tail: copy ``layer``'s weight and bias into the masked layer
    ``new`` and set its mask (all ones by default); returns ``new``."""
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    new.set_mask(torch.ones_like(layer.weight) if mask is None else mask)
    return new


class MaskedLinear(MaskedMixin, nn.Linear):
    """``nn.Linear`` with a fixed-support mask: ``y = x (W ⊙ M)ᵀ + b``.

    Parameters
    ----------
    in_features, out_features, bias
        As ``nn.Linear``.
    density
        Fraction of weights kept, in (0, 1]; the mask has exactly
        ``round(density · numel)`` ones at uniformly random positions.
    generator
        ``torch.Generator`` or int seed for the mask *and* the initial weights (torch's
        default ``nn.Linear`` initialisation, U(±1/√fan_in), drawn from this generator).
        ``None`` uses torch's default generator.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        density: float = 1.0,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        density = check_density(density)
        generator = as_generator(generator)
        with _drawing_from(self, generator):
            super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_mask(density, generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """torch's default initialisation (U(±1/√fan_in) for weight and bias), drawn from
        ``generator``; the mask is re-applied if present."""
        _default_reset(self, generator)

    @classmethod
    def from_dense(cls, layer: nn.Linear, mask: Any = None) -> MaskedLinear:
        """A masked copy of ``layer`` (weights copied; ``mask`` defaults to all ones)."""
        _check_finite_weight(layer)
        new = cls(
            layer.in_features,
            layer.out_features,
            layer.bias is not None,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
        )
        return _copy_dense_into(new, layer, mask)

    def forward(self, x: Tensor) -> Tensor:
        self._ensure_grad_hook()
        return F.linear(x, self.weight * self.weight_mask, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._mask_repr()}"


class _MaskedConvNd(MaskedMixin):
    """The constructor and forward shared by :class:`MaskedConv1d` and
    :class:`MaskedConv2d` (the host ``nn.ConvNd`` class comes next in the MRO)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        density: float = 1.0,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        density = check_density(density)
        generator = as_generator(generator)
        with _drawing_from(self, generator):
            super().__init__(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
                padding_mode=padding_mode,
                device=device,
                dtype=dtype,
            )
        self._init_mask(density, generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        _default_reset(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        self._ensure_grad_hook()
        return self._conv_forward(x, self.weight * self.weight_mask, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._mask_repr()}"

    @classmethod
    def from_dense(cls, layer: nn.Module, mask: Any = None):
        """A masked copy of a ``nn.Conv1d``/``nn.Conv2d`` (weights copied; ``mask``
        defaults to all ones)."""
        _check_finite_weight(layer)
        new = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
        )
        return _copy_dense_into(new, layer, mask)


class MaskedConv2d(_MaskedConvNd, nn.Conv2d):
    """``nn.Conv2d`` with a fixed-support ``weight_mask`` (see :class:`MaskedLinear` for
    ``density`` and ``generator``). Per-unit densities are per output channel and kernel
    position (:meth:`unit_density`)."""


class MaskedConv1d(_MaskedConvNd, nn.Conv1d):
    """``nn.Conv1d`` with a fixed-support ``weight_mask`` (for the mnist1d convnet); see
    :class:`MaskedConv2d`."""


@contextmanager
def _drawing_from(module: nn.Module, generator: torch.Generator | None):
    """While the host class's constructor runs, its ``reset_parameters`` (torch calls it
    with no argument) draws from ``generator`` (read by :func:`_default_reset`)."""
    module.__dict__["_init_generator"] = generator
    try:
        yield
    finally:
        module.__dict__.pop("_init_generator", None)


def _default_reset(module: nn.Module, generator: torch.Generator | None) -> None:
    """torch's default Linear/Conv initialisation (kaiming-uniform with a = √5, i.e.
    U(±1/√fan_in), bias U(±1/√fan_in)) drawn from ``generator`` (or the generator passed
    to the constructor while it runs)."""
    if generator is None:
        generator = module.__dict__.get("_init_generator")
    with torch.no_grad():
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
        if module.bias is not None:
            fan_in = module.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    if "weight_mask" in module._buffers:
        module.apply_mask_()


def _check_finite_weight(layer: nn.Module) -> None:
    if not torch.isfinite(layer.weight).all():
        raise InvalidInput(f"{type(layer).__name__}: weight contains NaN or inf")
