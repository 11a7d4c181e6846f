"""Fuzzing the loader: hypothesis-generated state dicts (odd keys, shapes, dtypes, values,
wrappers, non-tensor entries; saved as torch.save zip, legacy torch.save or safetensors) and
byte-level corruptions of valid files. The loader must always return a Checkpoint or raise
CheckpointError -- never another exception -- and check_collapse on a returned Checkpoint
must return a report or raise ValueError."""

from __future__ import annotations

import io
import json
import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given
from safetensors.torch import save

from sigprop.diagnostics.collapse import CollapseReport, check_collapse
from sigprop.io import Checkpoint, CheckpointError, load_checkpoint

PREFIXES = ["", "a.", "layers.0.", "layers.1.", "layers.10.", "b.c1.", "m.0.weight."]
LEAVES = ["weight", "weight_orig", "weight_mask", "bias", "alpha", "running_mean", "x", "bias_mask"]
DTYPES = [torch.float32, torch.float16, torch.float64, torch.bfloat16, torch.int64, torch.bool]
FILLS = ["randn", "zeros", "ones", "binary", "half", "nan", "inf", "big"]


@st.composite
def tensors(draw):
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    dtype = draw(st.sampled_from(DTYPES))
    fill = draw(st.sampled_from(FILLS))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    base = {
        "randn": lambda: torch.randn(shape, generator=g, dtype=torch.float64),
        "zeros": lambda: torch.zeros(shape, dtype=torch.float64),
        "ones": lambda: torch.ones(shape, dtype=torch.float64),
        "binary": lambda: (torch.rand(shape, generator=g) < 0.5).double(),
        "half": lambda: torch.full(shape, 0.5, dtype=torch.float64),
        "nan": lambda: torch.full(shape, math.nan, dtype=torch.float64),
        "inf": lambda: torch.full(shape, -math.inf, dtype=torch.float64),
        "big": lambda: torch.full(shape, 1e300, dtype=torch.float64),
    }[fill]()
    if dtype in (torch.int64, torch.bool):
        base = torch.nan_to_num(base, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-5, 5)
    return base.to(dtype)


values = st.one_of(
    tensors(),
    tensors(),
    tensors(),
    st.integers(),
    st.text(max_size=5),
    st.none(),
    st.lists(st.integers(), max_size=3),
)


@st.composite
def state_dicts(draw):
    n = draw(st.integers(1, 6))
    keys = draw(
        st.lists(
            st.builds(lambda p, leaf: p + leaf, st.sampled_from(PREFIXES), st.sampled_from(LEAVES)),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    sd = {k: draw(values) for k in keys}
    wrap = draw(st.sampled_from([None, None, "state_dict", "model", "list"]))
    if wrap == "list":
        return list(sd.values())
    if wrap is not None:
        return {wrap: sd, "epoch": draw(st.integers(0, 9))}
    return sd


@st.composite
def layered_state_dicts(draw):
    """Mostly well-formed chains (plain, prune or weight_mask layouts) with one defect at
    most, so the fuzz also reaches the layer analysis, not only the validation."""
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 5), min_size=depth + 1, max_size=depth + 1))
    layout = draw(st.sampled_from(["plain", "prune", "weight_mask"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    sd = {}
    for i in range(depth):
        shape = (widths[i + 1], widths[i])
        w = torch.randn(shape, generator=g)
        m = (torch.rand(shape, generator=g) < draw(st.sampled_from([0.0, 0.3, 1.0]))).float()
        if layout == "plain":
            sd[f"l.{i}.weight"] = w * m
        elif layout == "prune":
            sd[f"l.{i}.weight_orig"], sd[f"l.{i}.weight_mask"] = w, m
        else:
            sd[f"l.{i}.weight"], sd[f"l.{i}.weight_mask"] = w, m
        sd[f"l.{i}.bias"] = torch.zeros(shape[0])
    defect = draw(st.sampled_from(["none", "none", "nan", "drop", "transpose", "half", "int"]))
    key = draw(st.sampled_from(sorted(sd)))
    if defect == "nan":
        sd[key] = torch.full_like(sd[key], math.nan)
    elif defect == "drop":
        del sd[key]
    elif defect == "transpose" and sd[key].dim() == 2:
        sd[key] = sd[key].t().contiguous()
    elif defect == "half":
        sd[key] = sd[key] * 0.5
    elif defect == "int":
        sd[key] = sd[key].long()
    return sd


def _write(obj, path, how):
    if how == "safetensors":
        if not (isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())):
            how = "zip"
        else:
            path.write_bytes(save({k: v.contiguous() for k, v in obj.items()}))
            return
    torch.save(obj, path, _use_new_zipfile_serialization=(how == "zip"))


def _check(path):
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return None
    assert isinstance(ckpt, Checkpoint)
    json.dumps(ckpt.to_dict())
    try:
        report = check_collapse(ckpt)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return ckpt
    assert isinstance(report, CollapseReport)
    json.dumps(report.to_dict())
    assert 0.0 <= report.sparsity <= 1.0
    return ckpt


@given(
    st.one_of(state_dicts(), layered_state_dicts()),
    st.sampled_from(["zip", "legacy", "safetensors"]),
)
def test_generated_state_dicts_never_crash(tmp_path_factory, obj, how):
    path = tmp_path_factory.mktemp("fuzz") / "f.ckpt"
    _write(obj, path, how)
    _check(path)


def _valid_bytes(kind: str) -> bytes:
    g = torch.Generator().manual_seed(0)
    sd = {
        "0.weight_orig": torch.randn(6, 5, generator=g),
        "0.weight_mask": (torch.rand(6, 5, generator=g) < 0.5).float(),
        "2.weight": torch.randn(3, 6, generator=g),
        "2.bias": torch.zeros(3),
    }
    if kind == "safetensors":
        return save(sd)
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=(kind == "zip"))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
@given(data=st.data())
def test_corrupted_files_never_crash(tmp_path_factory, kind, data):
    raw = bytearray(_valid_bytes(kind))
    n_edits = data.draw(st.integers(1, 4))
    for _ in range(n_edits):
        op = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
        if not raw:
            break
        pos = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    path = tmp_path_factory.mktemp("corrupt") / "c.ckpt"
    path.write_bytes(bytes(raw))
    _check(path)


def test_uncorrupted_files_load():
    """The corruption fuzz starts from files that do load (so it exercises real parsers)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        for kind in ("zip", "legacy", "safetensors"):
            path = Path(d) / kind
            path.write_bytes(_valid_bytes(kind))
            ckpt = _check(path)
            assert ckpt is not None and len(ckpt.layers) == 2


# --------------------------------------------------------------------------- bit decoding
_FLOAT8 = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"]


@given(st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=64))
def test_bfloat16_decoding_equals_torch(bits):
    # sigprop.io.dtypes widens bfloat16 without torch (a 16-bit shift): bit for bit what
    # torch's bfloat16 -> float32 conversion gives, NaN payloads and signed zeros included
    import numpy as np

    from sigprop.io.dtypes import DTYPES, to_array

    raw = np.array(bits, dtype=np.uint16)
    ours = to_array(raw, DTYPES["bfloat16"])
    theirs = torch.from_numpy(raw.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    assert ours.dtype == np.float32
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("name", _FLOAT8)
def test_float8_decoding_equals_torch_for_every_code(name):
    import numpy as np

    from sigprop.io.dtypes import DTYPES, to_array

    if not hasattr(torch, name):
        pytest.skip(f"this torch has no {name}")
    codes = np.arange(256, dtype=np.uint8)
    ours = to_array(codes, DTYPES[name])
    theirs = torch.from_numpy(codes.copy()).view(getattr(torch, name)).float().numpy()
    nan = np.isnan(theirs)
    assert np.array_equal(np.isnan(ours), nan)
    assert np.array_equal(ours[~nan].view(np.uint32), theirs[~nan].view(np.uint32))
