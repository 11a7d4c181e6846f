"""Exact weight-level effective sparsity of ``.pt2`` programs (arXiv 2107.02306, Sec. 3).

The aten interpreter is checked against the fx one (itself checked against the paper's
SynFlow-style oracle and by bit-identical outputs in ``test_check_graph_exact``): the
same model, checked live with its input shape and as a ``.pt2`` read by sigprop (and
loaded by torch, trusted), must give the same effective count in every layer, on models
pruned far enough for the exact count to differ from the channel-level one.
"""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as prune
from torch import nn

from sigprop.diagnostics.collapse import check_collapse
from sigprop.io import load_checkpoint


class _Mixed(nn.Module):
    """Padded and strided convs, BatchNorm, a residual add, a concatenation, group and layer
    norm, average and adaptive pooling, a mean and a view that names the batch."""

    def __init__(self, w: int = 6) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, w, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(w)
        self.c2 = nn.Conv2d(w, w, 3, padding=1)
        self.c3 = nn.Conv2d(2 * w, w, 3, stride=2, padding=1, groups=2)
        self.gn = nn.GroupNorm(2, w)
        self.c4 = nn.Conv2d(w, w, 1)
        self.ln = nn.LayerNorm(w)
        self.fc = nn.Linear(w * 2 * 2, 4)
        self.fc2 = nn.Linear(w, 4, bias=False)
        self.fc3 = nn.Linear(w, 4, bias=False)

    def forward(self, x):
        a = F.relu(self.bn(self.c1(x)))
        b = a + F.relu(self.c2(a))
        y = self.gn(self.c3(torch.cat([a, b], dim=1)))  # (B, w, 4, 4)
        y = F.avg_pool2d(torch.tanh(self.c4(y)), 2)  # (B, w, 2, 2)
        head = self.fc(y.reshape(x.shape[0], -1))
        z = self.ln(F.adaptive_avg_pool2d(y, 1).flatten(1))
        return head + self.fc2(z) + self.fc3(y.mean((2, 3)))


def _zeroed(model: nn.Module, density: float, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(torch.rand(m.weight.shape, generator=g) < density)
    return model


def _export(model: nn.Module, shape, path, **kwargs):
    with pytest.warns(UserWarning) if _has_prune(model) else _nothing():
        program = torch.export.export(model, (torch.randn(2, *shape),), **kwargs)
    torch.export.save(program, path)
    return path


def _has_prune(model):
    return any(n.endswith("_mask") for n, _ in model.named_buffers())


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _counts(report):
    return {layer.name: layer.effective_kept for layer in report.layers}


def _assert_same_as_fx(model, shape, path):
    live = check_collapse(model, input_shape=shape)
    assert live.effective_exact, live.notes
    for trust in (False, True):
        report = check_collapse(load_checkpoint(path, trust_pickle=trust))
        assert report.effective_exact, report.notes
        assert report.input_shape == tuple(shape)
        assert _counts(report) == _counts(live)
        assert report.effective_kept == live.effective_kept
    return live


@pytest.mark.parametrize(("density", "seed"), [(0.1, 0), (0.2, 1), (0.4, 2)])
def test_mixed_ops_equal_the_fx_count(tmp_path, density, seed):
    torch.manual_seed(seed)
    model = _zeroed(_Mixed().eval(), density, seed)
    with torch.no_grad():
        model.bn.weight[0] = 0.0  # a zero BatchNorm scale cuts its channel
    shape = (3, 8, 8)
    live = _assert_same_as_fx(model, shape, _export(model, shape, tmp_path / "m.pt2"))
    assert 0 < live.effective_kept < live.kept  # some kept weights are not effective


def test_torch_prune_masks_and_a_resnet_block(tmp_path):
    from sigprop.nn.arch import build_model

    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=10).eval()
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.RandomUnstructured, amount=0.995)
    shape = (3, 16, 16)
    live = _assert_same_as_fx(model, shape, _export(model, shape, tmp_path / "r.pt2"))
    assert live.effective_kept < live.channel_effective_kept


def test_a_symbolic_batch_runs_at_batch_one_and_a_symbolic_size_needs_the_shape(tmp_path):
    torch.manual_seed(3)
    model = _zeroed(_Mixed().eval(), 0.1, 3)
    shape = (3, 8, 8)
    batch = torch.export.Dim("batch", min=2, max=64)
    path = _export(model, shape, tmp_path / "d.pt2", dynamic_shapes=({0: batch},))
    _assert_same_as_fx(model, shape, path)

    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    side = torch.export.Dim("side", min=4, max=64)
    program = torch.export.export(conv, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({2: side},))
    torch.export.save(program, tmp_path / "s.pt2")
    report = check_collapse(load_checkpoint(tmp_path / "s.pt2"))
    assert not report.effective_exact
    assert any("symbolic; give an input shape" in n for n in report.notes)
    report = check_collapse(load_checkpoint(tmp_path / "s.pt2"), input_shape=(3, 12, 8))
    assert report.effective_exact and report.input_shape == (3, 12, 8)


def test_another_input_shape_is_refused_with_a_note(tmp_path):
    model = _zeroed(_Mixed().eval(), 0.3, 0)
    path = _export(model, (3, 8, 8), tmp_path / "m.pt2")
    report = check_collapse(load_checkpoint(path), input_shape=(3, 16, 16))
    assert not report.effective_exact
    assert "specialised to input shape (3, 8, 8), not (3, 16, 16)" in " ".join(report.notes)
    assert "effective sparsity at channel level (a lower bound)" in report.notes


def test_an_operator_outside_the_table_is_named_and_the_bound_stays(tmp_path):
    # instance norm maps to unit connectivity, but its exact rule is not in the table
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.InstanceNorm2d(4, affine=True),
        nn.Flatten(1),
        nn.Linear(4 * 8 * 8, 2),
    ).eval()
    program = torch.export.export(model, (torch.randn(2, 3, 8, 8),))
    torch.export.save(program, tmp_path / "i.pt2")
    report = check_collapse(load_checkpoint(tmp_path / "i.pt2"))
    assert not report.effective_exact
    assert any("'instance_norm'" in n and "is not supported" in n for n in report.notes)
    assert "effective sparsity at channel level (a lower bound)" in report.notes


def test_a_doctored_input_size_is_bounded(tmp_path):
    # the example shape comes from the archive's JSON: a huge one must not allocate
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(1))
    program = torch.export.export(model, (torch.randn(2, 3, 8, 8),))
    torch.export.save(program, tmp_path / "m.pt2")
    with zipfile.ZipFile(tmp_path / "m.pt2") as src:
        entries = {n: src.read(n) for n in src.namelist()}
    name = next(n for n in entries if "/models/" in n and n.endswith(".json"))
    doc = json.loads(entries[name])
    values = doc["graph_module"]["graph"]["tensor_values"]
    user = next(
        s["user_input"]["arg"]["as_tensor"]["name"]
        for s in doc["graph_module"]["signature"]["input_specs"]
        if "user_input" in s
    )
    values[user]["sizes"] = [{"as_int": 2}, {"as_int": 3}, {"as_int": 1 << 20}, {"as_int": 1 << 20}]
    entries[name] = json.dumps(doc).encode()
    with zipfile.ZipFile(tmp_path / "big.pt2", "w") as dst:
        for n, data in entries.items():
            dst.writestr(n, data)
    report = check_collapse(load_checkpoint(tmp_path / "big.pt2"))
    assert not report.effective_exact
    assert any("more than" in n and "elements" in n for n in report.notes)


def test_float32_counts_where_the_run_bounds_them_equal_float64(tmp_path, monkeypatch):
    # the forward pass's tensors bound every count (exact.count_bound) far below 2^24 here:
    # the count stays in float32; forced to float64 (no bound is small enough) it is equal
    from sigprop.diagnostics.collapse import exact_export as X

    torch.manual_seed(5)
    model = _zeroed(_Mixed().eval(), 0.3, 5)
    path = _export(model, (3, 8, 8), tmp_path / "m.pt2")
    program = load_checkpoint(path).exported
    dtypes = []
    init = X._Interpreter.__init__

    def spy(self, params, layers, live, dtype):
        dtypes.append(dtype)
        init(self, params, layers, live, dtype)

    monkeypatch.setattr(X._Interpreter, "__init__", spy)
    fast, reason, _ = X.export_effective_masks(program)
    assert reason is None and dtypes == [torch.float32]
    monkeypatch.setattr(X, "FLOAT32_COUNTS", 0)
    slow, _, _ = X.export_effective_masks(program)
    assert dtypes == [torch.float32, torch.float32, torch.float64]
    assert fast.keys() == slow.keys()
    for name in fast:
        assert torch.equal(fast[name], slow[name]), name
