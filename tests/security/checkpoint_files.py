"""Builders of checkpoint files, valid or hostile, for the tests (nothing is committed).

* :func:`torch_zip` writes a torch.save zip archive from a pickled object graph in which
  :class:`T` stands for a tensor (any storage, offset, size, stride, dtype) and
  :class:`S` for a storage, so a test can express views torch.save would never write;
* :func:`legacy_file` writes the pre-1.6 stream format the same way;
* :func:`raw_zip` writes a zip archive byte by byte, so a test can make its parts disagree;
* :func:`safetensors_file` writes a header and data as given;
* :func:`deflate_bomb` makes a small deflate stream that inflates to ``n`` MiB of zeros.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class S:
    """A storage: ``key``, torch storage class (``torch.FloatStorage``) or ``None`` for an
    untyped one, and ``numel`` elements."""

    def __init__(self, key: str, storage_type, numel: int) -> None:
        self.key, self.storage_type, self.numel = key, storage_type, numel


class T:
    """A tensor rebuilt by ``torch._utils._rebuild_tensor_v2`` (or ``_v3`` with ``dtype``)."""

    def __init__(self, storage: S, offset: int, size, stride, *, dtype=None, metadata=None):
        self.args = (storage, offset, tuple(size), tuple(stride))
        self.dtype = dtype
        self.metadata = metadata

    def __reduce__(self):
        storage, offset, size, stride = self.args
        if self.dtype is not None:
            return (
                torch._utils._rebuild_tensor_v3,
                (storage, offset, size, stride, False, OrderedDict(), self.dtype),
            )
        extra = (self.metadata,) if self.metadata is not None else ()
        return (
            torch._utils._rebuild_tensor_v2,
            (storage, offset, size, stride, False, OrderedDict(), *extra),
        )


class _Pickler(pickle.Pickler):
    def __init__(self, file, legacy: bool = False, **kw) -> None:
        super().__init__(file, **kw)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, S):
            storage_type = obj.storage_type or torch.storage.UntypedStorage
            pid = ("storage", storage_type, obj.key, "cpu", obj.numel)
            return (*pid, None) if self.legacy else pid
        return None


def dumps(obj, *, protocol: int = 2, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, legacy=legacy, protocol=protocol).dump(obj)
    return buf.getvalue()


def torch_zip(
    path: Path,
    obj,
    storages: dict[str, bytes],
    *,
    byteorder: str | None = "little",
    compression: int = 0,
    prefix: str = "archive",
    data_pkl: bytes | None = None,
) -> Path:
    """A torch.save zip archive holding ``obj`` and the given storage bytes."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl if data_pkl is not None else dumps(obj))
        if byteorder is not None:
            z.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in storages.items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", "3\n")
    return path


def legacy_file(
    path: Path,
    obj,
    storages: dict[str, tuple[int, bytes]],
    *,
    little: bool = True,
    count_override: dict | None = None,
) -> Path:
    """A legacy torch.save stream: ``storages`` maps key -> (numel, little-endian bytes);
    ``little`` only sets the recorded system information (the data is always
    little-endian, as torch writes it)."""
    order = "little"
    parts = [
        pickle.dumps(LEGACY_MAGIC, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps(
            {
                "protocol_version": 1001,
                "little_endian": little,
                "type_sizes": {"short": 2, "int": 4, "long": 4},
            },
            protocol=2,
        ),
        dumps(obj, legacy=True),
        pickle.dumps(list(storages), protocol=2),
    ]
    for key, (numel, data) in storages.items():
        count = (count_override or {}).get(key, numel)
        parts.append(count.to_bytes(8, order) + data)
    path.write_bytes(b"".join(parts))
    return path


def be(array: np.ndarray) -> bytes:
    """Big-endian bytes of an array."""
    return array.astype(array.dtype.newbyteorder(">")).tobytes()


def raw_zip(
    members: list[dict],
    *,
    prepend: bytes = b"",
    eocd_entries: int | None = None,
    cd_offset_delta: int = 0,
) -> bytes:
    """Zip bytes from members ``{"name", "data", "method"=0, "flags"=0, "crc", "usize",
    "comp" (compressed bytes), "header_offset" (central directory's claim), "central_name"}``."""
    out = bytearray()
    central = []
    for m in members:
        name = m["name"].encode()
        data = m.get("data", b"")
        method = m.get("method", 0)
        comp = m.get("comp", data if method == 0 else _deflate(data))
        crc = m.get("crc", zlib.crc32(data))
        usize = m.get("usize", len(data))
        flags = m.get("flags", 0)
        offset = len(out)
        out += (
            struct.pack(
                "<4sHHHHHIIIHH",
                b"PK\x03\x04",
                20,
                flags,
                method,
                0,
                0,
                crc,
                len(comp),
                usize,
                len(name),
                0,
            )
            + name
            + comp
        )
        cname = m.get("central_name", m["name"]).encode()
        central.append(
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                flags,
                method,
                0,
                0,
                crc,
                len(comp),
                usize,
                len(cname),
                0,
                0,
                0,
                0,
                0,
                m.get("header_offset", offset),
            )
            + cname
        )
    cd_offset = len(out)
    cd = b"".join(central)
    out += cd
    n = len(central) if eocd_entries is None else eocd_entries
    out += struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(cd), cd_offset + cd_offset_delta, 0
    )
    return prepend + bytes(out)


def _deflate(data: bytes) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush()


def deflate_bomb(mib: int) -> bytes:
    """A raw deflate stream of ``mib`` MiB of zeros, built in milliseconds: after a full
    flush the compressor restarts, so one compressed MiB repeats byte for byte."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = co.compress(bytes(1 << 20)) + co.flush(zlib.Z_FULL_FLUSH)
    return chunk * mib + co.flush()


def safetensors_file(
    path: Path,
    header,
    data: bytes = b"",
    *,
    raw_header: bytes | None = None,
    declared: int | None = None,
) -> Path:
    raw = raw_header if raw_header is not None else json.dumps(header).encode()
    n = len(raw) if declared is None else declared
    path.write_bytes(n.to_bytes(8, "little") + raw + data)
    return path


def sparse_zip_entry(path: Path, name: str, size: int) -> Path:
    """A zip whose one stored entry of ``size`` bytes is a hole of a sparse file (cheap to
    make, big to read)."""
    nb = name.encode()
    with open(path, "wb") as f:
        f.write(
            struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, size, size, len(nb), 0)
            + nb
        )
        data_end = 30 + len(nb) + size
        f.seek(data_end)
        cd = (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                0,
                0,
                0,
                0,
                size,
                size,
                len(nb),
                0,
                0,
                0,
                0,
                0,
                0,
            )
            + nb
        )
        f.write(cd)
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), data_end, 0))
    return path
