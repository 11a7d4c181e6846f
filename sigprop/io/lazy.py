"""Tensors read from the file on demand, row block by row block.

A :class:`LazyTensor` knows its name, shape and dtype; its values stay in the file until
:meth:`LazyTensor.load` or :meth:`LazyTensor.iter_rows` reads them with ``pread`` (never a
memory map, see :mod:`sigprop.io.source`), so scanning a file far larger than memory keeps
one block resident, and a file truncated meanwhile is reported, not a crash.

:func:`check_view` is the one geometry rule for every format: a tensor's declared shape is
bounded, its elements lie inside its storage, and it has no more elements than the storage
holds (a zero-stride ``expand`` view or an absurd overlapping view would make a scan
examine far more values than the file contains). :func:`check_totals` bounds a whole
checkpoint. Byte order is fixed per block (big-endian files are swapped in the block read,
which is private memory), and compressed entries are inflated once per full read.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from sigprop.io import limits
from sigprop.io.dtypes import DType, lookup, to_array
from sigprop.io.source import CheckpointError, FileSource

__all__ = ["LazyTensor", "Stored", "check_totals", "check_view", "to_numpy", "validate_values"]

#: elements per chunk when validating tensor values
CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- geometry
def check_view(
    where: str,
    key: str,
    dtype: DType,
    storage_bytes: int,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...] | None = None,
) -> int:
    """Check a tensor's geometry against its storage (see the module docstring); returns
    the number of elements. ``stride=None`` means C-contiguous."""
    if len(size) > limits.MAX_NDIM:
        raise CheckpointError(
            f"{where}: tensor {key!r} has {len(size)} dimensions (limit {limits.MAX_NDIM})"
        )
    if any(type(d) is not int or d < 0 for d in size):
        raise CheckpointError(f"{where}: tensor {key!r} has a malformed shape")
    declared = math.prod(max(d, 1) for d in size)
    if declared > limits.MAX_DECLARED_ELEMENTS:
        raise CheckpointError(
            f"{where}: tensor {key!r} declares shape {tuple(size)}, beyond the limit of "
            f"{limits.MAX_DECLARED_ELEMENTS} elements"
        )
    if stride is None:
        stride = contiguous_strides(size)
    if len(stride) != len(size) or any(type(s) is not int or s < 0 for s in stride):
        raise CheckpointError(f"{where}: tensor {key!r} has malformed strides")
    if type(offset) is not int or offset < 0:
        raise CheckpointError(f"{where}: tensor {key!r} has a malformed storage offset")
    numel = math.prod(size)
    item = dtype.itemsize
    if numel == 0:
        last_byte = offset * item
    else:
        last_byte = (offset + sum((d - 1) * s for d, s in zip(size, stride)) + 1) * item
    if last_byte > storage_bytes:
        raise CheckpointError(
            f"{where}: tensor {key!r} (shape {tuple(size)}, strides {tuple(stride)}, offset "
            f"{offset}) extends past the {storage_bytes} bytes of its storage"
        )
    if numel * item > storage_bytes:
        raise CheckpointError(
            f"{where}: tensor {key!r} has {numel} elements but its storage holds "
            f"{storage_bytes // item}: an overlapping view (zero strides, expand); save a "
            "contiguous copy (tensor.contiguous())"
        )
    return numel


def contiguous_strides(size: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    acc = 1
    for d in reversed(size):
        out.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(out))


def _is_contiguous(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for d, s in zip(reversed(size), reversed(stride)):
        if d != 1 and s != expected:
            return False
        expected *= d
    return True


def check_totals(where: str, tensors: Mapping[str, LazyTensor], storage_bytes: int) -> None:
    """Bound a checkpoint: tensor count, total elements, and views per stored byte."""
    if len(tensors) > limits.MAX_TENSORS:
        raise CheckpointError(
            f"{where}: {len(tensors)} tensors, more than the limit of {limits.MAX_TENSORS}"
        )
    total = sum(t.numel for t in tensors.values())
    if total > limits.MAX_TOTAL_ELEMENTS:
        raise CheckpointError(
            f"{where}: the tensors hold {total} elements, more than the limit of "
            f"{limits.MAX_TOTAL_ELEMENTS}"
        )
    viewed = sum(t.nbytes for t in tensors.values())
    if viewed > limits.MAX_VIEWS_PER_BYTE * storage_bytes + (1 << 20):
        raise CheckpointError(
            f"{where}: the tensors view {viewed} bytes of {storage_bytes} stored bytes (more "
            f"than {limits.MAX_VIEWS_PER_BYTE} views per byte)"
        )


# --------------------------------------------------------------------------- file bytes
class Stored:
    """The bytes of one storage in the file: ``nbytes`` at file offset ``start``, either
    plain or as a deflated zip entry (``inflate`` returns its whole content)."""

    def __init__(
        self,
        source: FileSource,
        start: int,
        nbytes: int,
        *,
        big_endian: bool = False,
        inflate=None,
    ) -> None:
        self.source = source
        self.start = start
        self.nbytes = nbytes
        self.big_endian = big_endian
        self._inflate = inflate

    @property
    def compressed(self) -> bool:
        return self._inflate is not None

    def read(self, offset: int, n: int) -> bytearray:
        if offset < 0 or offset + n > self.nbytes:
            raise CheckpointError(f"{self.source.display}: read outside a storage")
        if self._inflate is not None:
            return bytearray(memoryview(self._inflate())[offset : offset + n])
        buf = bytearray(n)
        if n:
            self.source.readinto(self.start + offset, buf)
        return buf


def _native(buf: bytearray, dtype: DType, big_endian: bool) -> bytearray:
    """``buf`` swapped in place to native byte order if needed."""
    if buf and big_endian and dtype.swap > 1:
        np.frombuffer(buf, dtype=f"u{dtype.swap}").byteswap(inplace=True)
    return buf


class _FileTensor:
    """How to read one tensor of a :class:`Stored` storage, as torch tensors or as numpy
    arrays (the same bytes; only :meth:`block` imports torch)."""

    def __init__(self, stored: Stored, dtype: DType, offset: int, size, stride) -> None:
        self.stored = stored
        self.dtype = dtype
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)
        self.contiguous = _is_contiguous(self.size, self.stride)

    @property
    def whole_only(self) -> bool:
        return self.stored.compressed or not self.contiguous

    @property
    def rows(self) -> int:
        return self.size[0] if self.size else 1

    def span_bytes(self) -> int:
        if math.prod(self.size) == 0:
            return 0
        return (1 + sum((d - 1) * s for d, s in zip(self.size, self.stride))) * self.dtype.itemsize

    def _bytes(self, r0: int, r1: int) -> tuple[tuple[int, ...], bytearray | None]:
        """The shape of rows ``[r0, r1)`` and the bytes they span (``None``: no elements)."""
        sub = (r1 - r0, *self.size[1:]) if self.size else ()
        if math.prod(sub) == 0:
            return sub, None
        first = self.offset + (r0 * self.stride[0] if self.size else 0)
        span = 1 + sum((d - 1) * s for d, s in zip(sub, self.stride))
        item = self.dtype.itemsize
        buf = self.stored.read(first * item, span * item)
        return sub, _native(buf, self.dtype, self.stored.big_endian)

    def block(self, r0: int, r1: int):
        import torch

        sub, buf = self._bytes(r0, r1)
        if buf is None:
            return torch.empty(sub, dtype=self.dtype.torch)
        flat = torch.frombuffer(buf, dtype=self.dtype.torch)
        if self.contiguous:
            return flat.view(sub)
        return flat.as_strided(sub, self.stride).contiguous()

    def array_block(self, r0: int, r1: int) -> np.ndarray:
        sub, buf = self._bytes(r0, r1)
        if buf is None:
            bits = np.empty(sub, dtype=self.dtype.storage)
        else:
            flat = np.frombuffer(buf, dtype=self.dtype.storage)
            if self.contiguous:
                bits = flat.reshape(sub)
            else:
                item = self.dtype.itemsize
                strides = tuple(s * item for s in self.stride)
                bits = np.lib.stride_tricks.as_strided(flat, sub, strides).copy()
        return to_array(bits, self.dtype)

    def load(self):
        return self.block(0, self.rows)

    def load_array(self) -> np.ndarray:
        return self.array_block(0, self.rows)


# --------------------------------------------------------------------------- lazy tensor
class LazyTensor:
    """A tensor of a checkpoint, read on demand.

    Attributes: ``name`` (its key), ``shape`` (tuple of ints), ``dtype`` (a torch dtype;
    for a tensor of a file, torch is imported when it is first asked for), ``kind``
    (``"f"``, ``"i"``, ``"u"``, ``"b"`` or ``"c"``, without torch). :meth:`load` and
    :meth:`iter_rows` give torch tensors in native byte order, in memory of their own;
    :meth:`load_array` and :meth:`iter_arrays` give numpy arrays (bfloat16 and 8-bit floats
    widened to float32 exactly), which for a tensor of a file never import torch.
    """

    def __init__(
        self,
        name: str,
        shape,
        dtype: Any,
        loader,
        rows,
        *,
        whole_only: bool = False,
        itemsize: int | None = None,
        arrays: tuple[Any, Any] | None = None,
    ) -> None:
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self._info = dtype if isinstance(dtype, DType) else None
        self._dtype = None if self._info is not None else dtype
        self._loader = loader
        self._rows = rows
        self._whole_only = whole_only
        self._itemsize = itemsize
        if arrays is None:  # numpy arrays of the torch blocks
            arrays = (lambda: to_numpy(self.load()), lambda r0, r1: to_numpy(self._rows(r0, r1)))
        self._array_loader, self._array_rows = arrays

    @classmethod
    def from_tensor(cls, name: str, tensor: Any) -> LazyTensor:
        """Wrap a tensor already in memory."""

        def rows(r0: int, r1: int):
            return tensor[r0:r1]

        return cls(
            name,
            tuple(tensor.shape),
            tensor.dtype,
            lambda: tensor,
            rows,
            itemsize=tensor.element_size(),
        )

    @classmethod
    def from_file(cls, name: str, stored: Stored, dtype: DType, offset: int, size, stride=None):
        """A tensor of a storage in the file; the geometry must have passed :func:`check_view`."""
        reader = _FileTensor(stored, dtype, offset, size, stride or contiguous_strides(size))
        if reader.whole_only and reader.span_bytes() > limits.MAX_WHOLE_TENSOR_BYTES:
            raise CheckpointError(
                f"{stored.source.display}: tensor {name!r} is stored non-contiguously or "
                f"compressed and spans {reader.span_bytes()} bytes, more than the limit of "
                f"{limits.MAX_WHOLE_TENSOR_BYTES} for a tensor read whole"
            )
        return cls(
            name,
            size,
            dtype,
            reader.load,
            reader.block,
            whole_only=reader.whole_only,
            itemsize=dtype.itemsize,
            arrays=(reader.load_array, reader.array_block),
        )

    @property
    def dtype(self) -> Any:
        if self._dtype is None:
            self._dtype = self._info.torch
        return self._dtype

    @property
    def kind(self) -> str:
        """``"f"`` float, ``"i"``/``"u"`` integer, ``"b"`` bool or ``"c"`` complex."""
        if self._info is not None:
            return self._info.kind
        found = lookup(str(self._dtype).removeprefix("torch."))
        if found is not None:
            return found.kind
        dt = self._dtype  # a dtype outside the table (a quantized integer): by its flags
        return "c" if dt.is_complex else "f" if dt.is_floating_point else "i"

    @property
    def dtype_name(self) -> str:
        """The torch dtype as torch prints it (``"torch.float32"``), without torch."""
        return f"torch.{self._info.name}" if self._info is not None else str(self._dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        item = self._itemsize if self._itemsize is not None else 1
        return self.numel * item

    def load(self):
        """The whole tensor, in memory."""
        return self._loader()

    def load_array(self) -> np.ndarray:
        """The whole tensor as a numpy array (class doc)."""
        return self._array_loader()

    def detach(self) -> LazyTensor:
        """``self``: a lazy tensor is read-only and outside autograd already (so code written
        for tensors, which detaches them, can pass it on)."""
        return self

    def iter_rows(self, rows: int) -> Iterator[Any]:
        """Yield consecutive blocks of ``rows`` rows (first dimension) as tensors.

        Each block is read from the file when asked for, so only one block is resident;
        a tensor stored non-contiguously or compressed is read whole once and sliced.
        """
        return self._iter(rows, self.load, self._rows)

    def iter_arrays(self, rows: int) -> Iterator[np.ndarray]:
        """:meth:`iter_rows` as numpy arrays (class doc)."""
        return self._iter(rows, self.load_array, self._array_rows)

    def _iter(self, rows: int, load, block) -> Iterator[Any]:
        if self.ndim == 0:
            yield load()
            return
        if self.numel == 0:
            yield block(0, self.shape[0])
            return
        rows = max(1, int(rows))
        if self._whole_only:
            whole = load()
            for r0 in range(0, self.shape[0], rows):
                yield whole[r0 : r0 + rows]
            return
        for r0 in range(0, self.shape[0], rows):
            yield block(r0, min(r0 + rows, self.shape[0]))

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.dtype_name})"


# --------------------------------------------------------------------------- values
def to_numpy(block: Any) -> np.ndarray:
    """A numpy array of a block (bfloat16 and float8 widened to float32, exactly)."""
    torch = sys.modules.get("torch")  # a block is a torch tensor only once torch is imported
    if torch is not None and isinstance(block, torch.Tensor):
        if block.is_floating_point() and block.dtype not in (
            torch.float16,
            torch.float32,
            torch.float64,
        ):
            block = block.float()
        return block.detach().numpy()
    return np.asarray(block)


def validate_values(
    where: str,
    tensors: Mapping[str, LazyTensor],
    mask_keys: frozenset[str] | set[str],
    skip: frozenset[str] = frozenset(),
) -> None:
    """Stream tensors: floats must be finite, masks 0/1 (one block at a time); a tensor named
    ``*_mask`` that is no pruning mask (an attention mask) may hold infinities. The blocks
    are numpy arrays (:meth:`LazyTensor.iter_arrays`): a file's tensors need no torch."""
    for key, t in tensors.items():
        is_mask = key in mask_keys
        kind = t.kind
        if key in skip or t.numel == 0 or kind == "b":
            continue
        if kind == "c":
            if is_mask:
                raise CheckpointError(f"{where}: mask {key!r} is complex ({t.dtype_name})")
            continue
        if not (kind == "f" or is_mask):
            continue
        row = max(1, t.numel // max(1, t.shape[0])) if t.ndim else 1
        for a in t.iter_arrays(max(1, CHUNK_ELEMENTS // row)):
            if is_mask:
                if np.count_nonzero(a == 1) != np.count_nonzero(a):
                    raise CheckpointError(
                        f"{where}: mask {key!r} is not binary (values other than 0 and 1)"
                    )
            elif key.endswith("_mask") and a.size:
                # an additive attention mask (a causal_mask buffer, not a pruning mask: it
                # has no weight beside it) holds -inf by design; NaN is still refused
                if np.isnan(a).any():
                    raise CheckpointError(f"{where}: tensor {key!r} contains NaN")
            elif a.size and not (np.isfinite(a.min()) and np.isfinite(a.max())):
                raise CheckpointError(f"{where}: tensor {key!r} contains NaN or inf")


def dtype_of(where: str, key: str, torch_dtype: Any) -> DType:
    """The :class:`DType` of a torch dtype, or a refusal naming it."""
    found = lookup(str(torch_dtype).removeprefix("torch."))
    if found is None:
        raise CheckpointError(f"{where}: tensor {key!r} has unsupported dtype {torch_dtype}")
    return found
