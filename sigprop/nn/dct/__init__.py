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

from sigprop.nn.dct.kernels import AUTO_DENSE_DENSITY, AUTO_DENSE_NUMEL
from sigprop.nn.dct.layers import DCTPlusSparseConv1d, DCTPlusSparseConv2d, DCTPlusSparseLinear
from sigprop.nn.dct.transform import dct2, dct3, dct_matrix

__all__ = [
    "AUTO_DENSE_DENSITY",
    "AUTO_DENSE_NUMEL",
    "DCTPlusSparseConv1d",
    "DCTPlusSparseConv2d",
    "DCTPlusSparseLinear",
    "dct2",
    "dct3",
    "dct_matrix",
]
