"""Layers in file order joined into a chain, and the connectivity of DCT offsets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sigprop.diagnostics.collapse.graph import ConnectivityGraph, WeightLayer
from sigprop.validate import InvalidInput

__all__ = [
    "as_weight_layer",
    "chain_graph",
    "map_chain",
    "dct_connectivity",
    "dct_offset_connectivity",
]


def chain_graph(layers: Sequence[WeightLayer]) -> ConnectivityGraph:
    """Join layers in the given order into a chain by consecutive shape matching.

    Layer ``l+1`` must read ``l``'s output units: ``in == out`` for linear-linear and
    conv-conv (times groups), and ``in = channels * h * w`` (a flatten) for conv-linear.
    Raises ``InvalidInput`` naming the first pair that does not fit.
    """
    g, reason = map_chain(layers)
    if reason is not None:
        raise InvalidInput(reason)
    return g


def map_chain(layers: Sequence[WeightLayer]) -> tuple[ConnectivityGraph | None, str | None]:
    """:func:`chain_graph` without raising: ``(graph, None)`` or ``(None, reason)``."""
    if not layers:
        return None, "no weight layers to chain"
    g = ConnectivityGraph()
    site = g.input()
    prev: WeightLayer | None = None
    for layer in layers:
        shape = layer.shape
        if prev is not None:
            p = prev.shape
            n_in = shape[1] * layer.groups
            if len(shape) == 2 and len(p) > 2:
                if n_in % p[0]:
                    return None, (
                        f"cannot chain {prev.name!r} {p} -> {layer.name!r} {shape}: "
                        f"{n_in} input features are not a multiple of {p[0]} channels"
                    )
                site = g.flatten(site)
            elif n_in != p[0] or (len(shape) > 2 and len(p) == 2):
                return None, (
                    f"cannot chain {prev.name!r} {p} -> {layer.name!r} {shape}: "
                    f"{p[0]} outputs do not feed {n_in} inputs"
                )
        site = g.layer(layer, site)
        prev = layer
    g.output(site)
    return g, None


def as_weight_layer(item: Any) -> WeightLayer:
    if isinstance(item, WeightLayer):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3):
        name, weight = item[0], item[1]
        mask = item[2] if len(item) == 3 else None
        return WeightLayer(str(name), weight, mask)
    raise InvalidInput(
        f"expected (name, weight, mask) tuples or WeightLayer objects, got {type(item).__name__}"
    )


# --------------------------------------------------------------------------- DCT offsets
def dct_connectivity(n_out: int, n_in: int) -> np.ndarray:
    """Nonzero pattern of the DCT offset ``D`` of a DCT-plus-sparse linear layer.

    ``D`` is the top-left ``n_out x n_in`` block of the ``N x N`` orthonormal DCT-II,
    ``N = max(n_in, n_out)``, ``D[k, n] = c_k cos(pi (2n+1) k / (2N))`` (Price & Tanner,
    arXiv 2102.07655, Sec. 3). An entry is exactly zero iff ``(2n+1) k = N (mod 2N)`` with
    ``(2n+1)k/N`` odd; decided in integer arithmetic, never by rounding a cosine.
    """
    N = max(n_in, n_out)
    k = np.arange(n_out, dtype=np.int64)[:, None]
    j = np.arange(n_in, dtype=np.int64)[None, :]
    return ((2 * j + 1) * k) % (2 * N) != N


def dct_offset_connectivity(shape: tuple[int, ...]) -> np.ndarray:
    """Channel-level connectivity ``(out, in)`` of the DCT offset of a DCT-plus-sparse layer
    whose sparse weight has ``shape``.

    Linear: :func:`dct_connectivity`. Convolution: the offset is the DCT of each flattened
    patch of length ``P = c_in * prod(kernel)``, ordered kernel position-major and channel
    fastest, to ``c_out`` coefficients (N = max(P, c_out); Price & Tanner, arXiv 2102.07655,
    Sec. 3.2); output channel ``o`` depends on input channel ``c`` iff some kernel position
    carries a nonzero coefficient.
    """
    if len(shape) == 2:
        return dct_connectivity(shape[0], shape[1])
    c_out, c_in = shape[0], shape[1]
    spatial = int(np.prod(shape[2:], dtype=np.int64))
    patch = dct_connectivity(c_out, c_in * spatial)  # (c_out, P), P index = pos * c_in + c
    return patch.reshape(c_out, spatial, c_in).any(axis=1)
