"""Piecewise Chebyshev interpolation (sigprop.theory.chebyshev): exact for polynomials of
degree < d on every panel, unit rows at the nodes, rows that sum to one (round-off)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sigprop.theory.chebyshev import barycentric_rows, chebyshev_points, panel_nodes

EDGES = np.concatenate([[0.0], 2.0 ** np.arange(-6, 4)])


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(2, 24),
    coef=st.lists(st.floats(-3, 3), min_size=1, max_size=24),
    s=st.lists(st.floats(0.0, float(EDGES[-1])), min_size=1, max_size=40),
)
def test_polynomials_below_degree_d_are_reproduced(d, coef, s):
    coef = np.asarray(coef[:d])  # degree <= d - 1 in the panel's own variable
    nodes = panel_nodes(EDGES, d)
    a, b = EDGES[:-1, None], EDGES[1:, None]

    def poly(x, lo, hi):  # the same polynomial of t = (2x - lo - hi)/(hi - lo) per panel
        return np.polynomial.chebyshev.chebval((2 * x - lo - hi) / (hi - lo), coef)

    table = poly(nodes, a, b)
    s = np.asarray(s)
    panel, rows = barycentric_rows(EDGES, s, d)
    got = np.sum(rows * table[panel], axis=1)
    want = poly(s, EDGES[panel], EDGES[panel + 1])
    scale = np.sum(np.abs(coef)) + 1.0
    assert np.all(np.abs(got - want) <= 1e-12 * scale)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_nodes_get_unit_rows_to_round_off_and_points_are_read_only():
    d = 7
    nodes = panel_nodes(EDGES, d)
    panel, rows = barycentric_rows(EDGES, nodes[3], d)
    assert np.array_equal(panel, np.full(d, 3))
    # the node maps back to t within an ulp or so: a unit row to round-off
    np.testing.assert_allclose(rows, np.eye(d), rtol=0, atol=1e-13)
    x, w = chebyshev_points(d)
    assert not x.flags.writeable and not w.flags.writeable
    np.testing.assert_allclose(x, np.cos((2 * np.arange(d) + 1) * np.pi / (2 * d)), rtol=0, atol=0)
