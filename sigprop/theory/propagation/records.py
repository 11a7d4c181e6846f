"""The state records of graph propagation: forward :class:`Moments`, backward :class:`Grad`.

Layout: one sample's activation is an array of shape (C, *S): C channels (features), S the
spatial positions or tokens (S = () for a flat vector). Expectations run over the inputs
and over the weights (sign-symmetric, independent, with the given second moments), as in
the mean-field theory of Poole et al. 2016 (arXiv 1606.05340) and its convolutional form
(Xiao et al. 2018, arXiv 1806.05393). Position maps are stored on a compressed class grid
(:mod:`sigprop.theory.propagation.grid`); ``q`` and ``mean`` expand them to (C, *S).

Second moments kept per channel (all *raw* moments, means included):

``q``            E[x(p)²] per channel and position;
``mean``         E[x(p)] per channel and position;
``cov_pos``      E[x(p) x(p′)] averaged over pairs p ≠ p′ of one sample (for P = 1 a
                 virtual value, propagated by the same rules but never used);
``cov_indep``    E[x_a(p) x_b(p′)] for two distinct members a ≠ b of one batch whose
                 inputs are independent, averaged over all position pairs (independent
                 inputs stay uncorrelated only until train-mode BatchNorm couples the
                 batch: after it this is ≈ −q/(B·P));
``cov_pair``     E[x_a(p) x_b(p)] for the input pair of pixel correlation c0 (same
                 position, averaged over positions), ``None`` when no pair is tracked;
``cov_pair_pos`` E[x_a(p) x_b(p′)], p ≠ p′, for that pair (needed by every op that mixes
                 positions: pooling, attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sigprop.theory.propagation import grid as G
from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "Moments",
    "Grad",
    "pos_pair_products",
    "all_pair_products",
    "pair_average",
    "pair_model",
    "pair_models",
    "CROSS",
]

#: bounds on an input record's shape (memory: the class maps hold one int per position)
MAX_CHANNELS = 1 << 24
MAX_LENGTH = 1 << 16

#: names of the per-channel cross moments, in a fixed order
CROSS = ("cov_pos", "cov_indep", "cov_pair", "cov_pair_pos")


def _frozen(a) -> np.ndarray:
    """``a`` as a read-only float64 array. A float64 array that owns its memory is frozen in
    place rather than copied (the rules hand over the arrays they just computed; a later
    write through any reference then raises instead of changing a record); anything else
    (lists, views, broadcasts, other dtypes) is copied first."""
    if not (
        isinstance(a, np.ndarray) and a.dtype == np.float64 and a.flags.owndata and a.base is None
    ):
        a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Moments:
    """Forward moments of one node's output (see the module docstring for each field).

    ``q_cls`` and ``mean_cls`` have shape (C, *n) with n the class counts of ``grid``;
    the cross moments have shape (C,).
    """

    grid: tuple
    q_cls: np.ndarray
    mean_cls: np.ndarray
    cov_pos: np.ndarray
    cov_indep: np.ndarray
    cov_pair: np.ndarray | None = None
    cov_pair_pos: np.ndarray | None = None

    def __post_init__(self):
        grid = tuple(self.grid)
        object.__setattr__(self, "grid", grid)
        q = _frozen(self.q_cls)
        n = tuple(ax.n for ax in grid)
        if q.ndim != 1 + len(grid) or q.shape[1:] != n:
            raise InvalidInput(f"q_cls has shape {q.shape}, the grid needs (C, {n})")
        c = q.shape[0]
        mean = _frozen(np.broadcast_to(self.mean_cls, q.shape))
        object.__setattr__(self, "q_cls", q)
        object.__setattr__(self, "mean_cls", mean)
        if (self.cov_pair is None) != (self.cov_pair_pos is None):
            raise InvalidInput("cov_pair and cov_pair_pos are given together or not at all")
        for name in CROSS:
            v = getattr(self, name)
            if v is None:
                continue
            v = _frozen(np.broadcast_to(v, (c,)))
            object.__setattr__(self, name, v)
        arrays = [q, mean] + [getattr(self, k) for k in CROSS if getattr(self, k) is not None]
        # one reduction per array: a NaN or ±inf anywhere makes the sum non-finite
        if not all(np.isfinite(np.sum(a)) for a in arrays):
            raise InvalidInput("moments must be finite (a layer overflowed float64)")
        if q.size and np.min(q) < 0:
            raise InvalidInput("second moments q must be non-negative")

    # -- construction --------------------------------------------------------------
    @classmethod
    def gaussian_input(cls, shape, q0: float = 1.0, c0: float | None = None) -> Moments:
        """Input of iid N(0, q0) entries (pixels); with ``c0`` also the input pair whose
        entries have correlation c0 at the same position (and 0 elsewhere)."""
        shape = tuple(positive_int(s, "shape entry") for s in np.atleast_1d(shape))
        if shape[0] > MAX_CHANNELS or any(s > MAX_LENGTH for s in shape[1:]) or len(shape) > 4:
            raise InvalidInput(
                f"input shape {shape} is out of range (at most 3 spatial dims, "
                f"{MAX_CHANNELS} channels, {MAX_LENGTH} positions per dim)"
            )
        q0 = float(q0)
        if not np.isfinite(q0) or q0 < 0:
            raise InvalidInput(f"q0 must be a finite variance >= 0, got {q0!r}")
        grid = tuple(G.uniform_axis(s) for s in shape[1:])
        c = shape[0]
        ones = (c,) + (1,) * len(grid)
        pair = pair_pos = None
        if c0 is not None:
            c0 = float(c0)
            if not -1.0 <= c0 <= 1.0:
                raise InvalidInput(f"c0 must lie in [-1, 1], got {c0!r}")
            pair, pair_pos = np.full(c, c0 * q0), np.zeros(c)
        z = np.zeros(c)
        return cls(grid, np.full(ones, q0), np.zeros(ones), z, z, pair, pair_pos)

    @classmethod
    def constant(cls, value, track_pair: bool = False) -> Moments:
        """A deterministic tensor of shape (C, *S) (a position embedding, a class token)."""
        v = np.array(value, dtype=float)  # a copy: the records freeze what they are given
        if v.ndim < 1 or v.size == 0 or not np.all(np.isfinite(v)):
            raise InvalidInput("a constant needs a finite, non-empty array of shape (C, *S)")
        grid = []
        for d in range(1, v.ndim):
            slices = np.moveaxis(v, d, 0).reshape(v.shape[d], -1)
            grid.append(G.axis_from_keys(slices))
        grid = tuple(grid)
        vc = G.take(v, [ax.rep for ax in grid])
        pos = pos_pair_products(vc, vc, grid)
        ind = all_pair_products(vc, vc, grid)
        pair = G.wsum(vc * vc, G.class_weights(grid)) if track_pair else None
        return cls(grid, vc * vc, vc, pos, ind, pair, pos if track_pair else None)

    def map_cross(self, fn) -> dict:
        """``{kind: fn(kind, value)}`` over the cross moments (:data:`CROSS`), ``None`` kept
        for the kinds this record does not track: the ``**cross`` of a rule's output."""
        return {k: None if getattr(self, k) is None else fn(k, getattr(self, k)) for k in CROSS}

    def centred(self) -> Moments:
        """The fluctuation part: mean 0, q the variance q − μ², each cross moment less the
        pair average of the means (what a layer's weights act on sign-averaged, while its
        own signed weights map the means: :meth:`plus_mean`)."""
        mu = self.mean_cls
        var = np.maximum(self.q_cls - mu * mu, 0.0)
        cross = self.map_cross(lambda k, v: v - pair_average(k, mu, mu, self.grid))
        return Moments(self.grid, var, np.zeros_like(mu), **cross)

    def plus_mean(self, shift) -> Moments:
        """The record of x + c for a deterministic per-class map c (C, *n): E[(x + c)²] =
        q + 2μc + c², each cross moment gains the pair averages of μc′ + cμ′ + cc′."""
        c = np.broadcast_to(np.asarray(shift, dtype=float), self.q_cls.shape)
        mu, grid = self.mean_cls, self.grid

        def shifted(k, v):
            return v + pair_average(k, mu, c, grid) + pair_average(k, c, mu + c, grid)

        q = self.q_cls + c * (2.0 * mu + c)
        return Moments(grid, np.maximum(q, 0.0), mu + c, **self.map_cross(shifted))

    def replace(self, **changes) -> Moments:
        fields = {k: getattr(self, k) for k in ("grid", "q_cls", "mean_cls") + CROSS}
        fields.update(changes)
        return Moments(**fields)

    # -- shape ---------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return int(self.q_cls.shape[0])

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(ax.length for ax in self.grid)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels,) + self.spatial

    @property
    def positions(self) -> int:
        return int(np.prod(self.spatial, dtype=np.int64))

    @property
    def tracks_pair(self) -> bool:
        return self.cov_pair is not None

    @property
    def weights(self) -> np.ndarray:
        """Fraction of positions in each class, shape (*n)."""
        return G.class_weights(self.grid)

    # -- full maps -----------------------------------------------------------------
    @property
    def q(self) -> np.ndarray:
        """E[x²] per channel and position, shape (C, *S)."""
        return G.expand(self.q_cls, self.grid)

    @property
    def mean(self) -> np.ndarray:
        """E[x] per channel and position, shape (C, *S)."""
        return G.expand(self.mean_cls, self.grid)

    # -- summaries -----------------------------------------------------------------
    def channel_average(self, values: np.ndarray) -> np.ndarray:
        """Position average of a class array (C, *n) → (C,)."""
        return G.wsum(values, self.weights)

    def q_channel(self) -> np.ndarray:
        return self.channel_average(self.q_cls)

    def mean_channel(self) -> np.ndarray:
        return self.channel_average(self.mean_cls)

    def q_mean(self) -> float:
        """Mean of E[x²] over channels and positions."""
        return float(np.mean(self.q_channel()))

    def correlation(self) -> float | None:
        """Σ_c cov_pair / Σ_c q: the input pair's correlation at this node (raw second
        moments, Poole et al.'s q_ab/√(q_aa q_bb) for the pair of equal q)."""
        if self.cov_pair is None:
            return None
        den = float(np.sum(self.q_channel()))
        return float(np.sum(self.cov_pair)) / den if den > 0 else float("nan")

    def channel_sq_mean(self, batch_size: int) -> np.ndarray:
        """E[(x̄_c)²] per channel, x̄_c the mean over a batch of B samples and all positions
        (Brock et al. 2021, arXiv 2101.08692, §3)."""
        b = positive_int(batch_size, "batch_size")
        p = self.positions
        qbar = self.q_channel()
        return qbar / (b * p) + (p - 1) * self.cov_pos / (b * p) + (b - 1) * self.cov_indep / b

    def avg_sq_ch_mean(self, batch_size: int) -> float:
        """Brock et al.'s average channel squared mean: mean_c E[(x̄_c)²]."""
        return float(np.mean(self.channel_sq_mean(batch_size)))

    def channel_var(self, batch_size: int, unbiased: bool = True) -> np.ndarray:
        """E[var_c] per channel, the variance over batch × positions (torch ``var``,
        unbiased by default, as timm's ``avg_ch_var``)."""
        n = positive_int(batch_size, "batch_size") * self.positions
        v = self.q_channel() - self.channel_sq_mean(batch_size)
        return v * n / (n - 1) if unbiased and n > 1 else v

    def avg_ch_var(self, batch_size: int, unbiased: bool = True) -> float:
        """Brock et al.'s average channel variance: mean_c E[var_c]."""
        return float(np.mean(self.channel_var(batch_size, unbiased)))

    def summary(self, batch_size: int) -> dict:
        """JSON-ready summaries of this record."""
        qc, mc = self.q_channel(), self.mean_channel()
        sq = self.channel_sq_mean(batch_size)
        n = positive_int(batch_size, "batch_size") * self.positions
        var = (qc - sq) * (n / (n - 1) if n > 1 else 1.0)
        return {
            "shape": list(self.shape),
            "q_mean": float(np.mean(qc)),
            "mean_mean": float(np.mean(mc)),
            "correlation": self.correlation(),
            "avg_sq_ch_mean": float(np.mean(sq)),
            "avg_ch_var": float(np.mean(var)),
            "q_channel": qc.tolist(),
            "mean_channel": mc.tolist(),
        }


@dataclass(frozen=True, eq=False)
class Grad:
    """Backward record: g = E[δ²], δ = ∂L/∂x, per channel and position class, and per
    channel the gradient cross moments ``g_pos`` = E[δ(p) δ(p′)] (p ≠ p′, one sample,
    averaged over pairs) and ``g_indep`` = E[δ_a(p) δ_b(p′)] (two batch members, all
    position pairs). The output gradient of ``propagate`` has both zero (an iid random
    readout); global pooling makes g_pos positive, train-mode BatchNorm g_indep negative.
    They matter for the batch weight gradient Σ_b Σ_p δ x and for BatchNorm's backward."""

    grid: tuple
    g_cls: np.ndarray
    g_pos: np.ndarray | None = None
    g_indep: np.ndarray | None = None

    def __post_init__(self):
        grid = tuple(self.grid)
        object.__setattr__(self, "grid", grid)
        g = _frozen(self.g_cls)
        n = tuple(ax.n for ax in grid)
        if g.ndim != 1 + len(grid) or g.shape[1:] != n:
            raise InvalidInput(f"g_cls has shape {g.shape}, the grid needs (C, {n})")
        if not np.isfinite(np.sum(g)) or (g.size and np.min(g) < 0):
            raise InvalidInput("gradient second moments must be finite and non-negative")
        object.__setattr__(self, "g_cls", g)
        for name in ("g_pos", "g_indep"):
            v = getattr(self, name)
            v = (
                np.zeros(g.shape[0])
                if v is None
                else np.broadcast_to(np.asarray(v, float), g.shape[:1])
            )
            if not np.isfinite(np.sum(v)):
                raise InvalidInput("gradient cross moments must be finite")
            object.__setattr__(self, name, _frozen(v))

    @classmethod
    def ones(cls, m: Moments, value: float = 1.0) -> Grad:
        """g = value at every element of a record's shape, uncorrelated elements (the
        output gradient of a random readout)."""
        grid = tuple(G.uniform_axis(s) for s in m.spatial)
        return cls(grid, np.full((m.channels,) + (1,) * len(grid), float(value)))

    def replace(self, **changes) -> Grad:
        fields = {k: getattr(self, k) for k in ("grid", "g_cls", "g_pos", "g_indep")}
        fields.update(changes)
        return Grad(**fields)

    @property
    def channels(self) -> int:
        return int(self.g_cls.shape[0])

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(ax.length for ax in self.grid)

    @property
    def positions(self) -> int:
        return int(np.prod(self.spatial, dtype=np.int64))

    @property
    def g(self) -> np.ndarray:
        return G.expand(self.g_cls, self.grid)

    def g_channel(self) -> np.ndarray:
        """Per channel, g averaged over positions (read-only; computed once per record, which
        is immutable)."""
        cached = self.__dict__.get("_g_channel")
        if cached is None:
            cached = _frozen(G.wsum(self.g_cls, G.class_weights(self.grid)))
            object.__setattr__(self, "_g_channel", cached)
        return cached

    def g_mean(self) -> float:
        return float(np.mean(self.g_channel()))

    def total(self) -> float:
        """Σ over channels and positions of g: E‖δ‖² of one sample."""
        return float(np.sum(self.g_channel()) * self.positions)

    def __add__(self, other: Grad) -> Grad:
        """Gradients of two consumers add; their cross term vanishes with independent
        zero-mean weights in at least one of the two paths."""
        if self.channels != other.channels:
            raise InvalidInput("cannot add gradients of different channel counts")
        grid, maps = G.refine_grids([self.grid, other.grid])
        return Grad(
            grid,
            G.take(self.g_cls, maps[0]) + G.take(other.g_cls, maps[1]),
            self.g_pos + other.g_pos,
            self.g_indep + other.g_indep,
        )

    def summary(self) -> dict:
        return {
            "g_mean": self.g_mean(),
            "g_pos_mean": float(np.mean(self.g_pos)),
            "g_indep_mean": float(np.mean(self.g_indep)),
            "g_channel": self.g_channel().tolist(),
        }


def pos_pair_products(a: np.ndarray, b: np.ndarray, grid) -> np.ndarray:
    """Per channel, the average over position pairs p ≠ p′ of a(p) b(p′) (class arrays);
    for a single position, a·b."""
    w = G.class_weights(grid)
    p = float(np.prod([ax.length for ax in grid])) if grid else 1.0
    sa = G.wsum(a, w)
    sb = G.wsum(b, w)
    if p <= 1:
        return sa * sb
    sab = G.wsum(a * b, w)
    return (p * sa * sb - sab) / (p - 1)


def pair_average(kind: str, a: np.ndarray, b: np.ndarray, grid) -> np.ndarray:
    """Average over the pairs of cross-moment type ``kind`` of a(p) b(p′) (class arrays):
    distinct positions (cov_pos, cov_pair_pos), all position pairs (cov_indep) or the
    same position (cov_pair)."""
    if kind in ("cov_pos", "cov_pair_pos"):
        return pos_pair_products(a, b, grid)
    if kind == "cov_indep":
        return all_pair_products(a, b, grid)
    return G.wsum(a * b, G.class_weights(grid))


def pair_model(m: Moments, kind: str):
    """The position model of a cross moment: E[x(p) x′(p′)] = μ(p)μ(p′) + ρ σ(p)σ(p′),
    σ = √(q − μ²) per position and one centred correlation ρ per channel chosen so that
    the pair average equals the stored moment. Returns (μ, σ, ρ): stationary correlation
    with border-dependent amplitudes, as zero padding produces."""
    mu = m.mean_cls
    sig = np.sqrt(np.maximum(m.q_cls - mu * mu, 0.0))
    conn = getattr(m, kind) - pair_average(kind, mu, mu, m.grid)
    den = pair_average(kind, sig, sig, m.grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(den > 0, np.clip(conn / den, -1.0, 1.0), 0.0)
    return mu, sig, rho


def pair_models(m: Moments):
    """:func:`pair_model` for every tracked cross moment at once: (μ, σ, {kind: ρ})
    (cached on the immutable record)."""
    cached = m.__dict__.get("_pair_models")
    if cached is not None:
        return cached
    out = _pair_models(m)
    object.__setattr__(m, "_pair_models", out)
    return out


def _pair_models(m: Moments):
    mu = m.mean_cls
    sig = np.sqrt(np.maximum(m.q_cls - mu * mu, 0.0))
    w = m.weights
    p = float(m.positions)
    stacked = np.concatenate([mu, sig, mu * mu, sig * sig]).reshape(4, m.channels, -1)
    a1m, a1s, a2m, a2s = stacked @ w.reshape(-1)
    rhos = {}
    for kind in CROSS:
        val = getattr(m, kind)
        if val is None:
            continue
        if kind == "cov_pair":
            pm, ps = a2m, a2s
        elif kind == "cov_indep" or p <= 1:
            pm, ps = a1m * a1m, a1s * a1s
        else:
            pm, ps = (p * a1m * a1m - a2m) / (p - 1), (p * a1s * a1s - a2s) / (p - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rhos[kind] = np.where(ps > 0, np.clip((val - pm) / ps, -1.0, 1.0), 0.0)
    sig.setflags(write=False)
    return mu, sig, rhos


def all_pair_products(a: np.ndarray, b: np.ndarray, grid) -> np.ndarray:
    """Per channel, the average over all position pairs (p, p′) of a(p) b(p′)."""
    w = G.class_weights(grid)
    return G.wsum(a, w) * G.wsum(b, w)
