"""``sigprop spp``: the signal-propagation plot end to end, and its refusals.

Every run goes through the forked harness of ``tests/security/harness.py`` (torch is imported
once). The resnet18 case is the acceptance case of tests/diagnostics/test_graph_predict.py
(torchvision resnet18, train mode, dense, B = 32 iid N(0, 1) inputs at 3×32×32), whose
tolerance is derived there: median relative error of the block-output q at most 10%.
Eval mode is not asserted on: there the sign-averaged mean field misses the frozen channel
offsets (a genuine limit, an xfail with its numbers in that module).
"""

import json
import pickle
import textwrap

import pytest

from tests.security.harness import assert_refused, run_cli

PNG = b"\x89PNG\r\n\x1a\n"

USER_MODELS = '''
import os
from torch import nn

from sigprop.nn.arch import build_model

CANARY = os.environ.get("SPP_CANARY")
if CANARY:  # importing this module is running code: the refusal must not get here
    open(CANARY, "w").close()


class VGG11(nn.Module):
    """torchvision's VGG-11 features with the CIFAR classifier (one 512 -> 10 layer)."""

    def __init__(self):
        super().__init__()
        self.features = build_model("torchvision:vgg11").features
        self.classifier = nn.Linear(512, 10)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def vgg11_cifar():
    return VGG11()


def tiny():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10),
    )
'''


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A user module ``spp_user_models`` importable by the forked child."""
    (tmp_path / "spp_user_models.py").write_text(textwrap.dedent(USER_MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _run_json(argv, timeout=60.0):
    out = run_cli([*argv, "--json"], timeout=timeout)
    assert out.status == 0, out.stderr
    return json.loads(out.stdout), out


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG


def test_resnet18_end_to_end(tmp_path):
    png = tmp_path / "spp.png"
    rep, out = _run_json(
        ["spp", "torchvision:resnet18", "--input-shape", "3,32,32", "--train-mode"]
        + ["--out", str(png)]
    )
    _assert_png(png)
    assert rep["unit"] == "block" and rep["mode"] == "train" and rep["batch"] == 32
    names = [r["name"] for r in rep["rows"]]
    assert names == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert not rep["missing"] and not rep["unmapped"] and not rep["unreached"]
    assert out.stderr == ""
    for r in rep["rows"]:
        assert r["branch"] == f"{r['name']}.bn2"  # not the downsample shortcut
        for side in ("predicted", "measured"):
            assert all(r[side][k] is not None for k in ("q", "avg_ch_var", "branch_var"))
    errs = sorted(r["q_rel_err"] for r in rep["rows"])
    assert rep["q_median_rel_err"] == pytest.approx((errs[3] + errs[4]) / 2)
    assert rep["q_median_rel_err"] <= 0.10  # the acceptance bound (module doc)
    grads = rep["gradients"]
    assert len(grads) == 21 and grads[-1]["predicted"] == pytest.approx(1.0)
    assert grads[-1]["measured"] == pytest.approx(1.0)
    assert set(rep["timings"]) >= {"build_s", "describe_s", "predict_s", "measure_s", "plot_s"}


def test_pruned_random(tmp_path):
    png = tmp_path / "p.png"
    rep, _ = _run_json(
        ["spp", "torchvision:resnet18", "--input-shape", "3,32,32", "--train-mode"]
        + ["--density", "0.1", "--method", "random", "--batch", "8", "--out", str(png)]
    )
    _assert_png(png)
    assert rep["density"] == 0.1 and rep["method"] == "random"
    assert rep["notes"][0].startswith("pruned at init: random to density 0.1")
    assert "random N(0, 1) batch" not in rep["notes"][0]  # random scores read no data
    assert not rep["missing"] and len(rep["rows"]) == 8
    assert all(r["q_rel_err"] is not None for r in rep["rows"])


def test_vgg11_chain_with_allow_import(tmp_path, user_models):
    png = tmp_path / "v.png"
    rep, _ = _run_json(
        ["spp", "spp_user_models:vgg11_cifar", "--allow-import", "--input-shape", "3,32,32"]
        + ["--batch", "8", "--out", str(png)]
    )
    _assert_png(png)
    assert rep["unit"] == "layer" and not rep["missing"]
    convs = [f"features.{i}" for i in (0, 3, 6, 8, 11, 13, 16, 18)]
    assert [r["name"] for r in rep["rows"]] == [*convs, "classifier"]
    assert all(r["branch"] is None and r["measured"]["branch_var"] is None for r in rep["rows"])
    assert [g["name"] for g in rep["gradients"]] == [*convs, "classifier"]


def test_checkpoint_with_arch_and_data_driven_method(tmp_path, user_models):
    import spp_user_models
    import torch

    torch.manual_seed(3)
    model = spp_user_models.tiny()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    png = tmp_path / "c.png"
    rep, _ = _run_json(
        ["spp", str(tmp_path / "sd.pt"), "--arch", "spp_user_models:tiny", "--allow-import"]
        + ["--input-shape", "3,8,8", "--density", "0.5", "--method", "snip", "--batch", "4"]
        + ["--out", str(png)]
    )
    _assert_png(png)
    assert rep["checkpoint"] == str(tmp_path / "sd.pt")
    assert "random N(0, 1) batch of 4 inputs with uniformly random labels" in rep["notes"][0]
    assert [r["name"] for r in rep["rows"]] == ["0", "3", "6"]


@pytest.mark.parametrize(
    "argv,match",
    [
        (["nonsense", "--input-shape", "3,32,32"], "not of the form"),
        (["torchvision:no_such_net", "--input-shape", "3,32,32"], "has no model"),
        (["torchvision:resnet18", "--input-shape", "3,a,32"], "--input-shape"),
        (["torchvision:resnet18", "--input-shape", "3,32,32", "--batch", "0"], "--batch"),
        (
            ["torchvision:resnet18", "--input-shape", "3,32,32", "--density", "0.1"],
            "go together",
        ),
        (
            ["torchvision:resnet18", "--input-shape", "3,32,32"]
            + ["--density", "1.5", "--method", "random"],
            "(0, 1]",
        ),
        (
            ["torchvision:resnet18", "--input-shape", "3,32,32"]
            + ["--density", "0.1", "--method", "nope"],
            "unknown pruning method",
        ),
        (["torchvision:resnet18", "--input-shape", "5,32,32"], "cannot run on inputs"),
    ],
)
def test_refused(tmp_path, argv, match):
    assert_refused(["spp", *argv, "--out", str(tmp_path / "x.png")], match=match, timeout=60)
    assert not (tmp_path / "x.png").exists()


def test_module_path_needs_allow_import(tmp_path, user_models):
    canary = tmp_path / "canary"
    for argv in (
        ["spp_user_models:tiny"],
        [str(tmp_path / "sd.pt"), "--arch", "spp_user_models:tiny"],
    ):
        assert_refused(
            ["spp", *argv, "--input-shape", "3,8,8", "--out", str(tmp_path / "x.png")],
            canary=canary,
            match="--allow-import",
            env={"SPP_CANARY": str(canary)},
        )


class _Run:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def test_pickle_checkpoint_refused(tmp_path):
    import os

    canary = tmp_path / "canary"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"fc.weight": _Run(os.mkdir, str(canary))}, protocol=2))
    assert_refused(
        ["spp", str(p), "--arch", "torchvision:resnet18", "--input-shape", "3,32,32"]
        + ["--out", str(tmp_path / "x.png")],
        canary=canary,
        match="refusing to unpickle",
    )


def test_python_api(tmp_path, user_models):
    import spp_user_models
    import torch

    from sigprop.diagnostics import describe, measure, predict
    from sigprop.plotting import plot_signal_propagation, signal_propagation_records

    torch.manual_seed(0)
    model = spp_user_models.tiny().eval()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    spec = describe(model, x)
    pred, meas = predict(spec, q0=1.0), measure(model, x, spec=spec, n_probes=1)
    path = plot_signal_propagation(
        pred, meas, tmp_path / "api.png", block_parts=spec.graph.block_parts
    )
    assert path == tmp_path / "api.png"
    _assert_png(path)
    rec = signal_propagation_records(pred, meas)
    assert rec["unit"] == "layer" and [r["name"] for r in rec["rows"]] == ["0", "3", "6"]
    # a module the measurement lacks is listed, not dropped
    meas.nodes.pop("3")
    rec = signal_propagation_records(pred, meas)
    assert {"name": "3", "lacks": "measured"} in rec["missing"]
    assert rec["rows"][1]["measured"]["q"] is None and rec["rows"][1]["q_rel_err"] is None


def test_text_output(tmp_path, user_models):
    png = tmp_path / "t.png"
    out = run_cli(
        ["spp", "spp_user_models:tiny", "--allow-import", "--input-shape", "3,8,8"]
        + ["--batch", "4", "--out", str(png)],
        timeout=60,
    )
    assert out.status == 0, out.stderr
    _assert_png(png)
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["layer", "q", "pred"]
    assert [ln.split()[0] for ln in lines[2:5]] == ["0", "3", "6"]
    assert any(ln.startswith("median relative error of q: ") for ln in lines)
    assert lines[-1].startswith(f"wrote {png} in ")
