"""torch.save files: the zip archive format and the legacy (pre-1.6) stream format.

Both are read without ``torch.load``: the pickle goes through :mod:`sigprop.io.pickles`
(an allow-list whose names are bound to inert recorders), and each tensor becomes a
:class:`~sigprop.io.LazyTensor` reading its storage's bytes from the file:

* zip format: storage ``<archive>/data/<key>`` is a zip entry (stored entries are read in
  place, deflated ones inflated once per full read); the ``byteorder`` record says whether
  the storages are big-endian;
* legacy format: five pickles (magic number, protocol, system info, the object, the storage
  keys) followed by each storage as an 8-byte element count and its raw bytes, in key order,
  always little-endian (torch converts on a big-endian machine; the system info only records
  the writer's byte order).

A pickle that references code raises :class:`~sigprop.io.pickles.PickleRefused`; with
``trust_pickle=True`` the file is then handed to ``torch.load(weights_only=False)``
(which runs that code: only for a file you trust).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from sigprop.io import limits
from sigprop.io.dtypes import DType, lookup
from sigprop.io.layers import find_layers
from sigprop.io.lazy import LazyTensor, Stored, check_totals, check_view, dtype_of
from sigprop.io.pickles import PickleRefused, StorageRef, TensorRef, Truncated, unpickle
from sigprop.io.records import CHAIN_NOTE, Checkpoint
from sigprop.io.source import CheckpointError, FileSource
from sigprop.io.zipview import ZipView

__all__ = ["WRAPPER_KEYS", "load_legacy", "load_trusted", "load_zip", "refusal"]

#: keys under which training scripts commonly wrap the state dict
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights")

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def refusal(where: str, what: str) -> CheckpointError:
    """The one-line refusal of a file whose pickle references code."""
    return CheckpointError(
        f"{where}: the file holds pickled Python objects ({what}), e.g. a full nn.Module; "
        "refusing to unpickle them because that can run arbitrary code -- save a state dict "
        "or a torch.export .pt2, or pass --trust-pickle for a file you trust; a state dict "
        "keeps its real graph (skips, concatenations) with --arch torchvision:NAME, "
        "timm:NAME or module.path:factory"
    )


class _Refused(PickleRefused):
    """:class:`PickleRefused` with the user-facing message (path and advice)."""

    def __init__(self, where: str, what: str) -> None:
        CheckpointError.__init__(self, str(refusal(where, what)))
        self.what = what


def _unpickle(where: str, data: bytes, storages: dict) -> tuple[Any, int]:
    try:
        return unpickle(data, storages)
    except PickleRefused as exc:
        raise _Refused(where, exc.what) from None
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------- zip format
def load_zip(source: FileSource, view: ZipView) -> Checkpoint:
    where = source.display
    names = view.names
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise CheckpointError(
            f"{where}: a TorchScript archive (it holds code); save a state dict or a "
            "torch.export .pt2 instead"
        )
    prefix = names[0].split("/", 1)[0] if names and "/" in names[0] else None
    pkl = view.get(f"{prefix}/data.pkl") if prefix else None
    if pkl is None:
        raise CheckpointError(f"{where}: a zip archive without a torch.save data.pkl")
    big_endian = False
    order = view.get(f"{prefix}/byteorder")
    if order is not None:
        text = view.read(order, 16, "byte-order record")
        if text not in (b"little", b"big"):
            raise CheckpointError(f"{where}: unknown byte order {text[:16]!r}")
        big_endian = text == b"big"
    data = view.read(pkl, limits.MAX_PICKLE_BYTES, "pickle")
    storages: dict[str, StorageRef] = {}
    obj, end = _unpickle(where, data, storages)
    if end != len(data):
        raise CheckpointError(f"{where}: data.pkl has trailing bytes after its pickle")

    stored: dict[str, Stored] = {}

    def storage_of(ref: StorageRef) -> Stored:
        if ref.key in stored:
            return stored[ref.key]
        entry = view.get(f"{prefix}/data/{ref.key}")
        if entry is None:
            raise CheckpointError(f"{where}: storage {ref.key!r} is missing from the archive")
        nbytes = ref.numel * _storage_dtype(where, ref).itemsize
        if entry.size != nbytes:
            raise CheckpointError(
                f"{where}: storage {ref.key!r} holds {entry.size} bytes, the pickle says {nbytes}"
            )
        inflate = None
        if not entry.stored:
            inflate = lambda entry=entry: view.read(  # noqa: E731
                entry, limits.MAX_INFLATED_BYTES, "compressed storage"
            )
            if entry.size > limits.MAX_INFLATED_BYTES:
                raise CheckpointError(
                    f"{where}: compressed storage {ref.key!r} inflates to {entry.size} bytes, "
                    f"more than the limit of {limits.MAX_INFLATED_BYTES}"
                )
        stored[ref.key] = Stored(
            source, entry.data_start, nbytes, big_endian=big_endian, inflate=inflate
        )
        return stored[ref.key]

    return _from_refs(source, obj, "torch.save", storage_of, stored)


def _storage_dtype(where: str, ref: StorageRef) -> DType:
    dt = lookup(ref.dtype) if ref.dtype is not None else lookup("uint8")
    if dt is None:
        raise CheckpointError(f"{where}: storage {ref.key!r} has unsupported dtype {ref.dtype}")
    return dt


def _from_refs(
    source: FileSource, obj: Any, fmt: str, storage_of: Callable, stored: dict
) -> Checkpoint:
    where = source.display

    def make(key: str, ref: TensorRef) -> LazyTensor:
        dt = lookup(ref.dtype)
        if dt is None:
            raise CheckpointError(f"{where}: tensor {key!r} has unsupported dtype {ref.dtype}")
        store = storage_of(ref.storage)
        check_view(where, key, dt, store.nbytes, ref.offset, ref.size, ref.stride)
        return LazyTensor.from_file(key, store, dt, ref.offset, ref.size, ref.stride)

    ckpt = from_object(source, obj, fmt, lambda v: isinstance(v, TensorRef), make)
    check_totals(where, ckpt.tensors, sum(s.nbytes for s in stored.values()))
    return ckpt


# --------------------------------------------------------------------------- legacy format
def load_legacy(source: FileSource) -> Checkpoint:
    where = source.display
    window = min(source.size, 1 << 20)
    while True:
        data = source.pread(0, window)
        try:
            return _legacy(source, data)
        except _NeedMore:
            if window >= min(source.size, limits.MAX_PICKLE_BYTES):
                if source.size > limits.MAX_PICKLE_BYTES:
                    raise CheckpointError(
                        f"{where}: the pickles of the legacy file exceed the limit of "
                        f"{limits.MAX_PICKLE_BYTES} bytes"
                    ) from None
                raise CheckpointError(f"{where}: truncated torch.save file") from None
            window = min(source.size, limits.MAX_PICKLE_BYTES, window * 8)


class _NeedMore(Exception):
    pass


def _legacy(source: FileSource, data: bytes) -> Checkpoint:
    where = source.display
    storages: dict[str, StorageRef] = {}
    pos = 0
    parts = []
    for i in range(5):
        try:
            obj, end = unpickle(data[pos:], storages)
        except PickleRefused as exc:
            raise _Refused(where, exc.what) from None
        except Truncated as exc:
            if len(data) < source.size:
                raise _NeedMore from None
            raise CheckpointError(f"{where}: truncated torch.save file ({exc})") from None
        except CheckpointError as exc:
            if i == 0:
                raise CheckpointError(f"{where}: not a torch.save file ({exc})") from None
            raise CheckpointError(f"{where}: {exc}") from None
        parts.append(obj)
        pos += end
        if i == 0 and (type(obj) is not int or obj != _LEGACY_MAGIC):
            raise CheckpointError(
                f"{where}: a plain pickle, not a torch.save file (no torch magic number)"
            )
        if i == 1 and obj != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{where}: unsupported torch.save protocol {obj!r}")
    _, _, info, obj, keys = parts
    if not isinstance(info, dict) or not isinstance(info.get("little_endian"), bool):
        raise CheckpointError(f"{where}: malformed torch.save system information")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"{where}: malformed storage key list")
    if len(set(keys)) != len(keys) or set(keys) != set(storages):
        raise CheckpointError(f"{where}: the storage key list disagrees with the pickle")
    stored: dict[str, Stored] = {}
    for key in keys:
        ref = storages[key]
        dt = _storage_dtype(where, ref)
        if pos + 8 > source.size:
            raise CheckpointError(f"{where}: truncated torch.save file (storage {key!r})")
        count = int.from_bytes(source.pread(pos, 8), "little")
        nbytes = ref.numel * dt.itemsize
        if count != ref.numel or pos + 8 + nbytes > source.size:
            raise CheckpointError(
                f"{where}: storage {key!r} is truncated or disagrees with the pickle"
            )
        stored[key] = Stored(source, pos + 8, nbytes)
        pos += 8 + nbytes
    return _from_refs(source, obj, "torch.save (legacy)", lambda ref: stored[ref.key], stored)


# --------------------------------------------------------------------------- trusted
def load_trusted(source: FileSource) -> Checkpoint:
    """``torch.load(weights_only=False)``: runs code from the file (trusted files only)."""
    import torch

    where = source.display
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obj = torch.load(source.path, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as exc:
            raise CheckpointError(
                f"{where}: cannot unpickle the file: {_one_line(exc)} -- the classes it was "
                "saved with must be importable: run from the directory of their code or add "
                "it to PYTHONPATH, or save model.state_dict() and check it with "
                "--arch module.path:factory"
            ) from None
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{where}: cannot unpickle the file: {_one_line(exc)}") from None

    def make(key: str, value: Any) -> LazyTensor:
        if value.layout != torch.strided:
            raise CheckpointError(f"{where}: tensor {key!r} has unsupported layout {value.layout}")
        if value.device.type != "cpu" or value.is_quantized:
            raise CheckpointError(f"{where}: tensor {key!r} is not a plain CPU tensor")
        dtype_of(where, key, value.dtype)
        return LazyTensor.from_tensor(key, value.detach())

    ckpt = from_object(
        source, obj, "torch.save", lambda v: isinstance(v, torch.Tensor), make, modules=True
    )
    check_totals(where, ckpt.tensors, sum(t.nbytes for t in ckpt.tensors.values()))
    return with_warnings(ckpt, caught)


def with_warnings(ckpt: Checkpoint, caught: list) -> Checkpoint:
    """Reader warnings become notes (one line each) instead of multi-line stderr output."""
    import dataclasses

    if not caught:
        return ckpt
    extra = tuple(f"reader warning: {_one_line(w.message)}" for w in caught)
    return dataclasses.replace(ckpt, notes=ckpt.notes + extra)


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300] + ("..." if len(text) > 300 else "")


# --------------------------------------------------------------------------- the object
def from_object(
    source: FileSource,
    obj: Any,
    fmt: str,
    is_tensor: Callable[[Any], bool],
    make: Callable[[str, Any], LazyTensor],
    *,
    modules: bool = False,
) -> Checkpoint:
    """The :class:`Checkpoint` of an unpickled object: a state dict, a wrapped one, or (from
    ``torch.load``, ``modules=True``) an ``nn.Module``."""
    where = source.display
    notes: list[str] = []
    module = None
    wrapper = None
    nn = None
    if modules:
        from torch import nn

    def all_tensors(m: Mapping) -> bool:
        return all(is_tensor(v) for v in m.values())

    if nn is not None and isinstance(obj, nn.Module):
        module, obj, fmt = obj, obj.state_dict(), "pickled nn.Module"
    elif isinstance(obj, Mapping) and not all_tensors(obj):
        if all(isinstance(k, str) for k in obj):
            for key in WRAPPER_KEYS:
                inner = obj.get(key)
                if nn is not None and isinstance(inner, nn.Module):
                    module, obj, wrapper, fmt = inner, inner.state_dict(), key, "pickled nn.Module"
                    break
                if isinstance(inner, Mapping) and inner and all_tensors(inner):
                    obj, wrapper = inner, key
                    notes.append(f"state dict taken from the checkpoint's {key!r} entry")
                    break
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{where}: expected a state dict (a mapping of names to tensors), "
            f"found {type(obj).__name__}"
        )
    if not obj:
        raise CheckpointError(f"{where}: the state dict is empty")
    if len(obj) > limits.MAX_TENSORS:
        raise CheckpointError(
            f"{where}: {len(obj)} entries, more than the limit of {limits.MAX_TENSORS}"
        )
    tensors: dict[str, LazyTensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{where}: state-dict key {_short(key)} is not a string")
        if len(key) > limits.MAX_NAME_CHARS:
            raise CheckpointError(f"{where}: a state-dict key is {len(key)} characters long")
        if not is_tensor(value):
            raise CheckpointError(
                f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        tensors[key] = make(key, value)
    layers, masks, layout, layer_notes = find_layers(where, tensors)
    notes.extend(layer_notes)
    if module is None:
        notes.append(CHAIN_NOTE)
    return Checkpoint(
        path=source.path,
        format=fmt,
        layout=layout,
        tensors=tensors,
        layers=layers,
        masks=masks,
        notes=tuple(notes),
        wrapper_key=wrapper,
        module=module,
    )


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, int | float | bytes | tuple | type(None)) else ""
    return text[:60] if text else f"of type {type(value).__name__}"
