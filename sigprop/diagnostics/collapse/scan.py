"""One chunked pass over each weight layer, and unit-level reachability through it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sigprop.diagnostics.collapse.graph import WeightLayer
from sigprop.validate import InvalidInput

#: Number of weight entries processed per chunk when scanning a layer (bounds memory: the
#: scan never holds more than a few chunks of a layer's weights at once).
CHUNK_ELEMENTS = 1 << 22


@dataclass
class _Scan:
    counts: np.ndarray  # (out, in_units): kept weights per (output unit, input unit)
    kept: int
    total: int


def _count_dtype(n: int):
    if n == 1:
        return np.bool_
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def _row_chunks(x: Any, rows: int) -> Iterator[Any]:
    if hasattr(x, "iter_arrays"):  # a LazyTensor: numpy blocks, no torch for a file's tensor
        yield from x.iter_arrays(rows)
        return
    if hasattr(x, "iter_rows"):
        yield from x.iter_rows(rows)
        return
    for r in range(0, int(x.shape[0]), rows):
        yield x[r : r + rows]


def _as_numpy(x: Any, name: str, what: str) -> np.ndarray:
    """A numpy view of a chunk (numpy's elementwise kernels beat torch's on one thread)."""
    torch = sys.modules.get("torch")  # a chunk is a torch tensor only once torch is imported
    if torch is not None and isinstance(x, torch.Tensor):
        if x.is_complex():
            raise InvalidInput(f"layer {name!r}: {what} has complex dtype {x.dtype}")
        if x.is_floating_point() and x.dtype not in (torch.float16, torch.float32, torch.float64):
            x = x.float()  # bfloat16, float8: numpy has no such dtype (exact in float32)
        return x.detach().numpy()
    return np.asarray(x)


def _check_weight_chunk(name: str, w: np.ndarray) -> None:
    if w.dtype.kind != "f":
        raise InvalidInput(f"layer {name!r}: weight has dtype {w.dtype}, expected a float")
    if w.size and not (np.isfinite(w.min()) and np.isfinite(w.max())):
        raise InvalidInput(f"layer {name!r}: weight contains NaN or infinite values")


def _kept_chunk(name: str, m: np.ndarray) -> np.ndarray:
    """Boolean kept-pattern of a mask chunk, after checking the mask is 0/1."""
    if m.dtype == np.bool_:
        return m
    if m.dtype.kind not in "fiu":
        raise InvalidInput(f"layer {name!r}: mask has dtype {m.dtype}, expected 0/1 numbers")
    keep = m != 0
    # binary iff every nonzero entry equals 1 (NaN is nonzero and not 1)
    if np.count_nonzero(m == 1) != np.count_nonzero(keep):
        raise InvalidInput(f"layer {name!r}: mask is not binary (values other than 0 and 1)")
    return keep


def scan_layer(layer: WeightLayer, group: int) -> _Scan:
    """One chunked pass over a layer: validation, kept counts per (out, in) unit pair."""
    shape = layer.shape
    out = shape[0]
    in_local = shape[1] // group
    per_slice = group * int(np.prod(shape[2:], dtype=np.int64))
    dtype = _count_dtype(per_slice)
    counts = np.zeros((out, in_local), dtype=dtype)
    if layer.mask is not None and tuple(layer.mask.shape) != shape:
        raise InvalidInput(
            f"layer {layer.name!r}: mask shape {tuple(layer.mask.shape)} does not match "
            f"weight shape {shape}"
        )
    row_elems = max(1, int(np.prod(shape[1:], dtype=np.int64)))
    rows = max(1, CHUNK_ELEMENTS // row_elems)
    weights = _row_chunks(layer.weight, rows) if layer.weight is not None else None
    masks = _row_chunks(layer.mask, rows) if layer.mask is not None else None
    kept = 0
    r = 0
    while r < out:
        w = _as_numpy(next(weights), layer.name, "weight") if weights is not None else None
        m = _as_numpy(next(masks), layer.name, "mask") if masks is not None else None
        if w is not None:
            _check_weight_chunk(layer.name, w)
        keep = _kept_chunk(layer.name, m) if m is not None else (w != 0)
        n = keep.shape[0]
        kept += int(np.count_nonzero(keep))
        if per_slice == 1:
            counts[r : r + n] = keep.reshape(n, in_local)
        else:
            counts[r : r + n] = keep.reshape(n, in_local, per_slice).sum(axis=2, dtype=dtype)
        r += n
    for it in (weights, masks):
        if it is not None and hasattr(it, "close"):
            it.close()  # lets a lazy reader release the last block
    total = int(np.prod(shape, dtype=np.int64))
    if layer.groups > 1:
        counts = _expand_groups(counts, layer.groups)
    return _Scan(counts, kept, total)


def _expand_groups(counts: np.ndarray, groups: int) -> np.ndarray:
    out, in_local = counts.shape
    full = np.zeros((out, in_local * groups), dtype=counts.dtype)
    opg = out // groups
    for g in range(groups):
        full[g * opg : (g + 1) * opg, g * in_local : (g + 1) * in_local] = counts[
            g * opg : (g + 1) * opg
        ]
    return full


def _rows_per_chunk(a: np.ndarray) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, a.shape[1]))


def _nonzero(block: np.ndarray) -> np.ndarray:
    return block if block.dtype == np.bool_ else block != 0


def forward_units(
    counts: np.ndarray, offset: np.ndarray | None, reach_in: np.ndarray
) -> np.ndarray:
    """Output units reached from the reached input units (any kept edge)."""
    hit = np.zeros(counts.shape[0], dtype=bool)
    if reach_in.any():
        every = bool(reach_in.all())
        rows = _rows_per_chunk(counts)
        for r in range(0, counts.shape[0], rows):
            block = _nonzero(counts[r : r + rows])
            hit[r : r + rows] = (block if every else block & reach_in).any(axis=1)
    if offset is not None:
        hit |= offset[:, reach_in].any(axis=1)
    return hit


def backward_units(
    counts: np.ndarray, offset: np.ndarray | None, reach_out: np.ndarray
) -> np.ndarray:
    """Input units from which a reached output unit is reachable."""
    hit = np.zeros(counts.shape[1], dtype=bool)
    rows = _rows_per_chunk(counts)
    if reach_out.all():
        for r in range(0, counts.shape[0], rows):
            hit |= _nonzero(counts[r : r + rows]).any(axis=0)
    else:
        idx = np.flatnonzero(reach_out)
        for r in range(0, idx.size, rows):
            hit |= _nonzero(counts[idx[r : r + rows]]).any(axis=0)
    if offset is not None:
        hit |= offset[reach_out].any(axis=0)
    return hit


def effective_units(scan: _Scan, way_out: np.ndarray, way_in: np.ndarray) -> int:
    """Kept weights whose input unit has a way in and whose output unit has a way out."""
    if way_out.all() and way_in.all():
        return scan.kept
    counts = scan.counts
    idx = np.flatnonzero(way_out)
    rows = _rows_per_chunk(counts)
    total = 0
    for r in range(0, idx.size, rows):
        block = counts[idx[r : r + rows]]
        if block.dtype == np.bool_:
            total += int(np.count_nonzero(block & way_in))
        else:
            total += int((block * way_in).sum(dtype=np.int64))
    return total
