"""Monte Carlo twins of the propagation rules: plain numpy networks and estimators.

Every estimator returns per-replicate values (one replicate = one independent draw of
weights and inputs), so tests compare the rule with the replicate mean and judge the
difference in units of its standard error (std / √R).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# ------------------------------------------------------------------------------ inputs


def structured(rng, b, shape, mu=0.0, su=0.0, sv=0.0, sw=1.0, pair=None):
    """Batch (B, C, *S): x = μ + su·u(c) + sv·v_s(c) + sw·w_s(c, p), u shared by the whole
    batch, v by the positions of one sample, w iid. With ``pair=(rho_v, rho_w)`` samples 0
    and 1 are the tracked pair (v and w correlated). Returns x and the exact moments."""
    c, spatial = shape[0], tuple(shape[1:])
    u = rng.standard_normal((1, c) + (1,) * len(spatial))
    v = rng.standard_normal((b, c) + (1,) * len(spatial))
    w = rng.standard_normal((b, c) + spatial)
    if pair is not None:
        rv, rw = pair
        v[1] = rv * v[0] + np.sqrt(1 - rv * rv) * v[1]
        w[1] = rw * w[0] + np.sqrt(1 - rw * rw) * w[1]
    x = mu + su * u + sv * v + sw * w
    mom = {
        "q": mu * mu + su * su + sv * sv + sw * sw,
        "mean": mu,
        "cov_pos": mu * mu + su * su + sv * sv,
        "cov_indep": mu * mu + su * su,
    }
    if pair is not None:
        mom["cov_pair"] = mu * mu + su * su + pair[0] * sv * sv + pair[1] * sw * sw
        mom["cov_pair_pos"] = mu * mu + su * su + pair[0] * sv * sv
    return x, mom


def moments_of(shape, mom):
    """The Moments record of ``structured``'s exact moments."""
    from sigprop.theory.propagation import Moments

    m = Moments.gaussian_input(shape, 1.0)
    c = shape[0]
    ones = np.ones(c)
    return m.replace(
        q_cls=np.full(m.q_cls.shape, mom["q"]),
        mean_cls=np.full(m.q_cls.shape, mom["mean"]),
        cov_pos=mom["cov_pos"] * ones,
        cov_indep=mom["cov_indep"] * ones,
        cov_pair=None if "cov_pair" not in mom else mom["cov_pair"] * ones,
        cov_pair_pos=None if "cov_pair" not in mom else mom["cov_pair_pos"] * ones,
    )


# ------------------------------------------------------------------------------ layers


def conv(x, w, stride=1, padding=0, dilation=1, groups=1):
    """Zero-padded cross-correlation, x (B, C, H, W), w (O, C/g, kh, kw)."""
    b, c, h, wd = x.shape
    o, cig, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    win = sliding_window_view(xp, (span_h, span_w), axis=(2, 3))[
        :, :, ::stride, ::stride, ::dilation, ::dilation
    ]
    cog = o // groups
    outs = []
    for gi in range(groups):
        xs = win[:, gi * cig : (gi + 1) * cig]
        outs.append(np.einsum("bchwkl,ockl->bohw", xs, w[gi * cog : (gi + 1) * cog], optimize=True))
    return np.concatenate(outs, axis=1)


def conv_transpose(d, w, in_hw, stride=1, padding=0, dilation=1):
    """Adjoint of :func:`conv` (groups = 1): the input gradient of δ."""
    b, o, ho, wo = d.shape
    _, c, kh, kw = w.shape
    h, wd = in_hw
    out = np.zeros((b, c, h + 2 * padding, wd + 2 * padding))
    for ty in range(kh):
        for tx in range(kw):
            contrib = np.einsum("bohw,oc->bchw", d, w[:, :, ty, tx])
            ys = ty * dilation
            xs = tx * dilation
            out[:, :, ys : ys + stride * ho : stride, xs : xs + stride * wo : stride] += contrib
    return out[:, :, padding : padding + h, padding : padding + wd]


def bn_train(x, eps=1e-5, gamma=None, beta=None):
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.mean(axis=axes, keepdims=True)
    v = x.var(axis=axes, keepdims=True)
    y = (x - m) / np.sqrt(v + eps)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if gamma is not None:
        y = y * np.reshape(gamma, shape)
    if beta is not None:
        y = y + np.reshape(beta, shape)
    return y


def bn_train_vjp(x, d, eps=1e-5):
    """Input gradient of train-mode BatchNorm (γ = 1) for the output gradient d."""
    axes = (0,) + tuple(range(2, x.ndim))
    n = np.prod([x.shape[a] for a in axes])
    m = x.mean(axis=axes, keepdims=True)
    v = x.var(axis=axes, keepdims=True)
    xh = (x - m) / np.sqrt(v + eps)
    dm = d.mean(axis=axes, keepdims=True)
    dx = (d * xh).mean(axis=axes, keepdims=True)
    del n
    return (d - dm - xh * dx) / np.sqrt(v + eps)


def max_pool(x, k, s, p, dilation=1):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    span = dilation * (k - 1) + 1
    win = sliding_window_view(xp, (span, span), axis=(2, 3))[:, :, ::s, ::s, ::dilation, ::dilation]
    return win.max(axis=(-1, -2)), win


def max_pool_vjp(x, d, k, s, p):
    """Route each window's gradient to its argmax (first maximum, as torch)."""
    b, c, h, w = x.shape
    out, win = max_pool(x, k, s, p)
    ho, wo = out.shape[2:]
    flat = win.reshape(b, c, ho, wo, k * k)
    arg = flat.argmax(axis=-1)
    grad = np.zeros((b, c, h + 2 * p, w + 2 * p))
    iy = (np.arange(ho) * s)[:, None] + arg // k - 0 * p
    ix = (np.arange(wo) * s)[None, :] + arg % k
    bi, ci = np.meshgrid(np.arange(b), np.arange(c), indexing="ij")
    for yo in range(ho):
        for xo in range(wo):
            np.add.at(grad, (bi, ci, iy[:, :, yo, xo], ix[:, :, yo, xo]), d[:, :, yo, xo])
    return grad[:, :, p : p + h, p : p + w]


def avg_pool(x, k, s, p, count_include_pad=True):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    tot = win.sum(axis=(-1, -2))
    if count_include_pad:
        return tot / (k * k)
    ones = np.pad(np.ones(x.shape[2:]), p)
    cnt = sliding_window_view(ones, (k, k))[::s, ::s].sum(axis=(-1, -2))
    return tot / cnt


# ------------------------------------------------------------------------------ estimators


def stats(x, pair=False):
    """Per-batch estimates: q map (C, *S), mean map, and per channel cov_pos, cov_indep
    (and cov_pair / cov_pair_pos from samples 0 and 1 when ``pair``; the independent
    cross-sample estimate then skips that pair)."""
    b = x.shape[0]
    c = x.shape[1]
    flat = x.reshape(b, c, -1)
    p = flat.shape[-1]
    out = {"q": (x * x).mean(axis=0), "mean": x.mean(axis=0)}
    tot = flat.sum(axis=-1)  # (B, C)
    if p > 1:
        out["cov_pos"] = ((tot * tot - (flat * flat).sum(-1)) / (p * (p - 1))).mean(axis=0)
    start = 2 if pair else 0
    t = tot[start:]
    nb = t.shape[0]
    out["cov_indep"] = (t.sum(0) ** 2 - (t * t).sum(0)) / (nb * (nb - 1) * p * p)
    if pair:
        a, bb = flat[0], flat[1]
        out["cov_pair"] = (a * bb).mean(-1)
        if p > 1:
            out["cov_pair_pos"] = (a.sum(-1) * bb.sum(-1) - (a * bb).sum(-1)) / (p * (p - 1))
    return out


def collect(acc: dict, st: dict) -> None:
    """Append each estimate of ``st`` that ``acc`` tracks (one replicate)."""
    for key, values in acc.items():
        if key in st:
            values.append(st[key])


def se_check(pred, reps, n_se=4.0, rel=0.0, what=""):
    """|pred − mean(reps)| ≤ n_se·SE + rel·|pred| elementwise (reps on axis 0)."""
    reps = np.asarray(reps, dtype=float)
    mean = reps.mean(axis=0)
    se = reps.std(axis=0, ddof=1) / np.sqrt(reps.shape[0])
    pred = np.asarray(pred, dtype=float)
    dev = np.abs(pred - mean)
    tol = n_se * se + rel * np.abs(pred) + 1e-12
    ok = dev <= tol
    i = int(np.argmax(np.ravel(dev / tol)))
    pick = lambda a: np.ravel(np.broadcast_to(a, dev.shape))[i]  # noqa: E731
    assert np.all(ok), (
        f"{what}: |pred - mc| = {pick(dev):.4g} > tol {pick(tol):.4g} at flat index {i} "
        f"(pred {pick(pred):.6g}, mc {pick(mean):.6g}, se {pick(se):.3g})"
    )
    return dev / np.maximum(se, 1e-300)
