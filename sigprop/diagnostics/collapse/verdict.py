"""Residual-aware verdicts and constant channels, from the captured graph of a module.

A collapsed (or effectively collapsed) layer of a network that is still connected is
*bypassed*: some parallel path -- a residual skip, another branch of a concatenation --
carries the signal around it. Its *block* is the nearest enclosing module whose output is
an addition or concatenation (read from the capture: a unit-wise op such as the ReLU after
a ResNet block's sum is looked through). A unit without a way in is *constant* rather than
zero when a bias or the following batch norm's ``beta`` is nonzero there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sigprop.diagnostics.collapse.report import CollapseReport

_JOINS = ("add", "cat")
_PASS = frozenset("act dropout identity batchnorm layernorm groupnorm".split())


def _join_of(captured: Any, module: str) -> str | None:
    """``"add"``/``"cat"`` when the module's output is (a unit-wise op of) a join."""
    node_name = captured.module_outputs.get(module)
    for _ in range(3):
        if node_name is None:
            return None
        node = captured.nodes[node_name]
        if node.kind in _JOINS and len(node.inputs) > 1:
            return node.kind
        if node.kind not in _PASS or not node.inputs:
            return None
        node_name = node.inputs[0]
    return None


def _block_of(captured: Any, name: str) -> tuple[str | None, str | None]:
    parts = name.split(".")
    for k in range(len(parts) - 1, -1, -1):
        parent = ".".join(parts[:k])
        join = _join_of(captured, parent)
        if join is not None:
            return parent, join
    return None, None


def _constant_units(captured: Any, layer_name: str, dead_in: tuple[int, ...]) -> tuple[int, ...]:
    if not dead_in:
        return ()
    model = captured.model
    module = model.get_submodule(layer_name)
    units = np.asarray(dead_in)
    const = np.zeros(units.size, dtype=bool)
    bias = getattr(module, "bias", None)
    if bias is not None and bias.ndim == 1:
        const |= bias.detach().numpy()[units] != 0
    node_name = captured.module_outputs.get(layer_name)
    consumers = captured.consumers().get(node_name, []) if node_name else []
    for c in consumers:
        node = captured.nodes[c]
        if node.kind == "batchnorm" and node.module is not None:
            bn = model.get_submodule(node.module)
            beta = getattr(bn, "bias", None)
            if beta is not None and beta.ndim == 1 and beta.numel() > units.max():
                const |= beta.detach().numpy()[units] != 0
    return tuple(int(u) for u in units[const])


def _bias_constants(bias: Any, dead_in: tuple[int, ...]) -> tuple[int, ...]:
    if bias is None or not dead_in:
        return ()
    if hasattr(bias, "load_array"):
        b = bias.load_array()
    else:
        b = bias.load() if hasattr(bias, "load") else bias
    b = np.asarray(b.detach().float().numpy() if hasattr(b, "detach") else b).reshape(-1)
    return tuple(int(u) for u in dead_in if u < b.size and b[u] != 0)


def with_structure(
    report: CollapseReport, graph: Any, captured: Any, tensors: Any = None
) -> CollapseReport:
    """The report with ``bypassed``/``block`` per layer, ``skips`` and constant channels
    (``captured=None``, a graph without modules such as a ``.pt2``: the block is the
    layer's parent module, constant channels come from the biases in ``tensors``)."""
    if report.connected is None:
        return report
    failed = set(report.collapsed_layers) | set(report.effectively_collapsed_layers)
    layers, bypassed, skips = [], [], []
    names = [layer.name for layer in report.layers]
    modules = dict(captured.model.named_modules()) if captured is not None else {}
    for layer in report.layers:
        changes: dict[str, Any] = {}
        if layer.name in modules:  # a packed projection (``<attn>.in_proj``) is no module
            changes["constant_channels"] = _constant_units(captured, layer.name, layer.dead_in)
        elif tensors is not None:
            bias = tensors.get(f"{layer.name}.bias")
            changes["constant_channels"] = _bias_constants(bias, layer.dead_in)
        if layer.name in failed and report.connected:
            if captured is not None:
                block, join = _block_of(captured, layer.name)
            else:
                block, join = layer.name.rpartition(".")[0], None
            changes.update(bypassed=True, block=block)
            bypassed.append(layer.name)
            if block is not None:
                prefix = block + "." if block else ""
                alive = [
                    n for n in names if n.startswith(prefix) and n not in failed and n != layer.name
                ]
                shortcut = [n for n in alive if any(k in n for k in ("downsample", "shortcut"))]
                if join == "cat":
                    via = "the other inputs of its concatenation"
                elif shortcut:
                    via = "skip " + ", ".join(shortcut)
                else:
                    via = "identity skip"
                text = f"{block or '<model>'}: {via}"
                if text not in skips:
                    skips.append(text)
        layers.append(dataclasses.replace(layer, **changes) if changes else layer)
    return dataclasses.replace(
        report, layers=tuple(layers), bypassed_layers=tuple(bypassed), skips=tuple(skips)
    )
