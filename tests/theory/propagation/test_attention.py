"""Self-attention rules against Monte Carlo of random numpy attention layers (D = 256).

The rule is exact for iid Gaussian logits independent of the values; at finite head size
d the logit variance fluctuates from query to query, which biases E[Σ A²] (Jensen). The
stated allowance on top of 4 SE is 5% for q and cov_pos, 8% for the input pair's
moments and 12% for the backward (the softmax Jacobian also correlates with the keys);
measured worst cases (40 replicates): q −2%, cov_pos −3%, cov_pair −7%, g_q −10%
(T = 65, σ ≈ 1)."""

import numpy as np
import pytest
from scipy import special

from sigprop.theory.propagation import Grad, attention, attention_backward, attention_weight_grads

from . import mc


def _forward(x, w, heads):
    """x (B, T, D); returns out, attn (pre-proj) and the cache for the backward."""
    wq, wk, wv, wo = w
    b, t, d = x.shape
    dh = d // heads
    q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
    qh = q.reshape(b, t, heads, dh).transpose(0, 2, 1, 3)
    kh = k.reshape(b, t, heads, dh).transpose(0, 2, 1, 3)
    vh = v.reshape(b, t, heads, dh).transpose(0, 2, 1, 3)
    a = special.softmax(qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(dh), axis=-1)
    o = (a @ vh).transpose(0, 2, 1, 3).reshape(b, t, d)
    return o @ wo.T, o, (q, k, v, qh, kh, vh, a)


def _backward(x, w, heads, cache, dout):
    wq, wk, wv, wo = w
    q, k, v, qh, kh, vh, a = cache
    b, t, d = x.shape
    dh = d // heads
    do = (dout @ wo).reshape(b, t, heads, dh).transpose(0, 2, 1, 3)
    da = do @ vh.transpose(0, 1, 3, 2)
    dvh = a.transpose(0, 1, 3, 2) @ do
    ds = a * (da - np.sum(a * da, axis=-1, keepdims=True))
    dqh = ds @ kh / np.sqrt(dh)
    dkh = ds.transpose(0, 1, 3, 2) @ qh / np.sqrt(dh)
    merge = lambda z: z.transpose(0, 2, 1, 3).reshape(b, t, d)  # noqa: E731
    dq, dk, dv = merge(dqh), merge(dkh), merge(dvh)
    return dq @ wq + dk @ wk + dv @ wv, dq, dk, dv


@pytest.mark.parametrize("t,scale,heads", [(16, 1.0, 4), (65, 1.0, 4), (16, 2.5, 4), (33, 2.0, 2)])
def test_attention_against_monte_carlo(t, scale, heads):
    rng = np.random.default_rng(t * 10 + heads)
    d, b, reps = 256, 6, 24
    w2 = [np.full((d, d), s / d) for s in (scale, scale, 1.0, 1.0)]
    kw = dict(mu=0.1, su=0.3, sv=0.5, sw=1.0)
    _, mom = mc.structured(rng, 2, (d, t), **kw, pair=(0.6, 0.4))
    xm = mc.moments_of((d, t), mom)
    parts = attention(xm, heads, np.concatenate(w2[:3]), w2[3])
    g = Grad.ones(parts["out"], 1.0)
    gx, grads = attention_backward(xm, parts, g, heads, np.concatenate(w2[:3]), w2[3])
    acc = {
        k: []
        for k in (
            "q",
            "cov_pos",
            "cov_indep",
            "cov_pair",
            "cov_pair_pos",
            "gx",
            "gv",
            "gq",
            "gk",
            "qa",
        )
    }
    for _ in range(reps):
        x, _ = mc.structured(rng, b, (d, t), **kw, pair=(0.6, 0.4))
        x = x.transpose(0, 2, 1)
        w = [rng.standard_normal(w_.shape) * np.sqrt(w_) for w_ in w2]
        out, o, cache = _forward(x, w, heads)
        s = mc.stats(out.transpose(0, 2, 1), pair=True)
        for k in ("cov_pos", "cov_indep", "cov_pair", "cov_pair_pos"):
            acc[k].append(s[k].mean())
        acc["q"].append(s["q"].mean())
        acc["qa"].append((o * o).mean())
        dx, dq, dk, dv = _backward(x, w, heads, cache, rng.standard_normal(out.shape))
        acc["gx"].append((dx * dx).mean())
        acc["gv"].append((dv * dv).mean())
        acc["gq"].append((dq * dq).mean())
        acc["gk"].append((dk * dk).mean())
    out = parts["out"]
    mc.se_check(parts["attn"].q_mean(), acc["qa"], 4.0, 0.05, "attn q")
    mc.se_check(out.q_mean(), acc["q"], 4.0, 0.05, "out q")
    for k, rel in (
        ("cov_pos", 0.05),
        ("cov_indep", 0.05),
        ("cov_pair", 0.08),
        ("cov_pair_pos", 0.08),
    ):
        mc.se_check(float(np.mean(getattr(out, k))), acc[k], 4.0, rel, k)
    mc.se_check(gx.g_mean(), acc["gx"], 4.0, 0.12, "g_x")
    mc.se_check(grads["v"].g_mean(), acc["gv"], 4.0, 0.12, "g_v")
    mc.se_check(grads["q"].g_mean(), acc["gq"], 4.0, 0.12, "g_q")
    mc.se_check(grads["k"].g_mean(), acc["gk"], 4.0, 0.12, "g_k")


def test_weight_grads_split_in_proj():
    d, t = 16, 5
    from sigprop.theory.propagation import Moments

    x = Moments.gaussian_input((d, t))
    w2_in, w2_out = np.full((3 * d, d), 1.0 / d), np.full((d, d), 1.0 / d)
    parts = attention(x, 2, w2_in, w2_out)
    gx, grads = attention_backward(x, parts, Grad.ones(parts["out"]), 2, w2_in, w2_out)
    wg = attention_weight_grads(x, parts, grads, w2_in, w2_out)
    assert wg["in_proj"] == pytest.approx(wg["in_proj_q"] + wg["in_proj_k"] + wg["in_proj_v"])
    half = np.ones((3 * d, d))
    half[:, ::2] = 0
    wg2 = attention_weight_grads(x, parts, grads, w2_in, w2_out, mask_in=half)
    assert wg2["in_proj_v"] == pytest.approx(wg["in_proj_v"] / 2)
