"""``load_checkpoint(path, arch=SPEC)`` and ``check_collapse(..., arch=SPEC)``: a state dict
loaded strictly into its architecture (:mod:`sigprop.io.arch`) and checked with the traced
graph, the same report as ``sigprop check FILE --arch SPEC``; a state dict that does not fit
is refused in one line naming the first keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

from sigprop.cli import main
from sigprop.diagnostics.collapse import check_collapse
from sigprop.io import CheckpointError, load_checkpoint
from sigprop.nn.arch import build_model, import_torchvision
from sigprop.validate import InvalidInput

SPEC = "torchvision:resnet18"
#: the keys sigprop's report adds to the collapse report's dict in ``sigprop check --json``
CLI_ONLY = ("format", "layout", "path", "status")


def _resnet18(prune_fn=None) -> nn.Module:
    import_torchvision()  # the installed torchvision's C extension cannot load
    torch.manual_seed(0)  # test-side seeding of torch's default init
    model = build_model(SPEC, num_classes=10).eval()
    if prune_fn is not None:
        prune_fn(model)
    return model


def _zero(model: nn.Module, name: str) -> None:
    prune.identity(model.get_submodule(name), "weight")
    with torch.no_grad():
        model.get_submodule(name).weight_mask.zero_()


def _save(model: nn.Module, path: Path, fmt: str) -> Path:
    if fmt == "pt":
        torch.save(model.state_dict(), path)
        return path
    from safetensors.torch import save_file

    for module in model.modules():
        if hasattr(module, "weight_orig"):
            prune.remove(module, "weight")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _cli_json(capsys, path: Path, *extra: str) -> tuple[int, dict]:
    code = main(["check", str(path), "--arch", SPEC, "--json", *extra])
    payload = json.loads(capsys.readouterr().out)
    return code, {k: v for k, v in payload.items() if k not in CLI_ONLY}


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_load_checkpoint_with_arch_builds_the_model_holding_the_tensors(tmp_path, fmt):
    model = _resnet18()
    path = _save(model, tmp_path / f"r.{fmt}", fmt)
    ckpt = load_checkpoint(path, arch=SPEC)
    assert isinstance(ckpt.module, nn.Module) and ckpt.arch == SPEC
    assert not ckpt.module.training
    own = ckpt.module.state_dict()
    assert own.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(own[key], value), key
    assert any(f"graph from the architecture {SPEC}" in n for n in ckpt.notes)
    assert not any("inferred the layer chain" in n or "natural order" in n for n in ckpt.notes)
    assert ckpt.to_dict()["arch"] == SPEC
    assert load_checkpoint(path).module is None  # without arch= nothing is built


def test_a_pruned_half_precision_state_dict_loads_as_the_architecture_computes_it(tmp_path):
    # torchvision builds on the meta device and is handed the file's tensors: they must be
    # cast to the architecture's float32, be copies (not the loader's buffers), leave no
    # meta tensor behind, and the pruned weight must be weight_orig * weight_mask before
    # any forward pass (as after load_state_dict into a model built normally)
    model = _resnet18(lambda m: prune.random_unstructured(m.layer2[0].conv1, "weight", 0.7))
    model = model.half()
    path = tmp_path / "h.pt"
    torch.save(model.state_dict(), path)
    got = load_checkpoint(path, arch=SPEC).module
    tensors = [*got.parameters(), *got.buffers()]
    assert not any(t.is_meta for t in tensors)
    assert {t.dtype for t in got.parameters()} == {torch.float32}
    own = got.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(own[key], value.to(own[key].dtype)), key
    conv = got.layer2[0].conv1
    assert torch.equal(conv.weight, conv.weight_orig * conv.weight_mask)
    assert all(p.requires_grad for p in got.parameters())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = model.float()(x)
    assert torch.equal(got(x), reference)


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_python_api_with_arch_equals_the_cli(tmp_path, capsys, fmt):
    model = _resnet18(lambda m: _zero(m, "layer1.0.conv1"))  # collapsed, bypassed by a skip
    path = _save(model, tmp_path / f"r.{fmt}", fmt)
    code, cli = _cli_json(capsys, path)
    assert code == 1 and cli["graph"] == f"arch:{SPEC}"
    assert cli["verdict"] == "collapsed but bypassed" and cli["input_shape"] == [3, 224, 224]
    loaded = check_collapse(load_checkpoint(path, arch=SPEC)).to_dict()
    by_path = check_collapse(path, arch=SPEC).to_dict()
    by_ckpt = check_collapse(load_checkpoint(path), arch=SPEC).to_dict()
    assert json.loads(json.dumps(loaded)) == cli
    assert json.loads(json.dumps(by_path)) == cli
    assert json.loads(json.dumps(by_ckpt)) == cli
    code, small = _cli_json(capsys, path, "--input-shape", "3,32,32")
    api = check_collapse(path, arch=SPEC, input_shape=(3, 32, 32)).to_dict()
    assert code == 1 and json.loads(json.dumps(api)) == small


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_stem_fully_pruned_is_disconnected_with_arch(tmp_path, fmt):
    path = _save(_resnet18(lambda m: _zero(m, "conv1")), tmp_path / f"s.{fmt}", fmt)
    for report in (
        check_collapse(load_checkpoint(path, arch=SPEC), input_shape=(3, 32, 32)),
        check_collapse(path, arch=SPEC, input_shape=(3, 32, 32)),
    ):
        assert report.verdict == "disconnected" and report.connected is False
        assert report.graph == f"arch:{SPEC}"
        assert "conv1" in report.collapsed_layers


def test_a_mismatched_arch_is_refused_in_one_line_like_the_cli(tmp_path, capsys):
    path = _save(_resnet18(), tmp_path / "r.pt", "pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, arch="torchvision:resnet34")
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, InvalidInput)
    assert message.startswith("the checkpoint does not fit torchvision:resnet34: missing keys ")
    assert "(and " in message and " more)" in message  # the first few names only
    with pytest.raises(InvalidInput, match="does not fit torchvision:resnet34"):
        check_collapse(load_checkpoint(path), arch="torchvision:resnet34")
    assert main(["check", str(path), "--arch", "torchvision:resnet34"]) == 2
    assert capsys.readouterr().err.strip() == f"sigprop check: error: {message}"


def test_shape_mismatches_and_unexpected_keys_are_named(tmp_path):
    sd = _resnet18().state_dict()
    sd["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    sd["extra.weight"] = torch.zeros(2, 2)
    torch.save(sd, tmp_path / "x.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "x.pt", arch=SPEC)
    message = str(info.value)
    assert "unexpected keys 'extra.weight'" in message
    assert "shape mismatches 'conv1.weight (64, 3, 5, 5) vs (64, 3, 7, 7)'" in message


def test_a_malformed_spec_fails_before_the_file_is_read(tmp_path):
    with pytest.raises(InvalidInput, match="is not of the form"):
        load_checkpoint(tmp_path / "absent.pt", arch="resnet18")
    with pytest.raises(InvalidInput, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt", arch=SPEC)
