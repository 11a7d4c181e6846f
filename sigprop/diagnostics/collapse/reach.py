"""Forward and backward reachability over a :class:`ConnectivityGraph` (channel level)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sigprop.diagnostics.collapse.graph import ConnectivityGraph, WeightLayer
from sigprop.diagnostics.collapse.report import CollapseReport, LayerCollapse
from sigprop.diagnostics.collapse.scan import (
    backward_units,
    effective_units,
    forward_units,
    scan_layer,
)
from sigprop.validate import InvalidInput

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


def analyse(
    graph: ConnectivityGraph | None,
    layers: Sequence[WeightLayer],
    how: str,
    notes: list[str],
    progress: bool,
) -> CollapseReport:
    from tqdm.auto import tqdm

    groups = graph.finalize() if graph is not None else [1] * len(layers)
    scans = [
        scan_layer(layer, g)
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
    for j, (src, dst, _) in enumerate(graph.mixes):
        incoming[dst].append(("mix", j, src))
        outgoing[src].append(("mix", j, dst))
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
                fwd[s] |= forward_units(scans[i].counts, offsets[i], fwd[src])
            elif kind == "mix":
                fwd[s] |= graph.mixes[i][2][:, fwd[src]].any(axis=1)
            else:
                fwd[s][link_slice(i)] |= fwd[src]
    bwd = [np.zeros(w, dtype=bool) for w in widths]
    for s in graph.outputs:
        bwd[s][:] = True
    for s in reversed(range(n)):
        for kind, i, dst in outgoing[s]:
            if kind == "layer":
                bwd[s] |= backward_units(scans[i].counts, offsets[i], bwd[dst])
            elif kind == "mix":
                bwd[s] |= graph.mixes[i][2][bwd[dst]].any(axis=0)
            else:
                bwd[s] |= bwd[dst][link_slice(i)]

    results = []
    for (layer, src, dst), s, off in zip(graph.layers, scans, offsets):
        results.append(
            _layer_collapse(
                layer,
                s,
                effective_units(s, bwd[dst], fwd[src]),
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
