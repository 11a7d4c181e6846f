"""End to end: a random ResNet-like numpy network (conv-BN-ReLU blocks, an identity and a
projection shortcut, two stages, 8x8 input, train-mode BatchNorm, batch 32) propagated by
the engine vs a Monte Carlo of the same network over many weight draws.

The weights are one fixed draw of magnitudes (pruned or not) with random signs per
replicate: the sign-symmetric model of the rules, with w2 the measured squares. Weight
gradients are those of the batch loss L = Σ_b r_b·y_b (r iid), ‖∇_W L‖²/B.

Stated tolerance: 4 SE plus 3% for forward q at every block output (finite width 32/64:
pre-activations are not exactly Gaussian, E[x̃x̃′/σ²] ≈ E[x̃x̃′]/E[σ²] in BatchNorm), and
4 SE plus 10% for the per-layer weight-gradient norms (gradient independence)."""

import numpy as np
import pytest

from sigprop.theory.propagation import TheoryGraph, TheoryNode, propagate

from . import mc

N = TheoryNode
C1, C2, B = 32, 64, 32
LAYERS = [  # name, C_in, C_out, k, stride, padding
    ("stem", 3, C1, 3, 1, 1),
    ("b1.c1", C1, C1, 3, 1, 1),
    ("b1.c2", C1, C1, 3, 1, 1),
    ("b2.c1", C1, C2, 3, 2, 1),
    ("b2.c2", C2, C2, 3, 1, 1),
    ("b2.sc", C1, C2, 1, 2, 0),
]


def _w2(rng, cin, cout, k, density):
    """Squared weights of one kaiming (fan_out) draw, pruned at random: the measured
    magnitudes the torch side passes; Monte Carlo re-draws only the signs."""
    w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cout * k * k))
    return w * w * (rng.random(w.shape) < density)


def _graph(w2s, fc_w2):
    n = [N("x", "input", (), {"shape": [3, 8, 8]})]

    def cbr(name, inp, relu=True):
        _, _, _, k, s, p = next(layer for layer in LAYERS if layer[0] == name)
        n.append(N(name, "conv", (inp,), {"w2": w2s[name], "stride": s, "padding": p}))
        n.append(N(name + ".bn", "batchnorm", (name,), {"training": True}))
        if relu:
            n.append(N(name + ".relu", "elementwise", (name + ".bn",), {"activation": "relu"}))
            return name + ".relu"
        return name + ".bn"

    h = cbr("stem", "x")
    a = cbr("b1.c2", cbr("b1.c1", h), relu=False)
    n.append(N("b1.add", "add", (a, h)))
    n.append(N("b1", "elementwise", ("b1.add",), {"activation": "relu"}))
    a = cbr("b2.c2", cbr("b2.c1", "b1"), relu=False)
    sc = cbr("b2.sc", "b1", relu=False)
    n.append(N("b2.add", "add", (a, sc)))
    n.append(N("b2", "elementwise", ("b2.add",), {"activation": "relu"}))
    n.append(N("pool", "adaptive_avg_pool", ("b2",), {"output_size": 1}))
    n.append(N("flat", "flatten", ("pool",)))
    n.append(N("fc", "linear", ("flat",), {"w2": fc_w2}))
    return TheoryGraph(tuple(n))


def _conv_wgrad(x, d, k, s, p):
    """∂L/∂W = Σ_{b,p} δ(b, o, p) x_pad(b, i, s·p + t)."""
    from numpy.lib.stride_tricks import sliding_window_view

    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return np.einsum("bohw,bihwkl->oikl", d, win, optimize=True)


def _run(rng, w2s, fc_w2):
    """One weight draw: forward, then backward from L = Σ r ⊙ y, r iid N(0, 1)."""
    w = {k: rng.choice([-1.0, 1.0], v.shape) * np.sqrt(v) for k, v in w2s.items()}
    wf = rng.choice([-1.0, 1.0], fc_w2.shape) * np.sqrt(fc_w2)
    x = rng.standard_normal((B, 3, 8, 8))
    cache = {}

    def cbr(name, inp, relu=True):
        _, _, _, k, s, p = next(layer for layer in LAYERS if layer[0] == name)
        h = mc.conv(inp, w[name], s, p)
        y = mc.bn_train(h)
        cache[name] = (inp, h, y)
        return np.maximum(y, 0) if relu else y

    out = {}
    out["stem.relu"] = h = cbr("stem", x)
    a = cbr("b1.c2", cbr("b1.c1", h), relu=False)
    out["b1"] = b1 = np.maximum(a + h, 0)
    a2 = cbr("b2.c2", cbr("b2.c1", b1), relu=False)
    sc = cbr("b2.sc", b1, relu=False)
    out["b2"] = b2 = np.maximum(a2 + sc, 0)
    pool = b2.mean(axis=(2, 3))
    out["fc"] = y = pool @ wf.T
    # ---- backward
    r = rng.standard_normal(y.shape)
    grads = {"fc": np.sum((r.T @ pool) ** 2) / B}
    d_b2 = np.broadcast_to((r @ wf)[:, :, None, None] / 16, b2.shape) * (b2 > 0)

    def back(name, dy, relu_out=None):
        inp, h, yv = cache[name]
        _, _, _, k, s, p = next(layer for layer in LAYERS if layer[0] == name)
        if relu_out is not None:
            dy = dy * (yv > 0)
        dh = mc.bn_train_vjp(h, dy)
        kept = w2s[name] > 0  # the norm over the kept weights, E‖∇_W L ⊙ M‖²
        grads[name] = np.sum((_conv_wgrad(inp, dh, k, s, p) * kept) ** 2) / B
        return mc.conv_transpose(dh, w[name], inp.shape[2:], s, p)

    d_b1 = back("b2.sc", d_b2) + back("b2.c1", back("b2.c2", d_b2), relu_out=True)
    d_b1 = d_b1 * (b1 > 0)
    d_h = d_b1 + back("b1.c1", back("b1.c2", d_b1), relu_out=True)
    back("stem", d_h * (h > 0))
    return {k: float(np.mean(v * v)) for k, v in out.items()}, grads


@pytest.mark.parametrize("density", [1.0, 0.3])
def test_resnet_like_network_against_monte_carlo(density):
    rng = np.random.default_rng(int(density * 10))
    w2s = {name: _w2(rng, cin, cout, k, density) for name, cin, cout, k, _, _ in LAYERS}
    fc_w2 = np.full((10, C2), 1.0 / C2)
    res = propagate(_graph(w2s, fc_w2), q0=1.0, batch_size=B)
    reps = [_run(rng, w2s, fc_w2) for _ in range(24)]
    for name in ("stem.relu", "b1", "b2", "fc"):
        mc.se_check(res.nodes[name].forward["q_mean"], [r[0][name] for r in reps], 4.0, 0.03, name)
    for name in [layer[0] for layer in LAYERS] + ["fc"]:
        mc.se_check(
            res.nodes[name].weight_grad, [r[1][name] for r in reps], 4.0, 0.10, "dW " + name
        )
