"""Element types the readers understand, by the names each file format uses.

One table (:data:`DTYPES`, keyed by torch's dtype name) says how many bytes an element
takes, how bytes are swapped for a big-endian file, and whether the values are floats,
integers, booleans or complex numbers; the format-specific names (torch storage classes,
safetensors codes, ``torch.export`` scalar-type numbers) map onto it. A dtype not in the
table (4-bit floats, sub-byte integers, quantized storages) is refused with its name.

:func:`to_array` gives the values of stored elements as a numpy array without torch: the
dtypes numpy has are viewed as they are, and those it lacks are widened to float32 exactly
by bit manipulation -- bfloat16 is the upper half of a float32 (Kalamkar et al., "A Study
of BFLOAT16 for Deep Learning Training", arXiv 1905.12322, Sec. 2), and each 8-bit float
(Micikevicius et al., "FP8 Formats for Deep Learning", arXiv 2209.05433, Sec. 3; the
``fnuz`` variants of Noune et al., arXiv 2206.02915; E8M0 of the OCP Microscaling
Formats specification v1.0, Sec. 5.4) is looked up in a 256-entry table. Importing this
module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

__all__ = [
    "DTYPES",
    "EXPORT_SCALAR_TYPES",
    "SAFETENSORS_DTYPES",
    "STORAGE_TYPES",
    "DType",
    "lookup",
    "to_array",
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

    @property
    def storage(self) -> str:
        """numpy's dtype of the stored elements: the dtype itself where numpy has it, else
        the unsigned integer of its width (the bits, decoded by :func:`to_array`)."""
        return _NUMPY.get(self.name, f"u{self.itemsize}")


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


#: numpy's dtype of each dtype numpy has (the others are decoded from their bits).
_NUMPY = {
    **{f"float{b}": f"f{b // 8}" for b in (16, 32, 64)},
    **{f"int{b}": f"i{b // 8}" for b in (8, 16, 32, 64)},
    **{f"uint{b}": f"u{b // 8}" for b in (8, 16, 32, 64)},
    "bool": "?",
    "complex64": "c8",
    "complex128": "c16",
}

#: 8-bit floats: (exponent bits, exponent bias, special values) where "ieee" has infinities
#: and NaNs at the largest exponent, "fn" only NaN at all ones, "fnuz" NaN at negative zero.
_FLOAT8 = {
    "float8_e4m3fn": (4, 7, "fn"),
    "float8_e5m2": (5, 15, "ieee"),
    "float8_e4m3fnuz": (4, 8, "fnuz"),
    "float8_e5m2fnuz": (5, 16, "fnuz"),
}


def to_array(bits: np.ndarray, dtype: DType) -> np.ndarray:
    """The values of ``bits`` (an array of ``dtype.storage`` in native byte order): the
    array itself for a dtype numpy has, else the float32 values, exactly (module doc)."""
    if dtype.name in _NUMPY:
        return bits
    if dtype.name == "bfloat16":
        return np.asarray(bits.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(_float8_table(dtype.name)[bits])  # a 0-d index gives a scalar


@cache
def _float8_table(name: str) -> np.ndarray:
    """The float32 value of each of the 256 codes of an 8-bit float."""
    codes = np.arange(256, dtype=np.int64)
    if name == "float8_e8m0fnu":  # a bare exponent: 2**(code - 127), NaN at all ones
        values = np.ldexp(1.0, codes - 127)
        values[255] = np.nan
        return values.astype(np.float32)
    if name not in _FLOAT8:
        raise ValueError(f"no decoding for dtype {name}")
    exp_bits, bias, special = _FLOAT8[name]
    man_bits = 7 - exp_bits
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    frac = (codes & ((1 << man_bits) - 1)) / (1 << man_bits)
    values = np.where(
        exp == 0, np.ldexp(frac, 1 - bias), np.ldexp(1.0 + frac, np.maximum(exp, 1) - bias)
    )
    values = np.where(codes >> 7, -values, values)
    top = (1 << exp_bits) - 1
    if special == "ieee":
        values[exp == top] = np.where(frac[exp == top] == 0, np.inf, np.nan) * np.sign(
            values[exp == top]
        )
    elif special == "fn":
        values[(exp == top) & (frac * (1 << man_bits) == (1 << man_bits) - 1)] = np.nan
    else:
        values[0x80] = np.nan
    return values.astype(np.float32)


@cache
def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
