"""load_checkpoint on every supported format, and check_collapse on what it returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as prune
from safetensors.torch import save_file
from torch import nn

from sigprop.diagnostics.collapse import check_collapse
from sigprop.io import Checkpoint, load_checkpoint


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)  # test-side seeding of torch's default init; library never seeds
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))


def _masks_of(model):
    return {
        name: m.weight_mask.clone()
        for name, m in model.named_modules()
        if hasattr(m, "weight_mask")
    }


def test_plain_state_dict(tmp_path):
    model = _mlp()
    with torch.no_grad():
        model[2].weight[:, :4] = 0.0
    torch.save(model.state_dict(), tmp_path / "m.pt")
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.format == "torch.save" and ckpt.layout == "plain"
    assert [e.name for e in ckpt.layers] == ["0", "2", "4"]
    assert all(e.mask_key is None and e.mask_source == "nonzero weights" for e in ckpt.layers)
    assert "inferred the layer chain from key order and shapes" in ckpt.notes
    report = check_collapse(ckpt)
    assert report.graph == "chain"
    assert report.layers[1].kept == 80 - 8 * 4
    # units 0..3 of layer 0 feed nothing any more: no way out
    assert report.layers[0].dead_out == (0, 1, 2, 3)
    assert report.layers[0].effective_kept == 120 - 4 * 12


@pytest.mark.parametrize("how", ["random_unstructured", "global_unstructured"])
def test_torch_prune_state_dict(tmp_path, how):
    model = _mlp()
    if how == "random_unstructured":
        for i in (0, 2, 4):
            prune.random_unstructured(model[i], "weight", amount=0.6)
    else:
        params = [(model[i], "weight") for i in (0, 2, 4)]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.6)
    masks = _masks_of(model)
    torch.save(model.state_dict(), tmp_path / "p.pt")
    ckpt = load_checkpoint(tmp_path / "p.pt")
    assert ckpt.layout == "torch.nn.utils.prune"
    assert [e.weight_key for e in ckpt.layers] == [
        "0.weight_orig",
        "2.weight_orig",
        "4.weight_orig",
    ]
    assert set(ckpt.masks) == {"0.weight_mask", "2.weight_mask", "4.weight_mask"}
    report = check_collapse(ckpt)
    for layer in report.layers:
        assert layer.kept == int(masks[layer.name].sum())
    # the file and the live model give the same analysis
    assert report.to_dict()["layers"] == check_collapse(model).to_dict()["layers"]


def test_after_prune_remove_zeros_are_the_mask(tmp_path):
    model = _mlp()
    prune.random_unstructured(model[2], "weight", amount=0.5)
    kept = int(model[2].weight_mask.sum())
    prune.remove(model[2], "weight")
    torch.save(model.state_dict(), tmp_path / "r.pt")
    report = check_collapse(load_checkpoint(tmp_path / "r.pt"))
    assert report.layers[1].kept == kept


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_wrapped_state_dict(tmp_path, key):
    model = _mlp()
    torch.save({key: model.state_dict(), "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / "w.pt")
    ckpt = load_checkpoint(tmp_path / "w.pt")
    assert ckpt.wrapper_key == key
    assert len(ckpt.layers) == 3
    assert any(key in n for n in ckpt.notes)


def test_weight_mask_style_state_dict(tmp_path):
    """Synaptic-Flow / sigprop layers: an unmasked ``weight`` plus a ``weight_mask`` buffer."""
    g = torch.Generator().manual_seed(3)
    sd = {}
    shapes = [(6, 5), (6, 6), (2, 6)]
    for i, shape in enumerate(shapes):
        sd[f"layers.{i}.weight"] = torch.randn(shape, generator=g)
        sd[f"layers.{i}.weight_mask"] = (torch.rand(shape, generator=g) < 0.5).float()
        sd[f"layers.{i}.bias"] = torch.zeros(shape[0])
    torch.save(sd, tmp_path / "s.pt")
    ckpt = load_checkpoint(tmp_path / "s.pt")
    assert ckpt.layout == "weight_mask"
    report = check_collapse(ckpt)
    for i, layer in enumerate(report.layers):
        assert layer.kept == int(sd[f"layers.{i}.weight_mask"].sum())


def test_dct_plus_sparse_state_dict_keeps_connectivity(tmp_path):
    sd = {
        "a.weight": torch.ones(4, 4),
        "b.weight": torch.ones(4, 4),
        "b.weight_mask": torch.zeros(4, 4),  # S fully pruned ...
        "b.alpha": torch.tensor(1.0),  # ... but the DCT offset still connects
        "c.weight": torch.ones(2, 4),
    }
    torch.save(sd, tmp_path / "d.pt")
    ckpt = load_checkpoint(tmp_path / "d.pt")
    assert ckpt.layers[1].alpha_key == "b.alpha"
    report = check_collapse(ckpt)
    assert report.collapsed_layers == ("b",)
    assert report.connected and report.layers[2].effective_kept == 8


def test_legacy_torch_save(tmp_path):
    torch.save(_mlp().state_dict(), tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    ckpt = load_checkpoint(tmp_path / "l.pt")
    assert ckpt.format == "torch.save (legacy)"
    assert check_collapse(ckpt).sparsity == 0.0


def test_safetensors_lazy_and_in_natural_order(tmp_path):
    g = torch.Generator().manual_seed(1)
    widths = [7] + [5] * 11 + [2]
    sd = {
        f"layers.{i}.weight": torch.randn(widths[i + 1], widths[i], generator=g)
        for i in range(len(widths) - 1)
    }
    sd["layers.3.weight"][:, 1] = 0.0
    save_file(sd, tmp_path / "m.safetensors")
    ckpt = load_checkpoint(tmp_path / "m.safetensors")
    assert ckpt.format == "safetensors"
    # file (alphabetical) order would put layers.10 before layers.2
    assert [e.name for e in ckpt.layers] == [f"layers.{i}" for i in range(12)]
    lazy = ckpt.tensors["layers.3.weight"]
    assert lazy.shape == (5, 5)
    rows = list(lazy.iter_rows(2))
    assert [r.shape[0] for r in rows] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(rows), sd["layers.3.weight"], rtol=0, atol=0)
    report = check_collapse(ckpt)
    assert report.layers[3].kept == 20
    assert report.layers[2].dead_out == (1,)


def test_memory_mapped_rows_survive_page_release(tmp_path):
    """Streaming a memory-mapped tensor hands its pages back; reading again gives the same data."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4096, 300, generator=g)
    torch.save({"fc.weight": w}, tmp_path / "big.pt")
    ckpt = load_checkpoint(tmp_path / "big.pt")
    lazy = ckpt.tensors["fc.weight"]
    first = torch.cat([r.clone() for r in lazy.iter_rows(1000)])
    again = torch.cat([r.clone() for r in lazy.iter_rows(333)])
    torch.testing.assert_close(first, w, rtol=0, atol=0)
    torch.testing.assert_close(again, w, rtol=0, atol=0)
    torch.testing.assert_close(lazy.load(), w, rtol=0, atol=0)


def test_conv_then_linear_chain_inferred_with_flatten(tmp_path):
    sd = {
        "features.0.weight": torch.ones(8, 3, 3, 3),
        "features.2.weight": torch.ones(4, 8, 3, 3),
        "classifier.weight": torch.ones(10, 4 * 5 * 5),
    }
    sd["features.2.weight"][2] = 0.0  # output channel 2: no way in
    torch.save(sd, tmp_path / "c.pt")
    report = check_collapse(load_checkpoint(tmp_path / "c.pt"))
    assert report.layers[1].dead_in == (2,)
    assert report.layers[2].effective_kept == 1000 - 10 * 25  # channel 2's 25 features


def test_thousands_of_layers_load_and_check(tmp_path):
    sd = {f"blocks.{i}.weight": torch.ones(3, 3) for i in range(2000)}
    sd["blocks.1500.weight"][:, 0] = 0.0
    torch.save(sd, tmp_path / "deep.pt")
    report = check_collapse(load_checkpoint(tmp_path / "deep.pt"))
    assert len(report.layers) == 2000
    assert report.layers[1499].dead_out == (0,)
    assert report.healthy


def _residual_model():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(4, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return x + self.c2(torch.relu(self.c1(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.block = Block()
            self.fc = nn.Linear(4 * 4 * 4, 5)

        def forward(self, x):
            return self.fc(torch.flatten(self.block(torch.relu(self.stem(x))), 1))

    torch.manual_seed(0)
    return Net()


def test_torch_export_program_is_graph_aware(tmp_path):
    model = _residual_model()
    prune.random_unstructured(model.block.c1, "weight", amount=1.0)
    # torch.nn.utils.prune's pre-hook assigns ``weight`` in forward; torch.export says so
    with pytest.warns(UserWarning, match="assigned during export"):
        program = torch.export.export(model, (torch.randn(2, 3, 4, 4),))
    torch.export.save(program, tmp_path / "r.pt2")
    ckpt = load_checkpoint(tmp_path / "r.pt2")
    assert ckpt.format == "torch.export" and ckpt.exported is not None
    report = check_collapse(ckpt)
    assert report.graph == "export"
    assert [layer.name for layer in report.layers] == ["stem", "block.c1", "block.c2", "fc"]
    # the skip connection keeps the network connected; the branch's c2 is off every path
    assert report.connected is True
    assert report.collapsed_layers == ("block.c1",)
    assert report.effectively_collapsed_layers == ("block.c2",)
    assert report.layers[3].effective_kept == 5 * 64
    # the traced live model gives the same answer (exact at the program's example shape)
    assert report.effective_exact and report.input_shape == (3, 4, 4)
    live = check_collapse(model, input_shape=(3, 4, 4))
    assert report.to_dict()["layers"] == live.to_dict()["layers"]
    # the same weights as a state dict: the chain misses the skip and reports disconnection
    torch.save(model.state_dict(), tmp_path / "r.pt")
    chained = check_collapse(load_checkpoint(tmp_path / "r.pt"))
    assert chained.graph == "chain" and chained.connected is False


def test_checkpoint_to_dict_is_json(tmp_path):
    import json

    torch.save(_mlp().state_dict(), tmp_path / "m.pt")
    d = json.loads(json.dumps(load_checkpoint(tmp_path / "m.pt").to_dict()))
    assert d["format"] == "torch.save" and len(d["layers"]) == 3


def test_values_validation_can_be_deferred(tmp_path):
    sd = {"fc.weight": torch.ones(2, 2)}
    sd["fc.weight"][0, 0] = np.nan
    torch.save(sd, tmp_path / "n.pt")
    ckpt = load_checkpoint(tmp_path / "n.pt", validate_values=False)
    with pytest.raises(ValueError, match="NaN"):
        check_collapse(ckpt)
