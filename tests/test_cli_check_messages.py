"""Messages of ``sigprop check`` that lead somewhere: the pickle refusal, ``--trust-pickle``
on a user's own class, a ViT's graph, the probe."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import torch.nn.utils.prune as prune

from sigprop.cli import main
from sigprop.diagnostics.collapse import check_collapse
from sigprop.nn.arch import build_model

_NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        return self.b(self.a(x).relu())


def make():
    return Net()
"""


def _saved_user_model(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "usernet.py").write_text(_NET)
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import usernet; "
        "torch.save(usernet.make(), sys.argv[2])"
    )
    path = tmp_path / "model.pt"
    subprocess.run([sys.executable, "-c", script, str(code), str(path)], check=True)
    return code, path


def test_pickle_refusal_points_at_arch(tmp_path, capsys):
    _, path = _saved_user_model(tmp_path)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refusing to unpickle" in err and "--arch" in err and "module.path:factory" in err


def test_trust_pickle_without_the_class_explains_the_import_path(tmp_path, capsys):
    _, path = _saved_user_model(tmp_path)
    assert main(["check", str(path), "--trust-pickle"]) == 2
    err = capsys.readouterr().err
    assert "No module named 'usernet'" in err
    assert "PYTHONPATH" in err and "--arch module.path:factory" in err
    assert len(err.strip().splitlines()) == 1


def test_arch_factory_of_the_users_code(tmp_path, capsys, monkeypatch):
    code, _ = _saved_user_model(tmp_path)
    monkeypatch.syspath_prepend(str(code))
    import usernet

    model = usernet.make()
    prune.l1_unstructured(model.a, "weight", amount=0.5)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    assert main(["check", str(tmp_path / "sd.pt"), "--arch", "usernet:make", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["graph"] == "arch:usernet:make" and d["status"] == "healthy"
    assert d["effective_exact"] is True and d["input_shape"] == [4]


def test_timm_vit_has_a_graph_and_a_bypassed_attention():
    model = build_model("timm:vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10)
    assert check_collapse(model).graph == "fx"
    prune.identity(model.blocks[3].attn.qkv, "weight")
    with torch.no_grad():
        model.blocks[3].attn.qkv.weight_mask.zero_()
    report = check_collapse(model, input_shape=(3, 32, 32), probe=True)
    assert report.graph == "fx" and report.connected is True
    assert report.verdict == "collapsed but bypassed"
    assert report.skips == ("blocks.3: identity skip",)
    assert not report.probe["input_independent"]  # the live model agrees: connected
    # exact through attention: the emptied qkv leaves its block's proj reading nothing
    assert report.effective_exact, report.notes
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["blocks.3.attn.proj"].kept > 0
    assert by_name["blocks.3.attn.proj"].effective_kept == 0
    assert by_name["blocks.2.attn.qkv"].effective_kept > 0
    assert by_name["blocks.4.attn.proj"].effective_kept > 0
    # the channel-level count is a bound: never fewer effective weights than the exact one
    assert all(layer.channel_effective_kept >= layer.effective_kept for layer in report.layers)
    prune.identity(model.patch_embed.proj, "weight")
    with torch.no_grad():
        model.patch_embed.proj.weight_mask.zero_()
    cut = check_collapse(model, input_shape=(3, 32, 32), probe=True)
    assert cut.verdict == "disconnected" and cut.probe["input_independent"]


def test_probe_flags_a_connected_net_with_an_input_independent_output():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(-torch.eye(4))  # connected, but ReLU(-x - 5) = 0 for these inputs
        net[0].bias.fill_(-5.0)
    structural = check_collapse(net)
    assert structural.verdict == "healthy"
    probed = check_collapse(net, input_shape=(4,), probe=True)
    assert probed.connected is True and probed.verdict == "input-independent"
    assert probed.probe["output_spread"] == 0.0 and not probed.healthy
