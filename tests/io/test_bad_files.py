"""Reliability: a corpus of bad files, each refused by ``sigprop check`` with exit status 2
and a one-line reason, without a traceback, and by ``load_checkpoint`` with a
``CheckpointError``.

The corpus is generated in a temporary directory. Each CLI run is a forked child of the test
process running ``sigprop.cli.main`` (the security harness), so a case costs milliseconds
instead of a torch import; one case also goes through the real entry point
(``python -m sigprop check FILE``).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from sigprop.io import CheckpointError, load_checkpoint


class _Payload:
    """Unpickling this object would create a directory: the side effect tests look for."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _save(obj, path):
    torch.save(obj, path)
    return path


def _good_state_dict():
    g = torch.Generator().manual_seed(0)
    return {
        "fc1.weight": torch.randn(8, 6, generator=g),
        "fc1.bias": torch.zeros(8),
        "fc2.weight": torch.randn(3, 8, generator=g),
    }


def _hostile_pt2(tmp, good_pt2):
    """A valid .pt2 whose weights config claims a pickled payload."""
    out = tmp / "hostile.pt2"
    with zipfile.ZipFile(good_pt2) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("weights_config.json"):
                config = json.loads(data)
                for meta in config["config"].values():
                    meta["use_pickle"] = True
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return out


def _build_corpus(tmp):
    """name -> (path, fragment the one-line reason must contain)."""
    tmp.mkdir(exist_ok=True)
    marker = tmp / "PWNED"
    c = {}

    p = tmp / "empty.pt"
    p.write_bytes(b"")
    c["empty"] = (p, "empty file")

    p = tmp / "random.pt"
    data = np.random.default_rng(1).bytes(4096)
    assert not data.startswith((b"PK", b"\x80", b"{", b"[", b"(", b"c", b"]", b"}"))
    p.write_bytes(data)
    c["random bytes"] = (p, "unrecognised file format")

    good = _save(_good_state_dict(), tmp / "good.pt")
    p = tmp / "truncated.pt"
    raw = good.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    c["truncated zip"] = (p, "truncated or corrupt zip")

    p = tmp / "hostile.pkl"
    p.write_bytes(pickle.dumps({"w": _Payload(str(marker))}, protocol=2))
    c["hostile pickle"] = (p, "refusing to unpickle")

    p = _save({"fc.weight": torch.ones(2, 2), "evil": _Payload(str(marker))}, tmp / "hostile.pt")
    c["hostile pickle in a torch.save archive"] = (p, "refusing to unpickle")

    p = _save(torch.nn.Sequential(torch.nn.Linear(3, 2)), tmp / "module.pt")
    c["full pickled module"] = (p, "--trust-pickle")

    p = tmp / "weights.json"
    p.write_text(json.dumps({"fc.weight": [[1.0, 2.0], [3.0, 4.0]]}))
    c["json"] = (p, "JSON")

    p = _save({"fc.weight": torch.ones(2, 2), "fc.name": "layer one"}, tmp / "nontensor.pt")
    c["non-tensor values"] = (p, "'fc.name' is a str, not a tensor")

    p = _save([torch.ones(2, 2)], tmp / "list.pt")
    c["a list, not a mapping"] = (p, "found list")

    sd = _good_state_dict()
    sd["fc2.weight"][1, 2] = float("nan")
    c["nan weights"] = (_save(sd, tmp / "nan.pt"), "NaN or inf")

    sd = _good_state_dict()
    sd["fc1.weight"][0, 0] = float("inf")
    c["inf weights"] = (_save(sd, tmp / "inf.pt"), "NaN or inf")

    sd = {"fc.weight_orig": torch.ones(4, 3), "fc.weight_mask": torch.ones(3, 4)}
    c["mask of the wrong shape"] = (_save(sd, tmp / "maskshape.pt"), "has shape")

    sd = {"fc.weight_orig": torch.ones(4, 3), "fc.weight_mask": torch.full((4, 3), 0.5)}
    c["non-binary mask"] = (_save(sd, tmp / "maskvalues.pt"), "not binary")

    sd = {"fc.weight": torch.tensor(1.0), "fc.bias": torch.tensor(0.0)}
    c["0-d tensors"] = (_save(sd, tmp / "scalars.pt"), "0-d tensor")

    sd = {f"stat_{i}": torch.tensor(float(i)) for i in range(5000)}
    c["thousands of keys, no layer"] = (_save(sd, tmp / "manykeys.pt"), "no weight layers")

    p = tmp / "bad.safetensors"
    header = b'{"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}'
    p.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 10)  # data cut short
    c["truncated safetensors"] = (p, "safetensors")

    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    ep = torch.export.export(model, (torch.randn(1, 3),))
    torch.export.save(ep, tmp / "good.pt2")
    c["pt2 with pickled weights"] = (_hostile_pt2(tmp, tmp / "good.pt2"), "refusing to load")

    c["missing file"] = (tmp / "does-not-exist.pt", "no such file")
    d = tmp / "a-directory.pt"
    d.mkdir()
    c["directory"] = (d, "is a directory")
    return c, marker


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tests.security.harness import run_cli

    tmp = tmp_path_factory.mktemp("bad")
    cases, marker = _build_corpus(tmp)
    results = {}
    for name, (path, _) in cases.items():
        out = run_cli(["check", str(path)], timeout=60)
        results[name] = (out.status, out.stdout, out.stderr)
    return cases, results, marker


def test_real_entry_point_refuses_a_hostile_pickle(corpus):
    cases, _, marker = corpus
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SIGPROP_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sigprop", "check", str(cases["hostile pickle"][0])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sigprop check: error: ")
    assert "refusing to unpickle" in lines[0] and not marker.exists()


CASES = [
    "empty",
    "random bytes",
    "truncated zip",
    "hostile pickle",
    "hostile pickle in a torch.save archive",
    "full pickled module",
    "json",
    "non-tensor values",
    "a list, not a mapping",
    "nan weights",
    "inf weights",
    "mask of the wrong shape",
    "non-binary mask",
    "0-d tensors",
    "thousands of keys, no layer",
    "truncated safetensors",
    "pt2 with pickled weights",
    "missing file",
    "directory",
]


@pytest.mark.parametrize("name", CASES)
def test_cli_exit_2_one_line(corpus, name):
    cases, results, marker = corpus
    rc, out, err = results[name]
    assert rc == 2, (rc, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert lines[0].startswith("sigprop check: error: ")
    assert cases[name][1] in lines[0], lines[0]


@pytest.mark.parametrize("name", CASES)
def test_loader_raises_checkpoint_error(corpus, name):
    cases, _, marker = corpus
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(cases[name][0])
    assert "\n" not in str(info.value)
    assert cases[name][1] in str(info.value)
    assert not marker.exists()


def test_hostile_payload_never_runs(corpus):
    _, results, marker = corpus
    # every CLI run (hostile ones included) has finished; the payload would have made it
    assert results["hostile pickle"][0] == 2
    assert not marker.exists()


def test_payload_is_live(tmp_path):
    """The payload does create the marker when unpickled without protection, so the
    'never runs' assertions above can fail."""
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_Payload(str(marker))))
    assert marker.exists()


def test_trust_pickle_reads_a_full_module(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    path = _save(model, tmp_path / "module.pt")
    ckpt = load_checkpoint(path, trust_pickle=True)
    assert ckpt.format == "pickled nn.Module"
    assert ckpt.module is not None
    assert [entry.name for entry in ckpt.layers] == ["0", "2"]


def test_checkpoint_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)
