"""Piecewise-linear moments at tiny input scales.

Below its knots' reach, relu6 is ReLU, whose moments are homogeneous: E[φ(√v z)²] = v/2,
E[φ′²] = 1/2, E[φ(X)φ(Y)] = v·κ(ρ) for every v > 0. The deterministic-input shortcut used
an absolute threshold (σ ≤ 1e-12), so a collapsing pruned network (q ≈ 1e-26, MobileNet-V2
in eval mode at density 0.1) was predicted exactly 0. The threshold is now relative to |μ|;
these identities hold to round-off from v = 1 down to v = 1e-200."""

import numpy as np

from sigprop.theory.propagation.activation import resolve


def test_relu6_is_relu_at_every_small_scale():
    relu6, relu = resolve("relu6"), resolve("relu")
    v = np.array([1e-2, 1e-10, 1e-26, 1e-60, 1e-200])
    m6, m = relu6.moments(np.zeros_like(v), v), relu.moments(np.zeros_like(v), v)
    np.testing.assert_allclose(m6["m2"] / v, 0.5, rtol=1e-12)
    np.testing.assert_allclose(m6["d2"], 0.5, rtol=1e-12)
    np.testing.assert_allclose(m6["m1"] / np.sqrt(v), m["m1"] / np.sqrt(v), rtol=1e-12)
    rho = np.full_like(v, 0.3)
    np.testing.assert_allclose(
        relu6.cross(np.zeros_like(v), v, rho) / v,
        relu.cross(np.zeros_like(v), v, rho) / v,
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        relu6.dcross(np.zeros_like(v), v, rho), relu.dcross(np.zeros_like(v), v, rho), rtol=1e-10
    )


def test_a_truly_deterministic_input_still_takes_the_shortcut():
    relu6 = resolve("relu6")
    out = relu6.moments(np.array([2.0, -1.0, 7.0, 0.0]), np.zeros(4))
    np.testing.assert_allclose(out["m2"], [4.0, 0.0, 36.0, 0.0])
