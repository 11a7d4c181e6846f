"""Sparse-product kernels of the sparse part S: CSR products with a hand-written backward,
the kept-value gather, and the ``auto`` rule between them and the dense masked product."""

from __future__ import annotations

import math
import warnings
import weakref

import numpy as np
import torch
from torch import Tensor, nn

#: ``kernel="auto"`` uses the dense masked product when the kept fraction exceeds this
#: (measured in benchmarks/bench_dct.py) ...
AUTO_DENSE_DENSITY = 0.2
#: ... or when the weight has fewer entries than this (sparse-kernel overhead dominates).
AUTO_DENSE_NUMEL = 1 << 16

_KERNELS = ("auto", "csr", "dense")
_STORAGES = ("dense", "compact")


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
    def forward(ctx, weight: Tensor, pattern: _Pattern, layer: nn.Module) -> Tensor:
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
