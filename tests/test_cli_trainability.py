"""``sigprop trainability``: exit 0 / 1 / 2, the JSON report, checkpoints of every kind."""

from __future__ import annotations

import json

import pytest
import torch

from sigprop.cli import main
from sigprop.cli.models import masks_from_zeros
from sigprop.nn.init import eoc_init_
from sigprop.nn.models import mlp
from sigprop.prune import prune_at_init


def _saved(tmp_path, name, *, density=1.0, depth=6):
    model = mlp(20, 64, depth, 4, "tanh", layer="masked")
    eoc_init_(model, "tanh", sigma_b=0.05, generator=0)
    if density < 1:
        prune_at_init(model, "random", density, None, generator=0, progress=False)
    path = tmp_path / name
    torch.save(model, path)
    return str(path)


def test_trainable_pickle_exits_0_with_json(tmp_path, capsys):
    path = _saved(tmp_path, "dense.pt")
    assert main(["trainability", path, "--trust-pickle", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trainable"] is True and 0.5 <= report["score"] <= 1
    assert report["input_shape"] == [20] and report["indicators"]["depth"] == 6


def test_unrescaled_pruned_pickle_exits_1_with_reason(tmp_path, capsys):
    path = _saved(tmp_path, "pruned.pt", density=0.05, depth=20)
    assert main(["trainability", path, "--trust-pickle"]) == 1
    out = capsys.readouterr().out
    assert "NOT TRAINABLE" in out and "rescale_" in out
    assert main(["trainability", path, "--trust-pickle", "--depth-budget", "1000"]) == 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--arch", "torchvision:resnet18"], "exclude"),
        (["--density", "0.1"], "go together"),
        (["--batch", "1"], "at least 2"),
        (["--input-shape", "5"], "cannot run"),
        (["--depth-budget", "-2"], "depth-budget"),
    ],
)
def test_unusable_input_exits_2(tmp_path, capsys, extra, message):
    path = _saved(tmp_path, "m.pt", depth=3)
    assert main(["trainability", path, "--trust-pickle", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_file_without_trust_or_arch_is_not_unpickled(tmp_path, capsys):
    path = _saved(tmp_path, "m.pt", depth=3)
    assert main(["trainability", path]) == 2
    assert "error" in capsys.readouterr().err


def test_zero_weights_are_read_as_pruned():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight[:, :6] = 0
    assert masks_from_zeros(model) == 1
    assert float(model[0].weight_mask.mean()) == pytest.approx(0.25)
    assert bool(model[2].weight_mask.all())  # layers without zeros stay dense


def test_torchvision_resnet_is_traced(capsys):
    code = main(
        [
            "trainability",
            "torchvision:resnet18",
            "--input-shape",
            "3,16,16",
            "--density",
            "0.001",
            "--method",
            "random",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["indicators"]["structure"] == "graph"
    assert report["indicators"]["depth"] == 21 and not report["trainable"]
