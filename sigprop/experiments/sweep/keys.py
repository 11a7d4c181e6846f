"""Run parameters as JSON, and the resume key of a run.

A run's parameters are JSON values: ``None``, booleans, integers of at most 64 bits, floats,
strings, lists and tables with string keys (numpy scalars and arrays become Python numbers
and lists). Non-finite floats have no JSON form, so they are written as tagged tables —
``{"$float": "nan"}``, ``{"$float": "inf"}``, ``{"$float": "-inf"}`` — in the results file
and in the text the run key hashes: ``nan``, ``inf``, ``-inf`` and ``1.0`` are four runs with
four keys, and a row read back gives the float it was written from. A parameter table whose
own keys include ``"$float"`` would be ambiguous and is refused. Finite values encode
exactly as plain JSON, so the keys of finite grids are the ones earlier versions wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from sigprop.validate import InvalidInput, InvalidType

__all__ = [
    "FLOAT_TAG",
    "MAX_VALUE_DEPTH",
    "canonical",
    "decode_params",
    "decode_value",
    "encode_params",
    "encode_value",
    "run_key",
]

#: The key of the table that stands for a non-finite float.
FLOAT_TAG = "$float"
#: Deepest nesting of lists/tables inside one parameter value.
MAX_VALUE_DEPTH = 32

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_INT_RANGE = (-(2**63), 2**63 - 1)  # TOML's integers; JSON readers agree on these


def _float_tag(x: float) -> dict:
    return {FLOAT_TAG: "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


def encode_value(value: Any, where: str = "value", depth: int = 0) -> Any:
    """``value`` as strict JSON (non-finite floats tagged; see the module docstring).

    Raises :class:`InvalidType` for a value that is not a JSON value and
    :class:`InvalidInput` for one nested deeper than :data:`MAX_VALUE_DEPTH`, an integer
    outside 64 bits, or a table using the reserved key ``"$float"``.
    """
    if depth > MAX_VALUE_DEPTH:
        raise InvalidInput(f"{where} is nested deeper than {MAX_VALUE_DEPTH} levels")
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise InvalidInput(f"{where} is an integer beyond 64 bits")
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else _float_tag(value)
    if isinstance(value, list | tuple):
        return [encode_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidType(f"{where} has a key that is not a string: {k!r:.80}")
            if k == FLOAT_TAG:
                raise InvalidInput(f"{where} uses the reserved key {FLOAT_TAG!r}")
            out[k] = encode_value(v, f"{where}.{k}", depth + 1)
        return out
    raise InvalidType(
        f"sweep parameters must be JSON values (numbers, strings, booleans, lists, tables); "
        f"{where} is a {type(value).__name__}"
    )


def decode_value(value: Any) -> Any:
    """The inverse of :func:`encode_value` on parsed JSON (tagged tables become floats)."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and value.get(FLOAT_TAG) in _NONFINITE:
            return _NONFINITE[value[FLOAT_TAG]]
        return {k: decode_value(v) for k, v in value.items()}
    return value


def encode_params(params: Mapping, where: str = "params") -> dict:
    """A parameter dict as strict JSON (see :func:`encode_value`)."""
    if not isinstance(params, Mapping):
        raise InvalidType(f"{where} must be a table of parameters, got {type(params).__name__}")
    return encode_value(params, where)


def decode_params(params: Any) -> Any:
    """Parameters read from a results file, with non-finite floats restored."""
    return decode_value(params)


def canonical(params: Mapping) -> str:
    """Canonical JSON text of a parameter dict: sorted keys, no spaces, strict JSON."""
    return json.dumps(encode_params(params), sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_key(run: str, params: Mapping) -> str:
    """The resume key of a run: the first 16 hex digits of SHA-256 over the run name and its
    parameters as JSON with sorted keys (non-finite floats tagged), so the order of keys in
    a config never matters and ``nan``, ``inf``, ``-inf`` are distinct runs."""
    text = json.dumps(
        {"run": run, "params": encode_params(params)}, sort_keys=True, allow_nan=False
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
