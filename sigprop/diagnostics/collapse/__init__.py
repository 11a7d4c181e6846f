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

Two resolutions:

* **channel level** (``reach``, always, when a graph is known): output channel ``o`` is
  connected to input channel ``u`` iff any entry of the kernel slice ``W[o, u, ...]`` is kept,
  as in the paper's App. A. A linear layer that follows a flatten sees ``C`` channels of
  ``h*w`` features each (PyTorch's channel-major flatten). This ignores zero padding and the
  extent of small feature maps, so it *over*-counts effective weights: its effective sparsity
  is a lower bound (``channel_effective_sparsity``);
* **weight level** (``exact``, for a module with a known input shape): reachability of every
  spatial position, through the real convolution geometry (padding, stride, dilation,
  groups), pooling windows, residual additions and concatenations; a kept weight is
  effective iff some position pair it joins is reached from the input and reaches the
  output. Then ``effective_kept`` is this exact count.

Biases create no paths (a unit without a way in outputs a constant: the bias, or batch
norm's ``beta`` -- reported as ``constant_channels``), normalisation, pooling and activation
layers act unit-wise (App. A treats batch norm as unit-wise) and a normalisation scale
``gamma = 0`` cuts its unit. Residual additions join unit ``i`` of every summand to unit ``i``
of the sum, so a skip connection keeps the network connected when a branch is pruned away:
the branch's layers are then *bypassed* (``bypassed_layers``, with the block named).

The graph comes from, in order of preference: an explicit :class:`ConnectivityGraph`; the
captured graph of an ``nn.Module`` (:func:`sigprop.diagnostics.graph.capture`; a state
dict with ``arch=``, loaded by :mod:`sigprop.io.arch`); the graph of a ``torch.export`` program loaded
by :func:`sigprop.io.load_checkpoint`; or a chain of layers ``(name, weight, mask)`` taken in
order, joined by consecutive shape matching. Each mapper returns a reason instead of
raising, and the fallback is chosen from that reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from sigprop.diagnostics.collapse.chain import (
    as_weight_layer,
    chain_graph,
    dct_connectivity,
    dct_offset_connectivity,
)
from sigprop.diagnostics.collapse.from_export import export_graph
from sigprop.diagnostics.collapse.graph import ConnectivityGraph, WeightLayer
from sigprop.diagnostics.collapse.reach import analyse
from sigprop.diagnostics.collapse.report import CollapseReport, LayerCollapse
from sigprop.diagnostics.collapse.scan import CHUNK_ELEMENTS
from sigprop.validate import InvalidInput

__all__ = [
    "CHUNK_ELEMENTS",
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


def __getattr__(name: str):
    # torch-side names, imported on first use (a safetensors check needs no torch)
    if name in ("module_graph", "module_weight_layers"):
        from sigprop.diagnostics.collapse import from_fx

        return getattr(from_fx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_collapse(
    model_or_layers: Any,
    *,
    graph: ConnectivityGraph | None = None,
    input_shape: Any = None,
    arch: str | None = None,
    probe: bool = False,
    progress: bool = False,
) -> CollapseReport:
    """Per-layer density, layer collapse, dead units and effective sparsity.

    Parameters
    ----------
    model_or_layers:
        an ``nn.Module`` (captured; residual connections are followed), a
        :class:`sigprop.io.Checkpoint` (the architecture ``arch`` loaded with its tensors, or
        the one it was loaded with; else its torch.export graph or trusted module when it has
        one, else the chain of its layers in file order), a checkpoint's path as a
        ``pathlib.Path`` (read by :func:`sigprop.io.load_checkpoint` as ``sigprop check``
        reads it; a ``str`` is refused, as a sequence of layers it would be), a
        :class:`ConnectivityGraph`, or a sequence of
        ``(name, weight, mask)`` tuples / :class:`WeightLayer` objects taken as a chain
        (``mask=None``: nonzero weights are kept).
    graph:
        optional explicit graph for a sequence of layers (overrides the chain).
    input_shape:
        per-sample input shape ``(C, H, W)`` of a module: enables the exact weight-level
        effective sparsity (module doc). For ``arch`` it defaults to the architecture's
        (``(3, 224, 224)`` for torchvision/timm image models).
    arch:
        ``torchvision:NAME``, ``timm:NAME`` or ``module.path:factory`` for a checkpoint that
        is a state dict (:func:`sigprop.nn.arch.build_model`, weights never downloaded).
    probe:
        also run the module on random inputs (:mod:`.probe`): does the output depend on
        the input, which channels are constant or zero.
    progress:
        show a tqdm bar while scanning layers.

    Raises
    ------
    InvalidInput
        no weight layers, a mask of the wrong shape or not 0/1, NaN/inf weights, an
        explicit graph whose widths do not match, a state dict that does not fit ``arch``; a
        file that cannot be used raises its subclass :class:`~sigprop.io.CheckpointError`.
    """
    from sigprop.diagnostics.collapse import dispatch

    if isinstance(model_or_layers, os.PathLike):
        from sigprop.io import load_checkpoint

        ckpt = load_checkpoint(model_or_layers, validate_values=False)
        ckpt.validate_values(skip_layers=True)  # the layers are validated while scanned
        model_or_layers = ckpt

    if isinstance(model_or_layers, ConnectivityGraph):
        g = model_or_layers
        return analyse(g, [layer for layer, _, _ in g.layers], "explicit", [], progress)
    if graph is not None:
        return analyse(graph, [layer for layer, _, _ in graph.layers], "explicit", [], progress)
    if hasattr(model_or_layers, "layer_tensors") and hasattr(model_or_layers, "format"):
        return dispatch.from_checkpoint(model_or_layers, arch, input_shape, probe, progress)
    if dispatch.is_module(model_or_layers):
        return dispatch.from_module(model_or_layers, [], input_shape, probe, progress)
    if isinstance(model_or_layers, (str, bytes)) or not isinstance(model_or_layers, Iterable):
        hint = (
            " (a checkpoint's path: pass a pathlib.Path)"
            if isinstance(model_or_layers, str)
            else ""
        )
        raise InvalidInput(
            "check_collapse expects an nn.Module, a Checkpoint or its pathlib.Path, a "
            "ConnectivityGraph or a sequence of (name, weight, mask) tuples; got "
            f"{type(model_or_layers).__name__}{hint}"
        )
    layers = [as_weight_layer(item) for item in model_or_layers]
    return dispatch.from_chain(layers, [], progress)
