"""safetensors files: an 8-byte header length, a JSON header, then the tensor bytes.

The header is checked here before anything is built from it: its length is bounded, its
JSON must be an object of ``{"dtype", "shape", "data_offsets"}`` records (plus an optional
``__metadata__`` map of strings) with unique keys, a bounded number of entries and of
containers (a header of a million tiny records is refused before it is parsed), known
dtypes, and data offsets that tile the data section exactly (no gap, no overlap, nothing
past the end, each tensor's byte count equal to its shape times its element size). The
``safetensors`` library then opens the file as a second check. Tensor rows are read with
``pread`` (:mod:`sigprop.io.lazy`), never through a memory map.
"""

from __future__ import annotations

import json
import math

from sigprop.io import limits
from sigprop.io.dtypes import SAFETENSORS_DTYPES, lookup
from sigprop.io.layers import find_layers, natural_key
from sigprop.io.lazy import LazyTensor, Stored, check_totals, check_view
from sigprop.io.records import CHAIN_NOTE, NAME_ORDER_NOTE, Checkpoint
from sigprop.io.source import CheckpointError, FileSource

__all__ = ["load_safetensors", "parse_json"]

_FIELDS = {"dtype", "shape", "data_offsets"}


def parse_json(where: str, raw: bytes, what: str, max_containers: int | None = None):
    """Decode a bounded JSON document: UTF-8, unique keys, bounded containers and nesting."""
    if len(raw) > limits.MAX_JSON_BYTES:
        raise CheckpointError(
            f"{where}: the {what} is {len(raw)} bytes, more than the limit of "
            f"{limits.MAX_JSON_BYTES}"
        )
    cap = 4 * limits.MAX_TENSORS + 1024 if max_containers is None else max_containers
    if raw.count(b"{") + raw.count(b"[") > cap:
        raise CheckpointError(f"{where}: the {what} holds more than {cap} JSON containers")

    def unique(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise CheckpointError(f"{where}: the {what} repeats the key {k[:80]!r}")
            out[k] = v
        return out

    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=unique)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{where}: the {what} nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        text = " ".join(str(exc).split())[:120]
        raise CheckpointError(f"{where}: the {what} is not valid JSON ({text})") from None
    _check_depth(where, doc, what)
    return doc


def _check_depth(where: str, doc, what: str) -> None:
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.MAX_NESTING:
            raise CheckpointError(f"{where}: the {what} nests deeper than {limits.MAX_NESTING}")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _int(x) -> bool:
    return type(x) is int and 0 <= x < 1 << 63


def load_safetensors(source: FileSource) -> Checkpoint:
    where = source.display
    n_header = int.from_bytes(source.pread(0, 8), "little")
    if n_header > limits.MAX_JSON_BYTES:
        raise CheckpointError(
            f"{where}: the safetensors header is {n_header} bytes, more than the limit of "
            f"{limits.MAX_JSON_BYTES}"
        )
    if n_header + 8 > source.size:
        raise CheckpointError(f"{where}: not a valid safetensors file: the header is truncated")
    header = parse_json(where, source.pread(8, n_header), "safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: not a valid safetensors file: the header is not an object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
    ):
        raise CheckpointError(f"{where}: safetensors __metadata__ is not a map of strings")
    if len(header) > limits.MAX_TENSORS:
        raise CheckpointError(
            f"{where}: {len(header)} tensors, more than the limit of {limits.MAX_TENSORS}"
        )
    if not header:
        raise CheckpointError(f"{where}: the safetensors file holds no tensors")
    data_start = 8 + n_header
    data_len = source.size - data_start
    records = []
    for key, info in header.items():
        if len(key) > limits.MAX_NAME_CHARS:
            raise CheckpointError(f"{where}: a tensor name is {len(key)} characters long")
        if not isinstance(info, dict) or set(info) != _FIELDS:
            raise CheckpointError(
                f"{where}: not a valid safetensors file: entry {key!r} is malformed"
            )
        code = info["dtype"]
        dt = lookup(SAFETENSORS_DTYPES.get(code)) if isinstance(code, str) else None
        if dt is None:
            raise CheckpointError(
                f"{where}: tensor {key!r} has unsupported dtype {str(code)[:20]!r}"
            )
        shape, offsets = info["shape"], info["data_offsets"]
        if not (
            isinstance(shape, list) and len(shape) <= limits.MAX_NDIM and all(map(_int, shape))
        ):
            raise CheckpointError(f"{where}: tensor {key!r} has a malformed shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_int, offsets))):
            raise CheckpointError(f"{where}: tensor {key!r} has malformed data offsets")
        begin, end = offsets
        size = tuple(shape)
        check_view(where, key, dt, max(0, end - begin), 0, size)
        if end < begin or end - begin != math.prod(size) * dt.itemsize:
            raise CheckpointError(
                f"{where}: tensor {key!r} has data offsets {offsets} that do not hold its "
                f"shape {list(size)} of {code}"
            )
        records.append((begin, end, key, dt, size))
    records.sort(key=lambda r: (r[0], r[1]))
    pos = 0
    for begin, end, key, _, _ in records:
        if begin != pos:
            raise CheckpointError(
                f"{where}: tensor {key!r} starts at byte {begin} of the data, expected {pos} "
                "(a gap or an overlap between tensors)"
            )
        pos = end
    if pos != data_len:
        raise CheckpointError(
            f"{where}: not a valid safetensors file: the tensors cover {pos} bytes, the data "
            f"section has {data_len}"
        )
    _library_check(source)
    tensors: dict[str, LazyTensor] = {}
    for begin, end, key, dt, size in sorted(records, key=lambda r: natural_key(r[2])):
        stored = Stored(source, data_start + begin, end - begin)
        tensors[key] = LazyTensor.from_file(key, stored, dt, 0, size)
    check_totals(where, tensors, data_len)
    layers, masks, layout, notes = find_layers(where, tensors)
    return Checkpoint(
        path=source.path,
        format="safetensors",
        layout=layout,
        tensors=tensors,
        layers=layers,
        masks=masks,
        notes=(
            NAME_ORDER_NOTE,
            *notes,
            CHAIN_NOTE,
        ),
    )


def _library_check(source: FileSource) -> None:
    """The safetensors library must accept what this module accepted."""
    from safetensors import safe_open

    try:
        with safe_open(source.reopen_path(), framework="numpy") as handle:
            handle.keys()
    except Exception as exc:  # noqa: BLE001 - the library's reason, in one line
        text = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{source.display}: not a valid safetensors file: {text}") from None
    source.check_unchanged()
