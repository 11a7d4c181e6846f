"""The connectivity graph of an ``nn.Module``, read from :func:`sigprop.diagnostics.graph.capture`.

Weight layers are those of :func:`sigprop.nn.kinds.is_weight_layer`, plus the packed
``in_proj_weight`` of ``nn.MultiheadAttention``. Attention leaves of the capture are expanded
at unit level: the packed q/k/v projection (a weight layer ``<name>.in_proj`` or timm's
``qkv``), then the head mixing -- output feature ``f`` of head ``h`` reads value feature ``f``
and every query and key feature of head ``h`` (softmax(QK^T)V) -- then ``out_proj``/``proj``.
``nn.TransformerEncoderLayer`` (post- and pre-norm) and ``nn.TransformerEncoder`` are expanded
into those and their feed-forward and norm layers. A normalisation whose scale ``gamma`` has
zeros cuts those units (they are constant downstream: the bias ``beta``).

Token layouts (timm ViTs): a transpose or permute keeps the units' identity, a concatenation
with parameters only (the class token) passes the input's units, and ``x[:, i]`` selects a
token. These rules assume the layer that reads the result sees the units on its input axis;
where it does not, its width check fails and the graph is reported unmappable, never guessed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sigprop.diagnostics.collapse.chain import dct_offset_connectivity
from sigprop.diagnostics.collapse.graph import ConnectivityGraph, WeightLayer
from sigprop.diagnostics.collapse.ops import RESHAPE_OPS, UNITWISE_OPS, Unmappable, op_name
from sigprop.nn.kinds import WEIGHT_KINDS, is_dct_layer, is_weight_layer
from sigprop.validate import InvalidInput

__all__ = [
    "default_input_shape",
    "graph_from_capture",
    "map_module",
    "module_graph",
    "module_layer",
    "module_weight_layers",
]

_UNITWISE_KINDS = frozenset(
    "act dropout identity scale maxpool avgpool adaptive_avgpool adaptive_maxpool".split()
)
_NORM_KINDS = frozenset(("batchnorm", "layernorm", "groupnorm"))
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


# --------------------------------------------------------------------------- layers
def _dct_offset(module: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    alpha = module.alpha.detach()
    if alpha.numel() and float(alpha.abs().max()) == 0.0:
        return None  # the offset is switched off
    return dct_offset_connectivity(shape)


def module_layer(name: str, module: nn.Module, param: str = "weight") -> WeightLayer:
    """The :class:`WeightLayer` of a weight layer (``param="in_proj_weight"`` for the packed
    projection of ``nn.MultiheadAttention``): ``<param>_orig`` and ``<param>_mask`` of
    ``torch.nn.utils.prune``, or the parameter and an optional ``<param>_mask`` buffer."""
    weight = getattr(module, param + "_orig", None)
    if weight is None:
        weight = getattr(module, param)
    mask = module._buffers.get(param + "_mask")
    weight = weight.detach()
    mask = mask.detach() if mask is not None else None
    groups = int(getattr(module, "groups", 1))
    offset = _dct_offset(module, tuple(weight.shape)) if is_dct_layer(module) else None
    return WeightLayer(name, weight, mask, groups=groups, offset=offset)


def _in_proj(name: str, mha: nn.MultiheadAttention) -> WeightLayer | None:
    if getattr(mha, "in_proj_weight_orig", None) is None and mha.in_proj_weight is None:
        return None  # separate q/k/v projections (kdim/vdim != embed_dim)
    return module_layer(f"{name}.in_proj" if name else "in_proj", mha, "in_proj_weight")


def module_weight_layers(model: nn.Module) -> list[WeightLayer]:
    """Weight layers of ``model`` in module registration order (``in_proj`` of an attention
    module before its ``out_proj``)."""
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, _TRANSPOSED):
            raise InvalidInput(f"{name}: transposed convolutions are not supported")
        if isinstance(module, nn.MultiheadAttention):
            layer = _in_proj(name, module)
            if layer is not None:
                layers.append(layer)
        elif (
            name
            and is_weight_layer(module)
            and not any(is_weight_layer(child) for child in module.children())
        ):
            layers.append(module_layer(name, module))
    return layers


def _first_weight(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) or (
            is_weight_layer(module) and not any(is_weight_layer(c) for c in module.children())
        ):
            return module
    return None


def default_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """A per-sample input shape the model accepts, guessed from its first weight layer:
    ``(C, 32, 32)`` for a 2-D convolution, ``(8, E)`` (8 tokens) for attention, ``(F,)`` for
    a linear layer. Connectivity at channel level does not depend on it; exact effective
    sparsity does (pass the real one)."""
    module = _first_weight(model)
    if module is None:
        return None
    if isinstance(module, nn.MultiheadAttention):
        return (8, module.embed_dim)
    w = getattr(module, "weight_orig", None)
    w = module.weight if w is None else w
    if w.ndim == 2:
        return (int(w.shape[1]),)
    return (int(w.shape[1]) * int(getattr(module, "groups", 1)), *[32] * (w.ndim - 2))


# --------------------------------------------------------------------------- graphs
def module_graph(
    model: nn.Module, notes: list[str] | None = None, *, input_shape=None
) -> ConnectivityGraph:
    """Trace ``model`` (:func:`~sigprop.diagnostics.graph.capture`) and build its
    :class:`ConnectivityGraph`. Raises ``InvalidInput`` if it cannot be traced or mapped."""
    g, reason, _ = map_module(model, input_shape)
    if reason is not None:
        raise InvalidInput(reason)
    return g


def map_module(model: nn.Module, input_shape=None) -> tuple[Any, str | None, Any]:
    """``(graph, None, captured)``, or ``(None, reason, captured-or-None)`` without raising."""
    from sigprop.diagnostics.graph import capture

    if default_input_shape(model) is None:
        return None, "the model has no weight layers", None
    try:
        if input_shape is None:  # channel connectivity needs the structure alone
            captured = capture(model, run=False)
        else:
            captured = capture(model, input_shape=tuple(int(d) for d in input_shape))
    except InvalidInput as exc:  # the one failure capture reports: not traceable
        return None, str(exc), None
    g, reason = graph_from_capture(captured)
    return (None if reason else g), reason, captured


def _tensor_sites(sites: dict, node) -> list[int]:
    return [sites[i] for i in node.inputs if sites.get(i) is not None]


def _gamma_gate(g: ConnectivityGraph, site: int, module: Any) -> int:
    gamma = getattr(module, "weight", None)
    if not isinstance(gamma, torch.Tensor) or gamma.ndim != 1:
        return site
    keep = (gamma.detach() != 0).numpy()
    if keep.all() or g.width(site) not in (None, keep.size):
        return site
    return g.gate(site, keep)


def _norm(g: ConnectivityGraph, site: int, kind: str, module: Any, shape) -> int:
    """A normalisation: LayerNorm connects the units it normalises together where its
    dimensions include the unit dimension (the last of a token or flat tensor, or all
    dimensions), GroupNorm the channels of a group; batch norm is unit-wise. Then
    ``gamma = 0`` cuts its units. (A unit of unknown width stays unit-wise.)"""
    width = g.width(site)
    if width is not None and kind == "layernorm":
        n = len(module.normalized_shape) if module is not None else 1
        if shape is not None and (len(shape) == n or shape[-1] == width):
            site = g.mix(site, np.ones((width, width), dtype=bool))
    elif width is not None and kind == "groupnorm" and module is not None:
        size = width // int(module.num_groups)
        site = g.mix(site, np.kron(np.eye(module.num_groups, dtype=bool), np.ones((size, size))))
    return _gamma_gate(g, site, module) if module is not None else site


def _token_norm(g: ConnectivityGraph, site: int, norm: nn.Module) -> int:
    """A LayerNorm over the features of a (batch, tokens, features) tensor."""
    return _norm(g, site, "layernorm", norm, (None, g.width(site)))


def _head_mixing(embed: int, heads: int) -> np.ndarray:
    """``(E, 3E)`` connectivity of softmax(QK^T)V per head over packed q|k|v features."""
    if heads < 1 or embed % heads:
        raise Unmappable(f"embedding {embed} not divisible into {heads} heads")
    d = embed // heads
    m = np.zeros((embed, 3 * embed), dtype=bool)
    m[np.arange(embed), 2 * embed + np.arange(embed)] = True
    for h in range(heads):
        rows = slice(h * d, (h + 1) * d)
        m[rows, h * d : (h + 1) * d] = True
        m[rows, embed + h * d : embed + (h + 1) * d] = True
    return m


def _layer(g: ConnectivityGraph, layer: WeightLayer, src: int) -> int:
    shape = layer.shape
    need = shape[1] * layer.groups
    width = g.width(src)
    flat_linear = len(shape) == 2 and layer.groups == 1 and g.is_flat(src)
    if width is not None and width != need and not flat_linear:
        raise Unmappable(f"layer {layer.name!r} expects {need} input units, its input has {width}")
    return g.layer(layer, src)


def _attention(g, name: str, m: nn.Module, x: int) -> int:
    if isinstance(m, nn.MultiheadAttention):
        qkv = _in_proj(name, m)
        if qkv is None:
            raise Unmappable(f"{name}: attention with separate q/k/v projections")
        proj, proj_name, heads, embed = m.out_proj, "out_proj", m.num_heads, m.embed_dim
    else:  # timm's Attention: qkv and proj Linear children
        qkv = module_layer(f"{name}.qkv" if name else "qkv", m.qkv)
        proj, proj_name, heads, embed = m.proj, "proj", int(m.num_heads), m.qkv.in_features
    site = _layer(g, qkv, x)
    site = g.mix(site, _head_mixing(embed, heads))
    return _layer(g, module_layer(f"{name}.{proj_name}" if name else proj_name, proj), site)


def _encoder_layer(g, name: str, m: nn.TransformerEncoderLayer, x: int) -> int:
    def sub(child: str) -> str:
        return f"{name}.{child}" if name else child

    def ff(h: int) -> int:
        h = _layer(g, module_layer(sub("linear1"), m.linear1), h)
        return _layer(g, module_layer(sub("linear2"), m.linear2), h)

    if m.norm_first:
        a = _attention(g, sub("self_attn"), m.self_attn, _token_norm(g, x, m.norm1))
        x = g.add(x, a)
        return g.add(x, ff(_token_norm(g, x, m.norm2)))
    x = _token_norm(g, g.add(x, _attention(g, sub("self_attn"), m.self_attn, x)), m.norm1)
    return _token_norm(g, g.add(x, ff(x)), m.norm2)


def _expand(g, kind: str, name: str, m: nn.Module, x: int) -> int:
    if kind == "attention":
        return _attention(g, name, m, x)
    if kind == "transformer_layer":
        return _encoder_layer(g, name, m, x)
    for i, layer in enumerate(m.layers):  # transformer_encoder
        x = _encoder_layer(g, f"{name}.layers.{i}" if name else f"layers.{i}", layer, x)
    if m.norm is not None:
        x = _token_norm(g, x, m.norm)
    return x


def graph_from_capture(cg: Any) -> tuple[ConnectivityGraph, str | None]:
    """The :class:`ConnectivityGraph` of a :class:`~sigprop.diagnostics.graph.CapturedGraph`
    and ``None``, or a partial graph and the reason it cannot be mapped."""
    g = ConnectivityGraph(lenient=True)
    sites: dict[str, int | None] = {}
    try:
        for node in cg.nodes.values():
            sites[node.name] = _map_node(g, cg, node, sites)
    except Unmappable as exc:
        return g, str(exc)
    return g, g.resolve()[1]


def _map_node(g: ConnectivityGraph, cg: Any, node: Any, sites: dict) -> int | None:
    kind = node.kind
    if kind == "input":
        return g.input()
    if kind in ("param", "constant", "meta"):
        return None
    src = _tensor_sites(sites, node)
    if kind == "output":
        if not src:
            raise Unmappable("the model returns no tensor")
        for s in src:
            g.output(s)
        return None
    if not src:
        return None  # parameter-only arithmetic, constants
    module = cg.model.get_submodule(node.module) if node.module is not None else None
    if kind in WEIGHT_KINDS:
        if isinstance(module, _TRANSPOSED):
            raise Unmappable(f"{node.module}: transposed convolutions are not supported")
        if len(src) != 1:
            raise Unmappable(f"{node.module}: expects one tensor input")
        return _layer(g, module_layer(node.module, module), src[0])
    if kind in ("attention", "transformer_layer", "transformer_encoder"):
        if len(set(src)) != 1:
            raise Unmappable(f"{node.module}: only self-attention (one input) is mapped")
        return _expand(g, kind, node.module, module, src[0])
    if kind in _UNITWISE_KINDS:
        return src[0]
    if kind in _NORM_KINDS:
        return _norm(g, src[0], kind, module, node.shape)
    if kind in ("add", "mul"):
        if len(src) > 1:
            widths = {g.width(s) for s in src} - {None}
            if len(widths) > 1:
                raise Unmappable(f"{node.name}: adding sites of widths {sorted(widths)}")
            return g.add(*src)
        return src[0]
    if kind in ("flatten", "reshape"):
        return g.flatten(src[0])
    if kind in ("transpose", "permute"):
        return src[0]  # units keep their identity; a layer reading the wrong axis fails its width
    if kind == "cat" and len(src) == 1:
        return src[0]  # the other parts are parameters (timm's class token): no way in
    if kind == "cat":
        args = node.attrs.get("args", ())
        dim = node.attrs.get("kwargs", {}).get("dim", args[0] if args else 0)
        if dim != 1:
            raise Unmappable(f"{node.name}: concatenation along dim {dim} is not supported")
        if any(g.width(s) is None for s in src):
            raise Unmappable(f"{node.name}: concatenation of sites of unknown width")
        return g.concat(*src)
    if kind == "mean":
        args = node.attrs.get("args", ())
        dims = node.attrs.get("kwargs", {}).get("dim", args[0] if args else None)
        dims = [dims] if isinstance(dims, int) else dims
        if dims and all(isinstance(d, int) and (d >= 2 or d < -1) for d in dims):
            return src[0]  # global pooling over spatial dimensions
        raise Unmappable(f"{node.name}: mean over dims {dims} is not unit-wise")
    if kind == "getitem":
        source = cg.nodes[node.inputs[0]]
        args = node.attrs.get("args", ())
        if source.kind == "attention" and args and args[0] == 0:
            return src[0]  # (output, attention weights)[0]
        index = args[0] if args else None
        if isinstance(index, tuple) and index and index[0] == slice(None):
            return src[0]  # x[:, 0]: a token of a (batch, tokens, features) tensor
        raise Unmappable(f"{node.name}: indexing a tensor is not supported")
    if (
        kind == "unmapped"
        and node.fx is not None
        and node.fx.op in ("call_function", "call_method")
    ):
        name = op_name(node.fx.target)
        if name in UNITWISE_OPS:
            return src[0]
        if name in RESHAPE_OPS:
            return g.flatten(src[0])
    reason = node.attrs.get("reason", f"operation of kind {kind!r}")
    raise Unmappable(f"{node.name} ({reason}) cannot be mapped to unit connectivity")
