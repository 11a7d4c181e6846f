"""Linear and convolutional layers: forward moments, backward g, weight-gradient norms.

A layer h(o, p) = Σ_{i,t} w(o, i, t) x(i, s·p + d·t − pad) + b(o) with independent,
sign-symmetric weights of second moment ``w2`` (the squared *effective* weight: masks and
measured values enter as they are) gives, exactly in expectation over the weights
(Poole et al. 2016, arXiv 1606.05340, eq. 3; per position with zero padding, Xiao et al.
2018, arXiv 1806.05393, §2.2):

* q(o, p)   = Σ_{i,t valid at p} w2(o,i,t) q_in(i, s·p + d·t − pad) + b2(o);
* cross moments of two positions or samples propagate along the same tap (E[w w′] = 0
  for different weights), so cov_X(o) = Σ_{i,t} w2(o,i,t) f_X(t) cov_X(i) + b2(o), with
  f_X(t) the fraction of the averaged pairs at which tap t reads data at both ends:
  n_t(n_t − 1)/(P(P − 1)) for position pairs, (n_t/P)² for cross-sample pairs and n_t/P
  for same-position pairs (n_t = output positions where tap t is valid, P = all);
* the mean is the signed bias b (0 without one): the weight part has zero mean.

Quenched means (``w``, the signed weights, ``w2 = w²``): for the network's own weights the
output mean is Σ_{i,t} w(o,i,t) μ_in(i, ·) + b(o) exactly (linearity of the expectation
over inputs), the same zero-padded map as q with w in place of w2; only the fluctuations
go sign-averaged, the record's centred part (:meth:`Moments.centred`: q − μ², the cross
moments less the pair averages of the means) through the rules above, and the mapped
means are added back (:meth:`Moments.plus_mean`). The sign average would replace each
channel's frozen offset Σ_i w_oi μ_i by its mean square, a relative error ≈ √(2/C) per
layer that compounds over depth where channel means are large (ReLU networks without
batch statistics). Neglected: covariances between input channels, and the shared input
noise that overlapping windows read through different taps (both of zero sign average).

Backward (Schoenholz et al. 2017, arXiv 1611.01232, §3, gradient independence): the
transpose, g_in(i, r) = Σ_{o,t: r = s·p + d·t − pad} w2(o,i,t) g(o, p), borders included.
Weight gradient of one sample: E[(∂L/∂w_{oit})²] = Σ_p g(o,p) q_in(i, s·p + d·t − pad)
(δ and x independent, δ uncorrelated across positions).

Cost and the rank-1 path: the exact map costs C_out·(C_in/groups)·k·n (n = position
classes of the output, see :mod:`~sigprop.theory.propagation.grid`). Beyond ``budget``
multiply-adds the input map is factorised q_in(i, p) ≈ a(i) f(p) with a the channel
means and f the channel-summed profile (both marginals exact; exact when q_in is a
product, e.g. position-independent), which costs C_out·C_in·k + C_out·k·n. The backward
map and the weight gradient factorise the gradient map g(o, p) the same way. A quenched
mean map is signed, and its factorisation (the sign-weighted profile) is poor where the
channels' border profiles differ: it takes the exact path up to ``MEAN_BUDGET_FACTOR``
times the budget.
"""

from __future__ import annotations

import numpy as np

from sigprop.theory.propagation import grid as G
from sigprop.theory.propagation.records import Grad, Moments, pair_models
from sigprop.theory.propagation.weights import (
    bias_terms,
    check_signed,
    kept_mask,
    kept_only,
    kept_sum,
    w2_array,
)
from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "DEFAULT_BUDGET",
    "linear",
    "linear_backward",
    "linear_weight_grad",
    "conv",
    "conv_backward",
    "conv_weight_grad",
    "conv_geometry",
]

#: multiply-adds above which a conv uses the rank-1 factorisation (a few ms here)
DEFAULT_BUDGET = 1e7
#: the quenched mean map's budget, in units of ``budget``: a signed map's rank-1
#: factorisation is poor where the channels' border profiles differ (eight 512-channel
#: 3x3 convs on a 4x4 map: q off by 104% with it, by 1% exact)
MEAN_BUDGET_FACTOR = 10.0


# ------------------------------------------------------------------------------ checks
# ------------------------------------------------------------------------------ linear
def linear(m: Moments, w2, b2=None, b=None, w=None) -> Moments:
    """Dense layer on the channel axis at every position: q = w2 @ q_in + b2 (exact); with
    the signed weights ``w`` the means are mapped by them (module doc, quenched means)."""
    w2 = w2_array(w2, 2)
    c_out, c_in = w2.shape
    if c_in != m.channels:
        raise InvalidInput(f"linear expects {c_in} input channels, the record has {m.channels}")
    if w is not None:
        _, b = bias_terms(c_out, b2, b)
        n = m.mean_cls.shape[1:]
        mean = (np.asarray(check_signed(w, w2)) @ m.mean_cls.reshape(c_in, -1)).reshape(
            (c_out,) + n
        )
        return linear(m.centred(), w2).plus_mean(mean + b.reshape((-1,) + (1,) * len(n)))
    b2, b = bias_terms(c_out, b2, b)
    n = m.q_cls.shape[1:]
    q = (w2 @ m.q_cls.reshape(c_in, -1)).reshape((c_out,) + n) + b2.reshape((-1,) + (1,) * len(n))
    cross = m.map_cross(lambda k, v: w2 @ v + b2)
    mean = np.broadcast_to(b.reshape((-1,) + (1,) * len(n)), q.shape)
    return Moments(m.grid, q, mean, **cross)


def linear_backward(m: Moments, g: Grad, w2) -> Grad:
    """g_in = w2ᵀ g per position; the cross moments the same way."""
    w2 = w2_array(w2, 2)
    n = g.g_cls.shape[1:]
    gin = (w2.T @ g.g_cls.reshape(w2.shape[0], -1)).reshape((w2.shape[1],) + n)
    return Grad(g.grid, gin, w2.T @ g.g_pos, w2.T @ g.g_indep)


def _batch_cross(g: Grad, m: Moments, pairs_pos, pairs_ind, batch_size: int):
    """Per (o, i): the cross terms of E‖Σ_b Σ_p δ x‖²/B beyond the diagonal,
    pairs_pos·g_pos(o) cov_pos(i) + (B − 1)·pairs_ind·g_indep(o) cov_indep(i)."""
    b = positive_int(batch_size, "batch_size")
    return pairs_pos * np.outer(g.g_pos, m.cov_pos) + (b - 1) * pairs_ind * np.outer(
        g.g_indep, m.cov_indep
    )


def linear_weight_grad(
    m: Moments, g: Grad, w2, mask=None, per_weight: bool = False, batch_size: int = 1
):
    """E‖∇_W L ⊙ M‖²/B for the batch loss L = Σ_b L_b:
    Σ_kept [Σ_p g(o,p) q(i,p) + P(P − 1) g_pos cov_pos + (B − 1) P² g_indep cov_indep]
    (δ independent of x; with B = 1 the gradient of one sample)."""
    w2 = w2_array(w2, 2)
    mask = kept_mask(mask, w2)
    grid, maps = G.refine_grids([g.grid, m.grid])
    gg = G.take(g.g_cls, maps[0]).reshape(g.channels, -1)
    qq = G.take(m.q_cls, maps[1]).reshape(m.channels, -1)
    p = float(np.prod([ax.length for ax in grid])) if grid else 1.0
    a = gg * G.class_weights(grid).reshape(-1) * p
    if per_weight:
        per = a @ qq.T + _batch_cross(g, m, p * (p - 1), p * p, batch_size)
        return kept_only(mask, per)
    # Σ_oi M_oi (A Qᵀ + u vᵀ + u′ v′ᵀ)_oi = Σ A ⊙ (M Q) + uᵀ M v + u′ᵀ M v′: one product with
    # the mask, no C_out × C_in temporaries (VGG's 25088 × 4096 classifier)
    b = positive_int(batch_size, "batch_size")
    total = float(np.sum(a * kept_sum(mask, qq)))
    total += p * (p - 1) * float(np.sum(g.g_pos * kept_sum(mask, m.cov_pos)))
    total += (b - 1) * p * p * float(np.sum(g.g_indep * kept_sum(mask, m.cov_indep)))
    return total


# ------------------------------------------------------------------------------ conv
class _Geometry:
    """Per-dimension tap tables of one conv/pool window op."""

    def __init__(self, spatial, kernel, stride, padding, dilation, ceil_mode=False):
        n = len(spatial)
        self.kernel = G.int_tuple(kernel, n, "kernel", 1)
        self.stride = G.int_tuple(stride, n, "stride", 1)
        self.padding = G.int_tuple(padding, n, "padding", 0)
        self.dilation = G.int_tuple(dilation, n, "dilation", 1)
        self.idx = [
            G.tap_index(L, k, s, p, d, ceil_mode)
            for L, k, s, p, d in zip(spatial, self.kernel, self.stride, self.padding, self.dilation)
        ]
        self.spatial_in = tuple(int(s) for s in spatial)
        self.spatial_out = tuple(ix.shape[1] for ix in self.idx)
        self.taps = int(np.prod(self.kernel))

    def tap_counts(self) -> np.ndarray:
        """n_t: output positions at which tap t reads data (flattened, C order)."""
        nt = np.ones(())
        for ix in self.idx:
            nt = np.multiply.outer(nt, G.tap_counts(ix))
        return nt.reshape(-1)

    def tap_fractions(self) -> dict[str, np.ndarray]:
        """f_X(t) for the cross moments (flattened over taps, C-order of the kernel)."""
        nt = self.tap_counts()
        p = float(np.prod(self.spatial_out))
        pos = nt * (nt - 1) / (p * (p - 1)) if p > 1 else nt / p
        return {"cov_pos": pos, "cov_indep": (nt / p) ** 2, "cov_pair": nt / p, "cov_pair_pos": pos}


def conv_geometry(spatial, kernel, stride=1, padding=0, dilation=1) -> tuple[int, ...]:
    """Output spatial shape of a conv (torch's arithmetic)."""
    return _Geometry(spatial, kernel, stride, padding, dilation).spatial_out


def _gather(values: np.ndarray, tables) -> np.ndarray:
    """values (C, *n) with a zero 'padding' class appended per dim, read through the
    per-dim (k_d, m_d) tables → (C, k_1..k_D, m_1..m_D)."""
    c = values.shape[0]
    padded = np.pad(values, [(0, 0)] + [(0, 1)] * (values.ndim - 1))
    d = len(tables)
    out = padded
    for j, tab in enumerate(tables):
        out = np.take(out, tab, axis=1 + 2 * j)  # axis (1+2j) becomes (k_j, m_j)
    # axes are now (C, k1, m1, k2, m2, ...): reorder to (C, k..., m...)
    order = [0] + [1 + 2 * j for j in range(d)] + [2 + 2 * j for j in range(d)]
    return out.transpose(order).reshape((c,) + tuple(t.shape[0] for t in tables) + out.shape[2::2])


def _grouped(w2: np.ndarray, groups: int, x: np.ndarray, transpose: bool) -> np.ndarray:
    """Σ over (input channel, tap) of w2 (forward) or over (output channel, tap) (transpose).

    w2: (C_out, C_in/g, K); x: (C_in, K, M) forward or (C_out, K, M) transposed.
    """
    c_out, cig, k = w2.shape
    cog = c_out // groups
    m = x.shape[-1]
    w = w2.reshape(groups, cog, cig, k)
    if not transpose:
        xx = x.reshape(groups, cig * k, m)
        return np.matmul(w.reshape(groups, cog, cig * k), xx).reshape(c_out, m)
    xx = x.reshape(groups, cog * k, m)
    wt = w.transpose(0, 2, 1, 3).reshape(groups, cig, cog * k)
    return np.matmul(wt, xx).reshape(groups * cig, m)


def _rank1(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values (C, *n) ≈ a(c) f(n): a the weighted channel means, f the channel-summed
    profile normalised to weighted mean 1 (both marginals exact)."""
    a = G.wsum(values, weights)
    tot = float(np.sum(a))
    f = values.sum(axis=0) / tot if tot > 0 else np.ones(values.shape[1:])
    return a, f


def _check_conv(m_channels, w2, groups, spatial):
    w2 = w2_array(w2, 2 + len(spatial))
    groups = int(groups)
    c_out, cig = w2.shape[:2]
    if groups < 1 or c_out % groups or cig * groups != m_channels:
        raise InvalidInput(
            f"conv weight {w2.shape} with groups={groups} does not fit {m_channels} input channels"
        )
    return w2, groups


def conv(
    m: Moments,
    w2,
    b2=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    b=None,
    budget: float = DEFAULT_BUDGET,
    w=None,
) -> Moments:
    """Zero-padded convolution over the spatial dims of the record (see module doc); with
    the signed weights ``w`` the mean maps are convolved with them (quenched means)."""
    if not m.grid:
        raise InvalidInput("conv needs a record with spatial dimensions")
    w2, groups = _check_conv(m.channels, w2, groups, m.spatial)
    c_out = w2.shape[0]
    geo = _Geometry(m.spatial, w2.shape[2:], stride, padding, dilation)
    axes, tables = zip(*(G.forward_table(ax, ix) for ax, ix in zip(m.grid, geo.idx)))
    n_out = tuple(ax.n for ax in axes)
    if w is not None:
        _, b = bias_terms(c_out, b2, b)
        wk = np.asarray(check_signed(w, w2)).reshape(c_out, w2.shape[1], geo.taps)
        mean = _tap_map(
            m.mean_cls, m.weights, wk, groups, tables, MEAN_BUDGET_FACTOR * budget, signed=True
        )
        out = conv(m.centred(), w2, None, stride, padding, dilation, groups, budget=budget)
        bias = b.reshape((-1,) + (1,) * len(n_out))
        return out.plus_mean(mean.reshape((c_out,) + n_out) + bias)
    b2, b = bias_terms(c_out, b2, b)
    wk = w2.reshape(c_out, w2.shape[1], geo.taps)
    q = _tap_map(m.q_cls, m.weights, wk, groups, tables, budget)
    q = q.reshape((c_out,) + n_out) + b2.reshape((-1,) + (1,) * len(n_out))
    cross = _conv_cross(m, geo, wk, groups, b2)
    mean = np.broadcast_to(b.reshape((-1,) + (1,) * len(n_out)), q.shape)
    return Moments(axes, np.maximum(q, 0.0), mean, **cross)


def _tap_map(values, weights, wk, groups: int, tables, budget: float, signed: bool = False):
    """Σ_{i,t valid} wk(o, i, t) values(i, p + t) per output class, (C_out, n_out): exact
    within ``budget`` multiply-adds, else with values ≈ a(i) f(p) (:func:`_rank1`; for a
    signed map f is the sign-weighted profile Σ_i sgn(a_i) values(i, p) / Σ_i |a_i|)."""
    c_out, cig, taps = wk.shape
    mcount = int(np.prod([t.shape[1] for t in tables]))
    if float(c_out) * cig * taps * mcount <= budget:
        x = _gather(values, tables).reshape(values.shape[0], taps, mcount)
        return _grouped(wk, groups, x, transpose=False)
    if signed:
        a = G.wsum(values, weights)
        tot = float(np.sum(np.abs(a)))
        f = np.tensordot(np.sign(a), values, 1) / tot if tot > 0 else np.ones(values.shape[1:])
    else:
        a, f = _rank1(values, weights)
    return _tap_sums(wk, groups, a) @ _gather(f[None], tables).reshape(taps, mcount)


def _conv_cross(m: Moments, geo: _Geometry, wk: np.ndarray, groups: int, b2) -> dict:
    """cov_X of the output: Σ_{i,t} w2(o,i,t) T_X(i,t) + b2(o), T_X the average over the
    output pairs of K_X(p + t, p′ + t) with both taps valid, under the position model of
    :func:`~sigprop.theory.propagation.records.pair_model` (exact for
    position-independent maps, and for maps whose cross moments factorise)."""
    counts = []
    for ax, ix in zip(m.grid, geo.idx):
        cnt = np.zeros((ix.shape[0], ax.n))
        for t in range(ix.shape[0]):
            ok = ix[t] >= 0
            np.add.at(cnt[t], ax.cls[ix[t, ok]], 1.0)
        counts.append(cnt[:, :, None])
    p = float(np.prod(geo.spatial_out))

    def tap_sum(values):  # Σ over output positions valid at tap t of values(p + t)
        return _tap_contract(values, counts).reshape(values.shape[0], geo.taps)

    mu, sig, rhos = pair_models(m)
    c_in = m.channels
    sums = tap_sum(np.concatenate([mu, sig, mu * mu, sig * sig]))
    s_mu, s_sig, s_mumu, s_sigsig = (sums[i * c_in : (i + 1) * c_in] for i in range(4))
    c_out, cig, kk = wk.shape
    w = wk.reshape(groups, c_out // groups, cig, kk)

    def term(k, _):
        r = rhos[k][:, None]
        if k == "cov_pair":
            t_x = (s_mumu + r * s_sigsig) / p
        elif k == "cov_indep":
            t_x = (s_mu * s_mu + r * s_sig * s_sig) / (p * p)
        elif p > 1:
            t_x = (s_mu * s_mu - s_mumu + r * (s_sig * s_sig - s_sigsig)) / (p * (p - 1))
        else:
            t_x = s_mu * s_mu + r * s_sig * s_sig
        flat = w.reshape(groups, c_out // groups, cig * kk)
        return (flat @ t_x.reshape(groups, cig * kk, 1)).reshape(c_out) + b2

    return m.map_cross(term)


def _tap_sums(wk: np.ndarray, groups: int, a: np.ndarray) -> np.ndarray:
    """A(o, t) = Σ_{i in o's group} wk(o, i, t) a(i), shape (C_out, K)."""
    c_out, cig, k = wk.shape
    cog = c_out // groups
    w = wk.reshape(groups, cog, cig, k)
    # a batched product (BLAS), not einsum's loop: 2x faster on a 512x512x3x3 layer
    return (a.reshape(groups, 1, 1, cig) @ w).reshape(c_out, k)


def conv_backward(
    m: Moments,
    g: Grad,
    w2,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    budget: float = DEFAULT_BUDGET,
) -> Grad:
    """Transposed conv of g with w2, borders included (see module doc)."""
    w2, groups = _check_conv(m.channels, w2, groups, m.spatial)
    geo = _Geometry(m.spatial, w2.shape[2:], stride, padding, dilation)
    if tuple(ax.length for ax in g.grid) != geo.spatial_out:
        raise InvalidInput("gradient shape does not match the conv output")
    axes, tables = zip(
        *(G.backward_table(ax, ix, L) for ax, ix, L in zip(g.grid, geo.idx, geo.spatial_in))
    )
    n_in = tuple(ax.n for ax in axes)
    mcount = int(np.prod(n_in))
    c_out = w2.shape[0]
    wk = w2.reshape(c_out, w2.shape[1], geo.taps)
    cost = float(c_out) * w2.shape[1] * geo.taps * mcount
    if cost <= budget:
        y = _gather(g.g_cls, tables).reshape(c_out, geo.taps, mcount)
        out = _grouped(wk, groups, y, transpose=True)
    else:
        a, f = _rank1(g.g_cls, G.class_weights(g.grid))
        cig = w2.shape[1]
        cog = c_out // groups
        amat = (a.reshape(groups, 1, cog) @ wk.reshape(groups, cog, cig * geo.taps)).reshape(
            groups * cig, geo.taps
        )
        out = amat @ _gather(f[None], tables).reshape(geo.taps, mcount)
    nt = geo.tap_counts()
    pin = float(np.prod(geo.spatial_in))
    fpos = nt * (nt - 1) / (pin * (pin - 1)) if pin > 1 else nt / pin
    cig = w2.shape[1]
    gx = []
    for f_x, gv in zip((fpos, (nt / pin) ** 2), (g.g_pos, g.g_indep)):
        wt = (wk @ f_x).reshape(groups, c_out // groups, cig)  # Σ_t, no temporary of wk's size
        gx.append((gv.reshape(groups, 1, -1) @ wt).reshape(-1))
    return Grad(axes, np.maximum(out, 0.0).reshape((m.channels,) + n_in), gx[0], gx[1])


def conv_weight_grad(
    m: Moments,
    g: Grad,
    w2,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    mask=None,
    per_weight: bool = False,
    budget: float = DEFAULT_BUDGET,
    batch_size: int = 1,
):
    """E‖∇_W L ⊙ M‖²/B for the batch loss L = Σ_b L_b: per weight
    Σ_p g(o,p) q_in(i, s·p + d·t − pad) + n_t(n_t − 1) g_pos(o) cov_pos(i)
    + (B − 1) n_t² g_indep(o) cov_indep(i) (δ independent of x; n_t output positions
    where tap t reads data; B = 1: one sample's gradient).

    ``mask`` defaults to the kept pattern w2 > 0. With ``per_weight`` returns the array
    E[(∂L/∂w)²]·M of the weight's shape instead of its sum. Beyond ``budget`` the
    gradient map is factorised g(o, p) ≈ a(o) f(p) (channels of x stay exact).
    """
    w2, groups = _check_conv(m.channels, w2, groups, m.spatial)
    mask = kept_mask(mask, w2)
    geo = _Geometry(m.spatial, w2.shape[2:], stride, padding, dilation)
    counts = [G.count_matrices(ga, qa, ix) for ga, qa, ix in zip(g.grid, m.grid, geo.idx)]
    c_out, cig = w2.shape[:2]
    cog = c_out // groups
    ng, nq = int(np.prod(g.g_cls.shape[1:])), int(np.prod(m.q_cls.shape[1:]))
    nq1 = m.q_cls.shape[1] if m.grid else 1
    cost = float(geo.taps) * c_out * (ng * nq1 + cig * nq)
    exact = cost <= budget or per_weight
    if exact:
        source = g.g_cls
    else:
        ag, source = _rank1(g.g_cls, G.class_weights(g.grid))
        source = source[None]
    qq = m.q_cls.reshape(groups, cig, -1)
    h = _tap_contract(source, counts)  # (C_out or 1, K, n_q): Σ_p src(p) [p + t has class b]
    nt = geo.tap_counts()
    bsz = positive_int(batch_size, "batch_size")
    gp, gi = g.g_pos.reshape(groups, cog), g.g_indep.reshape(groups, cog)
    cp, ci = m.cov_pos.reshape(groups, cig), m.cov_indep.reshape(groups, cig)
    if mask is None and not per_weight:
        # every weight kept: the sums over (o, i, t) factorise per group, no mask of ones
        cross = float(np.sum(gp.sum(axis=1) * cp.sum(axis=1))) * float(np.sum(nt * (nt - 1)))
        cross += (bsz - 1) * float(np.sum(gi.sum(axis=1) * ci.sum(axis=1))) * float(np.sum(nt * nt))
        qsum = qq.sum(axis=1)  # (g, b): Σ over a group's input channels
        if exact:
            hsum = h.reshape(groups, cog, geo.taps, -1).sum(axis=(1, 2))  # (g, b)
        else:  # h[0] is the factor f(p) of every output channel, ag(o) its weight
            hsum = ag.reshape(groups, cog).sum(axis=1)[:, None] * h[0].sum(axis=0)
        return float(np.sum(hsum * qsum)) + cross
    mk = (np.ones(w2.shape) if mask is None else mask).reshape(groups, cog, cig, geo.taps)
    if per_weight:
        gt = np.einsum("goKb,gcb->gocK", h.reshape(groups, cog, geo.taps, -1), qq)
        gt = gt + np.einsum("go,gc,K->gocK", gp, cp, nt * (nt - 1))
        gt = gt + (bsz - 1) * np.einsum("go,gc,K->gocK", gi, ci, nt * nt)
        return (gt * mk).reshape(w2.shape)
    # totals without forming per-weight arrays: one pass over the mask per term
    cross = float(np.einsum("go,gocK,gc,K->", gp, mk, cp, nt * (nt - 1), optimize=True))
    cross += (bsz - 1) * float(np.einsum("go,gocK,gc,K->", gi, mk, ci, nt * nt, optimize=True))
    if exact:
        hh = h.reshape(groups, cog, geo.taps, -1)
        return float(np.einsum("goKb,gocK,gcb->", hh, mk, qq, optimize=True)) + cross
    ht = np.einsum("Kb,gcb->gcK", h[0], qq)  # Σ_p f(p) q(i, p + t)
    diag = float(np.einsum("go,gocK,gcK->", ag.reshape(groups, cog), mk, ht, optimize=True))
    return diag + cross


def _tap_contract(source: np.ndarray, counts) -> np.ndarray:
    """h[o, t, b] = Σ_a source[o, a] Π_d counts_d[t_d, a_d, b_d], taps flattened in C order."""
    h = source
    for d, cm in enumerate(counts):
        # axes (o, t_0..t_{d-1}, a_d..a_{D-1}, b_0..b_{d-1}): contract a_d with cm's axis 1,
        # which appends (t_d, b_d); move t_d next to the other tap axes
        h = np.moveaxis(np.tensordot(h, cm, axes=([1 + d], [1])), -2, 1 + d)
    taps = int(np.prod([cm.shape[0] for cm in counts]))
    return h.reshape(h.shape[0], taps, -1)
