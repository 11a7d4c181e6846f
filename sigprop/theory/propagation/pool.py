"""Pooling: average (incl. adaptive) and max pooling with borders.

Average pooling is linear: out(p) = (1/D_p) Σ_{j∈w(p)} x(j) with D_p torch's divisor
(``count_include_pad``) and the window's positions j. Within a window and across windows
two distinct positions are taken to be correlated like the record's far-field pair
(cov_pos), the same position like itself (q): this is exact for inputs whose distinct
positions share one covariance (iid pixels, and every layer of a zero-padded CNN until a
first pooling), and an approximation (near-field correlations neglected) after that.
Overlapping windows are counted exactly: Σ_{p≠p′} over shared positions j of
(q(j) − cov_pos)/(D_p D_p′) = Σ_j (q(j) − cov_pos)(A_j² − B_j), A_j = Σ_{p∋j} 1/D_p,
B_j = Σ_{p∋j} 1/D_p², both separable over the spatial dims.

Max pooling (Gaussian input: the translator commutes a monotone activation past it) models
each window as n equicorrelated Gaussians with the record's mean μ, variance v and centred
correlation ρ = (cov_pos − μ²)/v: x_j = μ + √(vρ) z₀ + √(v(1 − ρ)) z_j, so
max = μ + √(vρ) z₀ + √(v(1 − ρ)) M_n with M_n the maximum of n iid standard normals
(moments from quadrature of n ϕ(z)Φ(z)^{n−1}). Then E[max], E[max²] and the covariance of
two windows, E[max]² + vρ, are exact in the model; two samples share only their common
component (E[max]² + cov_indep − μ²); the input pair's same-window covariance adds
v(1 − ρ) Cov(M_n, M_n′) for pairs of maxima of n iid pairs of correlation λ, computed by
Hoeffding's identity Cov = ∫∫ Φ₂(x, y; λ)ⁿ − Φ(x)ⁿΦ(y)ⁿ dx dy (Hoeffding 1940) on a
Chebyshev table in λ. Windows are the valid (non-padded) positions; borders use the
window's average v. Where the entries of a window differ in mean (a mean map that varies
with position: borders, or a network's own quenched means), E[max] and E[max²] are those
of max_j (μ_j + √(v(1 − ρ)) z_j) by quadrature, each entry with its own mean (the pair's
same-window covariance and the backward's uniform argmax keep the equal-mean model).

Backward: avg, g_in(j) = Σ_{p∋j} g(p)/D_p²; max, g_in(j) = Σ_{p∋j} g(p)/n_p (the argmax
is uniform over the window in the model, and independent between windows). Gradient
cross moments: two input positions share the gradient of every window pair that covers
them (average: Σ_{j≠j′} A_j A_j′ g_pos plus the same-window term (g − g_pos)/D²; max: the
same without pairs inside one window), so a global average pool turns an uncorrelated
output gradient into g_pos = g/P² at every input.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import special

from sigprop.theory import gaussian
from sigprop.theory.propagation import grid as G
from sigprop.theory.propagation.pwl import bvn_upper
from sigprop.theory.propagation.records import Grad, Moments, pair_average, pair_models
from sigprop.validate import InvalidInput

__all__ = [
    "avg_pool",
    "avg_pool_backward",
    "adaptive_avg_pool",
    "adaptive_avg_pool_backward",
    "max_pool",
    "max_pool_backward",
    "max_moments",
    "max_pair_cov",
]


class _Windows:
    """Per-dim window tables (k_d, L_out_d) and divisors (L_out_d,)."""

    def __init__(self, spatial, idx, div):
        self.spatial_in = tuple(spatial)
        self.idx = idx
        self.div = [np.asarray(d, dtype=float) for d in div]
        self.spatial_out = tuple(ix.shape[1] for ix in idx)

    @classmethod
    def regular(cls, spatial, kernel, stride, padding, dilation, ceil_mode, count_pad):
        n = len(spatial)
        k = G.int_tuple(kernel, n, "kernel", 1)
        s = G.int_tuple(k if stride is None else stride, n, "stride", 1)
        p = G.int_tuple(padding, n, "padding", 0)
        d = G.int_tuple(dilation, n, "dilation", 1)
        if any(2 * pp > kk for pp, kk in zip(p, k)):
            raise InvalidInput("padding must be at most half the kernel size (torch's rule)")
        idx, div = [], []
        for L, kk, ss, pp, dd in zip(spatial, k, s, p, d):
            ix = G.tap_index(L, kk, ss, pp, dd, ceil_mode)
            start = np.arange(ix.shape[1]) * ss - pp
            if count_pad:
                div.append(np.minimum(start + (kk - 1) * dd + 1, L + pp) - start)
            else:
                div.append((ix >= 0).sum(axis=0))
            idx.append(ix)
        return cls(spatial, idx, div)

    @classmethod
    def adaptive(cls, spatial, output_size):
        n = len(spatial)
        out = [L if o is None else int(o) for L, o in zip(spatial, _out_sizes(output_size, n))]
        if any(o < 1 for o in out):
            raise InvalidInput(f"output_size must be positive, got {output_size!r}")
        idx = [G.window_index(L, o) for L, o in zip(spatial, out)]
        return cls(spatial, idx, [(ix >= 0).sum(axis=0) for ix in idx])

    def forward(self, grid):
        """Output axes (classes also keyed by the divisor), tap tables, and per output
        class: valid count n, divisor D (both (*n_out) arrays)."""
        axes, tables, nval, dval = [], [], [], []
        for ax, ix, dv in zip(grid, self.idx, self.div):
            keys = np.where(ix >= 0, ax.cls[np.maximum(ix, 0)], ax.n)
            oax = G.axis_from_keys(np.concatenate([keys.T, dv[:, None].astype(np.int64)], 1))
            tab = keys[:, oax.rep]
            axes.append(oax)
            tables.append(tab)
            nval.append((tab < ax.n).sum(axis=0).astype(float))
            dval.append(dv[oax.rep])
        return tuple(axes), tables, _outer(nval), _outer(dval)

    def transpose(self, g: Grad, weight_axes) -> Grad:
        """Σ_{p∋j} g(p) w(p) with w separable, given per dim per output index: per dim the
        (L_in, n_g) matrix T[j, a] = Σ_{t, y: tap t of y reads j, y in class a} w(y), whose
        distinct rows are the input classes (windows may share positions at any tap)."""
        vals = g.g_cls
        axes = []
        for d, (ax, ix, w, length) in enumerate(
            zip(g.grid, self.idx, weight_axes, self.spatial_in)
        ):
            t_mat = np.zeros((length, ax.n))
            ys = np.broadcast_to(np.arange(ix.shape[1]), ix.shape)
            ok = ix >= 0
            np.add.at(t_mat, (ix[ok], ax.cls[ys[ok]]), np.broadcast_to(w, ix.shape)[ok])
            new = G.axis_from_keys(t_mat)
            axes.append(new)
            vals = np.moveaxis(np.tensordot(vals, t_mat[new.rep], axes=([1 + d], [1])), -1, 1 + d)
        return Grad(tuple(axes), vals)

    def coverage(self, weight_axes) -> tuple[float, float]:
        """Σ_j A_j and Σ_j A_j² over input positions, A_j = Σ_{windows p ∋ j} w(p)."""
        s1, s2 = 1.0, 1.0
        for ix, w, length in zip(self.idx, weight_axes, self.spatial_in):
            a = np.zeros(length)
            ok = ix >= 0
            np.add.at(a, ix[ok], np.broadcast_to(w, ix.shape)[ok])
            s1, s2 = s1 * float(np.sum(a)), s2 * float(np.sum(a * a))
        return s1, s2


def _cross_back(win: _Windows, g: Grad, gin: Grad, wts, same_window) -> Grad:
    """Gradient cross moments through a pooling transpose (module doc): δ_in(j) =
    Σ_{p∋j} w(p) δ(p) with ``same_window`` = Σ_p Σ_{j≠j′∈p} w_j w_j′ E[δ_p²]-type term
    already reduced to a per-channel array."""
    p_in = float(np.prod(win.spatial_in))
    p_out = float(np.prod(win.spatial_out))
    s1, s2 = win.coverage(wts)
    gpos_out = g.g_pos if p_out > 1 else np.zeros_like(g.g_pos)
    if p_in > 1:
        gpos = ((s1 * s1 - s2) * gpos_out + same_window) / (p_in * (p_in - 1))
    else:
        gpos = gin.g_channel()
    gind = (s1 / p_in) ** 2 * g.g_indep
    return gin.replace(g_pos=gpos, g_indep=gind)


def _outer(vectors) -> np.ndarray:
    out = np.ones(())
    for v in vectors:
        out = np.multiply.outer(out, v)
    return out


def _out_sizes(output_size, n):
    if output_size is None or np.isscalar(output_size):
        return (output_size,) * n
    sizes = tuple(output_size)
    if len(sizes) != n:
        raise InvalidInput(f"output_size needs {n} entries, got {output_size!r}")
    return sizes


def _taps(values: np.ndarray, tables):
    """Per tap of the window: ``values`` at its entry (C, *n_out), zero where the tap reads
    padding, and the entry's class index per dim (the padding class is the last)."""
    padded = np.pad(values, [(0, 0)] + [(0, 1)] * len(tables))
    for taps in np.ndindex(*[t.shape[0] for t in tables]):
        idx = [t[k] for t, k in zip(tables, taps)]
        yield G.take(padded, idx), [i < n - 1 for i, n in zip(idx, padded.shape[1:])]


def _window_sum(values: np.ndarray, tables) -> np.ndarray:
    total = 0.0
    for entry, _ in _taps(values, tables):
        total = total + entry
    return total


def _window_entries(values: np.ndarray, tables):
    """Per tap of the window, ``values`` at its entry: (T, C, *n_out), and whether the tap
    reads the map (not padding): (T, *n_out)."""
    entries, valid = [], []
    for entry, ok in _taps(values, tables):
        entries.append(entry)
        valid.append(functools.reduce(np.multiply.outer, ok))
    return np.stack(entries), np.stack(valid).astype(bool)


def _max_of_shifted(means, valid, s):
    """E[M], E[M²] for M = max_j (μ_j + s z_j) over a window's valid entries, z_j iid
    standard normal, per channel and window class: Σ_j E_z[(μ_j + s z)^r Π_{k≠j}
    Φ((μ_j − μ_k)/s + z)] by Gauss–Legendre panels over z (``theory.gaussian``); a window
    whose s is 0 takes max_j μ_j."""
    z, w = gaussian.quadrature_rule(1.0, ladder=False)
    live = s > 0
    ss = np.where(live, s, 1.0)
    mj = np.where(valid[:, None], means, -np.inf)
    e1 = np.zeros(s.shape)
    e2 = np.zeros(s.shape)
    for j in range(means.shape[0]):
        x = means[j][..., None] + ss[..., None] * z  # (C, *n, M)
        with np.errstate(invalid="ignore"):
            gap = (means[j] - mj) / ss  # (T, C, *n); -inf entries give +inf
        gap[j] = np.inf  # Φ(∞) = 1: entry j itself
        cdf = special.ndtr(gap[..., None] + z).prod(axis=0)
        weight = np.where(valid[j][None, ..., None], w * cdf, 0.0)  # (C, *n, M)
        e1 += np.sum(weight * x, axis=-1)
        e2 += np.sum(weight * x * x, axis=-1)
    top = mj.max(axis=0)
    return np.where(live, e1, top), np.where(live, e2, top * top)


# ------------------------------------------------------------------------------ average
def _avg(m: Moments, win: _Windows) -> Moments:
    if not m.grid:
        raise InvalidInput("pooling needs a record with spatial dimensions")
    axes, tables, nval, dval = win.forward(m.grid)
    nd = len(axes)
    pout = int(np.prod(win.spatial_out))
    mu, sig, rhos = pair_models(m)
    models = {k: (mu, sig, r) for k, r in rhos.items()}
    rpos = rhos["cov_pos"]

    def wsum(values):  # Σ over each output window of an input class array
        return _window_sum(values, tables)

    s_mu, s_sig = wsum(mu), wsum(sig)
    s_mumu, s_sigsig = wsum(mu * mu), wsum(sig * sig)
    d2 = dval * dval

    def within(r):  # Σ_{j≠j′ in a window} of μμ′ + r σσ′
        return s_mu * s_mu - s_mumu + _bcast(r, nd) * (s_sig * s_sig - s_sigsig)

    q = (wsum(m.q_cls) + within(rpos)) / d2
    mean = s_mu / dval
    # overlapping windows: Σ_{p≠p′} Σ_{j ∈ both} (K_same(j) − K_diff(j))/(D_p D_p′), with
    # A_j = Σ_{p∋j} 1/D_p, B_j = Σ_{p∋j} 1/D_p², both separable over dims
    sa2, sb = [], []
    for ax, ix, dv in zip(m.grid, win.idx, win.div):
        a = np.zeros(ax.length)
        b = np.zeros(ax.length)
        for t in range(ix.shape[0]):
            ok = ix[t] >= 0
            np.add.at(a, ix[t, ok], 1.0 / dv[ok])
            np.add.at(b, ix[t, ok], 1.0 / dv[ok] ** 2)
        sa2.append(np.bincount(ax.cls, a * a, ax.n))
        sb.append(np.bincount(ax.cls, b, ax.n))
    overlap_w = _outer(sa2) - _outer(sb)  # per input class Σ_j (A_j² − B_j)
    pairs = pout * (pout - 1) if pout > 1 else 1.0

    def term(k, _):
        _, _, r = models[k]
        if k == "cov_pair":  # same output position: the pair's own windows
            _, _, rpp = models["cov_pair_pos"]
            same = wsum(mu * mu + _bcast(r, nd) * sig * sig) + within(rpp)
            return _m_avg(same / d2, axes)
        mean_w, sig_w = s_mu / dval, s_sig / dval
        val = pair_average(k, mean_w, mean_w, axes) + r * pair_average(k, sig_w, sig_w, axes)
        if k == "cov_pos":
            val = val + G.wsum((m.q_cls - mu * mu - _bcast(r, nd) * sig * sig), overlap_w) / pairs
        elif k == "cov_pair_pos":
            _, _, rsame = models["cov_pair"]
            val = val + G.wsum(_bcast(rsame - r, nd) * sig * sig, overlap_w) / pairs
        return val

    return Moments(axes, np.maximum(q, 0.0), mean, **m.map_cross(term))


def _bcast(v: np.ndarray, nd: int) -> np.ndarray:
    return v.reshape((-1,) + (1,) * nd)


def _m_avg(values: np.ndarray, grid) -> np.ndarray:
    return G.wsum(values, G.class_weights(grid))


def avg_pool(m, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """``nn.AvgPoolNd`` (module doc)."""
    win = _Windows.regular(m.spatial, kernel, stride, padding, 1, ceil_mode, count_include_pad)
    return _avg(m, win)


def _avg_back(win: _Windows, g: Grad) -> Grad:
    gin = win.transpose(g, [1.0 / dv**2 for dv in win.div])
    # Σ_p Σ_{j≠j′ ∈ p} E[δ_p²] − g_pos)/D_p², separable: Π Σ n²/D² − Π Σ n/D²
    n = [(ix >= 0).sum(axis=0) for ix in win.idx]
    t1 = float(np.prod([np.sum(nd * nd / dv**2) for nd, dv in zip(n, win.div)]))
    t2 = float(np.prod([np.sum(nd / dv**2) for nd, dv in zip(n, win.div)]))
    p_out = float(np.prod(win.spatial_out))
    gpos_out = g.g_pos if p_out > 1 else np.zeros_like(g.g_pos)
    same = (g.g_channel() - gpos_out) * (t1 - t2)
    return _cross_back(win, g, gin, [1.0 / dv for dv in win.div], same)


def avg_pool_backward(
    m, g, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True
) -> Grad:
    win = _Windows.regular(m.spatial, kernel, stride, padding, 1, ceil_mode, count_include_pad)
    return _avg_back(win, g)


def adaptive_avg_pool(m: Moments, output_size) -> Moments:
    """``nn.AdaptiveAvgPoolNd`` (windows ⌊iL/out⌋ .. ⌈(i+1)L/out⌉)."""
    return _avg(m, _Windows.adaptive(m.spatial, output_size))


def adaptive_avg_pool_backward(m: Moments, g: Grad, output_size) -> Grad:
    return _avg_back(_Windows.adaptive(m.spatial, output_size), g)


# ------------------------------------------------------------------------------ max
@functools.lru_cache(maxsize=256)
def max_moments(n: int) -> tuple[float, float]:
    """(E[M_n], E[M_n²]) for the maximum of n iid standard normals."""
    n = int(n)
    if n < 1:
        raise InvalidInput("a window needs at least one element")
    if n == 1:
        return 0.0, 1.0
    dens = lambda z: n * special.ndtr(z) ** (n - 1)  # noqa: E731 - density ratio to ϕ
    e1 = float(gaussian.expect(lambda z: z * dens(z), 1.0))
    e2 = float(gaussian.expect(lambda z: z * z * dens(z), 1.0))
    return e1, e2


_LAM_NODES = 33
_LAM = np.cos(np.pi * (np.arange(_LAM_NODES) + 0.5) / _LAM_NODES)
_LAM_W = (-1.0) ** np.arange(_LAM_NODES) * np.sin(
    np.pi * (np.arange(_LAM_NODES) + 0.5) / _LAM_NODES
)


@functools.lru_cache(maxsize=64)
def _pair_cov_table(n: int) -> np.ndarray:
    x, w = gaussian.legendre_rule(96)
    x, w = 7.5 * x, 7.5 * w
    X, Y = np.meshgrid(x, x, indexing="ij")
    W = np.outer(w, w)
    fx = special.ndtr(X) ** n * special.ndtr(Y) ** n
    out = np.empty(_LAM_NODES)
    for i, lam in enumerate(_LAM):
        # P(M ≤ x, M′ ≤ y) = P(Z ≤ x, Z′ ≤ y)ⁿ = (1 − Φ(−x) − Φ(−y) + P(Z > x, Z′ > y))ⁿ
        joint = 1.0 - special.ndtr(-X) - special.ndtr(-Y) + bvn_upper(X, Y, lam)
        out[i] = np.sum(W * (np.clip(joint, 0.0, 1.0) ** n - fx))
    return out


def max_pair_cov(n: int, lam) -> np.ndarray:
    """Cov(M_n, M_n′) for maxima of n iid pairs of standard normals of correlation λ."""
    lam = np.clip(np.asarray(lam, dtype=float), -1.0, 1.0)
    e1, e2 = max_moments(n)
    if n == 1:
        return lam.copy()
    table = _pair_cov_table(int(n))
    diff = lam[..., None] - _LAM
    exact = diff == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        lw = _LAM_W / diff
    lw = np.where(exact.any(axis=-1, keepdims=True), exact.astype(float), lw)
    out = np.sum(lw * table, axis=-1) / np.sum(lw, axis=-1)
    return np.where(lam >= 1.0, e2 - e1 * e1, out)


def _max_params(m, kernel, stride, padding, dilation, ceil_mode):
    win = _Windows.regular(m.spatial, kernel, stride, padding, dilation, ceil_mode, False)
    return win


def max_pool(m: Moments, kernel, stride=None, padding=0, dilation=1, ceil_mode=False) -> Moments:
    """``nn.MaxPoolNd`` on Gaussian input (module doc)."""
    if not m.grid:
        raise InvalidInput("pooling needs a record with spatial dimensions")
    win = _max_params(m, kernel, stride, padding, dilation, ceil_mode)
    axes, tables, nval, _ = win.forward(m.grid)
    nd = len(axes)
    _, sig, rhos = pair_models(m)
    models = {k: (None, sig, r) for k, r in rhos.items()}
    rho = rhos["cov_pos"]
    rho = np.clip(rho, 0.0, 1.0)  # equicorrelation within a window needs ρ ≥ 0
    means, valid = _window_entries(m.mean_cls, tables)  # padding entries are 0
    mu_w = means.sum(axis=0) / nval
    v_w = _window_sum(sig * sig, tables) / nval
    s_w = np.sqrt(v_w)
    rb = _bcast(rho, nd)
    ns = np.unique(nval).astype(int)
    e1 = np.zeros(nval.shape)
    e2 = np.zeros(nval.shape)
    for n in ns:
        a, b = max_moments(int(n))
        e1 = np.where(nval == n, a, e1)
        e2 = np.where(nval == n, b, e2)
    sd = np.sqrt(v_w * (1.0 - rb))
    m1 = mu_w + sd * e1
    m2 = mu_w**2 + v_w * rb + 2 * mu_w * sd * e1 + v_w * (1.0 - rb) * e2
    vb = valid[:, None]
    spread = np.where(vb, means, -np.inf).max(0) - np.where(vb, means, np.inf).min(0)
    if np.any(spread > 1e-12 * (np.abs(mu_w) + s_w)):  # the window's entries differ in mean
        em, em2 = _max_of_shifted(means, valid, sd)
        m1, m2 = em, v_w * rb + em2

    def term(k, _):
        # two windows (or samples) share only the common component of their entries
        kk = "cov_pair_pos" if k == "cov_pair" else k
        r_shared = rho if k == "cov_pos" else models[kk][2]
        out = pair_average(k, m1, m1, axes) + r_shared * pair_average(k, s_w, s_w, axes)
        if k == "cov_pair":  # the pair's own window: maxima of correlated iid pairs
            r_same = models["cov_pair"][2]
            with np.errstate(divide="ignore", invalid="ignore"):
                lam = np.where(rho < 1, (r_same - r_shared) / (1.0 - rho), 0.0)
            w = G.class_weights(axes)
            vc = _m_avg(v_w, axes)
            cov_m = np.zeros(m.channels)
            for n in ns:
                frac = float(np.sum(w * (nval == n)))
                cov_m = cov_m + frac * max_pair_cov(int(n), lam)
            out = out + vc * (1.0 - rho) * cov_m
        return out

    return Moments(axes, np.maximum(m2, 0.0), m1, **m.map_cross(term))


def max_pool_backward(
    m: Moments, g: Grad, kernel, stride=None, padding=0, dilation=1, ceil_mode=False
) -> Grad:
    win = _max_params(m, kernel, stride, padding, dilation, ceil_mode)
    gin = win.transpose(g, [1.0 / dv for dv in win.div])
    # two positions of one window are never both its argmax: remove those pairs
    p_out = float(np.prod(win.spatial_out))
    gpos_out = g.g_pos if p_out > 1 else np.zeros_like(g.g_pos)
    n = [dv for dv in win.div]
    t = float(np.prod([np.sum(nd * nd / nd**2) for nd in n])) - float(
        np.prod([np.sum(nd / nd**2) for nd in n])
    )
    return _cross_back(win, g, gin, [1.0 / dv for dv in win.div], -gpos_out * t)
