"""DCT-plus-sparse layers of *Dense for the Price of Sparse* (Price & Tanner, ICML 2021,
arXiv 2102.07655, §3), with a fast DCT and a sparse product.

A DCT-plus-sparse layer computes ``y = α·D·x + S·x + b``:

* ``D`` (n_out × n_in) is the top-left block of the N × N orthonormal DCT-II matrix,
  N = max(n_in, n_out) (arXiv 2102.07655 §3; official code IlanPrice/DCTpS
  ``code/modules.py``)::

      D[k, n] = c_k cos(π (2n + 1) k / (2N)),   c_0 = √(1/N),  c_k = √(2/N) (k ≥ 1).

  Because N equals one of the two sizes, D consists of whole rows (n_out ≤ n_in) or whole
  columns (n_out ≥ n_in) of an orthogonal matrix, so every singular value of D is 1 and
  the layer with S = 0 is a partial isometry. D is never stored: ``D·x`` is x zero-padded
  to N, transformed by an N-point FFT (Makhoul 1980, IEEE TASSP 28(1) §II: even samples in
  order, odd samples reversed, then ``Re(e^{-iπk/(2N)} FFT(v)_k)``) and truncated to n_out,
  O(N log N) per example; the backward pass applies Dᵀ by the inverse algorithm (a fast
  DCT-III, one inverse real FFT).
* For a convolution, each flattened input patch (length P = c_in·k_h·k_w, ordered
  (k_h, k_w, c_in) with the channel fastest, as the official code's kernel reshape) gets the
  same transform, truncated or zero-padded to c_out outputs: D is the top-left c_out × P
  block of the max(P, c_out)-point DCT-II.
* α is one trainable scalar per layer (initialised to ``alpha``); D is frozen.
* S is a masked weight (``weight`` and the ``weight_mask`` buffer, exactly
  ``round(density·numel)`` uniformly random kept positions), zero-initialised by default.
  Its product uses a CSR sparse-dense product (``torch.sparse.mm``; gradient of the kept
  values by ``torch.sparse.sampled_addmm``) so it costs O(nnz) per example, or, for small
  or dense-ish layers where that is slower, the dense product with ``weight * weight_mask``
  (``kernel="auto"`` picks by size and density; the thresholds come from
  ``benchmarks/bench_dct.py``).

Storage of S (``storage=``):

* ``"dense"`` (default): ``weight`` is a dense ``nn.Parameter`` with exact zeros at pruned
  positions, so ``sigprop.prune`` can score and re-mask it like any masked layer. Each
  backward pass then produces a dense gradient of S's full size. With the CSR kernel it is
  built from the nnz kept entries in lazily zeroed memory (only the pages holding kept
  entries are written) and, when nothing else contributed to it, the masking pass of the
  gradient hook is skipped; the remaining O(numel) cost is the optimiser's pass over a dense
  parameter (see ``benchmarks/results/dct.md``).
* ``"compact"``: training with a fixed support (the DCTpS setting: uniformly random kept
  positions chosen at initialisation, arXiv 2102.07655 §3). The trainable parameter is
  ``values`` (length nnz, S's kept entries in row-major order of the mask) and every
  gradient is of size nnz. ``weight_mask`` stays a buffer (so mask readers keep working);
  ``weight`` becomes a read-only tensor materialised from ``values`` on access, and the
  state dict holds the same ``weight`` / ``weight_mask`` / ``bias`` / ``alpha`` entries as
  dense storage (checkpoints load into either mode). The support cannot be re-masked
  (``set_mask`` raises ``ValueError``); :meth:`~_SparsePart.to_dense_storage` and
  :meth:`~_SparsePart.to_compact_storage` convert a layer in place.
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair, _single

from sigprop.nn.masked import MaskedMixin, as_generator, check_density
from sigprop.theory.pruned.dct import dct_matrix as _theory_dct_matrix
from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "DCTPlusSparseConv1d",
    "DCTPlusSparseConv2d",
    "DCTPlusSparseLinear",
    "dct2",
    "dct3",
    "dct_matrix",
]

#: ``kernel="auto"`` uses the dense masked product when the kept fraction exceeds this
#: (measured in benchmarks/bench_dct.py) ...
AUTO_DENSE_DENSITY = 0.2
#: ... or when the weight has fewer entries than this (sparse-kernel overhead dominates).
AUTO_DENSE_NUMEL = 1 << 16

_KERNELS = ("auto", "csr", "dense")
_STORAGES = ("dense", "compact")


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
    _check_size("n_out", n_out)
    _check_size("n_in", n_in)
    d = _theory_dct_matrix(n_out, n_in)
    return torch.as_tensor(d, dtype=torch.float64, device=device).to(dtype)


def dct2(x: Tensor, n_out: int | None = None) -> Tensor:
    """Fast ``x @ Dᵀ`` over the last dimension: the orthonormal DCT-II of x zero-padded to
    N = max(n_in, n_out), truncated to ``n_out`` coefficients (default n_in), by one
    N-point FFT (Makhoul 1980, IEEE TASSP 28(1), §II). Differentiable; the backward pass is
    :func:`dct3` (Dᵀ), also O(N log N)."""
    n_out = x.shape[-1] if n_out is None else n_out
    _check_size("n_out", n_out)
    return _DCT2.apply(x, n_out)


def dct3(g: Tensor, n_in: int) -> Tensor:
    """Fast ``g @ D`` over the last dimension (g has n_out entries): the transpose of
    :func:`dct2`, i.e. the first ``n_in`` outputs of the orthonormal DCT-III (= inverse
    DCT-II, as the N-point DCT-II matrix is orthogonal) of g zero-padded to N, by one
    N-point inverse real FFT (Makhoul 1980, §II, inverse). Differentiable."""
    _check_size("n_in", n_in)
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


def _check_size(name: str, value: Any) -> None:
    value = positive_int(value, name)


# ---------------------------------------------------------------------------------------
# The sparse product S·x with a fixed support.
# ---------------------------------------------------------------------------------------
def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        # torch announces CSR support as beta on first use; that notice is not a problem
        # with this code, and pytest runs with warnings as errors.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


class _Pattern:
    """CSR structure of a mask (rows = output units) and of its transpose."""

    def __init__(self, mask: Tensor) -> None:
        n_out, n_in = mask.shape
        self.shape = (n_out, n_in)
        keep = mask != 0
        rows, cols = keep.nonzero(as_tuple=True)  # row-major: CSR order
        self.flat_index = rows * n_in + cols
        self.nnz = int(rows.numel())
        self.crow = _crow(rows, n_out)
        self.col = cols.contiguous()
        # Transpose: sort by (col, row); values permuted by `perm_t`.
        perm_t = torch.argsort(cols * n_out + rows)
        self.perm_t = perm_t
        self.crow_t = _crow(cols[perm_t], n_in)
        self.col_t = rows[perm_t].contiguous()


def _crow(rows: Tensor, n_rows: int) -> Tensor:
    counts = torch.bincount(rows, minlength=n_rows)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    return crow


def _transposed(t: Tensor) -> Tensor:
    """Contiguous transpose of a 2-D tensor. ``empty().copy_(t.t())`` takes torch's blocked
    transpose-copy path, many times faster than ``t.t().contiguous()`` on CPU (measured in
    benchmarks/bench_dct.py's development: 0.9 ms vs 11 ms for 256 × 4096 float32)."""
    return torch.empty((t.shape[1], t.shape[0]), dtype=t.dtype, device=t.device).copy_(t.t())


class _CSRLinear(torch.autograd.Function):
    """y = x Sᵀ for x of shape (M, n_in), S given by its kept ``values`` and a fixed
    :class:`_Pattern`. Backward: ∂x = g S (CSR of Sᵀ), ∂values = (gᵀx) sampled on the
    pattern (SDDMM). The CSR kernels want feature-major dense operands, so inputs and
    outputs are transposed explicitly (O(M·n), see :func:`_transposed`)."""

    @staticmethod
    def forward(ctx, values: Tensor, x: Tensor, pattern: _Pattern) -> Tensor:
        ctx.save_for_backward(values, x)
        ctx.pattern = pattern
        s = _csr(pattern.crow, pattern.col, values, pattern.shape)
        return _transposed(torch.sparse.mm(s, _transposed(x)))

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, x = ctx.saved_tensors
        p: _Pattern = ctx.pattern
        grad_values = grad_x = None
        grad_t = _transposed(grad)  # (n_out, M)
        if ctx.needs_input_grad[0]:
            template = _csr(p.crow, p.col, torch.zeros_like(values), p.shape)
            sampled = torch.sparse.sampled_addmm(template, grad_t, x, beta=0.0)
            grad_values = sampled.values()
        if ctx.needs_input_grad[1]:
            s_t = _csr(p.crow_t, p.col_t, values[p.perm_t], (p.shape[1], p.shape[0]))
            grad_x = _transposed(torch.sparse.mm(s_t, grad_t))
        return grad_values, grad_x, None


_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _lazy_zeros(numel: int, like: Tensor) -> Tensor:
    """A zero vector of ``numel`` entries with the dtype and device of ``like``.

    On the CPU it is allocated by ``numpy.zeros`` (``calloc``), whose large blocks are fresh
    pages the OS zeroes lazily on first touch, instead of ``torch.zeros``' explicit fill:
    scattering a sparse gradient into it touches only the pages that hold kept entries
    (4096 × 4096 float32 at density 1e-3: 5–8 ms instead of 8–22 ms, measured while
    developing ``benchmarks/bench_dct.py``). That holds for blocks glibc maps fresh (above
    its dynamic mmap threshold, at most 32 MiB); smaller ones come from the heap and cost
    what ``torch.zeros`` does, so there the gain is only the skipped masking pass."""
    np_dtype = _NUMPY_DTYPES.get(like.dtype)
    if like.device.type != "cpu" or np_dtype is None:
        return torch.zeros(numel, dtype=like.dtype, device=like.device)
    return torch.from_numpy(np.zeros(numel, dtype=np_dtype))


class _KeptValues(torch.autograd.Function):
    """``weight.reshape(-1)[flat_index]`` (S's kept entries, row-major) whose backward
    scatters the gradient of the kept entries into a lazily zeroed dense gradient
    (:func:`_lazy_zeros`) and records it on the layer as masked already, so the layer's
    gradient hook skips its O(numel) masking pass (:meth:`_SparsePart._grad_is_masked`)."""

    @staticmethod
    def forward(ctx, weight: Tensor, pattern: _Pattern, layer: _SparsePart) -> Tensor:
        ctx.shape = weight.shape
        ctx.pattern = pattern
        ctx.layer = weakref.ref(layer)
        return weight.reshape(-1)[pattern.flat_index]

    @staticmethod
    def backward(ctx, grad: Tensor):
        p: _Pattern = ctx.pattern
        out = _lazy_zeros(math.prod(ctx.shape), grad)
        out.index_put_((p.flat_index,), grad)
        out = out.view(ctx.shape)
        layer = ctx.layer()
        if layer is not None:
            # Valid for this backward pass only (cleared when the engine finishes it, and by
            # the next forward if the pass fails; within the pass `out` is alive, so no
            # other tensor can have its address), for this tensor unchanged (address and
            # version counter: neither a reference, which would stop autograd from taking
            # `out` as the .grad without a copy, nor a weak one, which dies with the Python
            # wrapper) and for the pattern it was built on (a mask changed since then must
            # still be applied).
            layer.__dict__["_masked_grad"] = (out.data_ptr(), out._version, out.shape, p)
            torch.autograd.Variable._execution_engine.queue_callback(
                lambda: layer.__dict__.pop("_masked_grad", None)
            )
        return out, None, None


class _SparsePart(MaskedMixin):
    """The masked weight S shared by the DCT-plus-sparse layers: pattern cache, the two
    storage modes and the product ``x ↦ x Sᵀ`` over a flattened (rows = output units)
    view of S."""

    def _setup_sparse(
        self,
        shape: tuple[int, ...],
        bias: bool,
        alpha: float,
        alpha_trainable: bool,
        density: float,
        generator: torch.Generator | int | None,
        sparse_std: float,
        kernel: str,
        storage: str,
        factory: dict[str, Any],
    ) -> None:
        """Create ``weight`` (S, of ``shape``), ``bias`` (zeros, one per output unit) and the
        scalar ``alpha``, then draw S and its mask (shared by every DCT-plus-sparse layer)."""
        self.weight = nn.Parameter(torch.empty(*shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.zeros(shape[0], **factory))
        else:
            self.register_parameter("bias", None)
        self.alpha = nn.Parameter(
            torch.tensor(float(alpha), **factory), requires_grad=alpha_trainable
        )
        generator = as_generator(generator)
        if kernel not in _KERNELS:
            raise InvalidInput(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        if storage not in _STORAGES:
            raise InvalidInput(f"storage must be one of {_STORAGES}, got {storage!r}")
        if (
            not (isinstance(sparse_std, (int, float)) and math.isfinite(sparse_std))
            or sparse_std < 0
        ):
            raise InvalidInput(f"sparse_std must be a finite number >= 0, got {sparse_std!r}")
        self.kernel = kernel
        self.sparse_std = float(sparse_std)
        self.storage = "dense"
        with torch.no_grad():
            if sparse_std > 0:
                fan_in = self.weight[0].numel()
                self.weight.normal_(0.0, sparse_std / math.sqrt(fan_in), generator=generator)
            else:
                self.weight.zero_()
        self._init_mask(density, generator)
        self.__dict__["_pattern_key"] = None
        if storage == "compact":
            # Same draws as dense storage (weight first, then mask): the two modes built
            # from one seed hold the same S.
            self.to_compact_storage()

    # -- storage ------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name == "weight" and self.__dict__.get("storage") == "compact":
            return self._compact_weight()
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "weight" and self.__dict__.get("storage") == "compact":
            raise InvalidInput(
                f"{type(self).__name__} has compact storage: `weight` is read-only (derived "
                "from `values`); call to_dense_storage() first to assign a dense weight"
            )
        super().__setattr__(name, value)

    def _compact_weight(self) -> Tensor:
        """S as a dense tensor of the mask's shape, materialised from ``values`` (exact
        zeros at pruned positions; differentiable with respect to ``values``)."""
        mask = self.weight_mask
        flat = self._pattern().flat_index
        values = self._parameters["values"]
        dense = values.new_zeros(mask.numel()).index_put((flat,), values)
        return dense.view(mask.shape)

    @torch.no_grad()
    def to_compact_storage(self):
        """Switch S to compact storage in place (no-op if already compact): the dense
        ``weight`` parameter is replaced by the parameter ``values`` of its kept entries
        (row-major order of the mask), with the same ``requires_grad``. Returns ``self``.
        An optimizer built before the switch must be rebuilt (the parameter is new)."""
        if self.storage == "compact":
            return self
        weight = self._parameters["weight"]
        pattern = self._pattern()
        values = weight.detach().reshape(-1)[pattern.flat_index].clone()
        del self._parameters["weight"]
        self.__dict__.pop("_hooked_weight", None)
        self.__dict__["storage"] = "compact"
        self.__dict__["_support"] = pattern.flat_index
        self.register_parameter("values", nn.Parameter(values, requires_grad=weight.requires_grad))
        return self

    @torch.no_grad()
    def to_dense_storage(self):
        """Switch S back to dense storage in place (no-op if already dense): ``weight``
        becomes a dense parameter again (exact zeros at pruned positions) and ``values``
        is removed. Returns ``self``."""
        if self.storage == "dense":
            return self
        values = self._parameters["values"]
        weight = self._compact_weight().detach().clone()
        del self._parameters["values"]
        self.__dict__["storage"] = "dense"
        self.__dict__.pop("_support", None)
        self.register_parameter("weight", nn.Parameter(weight, requires_grad=values.requires_grad))
        return self

    @torch.no_grad()
    def set_mask(self, mask: Any) -> None:
        if self.storage == "compact":
            raise InvalidInput(
                f"{type(self).__name__} has compact storage, whose support is fixed; call "
                "to_dense_storage() to re-mask it (and to_compact_storage() afterwards)"
            )
        super().set_mask(mask)

    @torch.no_grad()
    def apply_mask_(self) -> None:
        if self.storage == "compact":
            # Pruned entries are not stored, so only the finiteness check applies.
            if not torch.isfinite(self._parameters["values"]).all():
                raise InvalidInput(
                    f"{type(self).__name__}: weight contains NaN or inf at kept positions"
                )
            return
        super().apply_mask_()

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.storage == "compact":
            # Checkpoints use the dense layout (what sigprop.io and dense storage read).
            del destination[prefix + "values"]
            weight = self._compact_weight()
            destination[prefix + "weight"] = weight if keep_vars else weight.detach()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        w_key, m_key = prefix + "weight", prefix + "weight_mask"
        if self.storage == "compact" and w_key in state_dict and m_key in state_dict:
            weight, mask = state_dict.pop(w_key), state_dict[m_key]
            if tuple(weight.shape) != tuple(self.weight_mask.shape) or tuple(mask.shape) != tuple(
                weight.shape
            ):
                error_msgs.append(
                    f"size mismatch for {w_key}: checkpoint weight {tuple(weight.shape)} and "
                    f"mask {tuple(mask.shape)}, layer {tuple(self.weight_mask.shape)}"
                )
            else:
                flat = _Pattern(mask.reshape(mask.shape[0], -1)).flat_index
                values = self._parameters["values"]
                state_dict[prefix + "values"] = weight.reshape(-1)[flat]
                if flat.numel() != values.numel():
                    values.data = values.new_empty(flat.numel())  # the support changes size
                self.__dict__["_support"] = flat.to(values.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # -- the product ----------------------------------------------------------------------
    def _pattern(self) -> _Pattern:
        mask = self.weight_mask
        key = (mask.data_ptr(), mask._version, tuple(mask.shape), mask.device)
        if self.__dict__.get("_pattern_key") != key:
            pattern = _Pattern(mask.reshape(mask.shape[0], -1))
            support = self.__dict__.get("_support")
            if self.storage == "compact" and not torch.equal(
                pattern.flat_index, support.to(pattern.flat_index.device)
            ):
                raise InvalidInput(
                    f"the weight_mask of a compact-storage {type(self).__name__} was changed "
                    "in place; its support is fixed (convert with to_dense_storage() to "
                    "re-mask)"
                )
            self.__dict__["_pattern_cache"] = pattern
            self.__dict__["_pattern_key"] = key
        return self.__dict__["_pattern_cache"]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_pattern_cache", None)
        state.pop("_masked_grad", None)
        state["_pattern_key"] = None
        return state

    @property
    def kept(self) -> int:
        """Number of kept weights (from the cached pattern: no pass over the mask)."""
        return self._pattern().nnz

    def uses_sparse_kernel(self) -> bool:
        """Whether the S product runs through the CSR kernel (else dense masked)."""
        if self.kernel == "csr":
            return True
        if self.kernel == "dense":
            return False
        numel = self.weight_mask.numel()
        # The kept count comes from the cached pattern (no pass over the mask per call).
        return numel >= AUTO_DENSE_NUMEL and self._pattern().nnz <= AUTO_DENSE_DENSITY * numel

    def _sparse_product(self, x2d: Tensor) -> Tensor:
        """x2d (M, fan_in) ↦ (M, n_out) = x2d · S_flatᵀ."""
        if self.storage == "compact":
            pattern = self._pattern()
            values = self._parameters["values"]
            if not self.uses_sparse_kernel():
                return x2d @ self._compact_weight().reshape(pattern.shape).t()
            return _CSRLinear.apply(values, x2d, pattern)
        self._ensure_grad_hook()
        self.__dict__.pop("_masked_grad", None)  # left over by a failed backward pass
        w2d = self.weight.reshape(self.weight.shape[0], -1)
        if not self.uses_sparse_kernel():
            return x2d @ (w2d * self.weight_mask.reshape(w2d.shape)).t()
        pattern = self._pattern()
        values = _KeptValues.apply(self.weight, pattern, self)
        return _CSRLinear.apply(values, x2d, pattern)

    def _grad_is_masked(self, grad: Tensor) -> bool:
        """True when ``grad`` is, unchanged, the gradient :class:`_KeptValues` built from the
        kept entries of the current mask in this backward pass (the same tensor with the same
        version counter: nothing was added into it since), i.e. the weight was reached only
        through the sparse product."""
        mark = self.__dict__.pop("_masked_grad", None)
        if mark is None:
            return False
        ptr, version, shape, pattern = mark
        return (
            grad.data_ptr() == ptr
            and grad._version == version
            and grad.shape == shape
            and pattern is self._pattern()
        )


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
        _check_size("in_features", in_features)
        _check_size("out_features", out_features)
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
        _check_size("in_channels", in_channels)
        _check_size("out_channels", out_channels)
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
                _check_size(name, v)
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
