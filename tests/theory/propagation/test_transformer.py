"""A pre-norm transformer encoder (timm ViT layout: class token, position embedding,
LayerNorm → attention → residual, LayerNorm → MLP with GELU → residual, class-token
head) through the engine vs Monte Carlo of the same random numpy network.

Stated tolerance: 4 SE plus 6% on q at every block output (the attention approximations
of selfattn, measured within 5% in test_attention, compound over two residual blocks)
and 15% on the weight-gradient norms."""

import numpy as np
import pytest
from scipy import special

from sigprop.theory.propagation import TheoryGraph, TheoryNode, propagate

from . import mc
from .test_attention import _backward, _forward

N = TheoryNode
D, T, H, HID, B = 128, 17, 4, 256, 8


def _ln(x):  # over the last dim of (B, T, D)
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)


def _ln_vjp(x, d):
    xh = _ln(x)
    s = np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return (d - d.mean(-1, keepdims=True) - xh * (d * xh).mean(-1, keepdims=True)) / s


def _gelu(x):
    return x * special.ndtr(x)


def _dgelu(x):
    return special.ndtr(x) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def _weights(rng):
    def w2(o, i, gain=1.0):
        w = rng.standard_normal((o, i)) * np.sqrt(gain / i)
        return w * w

    return {
        "in": w2(3 * D, D),
        "out": w2(D, D),
        "fc1": w2(HID, D, 2.0),
        "fc2": w2(D, HID),
        "head": w2(10, D),
    }


def _graph(w, cls, pos):
    n = [
        N("x", "input", (), {"shape": [D, T - 1]}),
        N("cls", "constant", (), {"value": cls}),
        N("tok", "cat", ("cls", "x"), {"axis": 0}),
        N("pos", "constant", (), {"value": pos}),
        N("emb", "add", ("tok", "pos")),
        N("ln1", "layernorm", ("emb",)),
        N("attn", "attention", ("ln1",), {"heads": H, "w2_in": w["in"], "w2_out": w["out"]}),
        N("res1", "add", ("emb", "attn")),
        N("ln2", "layernorm", ("res1",)),
        N("fc1", "linear", ("ln2",), {"w2": w["fc1"]}),
        N("act", "elementwise", ("fc1",), {"activation": "gelu"}),
        N("fc2", "linear", ("act",), {"w2": w["fc2"]}),
        N("res2", "add", ("res1", "fc2")),
        N("cls_out", "select_position", ("res2",), {"index": 0}),
        N("head", "linear", ("cls_out",), {"w2": w["head"]}),
    ]
    return TheoryGraph(tuple(n))


def _run(rng, w2, cls, pos):
    sign = {k: rng.choice([-1.0, 1.0], v.shape) * np.sqrt(v) for k, v in w2.items()}
    wq, wk, wv = np.split(sign["in"], 3)
    x = rng.standard_normal((B, T - 1, D))
    emb = np.concatenate([np.broadcast_to(cls.T[None], (B, 1, D)), x], 1) + pos.T[None]
    a_in = _ln(emb)
    att, _, cache = _forward(a_in, (wq, wk, wv, sign["out"]), H)
    res1 = emb + att
    l2 = _ln(res1)
    f1 = l2 @ sign["fc1"].T
    a = _gelu(f1)
    res2 = res1 + a @ sign["fc2"].T
    y = res2[:, 0] @ sign["head"].T
    q = {
        "attn": (att**2).mean(),
        "res1": (res1**2).mean(),
        "res2": (res2**2).mean(),
        "head": (y**2).mean(),
    }
    # backward of L = Σ r·y
    r = rng.standard_normal(y.shape)
    grads = {"head": np.sum((r.T @ res2[:, 0]) ** 2) / B}
    d2 = np.zeros_like(res2)
    d2[:, 0] = r @ sign["head"]
    da = d2 @ sign["fc2"]
    grads["fc2"] = np.sum(np.einsum("bto,bti->oi", d2, a) ** 2) / B
    df1 = da * _dgelu(f1)
    grads["fc1"] = np.sum(np.einsum("bto,bti->oi", df1, l2) ** 2) / B
    d1 = d2 + _ln_vjp(res1, df1 @ sign["fc1"])
    datt_in, dq, dk, dv = _backward(a_in, (wq, wk, wv, sign["out"]), H, cache, d1)
    o = cache[-1] @ cache[5]  # attention output per head (b, h, t, dh)
    o = o.transpose(0, 2, 1, 3).reshape(B, T, D)
    grads["attn.out_proj"] = np.sum(np.einsum("bto,bti->oi", d1, o) ** 2) / B
    grads["attn.in_proj"] = sum(
        np.sum(np.einsum("bto,bti->oi", dz, a_in) ** 2) / B for dz in (dq, dk, dv)
    )
    return q, grads


@pytest.mark.slow
def test_vit_block_against_monte_carlo():
    rng = np.random.default_rng(2)
    w2 = _weights(rng)
    cls = rng.standard_normal((D, 1)) * 0.02
    pos = rng.standard_normal((D, T)) * 0.02
    res = propagate(_graph(w2, cls, pos), batch_size=B)
    runs = [_run(rng, w2, cls, pos) for _ in range(24)]
    for name in ("attn", "res1", "res2", "head"):
        mc.se_check(res.nodes[name].forward["q_mean"], [r[0][name] for r in runs], 4.0, 0.06, name)
    att = res.nodes["attn"].weight_grad
    pred = {
        "head": res.nodes["head"].weight_grad,
        "fc2": res.nodes["fc2"].weight_grad,
        "fc1": res.nodes["fc1"].weight_grad,
        "attn.out_proj": att["out_proj"],
        "attn.in_proj": att["in_proj"],
    }
    for name, value in pred.items():
        mc.se_check(value, [r[1][name] for r in runs], 4.0, 0.15, "dW " + name)
