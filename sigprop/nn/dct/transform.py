"""The orthonormal DCT-II offset D of a DCT-plus-sparse layer and its fast products
(Makhoul 1980, IEEE TASSP 28(1), §II): ``dct2`` (x Dᵀ), ``dct3`` (g D), ``dct_matrix``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sigprop.validate import positive_int


def dct_matrix(
    n_out: int,
    n_in: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """The materialised offset D: top-left ``n_out × n_in`` block of the N-point
    orthonormal DCT-II matrix, N = max(n_in, n_out) (arXiv 2102.07655 §3). For reference
    and diagnostics only; the layers never build it. The formula is
    :func:`sigprop.theory.pruned.dct_matrix`, here as a tensor."""
    # imported here: importing sigprop.nn (every checkpoint check) need not load the theory
    # package and scipy (≈ 0.4 s)
    from sigprop.theory.pruned.dct import dct_matrix as theory_dct_matrix

    positive_int(n_out, "n_out")
    positive_int(n_in, "n_in")
    d = theory_dct_matrix(n_out, n_in)
    return torch.as_tensor(d, dtype=torch.float64, device=device).to(dtype)


def dct2(x: Tensor, n_out: int | None = None) -> Tensor:
    """Fast ``x @ Dᵀ`` over the last dimension: the orthonormal DCT-II of x zero-padded to
    N = max(n_in, n_out), truncated to ``n_out`` coefficients (default n_in), by one
    N-point FFT (Makhoul 1980, IEEE TASSP 28(1), §II). Differentiable; the backward pass is
    :func:`dct3` (Dᵀ), also O(N log N)."""
    n_out = x.shape[-1] if n_out is None else n_out
    positive_int(n_out, "n_out")
    return _DCT2.apply(x, n_out)


def dct3(g: Tensor, n_in: int) -> Tensor:
    """Fast ``g @ D`` over the last dimension (g has n_out entries): the transpose of
    :func:`dct2`, i.e. the first ``n_in`` outputs of the orthonormal DCT-III (= inverse
    DCT-II, as the N-point DCT-II matrix is orthogonal) of g zero-padded to N, by one
    N-point inverse real FFT (Makhoul 1980, §II, inverse). Differentiable."""
    positive_int(n_in, "n_in")
    return _DCT3.apply(g, n_in)


def _dct2_raw(x: Tensor, n_out: int) -> Tensor:
    n_in = x.shape[-1]
    big_n = max(n_in, n_out)
    if big_n > n_in:
        x = F.pad(x, (0, big_n - n_in))
    # Makhoul's reordering v = (x0, x2, x4, ..., x5, x3, x1); then
    # X_k = c_k Re(e^{-iπk/2N} FFT(v)_k).
    v = torch.cat((x[..., 0::2], x[..., 1::2].flip(-1)), dim=-1)
    spec = torch.fft.fft(v, dim=-1)[..., :n_out]
    return torch.real(spec * _twiddle(n_out, big_n, x.dtype, x.device, inverse=False))


def _dct3_raw(g: Tensor, n_in: int) -> Tensor:
    n_out = g.shape[-1]
    big_n = max(n_in, n_out)
    half = big_n // 2
    if big_n > n_out:
        g = F.pad(g, (0, big_n - n_out))
    # Inverse of the above: with y_k = X_k / c_k (y_N = 0), FFT(v)_k = e^{iπk/2N}
    # (y_k - i y_{N-k}) for k = 0 .. N/2 (Hermitian), v = IFFT, then undo the reordering.
    re = g[..., : half + 1]
    im = torch.cat((torch.zeros_like(g[..., :1]), g[..., big_n - half :].flip(-1)), dim=-1)
    spec = torch.complex(re, -im) * _twiddle(half + 1, big_n, g.dtype, g.device, inverse=True)
    v = torch.fft.irfft(spec, n=big_n, dim=-1)
    n_even = (big_n + 1) // 2
    out = torch.empty_like(v)
    out[..., 0::2] = v[..., :n_even]
    out[..., 1::2] = v[..., n_even:].flip(-1)
    return out[..., :n_in]


class _DCT2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, n_out: int) -> Tensor:
        ctx.n_in = x.shape[-1]
        return _dct2_raw(x, n_out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _DCT3.apply(grad, ctx.n_in), None


class _DCT3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g: Tensor, n_in: int) -> Tensor:
        ctx.n_out = g.shape[-1]
        return _dct3_raw(g, n_in)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _DCT2.apply(grad, ctx.n_out), None


_TWIDDLE_CACHE: dict[tuple, Tensor] = {}


def _twiddle(
    n: int, big_n: int, dtype: torch.dtype, device: torch.device, *, inverse: bool
) -> Tensor:
    """c_k e^{-iπk/2N} (forward) or e^{iπk/2N} / c_k (inverse) for k < n, computed in
    float64 and cached per (n, N, dtype, device)."""
    key = (n, big_n, dtype, device, inverse)
    hit = _TWIDDLE_CACHE.get(key)
    if hit is None:
        k = torch.arange(n, dtype=torch.float64)
        c = torch.full((n,), math.sqrt(2.0 / big_n), dtype=torch.float64)
        c[0] = math.sqrt(1.0 / big_n)
        phase = torch.polar(torch.ones_like(k), math.pi * k / (2 * big_n))
        w = phase / c if inverse else c * phase.conj()
        complex_dtype = (
            torch.complex64
            if dtype in (torch.float32, torch.float16, torch.bfloat16)
            else torch.complex128
        )
        hit = w.to(device=device, dtype=complex_dtype)
        if len(_TWIDDLE_CACHE) > 256:
            _TWIDDLE_CACHE.clear()
        _TWIDDLE_CACHE[key] = hit
    return hit


# ---------------------------------------------------------------------------------------
# The sparse product S·x with a fixed support.
# ---------------------------------------------------------------------------------------
