"""Recorders produce per-layer series that agree with direct computations."""

import json
import math

import pytest
import torch
from torch import nn

from sigprop.experiments.data import load_dataset
from sigprop.experiments.recorders import (
    DensityRecorder,
    GradientNormRecorder,
    JacobianRecorder,
    PreactivationRecorder,
    Recorder,
    weight_layers,
)
from sigprop.experiments.train import train
from tests.experiments.helpers import TinyMasked


def _mlp(seed, widths=(64, 48, 32, 10)):
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g) / math.sqrt(a))
            lin.bias.copy_(0.1 * torch.randn(b, generator=g))
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_all_recorders_satisfy_the_protocol(digits):
    probe = digits.x_test[:8]
    for rec in (GradientNormRecorder(), PreactivationRecorder(probe), DensityRecorder()):
        assert isinstance(rec, Recorder)


def test_weight_layers_finds_linear_and_conv_not_norms():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))
    assert [n for n, _ in weight_layers(model)] == ["0", "3"]


def test_gradient_norms_match_a_full_batch_gradient(digits):
    model = _mlp(0)
    reference = _mlp(0)
    # full-batch gradient at initialisation, computed independently of the loop
    loss = nn.functional.cross_entropy(reference(digits.x_train), digits.y_train)
    loss.backward()
    expected = [float(m.weight.grad.norm()) for m in reference if isinstance(m, nn.Linear)]
    rec = GradientNormRecorder(every=1)
    n = digits.x_train.shape[0]
    train(model, digits, epochs=2, batch_size=n, lr=0.1, recorders=[rec], progress=False)
    out = rec.result()
    assert out["steps"] == [1, 2] and out["layers"] == ["0", "2", "4"]
    first = [out["values"][name][0] for name in out["layers"]]
    # same maths, different summation order (shuffled batch): float32 rounding, rel 1e-4
    assert first == pytest.approx(expected, rel=1e-4)
    assert all(v[1] != v[0] for v in out["values"].values())  # the weights moved


def test_gradient_norm_every_k_steps(digits):
    rec = GradientNormRecorder(every=4)
    result = train(_mlp(1), digits, epochs=1, batch_size=100, recorders=[rec], progress=False)
    steps = result.recorders["gradient_norm"]["steps"]
    assert steps == list(range(4, result.steps + 1, 4))
    assert all(len(v) == len(steps) for v in result.recorders["gradient_norm"]["values"].values())


def test_preactivation_second_moments_match_a_manual_forward(digits):
    probe = digits.x_test[:50]
    model = _mlp(2)
    with torch.no_grad():
        h, expected = probe, []
        for m in model:
            h = m(h)
            if isinstance(m, nn.Linear):
                expected.append(float(h.double().square().mean()))
    rec = PreactivationRecorder(probe, every=5)
    result = train(model, digits, epochs=1, batch_size=128, recorders=[rec], progress=False)
    out = result.recorders["preactivation"]
    assert out["steps"] == [0, *range(5, result.steps + 1, 5)]
    at_init = [out["values"][name][0] for name in out["layers"]]
    # the recorder averages float32 squares; rel 1e-5 covers float32 vs float64 summation
    assert at_init == pytest.approx(expected, rel=1e-5)
    assert not model[0]._forward_hooks  # the probe hooks were removed
    assert model.training  # mode restored after the eval-mode probe


def test_preactivation_follows_the_mean_field_length_map():
    # one wide tanh layer on a Gaussian probe: q^2 = sigma_w^2 E[tanh(h)^2] + sigma_b^2 with
    # h ~ N(0, q^1) (Poole et al. 2016, eq. 3); width 2000 x 200 probes gives a Monte-Carlo
    # relative error of a few 1e-3, so 3 % is a safe bound; dropping sigma_b^2 alone would
    # move the prediction by ~10 %
    g = torch.Generator().manual_seed(0)
    n, sigma_w, sigma_b = 2000, 1.5, 0.3
    l1, l2 = nn.Linear(n, n), nn.Linear(n, n)
    with torch.no_grad():
        for lin in (l1, l2):
            lin.weight.copy_(torch.randn(n, n, generator=g) * sigma_w / math.sqrt(n))
            lin.bias.copy_(torch.randn(n, generator=g) * sigma_b)
    model = nn.Sequential(l1, nn.Tanh(), l2)
    probe = torch.randn(200, n, generator=g)
    rec = PreactivationRecorder(probe)
    rec.on_train_begin(model)
    q1, q2 = (rec.result()["values"][k][0] for k in ("0", "2"))
    z = torch.randn(400_000, generator=g, dtype=torch.float64)
    predicted = sigma_w**2 * torch.tanh(math.sqrt(q1) * z).square().mean().item() + sigma_b**2
    assert q2 == pytest.approx(predicted, rel=0.03)


def test_density_recorder_tracks_reallocation(digits):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(TinyMasked(64, 32, 0.5, g), nn.Tanh(), TinyMasked(32, 10, 0.5, g))
    a, b = model[0], model[2]
    kept0 = [int(a.weight_mask.sum()), int(b.weight_mask.sum())]

    class MoveOne:
        """Moves one kept weight from layer a to layer b at every step (total constant)."""

        def step(self, iteration):
            with torch.no_grad():
                on = torch.nonzero(a.weight_mask.flatten())[0]
                off = torch.nonzero(b.weight_mask.flatten() == 0)[0]
                a.weight_mask.view(-1)[on] = 0
                b.weight_mask.view(-1)[off] = 1

    rec = DensityRecorder(every=2)
    result = train(
        model, digits, epochs=1, batch_size=256, dsr=MoveOne(), recorders=[rec], progress=False
    )
    out = result.recorders["density"]
    assert out["steps"] == [0, *range(2, result.steps + 1, 2)]
    assert out["numel"] == {"0": 64 * 32, "2": 32 * 10}
    for i, s in enumerate(out["steps"]):
        assert out["values"]["0"][i] == kept0[0] - s
        assert out["values"]["2"][i] == kept0[1] + s
        assert out["values"]["0"][i] + out["values"]["2"][i] == sum(kept0)


def test_density_of_dense_layers_counts_nonzeros():
    model = _mlp(0)
    with torch.no_grad():
        model[0].weight[:5] = 0.0
    rec = DensityRecorder()
    rec.on_train_begin(model)
    assert rec.result()["values"]["0"] == [64 * 48 - 5 * 64]


def test_results_are_json_and_reset_between_runs(digits):
    probe = digits.x_test[:16]
    recs = [
        GradientNormRecorder(every=2),
        PreactivationRecorder(probe, every=3),
        DensityRecorder(every=5),
    ]
    model = _mlp(0)
    first = train(model, digits, epochs=1, batch_size=256, recorders=recs, progress=False)
    second = train(model, digits, epochs=1, batch_size=256, recorders=recs, progress=False)
    text = json.dumps(second.to_dict(), allow_nan=False)
    assert "gradient_norm" in text
    assert first.recorders["gradient_norm"]["steps"] == second.recorders["gradient_norm"]["steps"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: GradientNormRecorder(every=0),
        lambda: PreactivationRecorder(torch.zeros(3), every=1),
        lambda: PreactivationRecorder(torch.full((2, 3), float("nan"))),
        lambda: DensityRecorder(every=1.5),
    ],
)
def test_bad_recorder_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_model_without_weight_layers_is_refused():
    with pytest.raises(ValueError, match="no weight layers"):
        GradientNormRecorder().on_train_begin(nn.Sequential(nn.Tanh()))


def test_jacobian_recorder_statistics(digits):
    # a deep linear network with orthogonal square weights has J = W_L...W_1 orthogonal:
    # every singular value is 1 at initialisation (float64 spectrum: 1e-10 is round-off)
    g = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(4):
        lin = nn.Linear(64, 64, bias=False)
        q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
        with torch.no_grad():
            lin.weight.copy_(q.float())
        layers.append(lin)
    head = nn.Linear(64, 10)
    model = nn.Sequential(*layers, head)
    probe = digits.x_test[:3]
    with torch.no_grad():
        head.weight.copy_(
            torch.linalg.qr(torch.randn(64, 10, generator=g, dtype=torch.float64))[0].T.float()
        )
    rec = JacobianRecorder(probe, every=2)
    result = train(
        model, digits, epochs=2, batch_size=256, lr=0.01, recorders=[rec], progress=False
    )
    out = result.recorders["jacobian"]
    assert out["epochs"] == [0, 2]
    # float32 orthogonal weights: singular values 1 up to float32 rounding of W (~1e-6)
    assert out["mean"][0] == pytest.approx(1.0, abs=1e-5) and out["std"][0] < 1e-5
    assert out["m1"][0] == pytest.approx(1.0, abs=1e-5)
    # after training: the same statistics as a direct float64 Jacobian of the trained model
    m64 = nn.Sequential(
        *[nn.Linear(64, 64, bias=False) for _ in range(4)], nn.Linear(64, 10)
    ).double()
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    with torch.no_grad():
        s = torch.cat([torch.linalg.svdvals(torch.func.jacrev(m64)(x.double())) for x in probe])
    assert out["mean"][1] == pytest.approx(float(s.mean()), rel=1e-10)
    assert out["max"][1] == pytest.approx(float(s.max()), rel=1e-10)
    assert out["m1"][1] == pytest.approx(float(s.square().mean()), rel=1e-10)
    assert out["std"][1] > 1e-3  # training moved the network away from isometry
