"""Hostile checkpoints: every case is refused by ``sigprop check`` (exit 2, one stderr line,
no traceback, no canary, RSS < 1 GiB, time bound) and by ``load_checkpoint`` (a
``CheckpointError``); the valid-but-unusual files of issue 9 get the right answer.

Every file is built here, at test time, from a few bytes or a sparse file (nothing is
committed, nothing big is written). A payload that would run code creates the canary; the
``live`` tests show that those payloads do run when handed to the unprotected loader, so
the canary assertions can fail.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from sigprop.io import CheckpointError, load_checkpoint
from tests.security.checkpoint_files import (
    LEGACY_MAGIC,
    S,
    T,
    be,
    deflate_bomb,
    dumps,
    legacy_file,
    raw_zip,
    safetensors_file,
    sparse_zip_entry,
    torch_zip,
)
from tests.security.harness import assert_refused, run_cli

CASES: dict[str, Callable] = {}


def case(name: str):
    def register(builder):
        CASES[name] = builder
        return builder

    return register


class Run:
    """``__reduce__`` runs ``func(*args)`` when unpickled."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _f32(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def _zip_of(tmp: Path, name: str, obj, storages=None, **kw) -> Path:
    return torch_zip(tmp / name, obj, storages or {}, **kw)


def _weight(tmp: Path, name: str, size, stride, offset=0, numel=None, **kw) -> Path:
    n = numel if numel is not None else max(1, int(np.prod(size)))
    s = S("0", torch.FloatStorage, n)
    return _zip_of(
        tmp, name, {"fc.weight": T(s, offset, size, stride)}, {"0": _f32(n).tobytes()}, **kw
    )


# --------------------------------------------------------------------------- pickles
@case("pickle: os.mkdir by REDUCE in a plain pickle")
def _(tmp, canary):
    p = tmp / "mkdir.pkl"
    p.write_bytes(pickle.dumps({"fc.weight": Run(os.mkdir, str(canary))}, protocol=2))
    return p, "refusing to unpickle"


@case("pickle: os.system by STACK_GLOBAL (protocol 4)")
def _(tmp, canary):
    p = tmp / "system.pkl"
    p.write_bytes(pickle.dumps(Run(os.system, f"touch {canary}"), protocol=4))
    return p, "system"


@case("pickle: builtins.exec in a torch.save archive")
def _(tmp, canary):
    code = f"open({str(canary)!r}, 'w').close()"
    obj = {"fc.weight": T(S("0", torch.FloatStorage, 4), 0, (2, 2), (2, 1)), "x": Run(exec, code)}
    return _zip_of(tmp, "exec.pt", obj, {"0": _f32(4).tobytes()}), "builtins.exec"


@case("pickle: subprocess.Popen in the optimizer entry of a wrapped state dict")
def _(tmp, canary):
    import subprocess

    sd = {"fc.weight": T(S("0", torch.FloatStorage, 4), 0, (2, 2), (2, 1))}
    obj = {"state_dict": sd, "optimizer": {"hook": Run(subprocess.Popen, ["touch", str(canary)])}}
    return _zip_of(tmp, "popen.pt", obj, {"0": _f32(4).tobytes()}), "Popen"


@case("pickle: a full nn.Module saved with torch.save")
def _(tmp, canary):
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 2)), tmp / "module.pt")
    return tmp / "module.pt", "--trust-pickle"


@case("pickle: a full nn.Module in the legacy format")
def _(tmp, canary):
    p = tmp / "module_legacy.pt"
    torch.save(torch.nn.Linear(3, 2), p, _use_new_zipfile_serialization=False)
    return p, "--trust-pickle"


@case("pickle: INST opcode (protocol 0)")
def _(tmp, canary):
    p = tmp / "inst.pkl"
    p.write_bytes(f"(S'touch {canary}'\nios\nsystem\n.".encode())
    return p, "INST"


@case("pickle: OBJ opcode")
def _(tmp, canary):
    p = tmp / "obj.pkl"
    p.write_bytes(b"\x80\x02(ccollections\nOrderedDict\no.")
    return p, "OBJ"


@case("pickle: NEWOBJ opcode")
def _(tmp, canary):
    p = tmp / "newobj.pkl"
    p.write_bytes(b"\x80\x02ccollections\nOrderedDict\n)\x81.")
    return p, "NEWOBJ"


@case("pickle: EXT1 extension-registry opcode")
def _(tmp, canary):
    p = tmp / "ext.pkl"
    p.write_bytes(b"\x80\x02\x82\x01.")
    return p, "EXT1"


@case("pickle: memo bomb (LONG_BINPUT at index 2**31)")
def _(tmp, canary):
    p = tmp / "memo.pkl"
    p.write_bytes(b"\x80\x02]r\xff\xff\xff\x7f.")
    return p, "memo"


@case("pickle: container bomb (4 Mi empty dicts on the stack)")
def _(tmp, canary):
    p = tmp / "dicts.pkl"
    p.write_bytes(b"\x80\x02(" + b"}" * (4 << 20) + b"l.")
    return p, "pickle bomb"


@case("pickle: empty-set bomb (protocol 4)")
def _(tmp, canary):
    p = tmp / "sets.pkl"
    p.write_bytes(b"\x80\x04(" + b"\x8f" * (2 << 20) + b"l.")
    return p, "pickle bomb"


@case("pickle: a list nested 100000 deep")
def _(tmp, canary):
    p = tmp / "deep.pkl"
    n = 100_000
    p.write_bytes(b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")
    return p, "plain pickle"


@case("pickle: truncated before STOP")
def _(tmp, canary):
    p = tmp / "cut.pkl"
    p.write_bytes(b"\x80\x02}q\x00(X\x05\x00\x00\x00fc.we")
    return p, "truncated"


@case("pickle: a plain pickle of lists, not torch.save")
def _(tmp, canary):
    p = tmp / "plain.pkl"
    p.write_bytes(pickle.dumps({"fc.weight": [[1.0, 2.0]]}, protocol=2))
    return p, "plain pickle"


@case("pickle: bytearray(2**40) allocation")
def _(tmp, canary):
    p = tmp / "bytearray.pkl"
    p.write_bytes(b"\x80\x02c__builtin__\nbytearray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85R.")
    return p, "bytearray"


@case("pickle: tensor with a lazy conjugate bit")
def _(tmp, canary):
    s = S("0", torch.FloatStorage, 4)
    obj = {"fc.weight": T(s, 0, (2, 2), (2, 1), metadata={"conj": True})}
    return _zip_of(tmp, "conj.pt", obj, {"0": _f32(4).tobytes()}), "conjugate"


@case("pickle: float4 dtype (unsupported)")
def _(tmp, canary):
    s = S("0", None, 4)
    obj = {"fc.weight": T(s, 0, (2, 2), (2, 1), dtype=torch.float4_e2m1fn_x2)}
    return _zip_of(tmp, "f4.pt", obj, {"0": bytes(4)}), "unsupported dtype"


@case("legacy: storage count disagrees with the pickle")
def _(tmp, canary):
    obj = {"fc.weight": T(S("0", torch.FloatStorage, 4), 0, (2, 2), (2, 1))}
    p = legacy_file(
        tmp / "count.pt", obj, {"0": (4, _f32(4).tobytes())}, count_override={"0": 1 << 40}
    )
    return p, "disagrees"


@case("legacy: storage data cut short")
def _(tmp, canary):
    obj = {"fc.weight": T(S("0", torch.FloatStorage, 64), 0, (8, 8), (8, 1))}
    p = legacy_file(tmp / "short.pt", obj, {"0": (64, _f32(64).tobytes())})
    p.write_bytes(p.read_bytes()[:-100])
    return p, "truncated"


@case("legacy: storage key list disagrees with the pickle")
def _(tmp, canary):
    obj = {"fc.weight": T(S("0", torch.FloatStorage, 4), 0, (2, 2), (2, 1))}
    p = legacy_file(tmp / "keys.pt", obj, {"0": (4, _f32(4).tobytes())})
    raw = p.read_bytes().replace(pickle.dumps(["0"], protocol=2), pickle.dumps(["9"], protocol=2))
    p.write_bytes(raw)
    return p, "key list"


# --------------------------------------------------------------------------- zip archives
def _pkl_member(**kw) -> dict:
    obj = {"fc.weight": T(S("0", torch.FloatStorage, 4), 0, (2, 2), (2, 1))}
    return {"name": "archive/data.pkl", "data": dumps(obj), **kw}


def _storage_member(**kw) -> dict:
    return {"name": "archive/data/0", "data": _f32(4).tobytes(), **kw}


@case("zip: data.pkl inflating to 2 GiB from 2 MiB (bomb)")
def _(tmp, canary):
    p = tmp / "bomb.pt"
    p.write_bytes(
        raw_zip(
            [
                {
                    "name": "archive/data.pkl",
                    "method": 8,
                    "comp": deflate_bomb(2048),
                    "usize": 2 << 30,
                    "crc": 0,
                },
                _storage_member(),
            ]
        )
    )
    return p, "more than the limit"


@case("zip: data.pkl declares 1 KiB but inflates to 2 GiB (lying header)")
def _(tmp, canary):
    p = tmp / "liar.pt"
    p.write_bytes(
        raw_zip(
            [
                {
                    "name": "archive/data.pkl",
                    "method": 8,
                    "comp": deflate_bomb(2048),
                    "usize": 1024,
                    "crc": 0,
                },
                _storage_member(),
            ]
        )
    )
    return p, "does not inflate"


@case("zip: an entry claims more than deflate can produce (ratio)")
def _(tmp, canary):
    p = tmp / "ratio.pt"
    p.write_bytes(
        raw_zip(
            [
                _pkl_member(),
                {
                    "name": "archive/data/0",
                    "method": 8,
                    "comp": deflate_bomb(1),
                    "usize": 1 << 31,
                    "crc": 0,
                },
            ]
        )
    )
    return p, "zip bomb"


@case("zip: stored data.pkl of 65 MiB (sparse file)")
def _(tmp, canary):
    return sparse_zip_entry(tmp / "bigpkl.pt", "archive/data.pkl", 65 << 20), "more than the limit"


@case("zip: two entries named data.pkl")
def _(tmp, canary):
    p = tmp / "dup.pt"
    p.write_bytes(raw_zip([_pkl_member(), _pkl_member(), _storage_member()]))
    return p, "two entries named"


@case("zip: overlapping entries")
def _(tmp, canary):
    inner = raw_zip([_storage_member()])
    local_len = 30 + len("archive/data/0") + 16  # the inner local header and its data
    p = tmp / "overlap.pt"
    p.write_bytes(
        raw_zip(
            [
                {"name": "archive/pad", "data": inner[:local_len]},
                _pkl_member(),
                {**_storage_member(), "header_offset": 30 + len("archive/pad")},
            ]
        )
    )
    return p, "overlap"


@case("zip: central directory name differs from the local header")
def _(tmp, canary):
    p = tmp / "names.pt"
    p.write_bytes(raw_zip([_pkl_member(), _storage_member(central_name="archive/data/1")]))
    return p, "local header"


@case("zip: wrong CRC of data.pkl")
def _(tmp, canary):
    p = tmp / "crc.pt"
    p.write_bytes(raw_zip([_pkl_member(crc=12345), _storage_member()]))
    return p, "CRC"


@case("zip: junk prepended to the archive")
def _(tmp, canary):
    p = tmp / "prefixed.pt"
    junk = b"PK\x03\x04" + b"JUNK" * 64  # looks like a zip from its first bytes
    p.write_bytes(raw_zip([_pkl_member(), _storage_member()], prepend=junk))
    return p, "inconsistent zip"


@case("zip: encrypted entry")
def _(tmp, canary):
    p = tmp / "encrypted.pt"
    p.write_bytes(raw_zip([_pkl_member(flags=1), _storage_member()]))
    return p, "encrypted"


@case("zip: bzip2 compression method")
def _(tmp, canary):
    p = tmp / "bzip2.pt"
    p.write_bytes(raw_zip([_pkl_member(method=12, comp=b"BZh9"), _storage_member()]))
    return p, "compression method"


@case("zip: central directory offset past the end of the file")
def _(tmp, canary):
    p = tmp / "cdoff.pt"
    p.write_bytes(raw_zip([_pkl_member(), _storage_member()], cd_offset_delta=1 << 30))
    return p, "zip"


@case("zip: end record declares 65535 entries")
def _(tmp, canary):
    p = tmp / "count.pt"
    p.write_bytes(raw_zip([_pkl_member(), _storage_member()], eocd_entries=0xFFFF))
    return p, "zip"


@case("zip: entry data past the central directory")
def _(tmp, canary):
    blob = bytearray(raw_zip([_pkl_member(), _storage_member()]))
    cd = blob.rfind(b"PK\x01\x02")  # the storage's central entry: csize at +20, usize at +24
    blob[cd + 20 : cd + 28] = (1 << 20).to_bytes(4, "little") * 2
    (tmp / "past.pt").write_bytes(bytes(blob))
    return tmp / "past.pt", "zip entry"


@case("zip: storage entry missing")
def _(tmp, canary):
    p = tmp / "missing.pt"
    p.write_bytes(raw_zip([_pkl_member()]))
    return p, "missing from the archive"


@case("zip: storage size disagrees with the pickle")
def _(tmp, canary):
    p = tmp / "size.pt"
    p.write_bytes(raw_zip([_pkl_member(), {"name": "archive/data/0", "data": bytes(8)}]))
    return p, "the pickle says"


@case("zip: a TorchScript archive (code/ and constants.pkl)")
def _(tmp, canary):
    p = tmp / "script.pt"
    p.write_bytes(
        raw_zip(
            [
                _pkl_member(),
                {"name": "archive/constants.pkl", "data": b"\x80\x02)."},
                {"name": "archive/code/__torch__.py", "data": b"import os"},
            ]
        )
    )
    return p, "TorchScript"


@case("zip: no data.pkl")
def _(tmp, canary):
    p = tmp / "nopkl.pt"
    p.write_bytes(raw_zip([_storage_member()]))
    return p, "data.pkl"


# --------------------------------------------------------------------------- tensor geometry
@case("tensor: 10**5 x 2**28 zero-stride view of 4 bytes")
def _(tmp, canary):
    return _weight(tmp, "stride0.pt", (10**5, 2**28), (0, 0), numel=1), "'fc.weight'"


@case("tensor: 10**4 x 2**28 zero-stride view of 4 bytes")
def _(tmp, canary):
    return _weight(tmp, "stride0b.pt", (10**4, 2**28), (0, 0), numel=1), "overlapping view"


@case("tensor: an expand view saved by torch.save")
def _(tmp, canary):
    torch.save({"fc.weight": torch.ones(3).expand(10**6, 3)}, tmp / "expand.pt")
    return tmp / "expand.pt", "overlapping view"


@case("tensor: a view past the end of its storage")
def _(tmp, canary):
    return _weight(tmp, "past.pt", (2, 2), (2, 1), offset=3, numel=4), "extends past"


@case("tensor: torch.empty((2**62, 0)) as a weight")
def _(tmp, canary):
    torch.save({"fc.weight": torch.empty((2**62, 0))}, tmp / "empty62.pt")
    return tmp / "empty62.pt", "declares shape"


@case("tensor: torch.empty((2**62, 0)) as a buffer")
def _(tmp, canary):
    torch.save({"fc.weight": torch.ones(2, 2), "stats": torch.empty((2**62, 0))}, tmp / "buf.pt")
    return tmp / "buf.pt", "declares shape"


@case("tensor: (1, 2**31, 0) weight")
def _(tmp, canary):
    torch.save({"fc.weight": torch.empty((1, 2**31, 0))}, tmp / "empty31.pt")
    return tmp / "empty31.pt", "no elements"


@case("tensor: 6-D weight")
def _(tmp, canary):
    torch.save({"fc.weight": torch.ones(2, 2, 2, 2, 2, 2)}, tmp / "six.pt")
    return tmp / "six.pt", "6 dimensions"


@case("tensor: 100001 entries")
def _(tmp, canary):
    t = T(S("0", torch.FloatStorage, 4), 0, (2, 2), (2, 1))
    obj = {f"l{i}.weight": t for i in range(100_001)}
    return _zip_of(tmp, "many.pt", obj, {"0": _f32(4).tobytes()}), "more than the limit"


@case("tensor: 1000 full views of one 8 KiB storage")
def _(tmp, canary):
    s = S("0", torch.FloatStorage, 1 << 11)
    obj = {f"l{i}.weight": T(s, 0, (32, 64), (64, 1)) for i in range(1000)}
    return _zip_of(tmp, "views.pt", obj, {"0": _f32(1 << 11).tobytes()}), "views per byte"


@case("tensor: quantized storage")
def _(tmp, canary):
    obj = {"fc.weight": T(S("0", torch.QInt8Storage, 4), 0, (2, 2), (2, 1))}
    return _zip_of(tmp, "qint.pt", obj, {"0": bytes(4)}), "unsupported dtype"


# --------------------------------------------------------------------------- safetensors
def _st(tmp, name, header, data=b"", **kw):
    return safetensors_file(tmp / name, header, data, **kw)


_W = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


@case("safetensors: header length 2**60")
def _(tmp, canary):
    return _st(tmp, "hlen.safetensors", {"a": _W}, bytes(16), declared=1 << 60), "header"


@case("safetensors: 65 MiB header (sparse file)")
def _(tmp, canary):
    p = tmp / "hbig.safetensors"
    with open(p, "wb") as f:
        f.write((65 << 20).to_bytes(8, "little") + b"{")
        f.truncate(8 + (65 << 20) + 16)
    return p, "more than the limit"


@case("safetensors: offsets past the end of the file")
def _(tmp, canary):
    h = {"fc.weight": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}
    return _st(tmp, "past.safetensors", h, bytes(16)), "data section"


@case("safetensors: negative offset")
def _(tmp, canary):
    h = {"fc.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [-16, 0]}}
    return _st(tmp, "neg.safetensors", h, bytes(16)), "malformed data offsets"


@case("safetensors: overlapping tensors")
def _(tmp, canary):
    h = {"a.weight": _W, "b.weight": _W}
    return _st(tmp, "overlap.safetensors", h, bytes(32)), "overlap"


@case("safetensors: a gap between tensors")
def _(tmp, canary):
    h = {"a.weight": _W, "b.weight": {**_W, "data_offsets": [20, 36]}}
    return _st(tmp, "gap.safetensors", h, bytes(36)), "gap"


@case("safetensors: header nested 100000 deep")
def _(tmp, canary):
    raw = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return _st(tmp, "deep.safetensors", None, raw_header=raw), "nest"


@case("safetensors: a million tiny records")
def _(tmp, canary):
    body = ",".join(
        f'"{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(10**6)
    )
    return _st(tmp, "million.safetensors", None, raw_header=("{" + body + "}").encode()), "JSON"


@case("safetensors: unknown dtype")
def _(tmp, canary):
    return _st(tmp, "dtype.safetensors", {"fc.weight": {**_W, "dtype": "F128"}}, bytes(16)), "F128"


@case("safetensors: a key given twice")
def _(tmp, canary):
    w = json.dumps(_W)
    raw = f'{{"fc.weight": {w}, "fc.weight": {w}}}'.encode()
    return _st(tmp, "dupkey.safetensors", None, bytes(16), raw_header=raw), "repeats the key"


@case("safetensors: shape disagrees with its offsets")
def _(tmp, canary):
    h = {"fc.weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 16]}}
    return _st(tmp, "shape.safetensors", h, bytes(16)), "'fc.weight'"


@case("safetensors: 201-byte file declaring (2**62, 0)")
def _(tmp, canary):
    h = {"fc.weight": {"dtype": "F32", "shape": [2**62, 0], "data_offsets": [0, 0]}}
    return _st(tmp, "z62.safetensors", h), "declares shape"


@case("safetensors: header not UTF-8")
def _(tmp, canary):
    return _st(tmp, "utf.safetensors", None, raw_header=b'{"\xff\xfe": 1}'), "not valid JSON"


@case("safetensors: an entry with an extra field")
def _(tmp, canary):
    return _st(tmp, "extra.safetensors", {"fc.weight": {**_W, "x": 1}}, bytes(16)), "malformed"


# --------------------------------------------------------------------------- .pt2
@pytest.fixture(scope="module")
def pt2(tmp_path_factory) -> Path:
    """A real torch.export archive with a dynamic batch dimension (expr_str present)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    batch = torch.export.Dim("batch", min=2, max=1024)
    ep = torch.export.export(model, (torch.randn(4, 4),), dynamic_shapes={"input": {0: batch}})
    path = tmp_path_factory.mktemp("pt2") / "dyn.pt2"
    torch.export.save(ep, path)
    return path


def _rewrite(
    src: Path,
    dst: Path,
    edit: Callable[[str, bytes], bytes | None],
    first: list[tuple[str, bytes]] = (),
) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name, data in first:
            zout.writestr(name, data)
        for item in zin.infolist():
            data = edit(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item.filename, data)
    return dst


def _edit_json(suffix: str, change: Callable[[dict], None]):
    def edit(name, data):
        if name.endswith(suffix):
            doc = json.loads(data)
            change(doc)
            return json.dumps(doc).encode()
        return data

    return edit


def _set_expr(text: str):
    def change(doc):
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if "expr_str" in node:
                    node["expr_str"] = text
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)

    return change


def _expr_payload(canary: Path) -> str:
    return (
        f"(__import__('os').mkdir({str(canary)!r}), Symbol('s77', positive=True, integer=True))[1]"
    )


PT2_CASES: dict[str, Callable] = {}


def pt2_case(name):
    def register(builder):
        PT2_CASES[name] = builder
        return builder

    return register


@pt2_case("pt2: expr_str that imports os and makes a directory")
def _(tmp, canary, src):
    return _rewrite(
        src, tmp / "expr.pt2", _edit_json("models/model.json", _set_expr(_expr_payload(canary)))
    ), "expr_str"


@pt2_case("pt2: quote-free expr_str walking attributes")
def _(tmp, canary, src):
    text = "Integer(1).__class__.__base__.__subclasses__()"
    return _rewrite(src, tmp / "attr.pt2", _edit_json("models/model.json", _set_expr(text))), (
        "expr_str"
    )


@pt2_case("pt2: expr_str power tower 9**9**9")
def _(tmp, canary, src):
    text = "Pow(Integer(9), Pow(Integer(9), Integer(9)))"
    return _rewrite(src, tmp / "tower.pt2", _edit_json("models/model.json", _set_expr(text))), (
        "expr_str"
    )


@pt2_case("pt2: expr_str with a lambda")
def _(tmp, canary, src):
    text = "(lambda: Symbol('s0'))()"
    return _rewrite(src, tmp / "lambda.pt2", _edit_json("models/model.json", _set_expr(text))), (
        "expr_str"
    )


def _pickled_config(data: bytes) -> bytes:
    doc = json.loads(data)
    for meta in doc["config"].values():
        meta["use_pickle"] = True
    return json.dumps(doc).encode()


@pt2_case("pt2: two weights configs, the first asking for pickled weights")
def _(tmp, canary, src):
    with zipfile.ZipFile(src) as z:
        name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        hostile = _pickled_config(z.read(name))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        p = _rewrite(src, tmp / "dupcfg.pt2", lambda n, d: d, first=[(name, hostile)])
    return p, "two entries named"


@pt2_case("pt2: pickled weights (use_pickle)")
def _(tmp, canary, src):
    edit = lambda n, d: _pickled_config(d) if n.endswith("model_weights_config.json") else d  # noqa: E731
    return _rewrite(src, tmp / "pickled.pt2", edit), "refusing to load"


@pt2_case("pt2: an opaque constant (torch would pickle.loads it)")
def _(tmp, canary, src):
    def change(doc):
        doc["config"]["evil"] = {
            "path_name": "opaque_obj_0",
            "is_param": False,
            "use_pickle": False,
            "tensor_meta": None,
        }

    p = _rewrite(src, tmp / "opaque.pt2", _edit_json("model_constants_config.json", change))
    return p, "custom object"


@pt2_case("pt2: compiled code inside")
def _(tmp, canary, src):
    p = _rewrite(
        src,
        tmp / "so.pt2",
        lambda n, d: d,
        first=[("dyn/data/aotinductor/model/model.so", b"\x7fELF")],
    )
    return p, "compiled code"


@pt2_case("pt2: a weight of symbolic size")
def _(tmp, canary, src):
    def change(doc):
        meta = next(iter(doc["config"].values()))
        meta["tensor_meta"]["sizes"][0] = {"as_expr": {"expr_str": "Symbol('s0')", "hint": None}}

    p = _rewrite(src, tmp / "symsize.pt2", _edit_json("model_weights_config.json", change))
    return p, "symbolic"


@pt2_case("pt2: a weight entry missing")
def _(tmp, canary, src):
    p = _rewrite(src, tmp / "noweight.pt2", lambda n, d: None if n.endswith("weight_0") else d)
    return p, "missing entry"


@pt2_case("pt2: a node argument naming an unknown value")
def _(tmp, canary, src):
    def change(doc):
        node = doc["graph_module"]["graph"]["nodes"][0]
        node["inputs"][0]["arg"] = {"as_tensor": {"name": "nowhere"}}

    p = _rewrite(src, tmp / "unknown.pt2", _edit_json("models/model.json", change))
    return p, "unknown value"


@pt2_case("pt2: program JSON nested 100000 deep")
def _(tmp, canary, src):
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    p = _rewrite(src, tmp / "deep.pt2", lambda n, d: deep if n.endswith("models/model.json") else d)
    return p, "nest"


# --------------------------------------------------------------------------- files
@case("file: a FIFO")
def _(tmp, canary):
    os.mkfifo(tmp / "fifo.pt")
    return tmp / "fifo.pt", "FIFO"


@case("file: a symlink to /dev/zero")
def _(tmp, canary):
    os.symlink("/dev/zero", tmp / "zero.pt")
    return tmp / "zero.pt", "character device"


@case("file: a unix socket")
def _(tmp, canary):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp / "s.pt"))  # the socket file stays after the socket is closed
    return tmp / "s.pt", "socket"


@case("file: a directory")
def _(tmp, canary):
    (tmp / "dir.pt").mkdir()
    return tmp / "dir.pt", "is a directory"


@case("file: empty")
def _(tmp, canary):
    (tmp / "empty.pt").write_bytes(b"")
    return tmp / "empty.pt", "empty file"


@case("file: missing")
def _(tmp, canary):
    return tmp / "nothing-here.pt", "no such file"


@case("file: a torch.save archive cut in half")
def _(tmp, canary):
    torch.save({"fc.weight": torch.ones(64, 64)}, tmp / "full.pt")
    raw = (tmp / "full.pt").read_bytes()
    (tmp / "half.pt").write_bytes(raw[: len(raw) // 2])
    return tmp / "half.pt", "zip"


@case("file: a safetensors file cut short")
def _(tmp, canary):
    h = {"fc.weight": {"dtype": "F32", "shape": [64, 64], "data_offsets": [0, 64 * 64 * 4]}}
    return _st(tmp, "cut.safetensors", h, bytes(1000)), "data section"


@case("file: a JSON document nested deep")
def _(tmp, canary):
    (tmp / "deep.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    return tmp / "deep.json", "unrecognised"


@case("file: name with a newline and terminal escapes")
def _(tmp, canary):
    p = tmp / "evil\n\x1b[2J\x1b[Hstatus: healthy.pt"
    p.write_bytes(b"\x00garbage")
    return p, "\\x1b[2J"


# --------------------------------------------------------------------------- the corpus
def _build(name, tmp, canary, pt2_path=None):
    if name in PT2_CASES:
        return PT2_CASES[name](tmp, canary, pt2_path)
    return CASES[name](tmp, canary)


@pytest.mark.parametrize("name", [*CASES, *PT2_CASES])
def test_refused(name, tmp_path, request):
    canary = tmp_path / "CANARY"
    src = request.getfixturevalue("pt2") if name in PT2_CASES else None
    path, match = _build(name, tmp_path, canary, src)
    out = assert_refused(["check", str(path)], canary=canary, timeout=20, match=match)
    assert out.stderr.startswith("sigprop check: error: ")
    assert "\x1b" not in out.stderr and out.stdout == ""
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert not canary.exists()


@pytest.mark.parametrize("name", [n for n in PT2_CASES if "expr_str" in n])
def test_trust_pickle_does_not_lower_the_expression_guard(name, tmp_path, pt2):
    canary = tmp_path / "CANARY"
    path, match = _build(name, tmp_path, canary, pt2)
    assert_refused(["check", str(path), "--trust-pickle"], canary=canary, match=match)


# --------------------------------------------------------------------------- payloads are live
def _in_child(func) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            func()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def test_pickle_payload_is_live(tmp_path):
    canary = tmp_path / "CANARY"
    path, _ = CASES["pickle: os.mkdir by REDUCE in a plain pickle"](tmp_path, canary)
    _in_child(lambda: pickle.loads(path.read_bytes()))
    assert canary.exists()


def test_torch_archive_payload_is_live(tmp_path):
    canary = tmp_path / "CANARY"
    path, _ = CASES["pickle: builtins.exec in a torch.save archive"](tmp_path, canary)
    _in_child(lambda: torch.load(path, weights_only=False))
    assert canary.exists()


def test_expr_str_payload_is_live(tmp_path, pt2):
    """torch.export.load evaluates expr_str: the hostile archive runs its payload there."""
    canary = tmp_path / "CANARY"
    path, _ = PT2_CASES["pt2: expr_str that imports os and makes a directory"](
        tmp_path, canary, pt2
    )
    _in_child(lambda: torch.export.load(path))
    assert canary.exists()


def test_duplicate_config_fools_the_python_zipfile(tmp_path, pt2):
    """Python's zipfile reads the last of two same-named entries (what a screen sees), so
    only a refusal of duplicates protects a reader that takes the first."""
    path, _ = PT2_CASES["pt2: two weights configs, the first asking for pickled weights"](
        tmp_path, tmp_path / "CANARY", pt2
    )
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        seen = json.loads(z.read(name))
    assert not any(m["use_pickle"] for m in seen["config"].values())


# --------------------------------------------------------------------------- while reading
def _truncating(monkeypatch, path: Path, rewrite: bool) -> None:
    import sigprop.diagnostics.collapse as collapse

    original = collapse.check_collapse

    def check(ckpt, **kw):
        raw = path.read_bytes()
        if rewrite:
            path.write_bytes(raw[::-1])  # same size, other bytes
            os.utime(path, ns=(1, 1))
        else:
            path.write_bytes(raw[: len(raw) // 3])
        return original(ckpt, **kw)

    monkeypatch.setattr(collapse, "check_collapse", check)


@pytest.mark.parametrize("rewrite", [False, True], ids=["truncated", "rewritten"])
@pytest.mark.parametrize("fmt", ["torch.save", "safetensors"])
def test_file_changed_while_being_checked(tmp_path, monkeypatch, rewrite, fmt):
    sd = {"fc.weight": torch.ones(256, 256), "out.weight": torch.ones(4, 256)}
    path = tmp_path / "m.ckpt"
    if fmt == "torch.save":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, path)
    _truncating(monkeypatch, path, rewrite)
    assert_refused(["check", str(path)], match="file changed while being read")


def test_library_reports_a_truncation_after_loading(tmp_path):
    from sigprop.diagnostics import check_collapse

    path = tmp_path / "m.pt"
    torch.save({"fc.weight": torch.ones(512, 512)}, path)
    ckpt = load_checkpoint(path, validate_values=False)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="file changed while being read"):
        check_collapse(ckpt)


# --------------------------------------------------------------------------- terminal output
def test_escape_sequences_in_names_are_shown_escaped(tmp_path):
    evil = "x\x1b[2J\x1b[H\nstatus: healthy\r"
    sd = {f"{evil}.weight": torch.zeros(3, 4), "out.weight": torch.ones(2, 3)}
    torch.save(sd, tmp_path / "evil.pt")
    out = run_cli(["check", str(tmp_path / "evil.pt")])
    assert out.status == 1, out.stderr  # the first layer is fully pruned: collapse
    assert "\x1b" not in out.stdout and "\r" not in out.stdout
    assert [ln for ln in out.stdout.splitlines() if ln.startswith("status:")] == [
        "status: LAYER COLLAPSE / DISCONNECTED"
    ]
    assert "x\\x1b[2J\\x1b[H\\nstatus: healthy\\r" in out.stdout, out.stdout
    js = run_cli(["check", str(tmp_path / "evil.pt"), "--json"])
    assert js.status == 1 and "\x1b" not in js.stdout
    assert json.loads(js.stdout)["collapsed_layers"] == [evil]


def test_escape_sequences_in_error_messages(tmp_path):
    evil = "a\x1b]0;owned\x07"
    torch.save({f"{evil}.weight": torch.full((2, 2), float("nan"))}, tmp_path / "nan.pt")
    out = assert_refused(["check", str(tmp_path / "nan.pt")], match="NaN")
    assert "\x1b" not in out.stderr and "\x07" not in out.stderr


# --------------------------------------------------------------------------- valid but unusual
def _kept(path, **kw) -> list[int]:
    from sigprop.diagnostics import check_collapse

    return [layer.kept for layer in check_collapse(load_checkpoint(path, **kw)).layers]


def test_deflated_entries_give_the_true_kept_counts(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 30, generator=g)
    m = torch.rand(40, 30, generator=g) < 0.3
    w2 = torch.randn(5, 40, generator=g)
    torch.save({"a.weight": w, "a.weight_mask": m, "b.weight": w2}, tmp_path / "s.pt")
    with (
        zipfile.ZipFile(tmp_path / "s.pt") as zin,
        zipfile.ZipFile(tmp_path / "d.pt", "w", compression=zipfile.ZIP_DEFLATED) as zout,
    ):
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
    with zipfile.ZipFile(tmp_path / "d.pt") as z:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    assert _kept(tmp_path / "d.pt") == [int(m.sum()), int((w2 != 0).sum())]
    ckpt = load_checkpoint(tmp_path / "d.pt")
    assert torch.equal(ckpt.tensors["a.weight_mask"].load(), m)
    assert torch.equal(torch.cat(list(ckpt.tensors["a.weight"].iter_rows(7))), w)


def _big_endian_tied(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    w = _f32(48, seed=3).reshape(6, 8)
    w[:, ::3] = 0.0
    mask = (np.arange(48).reshape(6, 8) % 5 != 0).astype(np.float32)
    s, sm = S("0", torch.FloatStorage, 48), S("1", torch.FloatStorage, 48)
    tied = T(s, 0, (6, 8), (8, 1))
    obj = {
        "enc.weight": tied,
        "enc.weight_mask": T(sm, 0, (6, 8), (8, 1)),
        "dec.weight": T(s, 0, (8, 6), (1, 8)),
        "tied.weight": tied,
    }
    path = torch_zip(tmp_path / "be.pt", obj, {"0": be(w), "1": be(mask)}, byteorder="big")
    return path, w, mask


def test_big_endian_tied_weights(tmp_path):
    path, w, mask = _big_endian_tied(tmp_path)
    ckpt = load_checkpoint(path)
    for _ in range(2):  # a second read sees the same (native) values
        np.testing.assert_array_equal(ckpt.tensors["enc.weight"].load().numpy(), w)
        np.testing.assert_array_equal(ckpt.tensors["dec.weight"].load().numpy(), w.T)
        rows = torch.cat(list(ckpt.tensors["dec.weight"].iter_rows(3))).numpy()
        np.testing.assert_array_equal(rows, w.T)
    kept = [int(np.count_nonzero(mask)), int(np.count_nonzero(w)), int(np.count_nonzero(w))]
    assert _kept(path) == kept
    reference = torch.load(path, weights_only=True)  # torch agrees on this file
    np.testing.assert_array_equal(reference["dec.weight"].numpy(), w.T)
    out = run_cli(["check", str(path), "--json"])
    assert out.status in (0, 1), out.stderr
    assert [layer["kept"] for layer in json.loads(out.stdout)["layers"]] == kept


def test_little_endian_legacy_file_with_tied_weights(tmp_path):
    w = _f32(12, seed=5).reshape(3, 4)
    w[0] = 0
    s = S("0", torch.FloatStorage, 12)
    obj = {"a.weight": T(s, 0, (3, 4), (4, 1)), "b.weight": T(s, 0, (4, 3), (1, 4))}
    path = legacy_file(tmp_path / "l.pt", obj, {"0": (12, w.tobytes())}, little=False)
    assert load_checkpoint(path).format == "torch.save (legacy)"
    np.testing.assert_array_equal(torch.load(path, weights_only=True)["b.weight"].numpy(), w.T)
    assert _kept(path) == [8, 8]


@pytest.mark.parametrize(
    "dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16, torch.float16]
)
def test_low_precision_weights(tmp_path, dtype):
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(16, 12, generator=g) * (torch.rand(16, 12, generator=g) < 0.4)).to(dtype)
    torch.save({"fc.weight": w, "out.weight": torch.ones(3, 16).to(dtype)}, tmp_path / "w.pt")
    truth = int((w.float() != 0).sum())
    assert _kept(tmp_path / "w.pt") == [truth, 48]
    out = run_cli(["check", str(tmp_path / "w.pt"), "--json"])
    assert out.status == 0, out.stderr
    assert json.loads(out.stdout)["layers"][0]["kept"] == truth


def test_float8_safetensors(tmp_path):
    from safetensors.torch import save_file

    w = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).to(torch.float8_e4m3fn)
    save_file({"fc.weight": w}, tmp_path / "f8.safetensors")
    assert _kept(tmp_path / "f8.safetensors") == [2]


def test_weight_weight_orig_and_mask_are_one_layer(tmp_path):
    g = torch.Generator().manual_seed(2)
    orig = torch.randn(5, 4, generator=g)
    mask = (torch.rand(5, 4, generator=g) < 0.5).float()
    sd = {"fc.weight_orig": orig, "fc.weight_mask": mask, "fc.weight": orig * mask}
    torch.save(sd, tmp_path / "p.pt")
    ckpt = load_checkpoint(tmp_path / "p.pt")
    assert [(e.name, e.weight_key, e.mask_key) for e in ckpt.layers] == [
        ("fc", "fc.weight_orig", "fc.weight_mask")
    ]
    assert any("weight_orig * weight_mask" in n for n in ckpt.notes)
    assert _kept(tmp_path / "p.pt") == [int(mask.sum())]


def test_five_dimensional_conv3d_weight_is_read(tmp_path):
    w = torch.ones(4, 2, 3, 3, 3)
    w[1] = 0
    torch.save({"conv.weight": w}, tmp_path / "c.pt")
    assert _kept(tmp_path / "c.pt") == [int((w != 0).sum())]


def test_transposed_and_offset_views_are_read_as_torch_does(tmp_path):
    base = torch.arange(1.0, 61.0)
    sd = {"a.weight": base[:48].view(6, 8).t(), "b.weight": base[12:].view(8, 6)}
    torch.save(sd, tmp_path / "v.pt")
    ckpt = load_checkpoint(tmp_path / "v.pt")
    for key, value in sd.items():
        assert torch.equal(ckpt.tensors[key].load(), value)
        assert torch.equal(torch.cat(list(ckpt.tensors[key].iter_rows(3))), value)


def test_pickle_bomb_budget_admits_the_largest_real_state_dict(monkeypatch):
    """The pickle torch writes for n tensors passes the scan with n/MAX_TENSORS of the memory
    budget, so one of MAX_TENSORS tensors passes with the whole budget."""
    import io

    from sigprop.io import limits, pickles

    n = 2000
    buf = io.BytesIO()
    torch.save({f"blocks.{i}.weight": torch.zeros(1) for i in range(n)}, buf)
    with zipfile.ZipFile(buf) as z:
        data = z.read(next(name for name in z.namelist() if name.endswith("data.pkl")))
    share = limits.MAX_PICKLE_MEMORY * n // limits.MAX_TENSORS
    monkeypatch.setattr(limits, "MAX_PICKLE_MEMORY", share)
    pickles.scan(data)
    monkeypatch.setattr(limits, "MAX_PICKLE_MEMORY", share // 4)
    with pytest.raises(CheckpointError, match="pickle bomb"):  # and the estimate is not lax
        pickles.scan(data)


def test_legacy_magic_is_torchs():
    from torch.serialization import MAGIC_NUMBER

    assert MAGIC_NUMBER == LEGACY_MAGIC


def test_trust_pickle_still_reads_a_module(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.save(model, tmp_path / "m.pt")
    ckpt = load_checkpoint(tmp_path / "m.pt", trust_pickle=True)
    assert ckpt.format == "pickled nn.Module" and [e.name for e in ckpt.layers] == ["0", "2"]


def test_the_corpus_is_large_enough():
    assert len(CASES) + len(PT2_CASES) >= 75
    assert OrderedDict  # noqa: B018 - imported for the builders' pickles
