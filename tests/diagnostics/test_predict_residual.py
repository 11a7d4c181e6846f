"""predict for residual networks (issue 4: "for residual networks built with sigprop.nn").

Theory: the residual mean-field recursion (Yang & Schoenholz 2017, arXiv 1712.08969, §3;
Hayou et al. 2021, arXiv 2002.08797, §4; REFERENCES §2: ReLU y^l = y^{l−1} + λWφ(y^{l−1}),
q^L = (1 + λ²σ_w²/2)^L q⁰, bounded for λ = 1/√L).

Exact checks hold predict against independent implementations (the closed form and
``sigprop.theory.sparse.residual_q_map``). Monte Carlo checks follow the rule of
test_predict_measure: R independent wide networks; for each quantity and layer the mean error
over networks lies within 5·SE_max (the largest standard error over the layers) plus a stated
finite-width allowance for the N → ∞ theory.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from sigprop.diagnostics import describe, gradient_flow, measure, predict
from sigprop.nn import Activation, init, models
from sigprop.theory import sparse
from tests.diagnostics.helpers import check_errors

F64 = torch.float64
WIDTH, BLOCKS, REPS = 300, 4, 4
PAIRS = 16  # input pairs per network (32 inputs): averages the per-unit fluctuations
# finite-width allowance: O(1/N) corrections per layer over the L = BLOCKS + 2 weight layers
# of the chain, L/N = 2% (as in test_predict_measure)
ALLOWANCE = (BLOCKS + 2) / WIDTH


def pair_inputs(n_pairs, width, q0, c0, seed):
    """Pairs (a, b) with (1/N)‖a‖² = (1/N)‖b‖² = q0 and cos(a, b) = c0 exactly."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_pairs):
        u, _ = torch.linalg.qr(torch.randn(width, 2, generator=gen, dtype=F64))
        b = c0 * u[:, 0] + math.sqrt(1 - c0**2) * u[:, 1]
        rows += [u[:, 0] * math.sqrt(width * q0), b * math.sqrt(width * q0)]
    return torch.stack(rows)


def _resnet(act, sw2, sb2, stable, seed, density=1.0, width=WIDTH, blocks=BLOCKS):
    layer = "dense" if density == 1.0 else "masked"
    model = models.resnet(
        width,
        width,
        blocks,
        width,
        act,
        stable=stable,
        layer=layer,
        density=density,
        bias=sb2 > 0,
        generator=seed,
    ).double()
    init.gaussian_init_(model, math.sqrt(sw2), math.sqrt(sb2), generator=1000 + seed)
    return model


def _nominal(spec, sw2, sb2):
    """The spec with every layer at the nominal σ_w², σ_b² (the weights' intent)."""
    layers = tuple(
        dataclasses.replace(layer, sigma_w2=sw2, sigma_b2=sb2, density=1.0) for layer in spec.layers
    )
    return dataclasses.replace(spec, layers=layers)


# ---------------------------------------------------------------------------------------------
# Exact: closed forms and an independent recursion
# ---------------------------------------------------------------------------------------------

TEMPLATE = describe(models.resnet(4, 4, 1, 4, "relu", generator=0))


def _synthetic(blocks, sw2, lam, act="relu", sb2=0.0):
    """A spec stem → ``blocks`` one-layer pre-activation blocks → readout, built from
    ``TEMPLATE``'s layer records (theory-only: no network of that depth is built)."""
    stem, branch, readout = TEMPLATE.layers
    layers = [dataclasses.replace(stem, sigma_w2=sw2, sigma_b2=sb2)]
    for b in range(blocks):
        layers.append(
            dataclasses.replace(
                branch,
                name=f"{b + 1}.branch.1",
                residual_block=str(b + 1),
                residual_scale=lam,
                input_activation=act,
                sigma_w2=sw2,
                sigma_b2=sb2,
            )
        )
    layers.append(
        dataclasses.replace(
            readout, name=f"{blocks + 2}", input_activation=act, sigma_w2=sw2, sigma_b2=sb2
        )
    )
    return dataclasses.replace(TEMPLATE, layers=tuple(layers))


@given(
    blocks=st.integers(1, 40),
    sw2=st.floats(0.5, 4.0),
    q0=st.floats(0.1, 3.0),
    stable=st.booleans(),
)
def test_relu_stream_follows_the_closed_form(blocks, sw2, q0, stable):
    lam = 1 / math.sqrt(blocks) if stable else 1.0
    pred = predict(_synthetic(blocks, sw2, lam), q0=q0, c0=0.3)
    q_stem = sw2 * q0
    want = sparse.relu_residual_q(q_stem, math.sqrt(sw2), blocks, branch_scale=lam)[1:]
    # 1e-12: the same product evaluated in two orders (float64 round-off over ≤ 40 factors)
    np.testing.assert_allclose(pred.stream_q, want, rtol=1e-12)
    # each branch layer sees relu of the stream before it: q = σ_w² E[y²]/2
    before = np.concatenate([[q_stem], pred.stream_q[:-1]])
    np.testing.assert_allclose(pred.q[1:-1], sw2 * before / 2, rtol=1e-12)
    np.testing.assert_allclose(pred.block_chi, 1 + lam**2 * sw2 / 2, rtol=1e-12)
    # gradients: the stream's squared gradient grows by block_chi per block backward
    np.testing.assert_allclose(
        pred.grad_ratio[0], (sw2 / 2) * (1 + lam**2 * sw2 / 2) ** blocks, rtol=1e-12
    )
    if stable:  # Stable ResNet: (1 + σ_w²/(2B))^B ≤ e^{σ_w²/2} at every depth
        assert pred.stream_q[-1] <= math.exp(sw2 / 2) * q_stem * (1 + 1e-12)


@pytest.mark.parametrize("stable", [False, True], ids=["lambda1", "stable"])
def test_tanh_stream_matches_the_theory_recursion(stable):
    sw2, sb2, blocks = 1.5, 0.05, 6
    lam = 1 / math.sqrt(blocks) if stable else 1.0
    pred = predict(_synthetic(blocks, sw2, lam, "tanh", sb2), q0=0.8, c0=0.5)
    q_stem = sw2 * 0.8 + sb2
    want = sparse.residual_q_map(
        "tanh", math.sqrt(sw2), math.sqrt(sb2), q_stem, blocks, branch_scale=lam
    )
    # 1e-10: two quadrature implementations of E[tanh(√q z)²] (meanfield.moments both, but
    # accumulated in a different order)
    np.testing.assert_allclose(pred.stream_q, want[1:], rtol=1e-10)
    assert pred.jacobian_moments is None and pred.jacobian_density is None
    assert any("Jacobian" in note for note in pred.notes)
    json.dumps(pred.to_dict())


# ---------------------------------------------------------------------------------------------
# Monte Carlo: predict against measure and gradient_flow on wide random resnets
# ---------------------------------------------------------------------------------------------

CASES = {  # activation, σ_w², σ_b², Stable ResNet (λ = 1/√B) or λ = 1, mask density
    "relu-lambda1": ("relu", 2.0, 0.0, False, 1.0),
    "tanh-lambda1": ("tanh", 1.5, 0.05, False, 1.0),
    "tanh-stable": ("tanh", 1.5, 0.05, True, 1.0),
    "relu-stable-masked": ("relu", 2.0, 0.0, True, 0.5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resnet_predict_matches_measure(case):
    act, sw2, sb2, stable, density = CASES[case]
    q_err, c_err, chi_err, g_err, flow_err, wflow_err = [], [], [], [], [], []
    for seed in range(REPS):
        model = _resnet(act, sw2, sb2, stable, seed, density)
        spec = describe(model)
        assert spec.structure == "residual" and spec.complete
        x = pair_inputs(PAIRS, WIDTH, 0.5, 0.3, 100 + seed)
        got = measure(model, x, spec=spec, seed=seed)
        want = predict(spec, q0=got.q0, c0=got.c0)
        q_err.append(got.q / want.q - 1)
        c_err.append(got.c - want.c)
        chi_err.append(got.chi / want.chi - 1)
        g_err.append(got.grad_ratio / want.grad_ratio - 1)
        # one batch (a list of two equal-sized tensors would be read as (inputs, targets));
        # the random-projection loss makes the batch gradient's cross-sample terms zero-mean
        flow = gradient_flow(model, x, spec=spec, seed=seed, progress=False)
        flow_err.append(flow.delta_ratio / want.grad_ratio - 1)
        wflow_err.append(flow.grad_ratio / want.weight_grad_ratio - 1)
        if flow.theory_delta_ratio is not None:  # once gradient_flow runs predict on resnets
            np.testing.assert_allclose(flow.theory_delta_ratio, want.grad_ratio, rtol=1e-12)
        if density < 1.0:  # a random mask keeps ρσ_w²: relative SE √(2/kept) ≈ 0.1%
            np.testing.assert_allclose(
                [layer.sigma_w2 for layer in spec.layers],
                density * sw2,
                rtol=5 * math.sqrt(2 / (density * WIDTH**2)),
            )
    check_errors(q_err, ALLOWANCE, "q")
    check_errors(c_err, ALLOWANCE, "c")
    check_errors(chi_err, ALLOWANCE, "chi")
    check_errors(g_err, ALLOWANCE, "grad_ratio")
    check_errors(flow_err, ALLOWANCE, "gradient_flow delta_ratio")
    check_errors(wflow_err, ALLOWANCE, "gradient_flow weight grad_ratio")


def test_stable_resnet_stays_bounded_where_lambda1_explodes():
    """Measured q of the readout's input stream: ≈ 2^B q_stem for λ = 1 at σ_w² = 2 (ReLU),
    ≈ (1 + 1/B)^B q_stem < e·q_stem for λ = 1/√B; predict gives both."""
    blocks = 6
    ratios = {}
    for stable in (False, True):
        model = _resnet("relu", 2.0, 0.0, stable, 7, width=WIDTH, blocks=blocks)
        spec = describe(model)
        got = measure(model, pair_inputs(PAIRS, WIDTH, 0.5, 0.3, 8), spec=spec)
        pred = predict(spec, q0=got.q0, c0=got.c0)
        # readout: q = σ_w² E[y_B²]/2, so q_readout/q_stem = σ_w²/2 · E[y_B²]/q_stem
        ratios[stable] = (got.q[-1] / got.q[0], pred.q[-1] / pred.q[0])
    lam1, stab = ratios[False], ratios[True]
    # one net, 32 inputs: per-layer relative fluctuation ≈ √(2/N) ≈ 8% compounding over 8
    # layers — 30% bounds the measured/predicted mismatch of these single draws
    assert lam1[0] == pytest.approx(lam1[1], rel=0.3) and lam1[1] > 40  # ≈ 2^6
    assert stab[0] == pytest.approx(stab[1], rel=0.3) and stab[1] < math.e * 1.05


# ---------------------------------------------------------------------------------------------
# What the recursion does not cover is refused, naming the problem
# ---------------------------------------------------------------------------------------------


def test_projection_shortcut_is_refused():
    block = models.ResidualBlock(
        nn.Sequential(Activation("relu"), nn.Linear(8, 6)), 1.0, shortcut=nn.Linear(8, 6)
    )
    spec = describe(nn.Sequential(nn.Linear(4, 8), block, Activation("relu"), nn.Linear(6, 3)))
    assert spec.structure == "residual"
    with pytest.raises(ValueError, match=r"outside its branch.*1\.shortcut"):
        predict(spec, q0=1.0)


def test_branch_ending_in_an_activation_is_refused():
    block = models.ResidualBlock(nn.Sequential(nn.Linear(8, 8), Activation("relu")), 0.5)
    spec = describe(nn.Sequential(nn.Linear(4, 8), block, nn.Linear(8, 3)))
    with pytest.raises(ValueError, match="ends in activation relu"):
        predict(spec, q0=1.0)


def test_activation_of_a_non_gaussian_stream_is_refused():
    # the stream φ(stem) + λ·branch is not Gaussian: a later tanh of it is not mapped ...
    block = models.ResidualBlock(nn.Sequential(nn.Linear(8, 8)), 0.5)
    model = nn.Sequential(nn.Linear(4, 8), Activation("relu"), block, Activation("tanh"))
    model.append(nn.Linear(8, 3))
    with pytest.raises(ValueError, match="not Gaussian"):
        predict(describe(model), q0=1.0)
    # ... but a linear read of it is: second moments still add (the branch is zero-mean)
    model = nn.Sequential(nn.Linear(4, 8), Activation("relu"), block, nn.Linear(8, 3))
    spec = describe(model)
    pred = predict(spec, q0=1.0, c0=0.0)
    sw2 = [layer.sigma_w2 for layer in spec.layers]
    q1 = sw2[0] + spec.layers[0].sigma_b2
    stream = q1 / 2 + 0.25 * (sw2[1] * q1 / 2 + spec.layers[1].sigma_b2)
    # 1e-12: the same arithmetic (ReLU moments in closed form)
    np.testing.assert_allclose(pred.stream_q, [stream], rtol=1e-12)
    np.testing.assert_allclose(pred.q[-1], sw2[2] * stream + spec.layers[2].sigma_b2, rtol=1e-12)


def test_sequential_predictions_have_no_stream_fields():
    pred = predict(describe(models.mlp(4, 8, 3, 2, "tanh", generator=0)), q0=1.0)
    assert pred.block_names == () and pred.stream_q is None and pred.block_chi is None
    assert pred.to_dict()["stream_q"] is None
