"""Normalisation layers: BatchNorm (train and eval), LayerNorm, GroupNorm.

All three subtract the mean of a set of elements and divide by the set's standard
deviation: y = γ (x − m_A)/√(σ_A² + ε) + β. The rules centre the raw moments exactly
(E[(x − m_A)(x′ − m_A′)] = K − E[x m_A′] − E[x′ m_A] + E[m_A m_A′], with different channels
uncorrelated beyond their means, as in the mean field) and divide by E[σ_A²] + ε (exact for
the average of y² over the set when ε = 0; for individual cross moments E[x̃x̃′/σ²] ≈
E[x̃x̃′]/E[σ²], exact when the centred batch covariance is isotropic on its support).

* BatchNorm, train mode (Ioffe & Szegedy 2015, arXiv 1502.03167; mean field: Yang et al.
  2019, arXiv 1902.08129): the set is one channel over a batch of B samples and all P
  positions, N = B·P. E[m²] = (q̄ + (P − 1)cov_pos + (B − 1)P cov_indep)/N, the batch
  variance v = q̄ − E[m²]; output mean β, q = γ²(centred q)/(v + ε) + β², and the distinct
  batch members become anti-correlated: cov_indep → γ²(cov_indep − E[m²])/(v + ε) + β².
  (The input pair is taken as two batch members; its own O(1/N) share of the batch mean is
  neglected.)
* BatchNorm, eval mode: the affine map γ(x − μ_run)/√(σ²_run + ε) + β.
* LayerNorm (Ba et al. 2016, arXiv 1607.06450): the set is all channels at one position.
* GroupNorm (Wu & He 2018, arXiv 1803.08494): channels of one group × all positions.

Backward (Yang et al. 2019, §3: gradients through the batch statistics): with ŷ the
normalised set vector, δ_x = (γ/σ)(I − 11ᵀ/N − ŷŷᵀ/N)δ_y, a projection. For δ uncorrelated
across elements and independent of ŷ, E[δ_x,i²] = γ² E[1/σ²] Σ_j E[M_ij²] g_j
= γ² E[1/σ²] (g_i (1 − 2(1 + r_i)/N) + (ḡ + r_i·mean(r g))/N), r_i = E[ŷ_i²]; E[1/σ²] from
N σ² ≈ a χ²_ν (Satterthwaite, ν = (tr K̃)²/tr K̃²): (1/v)·ν/(ν − 2) (ν capped below at 4).
It is this 1/v with v the *centred* variance that makes deep BN chains explode
(ReLU: π/(π − 1) per layer at large B, Yang et al. 2019, Thm. 3.10).
"""

from __future__ import annotations

import numpy as np

from sigprop.theory.propagation import grid as G
from sigprop.theory.propagation.pointwise import affine, affine_backward, per_channel
from sigprop.theory.propagation.records import (
    Grad,
    Moments,
    pair_average,
    pair_model,
    pair_models,
)
from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "batchnorm_train",
    "batchnorm_train_backward",
    "batchnorm_eval",
    "batchnorm_eval_backward",
    "layernorm",
    "layernorm_backward",
    "groupnorm",
    "groupnorm_backward",
]


def _eps(eps) -> float:
    e = float(eps)
    if not np.isfinite(e) or e < 0:
        raise InvalidInput(f"eps must be finite and >= 0, got {eps!r}")
    return e


def _affine(gamma, beta, eps, c: int):
    """A normalisation's (γ, β, ε): per-channel γ (default 1) and β (default 0), ε >= 0."""
    return per_channel(gamma, c, "gamma", 1.0), per_channel(beta, c, "beta", 0.0), _eps(eps)


def _chi_factor(nu: np.ndarray) -> np.ndarray:
    """E[ν/χ²_ν] = ν/(ν − 2), ν capped below at 4 (1 for ν = ∞)."""
    nu = np.maximum(nu, 4.0)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(nu), nu / (nu - 2.0), 1.0)


def _bc(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((-1,) + (1,) * ndim)


# ------------------------------------------------------------------------------ batchnorm
def _bn_stats(m: Moments, batch_size: int):
    """Batch statistics of one channel: E[m²] (m the batch mean), the centred q per
    position d(p) = q(p) − 2E[x(p) m] + E[m²] with E[x(p) m] from the position model of
    ``pair_model`` (border positions correlate less with the rest), and v = q̄ − E[m²]."""
    b = positive_int(batch_size, "batch_size")
    p = m.positions
    n = b * p
    nd = len(m.grid)
    qbar = m.q_channel()
    msq = (qbar + (p - 1) * m.cov_pos + (b - 1) * p * m.cov_indep) / n
    mu, sig, rhos = pair_models(m)
    rpos, rind = rhos["cov_pos"], rhos["cov_indep"]
    s_mu, s_sig = _bc(p * m.channel_average(mu), nd), _bc(p * m.channel_average(sig), nd)
    row = (
        m.q_cls
        + mu * (s_mu - mu)
        + _bc(rpos, nd) * sig * (s_sig - sig)
        + (b - 1) * (mu * s_mu + _bc(rind, nd) * sig * s_sig)
    ) / n
    d = np.maximum(m.q_cls - 2.0 * row + _bc(msq, nd), 0.0)
    v = np.maximum(qbar - msq, 0.0)
    return b, p, n, msq, d, v


def batchnorm_train(m: Moments, batch_size: int, gamma=None, beta=None, eps=1e-5) -> Moments:
    """Train-mode BatchNorm with batch statistics over B samples × positions."""
    b, p, n, msq, d, v = _bn_stats(m, batch_size)
    c = m.channels
    gamma, beta, eps = _affine(gamma, beta, eps, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(v + eps > 0, gamma * gamma / (v + eps), 0.0)
    nd = len(m.grid)
    q = _bc(scale, nd) * d + _bc(beta * beta, nd)
    mean = np.broadcast_to(_bc(beta, nd), q.shape)
    cross = m.map_cross(lambda k, val: scale * (val - msq) + beta * beta)
    return Moments(m.grid, q, mean, **cross)


def _eig(a, b, c, bsz: int, p: int):
    """Eigenvalues of the batch matrix a·I + b·(S − I) + c·(J − S) (S: ones within a
    sample, J: all ones; N = B·P): on 1, on sample-constant zero-sum vectors, on vectors
    summing to zero within each sample."""
    n = bsz * p
    return a + (p - 1) * b + (n - p) * c, a + (p - 1) * b - p * c, a - b


def _uneig(l1, l2, l3, bsz: int, p: int):
    n = bsz * p
    c = (l1 - l2) / n
    if p == 1:
        return l2 + c, c, c
    a = (l2 + (p - 1) * l3 + p * c) / p
    return a, a - l3, c


def _project(gbar, gpos, gind, kpos, kind, bsz, p):
    """E[M C M] for M = I − 11ᵀ/N − ŷŷᵀ/N with E[ŷŷᵀ] = K̂ = (1, kpos, kind) and
    ŷŷᵀCŷŷᵀ ≈ K̂ tr(CK̂) (‖ŷ‖² = N exactly); returns (diag, same-sample, cross-sample)."""
    n = bsz * p
    lc = _eig(gbar, gpos, gind, bsz, p)
    lk = _eig(1.0, kpos, kind, bsz, p)
    mult = (1.0, bsz - 1.0, bsz * (p - 1.0))
    tr = sum(m * a * k for m, a, k in zip(mult, lc, lk))
    pi = (0.0, 1.0, 1.0)
    out = [pk * pk * a - 2.0 / n * pk * a * k + k * tr / (n * n) for pk, a, k in zip(pi, lc, lk)]
    return _uneig(*out, bsz, p)


def batchnorm_train_backward(
    m: Moments, g: Grad, batch_size: int, gamma=None, beta=None, eps=1e-5
) -> Grad:
    """Gradient through the batch statistics (module doc), incl. its cross moments: the
    batch-mean removal makes Σ over the batch and positions of δ_x vanish, so g_indep
    turns negative, and coherent gradients (g_pos > 0, from global pooling) lose their
    batch-mean part."""
    b, p, n, msq, d, v = _bn_stats(m, batch_size)
    c = m.channels
    gamma, eps = per_channel(gamma, c, "gamma", 1.0), _eps(eps)
    nd = len(m.grid)
    w = m.weights
    # Satterthwaite degrees of freedom of N σ² from the centred covariance's traces
    cpos, cind = m.cov_pos - msq, m.cov_indep - msq
    tr1 = n * G.wsum(d, w)
    tr2 = b * p * G.wsum(d * d, w) + b * p * (p - 1) * cpos**2 + n * (n - p) * cind**2
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.where(tr2 > 0, tr1 * tr1 / tr2, np.inf)
        inv = np.where(v + eps > 0, _chi_factor(nu) / (v + eps), 0.0)
        r = np.where(_bc(v, nd) > 0, d / _bc(v, nd), 1.0)
        kpos = np.where(v > 0, cpos / v, 0.0)
        kind = np.where(v > 0, cind / v, 0.0)
    common, maps = G.refine_grids([g.grid, m.grid])
    gg, rr = G.take(g.g_cls, maps[0]), G.take(r, maps[1])
    wc = G.class_weights(common)
    gbar, rg = G.wsum(gg, wc), G.wsum(rr * gg, wc)
    body = gg * (1.0 - 2.0 * (1.0 + rr) / n) + (_bc(gbar, nd) + rr * _bc(rg, nd)) / n
    # the coherent part of the gradient: the difference the cross moments make
    full = _project(gbar, g.g_pos, g.g_indep, kpos, kind, b, p)
    plain = _project(gbar, 0.0 * gbar, 0.0 * gbar, kpos, kind, b, p)
    body = body + _bc(full[0] - plain[0], nd)
    scale = gamma * gamma * inv
    return Grad(common, np.maximum(body, 0.0) * _bc(scale, nd), full[1] * scale, full[2] * scale)


def _eval_affine(c, gamma, beta, running_mean, running_var, eps):
    gamma, beta = per_channel(gamma, c, "gamma", 1.0), per_channel(beta, c, "beta", 0.0)
    rm, rv = (
        per_channel(running_mean, c, "running_mean", 0.0),
        per_channel(running_var, c, "running_var", 1.0),
    )
    if np.any(rv < 0):
        raise InvalidInput("running_var must be non-negative")
    eps = _eps(eps)
    if np.any(rv + eps <= 0):
        raise InvalidInput("running_var + eps must be positive")
    a = gamma / np.sqrt(rv + eps)
    return a, beta - rm * a


def batchnorm_eval(
    m: Moments, gamma=None, beta=None, running_mean=None, running_var=None, eps=1e-5
) -> Moments:
    """Eval-mode BatchNorm: an affine map per channel (exact)."""
    a, shift = _eval_affine(m.channels, gamma, beta, running_mean, running_var, eps)
    return affine(m, a, shift)


def batchnorm_eval_backward(
    m: Moments, g: Grad, gamma=None, beta=None, running_mean=None, running_var=None, eps=1e-5
) -> Grad:
    a, _ = _eval_affine(m.channels, gamma, beta, running_mean, running_var, eps)
    return affine_backward(m, g, a)


# ------------------------------------------------------------------------------ layernorm
def _ln_stats(m: Moments):
    """Per position: centred q d_c(p), mean offset μ̃_c(p), set variance v̄(p)."""
    c = m.channels
    mu, q = m.mean_cls, m.q_cls
    s = mu.sum(axis=0, keepdims=True)
    exm = (q - mu * mu + mu * s) / c  # E[x_c m]
    emm = (np.sum(q - mu * mu, axis=0, keepdims=True) + s * s) / (c * c)
    d = np.maximum(q - 2.0 * exm + emm, 0.0)
    vbar = d.mean(axis=0, keepdims=True)
    return d, mu - s / c, vbar


def layernorm(m: Moments, gamma=None, beta=None, eps=1e-5) -> Moments:
    """LayerNorm over the channel axis at each position (module doc)."""
    c = m.channels
    gamma, beta, eps = _affine(gamma, beta, eps, c)
    nd = len(m.grid)
    d, mt, vbar = _ln_stats(m)
    inv = _safe_inv(vbar + eps)
    gb, bb = _bc(gamma, nd), _bc(beta, nd)
    u1 = mt * inv  # E[u]
    q = gb * gb * d * inv * inv + 2 * gb * bb * u1 + bb * bb
    mean = gb * u1 + bb
    mu_c = m.mean_channel()
    sbar = float(np.sum(mu_c))
    ones = np.ones((1,) + q.shape[1:])
    u1c = m.channel_average(u1)

    def term(k, val):
        row = (val + mu_c * (sbar - mu_c)) / c
        emm = (np.sum(val) + sbar * sbar - np.sum(mu_c * mu_c)) / (c * c)
        cent = val - 2.0 * row + emm
        w2 = pair_average(k, inv * ones, inv * ones, m.grid)
        return gamma * gamma * cent * w2 + 2 * gamma * beta * u1c + beta * beta

    cross = m.map_cross(term)
    return Moments(m.grid, np.maximum(q, 0.0), mean, **cross)


def _safe_inv(vbar):
    with np.errstate(divide="ignore"):
        return np.where(vbar > 0, 1.0 / np.sqrt(vbar), 0.0)


def layernorm_backward(m: Moments, g: Grad, gamma=None, beta=None, eps=1e-5) -> Grad:
    c = m.channels
    gamma, eps = per_channel(gamma, c, "gamma", 1.0), _eps(eps)
    nd = len(m.grid)
    d, _, vbar = _ln_stats(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(vbar > 0, d / vbar, 1.0)
        nu = np.where(
            np.sum(d * d, axis=0, keepdims=True) > 0,
            np.sum(d, axis=0, keepdims=True) ** 2 / np.sum(d * d, axis=0, keepdims=True),
            np.inf,
        )
        inv = np.where(vbar + eps > 0, _chi_factor(nu) / (vbar + eps), 0.0)
    common, maps = G.refine_grids([g.grid, m.grid])
    gg = G.take(g.g_cls, maps[0]) * _bc(gamma * gamma, nd)
    rr, ii = G.take(r, maps[1]), G.take(inv, maps[1])
    gbar, rg = gg.mean(axis=0, keepdims=True), (rr * gg).mean(axis=0, keepdims=True)
    body = gg * (1.0 - 2.0 * (1.0 + rr) / c) + (gbar + rr * rg) / c
    # cross moments: the per-token projection over channels changes them by O(1/C)
    g2 = gamma * gamma * float(m.channel_average(inv)[0])
    return Grad(common, np.maximum(body, 0.0) * ii, g.g_pos * g2, g.g_indep * g2)


# ------------------------------------------------------------------------------ groupnorm
def _gn_stats(m: Moments, groups: int):
    c = m.channels
    groups = positive_int(groups, "groups")
    if c % groups:
        raise InvalidInput(f"{c} channels do not split into {groups} groups")
    gc = c // groups
    p = m.positions
    n = gc * p
    nd = len(m.grid)
    mu_c, qbar = m.mean_channel(), m.q_channel()
    grp = np.repeat(np.arange(groups), gc)
    sg = np.bincount(grp, mu_c, groups)[grp]  # S_g for each channel's group
    mu, sig, rpos = pair_model(m, "cov_pos")
    s_mu, s_sig = _bc(p * mu_c, nd), _bc(p * m.channel_average(sig), nd)
    exm = (
        m.q_cls
        + mu * (s_mu - mu)
        + _bc(rpos, nd) * sig * (s_sig - sig)
        + p * mu * _bc(sg - mu_c, nd)
    ) / n
    emm_g = np.bincount(
        grp, p * qbar + p * (p - 1) * m.cov_pos + p * p * mu_c * (sg - mu_c), groups
    ) / (n * n)
    emm = emm_g[grp]
    d = np.maximum(m.q_cls - 2.0 * exm + _bc(emm, nd), 0.0)
    vg = np.bincount(grp, m.channel_average(d), groups)[grp] / gc
    return dict(
        groups=groups, gc=gc, p=p, n=n, grp=grp, sg=sg, exm=exm, emm=emm, d=d, vg=vg, mu_c=mu_c
    )


def groupnorm(m: Moments, groups: int, gamma=None, beta=None, eps=1e-5) -> Moments:
    """GroupNorm: statistics over the channels of a group × all positions, per sample."""
    st = _gn_stats(m, groups)
    c = m.channels
    gamma, beta, eps = _affine(gamma, beta, eps, c)
    nd = len(m.grid)
    with np.errstate(divide="ignore"):
        inv = np.where(st["vg"] + eps > 0, 1.0 / np.sqrt(st["vg"] + eps), 0.0)
    mt = m.mean_cls - _bc(st["sg"] / st["gc"], nd)
    u1 = mt * _bc(inv, nd)
    gb, bb = _bc(gamma, nd), _bc(beta, nd)
    q = gb * gb * st["d"] * _bc(inv * inv, nd) + 2 * gb * bb * u1 + bb * bb
    mean = gb * u1 + bb
    u1c = m.channel_average(u1)
    p, n, grp, mu_c, sg = st["p"], st["n"], st["grp"], st["mu_c"], st["sg"]
    other = p * mu_c * (sg - mu_c)

    def term(k, val):
        if k == "cov_pos":  # same set: the same statistics at both ends
            cent = val - 2.0 * m.channel_average(st["exm"]) + st["emm"]
        else:
            if k == "cov_indep":
                rowsum = p * val
            else:  # the pair: same position K_pair, other positions K_pair_pos
                rowsum = m.cov_pair + (p - 1) * m.cov_pair_pos
            xm = (rowsum + other) / n
            emm = np.bincount(grp, p * rowsum + p * other, st["groups"])[grp] / (n * n)
            cent = val - 2.0 * xm + emm
        return gamma * gamma * cent * inv * inv + 2 * gamma * beta * u1c + beta * beta

    return Moments(m.grid, np.maximum(q, 0.0), mean, **m.map_cross(term))


def groupnorm_backward(m: Moments, g: Grad, groups: int, gamma=None, beta=None, eps=1e-5) -> Grad:
    st = _gn_stats(m, groups)
    c = m.channels
    gamma, eps = per_channel(gamma, c, "gamma", 1.0), _eps(eps)
    nd = len(m.grid)
    d, vg, grp, n, ng = st["d"], st["vg"], st["grp"], st["n"], st["groups"]
    w = m.weights
    d2 = np.bincount(grp, G.wsum(d * d, w), ng)[grp] * st["p"]
    d1 = np.bincount(grp, G.wsum(d, w), ng)[grp] * st["p"]
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.where(d2 > 0, d1 * d1 / d2, np.inf)
        inv = np.where(vg + eps > 0, _chi_factor(nu) / (vg + eps), 0.0)
        r = np.where(_bc(vg, nd) > 0, d / _bc(vg, nd), 1.0)
    common, maps = G.refine_grids([g.grid, m.grid])
    gg = G.take(g.g_cls, maps[0]) * _bc(gamma * gamma, nd)
    rr = G.take(r, maps[1])
    wc = G.class_weights(common)
    gbar = np.bincount(grp, G.wsum(gg, wc), ng)[grp] / st["gc"]
    rg = np.bincount(grp, G.wsum(rr * gg, wc), ng)[grp] / st["gc"]
    body = gg * (1.0 - 2.0 * (1.0 + rr) / n) + (_bc(gbar, nd) + rr * _bc(rg, nd)) / n
    # cross moments: removing the per-sample set mean (channels of one group × positions;
    # gradients of different channels uncorrelated)
    p = st["p"]
    g2 = gamma * gamma
    row = (g.g_channel() * g2 + (p - 1) * g.g_pos * g2) / n  # E[δ_c(p) m]
    emm = np.bincount(grp, p * n * row, ng)[grp] / (n * n)  # E[m²]
    body = body + _bc(
        -2.0 * (p - 1) * g.g_pos * g2 / n
        + (emm - np.bincount(grp, p * g.g_channel() * g2, ng)[grp] / (n * n)),
        nd,
    )
    gpos = (g.g_pos * g2 - 2.0 * row + emm) * inv
    rowi = p * g.g_indep * g2 / n
    gind = (g.g_indep * g2 - 2.0 * rowi + np.bincount(grp, p * n * rowi, ng)[grp] / (n * n)) * inv
    return Grad(common, np.maximum(body, 0.0) * _bc(inv, nd), gpos, gind)
