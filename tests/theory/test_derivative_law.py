"""The law of φ′(h)², h ~ N(0, q), from the one Gaussian quadrature engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from sigprop.theory import gaussian
from sigprop.theory.activations import get_activation
from sigprop.theory.spectra.derivative_law import derivative_law
from sigprop.validate import InvalidInput

QS = (1e-3, 0.1, 1.0, 10.0, 1e3)


def _reference_moment(act, q, k):
    """E[φ′(h)^{2k}], h ~ N(0, q), by adaptive quadrature in h, split where φ′ changes: at
    its kinks, on a geometric ladder in h and at multiples of √q (out to ±40√q)."""
    s = math.sqrt(q)

    def f(h):
        return float(act.dphi(np.array([h]))[0]) ** (2 * k) * math.exp(-0.5 * h * h / q)

    pts = {0.0, *(float(x) for x in (act.kinks or ()))}
    pts |= {c * sgn for c in 2.0 ** np.arange(-2, 7) for sgn in (1, -1)}
    pts |= {s * t * sgn for t in (0.5, 1, 2, 4, 8, 12, 20) for sgn in (1, -1)}
    edges = [-40 * s, *sorted(p for p in pts if abs(p) < 40 * s), 40 * s]
    total = sum(
        integrate.quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=200)[0]
        for a, b in zip(edges[:-1], edges[1:])
    )
    return total / math.sqrt(2 * math.pi * q)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("name", ["tanh", "erf", "gelu", "silu", "sigmoid"])
def test_moments_match_adaptive_quadrature_and_rule_size_is_q_free(name):
    act = get_activation(name)
    rule_sizes = set()
    for q in QS:
        law = derivative_law(name, q)
        # the nodes are gaussian.quadrature_rule's of positive weight; the rule's size is
        # the same at every q, so the law's node count is bounded independently of q
        z, w = gaussian.quadrature_rule(q, 0.0, act.kinks or ())
        rule_sizes.add(z.size)
        assert law.nodes.size == np.count_nonzero(w > 0) <= z.size
        assert np.sum(law.node_weights) + np.sum(law.atom_masses) == pytest.approx(1.0, abs=1e-14)
        for k in range(1, 5):
            # measured ≤ 4e-13 (GELU at q = 1e3, k = 4)
            assert law.moment(k) == pytest.approx(_reference_moment(act, q, k), rel=1e-10)
    assert len(rule_sizes) == 1


def test_kinked_laws_keep_exact_atoms_and_unit_mass():
    for name in ("relu", "hard_tanh", "selu", "elu", "linear"):
        for q in QS:
            law = derivative_law(name, q)
            assert np.sum(law.node_weights) + np.sum(law.atom_masses) == pytest.approx(
                1.0, abs=1e-14
            )
    assert derivative_law("relu", 3.0).nodes.size == 0
    selu = derivative_law("selu", 2.0)  # φ′ = λ on h > 0: an atom of mass ½
    assert selu.atom_masses.tolist() == [0.5] and selu.nodes.size > 0


def test_unresolved_tail_is_refused():
    # φ′(h)⁴ = e^{4h}: at q = 1 a few 1e-7 of E[e^{4h}] lies beyond |z| = 9
    act = get_activation("exp(x)")
    assert derivative_law(act, 0.1).moment(1) == pytest.approx(math.exp(0.2), rel=1e-13)
    with pytest.raises(InvalidInput, match="not resolved"):
        derivative_law(act, 1.0)
