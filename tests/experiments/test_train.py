"""The training loop: learns, respects masks, is bit-reproducible, stops on divergence."""

import json
import math

import pytest
import torch
from torch import nn

from sigprop.experiments.data import load_dataset
from sigprop.experiments.recorders import GradientNormRecorder, PreactivationRecorder
from sigprop.experiments.train import evaluate, train
from tests.experiments.helpers import TinyMasked


def _init(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(p.shape[-1])))
    return model


def _mlp(seed, width=64, dropout=0.0, d_in=64, d_out=10):
    layers = [nn.Linear(d_in, width), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(width, width), nn.Tanh(), nn.Linear(width, d_out)]
    return _init(nn.Sequential(*layers), seed)


def _masked_mlp(seed, density=0.3):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        TinyMasked(64, 64, density, g),
        nn.Tanh(),
        TinyMasked(64, 64, density, g),
        nn.Tanh(),
        nn.Linear(64, 10),
    )
    return _init(model, seed)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_mlp_learns(digits, seed):
    # 5 epochs of SGD (lr 0.05, momentum 0.9) take a tanh MLP to ~95-96 % test accuracy on
    # every seed tried; 0.90 leaves a margin of several hundred test samples' worth of noise
    result = train(_mlp(seed), digits, epochs=5, batch_size=32, lr=0.05, seed=seed, progress=False)
    assert result.final_test_accuracy > 0.90
    assert result.train_loss[-1] < result.train_loss[0]
    assert not result.diverged and result.epochs == 5
    assert result.steps == 5 * result.steps_per_epoch == 5 * math.ceil(1438 / 32)


def test_adam_and_cosine_schedule_learn(digits):
    result = train(
        _mlp(3),
        digits,
        epochs=4,
        batch_size=64,
        optimizer="adam",
        lr=3e-3,
        schedule="cosine",
        progress=False,
    )
    assert result.final_test_accuracy > 0.90  # Adam reaches ~96 %; same margin as above
    # cosine annealing lr (1 + cos(pi e / E)) / 2; torch's recursive form agrees to rounding
    expected = [3e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert result.lr == pytest.approx(expected, rel=1e-12)


def test_step_schedule(digits):
    result = train(_mlp(0), digits, epochs=4, lr=0.01, schedule="step", progress=False)
    # x0.1 after 50 % and after 75 % of the epochs (milestones 2 and 3)
    assert result.lr == pytest.approx([0.01, 0.01, 1e-3, 1e-4], rel=1e-12)


@pytest.mark.parametrize(
    ("optimizer", "kwargs"),
    [("sgd", {"momentum": 0.9, "weight_decay": 1e-2}), ("adam", {"weight_decay": 1e-2})],
)
def test_pruned_weights_stay_exactly_zero(digits, optimizer, kwargs):
    model = _masked_mlp(0)
    masks = [m.weight_mask.clone() for m in model if isinstance(m, TinyMasked)]
    assert any(bool((m.weight * (1 - m.weight_mask)).abs().sum() > 0) for m in model[::2][:2])
    result = train(
        model,
        digits,
        epochs=2,
        batch_size=32,
        lr=0.01,
        optimizer=optimizer,
        progress=False,
        **kwargs,
    )
    assert not result.diverged
    for layer, mask in zip([m for m in model if isinstance(m, TinyMasked)], masks):
        assert torch.equal(layer.weight_mask, mask)
        assert torch.count_nonzero(layer.weight[mask == 0]) == 0  # exactly zero, not small
        assert torch.count_nonzero(layer.weight[mask == 1]) == int(mask.sum())


def test_apply_mask_method_is_used_when_present(digits):
    calls = []

    class WithApply(TinyMasked):
        def apply_mask_(self):
            calls.append(1)
            self.weight.mul_(self.weight_mask)

    model = _init(nn.Sequential(WithApply(64, 10, 0.5, torch.Generator().manual_seed(0))), 0)
    result = train(model, digits, epochs=1, batch_size=256, progress=False)
    assert len(calls) == result.steps + 1  # once before training, once after every step


def _numbers(result):
    out = result.to_dict()
    out.pop("wall_time")
    return out


def test_same_seed_bit_identical_different_seed_differs(digits):
    def run(seed, global_seed):
        torch.manual_seed(global_seed)  # the caller's global state must not matter
        probe = digits.x_test[:32]
        recs = [GradientNormRecorder(every=3), PreactivationRecorder(probe, every=7)]
        model = _mlp(0, dropout=0.2)
        result = train(
            model,
            digits,
            epochs=2,
            batch_size=64,
            lr=0.05,
            seed=seed,
            recorders=recs,
            progress=False,
        )
        return _numbers(result), [p.detach().clone() for p in model.parameters()]

    a, pa = run(0, 1)
    b, pb = run(0, 2)
    c, pc = run(1, 1)
    assert a == b  # every number, compared exactly (floats through ==)
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert a["train_loss"] != c["train_loss"] and a["test_loss"] != c["test_loss"]
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc))


def test_global_rng_state_is_left_untouched(digits):
    model = _mlp(0, dropout=0.5)  # nn.Linear's default init draws from the global generator
    torch.manual_seed(11)
    before = torch.get_rng_state()
    train(model, digits, epochs=1, batch_size=128, progress=False)
    assert torch.equal(torch.get_rng_state(), before)


class _PoisonAt:
    """A recorder that writes NaN into the first weight after a given step."""

    name = "poison"

    def __init__(self, step):
        self.step = step

    def on_train_begin(self, model):
        pass

    def on_step(self, step, model, batch, loss):
        if step == self.step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    def on_epoch_end(self, epoch, model):
        pass

    def result(self):
        return {}


def test_divergence_is_reported_not_raised(digits):
    steps_per_epoch = math.ceil(1438 / 64)
    poison = steps_per_epoch + 3  # NaN weights after step 3 of epoch 2
    result = train(
        _mlp(0), digits, epochs=3, batch_size=64, recorders=[_PoisonAt(poison)], progress=False
    )
    assert result.diverged and result.diverged_at == poison + 1
    assert result.steps == poison and result.epochs == 1
    assert len(result.test_accuracy) == 1 and math.isfinite(result.test_loss[0])
    json.dumps(result.to_dict(), allow_nan=False)


def test_natural_divergence_on_regression():
    # SGD with lr 5 on an MSE teacher task blows up geometrically within the first epoch
    ds = load_dataset("teacher", seed=0, n_classes=0, n_train=500, n_test=100)
    result = train(_mlp(0, d_in=20, d_out=1), ds, epochs=3, lr=5.0, progress=False)
    assert result.diverged and result.diverged_at is not None
    assert math.isnan(result.final_test_accuracy)  # regression has no accuracy


def test_regression_and_validation_metrics():
    ds = load_dataset("teacher", seed=0, n_classes=0, n_train=500, n_test=100, val_fraction=0.2)
    result = train(_mlp(0, d_in=20, d_out=1), ds, epochs=6, lr=0.01, progress=False)
    assert result.train_accuracy == () and result.test_accuracy == ()
    assert len(result.val_loss) == 6 and result.val_loss[-1] < result.val_loss[0]
    assert result.test_loss[-1] < result.test_loss[0]


def test_evaluate_matches_a_direct_computation(digits):
    model = _mlp(0)
    loss, acc = evaluate(model, digits.x_test, digits.y_test, batch_size=100)
    with torch.no_grad():
        out = model(digits.x_test)
    # batched float64 accumulation vs one float32 mean: agree to float32 rounding
    assert loss == pytest.approx(nn.functional.cross_entropy(out, digits.y_test).item(), rel=1e-5)
    assert acc == (out.argmax(1) == digits.y_test).sum().item() / digits.y_test.numel()


def test_dsr_component_is_stepped_after_every_step(digits):
    class FakeDSR:
        def __init__(self):
            self.steps, self.optimizer = [], None

        def attach_optimizer(self, optimizer):
            self.optimizer = optimizer

        def step(self, iteration):
            self.steps.append(iteration)

    dsr = FakeDSR()
    result = train(_masked_mlp(0), digits, epochs=2, batch_size=128, dsr=dsr, progress=False)
    assert dsr.steps == list(range(1, result.steps + 1))
    assert isinstance(dsr.optimizer, torch.optim.SGD)


def test_result_is_json_serialisable(digits):
    result = train(_mlp(0), digits, epochs=1, progress=False)
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert d["final_test_accuracy"] == result.final_test_accuracy
    assert d["config"]["optimizer"] == "sgd" and d["config"]["momentum"] == 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"schedule": "linear"}, "schedule"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"recorders": [object()]}, "not a recorder"),
        ({"recorders": [GradientNormRecorder(), GradientNormRecorder()]}, "unique"),
        ({"dsr": object()}, "dsr"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_arguments(digits, kwargs, message):
    kwargs = {"epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        train(_mlp(0), digits, progress=False, **kwargs)


def test_wrong_output_shape_is_named(digits):
    with pytest.raises(ValueError, match="needs"):
        train(_mlp(0, d_out=3), digits, epochs=1, progress=False)
    with pytest.raises(ValueError, match="Dataset"):
        train(_mlp(0), (digits.x_train, digits.y_train), epochs=1, progress=False)


def test_progress_bar_writes_to_stderr(digits, capsys):
    train(_mlp(0), digits, epochs=1, batch_size=256, progress=True)
    assert "train" in capsys.readouterr().err
    train(_mlp(0), digits, epochs=1, batch_size=256, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_matches_the_cpu_path(digits):
    cpu = train(_mlp(0), digits, epochs=2, lr=0.05, progress=False)
    gpu = train(_mlp(0), digits, epochs=2, lr=0.05, device="cuda", progress=False)
    # different kernels, same maths: losses agree to float32 accumulation differences
    assert gpu.train_loss == pytest.approx(cpu.train_loss, rel=1e-3)
    assert gpu.final_test_accuracy > 0.9


def test_sigprop_masked_mlp_pruned_with_snip_keeps_its_mask(digits):
    from sigprop.experiments.data import class_balanced_batch
    from sigprop.nn.init import eoc_init_
    from sigprop.nn.models import mlp
    from sigprop.prune import prune_at_init

    g = torch.Generator().manual_seed(0)
    model = mlp(64, 64, 3, 10, "tanh", layer="masked", generator=g)
    eoc_init_(model, "tanh", sigma_b=0.05, generator=g)
    prune_at_init(model, "snip", 0.2, class_balanced_batch(digits, 10, g), progress=False)
    masks = {n: b.clone() for n, b in model.named_buffers() if n.endswith("weight_mask")}
    result = train(
        model, digits, epochs=3, lr=0.05, momentum=0.9, weight_decay=1e-3, progress=False
    )
    assert result.final_test_accuracy > 0.8  # 20 % of the weights still learn digits (~93 %)
    for name, module in model.named_modules():
        if hasattr(module, "weight_mask"):
            assert torch.equal(module.weight_mask, masks[f"{name}.weight_mask"])
            assert torch.count_nonzero(module.weight[module.weight_mask == 0]) == 0


def test_real_dsr_keeps_the_parameter_count(digits):
    from sigprop.experiments.recorders import DensityRecorder
    from sigprop.nn.models import mlp
    from sigprop.prune import DSR

    g = torch.Generator().manual_seed(1)
    model = mlp(64, 64, 3, 10, "tanh", layer="masked", density=0.2, generator=g)
    dsr = DSR(model, prune_interval=5, target_prune_fraction=0.05, generator=g)
    rec = DensityRecorder(every=5)
    train(model, digits, epochs=1, batch_size=64, lr=0.05, dsr=dsr, recorders=[rec], progress=False)
    out = rec.result()
    totals = [sum(v[i] for v in out["values"].values()) for i in range(len(out["steps"]))]
    assert len(set(totals)) == 1  # DSR moves weights between layers, never adds any
    assert len(dsr.history) == len(out["steps"]) - 1  # one reallocation per recorded interval
    moved = [out["values"][n][0] != out["values"][n][-1] for n in out["layers"]]
    assert any(moved)


def test_learning_curve_and_recorder_plots(digits, tmp_path):
    from sigprop.plotting.training import plot_learning_curves, plot_recorder

    recs = [GradientNormRecorder(every=2)]
    a = train(_mlp(0), digits, epochs=2, batch_size=128, recorders=recs, progress=False)
    b = train(_mlp(1), digits, epochs=2, batch_size=128, progress=False)
    path = plot_learning_curves([a, b.to_dict()], tmp_path / "curves.png", labels=["a", "b"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = plot_recorder(a, "gradient_norm", tmp_path / "g.png", per_epoch=True)
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="no recorder 'density'"):
        plot_recorder(a, "density", tmp_path / "d.png")
    with pytest.raises(ValueError, match="labels"):
        plot_learning_curves([a, b], tmp_path / "x.png", labels=["only one"])
