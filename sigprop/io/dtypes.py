"""Element types the readers understand, by the names each file format uses.

One table (:data:`DTYPES`, keyed by torch's dtype name) says how many bytes an element
takes, how bytes are swapped for a big-endian file, and whether the values are floats,
integers, booleans or complex numbers; the format-specific names (torch storage classes,
safetensors codes, ``torch.export`` scalar-type numbers) map onto it. A dtype not in the
table (4-bit floats, sub-byte integers, quantized storages) is refused with its name.
Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = [
    "DTYPES",
    "EXPORT_SCALAR_TYPES",
    "SAFETENSORS_DTYPES",
    "STORAGE_TYPES",
    "DType",
    "lookup",
]


@dataclass(frozen=True)
class DType:
    """An element type: ``name`` (torch's), ``itemsize`` in bytes, ``kind`` (``"f"`` float,
    ``"i"``/``"u"`` signed/unsigned integer, ``"b"`` bool, ``"c"`` complex) and
    ``swap`` (bytes swapped together on a byte-order change: the component size)."""

    name: str
    itemsize: int
    kind: str

    @property
    def swap(self) -> int:
        return self.itemsize // 2 if self.kind == "c" else self.itemsize

    @property
    def torch(self) -> Any:
        return _torch_dtype(self.name)

    @property
    def is_float(self) -> bool:
        return self.kind == "f"


def _table(*rows: tuple[str, int, str]) -> dict[str, DType]:
    return {name: DType(name, size, kind) for name, size, kind in rows}


#: torch dtype name -> :class:`DType`.
DTYPES: dict[str, DType] = _table(
    ("float64", 8, "f"),
    ("float32", 4, "f"),
    ("float16", 2, "f"),
    ("bfloat16", 2, "f"),
    ("float8_e4m3fn", 1, "f"),
    ("float8_e5m2", 1, "f"),
    ("float8_e4m3fnuz", 1, "f"),
    ("float8_e5m2fnuz", 1, "f"),
    ("float8_e8m0fnu", 1, "f"),
    ("int64", 8, "i"),
    ("int32", 4, "i"),
    ("int16", 2, "i"),
    ("int8", 1, "i"),
    ("uint64", 8, "u"),
    ("uint32", 4, "u"),
    ("uint16", 2, "u"),
    ("uint8", 1, "u"),
    ("bool", 1, "b"),
    ("complex128", 16, "c"),
    ("complex64", 8, "c"),
)

#: torch.save storage class name (``torch.FloatStorage`` ...) -> dtype name. ``None``:
#: the untyped byte storage that ``_rebuild_tensor_v3`` pairs with an explicit dtype.
STORAGE_TYPES: dict[str, str | None] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "UntypedStorage": None,
}

#: safetensors dtype code -> dtype name.
SAFETENSORS_DTYPES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "C64": "complex64",
}

#: ``torch.export`` schema ``ScalarType`` number -> dtype name (torch/_export/serde/schema.py).
EXPORT_SCALAR_TYPES: dict[int, str] = {
    1: "uint8",
    2: "int8",
    3: "int16",
    4: "int32",
    5: "int64",
    6: "float16",
    7: "float32",
    8: "float64",
    10: "complex64",
    11: "complex128",
    12: "bool",
    13: "bfloat16",
    28: "uint16",
    29: "float8_e4m3fn",
    30: "float8_e5m2",
    31: "float8_e4m3fnuz",
    32: "float8_e5m2fnuz",
    33: "float8_e8m0fnu",
    34: "uint32",
    35: "uint64",
}


def lookup(name: str) -> DType | None:
    """The :class:`DType` of a torch dtype name (``"float32"``), or ``None``."""
    return DTYPES.get(name) if isinstance(name, str) else None


@cache
def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
