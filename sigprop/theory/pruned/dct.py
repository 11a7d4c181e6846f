"""The DCT-plus-sparse layer y = αDx + Sx + b (Price & Tanner 2021, arXiv 2102.07655, §3):
the DCT-II matrix, singular-value bounds, norm and rank of the sparse part."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import optimize

from sigprop.theory.pruned.common import Result
from sigprop.validate import InvalidInput, density_array, positive_int

# --------------------------------------------------------------------------------------
# DCT plus sparse (Price & Tanner)
# --------------------------------------------------------------------------------------


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """The DCT offset D of a linear layer (n_out × n_in), materialised (tests/oracles only).

    D is the top-left n_out × n_in block of the N × N orthonormal DCT-II matrix,
    N = max(n_in, n_out): D[k, n] = c_k cos(π(2n + 1)k / (2N)), c₀ = √(1/N), c_k = √(2/N)
    (Price & Tanner arXiv 2102.07655 §3). Its rows (n_out ≤ n_in) or columns
    (n_out ≥ n_in) are orthonormal, so every singular value is 1 and rank = min(n_in, n_out).
    """
    n_out = positive_int(n_out, "n_out")
    n_in = positive_int(n_in, "n_in")
    return dct_entries(np.arange(n_out)[:, None], np.arange(n_in)[None, :], max(n_out, n_in))


def dct_entries(k, n, big: int) -> np.ndarray:
    """Entries D[k, n] = c_k cos(π(2n + 1)k / (2N)) of the N-point orthonormal DCT-II matrix
    (N = ``big``) at integer index arrays ``k``, ``n`` (broadcast): the one DCT-II formula
    of the package (:func:`dct_matrix`, the layers' reference offset, the checker's view of
    a DCT-plus-sparse weight). The phase (2n + 1)k is reduced modulo 4N in integers, so the
    float64 cosine argument stays below 2π and entries are exact to round-off at any N."""
    k = np.asarray(k, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    phase = ((2 * n + 1) * k) % (4 * big)
    scale = np.where(k == 0, math.sqrt(1.0 / big), math.sqrt(2.0 / big))
    return scale * np.cos(np.pi * phase / (2 * big))


def weyl_singular_value_bounds(alpha: float, s_norm: Any) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on all min(n_in, n_out) singular values of αD + S: [α − ‖S‖₂, α + ‖S‖₂].

    Weyl's inequality for singular values, |σ_i(A + B) − σ_i(A)| ≤ ‖B‖₂, with σ_i(αD) = |α|
    for every i ≤ min(n_in, n_out) (:func:`dct_matrix`). So αD + S has full rank whenever
    ‖S‖₂ < |α|, at any density of S (Price & Tanner arXiv 2102.07655 §3). (More: det(αD + S)
    restricted to a maximal square block is a polynomial in α with leading coefficient
    ±1, so full rank fails for at most min(n_in, n_out) values of α, whatever S is.)
    Returns (lower, upper), lower clipped at 0.
    """
    a = abs(float(alpha))
    s = np.asarray(s_norm, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise InvalidInput(f"s_norm (spectral norm of S) must be finite and >= 0, got {s_norm!r}")
    return np.maximum(a - s, 0.0), a + s


@dataclasses.dataclass(frozen=True)
class SparseNorm(Result):
    """Prediction of E‖S‖₂ for S (n_out × n_in) with i.i.d. N(0, std²) entries kept w.p. ρ.

    Fields
    ------
    bulk : float
        std·√ρ·(√n_in + √n_out): the Bai–Yin / Latała scaling, accurate when every row and
        column has many nonzeros (ρ·min(n) ≫ log max(n)).
    max_row_norm, max_col_norm : float
        E max_i ‖S_i,·‖₂ and E max_j ‖S_·,j‖₂ — exact expectations for this model (row
        norm² = std²·χ²_K, K ~ Binomial(n_in, ρ)); both are lower bounds on ‖S‖₂, and the
        norm is dominated by them in the very sparse regime.
    prediction : float
        max(bulk, max_row_norm, max_col_norm).
    regime : str
        ``"dense"`` when the bulk term is the largest, else ``"sparse"``.
    """

    bulk: float
    max_row_norm: float
    max_col_norm: float
    prediction: float
    regime: str


def _expected_max_norm(n_rows: int, n_cols: int, density: float, std: float) -> float:
    """E max over n_rows rows of ‖row‖₂, row entries N(0, std²) kept w.p. density.

    P(max ≤ r) = F(r)^{n_rows}, F(r) = Σ_k P(K = k) P(χ²_k ≤ r²/std²), K ~ Bin(n_cols, ρ)
    (χ²_0 the point mass at 0); E max = ∫_0^∞ (1 − F^{n_rows}) dr on a 1201-point grid.
    """
    from scipy import stats  # here: importing scipy.stats costs every torch-side start ~0.2 s

    binom = stats.binom(n_cols, density)
    k = np.arange(int(binom.ppf(1e-16)), int(binom.isf(1e-16)) + 2)
    pk = binom.pmf(k)
    r_max = math.sqrt(max(float(stats.chi2.isf(1e-16 / n_rows, max(int(k[-1]), 1))), 1.0))
    r = np.linspace(0.0, r_max, 1201)
    chi = np.where(k[None, :] == 0, 1.0, stats.chi2.cdf(r[:, None] ** 2, np.maximum(k, 1)[None, :]))
    cdf = np.clip(chi @ pk, 0.0, 1.0)
    surv_max = -np.expm1(n_rows * np.log(np.maximum(cdf, 1e-300)))
    return float(std * np.trapezoid(surv_max, r))


def sparse_spectral_norm(n_out: int, n_in: int, density: float, std: float = 1.0) -> SparseNorm:
    """Predicted spectral norm of a random sparse S (the sparse part of a DCT-plus layer).

    Model: S_ij = δ_ij g_ij, δ_ij ~ Bernoulli(ρ), g_ij ~ N(0, std²), all independent (random
    support, as in Price & Tanner arXiv 2102.07655 §3 when S is initialised randomly).
    Dense-enough regime (ρ·min(n_in, n_out) ≫ log max(n_in, n_out)): ‖S‖₂ ≈
    std·√ρ(√n_in + √n_out) (Bai–Yin; Latała 2005 for non-identical entries). Very sparse
    regime: ‖S‖₂ is governed by the largest row/column norm, which always bounds it from
    below (a max of ρ·n nonzeros' norms; Bandeira & van Handel arXiv 1408.6185 for the
    general bound). The prediction is the larger of the three; it is a heuristic in the
    crossover region (the tests measure its error against simulation).
    """
    rho = float(density_array(density))
    for name, n in (("n_out", n_out), ("n_in", n_in)):
        n = positive_int(n, name)
    if not np.isfinite(std) or std <= 0:
        raise InvalidInput(f"std must be finite and > 0, got {std!r}")
    bulk = std * math.sqrt(rho) * (math.sqrt(n_in) + math.sqrt(n_out))
    row = _expected_max_norm(n_out, n_in, rho, std)
    col = _expected_max_norm(n_in, n_out, rho, std)
    pred = max(bulk, row, col)
    return SparseNorm(bulk, row, col, pred, "dense" if bulk >= max(row, col) else "sparse")


@dataclasses.dataclass(frozen=True)
class SparseRank(Result):
    """Expected rank of S alone (n_out × n_in) with a random support of density ρ.

    Fields
    ------
    expected_rank : float
        Asymptotic rank from the Poisson-degree formula (see :func:`sparse_rank`).
    nonempty_rows, nonempty_cols : float
        n_out(1 − (1−ρ)^{n_in}) and n_in(1 − (1−ρ)^{n_out}): expected numbers of non-zero
        rows and columns, whose minimum bounds the rank.
    bound : float
        min(nonempty_rows, nonempty_cols, n_out, n_in).
    full_rank : int
        min(n_in, n_out): the rank of αD + S for ‖S‖₂ < |α| (any density).
    """

    expected_rank: float
    nonempty_rows: float
    nonempty_cols: float
    bound: float
    full_rank: int


def sparse_rank(n_out: int, n_in: int, density: float) -> SparseRank:
    """Expected rank of a random sparse matrix with generic (e.g. Gaussian) nonzeros.

    With real generic values the rank equals the size of a maximum matching of the
    bipartite support graph. For i.i.d. Bernoulli(ρ) support, column degrees are ≈
    Poisson(d = ρ n_out) and row degrees ≈ Poisson(k = ρ n_in); the rank of sparse random
    matrices with such degrees is (Coja-Oghlan, Ergür, Gao, Hetterich & Rolvien,
    arXiv 1906.05757, Theorem 1.1, with Poisson generating functions)

        rank / n_in → 1 − max_{α ∈ [0, 1]} Φ(α),
        Φ(α) = exp(−d e^{−k(1−α)}) − (d/k)[1 − e^{−k(1−α)}(1 + k(1−α))],

    maximised on a 2001-point grid refined by a bounded scalar search. Expected counts of
    non-empty rows/columns give the elementary upper bound. The tests compare both with
    numpy ranks of simulated matrices.
    """
    rho = float(density_array(density))
    for name, n in (("n_out", n_out), ("n_in", n_in)):
        n = positive_int(n, name)
    d = rho * n_out  # mean column degree
    k = rho * n_in  # mean row degree

    def phi(alpha: np.ndarray) -> np.ndarray:
        beta = 1.0 - alpha
        e = np.exp(-k * beta)
        return np.exp(-d * e) - (d / k) * (1.0 - e * (1.0 + k * beta))

    grid = np.linspace(0.0, 1.0, 2001)
    vals = phi(grid)
    i = int(np.argmax(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = optimize.minimize_scalar(
        lambda a: -float(phi(np.array(a))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-12},
    )
    best = max(float(vals[i]), -float(res.fun))
    rank = min(max(n_in * (1.0 - best), 0.0), float(min(n_in, n_out)))
    rows = n_out * -math.expm1(n_in * math.log1p(-rho)) if rho < 1 else float(n_out)
    cols = n_in * -math.expm1(n_out * math.log1p(-rho)) if rho < 1 else float(n_in)
    return SparseRank(
        expected_rank=rank,
        nonempty_rows=rows,
        nonempty_cols=cols,
        bound=min(rows, cols, float(n_out), float(n_in)),
        full_rank=min(n_in, n_out),
    )
