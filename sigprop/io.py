"""Safe loading of (pruned) model checkpoints.

:func:`load_checkpoint` reads a file without ever running code stored in it:

* ``torch.save`` archives (``.pt``/``.pth``) are opened with ``torch.load(weights_only=True,
  mmap=True)``: only tensors and plain containers are unpickled, and tensor data stays in
  the file (memory-mapped) until it is read. Legacy (non-zip) ``torch.save`` files are read
  with ``weights_only=True`` without memory mapping.
* safetensors files are opened lazily with ``safetensors.safe_open``; a tensor's rows are
  read when asked for.
* ``torch.export`` programs (``.pt2``) are screened first: an archive that would make
  ``torch.export.load`` unpickle anything (pickled weights or constants, custom or opaque
  objects, legacy weight files, sample inputs that need more than ``weights_only``) or load
  compiled code is refused unless ``trust_pickle=True``.
* a full pickled ``nn.Module`` (``torch.save(model)``) is refused unless
  ``trust_pickle=True``: unpickling it means running arbitrary code from the file.

Recognised state-dict layouts (after unwrapping ``{"state_dict": ...}``, ``{"model": ...}``
and similar): plain state dicts (a weight is kept iff nonzero), ``torch.nn.utils.prune``
state dicts (``<name>_orig`` plus a 0/1 ``<name>_mask`` buffer, no ``<name>``),
Synaptic-Flow / sigprop style (``weight`` plus a ``weight_mask`` buffer) and DCT-plus-sparse
layers (``weight``, ``weight_mask`` and a scalar ``alpha``).

Every problem is reported as a :class:`CheckpointError` (a ``ValueError``) with a one-line
reason: empty or unreadable files, truncated archives, pickles that reference code, JSON,
non-tensor values, NaN/inf values, masks of the wrong shape or not 0/1, 0-d weights,
files without weight layers.

Tensors of a :class:`Checkpoint` are read-only views of the file: read them with
:meth:`LazyTensor.load` or stream them with :meth:`LazyTensor.iter_rows`, which returns the
memory of rows already read to the operating system, so a scan of a file much larger than
RAM keeps a small resident set.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import mmap
import os
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sigprop.validate import InvalidInput

__all__ = ["Checkpoint", "CheckpointError", "LayerEntry", "LazyTensor", "load_checkpoint"]

#: keys under which training scripts commonly wrap the state dict
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights")

#: elements per chunk when validating tensor values
_CHUNK_ELEMENTS = 1 << 22


class CheckpointError(InvalidInput):
    """The file cannot be used as a checkpoint; the message says why, in one line."""


# --------------------------------------------------------------------------- lazy tensors
_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4
_libc: Any = None


def _madvise_dontneed(tensor: Any) -> None:
    """Hand the pages of a read-only, file-backed tensor chunk back to the kernel.

    The pages belong to a private read-only mapping of the checkpoint file, so dropping
    them loses nothing: a later read faults them in again from the file.
    """
    global _libc
    if not tensor.is_contiguous():
        return
    if _libc is None:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _libc = lib
        except (OSError, AttributeError):  # not Linux / no madvise: nothing to release
            _libc = False
    if not _libc:
        return
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    lo = -(-start // _PAGE) * _PAGE
    hi = end // _PAGE * _PAGE
    if hi > lo:
        _libc.madvise(lo, hi - lo, _MADV_DONTNEED)


class LazyTensor:
    """A tensor of a checkpoint, read on demand.

    Attributes: ``name`` (its key), ``shape`` (tuple of ints), ``dtype`` (a torch dtype).
    """

    def __init__(self, name: str, shape: tuple[int, ...], dtype: Any, loader, rows, release):
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self._loader = loader
        self._rows = rows
        self._release = release

    @classmethod
    def from_tensor(cls, name: str, tensor: Any, *, mapped: bool = False) -> LazyTensor:
        """Wrap a tensor; ``mapped=True`` for a memory-mapped, read-only file view."""

        def rows(r0: int, r1: int):
            return tensor[r0:r1]

        return cls(
            name,
            tuple(tensor.shape),
            tensor.dtype,
            lambda: tensor,
            rows,
            _madvise_dontneed if mapped else None,
        )

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def load(self):
        """The whole tensor (a view of the file where it is memory-mapped)."""
        return self._loader()

    def iter_rows(self, rows: int) -> Iterator[Any]:
        """Yield consecutive blocks of ``rows`` rows (first dimension) as tensors.

        Memory-mapped pages of a block are released once the consumer asks for the next
        block or closes the iterator, so streaming a large tensor keeps only one block
        resident (a block read after that is faulted in again from the file).
        """
        if self.ndim == 0:
            yield self.load()
            return
        rows = max(1, int(rows))
        for r0 in range(0, self.shape[0], rows):
            block = self._rows(r0, min(r0 + rows, self.shape[0]))
            try:
                yield block
            finally:  # also when the consumer stops early and the generator is closed
                if self._release is not None:
                    self._release(block)

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.dtype})"


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class LayerEntry:
    """A weight layer found in a checkpoint.

    Attributes
    ----------
    name:
        module path (``"features.0"``).
    weight_key:
        key of the weight (``<name>.weight``, or ``<name>.weight_orig`` in the
        ``torch.nn.utils.prune`` format).
    mask_key:
        key of the 0/1 mask, or ``None`` (then a weight is kept iff it is nonzero).
    shape:
        weight shape ``(out, in, *kernel)``.
    mask_source:
        ``"torch.nn.utils.prune"``, ``"weight_mask"`` or ``"nonzero weights"``.
    alpha_key:
        key of a DCT-plus-sparse offset scale, or ``None``.
    """

    name: str
    weight_key: str
    mask_key: str | None
    shape: tuple[int, ...]
    mask_source: str
    alpha_key: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "weight_key": self.weight_key,
            "mask_key": self.mask_key,
            "shape": list(self.shape),
            "mask_source": self.mask_source,
            "alpha_key": self.alpha_key,
        }


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read by :func:`load_checkpoint`.

    Attributes
    ----------
    path:
        the file read.
    format:
        ``"torch.save"``, ``"torch.save (legacy)"``, ``"safetensors"``, ``"torch.export"`` or
        ``"pickled nn.Module"`` (only with ``trust_pickle=True``).
    layout:
        ``"torch.nn.utils.prune"``, ``"weight_mask"``, ``"plain"`` (no masks) or
        ``"mixed"``.
    tensors:
        every tensor of the (unwrapped) state dict by key, as :class:`LazyTensor`.
    layers:
        the weight layers found, in file order (natural name order for safetensors).
    masks:
        keys of the masks found.
    notes:
        what was inferred, e.g. how the layer chain was obtained.
    wrapper_key:
        the key the state dict was found under (``"state_dict"``, ...), or ``None``.
    module:
        the unpickled ``nn.Module`` (``trust_pickle=True`` only), else ``None``.
    exported:
        the ``torch.export.ExportedProgram`` of a ``.pt2`` file, else ``None``.
    """

    path: str
    format: str
    layout: str
    tensors: Mapping[str, LazyTensor]
    layers: tuple[LayerEntry, ...]
    masks: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    wrapper_key: str | None = None
    module: Any = None
    exported: Any = None

    def weight_layers(self) -> list:
        """The layers as :class:`sigprop.diagnostics.collapse.WeightLayer` objects."""
        from sigprop.diagnostics.collapse import WeightLayer, dct_offset_connectivity

        out = []
        for entry in self.layers:
            offset = None
            if entry.alpha_key is not None:
                alpha = self.tensors[entry.alpha_key].load()
                if float(alpha.detach().abs().max()) != 0.0:
                    offset = dct_offset_connectivity(entry.shape)
            out.append(
                WeightLayer(
                    entry.name,
                    self.tensors[entry.weight_key],
                    self.tensors[entry.mask_key] if entry.mask_key else None,
                    offset=offset,
                )
            )
        return out

    def validate_values(self, *, skip_layers: bool = False) -> None:
        """Stream the tensors: floats must be finite and masks 0/1 (``CheckpointError``).

        ``skip_layers=True`` leaves out the layers' weights and masks, for a consumer such
        as :func:`sigprop.diagnostics.check_collapse` that validates them while scanning.
        """
        skip: set[str] = set()
        if skip_layers:
            for entry in self.layers:
                skip.add(entry.weight_key)
                if entry.mask_key:
                    skip.add(entry.mask_key)
        _validate_values(self, frozenset(skip))

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "layout": self.layout,
            "n_tensors": len(self.tensors),
            "layers": [entry.to_dict() for entry in self.layers],
            "masks": list(self.masks),
            "notes": list(self.notes),
            "wrapper_key": self.wrapper_key,
        }


# --------------------------------------------------------------------------- loading
def load_checkpoint(
    path: str | os.PathLike, *, trust_pickle: bool = False, validate_values: bool = True
) -> Checkpoint:
    """Read a checkpoint safely; see the module docstring for the formats.

    Parameters
    ----------
    path:
        the file.
    trust_pickle:
        allow unpickling arbitrary objects (a full ``nn.Module``, a ``.pt2`` with pickled
        parts). Only for files you trust: unpickling runs code from the file.
    validate_values:
        stream every floating tensor to reject NaN/inf, and every mask to reject values
        other than 0 and 1. ``False`` leaves that to the consumer (``check_collapse``
        validates the layers it scans).

    Raises
    ------
    CheckpointError
        with a one-line reason when the file cannot be used.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if size == 0:
        raise CheckpointError(f"{path}: empty file")

    kind = _sniff(path, head, size)
    if kind == "zip":
        names = _zip_names(path)
        if any(n.endswith("archive_format") for n in names) or any(
            "/models/" in n and n.endswith(".json") for n in names
        ):
            ckpt = _load_export(path, names, trust_pickle)
        else:
            ckpt = _load_torch(path, trust_pickle, mmap=True)
    elif kind == "pickle":
        ckpt = _load_torch(path, trust_pickle, mmap=False)
    elif kind == "safetensors":
        ckpt = _load_safetensors(path)
    else:
        raise CheckpointError(f"{path}: {kind}")
    if validate_values:
        _validate_values(ckpt)
    return ckpt


def _sniff(path: str, head: bytes, size: int) -> str:
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"  # a truncated archive is reported by _zip_names
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        return "pickle"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError):
            pass
        else:
            return "a JSON document, not a checkpoint (expected torch.save, safetensors or .pt2)"
    if head[:1] in (b"(", b"]", b"}", b"c", b"\x80"):
        return "pickle"
    return (
        "unrecognised file format: not a torch.save archive, a safetensors file "
        "or a torch.export program"
    )


def _zip_names(path: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({exc})") from None


def _refused(path: str, exc: BaseException) -> CheckpointError:
    text = " ".join(str(exc).split())
    found = re.search(r"(?:Unsupported global|GLOBAL)\s*:?\s*(?:GLOBAL\s+)?([\w.]+)", text)
    what = f" ({found.group(1)})" if found else ""
    return CheckpointError(
        f"{path}: the file holds pickled Python objects{what}, e.g. a full nn.Module; "
        "refusing to unpickle them because that can run arbitrary code -- save "
        "model.state_dict() instead, or pass --trust-pickle (trust_pickle=True) "
        "only for a file you trust"
    )


def _load_torch(path: str, trust_pickle: bool, *, mmap: bool) -> Checkpoint:
    import torch

    fmt = "torch.save" if mmap else "torch.save (legacy)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            if not trust_pickle:
                raise _refused(path, exc) from None
            obj = _trusted_load(path, mmap)
        except Exception as exc:  # noqa: BLE001 - any reader failure means "unusable file"
            raise CheckpointError(
                f"{path}: cannot read the torch archive: {_one_line(exc)}"
            ) from None
    ckpt = _from_object(path, obj, fmt, mapped=mmap)
    return _with_warnings(ckpt, caught)


def _with_warnings(ckpt: Checkpoint, caught: list) -> Checkpoint:
    """Reader warnings become notes (one line each) instead of multi-line stderr output."""
    if not caught:
        return ckpt
    extra = tuple(f"reader warning: {_one_line(w.message)}" for w in caught)
    return dataclasses.replace(ckpt, notes=ckpt.notes + extra)


def _trusted_load(path: str, mmap: bool) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot unpickle the file: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300] + ("..." if len(text) > 300 else "")


def _from_object(path: str, obj: Any, fmt: str, *, mapped: bool) -> Checkpoint:
    from torch import nn

    notes: list[str] = []
    module = None
    wrapper = None
    if isinstance(obj, nn.Module):
        module, obj, fmt = obj, obj.state_dict(), "pickled nn.Module"
        mapped = False
    elif isinstance(obj, Mapping) and not _all_tensors(obj):
        for key in WRAPPER_KEYS:
            inner = obj.get(key) if all(isinstance(k, str) for k in obj) else None
            if isinstance(inner, nn.Module):
                module, obj, wrapper, mapped = inner, inner.state_dict(), key, False
                fmt = "pickled nn.Module"
                break
            if isinstance(inner, Mapping) and inner and _all_tensors(inner):
                obj, wrapper = inner, key
                notes.append(f"state dict taken from the checkpoint's {key!r} entry")
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), "
            f"found {type(obj).__name__}"
        )
    tensors = _tensor_map(path, obj, mapped)
    layers, masks, layout = _find_layers(path, tensors)
    if module is None:
        notes.append("inferred the layer chain from key order and shapes")
    return Checkpoint(
        path=path,
        format=fmt,
        layout=layout,
        tensors=tensors,
        layers=layers,
        masks=masks,
        notes=tuple(notes),
        wrapper_key=wrapper,
        module=module,
    )


def _all_tensors(obj: Mapping) -> bool:
    import torch

    return all(isinstance(v, torch.Tensor) for v in obj.values())


def _tensor_map(path: str, obj: Mapping, mapped: bool) -> dict[str, LazyTensor]:
    import torch

    if not obj:
        raise CheckpointError(f"{path}: the state dict is empty")
    out: dict[str, LazyTensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: state-dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        if value.layout != torch.strided:
            raise CheckpointError(f"{path}: tensor {key!r} has unsupported layout {value.layout}")
        if value.device.type != "cpu" or value.is_quantized:
            raise CheckpointError(f"{path}: tensor {key!r} is not a plain CPU tensor")
        out[key] = LazyTensor.from_tensor(key, value, mapped=mapped)
    return out


_NUM = re.compile(r"(\d+)")


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in _NUM.split(name)]


def _find_layers(
    path: str, tensors: Mapping[str, LazyTensor]
) -> tuple[tuple[LayerEntry, ...], tuple[str, ...], str]:
    """Weight layers in key order: ``*weight`` / ``*weight_orig`` tensors with >= 2 dims."""
    masks = tuple(k for k in tensors if k.endswith("_mask"))
    layers: list[LayerEntry] = []
    used_masks: set[str] = set()
    sources: set[str] = set()
    for key, t in tensors.items():
        leaf = key.rsplit(".", 1)[-1]
        if key in masks:
            continue
        if leaf.endswith("weight_orig"):
            base = key[: -len("_orig")]
            mask_key = base + "_mask"
            if mask_key not in tensors:
                raise CheckpointError(f"{path}: {key!r} has no matching {mask_key!r}")
            source = "torch.nn.utils.prune"
        elif leaf == "weight":
            base = key
            mask_key = key + "_mask" if key + "_mask" in tensors else None
            source = "weight_mask" if mask_key else "nonzero weights"
        else:
            continue
        if t.ndim == 0:
            raise CheckpointError(f"{path}: weight {key!r} is a 0-d tensor (a scalar)")
        if t.ndim < 2:
            continue  # norm-layer scales, 1-d weights: not a connectivity layer
        if mask_key is not None:
            m = tensors[mask_key]
            if m.shape != t.shape:
                raise CheckpointError(
                    f"{path}: mask {mask_key!r} has shape {m.shape}, weight {key!r} has {t.shape}"
                )
            used_masks.add(mask_key)
        if not (t.dtype.is_floating_point or t.dtype.is_complex):
            raise CheckpointError(f"{path}: weight {key!r} has non-float dtype {t.dtype}")
        if t.dtype.is_complex:
            raise CheckpointError(f"{path}: weight {key!r} is complex ({t.dtype})")
        name = base.rsplit(".", 1)[0] if "." in base else base
        prefix = name + "." if "." in base else ""
        alpha = prefix + "alpha"
        alpha_key = alpha if mask_key and alpha in tensors and tensors[alpha].numel == 1 else None
        layers.append(LayerEntry(name, key, mask_key, t.shape, source, alpha_key))
        sources.add(source)
    for m in masks:
        if m in used_masks:
            continue
        stem = m[: -len("_mask")]
        if stem in tensors or stem + "_orig" in tensors:
            # a mask of a tensor that is not a weight layer (e.g. a pruned bias)
            target = tensors[stem] if stem in tensors else tensors[stem + "_orig"]
            if tensors[m].shape != target.shape:
                raise CheckpointError(
                    f"{path}: mask {m!r} has shape {tensors[m].shape}, {stem!r} has {target.shape}"
                )
            continue
        raise CheckpointError(f"{path}: mask {m!r} has no matching weight")
    if not layers:
        raise CheckpointError(
            f"{path}: no weight layers found (no tensor named '*weight' with >= 2 dimensions)"
        )
    if len(sources) == 1:
        layout = {
            "torch.nn.utils.prune": "torch.nn.utils.prune",
            "weight_mask": "weight_mask",
            "nonzero weights": "plain",
        }[sources.pop()]
    else:
        layout = "mixed"
    return tuple(layers), masks, layout


def _validate_values(ckpt: Checkpoint, skip: frozenset[str] = frozenset()) -> None:
    """Stream tensors: floats must be finite, masks 0/1 (numpy kernels, one block at a time)."""
    import torch

    mask_keys = set(ckpt.masks)
    for key, t in ckpt.tensors.items():
        is_mask = key in mask_keys
        if key in skip or t.numel == 0 or t.dtype == torch.bool:
            continue
        if not (t.dtype.is_floating_point or is_mask):
            continue
        row = max(1, t.numel // max(1, t.shape[0])) if t.ndim else 1
        for block in t.iter_rows(max(1, _CHUNK_ELEMENTS // row)):
            if block.is_complex():
                raise CheckpointError(f"{ckpt.path}: tensor {key!r} is complex ({block.dtype})")
            a = (block.float() if block.dtype == torch.bfloat16 else block).detach().numpy()
            if is_mask:
                if np.count_nonzero(a == 1) != np.count_nonzero(a):
                    raise CheckpointError(
                        f"{ckpt.path}: mask {key!r} is not binary (values other than 0 and 1)"
                    )
            elif a.size and not (np.isfinite(a.min()) and np.isfinite(a.max())):
                raise CheckpointError(f"{ckpt.path}: tensor {key!r} contains NaN or inf")


# --------------------------------------------------------------------------- safetensors
def _load_safetensors(path: str) -> Checkpoint:
    import torch
    from safetensors import safe_open

    try:
        handle = safe_open(path, framework="pt")
        keys = list(handle.keys())
    except Exception as exc:  # noqa: BLE001 - malformed header, truncated data, ...
        raise CheckpointError(f"{path}: not a valid safetensors file: {_one_line(exc)}") from None
    safe_dtypes = {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U8": torch.uint8,
        "BOOL": torch.bool,
    }
    # The header was validated by safe_open; row blocks are read with plain file reads
    # (no memory map), so streaming a tensor keeps one block resident, not the file.
    with open(path, "rb") as f:
        (n_header,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n_header))
    base = 8 + n_header
    tensors: dict[str, LazyTensor] = {}
    for key in sorted(keys, key=_natural_key):
        info = header.get(key, {})
        dtype = safe_dtypes.get(info.get("dtype"))
        if dtype is None:
            raise CheckpointError(
                f"{path}: tensor {key!r} has unsupported dtype {info.get('dtype')}"
            )
        shape = tuple(int(d) for d in info["shape"])
        start = base + int(info["data_offsets"][0])

        def loader(key=key):
            return _safe_call(path, key, lambda: handle.get_tensor(key))

        def rows(r0, r1, shape=shape, start=start, dtype=dtype, key=key):
            return _safe_call(path, key, lambda: _read_rows(path, start, shape, dtype, r0, r1))

        tensors[key] = LazyTensor(key, shape, dtype, loader, rows, None)
    if not tensors:
        raise CheckpointError(f"{path}: the safetensors file holds no tensors")
    layers, masks, layout = _find_layers(path, tensors)
    return Checkpoint(
        path=path,
        format="safetensors",
        layout=layout,
        tensors=tensors,
        layers=layers,
        masks=masks,
        notes=(
            "safetensors stores no module order: layers taken in natural order of their names",
            "inferred the layer chain from key order and shapes",
        ),
    )


def _read_rows(path: str, start: int, shape: tuple[int, ...], dtype: Any, r0: int, r1: int):
    """Rows ``r0:r1`` of a little-endian, C-ordered tensor stored at byte ``start``."""
    import torch

    numpy_dtype = {
        torch.float64: "<f8",
        torch.float32: "<f4",
        torch.float16: "<f2",
        torch.bfloat16: "<u2",
        torch.int64: "<i8",
        torch.int32: "<i4",
        torch.int16: "<i2",
        torch.int8: "i1",
        torch.uint8: "u1",
        torch.bool: "?",
    }[dtype]
    per_row = 1
    for d in shape[1:]:
        per_row *= d
    item = np.dtype(numpy_dtype).itemsize
    count = (r1 - r0) * per_row
    data = np.fromfile(path, dtype=numpy_dtype, count=count, offset=start + r0 * per_row * item)
    if data.size != count:
        raise InvalidInput(f"file ends inside the tensor ({data.size} of {count} values)")
    out = torch.from_numpy(data.reshape((r1 - r0, *shape[1:])))
    return out.view(torch.bfloat16) if dtype == torch.bfloat16 else out


def _safe_call(path: str, key: str, f):
    try:
        return f()
    except Exception as exc:  # noqa: BLE001 - truncated data and similar
        raise CheckpointError(f"{path}: cannot read tensor {key!r}: {_one_line(exc)}") from None


# --------------------------------------------------------------------------- torch.export
def _screen_export(path: str, names: list[str]) -> str | None:
    """Why ``torch.export.load`` could unpickle or run code from this archive, or None."""
    for n in names:
        low = n.lower()
        if "aotinductor" in low or low.endswith((".so", ".dll", ".dylib", ".pte")):
            return f"it contains compiled code ({n})"
        if re.search(r"/data/(weights|constants)/[^/]+\.pt$", n):
            return f"it stores pickled tensors in the legacy layout ({n})"
    try:
        with zipfile.ZipFile(path) as z:
            for n in names:
                if n.endswith("_config.json") and "/data/" in n:
                    config = json.loads(z.read(n)).get("config", {})
                    for fqn, meta in config.items():
                        if meta.get("use_pickle"):
                            return f"entry {fqn!r} is pickled"
                        p = str(meta.get("path_name", ""))
                        if "/constants/" in n and not p.startswith("tensor"):
                            return f"constant {fqn!r} is a custom object"
                if "/sample_inputs/" in n:
                    _weights_only_bytes(z.read(n))
    except CheckpointError as exc:
        return str(exc)
    except (zipfile.BadZipFile, KeyError, ValueError, AttributeError, OSError) as exc:
        return f"its metadata cannot be read ({_one_line(exc)})"
    return None


def _weights_only_bytes(data: bytes) -> None:
    import io

    import torch

    if not data:
        return
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"its sample inputs need unpickling ({_one_line(exc)})") from None


def _load_export(path: str, names: list[str], trust_pickle: bool) -> Checkpoint:
    import torch

    reason = _screen_export(path, names)
    if reason is not None and not trust_pickle:
        raise CheckpointError(
            f"{path}: refusing to load the torch.export program: {reason}; "
            "pass --trust-pickle (trust_pickle=True) only for a file you trust"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            program = torch.export.load(path)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(
                f"{path}: cannot load the torch.export program: {_one_line(exc)}"
            ) from None
    state = dict(program.state_dict)
    for key, value in (getattr(program, "constants", None) or {}).items():
        if isinstance(value, torch.Tensor):
            state[key] = value
    tensors = _tensor_map(path, state, mapped=False)
    layers, masks, layout = _find_layers(path, tensors)
    ckpt = Checkpoint(
        path=path,
        format="torch.export",
        layout=layout,
        tensors=tensors,
        layers=layers,
        masks=masks,
        notes=("layer graph read from the exported program",),
        exported=program,
    )
    return _with_warnings(ckpt, caught)
