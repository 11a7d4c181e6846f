"""Elementwise activations, affine maps, dropout, sums, products and reshapes.

Activations (Poole et al. 2016, arXiv 1606.05340, eqs. 3–5, with non-zero means): each
element is Gaussian, x(p) ~ N(μ(p), v(p)), v = q − μ², so q_out = E[φ(x)²] and
mean_out = E[φ(x)] per position exactly. A cross moment of type X (two positions, two
samples, the input pair) is split into its disconnected part, the pair average of
E[φ(x)]E[φ(x′)] (known per position, exact) and a connected part: the pair average of
√(Var φ(x) Var φ(x′)) times κ_X = (F(ρ_X) − F(0))/(F(1) − F(0)), F(ρ) = E[φ(X)φ(Y)] at the
channel's position-averaged (μ, v) and the input's centred correlation ρ_X. This is exact
for position-independent maps, for ρ = 0 and for positively homogeneous φ with zero mean
(ReLU family: κ does not depend on v); elsewhere (borders) it is the stated approximation.
Backward (Schoenholz et al. 2017, arXiv 1611.01232, eq. 13, gradient independence):
g_in = g·E[φ′(x)²].

Sums (residual connections): y = Σ_k s_k x_k with the cross terms E[x_k x_l] = E[x_k]E[x_l]
(mean-field independence of the summands; exact when every branch but one ends in a
zero-mean-weight layer, possibly followed by BatchNorm or an affine map, as in ResNets).
Products y = a·b (squeeze-and-excitation gates) assume a and b independent.
"""

from __future__ import annotations

import numpy as np

from sigprop.theory.propagation import grid as G
from sigprop.theory.propagation.activation import resolve
from sigprop.theory.propagation.records import CROSS, Grad, Moments, pair_average, pair_models
from sigprop.validate import InvalidInput

__all__ = [
    "elementwise",
    "elementwise_backward",
    "affine",
    "affine_backward",
    "per_channel",
    "scale",
    "dropout",
    "dropout_backward",
    "add",
    "add_backward",
    "cat",
    "cat_backward",
    "mul",
    "mul_backward",
    "flatten",
    "flatten_backward",
    "flatten_positions",
    "flatten_positions_backward",
    "select_position",
    "select_position_backward",
    "compress_full",
    "on_grid",
]


def on_grid(values: np.ndarray, src_grid, dst_grid) -> np.ndarray:
    """Class values of ``src_grid`` read on a refinement ``dst_grid`` of it."""
    maps = [src.cls[dst.rep] for src, dst in zip(src_grid, dst_grid)]
    return G.take(values, maps)


def compress_full(values: np.ndarray) -> tuple[tuple, np.ndarray]:
    """Exact class grid of a full map (C, *L): equal slices share a class."""
    grid = []
    for d in range(1, values.ndim):
        slices = np.moveaxis(values, d, 0).reshape(values.shape[d], -1)
        grid.append(G.axis_from_keys(slices))
    grid = tuple(grid)
    return grid, G.take(values, [ax.rep for ax in grid])


# ------------------------------------------------------------------------------ activations
def elementwise(m: Moments, activation) -> Moments:
    """φ applied to every element (see module doc)."""
    act = resolve(activation)
    mu = m.mean_cls
    v = np.maximum(m.q_cls - mu * mu, 0.0)
    mom = act.moments(mu, v)
    m1, m2 = mom["m1"], np.maximum(mom["m2"], 0.0)
    sd_out = np.sqrt(np.maximum(m2 - m1 * m1, 0.0))
    mu_c, v_c = m.channel_average(mu), m.channel_average(v)
    kinds = [k for k in CROSS if getattr(m, k) is not None]
    rhos = pair_models(m)[2]
    rho = np.stack([rhos[k] for k in kinds])  # (kinds, C)
    f = act.cross(np.broadcast_to(mu_c, rho.shape), np.broadcast_to(v_c, rho.shape), rho)
    rep = act.moments(mu_c, v_c)
    f0, f1 = rep["m1"] ** 2, rep["m2"]
    span = f1 - f0
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(span > 1e-300, (f - f0) / span, 0.0)
    cross = {}
    for j, k in enumerate(kinds):
        cross[k] = pair_average(k, m1, m1, m.grid) + kappa[j] * pair_average(
            k, sd_out, sd_out, m.grid
        )
    return Moments(m.grid, m2, m1, **cross)


def _weights_on(g: Grad, values: np.ndarray, grid) -> tuple[tuple, np.ndarray, np.ndarray]:
    """g and a forward class array on their common refinement."""
    common, maps = G.refine_grids([g.grid, grid])
    return common, G.take(g.g_cls, maps[0]), G.take(values, maps[1])


def elementwise_backward(m: Moments, g: Grad, activation) -> Grad:
    """g_in = g·E[φ′(x)²] per element; the gradient cross moments are multiplied by
    E[φ′(x)φ′(x′)] of the same pair type (at the channel's representative mean and
    variance and the input's centred correlation)."""
    act = resolve(activation)
    mu = m.mean_cls
    v = np.maximum(m.q_cls - mu * mu, 0.0)
    d2 = act.moments(mu, v)["d2"]
    common, gg, dd = _weights_on(g, d2, m.grid)
    mu_c, v_c = m.channel_average(mu), m.channel_average(v)
    rhos = pair_models(m)[2]
    factors = [act.dcross(mu_c, v_c, rhos[k]) for k in ("cov_pos", "cov_indep")]
    return Grad(common, gg * dd, g.g_pos * factors[0], g.g_indep * factors[1])


# ------------------------------------------------------------------------------ affine
def per_channel(value, c: int, name: str, default: float | None = None) -> np.ndarray:
    """``value`` as a finite per-channel array of shape ``(c,)`` (a scalar is broadcast;
    ``None`` is ``default`` everywhere when one is given)."""
    if value is None and default is not None:
        return np.full(c, float(default))
    v = np.asarray(value, dtype=float)
    if v.ndim == 0:
        v = np.full(c, float(v))
    if v.shape != (c,) or not np.all(np.isfinite(v)):
        raise InvalidInput(f"{name} must be a finite scalar or an array of shape ({c},)")
    return v


def affine(m: Moments, scale=1.0, shift=0.0) -> Moments:
    """y = a·x + c per channel (deterministic a, c): exact."""
    a = per_channel(scale, m.channels, "scale")
    c = per_channel(shift, m.channels, "shift")
    sh = (-1,) + (1,) * len(m.grid)
    ab, cb = a.reshape(sh), c.reshape(sh)
    q = ab * ab * m.q_cls + 2 * ab * cb * m.mean_cls + cb * cb
    mean = ab * m.mean_cls + cb
    mu_c = m.mean_channel()
    cross = m.map_cross(lambda k, v: a * a * v + 2 * a * c * mu_c + c * c)
    return Moments(m.grid, np.maximum(q, 0.0), mean, **cross)


def affine_backward(m: Moments, g: Grad, scale=1.0) -> Grad:
    a = per_channel(scale, m.channels, "scale")
    a2 = a * a
    return Grad(
        g.grid, g.g_cls * a2.reshape((-1,) + (1,) * len(g.grid)), g.g_pos * a2, g.g_indep * a2
    )


def scale(m: Moments, c=1.0) -> Moments:
    """y = c·x (scalar or per channel)."""
    return affine(m, c, 0.0)


# ------------------------------------------------------------------------------ dropout
def _p(p) -> float:
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise InvalidInput(f"dropout probability must lie in [0, 1), got {p}")
    return p


def dropout(m: Moments, p: float, training: bool = True) -> Moments:
    """Inverted dropout: train q/(1−p) (masks independent of everything, so every cross
    moment and the mean are unchanged); eval identity."""
    p = _p(p)
    if not training or p == 0:
        return m
    return m.replace(q_cls=m.q_cls / (1.0 - p))


def dropout_backward(m: Moments, g: Grad, p: float, training: bool = True) -> Grad:
    p = _p(p)
    if not training or p == 0:
        return g
    return g.replace(g_cls=g.g_cls / (1.0 - p))


# ------------------------------------------------------------------------------ add / cat
def _scales(records, scales) -> list[float]:
    if scales is None:
        return [1.0] * len(records)
    s = [float(x) for x in scales]
    if len(s) != len(records) or not all(np.isfinite(s)):
        raise InvalidInput("add needs one finite scale per input")
    return s


def add(records, scales=None) -> Moments:
    """y = Σ_k s_k x_k, cross terms E[x_k]E[x_l] (module doc)."""
    records = list(records)
    if not records:
        raise InvalidInput("add needs at least one input")
    s = _scales(records, scales)
    if len({r.channels for r in records}) != 1:
        raise InvalidInput("add needs inputs with equal channel counts")
    if len({r.tracks_pair for r in records}) != 1:
        raise InvalidInput("add inputs must all track the input pair or none")
    grid, maps = G.refine_grids([r.grid for r in records])
    qs = [G.take(r.q_cls, mp) for r, mp in zip(records, maps)]
    mus = [G.take(r.mean_cls, mp) for r, mp in zip(records, maps)]
    q = sum(sk * sk * qk for sk, qk in zip(s, qs))
    mean = sum(sk * mk for sk, mk in zip(s, mus))
    n = len(records)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    for i, j in pairs:
        q = q + s[i] * s[j] * mus[i] * mus[j]

    def term(k, _):
        val = sum(sk * sk * getattr(r, k) for sk, r in zip(s, records))
        for i, j in pairs:
            val = val + s[i] * s[j] * pair_average(k, mus[i], mus[j], grid)
        return val

    return Moments(grid, np.maximum(q, 0.0), mean, **records[0].map_cross(term))


def add_backward(records, g: Grad, scales=None) -> list[Grad]:
    s = _scales(list(records), scales)
    return [Grad(g.grid, g.g_cls * sk * sk, g.g_pos * sk * sk, g.g_indep * sk * sk) for sk in s]


def _position_axis(axis, ndim: int) -> int | None:
    if axis in (None, "channel"):
        return None
    d = int(axis)
    if not 0 <= d < ndim:
        raise InvalidInput(f"cat axis must be 'channel' or a spatial dim in [0, {ndim})")
    return d


def cat(records, axis="channel") -> Moments:
    """Concatenation along channels (DenseNet) or along a spatial/token dim (class token);
    across parts of a token concatenation E[x x′] = E[x]E[x′]."""
    records = list(records)
    if not records:
        raise InvalidInput("cat needs at least one input")
    if len({r.tracks_pair for r in records}) != 1:
        raise InvalidInput("cat inputs must all track the input pair or none")
    if len({len(r.grid) for r in records}) != 1:
        raise InvalidInput("cat inputs must have the same number of spatial dims")
    d = _position_axis(axis, len(records[0].grid))
    if d is None:
        grid, maps = G.refine_grids([r.grid for r in records])
        q = np.concatenate([G.take(r.q_cls, mp) for r, mp in zip(records, maps)])
        mean = np.concatenate([G.take(r.mean_cls, mp) for r, mp in zip(records, maps)])
        cross = records[0].map_cross(lambda k, _: np.concatenate([getattr(r, k) for r in records]))
        return Moments(grid, q, mean, **cross)
    return _cat_positions(records, d)


def _cat_positions(records, d: int) -> Moments:
    if len({r.channels for r in records}) != 1:
        raise InvalidInput("token concatenation needs equal channel counts")
    others = [j for j in range(len(records[0].grid)) if j != d]
    axes, offset, parts_q, parts_m = [], 0, [], []
    for r in records:
        axes.append(r.grid[d].cls + offset)
        offset += r.grid[d].n
    new_d = G.Axis(np.concatenate(axes))
    # common refinement of the other dims
    sub = [tuple(r.grid[j] for j in others) for r in records]
    common, maps = G.refine_grids(sub) if others else ((), [[] for _ in records])
    for r, mp in zip(records, maps):
        idx = list(mp)
        idx.insert(d, np.arange(r.grid[d].n))
        parts_q.append(G.take(r.q_cls, idx))
        parts_m.append(G.take(r.mean_cls, idx))
    grid = list(common)
    grid.insert(d, new_d)
    q = np.concatenate(parts_q, axis=1 + d)
    mean = np.concatenate(parts_m, axis=1 + d)
    sizes = np.array([float(r.positions) for r in records])
    p = float(np.sum(sizes))
    mus = np.stack([r.mean_channel() for r in records])  # (parts, C)
    between = np.einsum("i,j,ic,jc->c", sizes, sizes, mus, mus)
    between -= np.einsum("i,ic->c", sizes * sizes, mus * mus)  # i ≠ j only

    def term(k, _):
        own = np.stack([getattr(r, k) for r in records])
        if k == "cov_pair":
            return np.einsum("i,ic->c", sizes, own) / p
        if k == "cov_indep":
            return (np.einsum("i,ic->c", sizes * sizes, own) + between) / (p * p)
        if p > 1:
            w = sizes * (sizes - 1)
            return (np.einsum("i,ic->c", w, own) + between) / (p * (p - 1))
        return own[0]

    return Moments(tuple(grid), q, mean, **records[0].map_cross(term))


def cat_backward(records, g: Grad, axis="channel") -> list[Grad]:
    records = list(records)
    d = _position_axis(axis, len(records[0].grid))
    out = []
    if d is None:
        start = 0
        for r in records:
            sl = slice(start, start + r.channels)
            out.append(Grad(g.grid, g.g_cls[sl], g.g_pos[sl], g.g_indep[sl]))
            start += r.channels
        return out
    full = g.g
    start = 0
    for r in records:
        sl = [slice(None)] * full.ndim
        sl[1 + d] = slice(start, start + r.spatial[d])
        start += r.spatial[d]
        out.append(Grad(*compress_full(full[tuple(sl)]), g.g_pos, g.g_indep))
    return out


# ------------------------------------------------------------------------------ mul
def _broadcast_pair(a: Moments, b: Moments):
    """Align two records for a product: equal shapes, or one of them (C or 1, 1, ..., 1)."""

    def spatial_one(r):
        return all(s == 1 for s in r.spatial)

    if len(a.grid) != len(b.grid):
        raise InvalidInput("mul needs inputs with the same number of dims")
    c = max(a.channels, b.channels)
    if {a.channels, b.channels} - {1, c}:
        raise InvalidInput(f"cannot multiply {a.shape} by {b.shape}")
    if a.spatial == b.spatial:
        return c, None
    if spatial_one(b):
        return c, "b"
    if spatial_one(a):
        return c, "a"
    raise InvalidInput(f"cannot multiply {a.shape} by {b.shape} (only full broadcasts)")


def _spread(r: Moments, c: int, grid) -> tuple[np.ndarray, np.ndarray, dict]:
    """q, mean (class arrays on ``grid``) and cross moments of r broadcast to c channels
    and, when r has a single position, to every position (then its position pairs are
    the same element: cov_pos → q, cov_pair_pos → cov_pair)."""
    rep = c // r.channels
    if r.spatial != tuple(ax.length for ax in grid):  # one position, spread out
        q = np.broadcast_to(
            r.q_cls.reshape((r.channels,) + (1,) * len(grid)),
            (r.channels,) + tuple(ax.n for ax in grid),
        )
        mu = np.broadcast_to(r.mean_cls.reshape(q.shape[:1] + (1,) * len(grid)), q.shape)
        cross = {
            "cov_pos": r.q_channel(),
            "cov_indep": r.cov_indep,
            "cov_pair": r.cov_pair,
            "cov_pair_pos": r.cov_pair,
        }
    else:
        common, maps = G.refine_grids([r.grid, grid])
        q, mu = G.take(r.q_cls, maps[0]), G.take(r.mean_cls, maps[0])
        cross = {k: getattr(r, k) for k in CROSS}
    q, mu = np.repeat(q, rep, axis=0), np.repeat(mu, rep, axis=0)
    cross = {k: None if v is None else np.repeat(v, rep) for k, v in cross.items()}
    return q, mu, cross


def mul(a: Moments, b: Moments) -> Moments:
    """y = a·b elementwise (a, b independent: every moment factorises)."""
    if a.tracks_pair != b.tracks_pair:
        raise InvalidInput("mul inputs must both track the input pair or neither")
    c, _ = _broadcast_pair(a, b)
    big = a if a.positions >= b.positions else b
    grid = G.refine_grids([a.grid, b.grid])[0] if a.spatial == b.spatial else big.grid
    qa, ma, xa = _spread(a, c, grid)
    qb, mb, xb = _spread(b, c, grid)
    cross = {k: None if xa[k] is None else xa[k] * xb[k] for k in CROSS}
    return Moments(grid, qa * qb, ma * mb, **cross)


def _q_on(r: Moments, c: int, grid) -> np.ndarray:
    """r's q as a class array on ``grid`` (a refinement of r's grid, or any grid when r
    has one position), repeated to c channels."""
    if r.positions == 1 and any(ax.length > 1 for ax in grid):
        q = np.broadcast_to(
            r.q_cls.reshape((r.channels,) + (1,) * len(grid)),
            (r.channels,) + tuple(ax.n for ax in grid),
        )
    else:
        q = on_grid(r.q_cls, r.grid, grid)
    return np.repeat(q, c // r.channels, axis=0)


def mul_backward(a: Moments, b: Moments, g: Grad) -> list[Grad]:
    """δ_a = b δ: g_a = q_b g and cross moments g_X·K_X(b); a broadcast input sums over the
    positions (and channels) it was spread to: g_b = Σ_p q_a(p) g(p) + P(P − 1)
    cov_pos_a g_pos (cross-sample: P² cov_indep_a g_indep), a and b independent."""
    c, _ = _broadcast_pair(a, b)
    out = []
    for own, other in ((a, b), (b, a)):
        grids = [g.grid] + ([other.grid] if other.positions > 1 else [])
        common, maps = G.refine_grids(grids)
        prod = G.take(g.g_cls, maps[0]) * _q_on(other, c, common)
        _, _, xo = _spread(other, c, own.grid if own.positions > 1 else g.grid)
        gpos, gind = g.g_pos * xo["cov_pos"], g.g_indep * xo["cov_indep"]
        grid = common
        p = float(np.prod([ax.length for ax in common])) if common else 1.0
        if own.positions == 1 and p > 1:
            prod = (p * G.wsum(prod, G.class_weights(common))).reshape((c,) + (1,) * len(common))
            prod = prod + (p * (p - 1) * gpos).reshape(prod.shape)
            gpos, gind = gpos * 0.0, p * p * gind
            grid = own.grid
        if own.channels == 1 and c > 1:
            prod = prod.sum(axis=0, keepdims=True)
            gpos, gind = gpos.sum(keepdims=True), gind.sum(keepdims=True)
        out.append(Grad(grid, np.maximum(prod, 0.0), gpos, gind))
    return out


# ------------------------------------------------------------------------------ reshapes
def flatten(m: Moments) -> Moments:
    """(C, *S) → (C·P,), feature c·P + p (torch ``flatten(1)``); per feature the channel's
    cross moments (cov_pos is virtual for a flat vector)."""
    p = m.positions
    q = m.q.reshape(-1)
    mean = m.mean.reshape(-1)
    return Moments((), q, mean, **m.map_cross(lambda k, v: np.repeat(v, p)))


def flatten_backward(m: Moments, g: Grad) -> Grad:
    """Distinct features of the flat vector carry uncorrelated gradients (a linear layer
    with independent weights reads them), so g_pos = 0; across samples only the same
    position correlates: g_indep(c) = Σ_p g_indep(c, p)/P²."""
    p = m.positions
    gind = g.g_indep.reshape(m.channels, p).sum(axis=1) / (p * p)
    return Grad(*compress_full(g.g_cls.reshape(m.shape)), np.zeros(m.channels), gind)


def flatten_positions(m: Moments) -> Moments:
    """(C, *S) → (C, P): spatial dims to one token dim (torch ``flatten(2)``)."""
    if not m.grid:
        raise InvalidInput("flatten_positions needs spatial dims")
    keys = np.stack(np.meshgrid(*[ax.cls for ax in m.grid], indexing="ij"), -1).reshape(
        -1, len(m.grid)
    )
    axis = G.axis_from_keys(keys)
    rep = keys[axis.rep]
    q = m.q_cls[(slice(None),) + tuple(rep.T)]
    mean = m.mean_cls[(slice(None),) + tuple(rep.T)]
    cross = {k: getattr(m, k) for k in CROSS}
    return Moments((axis,), q, mean, **cross)


def flatten_positions_backward(m: Moments, g: Grad) -> Grad:
    return Grad(*compress_full(g.g.reshape(m.shape)), g.g_pos, g.g_indep)


def select_position(m: Moments, index) -> Moments:
    """The record at one position (ViT's class token x[:, 0]): q and mean exact; cross
    moments are the record's position-averaged ones (an approximation where the chosen
    position differs from the rest)."""
    idx = tuple(int(i) for i in np.atleast_1d(index))
    if len(idx) != len(m.grid) or any(not 0 <= i < ax.length for i, ax in zip(idx, m.grid)):
        raise InvalidInput(f"position {index!r} is outside the record's positions {m.spatial}")
    cl = tuple(int(ax.cls[i]) for i, ax in zip(idx, m.grid))
    q = m.q_cls[(slice(None),) + cl]
    mean = m.mean_cls[(slice(None),) + cl]
    return Moments((), q, mean, **{k: getattr(m, k) for k in CROSS})


def select_position_backward(m: Moments, g: Grad, index) -> Grad:
    idx = tuple(int(i) for i in np.atleast_1d(index))
    full = np.zeros(m.shape)
    full[(slice(None),) + idx] = g.g_cls
    p = m.positions
    return Grad(*compress_full(full), np.zeros(m.channels), g.g_indep / (p * p))
