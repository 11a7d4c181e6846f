"""sigprop.watch in the user's own loop: exact numbers in every mask format, hooks that never
change training, no_grad evaluation, collapse on mask changes, predictions, errors."""

import math

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import sigprop
from sigprop.nn import DCTPlusSparseLinear, MaskedConv2d, MaskedLinear
from sigprop.validate import InvalidInput
from sigprop.watcher import QUANTITIES, Watcher, read_log, watch


def _mixed(seed=0, storage="dense"):
    """One layer of every format: sigprop mask, torch.nn.utils.prune, DCT-plus-sparse, dense.

    Returns the model and, per watched layer name, (trained tensor getter, mask or None).
    """
    g = torch.Generator().manual_seed(seed)
    masked = MaskedLinear(12, 16, density=0.5, generator=g)
    pruned = nn.Linear(16, 16)
    with torch.no_grad():
        pruned.weight.copy_(torch.randn(16, 16, generator=g) / 4)
        pruned.bias.zero_()
    torch_prune.custom_from_mask(pruned, "weight", torch.rand(16, 16, generator=g) < 0.6)
    dct = DCTPlusSparseLinear(16, 16, density=0.3, sparse_std=0.2, generator=g, storage=storage)
    dense = nn.Linear(16, 4)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(4, 16, generator=g) / 4)
        dense.bias.copy_(torch.randn(4, generator=g) / 4)
    model = nn.Sequential(masked, nn.Tanh(), pruned, nn.Tanh(), dct, nn.Tanh(), dense)
    tensors = {
        "0": (lambda: masked.weight, masked.weight_mask),
        "2": (lambda: pruned.weight_orig, pruned.weight_mask),
        "4": (
            (lambda: dct.weight, dct.weight_mask)
            if storage == "dense"
            else (lambda: dct.values, None)
        ),
        "6": (lambda: dense.weight, None),
    }
    return model, tensors


def _batch(seed, n=32):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


def _weight_layers(model):
    return [(n, m) for n, m in model.named_modules() if n in ("0", "2", "4", "6")]


@pytest.mark.parametrize("storage", ["dense", "compact"])
def test_records_exactly_the_gradients_the_optimiser_saw(tmp_path, storage):
    model, tensors = _mixed(storage=storage)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen, q_seen = {}, {}
    with watch(model, tmp_path, every=1, tensorboard=False) as w:
        for step in range(1, 6):
            x, y = _batch(step)
            h = x
            q_step = {}
            for name, m in model.named_children():  # the forward, layer by layer
                h = m(h)
                if name in tensors:
                    q_step[name] = float(h.detach().float().square().mean())
            loss = nn.functional.cross_entropy(h, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen[step] = {}
            for name, (get, mask) in tensors.items():
                grad = get().grad
                if mask is not None:  # the optimiser's gradient is zero at pruned positions
                    assert torch.count_nonzero(grad[mask == 0]) == 0
                    assert torch.equal((grad * mask).norm(), grad.norm())
                seen[step][name] = float(grad.norm())
            q_seen[step] = q_step
            w.step()
    log = read_log(tmp_path)
    assert list(log.steps) == [0, 1, 2, 3, 4, 5]
    assert log.layers == ("0", "2", "4", "6")
    for i, step in enumerate(log.steps[1:], start=1):
        for j, name in enumerate(log.layers):
            assert log.values["grad_norm"][i, j] == seen[step][name]  # exact
            assert log.values["q"][i, j] == q_seen[step][name]
    assert math.isnan(log.values["grad_norm"][0, 0])  # step 0: no gradient yet


def test_densities_and_weight_norms_of_every_mask_format(tmp_path):
    model, tensors = _mixed()
    with watch(model, tmp_path, every=1, tensorboard=False):
        pass
    log = read_log(tmp_path)
    for j, name in enumerate(log.layers):
        get, mask = tensors[name]
        w = get().detach()
        if mask is None:
            density = torch.count_nonzero(w).item() / w.numel()
            norm = float(w.norm())
        else:
            density = mask.sum().item() / mask.numel()
            norm = float((w * mask).norm())  # weight_orig keeps values at pruned positions
        assert log.values["density"][0, j] == density
        assert log.values["weight_norm"][0, j] == norm
    assert log.values["density"][0, 1] == pytest.approx(0.6, abs=0.15)  # torch prune mask
    assert log.values["density"][0, 0] == 0.5  # exact count of the sigprop mask
    assert log.values["density"][0, 2] == round(0.3 * 256) / 256


def test_conv_layers_and_compact_storage_are_watched(tmp_path):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        MaskedConv2d(1, 4, 3, padding=1, density=0.5, generator=g),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 36, 3),
    )
    x = torch.randn(8, 1, 6, 6, generator=g)
    with watch(model, tmp_path, every=1, tensorboard=False) as w:
        out = model(x)
        out.square().mean().backward()
        w.step()
    log = read_log(tmp_path)
    assert log.layers == ("0", "3")
    with torch.no_grad():
        expected_q = float(model[0](x).square().mean())
    assert log.values["q"][1, 0] == expected_q
    assert log.values["grad_norm"][1, 0] == float(model[0].weight.grad.norm())


@pytest.mark.parametrize("probe", [False, True])
def test_training_is_bit_identical_with_and_without_the_watcher(tmp_path, probe):
    runs = []
    for watched in (False, True):
        model, _ = _mixed(seed=3)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        outputs, grads = [], []
        w = (
            watch(model, tmp_path / str(probe), every=2, inputs=_batch(99)[0] if probe else None)
            if watched
            else None
        )
        for step in range(1, 7):
            x, y = _batch(step)
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            outputs.append(out.detach().clone())
            grads.append([p.grad.clone() for p in model.parameters()])
            if w is not None:
                w.step()
        if w is not None:
            w.close()
        runs.append((outputs, grads, [p.detach().clone() for p in model.parameters()], model))
    (o1, g1, p1, _), (o2, g2, p2, model) = runs
    assert all(torch.equal(a, b) for a, b in zip(o1, o2))
    assert all(torch.equal(a, b) for ga, gb in zip(g1, g2) for a, b in zip(ga, gb))
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    for m in model.modules():  # every hook removed on close (torch.nn.utils.prune's stays)
        assert not m._forward_hooks and not m._backward_hooks
        assert all(
            isinstance(h, torch_prune.BasePruningMethod) for h in m._forward_pre_hooks.values()
        )
    assert len(read_log(tmp_path / str(probe)).steps) == 4  # steps 0, 2, 4, 6


def test_no_grad_evaluation_passes_do_not_count(tmp_path):
    model, tensors = _mixed()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, tmp_path, every=1, tensorboard=False) as w:
        x, y = _batch(1)
        loss = nn.functional.cross_entropy(model(x), y)
        with torch.no_grad():
            q_train = float(model[0](x).square().mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            model(10 * _batch(2)[0])  # an evaluation step with very different inputs
        with torch.inference_mode():
            model(-5 * _batch(3)[0])
        model.train()
        w.step()
        with torch.no_grad():  # a record with only evaluation passes has no q
            model(x)
        w.step()
    log = read_log(tmp_path)
    assert log.values["q"][1, 0] == q_train
    assert all(math.isnan(v) for v in log.values["q"][2])


def test_probe_inputs_give_q_at_step_zero(tmp_path):
    model, _ = _mixed()
    probe = _batch(7)[0]
    with watch(model, tmp_path, every=5, inputs=probe, tensorboard=False):
        pass
    model.eval()
    with torch.no_grad():
        h, expected = probe, []
        for name, m in model.named_children():
            h = m(h)
            if name in ("0", "2", "4", "6"):
                expected.append(float(h.square().mean()))
    assert list(read_log(tmp_path).values["q"][0]) == expected


def test_prediction_is_written_beside_the_measurement_at_step_zero(tmp_path):
    from sigprop.diagnostics import describe, predict
    from sigprop.nn.init import eoc_init_
    from sigprop.nn.models import mlp

    g = torch.Generator().manual_seed(0)
    model = mlp(16, 32, 4, 3, "tanh", layer="masked", density=0.5, generator=g)
    eoc_init_(model, "tanh", sigma_b=0.05, generator=g)
    pred = predict(describe(model), q0=1.0)
    with watch(model, tmp_path, every=1, prediction=pred, inputs=torch.randn(64, 16)):
        pass
    log = read_log(tmp_path)
    assert set(log.predicted) == set(pred.names) == set(log.layers)
    for i, name in enumerate(pred.names):
        assert log.predicted[name]["q"] == float(pred.q[i])
        assert log.predicted[name]["weight_grad_ratio"] == float(pred.weight_grad_ratio[i])
        assert log.predicted[name]["density"] == float(pred.density[i])
    other = predict(describe(mlp(16, 32, 5, 3, "tanh", generator=g)), q0=1.0)
    with pytest.raises(InvalidInput, match="not weight layers"):
        watch(model, tmp_path / "other", prediction=other)


def test_collapse_is_checked_when_masks_change(tmp_path):
    from sigprop.diagnostics import check_collapse

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        MaskedLinear(8, 8, density=0.5, generator=g),
        nn.Tanh(),
        MaskedLinear(8, 8, density=0.5, generator=g),
        nn.Tanh(),
        MaskedLinear(8, 2, density=0.5, generator=g),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 8, generator=g), torch.randint(0, 2, (16,), generator=g)
    with watch(model, tmp_path, every=2, tensorboard=False) as w:
        for step in range(1, 9):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step == 3:  # a regrowth step elsewhere in the user's loop empties layer 2
                model[2].set_mask(torch.zeros(8, 8))
            w.step()
    log = read_log(tmp_path)
    assert [s for s, _ in log.collapse] == [0, 4]  # at the start and after the change only
    entry = dict(log.collapse)[4]
    report = check_collapse(model)
    assert entry["collapsed_layers"] == ["2"] == list(report.collapsed_layers)
    assert entry["effective_density"] == report.effective_kept / report.total == 0.0
    assert entry["connected"] is False
    assert dict(log.collapse)[0]["effective_density"] > 0


def test_resume_appends_after_the_last_step(tmp_path):
    model, _ = _mixed()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def train(w, n):
        for _ in range(n):
            x, y = _batch(0)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step()

    with watch(model, tmp_path, every=1, tensorboard=False) as w:
        train(w, 5)
    with watch(model, tmp_path, every=1, tensorboard=False) as w:
        assert w.current_step == 5
        train(w, 3)
    lines = (tmp_path / "sigprop.jsonl").read_text().splitlines()
    assert len(lines) == 9
    assert list(read_log(tmp_path).steps) == list(range(9))  # one step 0, then 1..8


def test_resume_after_a_torn_line(tmp_path):
    model, _ = _mixed()
    with watch(model, tmp_path, every=1, tensorboard=False) as w:
        for _ in range(3):
            w.step()
    path = tmp_path / "sigprop.jsonl"
    complete = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"step":4,"layers":{"0":{"grad_no')  # the process died mid-write
    log = read_log(tmp_path)
    assert log.torn and list(log.steps) == [0, 1, 2, 3]
    with watch(model, tmp_path, every=1, tensorboard=False) as w:
        assert path.read_bytes() == complete  # the torn line is cut
        w.step()
    assert list(read_log(tmp_path).steps) == [0, 1, 2, 3, 4]
    assert not read_log(tmp_path).torn


def test_resume_after_the_process_is_killed(tmp_path):
    import subprocess
    import sys

    script = f"""
import os, signal, torch
from torch import nn
import sigprop
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
w = sigprop.watch(model, {str(tmp_path)!r}, every=1, tensorboard=False)
for step in range(1, 100):
    loss = model(torch.randn(8, 4)).square().mean()
    opt.zero_grad(); loss.backward(); opt.step()
    w.step()
    if step == 7:
        os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    log = read_log(tmp_path)
    assert list(log.steps) == list(range(8))
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with watch(model, tmp_path, every=1, tensorboard=False) as w:  # the lock died with it
        w.step()
    assert read_log(tmp_path).steps[-1] == 8


def test_a_watcher_in_the_one_training_loop(tmp_path):
    from sigprop.experiments.data import load_dataset
    from sigprop.experiments.recorders import GradientNormRecorder
    from sigprop.experiments.train import train
    from sigprop.nn.models import mlp

    ds = load_dataset("digits", seed=0)
    model = mlp(64, 32, 3, 10, "tanh", layer="masked", density=0.4, generator=0)
    rec = GradientNormRecorder(every=4)
    with watch(model, tmp_path, every=4, tensorboard=False) as w:
        result = train(
            model, ds, epochs=1, batch_size=256, recorders=[rec], callbacks=[w], progress=False
        )
    log = read_log(tmp_path)
    out = result.recorders["gradient_norm"]
    assert list(log.steps[1:]) == out["steps"] == list(range(4, result.steps + 1, 4))
    for j, name in enumerate(log.layers):  # one mechanism: the same numbers
        assert list(log.values["grad_norm"][1:, j]) == out["values"][name]
    with pytest.raises(InvalidInput, match="another model"):
        with watch(model, tmp_path / "b", tensorboard=False) as w2:
            train(mlp(64, 8, 2, 10, "tanh"), ds, epochs=1, callbacks=[w2], progress=False)


def test_in_memory_records_keep_tensors():
    model, _ = _mixed()
    w = Watcher(model, None, every=1, quantities=("grad_norm", "density"))
    model(_batch(0)[0]).sum().backward()
    record = w.step()
    w.close()
    assert [r.step for r in w.records] == [0, 1] and record is w.records[1]
    assert set(record.values) == {"grad_norm"} and record.kept.dtype == torch.float64
    line = record.to_json()
    assert set(line["layers"]["0"]) == {"grad_norm", "density"}


def test_sigprop_watch_is_the_function_and_theory_stays_torch_free():
    import subprocess
    import sys

    assert sigprop.watch is watch and sigprop.Watcher is Watcher
    code = (
        "import sys, sigprop, sigprop.theory\n"
        "assert 'torch' not in sys.modules\n"
        "import sigprop.watcher\n"
        "assert callable(sigprop.watch)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_arguments(tmp_path):
    model, _ = _mixed()
    for kwargs, match in [
        ({"every": 0}, "every"),
        ({"every": 1.5}, "every"),
        ({"quantities": ("loss",)}, "quantities"),
        ({"tensorboard": "yes"}, "tensorboard"),
        ({"inputs": torch.zeros(3)}, "inputs"),
        ({"inputs": torch.full((2, 12), float("nan"))}, "finite"),
    ]:
        with pytest.raises(InvalidInput, match=match):
            watch(model, tmp_path / "a", **kwargs)
    with pytest.raises(InvalidInput, match="Module"):
        watch("model.pt", tmp_path)
    with pytest.raises(InvalidInput, match="no weight layers"):
        watch(nn.Sequential(nn.Tanh()), tmp_path)
    with pytest.raises(InvalidInput, match="log_dir"):
        Watcher(model, None, tensorboard=True)
    w = watch(model, tmp_path, tensorboard=False)
    with pytest.raises(InvalidInput, match="another watcher"):
        watch(model, tmp_path, tensorboard=False)
    w.close()
    with pytest.raises(InvalidInput, match="closed"):
        w.step()
    with watch(model, tmp_path, tensorboard=False) as w3, pytest.raises(InvalidInput, match="step"):
        w3.step(step=0)
    assert QUANTITIES == ("grad_norm", "weight_norm", "q", "density")
