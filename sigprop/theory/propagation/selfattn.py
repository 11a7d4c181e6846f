"""Multi-head self-attention on tokens (``nn.MultiheadAttention``, timm's ``Attention``).

Input: a record (D, T) of T tokens. Projections Q, K, V = W x + b (packed in_proj rows
[q; k; v], squared weights ``w2_in`` of shape (3D, D)), h heads of size d = D/h, logits
s_ij = Q_i·K_j/√d per head, A = softmax_j(s), head outputs Σ_j A_ij V_j, then out_proj.

Approximations (stated; mean field at independent weights, Noci et al. 2022,
arXiv 2206.03126, §3 for the rank-collapse mechanism):

1. Softmax is shift invariant, so only the key part not shared by all keys matters:
   K_j = K̄ + K̃_j with Var K̃ = q_K − cov_pos_K. Given a query, the logits are iid across
   keys, Gaussian with variance σ_h² = (1/d) Σ_{c∈h} q_Q(c)(q_K(c) − cov_pos_K(c)) (token
   averages; the same for every query).
2. The attention weights are independent of the values (independent W_V).
3. Two queries i ≠ i′ of one sample see logit pairs of correlation
   λ = Σ cov_pos_Q (q_K − cov_pos_K) / Σ q_Q (q_K − cov_pos_K); the input pair's logits
   (same or different query) correlate through cov_pair_Q (cov_pair_pos_Q) and
   cov_pair_K − cov_pair_pos_K; independent samples do not correlate.
4. Then, with S2 = E[Σ_j A_ij²] and S11(λ) = E[Σ_j A_ij A′_ij] (:mod:`.softmax`, exact
   for iid Gaussian logits): q_out = S2 q̄_V + (1 − S2) cov_pos_V, cross moments
   S11(λ) K_same + (1 − S11(λ)) K_diff with K_same/K_diff the V moments at equal/different
   keys, mean_out = the token mean of E[V], cov_indep_out = cov_indep_V (rows of A sum
   to 1). Train-mode dropout on A (probability p) multiplies S2 by 1/(1 − p).

Backward (gradient independence): g_V = S2 ḡ + (T − 1) S11 g_pos (per channel; g_pos the
output gradient's cross-token moment), its cross-token moment (1 − S2) ḡ/(T − 1) +
(1 − 1/T) g_pos and cross-sample moment g_indep;
through the softmax E[(∂L/∂s_ij)²] summed over keys = R G_h with
R = E[Σ_j A_j²(1 − 2A_j + Σ_k A_k²)] = S2 − 2 S3 + S22 and
G_h = Σ_{c∈h} ḡ(c)(q̄_V(c) − cov_pos_V(c)); g_Q(c) = R G_h (q_K(c) − cov_pos_K(c))/d,
g_K(c) = R G_h q_Q(c)/d, both independent of the token (A treated as independent of K̃ in
the product, an approximation), times 1/(1 − p) under dropout.
"""

from __future__ import annotations

import numpy as np

from sigprop.theory.propagation import dense as L
from sigprop.theory.propagation import grid as G
from sigprop.theory.propagation.records import Grad, Moments
from sigprop.theory.propagation.softmax import softmax_overlap, softmax_stats
from sigprop.validate import InvalidInput, positive_int

__all__ = ["attention", "attention_backward", "attention_weight_grads", "AttentionParts"]


class AttentionParts:
    """Forward records of one attention node: q, k, v, attn (heads before out_proj), out."""

    def __init__(self, **records):
        self.records = records

    def __getitem__(self, key) -> Moments:
        return self.records[key]


def _split(w2_in, d: int, name: str) -> list[np.ndarray]:
    w2 = np.asarray(w2_in, dtype=float)
    if w2.shape != (3 * d, d):
        raise InvalidInput(f"{name} must have shape ({3 * d}, {d}), got {w2.shape}")
    return [w2[:d], w2[d : 2 * d], w2[2 * d :]]


def _split_vec(v, d: int, name: str):
    if v is None:
        return [None, None, None]
    v = np.asarray(v, dtype=float)
    if v.shape != (3 * d,):
        raise InvalidInput(f"{name} must have shape ({3 * d},), got {v.shape}")
    return [v[:d], v[d : 2 * d], v[2 * d :]]


def _heads(d: int, heads) -> tuple[int, int]:
    h = positive_int(heads, "heads")
    if d % h:
        raise InvalidInput(f"{d} features do not split into {h} heads")
    return h, d // h


def _p(p) -> float:
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise InvalidInput(f"attention dropout must lie in [0, 1), got {p}")
    return p


def _projections(x: Moments, w2_in, b2_in, b_in):
    if len(x.grid) != 1:
        raise InvalidInput("attention needs a token record of shape (D, T)")
    d = x.channels
    ws = _split(w2_in, d, "w2_in")
    b2s, bs = _split_vec(b2_in, d, "b2_in"), _split_vec(b_in, d, "b_in")
    return [L.linear(x, w, b2, b) for w, b2, b in zip(ws, b2s, bs)]


def _head_sums(values: np.ndarray, h: int) -> np.ndarray:
    return values.reshape(h, -1).sum(axis=1)


def _logit_stats(q: Moments, k: Moments, h: int, dh: int):
    kq = q.q_channel()
    kk = np.maximum(k.q_channel() - k.cov_pos, 0.0)
    den = _head_sums(kq * kk, h)
    sigma = np.sqrt(den / dh)
    with np.errstate(divide="ignore", invalid="ignore"):

        def corr(num):
            return np.where(den > 0, _head_sums(num, h) / den, 0.0)

        lam = {"cov_pos": corr(q.cov_pos * kk)}
        if q.tracks_pair:
            kp = k.cov_pair - k.cov_pair_pos
            lam["cov_pair"] = corr(q.cov_pair * kp)
            lam["cov_pair_pos"] = corr(q.cov_pair_pos * kp)
    return sigma, kq, kk, lam


def attention(
    x: Moments,
    heads: int,
    w2_in,
    w2_out,
    b2_in=None,
    b2_out=None,
    b_in=None,
    b_out=None,
    dropout: float = 0.0,
    training: bool = False,
) -> AttentionParts:
    """Self-attention forward (module doc); returns the records q, k, v, attn, out."""
    d = x.channels
    h, dh = _heads(d, heads)
    p = _p(dropout) if training else 0.0
    q, k, v = _projections(x, w2_in, b2_in, b_in)
    t = x.positions
    sigma, _, _, lam = _logit_stats(q, k, h, dh)
    s2 = np.array([softmax_stats(s, t)["S2"] for s in sigma])
    rep = np.repeat(np.arange(h), dh)
    qv, cv = v.q_channel(), v.cov_pos
    q_att = (s2 / (1.0 - p))[rep] * qv + (1.0 - s2[rep]) * cv
    cross = {"cov_indep": v.cov_indep}
    s11 = np.array([softmax_overlap(s, t, lp) for s, lp in zip(sigma, lam["cov_pos"])])
    cross["cov_pos"] = s11[rep] * qv + (1.0 - s11[rep]) * cv
    if v.tracks_pair:
        for key in ("cov_pair", "cov_pair_pos"):
            o = np.array([softmax_overlap(s, t, lp) for s, lp in zip(sigma, lam[key])])
            cross[key] = o[rep] * v.cov_pair + (1.0 - o[rep]) * v.cov_pair_pos
    grid = (G.uniform_axis(t),)
    att = Moments(grid, np.maximum(q_att, 0.0)[:, None], v.mean_channel()[:, None], **cross)
    w2o = np.asarray(w2_out, dtype=float)
    if w2o.shape != (d, d):
        raise InvalidInput(f"w2_out must have shape ({d}, {d}), got {w2o.shape}")
    out = L.linear(att, w2o, b2_out, b_out)
    return AttentionParts(q=q, k=k, v=v, attn=att, out=out)


def attention_backward(
    x: Moments,
    parts: AttentionParts,
    g: Grad,
    heads: int,
    w2_in,
    w2_out,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Grad, dict[str, Grad]]:
    """g at the attention input and at its internal nodes (q, k, v, attn)."""
    d = x.channels
    h, dh = _heads(d, heads)
    p = _p(dropout) if training else 0.0
    wq, wk, wv = _split(w2_in, d, "w2_in")
    q, k, v = parts["q"], parts["k"], parts["v"]
    t = x.positions
    g_att = L.linear_backward(parts["attn"], g, w2_out)
    gbar = g_att.g_channel()
    sigma, kq, kk, lam = _logit_stats(q, k, h, dh)
    st = [softmax_stats(s, t) for s in sigma]
    s2 = np.array([s["S2"] for s in st])
    r = np.array([s["S2"] - 2 * s["S3"] + s["S22"] for s in st]) / (1.0 - p)
    rep = np.repeat(np.arange(h), dh)
    gh = _head_sums(gbar * np.maximum(v.q_channel() - v.cov_pos, 0.0), h)
    uniform = (G.uniform_axis(t),)

    def tok(vec):
        return Grad(uniform, np.maximum(vec, 0.0)[:, None])

    # δ_V(j) = Σ_i A_ij δ_i: coherent query gradients (g_pos) add Σ_{i≠i′} E[A_ij A_i′j]
    s11 = np.array([softmax_overlap(s, t, lp) for s, lp in zip(sigma, lam["cov_pos"])])
    g_v = Grad(
        uniform,
        np.maximum((s2 / (1.0 - p))[rep] * gbar + (t - 1) * s11[rep] * g_att.g_pos, 0.0)[:, None],
        (1.0 - s2[rep]) / max(t - 1, 1) * gbar + (1.0 - 1.0 / t) * g_att.g_pos,
        g_att.g_indep,
    )
    g_q = tok((r * gh)[rep] * kk / dh)  # softmax gradients are centred per query: the
    g_k = tok((r * gh)[rep] * kq / dh)  # cross moments of g_q, g_k are taken as 0
    g_x = (
        L.linear_backward(x, g_q, wq)
        + L.linear_backward(x, g_k, wk)
        + L.linear_backward(x, g_v, wv)
    )
    return g_x, {"q": g_q, "k": g_k, "v": g_v, "attn": g_att, "out": g}


def attention_weight_grads(
    x: Moments,
    parts: AttentionParts,
    grads: dict[str, Grad],
    w2_in,
    w2_out,
    mask_in=None,
    mask_out=None,
    batch_size: int = 1,
) -> dict[str, float]:
    """E‖∇_W L ⊙ M‖²/B (batch loss) for in_proj (its q, k, v row blocks and their sum)
    and out_proj."""
    d = x.channels
    ws = _split(w2_in, d, "w2_in")
    masks = [None] * 3 if mask_in is None else _split(mask_in, d, "mask_in")
    out = {}
    for name, w, mk in zip("qkv", ws, masks):
        out[f"in_proj_{name}"] = L.linear_weight_grad(x, grads[name], w, mk, batch_size=batch_size)
    out["in_proj"] = out["in_proj_q"] + out["in_proj_k"] + out["in_proj_v"]
    out["out_proj"] = L.linear_weight_grad(
        parts["attn"], grads["out"], w2_out, mask_out, batch_size=batch_size
    )
    return out
