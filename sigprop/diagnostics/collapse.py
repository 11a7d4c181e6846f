"""Layer collapse, dead units and effective sparsity by path connectivity.

A pruned network is a directed graph whose nodes are *units* (features of a linear layer,
channels of a convolution) and whose edges are kept weights. Following Vysogorets & Kempe,
"Connectivity Matters: Neural Network Pruning Through the Lens of Effective Sparsity"
(arXiv 2107.02306, Sec. 3 and App. A), a kept weight is *effectively pruned* when it lies on
no path from an input unit to an output unit:

* a unit has a **way in** if it is reachable from the network input along kept weights
  (forward reachability), and a **way out** if an output unit is reachable from it
  (backward reachability);
* an edge ``u -> o`` of a weight layer survives iff it is kept, ``u`` has a way in and ``o``
  has a way out (then every unit on it is on an input-output path);
* *sparsity* is ``1 - kept/total`` over all weight layers, *effective sparsity*
  ``1 - effective_kept/total``.

Convolutions are handled at channel level, as in the paper's App. A: output channel ``o``
is connected to input channel ``u`` iff any entry of the kernel slice ``W[o, u, ...]`` is
kept. A linear layer that follows a flatten sees ``C`` channels of ``h*w`` features each
(PyTorch's channel-major flatten): feature ``f`` belongs to channel ``f // (h*w)``. Biases
create no paths (a unit without a way in outputs a constant), and normalisation, pooling and
activation layers act unit-wise, again as in the paper (App. A treats batch norm as
unit-wise). Residual additions join unit ``i`` of every summand to unit ``i`` of the sum, so a
skip connection keeps the network connected when a branch is pruned away -- and the
branch's remaining weights are then effectively pruned.

The graph comes from, in order of preference: an explicit :class:`ConnectivityGraph`; a
torch.fx trace of an ``nn.Module`` (residual connections, concatenations and flattens are
read from the trace); the graph of a ``torch.export`` program loaded by
:func:`sigprop.io.load_checkpoint`; or a chain of layers ``(name, weight, mask)`` taken
in order, joined by consecutive shape matching.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sigprop.validate import InvalidInput

__all__ = [
    "CollapseReport",
    "ConnectivityGraph",
    "LayerCollapse",
    "WeightLayer",
    "chain_graph",
    "check_collapse",
    "dct_connectivity",
    "dct_offset_connectivity",
    "export_graph",
    "module_graph",
    "module_weight_layers",
]

#: Number of weight entries processed per chunk when scanning a layer (bounds memory: the
#: scan never holds more than a few chunks of a layer's weights at once).
CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class WeightLayer:
    """One weight layer as seen by the connectivity analysis.

    Attributes
    ----------
    name:
        the layer's name (module path such as ``"features.0"``).
    weight:
        the weight, shape ``(out, in/groups, *kernel)``: a torch tensor, a numpy array, or
        a lazy tensor from :mod:`sigprop.io` (anything with ``shape`` and
        ``iter_rows(rows)``). ``None`` when only the mask is known.
    mask:
        0/1 mask of the weight's shape, or ``None``: then a weight is kept iff it is
        nonzero (the state after ``torch.nn.utils.prune.remove``).
    groups:
        convolution groups (output channel block ``g`` sees input channel block ``g``).
    offset:
        optional ``(out, in_channels)`` boolean connectivity of a dense, unmasked offset
        added to the layer (the DCT of DCT-plus-sparse layers, arXiv 2102.07655 Sec. 3):
        those edges connect units but are not counted as weights.
    """

    name: str
    weight: Any
    mask: Any = None
    groups: int = 1
    offset: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        source = self.weight if self.weight is not None else self.mask
        if source is None:
            raise InvalidInput(f"layer {self.name!r}: neither a weight nor a mask was given")
        return tuple(int(s) for s in source.shape)


class ConnectivityGraph:
    """A directed acyclic graph of *sites* (groups of units) joined by weight layers and
    unit-wise links; the skeleton on which reachability is computed.

    Build it in topological order: every operation creates its output site after its
    inputs. ``input()`` opens an input site; ``layer(w, src)`` applies a weight layer and
    returns its output site; ``add(*sites)`` joins summands unit by unit (a residual
    connection); ``concat(*sites)`` stacks sites along the unit axis; ``flatten(site)``
    marks that a following linear layer may see several features per unit; and
    ``output(site)`` marks an output. Widths are read from the weight shapes (an input's
    width from the first layer that reads it).
    """

    def __init__(self) -> None:
        self._parent: list[int] = []  # union-find over sites of equal width
        self._width: list[int | None] = []
        self._flat: list[bool] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        #: (layer, src, dst); the layer's flatten group size is resolved in ``finalize``.
        self.layers: list[tuple[WeightLayer, int, int]] = []
        #: (src, dst, offset): dst units [offset, offset + width(src)) copy src's units.
        self.links: list[tuple[int, int, int]] = []
        self._pending_linear: list[tuple[int, int, int]] = []  # (layer index, site, in_features)

    # ----- sites
    def _new_site(self, width: int | None = None, flat: bool = False) -> int:
        self._parent.append(len(self._parent))
        self._width.append(width)
        self._flat.append(flat)
        return len(self._parent) - 1

    def _find(self, s: int) -> int:
        while self._parent[s] != s:
            self._parent[s] = self._parent[self._parent[s]]
            s = self._parent[s]
        return s

    def _unify(self, a: int, b: int, what: str) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        wa, wb = self._width[ra], self._width[rb]
        if wa is not None and wb is not None and wa != wb:
            raise InvalidInput(f"{what}: widths {wa} and {wb} do not match")
        self._parent[rb] = ra
        self._width[ra] = wa if wa is not None else wb

    def _set_width(self, s: int, width: int, what: str) -> None:
        r = self._find(s)
        if self._width[r] is None:
            self._width[r] = width
        elif self._width[r] != width:
            raise InvalidInput(
                f"{what}: expects {width} input units, its input has {self._width[r]}"
            )

    def width(self, s: int) -> int | None:
        return self._width[self._find(s)]

    @property
    def n_sites(self) -> int:
        return len(self._parent)

    # ----- building
    def input(self, width: int | None = None) -> int:
        s = self._new_site(width)
        self.inputs.append(s)
        return s

    def output(self, site: int) -> None:
        self._check_site(site)
        self.outputs.append(site)

    def _check_site(self, s: int) -> None:
        if not (isinstance(s, int) and 0 <= s < self.n_sites):
            raise InvalidInput(f"unknown site {s!r}")

    def layer(self, layer: WeightLayer, src: int) -> int:
        """Apply a weight layer to ``src`` and return its output site."""
        self._check_site(src)
        shape = layer.shape
        if len(shape) < 2:
            raise InvalidInput(f"layer {layer.name!r}: a weight needs >= 2 dims, got shape {shape}")
        if layer.groups < 1 or shape[0] % layer.groups:
            raise InvalidInput(f"layer {layer.name!r}: {shape[0]} outputs not divisible by groups")
        dst = self._new_site(shape[0])
        index = len(self.layers)
        self.layers.append((layer, src, dst))
        if len(shape) == 2 and layer.groups == 1 and self._flat[src]:
            self._pending_linear.append((index, src, shape[1]))
        else:
            self._set_width(src, shape[1] * layer.groups, f"layer {layer.name!r}")
        return dst

    def add(self, *sites: int) -> int:
        """Unit-wise join (residual addition, gating product) of equally wide sites."""
        if not sites:
            raise InvalidInput("add() needs at least one site")
        for s in sites:
            self._check_site(s)
        dst = self._new_site(flat=all(self._flat[s] for s in sites))
        for s in sites:
            self._unify(dst, s, "residual addition")
            self.links.append((s, dst, 0))
        return dst

    def flatten(self, site: int) -> int:
        """Flatten spatial dimensions: channel-level identity, feature grouping allowed."""
        self._check_site(site)
        dst = self._new_site(flat=True)
        self._unify(dst, site, "flatten")
        self.links.append((site, dst, 0))
        return dst

    def concat(self, *sites: int) -> int:
        """Concatenate sites along the unit (channel) axis."""
        widths = [self.width(s) for s in sites]
        if any(w is None for w in widths):
            raise InvalidInput("concat(): the width of every input must be known")
        dst = self._new_site(sum(widths))
        offset = 0
        for s, w in zip(sites, widths):
            self.links.append((s, dst, offset))
            offset += w
        return dst

    def finalize(self) -> list[int]:
        """Resolve widths and flatten groups; returns the group size of every layer."""
        groups = [1] * len(self.layers)
        for index, site, in_features in self._pending_linear:
            name = self.layers[index][0].name
            w = self.width(site)
            if w is None:
                self._set_width(site, in_features, f"layer {name!r}")
            elif in_features % w:
                raise InvalidInput(
                    f"layer {name!r}: {in_features} input features are not a whole number of "
                    f"features per channel for a flattened input of {w} channels"
                )
            else:
                groups[index] = in_features // w
        for s in range(self.n_sites):
            if self.width(s) is None:
                raise InvalidInput(f"could not determine the width of site {s} (no layer reads it)")
        if not self.layers:
            raise InvalidInput("the network has no weight layers")
        if not self.inputs or not self.outputs:
            raise InvalidInput("the graph needs at least one input and one output")
        return groups


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class LayerCollapse:
    """Connectivity of one weight layer.

    Attributes
    ----------
    name, kind, shape:
        layer name; ``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"conv3d"``; weight shape.
    total, kept, effective_kept:
        number of weights; weights kept by the mask; kept weights on an input-output path.
    density, effective_density:
        ``kept/total`` and ``effective_kept/total``.
    collapsed:
        every weight of the layer is pruned (``kept == 0``): layer collapse in the sense of
        Tanaka et al. (arXiv 2006.05467, Sec. 3).
    effectively_collapsed:
        no kept weight of the layer lies on an input-output path.
    units:
        number of output units (features, or channels for a convolution).
    dead_in, dead_out:
        indices of output units with no way in (no path from the input) and with no way
        out (no path to the output).
    has_offset:
        a dense offset (DCT-plus-sparse) connects the layer independently of its mask.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    total: int
    kept: int
    effective_kept: int
    density: float
    effective_density: float
    collapsed: bool
    effectively_collapsed: bool
    units: int
    dead_in: tuple[int, ...]
    dead_out: tuple[int, ...]
    has_offset: bool = False

    @property
    def n_dead(self) -> int:
        """Number of output units with no way in or no way out."""
        return len(set(self.dead_in) | set(self.dead_out))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "total": self.total,
            "kept": self.kept,
            "effective_kept": self.effective_kept,
            "density": self.density,
            "effective_density": self.effective_density,
            "collapsed": self.collapsed,
            "effectively_collapsed": self.effectively_collapsed,
            "units": self.units,
            "dead_in": list(self.dead_in),
            "dead_out": list(self.dead_out),
            "n_dead": self.n_dead,
            "has_offset": self.has_offset,
        }


@dataclass(frozen=True)
class CollapseReport:
    """Layer collapse and effective sparsity of a pruned network.

    Attributes
    ----------
    layers:
        one :class:`LayerCollapse` per weight layer, in graph order.
    total, kept:
        weights over all layers, and those kept.
    sparsity:
        ``1 - kept/total`` (fraction of weights removed).
    effective_kept, effective_sparsity:
        kept weights on an input-output path, and ``1 - effective_kept/total``
        (Vysogorets & Kempe, arXiv 2107.02306, Sec. 3). ``None`` when no graph could be
        built (see ``notes``).
    collapsed_layers:
        names of layers with every weight pruned.
    effectively_collapsed_layers:
        names of layers none of whose kept weights lies on an input-output path.
    connected:
        whether some path joins an input unit to an output unit (``None`` without graph).
    input_units, dead_inputs:
        number of input units, and indices of those with no way out.
    graph:
        how the graph was obtained: ``"fx"``, ``"export"``, ``"chain"``, ``"explicit"``
        or ``"none"``.
    notes:
        what was inferred or could not be mapped.
    """

    layers: tuple[LayerCollapse, ...]
    total: int
    kept: int
    sparsity: float
    effective_kept: int | None
    effective_sparsity: float | None
    collapsed_layers: tuple[str, ...]
    effectively_collapsed_layers: tuple[str, ...]
    connected: bool | None
    input_units: int | None
    dead_inputs: tuple[int, ...]
    graph: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_dead_units(self) -> int:
        """Hidden and output units (outputs of weight layers) with no way in or no way out."""
        return sum(layer.n_dead for layer in self.layers)

    @property
    def healthy(self) -> bool:
        """No layer collapsed (directly or effectively) and the input reaches the output."""
        return (
            not self.collapsed_layers
            and not self.effectively_collapsed_layers
            and (self.connected is not False)
        )

    def to_dict(self) -> dict:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "total": self.total,
            "kept": self.kept,
            "sparsity": self.sparsity,
            "effective_kept": self.effective_kept,
            "effective_sparsity": self.effective_sparsity,
            "collapsed_layers": list(self.collapsed_layers),
            "effectively_collapsed_layers": list(self.effectively_collapsed_layers),
            "connected": self.connected,
            "input_units": self.input_units,
            "dead_inputs": list(self.dead_inputs),
            "n_dead_units": self.n_dead_units,
            "healthy": self.healthy,
            "graph": self.graph,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- scanning
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
    if hasattr(x, "iter_rows"):
        yield from x.iter_rows(rows)
        return
    for r in range(0, int(x.shape[0]), rows):
        yield x[r : r + rows]


def _as_numpy(x: Any, name: str, what: str) -> np.ndarray:
    """A numpy view of a chunk (numpy's elementwise kernels beat torch's on one thread)."""
    import torch

    if isinstance(x, torch.Tensor):
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


def _scan_layer(layer: WeightLayer, group: int) -> _Scan:
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


def _forward(counts: np.ndarray, offset: np.ndarray | None, reach_in: np.ndarray) -> np.ndarray:
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


def _backward(counts: np.ndarray, offset: np.ndarray | None, reach_out: np.ndarray) -> np.ndarray:
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


def _effective(scan: _Scan, way_out: np.ndarray, way_in: np.ndarray) -> int:
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


# --------------------------------------------------------------------------- analysis
_KINDS = {2: "linear", 3: "conv1d", 4: "conv2d", 5: "conv3d"}


def _kind(shape: tuple[int, ...]) -> str:
    return _KINDS.get(len(shape), f"{len(shape)}d")


def _density(kept: int, total: int) -> float:
    return kept / total if total else 0.0


def _layer_collapse(layer, s, eff: int, units: int, dead_in, dead_out, has_offset: bool):
    """The :class:`LayerCollapse` of one weight layer from its scan ``s`` and its
    effectively kept count ``eff`` (``s.kept`` when no graph is known)."""
    return LayerCollapse(
        name=layer.name,
        kind=_kind(layer.shape),
        shape=layer.shape,
        total=s.total,
        kept=s.kept,
        effective_kept=eff,
        density=_density(s.kept, s.total),
        effective_density=_density(eff, s.total),
        collapsed=s.kept == 0,
        effectively_collapsed=eff == 0,
        units=units,
        dead_in=dead_in,
        dead_out=dead_out,
        has_offset=has_offset,
    )


def _analyse(
    graph: ConnectivityGraph | None,
    layers: Sequence[WeightLayer],
    how: str,
    notes: list[str],
    progress: bool,
) -> CollapseReport:
    from tqdm.auto import tqdm

    groups = graph.finalize() if graph is not None else [1] * len(layers)
    scans = [
        _scan_layer(layer, g)
        for layer, g in tqdm(
            list(zip(layers, groups)), desc="scanning layers", disable=not progress, leave=False
        )
    ]
    total = sum(s.total for s in scans)
    kept = sum(s.kept for s in scans)
    if total == 0:
        raise InvalidInput("the weight layers hold no weights")
    collapsed = tuple(layer.name for layer, s in zip(layers, scans) if s.kept == 0)

    if graph is None:
        results = tuple(
            _layer_collapse(layer, s, s.kept, layer.shape[0], (), (), layer.offset is not None)
            for layer, s in zip(layers, scans)
        )
        return CollapseReport(
            layers=results,
            total=total,
            kept=kept,
            sparsity=1.0 - kept / total,
            effective_kept=None,
            effective_sparsity=None,
            collapsed_layers=collapsed,
            effectively_collapsed_layers=(),
            connected=None,
            input_units=None,
            dead_inputs=(),
            graph="none",
            notes=tuple(notes),
        )

    n = graph.n_sites
    widths = [graph.width(s) for s in range(n)]
    incoming: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
    outgoing: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
    for i, (_, src, dst) in enumerate(graph.layers):
        incoming[dst].append(("layer", i, src))
        outgoing[src].append(("layer", i, dst))
    for j, (src, dst, _) in enumerate(graph.links):
        incoming[dst].append(("link", j, src))
        outgoing[src].append(("link", j, dst))
    offsets = [
        _checked_offset(layer, widths[src], widths[dst], g)
        for (layer, src, dst), g in zip(graph.layers, groups)
    ]

    def link_slice(j: int) -> slice:
        src, _, off = graph.links[j]
        return slice(off, off + widths[src])

    fwd = [np.zeros(w, dtype=bool) for w in widths]
    for s in graph.inputs:
        fwd[s][:] = True
    for s in range(n):  # sites are numbered in topological order
        for kind, i, src in incoming[s]:
            if kind == "layer":
                fwd[s] |= _forward(scans[i].counts, offsets[i], fwd[src])
            else:
                fwd[s][link_slice(i)] |= fwd[src]
    bwd = [np.zeros(w, dtype=bool) for w in widths]
    for s in graph.outputs:
        bwd[s][:] = True
    for s in reversed(range(n)):
        for kind, i, dst in outgoing[s]:
            if kind == "layer":
                bwd[s] |= _backward(scans[i].counts, offsets[i], bwd[dst])
            else:
                bwd[s] |= bwd[dst][link_slice(i)]

    results = []
    for (layer, src, dst), s, off in zip(graph.layers, scans, offsets):
        results.append(
            _layer_collapse(
                layer,
                s,
                _effective(s, bwd[dst], fwd[src]),
                widths[dst],
                tuple(int(i) for i in np.flatnonzero(~fwd[dst])),
                tuple(int(i) for i in np.flatnonzero(~bwd[dst])),
                off is not None,
            )
        )
    effective_kept = sum(r.effective_kept for r in results)
    connected = any(bool((fwd[s] & bwd[s]).any()) for s in graph.outputs)
    input_units = sum(widths[s] for s in graph.inputs)
    dead_inputs: list[int] = []
    base = 0
    for s in graph.inputs:
        dead_inputs.extend(base + int(i) for i in np.flatnonzero(~bwd[s]))
        base += widths[s]
    return CollapseReport(
        layers=tuple(results),
        total=total,
        kept=kept,
        sparsity=1.0 - kept / total,
        effective_kept=effective_kept,
        effective_sparsity=1.0 - effective_kept / total,
        collapsed_layers=collapsed,
        effectively_collapsed_layers=tuple(
            r.name for r in results if r.effectively_collapsed and not r.collapsed
        ),
        connected=connected,
        input_units=input_units,
        dead_inputs=tuple(dead_inputs),
        graph=how,
        notes=tuple(notes),
    )


def _checked_offset(layer: WeightLayer, n_in: int, n_out: int, group: int) -> np.ndarray | None:
    if layer.offset is None:
        return None
    off = np.asarray(layer.offset, dtype=bool)
    if group > 1 and off.shape == (n_out, n_in * group):  # features after a flatten
        off = off.reshape(n_out, n_in, group).any(axis=2)
    if off.shape != (n_out, n_in):
        raise InvalidInput(
            f"layer {layer.name!r}: offset connectivity has shape {off.shape}, "
            f"expected {(n_out, n_in)}"
        )
    return off


# --------------------------------------------------------------------------- chains
def chain_graph(layers: Sequence[WeightLayer]) -> ConnectivityGraph:
    """Join layers in the given order into a chain by consecutive shape matching.

    Layer ``l+1`` must read ``l``'s output units: ``in == out`` for linear-linear and
    conv-conv (times groups), and ``in = channels * h * w`` (a flatten) for conv-linear.
    Raises ``ValueError`` naming the first pair that does not fit.
    """
    if not layers:
        raise InvalidInput("no weight layers to chain")
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
                    raise InvalidInput(
                        f"cannot chain {prev.name!r} {p} -> {layer.name!r} {shape}: "
                        f"{n_in} input features are not a multiple of {p[0]} channels"
                    )
                site = g.flatten(site)
            elif n_in != p[0] or (len(shape) > 2 and len(p) == 2):
                raise InvalidInput(
                    f"cannot chain {prev.name!r} {p} -> {layer.name!r} {shape}: "
                    f"{p[0]} outputs do not feed {n_in} inputs"
                )
        site = g.layer(layer, site)
        prev = layer
    g.output(site)
    return g


def _as_weight_layer(item: Any) -> WeightLayer:
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


def _dct_offset(module: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    alpha = getattr(module, "alpha", None)
    try:
        if alpha is not None and float(alpha.detach().abs().max()) == 0.0:
            return None  # no offset
    except (AttributeError, TypeError, ValueError):
        pass
    return dct_offset_connectivity(shape)


# --------------------------------------------------------------------------- modules
class _Unmappable(Exception):
    """The traced graph uses an operation the connectivity analysis cannot map."""


_UNITWISE_MODULES = frozenset(
    """ReLU ReLU6 LeakyReLU PReLU ELU SELU CELU GELU SiLU Mish Tanh Hardtanh Sigmoid
    Hardsigmoid Hardswish Softplus Softsign Tanhshrink LogSigmoid Identity Dropout Dropout1d
    Dropout2d Dropout3d AlphaDropout BatchNorm1d BatchNorm2d BatchNorm3d InstanceNorm1d
    InstanceNorm2d GroupNorm LayerNorm MaxPool1d MaxPool2d MaxPool3d AvgPool1d AvgPool2d
    AvgPool3d AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveMaxPool1d
    AdaptiveMaxPool2d Activation""".split()  # Activation: sigprop.nn.Activation
)

#: functions / methods / aten ops acting unit by unit (activations, pooling, normalisation,
#: copies and dtype casts).
_UNITWISE_OPS = frozenset(
    """relu relu_ relu6 leaky_relu leaky_relu_ prelu elu elu_ selu celu gelu silu mish tanh
    tanh_ hardtanh hardtanh_ sigmoid hardsigmoid hardswish softplus softsign logsigmoid erf
    dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_dropout native_dropout
    max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
    adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
    max_pool2d_with_indices batch_norm _native_batch_norm_legit_no_training
    _native_batch_norm_legit native_batch_norm instance_norm group_norm layer_norm
    native_layer_norm contiguous clone detach to float double half bfloat16 type_as neg abs
    square exp sin cos alias identity _to_copy lift_fresh_copy""".split()
)
_RESHAPE_OPS = frozenset("flatten view reshape _unsafe_view".split())
_BINARY_OPS = frozenset("add add_ iadd sub sub_ isub mul mul_ imul truediv div div_".split())
_SHAPE_OPS = frozenset("size dim shape numel sym_size".split())


def _op_name(target: Any) -> str:
    schema = getattr(target, "_schema", None)
    if schema is not None:  # an aten OpOverload
        return schema.name.split("::")[-1]
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target))


def _is_dct_plus_sparse(module: Any) -> bool:
    from sigprop.nn.dct import DCTPlusSparseConv1d, DCTPlusSparseConv2d, DCTPlusSparseLinear

    return isinstance(module, (DCTPlusSparseLinear, DCTPlusSparseConv1d, DCTPlusSparseConv2d))


def _is_weight_module(module: Any) -> bool:
    import torch
    from torch import nn

    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return True
    weight = getattr(module, "weight_orig", None)
    if weight is None:
        weight = getattr(module, "weight", None)
    has_mask = isinstance(getattr(module, "weight_mask", None), torch.Tensor)
    return (
        has_mask and isinstance(weight, nn.Parameter) and weight.dim() >= 2
    ) or _is_dct_plus_sparse(module)


def _module_layer(name: str, module: Any) -> WeightLayer:
    from torch import nn

    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        raise _Unmappable(f"{name}: transposed convolutions are not supported")
    weight = getattr(module, "weight_orig", None)
    if weight is None:
        weight = module.weight
    mask = getattr(module, "weight_mask", None)
    weight = weight.detach()
    mask = mask.detach() if mask is not None else None
    groups = int(getattr(module, "groups", 1))
    offset = None
    if _is_dct_plus_sparse(module):
        offset = _dct_offset(module, tuple(weight.shape))
    return WeightLayer(name, weight, mask, groups=groups, offset=offset)


def module_weight_layers(model: Any) -> list[WeightLayer]:
    """Weight layers of ``model`` in module registration order."""
    layers = []
    for name, module in model.named_modules():
        if (
            name
            and _is_weight_module(module)
            and not any(_is_weight_module(child) for child in module.children())
        ):
            layers.append(_module_layer(name, module))
    return layers


class _Walker:
    """Shared node handling for torch.fx and torch.export graphs."""

    def __init__(self, graph: ConnectivityGraph) -> None:
        self.g = graph
        self.sites: dict[Any, int | None] = {}
        #: nodes whose value is a tuple led by a unit-wise result (aten batch norm)
        self.tuple_sites: dict[Any, bool] = {}

    def site_of(self, arg: Any) -> int | None:
        return self.sites.get(arg) if _hashable(arg) else None

    def tensor_args(self, args: Iterable[Any]) -> list[int]:
        out = []
        for a in args:
            if isinstance(a, (list, tuple)):
                out.extend(self.tensor_args(a))
            else:
                s = self.site_of(a)
                if s is not None:
                    out.append(s)
        return out

    def generic(self, node: Any, name: str, args: Sequence[Any], kwargs: dict) -> int | None:
        tensors = self.tensor_args(list(args) + list(kwargs.values()))
        if not tensors:
            return None  # shape arithmetic, constants
        if name in _SHAPE_OPS:
            return None
        if name == "getitem":
            # only tuple outputs of unit-wise ops (batch norm's (out, mean, var)) map
            if isinstance(args[1], int) and args[1] == 0 and self.tuple_sites.get(args[0]):
                return self.site_of(args[0])
            raise _Unmappable(f"{node}: indexing a tensor is not supported")
        if name in _UNITWISE_OPS:
            return tensors[0]
        if name in _RESHAPE_OPS:
            return self.g.flatten(tensors[0])
        if name in _BINARY_OPS:
            return self.g.add(*tensors) if len(tensors) > 1 else tensors[0]
        if name in ("cat", "concat", "concatenate"):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim != 1:
                raise _Unmappable(f"{node}: concatenation along dim {dim} is not supported")
            return self.g.concat(*tensors)
        if name in ("mean", "amax", "sum") and len(tensors) == 1:
            dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
            dims = [dims] if isinstance(dims, int) else dims
            if dims and all(isinstance(d, int) and (d >= 2 or d < -1) for d in dims):
                return tensors[0]  # global pooling over spatial dimensions
        raise _Unmappable(f"operation {name!r} ({node}) cannot be mapped to unit connectivity")


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def module_graph(model: Any, notes: list[str] | None = None) -> ConnectivityGraph:
    """Trace ``model`` with torch.fx and build its :class:`ConnectivityGraph`.

    Weight layers (``nn.Linear``/``nn.Conv*``, anything with a ``weight_mask`` buffer,
    modules pruned with ``torch.nn.utils.prune``, DCT-plus-sparse layers) are leaves of the
    trace; residual additions, concatenations along channels and flattens are read from the
    graph. Raises ``ValueError`` if the trace fails or uses an operation that cannot be
    mapped.
    """
    import torch
    import torch.fx

    notes = [] if notes is None else notes

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):  # noqa: D102
            return _is_weight_module(m) or super().is_leaf_module(m, qualname)

    try:
        fx_graph = Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "not traceable"
        raise InvalidInput(
            f"torch.fx could not trace the model: {type(exc).__name__}: {exc}"
        ) from None
    g = ConnectivityGraph()
    walker = _Walker(g)
    modules = dict(model.named_modules())
    try:
        for node in fx_graph.nodes:
            if node.op == "placeholder":
                walker.sites[node] = g.input()
            elif node.op == "get_attr":
                walker.sites[node] = None
            elif node.op == "call_module":
                mod = modules[node.target]
                src = walker.tensor_args(node.args)
                if _is_weight_module(mod):
                    if len(src) != 1:
                        raise _Unmappable(f"{node.target}: expects one tensor input")
                    walker.sites[node] = g.layer(_module_layer(node.target, mod), src[0])
                elif type(mod).__name__ in _UNITWISE_MODULES and len(src) == 1:
                    walker.sites[node] = src[0]
                elif type(mod).__name__ == "Flatten" and len(src) == 1:
                    walker.sites[node] = g.flatten(src[0])
                elif type(mod).__name__ == "Sequential" and not len(mod):
                    walker.sites[node] = src[0] if src else None
                else:
                    raise _Unmappable(
                        f"module {node.target!r} of type {type(mod).__name__} cannot be mapped"
                    )
            elif node.op in ("call_function", "call_method"):
                name = _op_name(node.target)
                walker.sites[node] = walker.generic(node, name, node.args, dict(node.kwargs))
            elif node.op == "output":
                outs = walker.tensor_args(node.args)
                if not outs:
                    raise _Unmappable("the model returns no tensor")
                for s in outs:
                    g.output(s)
    except _Unmappable as exc:
        raise InvalidInput(str(exc)) from None
    return g


def export_graph(program: Any, notes: list[str] | None = None) -> ConnectivityGraph:
    """Build the :class:`ConnectivityGraph` of a ``torch.export.ExportedProgram``.

    Weight layers are the ``aten.linear`` / ``aten.conv*`` / ``aten.convolution`` calls;
    their weight argument is a parameter, or a product of a parameter and a mask buffer
    (how ``torch.nn.utils.prune`` and masked layers appear in the graph). Raises
    ``ValueError`` for operations that cannot be mapped.
    """
    from torch.export.graph_signature import InputKind

    notes = [] if notes is None else notes
    sig = program.graph_signature
    kinds = {spec.arg.name: spec for spec in sig.input_specs}
    tensors = dict(program.state_dict)
    tensors.update(getattr(program, "constants", {}) or {})
    g = ConnectivityGraph()
    walker = _Walker(g)
    values: dict[Any, Any] = {}  # node -> (tensor name, tensor) for parameter/buffer leaves
    derived: dict[Any, list] = {}  # node -> leaves of a parameter-only product

    def leaves(node: Any) -> list | None:
        if node in values:
            return [values[node]]
        return derived.get(node)

    try:
        for node in program.graph.nodes:
            if node.op == "placeholder":
                spec = kinds.get(node.name)
                if spec is not None and spec.kind == InputKind.USER_INPUT:
                    walker.sites[node] = g.input()
                elif spec is not None and spec.target in tensors:
                    values[node] = (spec.target, tensors[spec.target])
                    walker.sites[node] = None
                else:
                    walker.sites[node] = None
                continue
            if node.op == "output":
                outs = walker.tensor_args(node.args)
                if not outs:
                    raise _Unmappable("the program returns no tensor")
                for s in outs:
                    g.output(s)
                continue
            if node.op != "call_function":
                raise _Unmappable(f"node {node} ({node.op}) cannot be mapped")
            name = _op_name(node.target)
            args = list(node.args)
            if name in ("linear", "conv1d", "conv2d", "conv3d", "convolution"):
                if name == "convolution" and len(args) > 6 and args[6]:
                    raise _Unmappable(f"{node}: transposed convolutions are not supported")
                groups = 1
                if name == "convolution" and len(args) > 8:
                    groups = int(args[8])
                elif name.startswith("conv") and len(args) > 6:
                    groups = int(args[6])
                src = walker.site_of(args[0])
                parts = leaves(args[1])
                if src is None or not parts:
                    raise _Unmappable(f"{node}: weight is not a parameter or a masked parameter")
                walker.sites[node] = g.layer(_export_layer(parts, groups), src)
                continue
            if name == "_assert_tensor_metadata":
                walker.sites[node] = None
                continue
            tensor_sites = walker.tensor_args(args + list(node.kwargs.values()))
            if not tensor_sites:
                # parameter-only arithmetic: keep track of products (weight * mask)
                sub = [leaves(a) for a in args if leaves(a)]
                if name in ("mul", "to", "_to_copy", "clone", "detach", "alias", "contiguous"):
                    derived[node] = [x for part in sub for x in part]
                walker.sites[node] = None
                continue
            site = walker.generic(node, name, args, dict(node.kwargs))
            if name in _UNITWISE_OPS and isinstance(node.meta.get("val"), (tuple, list)):
                walker.tuple_sites[node] = True
            walker.sites[node] = site
    except _Unmappable as exc:
        raise InvalidInput(str(exc)) from None
    return g


def _export_layer(parts: list, groups: int) -> WeightLayer:
    masks = [(n, t) for n, t in parts if n.rsplit(".", 1)[-1].endswith("mask")]
    weights = [(n, t) for n, t in parts if not n.rsplit(".", 1)[-1].endswith("mask")]
    if len(weights) != 1 or len(masks) > 1:
        raise _Unmappable(f"weight expression over {[n for n, _ in parts]} is not weight * mask")
    wname, weight = weights[0]
    layer = wname.rsplit(".", 1)[0]
    mask = masks[0][1] if masks else None
    return WeightLayer(layer, weight.detach(), mask.detach() if mask is not None else None, groups)


# --------------------------------------------------------------------------- entry point
def check_collapse(
    model_or_layers: Any,
    *,
    graph: ConnectivityGraph | None = None,
    progress: bool = False,
) -> CollapseReport:
    """Per-layer density, layer collapse, dead units and effective sparsity.

    Parameters
    ----------
    model_or_layers:
        an ``nn.Module`` (traced with torch.fx; residual connections are followed), a
        :class:`sigprop.io.Checkpoint` (its torch.export graph or trusted module when it has
        one, else the chain of its layers in file order), a :class:`ConnectivityGraph`, or
        a sequence of ``(name, weight, mask)`` tuples / :class:`WeightLayer` objects taken
        as a chain (``mask=None``: nonzero weights are kept).
    graph:
        optional explicit graph for a sequence of layers (overrides the chain).
    progress:
        show a tqdm bar while scanning layers.

    Returns
    -------
    CollapseReport
        See its attributes. A kept weight counts as effective iff its input unit has a way
        in and its output unit a way out (Vysogorets & Kempe, arXiv 2107.02306, Sec. 3).

    Raises
    ------
    ValueError
        no weight layers, a mask of the wrong shape or not 0/1, NaN/inf weights, an
        explicit graph whose widths do not match.
    """
    notes: list[str] = []
    if isinstance(model_or_layers, ConnectivityGraph):
        g = model_or_layers
        return _analyse(g, [layer for layer, _, _ in g.layers], "explicit", notes, progress)
    if graph is not None:
        return _analyse(graph, [layer for layer, _, _ in graph.layers], "explicit", notes, progress)

    try:
        from torch import nn
    except ImportError:  # pragma: no cover - torch is a dependency
        nn = None
    if nn is not None and isinstance(model_or_layers, nn.Module):
        return _from_module(model_or_layers, notes, progress)
    if hasattr(model_or_layers, "layer_tensors") and hasattr(model_or_layers, "format"):
        return _from_checkpoint(model_or_layers, progress)
    if isinstance(model_or_layers, (str, bytes)) or not isinstance(model_or_layers, Iterable):
        raise InvalidInput(
            "check_collapse expects an nn.Module, a Checkpoint, a ConnectivityGraph or a "
            f"sequence of (name, weight, mask) tuples; got {type(model_or_layers).__name__}"
        )
    layers = [_as_weight_layer(item) for item in model_or_layers]
    return _from_chain(layers, notes, progress)


def _from_chain(layers: list[WeightLayer], notes: list[str], progress: bool) -> CollapseReport:
    if not layers:
        raise InvalidInput("no weight layers given")
    for layer in layers:
        if len(layer.shape) < 2:
            raise InvalidInput(
                f"layer {layer.name!r}: a weight needs >= 2 dims, got shape {layer.shape}"
            )
    try:
        g = chain_graph(layers)
    except ValueError as exc:
        notes.append(f"effective sparsity not computed: {exc}")
        return _analyse(None, layers, "none", notes, progress)
    return _analyse(g, layers, "chain", notes, progress)


def _from_module(model: Any, notes: list[str], progress: bool) -> CollapseReport:
    try:
        g = module_graph(model, notes)
        g.finalize()
    except ValueError as exc:
        notes.append(
            f"could not map the traced graph ({exc}); used the weight layers in module order"
        )
        layers = module_weight_layers(model)
        return _from_chain(layers, notes, progress)
    return _analyse(g, [layer for layer, _, _ in g.layers], "fx", notes, progress)


def _from_checkpoint(ckpt: Any, progress: bool) -> CollapseReport:
    notes = list(ckpt.notes)
    if getattr(ckpt, "exported", None) is not None:
        try:
            g = export_graph(ckpt.exported, notes)
            g.finalize()
        except ValueError as exc:
            notes.append(f"could not map the exported graph ({exc}); used the layer chain")
        else:
            return _analyse(g, [layer for layer, _, _ in g.layers], "export", notes, progress)
    if getattr(ckpt, "module", None) is not None:
        return _from_module(ckpt.module, notes, progress)
    layers = [
        WeightLayer(
            t.name,
            t.weight,
            t.mask,
            offset=dct_offset_connectivity(t.shape) if t.dct_offset else None,
        )
        for t in ckpt.layer_tensors()
    ]
    return _from_chain(layers, notes, progress)
