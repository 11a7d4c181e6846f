"""The graph engine: chains reproduce sigprop.theory.meanfield exactly; unmapped nodes,
fan-out, validation, JSON, and the torch-free import."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigprop.theory import meanfield
from sigprop.theory.propagation import TheoryGraph, TheoryNode, propagate
from sigprop.theory.propagation.engine import chain
from sigprop.validate import InvalidInput

N = TheoryNode


def _mlp(act, sw, sb, width, depth):
    nodes = []
    for i in range(depth):
        nodes.append(
            (
                f"fc{i}",
                "linear",
                {"w2": np.full((width, width), sw**2 / width), "b2": np.full(width, sb**2)},
            )
        )
        nodes.append((f"act{i}", "elementwise", {"activation": act}))
    return chain(nodes, (width,))


@pytest.mark.parametrize(
    "act,sw,sb", [("tanh", 1.5, 0.3), ("relu", 1.2, 0.1), ("erf", 2.0, 0.5), ("gelu", 1.4, 0.2)]
)
def test_chain_reproduces_meanfield_q_and_c_maps(act, sw, sb):
    depth, q0, c0 = 6, 0.8, 0.4
    res = propagate(_mlp(act, sw, sb, 16, depth), q0=q0, c0=c0)
    q, c = sw**2 * q0 + sb**2, (sw**2 * c0 * q0 + sb**2) / (sw**2 * q0 + sb**2)
    for i in range(depth):
        fwd = res.nodes[f"fc{i}"].forward
        assert fwd["q_mean"] == pytest.approx(q, rel=1e-10)
        assert fwd["correlation"] == pytest.approx(c, rel=1e-7, abs=1e-9)
        c = float(meanfield.c_map(act, sw, sb, c, q=q))
        q = float(meanfield.q_map(act, sw, sb, q))


@pytest.mark.parametrize("act,sw,sb", [("tanh", 1.5, 0.3), ("relu", 1.3, 0.2), ("erf", 1.2, 0.1)])
def test_chain_gradients_are_chi1_per_layer(act, sw, sb):
    """At the fixed point every layer multiplies g by χ₁ (Schoenholz et al. 2017, eq. 13)."""
    qs = float(meanfield.q_star(act, sw, sb))
    res = propagate(_mlp(act, sw, sb, 8, 5), q0=(qs - sb**2) / sw**2)
    chi = float(meanfield.chi1(act, sw, sb))
    for i in range(4):
        ratio = res.nodes[f"fc{i}"].backward["g_mean"] / res.nodes[f"fc{i + 1}"].backward["g_mean"]
        assert ratio == pytest.approx(chi, rel=1e-9)
    # weight gradients: Σ g(o) q(i) over the kept weights of a dense layer, one sample
    wg = res.nodes["fc2"].weight_grad
    g = res.nodes["fc2"].backward["g_mean"]
    q_in = res.nodes["act1"].forward["q_mean"]
    assert wg == pytest.approx(64 * g * q_in, rel=1e-9)


def _graph_with_unmapped():
    return TheoryGraph(
        (
            N("x", "input", (), {"shape": [4, 6, 6]}),
            N("c", "conv", ("x",), {"w2": np.full((4, 4, 3, 3), 0.05), "padding": 1}),
            N("r", "elementwise", ("c",), {"activation": "relu"}),
            N("u", "unmapped", ("r",), {"reason": "a custom op"}),
            N("after", "elementwise", ("u",), {"activation": "relu"}),
            N("side", "adaptive_avg_pool", ("r",), {"output_size": 1}),
            N("f", "flatten", ("side",)),
        )
    )


def test_unmapped_stops_propagation_without_guessing():
    res = propagate(_graph_with_unmapped())
    assert res.unreachable == ("u", "after")
    assert "after" not in res.nodes and "u" not in res.nodes
    assert res.nodes["f"].backward is not None  # its gradient is complete
    assert set(res.backward_unreachable) == {"x", "c", "r", "u", "after"}
    for name in ("x", "c", "r"):  # forward known, gradient would be partial: not reported
        assert res.nodes[name].backward is None
        assert res.nodes[name].forward["q_mean"] > 0
    assert res.nodes["c"].weight_grad is None
    json.dumps(res.to_dict(), allow_nan=False)


def test_fan_out_sums_gradients():
    w2 = np.full((3, 3), 0.4)
    g = TheoryGraph(
        (
            N("x", "input", (), {"shape": [3]}),
            N("a", "linear", ("x",), {"w2": w2}),
            N("b", "linear", ("x",), {"w2": 2 * w2}),
            N("s", "add", ("a", "b"), {"scales": [1.0, 0.5]}),
        )
    )
    res = propagate(g, output_grad=2.0)
    # g_x = w2ᵀ(1² g) + (2 w2)ᵀ(0.5² g), g = 2
    expect = 3 * 0.4 * 2.0 + 3 * 0.8 * 0.25 * 2.0
    assert res.nodes["x"].backward["g_mean"] == pytest.approx(expect)
    assert res.nodes["s"].forward["q_mean"] == pytest.approx(1.2 + 0.25 * 2.4)


X = ("x", "input", (), {"shape": [2]})
BAD_GRAPHS = [
    ([X, ("y", "relu", ("x",), {})], "unknown op"),
    ([X, ("y", "linear", ("z",), {"w2": np.ones((2, 2))})], "earlier"),
    ([X, ("x", "identity", ("x",), {})], "duplicate"),
    ([X, ("y", "linear", ("x",), {"w2": np.ones((2, 2)), "bogus": 1})], "bogus"),
    ([X, ("y", "conv", ("x",), {})], "w2"),
    ([X, ("y", "mul", ("x",), {})], "inputs"),
    ([("x", "input", (), {"shape": [2], "q": 1})], "shape"),
]


@pytest.mark.parametrize("nodes,match", BAD_GRAPHS)
def test_graph_validation(nodes, match):
    with pytest.raises(InvalidInput, match=match):
        propagate(TheoryGraph(tuple(N(*n) for n in nodes)))


def test_rule_errors_name_the_node():
    g = chain([("fc", "linear", {"w2": np.ones((2, 3))})], (4,))
    with pytest.raises(InvalidInput, match="'fc'"):
        propagate(g)


@given(depth=st.integers(1, 4), q0=st.floats(0.1, 5.0))
def test_forward_only_matches(depth, q0):
    g = _mlp("relu", 1.4, 0.1, 4, depth)
    a, b = propagate(g, q0=q0), propagate(g, q0=q0, backward=False)
    for name, node in b.nodes.items():
        assert node.forward == a.nodes[name].forward
        assert node.backward is None


def test_package_does_not_import_torch():
    code = "import sys, sigprop.theory.propagation; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "shape", [[0, 4], [3, 10**9], ["a"], [2.5, 3], [1, 2, 3, 4, 5], [-1], [1 << 25]]
)
def test_hostile_input_shapes_are_refused(shape):
    g = TheoryGraph((N("x", "input", (), {"shape": shape}),))
    with pytest.raises(InvalidInput):
        propagate(g)
