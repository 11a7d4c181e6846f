"""Reading the pickles of torch.save files without running anything they reference.

A pickle is a program for a small stack machine whose instructions can import and call any
Python callable. :func:`unpickle` runs it only after two guards:

1. :func:`scan` walks the opcodes first (fast, no objects built) and refuses a pickle that
   uses an instruction torch.save never writes (``INST``, ``OBJ``, ``NEWOBJ``, extension
   codes, out-of-band buffers), names a global outside the allow-list, writes a memo slot
   out of order (the C unpickler sizes its memo by the largest index: a 6-byte pickle
   could make it clear gigabytes), or whose objects would need more memory than
   :data:`~sigprop.io.limits.MAX_PICKLE_MEMORY` (each opcode is charged at least what
   CPython allocates for it);
2. the unpickler's ``find_class`` answers only the allow-list, and each allowed name is
   bound to an *inert recorder* defined here, not to the torch function of that name:
   ``torch._utils._rebuild_tensor_v2(...)`` returns a :class:`TensorRef` (storage,
   dtype, offset, size, stride) after checking its arguments, ``torch.FloatStorage``
   returns a token. Storages (``persistent_load``) become :class:`StorageRef` records.

So the result is made of plain containers, numbers, strings and these immutable records;
no torch function runs, and no tensor memory is allocated. Anything else (a global such
as ``os.system`` or a ``torch.nn`` module class) raises :class:`PickleRefused`, which
``trust_pickle=True`` overrides by handing the file to ``torch.load`` instead.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections import OrderedDict
from typing import Any

from sigprop.io import limits
from sigprop.io.dtypes import DTYPES, STORAGE_TYPES
from sigprop.io.source import CheckpointError

__all__ = ["PickleRefused", "StorageRef", "TensorRef", "Truncated", "scan", "unpickle"]


class PickleRefused(CheckpointError):
    """The pickle references Python code (a class or function outside the allow-list).

    ``what`` names it (``"posix.system"``, ``"torch.nn.modules.linear.Linear"``).
    """

    def __init__(self, what: str) -> None:
        super().__init__(f"the pickle references {what}")
        self.what = what


class Truncated(CheckpointError):
    """The data ends before the pickle's STOP opcode (more bytes may complete it)."""


class _Corrupt(Exception):
    """A malformed pickle (reported as a CheckpointError by :func:`unpickle`)."""


# --------------------------------------------------------------------------- records
class StorageRef(tuple):
    """A storage of the file: ``(key, dtype, numel, location)``; ``dtype`` is ``None`` for
    an untyped (byte) storage, ``numel`` counts elements of ``dtype``."""

    __slots__ = ()

    key = property(lambda self: self[0])
    dtype = property(lambda self: self[1])
    numel = property(lambda self: self[2])
    location = property(lambda self: self[3])


class TensorRef(tuple):
    """A tensor as the pickle describes it: ``(storage, dtype, offset, size, stride)``,
    offset and strides in elements of ``dtype``."""

    __slots__ = ()

    storage = property(lambda self: self[0])
    dtype = property(lambda self: self[1])
    offset = property(lambda self: self[2])
    size = property(lambda self: self[3])
    stride = property(lambda self: self[4])


class _Token(tuple):
    """An allowed global that is data, not code (a storage class, a dtype, a type)."""

    __slots__ = ()


# --------------------------------------------------------------------------- opcode scan
_DENIED = frozenset(
    "INST OBJ NEWOBJ NEWOBJ_EX EXT1 EXT2 EXT4 PERSID NEXT_BUFFER READONLY_BUFFER".split()
)
# what CPython allocates for the object an opcode pushes (plus a slot in the container it
# ends up in); a cost per byte of argument is added for strings and long integers
_COSTS = {
    "EMPTY_SET": 256,
    "FROZENSET": 256,
    "ADDITEMS": 0,
    "EMPTY_DICT": 112,
    "DICT": 112,
    "EMPTY_LIST": 96,
    "LIST": 96,
    "TUPLE": 104,
    "TUPLE1": 88,
    "TUPLE2": 96,
    "TUPLE3": 104,
    "EMPTY_TUPLE": 40,
    "REDUCE": 256,
    "BUILD": 256,
    "BINPERSID": 256,
    "GLOBAL": 40,
    "STACK_GLOBAL": 40,
    "BINPUT": 16,
    "LONG_BINPUT": 16,
    "PUT": 16,
    "MEMOIZE": 16,
    "APPEND": 0,
    "APPENDS": 0,
    "SETITEM": 0,
    "SETITEMS": 0,
    "POP": 0,
    "POP_MARK": 0,
    "MARK": 8,
    "STOP": 0,
    "PROTO": 0,
    "FRAME": 0,
}
_DEFAULT_COST = 72  # a small int, float or string header and its slot

# how an opcode's argument is read: 0 fixed length (no check), 1 fixed length (checked),
# 2/3 one or two text lines, 4/5/6/7 length-prefixed (1-byte, 4-byte signed, 4-byte
# unsigned, 8-byte unsigned length), -1 refused
_READERS = {
    pickletools.UP_TO_NEWLINE: 2,
    pickletools.TAKEN_FROM_ARGUMENT1: 4,
    pickletools.TAKEN_FROM_ARGUMENT4: 5,
    pickletools.TAKEN_FROM_ARGUMENT4U: 6,
    pickletools.TAKEN_FROM_ARGUMENT8U: 7,
}
_CHECKED = frozenset("LONG_BINPUT PUT GET STOP FRAME".split())


def _opcode_tables() -> tuple[list[int], list[int], list[int], list[str]]:
    kind, length, cost, names = [-1] * 256, [0] * 256, [0] * 256, [""] * 256
    for op in pickletools.opcodes:
        code = ord(op.code)
        names[code] = op.name
        cost[code] = _COSTS.get(op.name, _DEFAULT_COST)
        arg = op.arg
        if op.name in _DENIED:
            kind[code] = -1
        elif arg is None or arg.n >= 0:
            kind[code] = 1 if op.name in _CHECKED else 0
            length[code] = 1 + (arg.n if arg is not None else 0)
        else:
            kind[code] = _READERS[arg.n]
            if arg.name == "stringnl_noescape_pair":
                kind[code] = 3
    return kind, length, cost, names


_KIND, _LENGTH, _COST, _NAMES = _opcode_tables()
#: protocol-2 pickles name Python 3 modules by their Python 2 names
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_ALLOWED_NAMES: set[tuple[str, str]] = set()  # filled below, used by scan() for early refusal


def scan(data: bytes, start: int = 0) -> int:
    """Check the pickle starting at ``start`` (see the module docstring); return the offset
    just past its STOP opcode. Raises :class:`PickleRefused` or ``CheckpointError``.

    Memory is estimated per opcode (:data:`_COSTS`, at least what CPython allocates), plus
    16 bytes per memo slot up to the largest index written (the C unpickler's memo is an
    array of twice that size). The loop is written for speed: most opcodes torch writes
    have fixed-length arguments and take the first branch.
    """
    n = len(data)
    pos = start
    cost = 0
    top = 256  # memo indices below 256 (BINPUT) cost nothing to reach
    kind, length, costs = _KIND, _LENGTH, _COST
    budget = limits.MAX_PICKLE_MEMORY
    while pos < n:
        code = data[pos]
        k = kind[code]
        cost += costs[code]
        if k == 0 and cost <= budget:
            pos += length[code]
            continue
        if cost > budget:
            break
        if k == 1:
            name = _NAMES[code]
            end = pos + length[code]
            if name == "STOP":
                if cost + 16 * top > budget:
                    break
                return end
            if name == "LONG_BINPUT":
                index = int.from_bytes(data[pos + 1 : end], "little")
                if index > pos:  # a sequential memo has fewer slots than opcodes
                    raise CheckpointError("the pickle writes a memo slot out of order")
                top = max(top, index + 1)
            elif name == "FRAME":
                if int.from_bytes(data[pos + 1 : end], "little") > n - end:
                    raise CheckpointError("the pickle is truncated (frame past the end)")
            elif name in ("PUT", "GET"):
                pass  # text opcodes of protocol 0 have variable length; never here
            pos = end
            continue
        if k < 0:
            raise CheckpointError(
                f"the pickle uses the {_NAMES[code] or hex(code)} opcode, which torch.save "
                "never writes"
            )
        arg_at = pos + 1
        if k == 4:
            if arg_at >= n:
                break
            end = arg_at + 1 + data[arg_at]
        elif k in (5, 6):
            size = int.from_bytes(data[arg_at : arg_at + 4], "little", signed=k == 5)
            if size < 0:
                raise CheckpointError("the pickle holds a negative length")
            end = arg_at + 4 + size
        elif k == 7:
            end = arg_at + 8 + int.from_bytes(data[arg_at : arg_at + 8], "little")
        else:  # one or two newline-terminated lines
            end = arg_at
            for _ in range(k - 1):
                nl = data.find(b"\n", end, end + limits.MAX_NAME_CHARS + 1)
                if nl < 0:
                    raise CheckpointError("the pickle holds an unterminated or overlong line")
                end = nl + 1
            name = _NAMES[code]
            if name == "GLOBAL":
                module, _, attr = data[arg_at:end].decode("utf-8", "replace").partition("\n")
                attr = attr.rstrip("\n")
                module = _PY2_MODULES.get(module, module)
                if (module, attr) not in _ALLOWED_NAMES:
                    raise PickleRefused(f"{module}.{attr}")
            elif name in ("PUT", "GET"):
                index = _text_int(data[arg_at:end])
                if name == "PUT":
                    if index > pos:
                        raise CheckpointError("the pickle writes a memo slot out of order")
                    top = max(top, index + 1)
        if end > n:
            break
        cost += 4 * (end - arg_at)  # a str takes up to 4 bytes per character
        pos = end
    if cost > budget or cost + 16 * top > budget:
        raise CheckpointError(
            f"the pickle would build more than {budget >> 20} MiB of objects (a pickle bomb)"
        )
    raise Truncated("the pickle is truncated (no STOP opcode)")


def _text_int(raw) -> int:
    text = bytes(raw).strip()
    if not text.isdigit() or len(text) > 12:
        raise CheckpointError("the pickle holds a malformed memo index")
    return int(text)


# --------------------------------------------------------------------------- unpickler
def _is_int(x: Any) -> bool:
    return type(x) is int and 0 <= x <= 1 << 62


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple | list) or len(x) > limits.MAX_NDIM:
        raise _Corrupt(f"{what} is not a short tuple of integers")
    if not all(_is_int(v) for v in x):
        raise _Corrupt(f"{what} holds a value that is not a non-negative integer")
    return tuple(x)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict) -> None:
        super().__init__(file)
        self.storages = storages
        self.n_tensors = 0
        self.allowed = _allowed(self)

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        found = self.allowed.get((module, name))
        if found is None:
            raise PickleRefused(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise _Corrupt("a persistent id is not a tuple")
        kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":
            raise PickleRefused("a pickled torch.nn.Module")
        if kind != "storage" or len(pid) not in (5, 6):
            raise _Corrupt(f"unknown persistent id {str(kind)[:40]!r}")
        storage_type, key, location, numel = pid[1:5]
        if len(pid) == 6 and pid[5] is not None:
            raise _Corrupt("legacy storage views are not supported")
        if not (isinstance(storage_type, _Token) and storage_type[0] == "storage"):
            raise _Corrupt("a storage has no storage type")
        for value in (key, location):
            if not isinstance(value, str | bytes) or len(value) > 64:
                raise _Corrupt("a storage key or location is malformed")
        key = key.decode("ascii", "replace") if isinstance(key, bytes) else key
        if not _is_int(numel):
            raise _Corrupt(f"storage {key!r} has a malformed size")
        ref = StorageRef((key, storage_type[1], numel, str(location)))
        known = self.storages.setdefault(key, ref)
        if known != ref:
            raise _Corrupt(f"storage {key!r} is declared twice with different types or sizes")
        if len(self.storages) > limits.MAX_TENSORS:
            raise _Corrupt(f"more than {limits.MAX_TENSORS} storages")
        return known

    # ----- recorders standing in for torch's rebuild functions
    def tensor(self, storage, offset, size, stride, dtype=None, metadata=None) -> TensorRef:
        if not isinstance(storage, StorageRef):
            raise _Corrupt("a tensor is rebuilt from something that is not a storage")
        if dtype is None:
            dtype = storage.dtype
        if dtype is None:
            raise _Corrupt("a tensor of an untyped storage has no dtype")
        if not _is_int(offset):
            raise _Corrupt("a tensor has a malformed storage offset")
        size = _int_tuple(size, "a tensor's size")
        stride = _int_tuple(stride, "a tensor's stride")
        if len(size) != len(stride):
            raise _Corrupt("a tensor's size and stride have different lengths")
        if metadata and any(bool(v) for v in dict(metadata).values()):
            raise _Corrupt("tensors with a lazy conjugate or negative bit are not supported")
        self.n_tensors += 1
        if self.n_tensors > limits.MAX_TENSORS:
            raise _Corrupt(f"more than {limits.MAX_TENSORS} tensors")
        return TensorRef((storage, dtype, offset, size, stride))

    def v1(self, storage, offset, size, stride):
        return self.tensor(storage, offset, size, stride)

    def v2(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        return self.tensor(storage, offset, size, stride, metadata=metadata)

    def v3(self, storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        if not (isinstance(dtype, _Token) and dtype[0] == "dtype"):
            raise _Corrupt("a tensor's dtype is not a dtype")
        if isinstance(storage, StorageRef) and storage.dtype not in (None, dtype[1]):
            raise _Corrupt("a tensor's dtype disagrees with its storage")
        return self.tensor(storage, offset, size, stride, dtype=dtype[1], metadata=metadata)

    def parameter(self, data, requires_grad=False, hooks=None, state=None):
        if not isinstance(data, TensorRef):
            raise _Corrupt("a parameter wraps something that is not a tensor")
        return data

    def from_type(self, func, new_type, args, state):
        if func not in (self.v1, self.v2, self.v3, self.parameter) or not isinstance(args, tuple):
            raise _Corrupt("a tensor subclass is rebuilt by an unknown function")
        if not (isinstance(new_type, _Token) and new_type[0] == "type"):
            raise _Corrupt("a tensor subclass of an unknown type")
        return func(*args)

    def size(self, dims=()):
        return _int_tuple(dims, "a torch.Size")

    def encode(self, text, encoding="utf-8"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _Corrupt("_codecs.encode is only accepted for protocol-2 bytes")
        return text.encode("latin1")


#: dtypes and storages torch can save but sigprop does not read: they unpickle as data, so
#: the refusal names the dtype ("unsupported dtype") instead of calling it code.
_UNSUPPORTED_DTYPES = (
    "float4_e2m1fn_x2 complex32 bits1x8 bits2x4 bits4x2 bits8 bits16 qint8 quint8 qint32 "
    "quint4x2 quint2x4 int1 int2 int3 int4 int5 int6 int7 uint1 uint2 uint3 uint4 uint5 "
    "uint6 uint7"
).split()
_QUANTIZED_STORAGES = (
    "QInt8Storage QUInt8Storage QInt32Storage QUInt4x2Storage QUInt2x4Storage".split()
)


def _allowed(u: _Unpickler) -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor"): u.v1,
        ("torch._utils", "_rebuild_tensor_v2"): u.v2,
        ("torch._utils", "_rebuild_tensor_v3"): u.v3,
        ("torch._utils", "_rebuild_parameter"): u.parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): u.parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): u.from_type,
        ("torch.nn.parameter", "Parameter"): _Token(("type", "Parameter")),
        ("torch", "Tensor"): _Token(("type", "Tensor")),
        ("torch._tensor", "Tensor"): _Token(("type", "Tensor")),
        ("torch", "Size"): u.size,
        ("_codecs", "encode"): u.encode,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
    }
    for storage, dtype in STORAGE_TYPES.items():
        table[("torch", storage)] = _Token(("storage", dtype))
    table[("torch.storage", "UntypedStorage")] = _Token(("storage", None))
    for name in (*DTYPES, *_UNSUPPORTED_DTYPES):
        table[("torch", name)] = _Token(("dtype", name))
    for name in _QUANTIZED_STORAGES:
        table[("torch", name)] = _Token(("storage", name))
    return table


def _allowed_names() -> set[tuple[str, str]]:
    class _Probe:
        def __getattr__(self, name):
            return None

    return set(_allowed(_Probe()))  # type: ignore[arg-type]


_ALLOWED_NAMES.update(_allowed_names())


def unpickle(data: bytes, storages: dict[str, StorageRef] | None = None) -> tuple[Any, int]:
    """Scan and unpickle the first pickle of ``data``; returns ``(object, end offset)``.

    ``storages`` collects the :class:`StorageRef` records by key (shared between the
    pickles of one file). Raises :class:`PickleRefused` for code references and
    ``CheckpointError`` for malformed pickles.
    """
    end = scan(data)
    stream = io.BytesIO(data[:end])
    unpickler = _Unpickler(stream, {} if storages is None else storages)
    try:
        obj = unpickler.load()
    except (PickleRefused, CheckpointError):
        raise
    except _Corrupt as exc:
        raise CheckpointError(f"malformed torch pickle: {exc}") from None
    except RecursionError:
        raise CheckpointError("the pickle nests too deeply") from None
    except MemoryError:
        raise CheckpointError("the pickle needs more memory than is available") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        text = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"corrupt pickle ({type(exc).__name__}: {text})") from None
    if stream.tell() != end:
        raise CheckpointError("corrupt pickle (its STOP opcode is not where the scan found it)")
    return obj, end
