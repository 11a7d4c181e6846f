"""predict against measure for masked networks (issue 4, "Theory against experiment":
"for a masked network predict with the masks' densities matches measure, and the rescaled
network matches the dense prediction"), plus exact checks of predict and compare.

Monte Carlo rule (as in test_jacobian): R independent networks; for each quantity and layer
the mean error over networks must lie within 5·SE_max, SE_max the largest standard error
over the layers (conservative against the noisy SE of a few replicates), plus a stated
finite-width allowance where the comparison is with the N → ∞ theory.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from sigprop.diagnostics import compare, describe, input_moments, measure, predict
from sigprop.nn import init, models
from tests.diagnostics.helpers import check_errors

F64 = torch.float64
SW2, SB2 = 1.76095, 0.05  # tanh EOC at σ_b² = 0.05 (REFERENCES §1), dense
WIDTH, DEPTH, REPS = 300, 6, 8


def pair_inputs(n_pairs, width, q0, c0, seed):
    """Pairs (a, b) with (1/N)‖a‖² = (1/N)‖b‖² = q0 and cos(a, b) = c0 exactly."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_pairs):
        u, _ = torch.linalg.qr(torch.randn(width, 2, generator=gen, dtype=F64))
        a = u[:, 0]
        b = c0 * u[:, 0] + math.sqrt(1 - c0**2) * u[:, 1]
        rows += [a * math.sqrt(width * q0), b * math.sqrt(width * q0)]
    return torch.stack(rows)


def _masked_net(seed, rescale):
    model = models.mlp(
        WIDTH, WIDTH, DEPTH, WIDTH, "tanh", layer="masked", density=0.3, generator=seed
    )
    model = model.double()
    init.gaussian_init_(model, math.sqrt(SW2), math.sqrt(SB2), generator=100 + seed)
    if rescale:
        init.rescale_(model, math.sqrt(SW2))
    return model


def _dense_spec(spec):
    """The same network as if unpruned: nominal dense σ_w², density 1 (biases as measured)."""
    layers = tuple(dataclasses.replace(layer, sigma_w2=SW2, density=1.0) for layer in spec.layers)
    return dataclasses.replace(spec, layers=layers)


@pytest.mark.parametrize("rescale", [False, True], ids=["masked", "rescaled"])
def test_masked_network_predict_matches_measure(rescale):
    q_err, c_err, chi_err, dense_err = [], [], [], []
    for seed in range(REPS):
        model = _masked_net(seed, rescale)
        x = pair_inputs(4, WIDTH, 0.3, 0.5, 200 + seed)
        spec = describe(model)
        got = measure(model, x, spec=spec)
        want = predict(spec, q0=got.q0, c0=got.c0)
        q_err.append(got.q / want.q - 1)
        c_err.append(got.c - want.c)
        chi_err.append(got.chi / want.chi - 1)
        dense = predict(_dense_spec(spec), q0=got.q0, c0=got.c0)
        dense_err.append(got.q / dense.q - 1)
        if rescale:  # the rescaling trick restores the dense σ_w² row by row (1e-12: round-off)
            np.testing.assert_allclose([layer.sigma_w2 for layer in spec.layers], SW2, rtol=1e-12)
        else:  # a random mask keeps ρσ_w² in expectation: relative SE √(2/kept) ≈ 0.5%
            np.testing.assert_allclose(
                [layer.sigma_w2 for layer in spec.layers],
                0.3 * SW2,
                rtol=5 * math.sqrt(2 / (0.3 * WIDTH**2)),
            )
    # finite-width allowance: the mean-field maps are the N → ∞ limit, with O(1/N) corrections
    # per layer (a unit's fan-in fluctuates as Binomial(N, ρ)); we allow DEPTH/N = 2%.
    allowance = DEPTH / WIDTH
    check_errors(q_err, allowance, "q")
    check_errors(c_err, allowance, "c")
    check_errors(chi_err, allowance, "chi")
    if rescale:
        check_errors(dense_err, allowance, "dense q")  # the rescaled net follows the dense theory
    else:
        # ... and the masked one does not: ρσ_w² = 0.53 puts it deep in the ordered phase
        assert np.all(np.asarray(dense_err).mean(axis=0) < -0.5)


def test_predict_relu_closed_forms():
    """ReLU: q^l = σ_w² q^{l−1}/2 + σ_b², c via the arc-cosine kernel, χ = σ_w²/2 (REFERENCES §2)."""
    model = models.mlp(50, 50, 4, 50, "relu", generator=0).double()
    init.gaussian_init_(model, math.sqrt(2.5), 0.3, generator=1)
    spec = describe(model)
    pred = predict(spec, q0=0.7, c0=0.2)
    sw2 = np.array([layer.sigma_w2 for layer in spec.layers])
    sb2 = np.array([layer.sigma_b2 for layer in spec.layers])
    q, c = [sw2[0] * 0.7 + sb2[0]], [(sw2[0] * 0.7 * 0.2 + sb2[0]) / (sw2[0] * 0.7 + sb2[0])]
    for i in range(1, 4):
        k = (math.sqrt(1 - c[-1] ** 2) + (math.pi - math.acos(c[-1])) * c[-1]) / (2 * math.pi)
        q.append(sw2[i] * q[-1] / 2 + sb2[i])
        c.append((sw2[i] * q[-2] * k + sb2[i]) / q[-1])
    # closed forms against the theory module's closed forms: float64 round-off only
    np.testing.assert_allclose(pred.q, q, rtol=1e-12)
    np.testing.assert_allclose(pred.c, c, rtol=1e-12)
    np.testing.assert_allclose(pred.chi, [sw2[0]] + list(sw2[1:] / 2), rtol=1e-12)
    np.testing.assert_allclose(
        pred.grad_ratio, np.cumprod((sw2[1:] / 2)[::-1])[::-1].tolist() + [1.0], rtol=1e-12
    )
    json.dumps(pred.to_dict())


def test_input_moments():
    x = pair_inputs(3, 40, 0.8, -0.25, seed=0)
    q0, c0 = input_moments(x)
    # exact construction, float64 round-off
    assert q0 == pytest.approx(0.8, rel=1e-12) and c0 == pytest.approx(-0.25, abs=1e-12)
    assert input_moments(x[:1])[1] is None
    with pytest.raises(ValueError, match="NaN"):
        input_moments(x * float("nan"))


def test_predict_refuses_what_it_cannot_describe():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x) + x

    with pytest.raises(ValueError, match="cannot map"):
        predict(describe(Net()), q0=1.0)
    spec = describe(models.mlp(4, 8, 2, 3, "relu", generator=0))
    with pytest.raises(ValueError, match="q0"):
        predict(spec, q0=-1.0)
    with pytest.raises(ValueError, match="c0"):
        predict(spec, q0=1.0, c0=1.5)


def test_compare_reports_errors_and_spectral_distances():
    model = models.mlp(100, 100, 3, 100, "tanh", generator=3).double()
    init.gaussian_init_(model, math.sqrt(SW2), math.sqrt(SB2), generator=4)
    x = pair_inputs(2, 100, 0.3, 0.4, seed=5)
    spec = describe(model)
    got = measure(model, x, spec=spec, jacobian=True, jacobian_inputs=2)
    want = predict(spec, q0=got.q0, c0=got.c0)
    agreement = compare(want, got)
    np.testing.assert_allclose(agreement.q_rel_err, np.abs(got.q - want.q) / want.q, rtol=1e-12)
    assert agreement.summary["q_rel_err"]["max"] == pytest.approx(agreement.q_rel_err.max())
    # the readout has no activation, so the theory gives moments (and here no law)
    assert agreement.moment_rel_err is not None and agreement.wasserstein1 is None
    json.dumps(agreement.to_dict())
    json.dumps(got.to_dict())
    other = predict(describe(models.mlp(100, 100, 2, 100, "tanh", generator=3)), q0=0.3)
    with pytest.raises(ValueError, match="different layers"):
        compare(other, got)


def test_density_for_a_chain_with_a_linear_readout():
    """The law covers mixed activations (tanh layers + linear read-out) and integrates to
    the predicted moments (5e-3: the density's own quadrature accuracy, theory/spectra)."""
    model = models.mlp(64, 64, 4, 64, "tanh", generator=1).double()
    init.eoc_init_(model, "tanh", 0.1, generator=2)
    want = predict(describe(model), q0=1.0, density=True, density_points=200)
    law = want.jacobian_density
    assert law is not None
    # integrate the continuous part itself (x·ρ and x²·ρ on the grid) plus the atoms
    x, rho = law.x, law.density
    moments = [np.trapezoid(x**k * rho, x) + np.sum(law.atoms**k * law.atom_masses) for k in (1, 2)]
    np.testing.assert_allclose(moments, want.jacobian_moments, rtol=5e-3)


def test_deep_chaotic_chain_moments_overflow_cleanly():
    """m1 = χ₁^L past float64's range is inf (never NaN, never a warning)."""
    model = models.mlp(8, 8, 1500, 8, "tanh", generator=0).double()
    init.gaussian_init_(model, 3.0, 0.0, generator=1)  # χ₁ ≈ 1.8: χ₁^1500 ≈ 1e380
    got = predict(describe(model), q0=1.0).jacobian_moments
    assert np.isinf(got).all()
