"""DCT-plus-sparse linear and convolution layers (Price & Tanner 2021, arXiv 2102.07655, §3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair, _single

from sigprop.nn.dct.sparse_part import _SparsePart
from sigprop.nn.dct.transform import dct2, dct_matrix
from sigprop.nn.masked import check_density
from sigprop.validate import InvalidInput, positive_int


class DCTPlusSparseLinear(_SparsePart, nn.Module):
    """``y = α·D·x + S·x + b`` (Price & Tanner 2021, arXiv 2102.07655, §3).

    Parameters
    ----------
    in_features, out_features
        Sizes; D is the top-left out × in block of the max(in, out)-point orthonormal
        DCT-II (any aspect ratio).
    bias
        Learnable bias b (zero-initialised).
    density
        Fraction of the entries of S that are kept (the mask), in (0, 1].
    alpha
        Initial value of the trainable scalar α.
    alpha_trainable
        Whether α receives gradients.
    generator
        ``torch.Generator`` or int seed for the mask (and for S if ``sparse_std > 0``).
    sparse_std
        S's kept entries are N(0, sparse_std²/in_features); 0 (default) gives S = 0, the
        paper's initialisation (the layer is then exactly α·D).
    kernel
        ``"auto"``, ``"csr"`` or ``"dense"``: how S·x is computed (same result).
    storage
        ``"dense"`` (default; S is the dense parameter ``weight``, prunable by
        ``sigprop.prune``) or ``"compact"`` (S's kept entries are the parameter ``values``
        on a fixed support; gradients of size nnz; see the module docstring).

    Attributes
    ----------
    weight : Parameter (out, in), or a read-only Tensor with compact storage
        S, dense with exact zeros at pruned positions (with compact storage materialised
        from ``values`` on each access: O(out·in), not for the training loop).
    values : Parameter (nnz,), compact storage only
        S's kept entries in row-major order of ``weight_mask``.
    weight_mask : buffer (out, in)
        0/1 float mask of S.
    alpha : Parameter ()
        The DCT scale α.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        density: float,
        alpha: float = 1.0,
        alpha_trainable: bool = True,
        generator: torch.Generator | int | None = None,
        sparse_std: float = 0.0,
        kernel: str = "auto",
        storage: str = "dense",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Module.__init__(self)
        positive_int(in_features, "in_features")
        positive_int(out_features, "out_features")
        density = check_density(density)
        self.in_features = in_features
        self.out_features = out_features
        self._setup_sparse(
            (out_features, in_features),
            bias,
            alpha,
            alpha_trainable,
            density,
            generator,
            sparse_std,
            kernel,
            storage,
            {"device": device, "dtype": dtype},
        )

    @property
    def fan_in(self) -> int:
        return self.in_features

    def offset(self, x: Tensor) -> Tensor:
        """D·x over the last dimension (without α), by the fast DCT."""
        return dct2(x, self.out_features)

    def effective_weight(self) -> Tensor:
        """The dense matrix α·D + S ⊙ M (materialised: O(out·in) memory; for diagnostics
        and tests)."""
        d = dct_matrix(
            self.out_features,
            self.in_features,
            dtype=self.weight_mask.dtype,
            device=self.weight_mask.device,
        )
        return self.alpha * d + self.weight * self.weight_mask

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise InvalidInput(
                f"input has {x.shape[-1]} features in its last dimension, expected {self.in_features}"
            )
        lead = x.shape[:-1]
        x2d = x.reshape(-1, self.in_features)
        y = self.alpha * dct2(x2d, self.out_features) + self._sparse_product(x2d)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, {self._mask_repr()}, kernel={self.kernel!r}, storage={self.storage!r}"
        )


class _DCTPlusSparseConvNd(_SparsePart, nn.Module):
    """Shared implementation: unfold the input into patches, DCT each patch (channel-fastest
    order) and apply the sparse S to the same patches (weight order (c_in, k...))."""

    _dims: int

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        bias: bool = True,
        *,
        density: float,
        alpha: float = 1.0,
        alpha_trainable: bool = True,
        generator: torch.Generator | int | None = None,
        sparse_std: float = 0.0,
        kernel: str = "auto",
        storage: str = "dense",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Module.__init__(self)
        positive_int(in_channels, "in_channels")
        positive_int(out_channels, "out_channels")
        density = check_density(density)
        tup = _pair if self._dims == 2 else _single
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = tup(kernel_size)
        self.stride = tup(stride)
        self.padding = tup(padding)
        self.dilation = tup(dilation)
        for name in ("kernel_size", "stride", "dilation"):
            for v in getattr(self, name):
                positive_int(v, name)
        for v in self.padding:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidInput(f"padding must be a non-negative integer, got {padding!r}")
        self._setup_sparse(
            (out_channels, in_channels, *self.kernel_size),
            bias,
            alpha,
            alpha_trainable,
            density,
            generator,
            sparse_std,
            kernel,
            storage,
            {"device": device, "dtype": dtype},
        )

    @property
    def fan_in(self) -> int:
        """Patch length P = c_in · Π kernel_size."""
        return self.weight_mask[0].numel()

    def _patches(self, x4: Tensor) -> Tensor:
        """(B, c_in, H, W) → (B, P, L) in unfold order (c_in, k_h, k_w)."""
        return F.unfold(
            x4,
            _pair(self.kernel_size if self._dims == 2 else (1, *self.kernel_size)),
            dilation=self.dilation if self._dims == 2 else (1, *self.dilation),
            padding=self.padding if self._dims == 2 else (0, *self.padding),
            stride=self.stride if self._dims == 2 else (1, *self.stride),
        )

    def _as4d(self, x: Tensor) -> Tensor:
        if x.dim() != self._dims + 2 or x.shape[1] != self.in_channels:
            raise InvalidInput(
                f"input must have shape (batch, {self.in_channels}, "
                f"{', '.join(['*'] * self._dims)}), got {tuple(x.shape)}"
            )
        return x if self._dims == 2 else x.unsqueeze(2)

    def _out_spatial(self, x4: Tensor) -> tuple[int, ...]:
        sizes = []
        ks = self.kernel_size if self._dims == 2 else (1, *self.kernel_size)
        st = self.stride if self._dims == 2 else (1, *self.stride)
        pd = self.padding if self._dims == 2 else (0, *self.padding)
        dl = self.dilation if self._dims == 2 else (1, *self.dilation)
        for i in range(2):
            size = (x4.shape[2 + i] + 2 * pd[i] - dl[i] * (ks[i] - 1) - 1) // st[i] + 1
            if size < 1:
                raise InvalidInput(
                    f"input spatial size {tuple(x4.shape[2:])} is too small for the kernel"
                )
            sizes.append(size)
        return tuple(sizes[2 - self._dims :])

    def forward(self, x: Tensor) -> Tensor:
        x4 = self._as4d(x)
        out_spatial = self._out_spatial(x4)
        batch = x4.shape[0]
        patches = self._patches(x4)  # (B, P, L), P ordered (c_in, k)
        n_pos = patches.shape[-1]
        k = math.prod(self.kernel_size)
        # DCT input in the official order (k..., c_in): channel fastest.
        p_dct = (
            patches.view(batch, self.in_channels, k, n_pos)
            .permute(0, 3, 2, 1)
            .reshape(batch * n_pos, self.fan_in)
        )
        y = self.alpha * dct2(p_dct, self.out_channels)
        p_s = patches.transpose(1, 2).reshape(batch * n_pos, self.fan_in)
        y = y + self._sparse_product(p_s)
        y = y.view(batch, n_pos, self.out_channels).transpose(1, 2)
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.reshape(batch, self.out_channels, *out_spatial)

    def effective_weight(self) -> Tensor:
        """The dense conv kernel α·D + S ⊙ M, shape (c_out, c_in, *kernel_size)
        (materialised; for diagnostics and tests)."""
        k = math.prod(self.kernel_size)
        d = dct_matrix(
            self.out_channels,
            self.fan_in,
            dtype=self.weight_mask.dtype,
            device=self.weight_mask.device,
        )
        # D's columns are in (k, c_in) order; bring them to the weight's (c_in, k) order.
        d = d.view(self.out_channels, k, self.in_channels).transpose(1, 2)
        d = d.reshape(self.weight_mask.shape)
        return self.alpha * d + self.weight * self.weight_mask

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias is not None}, {self._mask_repr()}, kernel={self.kernel!r}, storage={self.storage!r}"
        )


class DCTPlusSparseConv2d(_DCTPlusSparseConvNd):
    """2-D convolution ``y = α·D * x + S * x + b`` (arXiv 2102.07655 §3): D is the
    per-patch DCT-II (top-left c_out × P block, P = c_in·k_h·k_w, patches flattened with
    the channel fastest); S a masked ``(c_out, c_in, k_h, k_w)`` weight. Parameters as
    :class:`DCTPlusSparseLinear` plus the usual ``kernel_size``, ``stride``, ``padding``
    (zeros), ``dilation``; no groups. With ``storage="compact"``, ``values`` holds the kept
    entries of the flattened ``(c_out, c_in·k_h·k_w)`` S in row-major order."""

    _dims = 2


class DCTPlusSparseConv1d(_DCTPlusSparseConvNd):
    """1-D twin of :class:`DCTPlusSparseConv2d` (for the mnist1d convnet); S has shape
    ``(c_out, c_in, k)`` and patches are flattened (k, c_in), channel fastest."""

    _dims = 1
