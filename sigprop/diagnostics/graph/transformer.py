"""Attention and transformer-layer translation rules (used by :mod:`.translate`).

``nn.MultiheadAttention`` (self-attention, ``batch_first``, packed in-projection) and timm's
``Attention`` become the engine's ``attention`` op with their measured squared weights;
``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder`` (leaves of the tracer, their
forward branches on tensor properties) are expanded here into the computation of their
(non-fast-path) forward: post-norm ``x = norm1(x + drop1(sa(x)))``,
``x = norm2(x + drop2(linear2(drop(act(linear1(x))))))``, or the pre-norm form for
``norm_first``. Every submodule gets its record under its own qualified name.
"""

from __future__ import annotations

from torch import nn

from sigprop.diagnostics.graph.translate import (
    WeightRef,
    _NoRule,
    _np,
    _square,
    mask01,
    weight_arrays,
)
from sigprop.nn.activation import theory_spec

__all__ = ["attention_node", "transformer_nodes"]


def _j(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _w2(module, attr):
    w, mask, used = weight_arrays(module, attr)
    return _square(w), None if mask is None else mask01(mask), mask, used


def _params(source_in, proj_out, heads, dropout, training):
    """The attention op's parameters from the input projection ``(module, weight attribute,
    bias)`` and the output projection; with the raw masks and weight attributes of both."""
    module_in, attr, bias_in = source_in
    w2_in, mask_in, raw_in, used_in = _w2(module_in, attr)
    w2_out, mask_out, raw_out, used_out = _w2(proj_out, "weight")
    prm = {
        "heads": int(heads),
        "w2_in": w2_in,
        "w2_out": w2_out,
        "dropout": float(dropout),
        "training": bool(training),
    }
    optional = {"b_in": bias_in, "b_out": proj_out.bias, "mask_in": mask_in, "mask_out": mask_out}
    for key, value in optional.items():
        if value is not None:
            prm[key] = _np(value) if key.startswith("b_") else value
    return prm, (raw_in, used_in), (raw_out, used_out)


def _mha(b, name: str, m: nn.MultiheadAttention, x: str) -> str:
    if not m.batch_first:
        raise _NoRule("MultiheadAttention with batch_first=False (sequence-first tensors)")
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise _NoRule("MultiheadAttention with separate q/k/v weights, bias_k or zero attn")
    if b.layout[x] != "tok":
        raise _NoRule("attention over a tensor that is not (batch, tokens, features)")
    prm, (raw_in, attr_in), (raw_out, attr_out) = _params(
        (m, "in_proj_weight", m.in_proj_bias), m.out_proj, m.num_heads, m.dropout, m.training
    )
    tn = b.emit(name, "attention", [x], prm)
    b.weights[name] = WeightRef(name, attr_in, raw_in, tn, "in_proj")
    b.weights[_j(name, "out_proj")] = WeightRef(
        _j(name, "out_proj"), attr_out, raw_out, tn, "out_proj"
    )
    b.node_of[_j(name, "out_proj")] = tn
    return tn


def _timm(b, name: str, m, x: str) -> str:
    head_dim = m.qkv.in_features // m.num_heads
    for sub in ("q_norm", "k_norm", "norm"):
        if not isinstance(getattr(m, sub, nn.Identity()), nn.Identity):
            raise _NoRule(f"attention with a {sub} that is not Identity")
    if abs(float(m.scale) - head_dim**-0.5) > 1e-12 * head_dim**-0.5:
        raise _NoRule(f"attention temperature {m.scale} is not 1/sqrt(head_dim)")
    if b.layout[x] != "tok":
        raise _NoRule("attention over a tensor that is not (batch, tokens, features)")
    drop = getattr(m, "attn_drop", None)
    prm, (raw_in, attr_in), (raw_out, attr_out) = _params(
        (m.qkv, "weight", m.qkv.bias),
        m.proj,
        m.num_heads,
        drop.p if drop is not None else 0.0,
        m.training,
    )
    tn = b.emit(_j(name, "proj"), "attention", [x], prm)
    b.weights[_j(name, "qkv")] = WeightRef(_j(name, "qkv"), attr_in, raw_in, tn, "in_proj")
    b.weights[_j(name, "proj")] = WeightRef(_j(name, "proj"), attr_out, raw_out, tn, "out_proj")
    pd = getattr(m, "proj_drop", None)
    if pd is not None:
        tn = b.emit(
            _j(name, "proj_drop"), "dropout", [tn], {"p": float(pd.p), "training": pd.training}
        )
        b.node_of[_j(name, "proj_drop")] = tn
    return tn


def attention_node(b, node, module, ins) -> str:
    """An attention leaf (self-attention only: every input is the same tensor)."""
    live = [i for i in ins if i is not None]
    if not live or len(set(live)) != 1 or len(live) != len(node.inputs):
        raise _NoRule("attention whose query, key and value differ, or with a mask")
    if isinstance(module, nn.MultiheadAttention):
        b.tuple_out.add(node.name)
        return _mha(b, node.module, module, live[0])
    return _timm(b, node.module, module, live[0])


def _norm(b, name: str, m: nn.LayerNorm, x: str) -> str:
    prm = {"eps": float(m.eps)}
    if m.weight is not None:
        prm["gamma"] = _np(m.weight)
    if getattr(m, "bias", None) is not None:
        prm["beta"] = _np(m.bias)
    tn = b.emit(name, "layernorm", [x], prm)
    b.node_of[name] = tn
    return tn


def _drop(b, name: str, m: nn.Dropout, x: str) -> str:
    tn = b.emit(name, "dropout", [x], {"p": float(m.p), "training": bool(m.training)})
    b.node_of[name] = tn
    return tn


def _activation(layer: nn.TransformerEncoderLayer) -> str:
    flag = getattr(layer, "activation_relu_or_gelu", 0)
    if flag == 1:
        return "relu"
    if flag == 2:
        return "gelu"
    if isinstance(layer.activation, nn.Module) and theory_spec(layer.activation):
        return theory_spec(layer.activation)
    raise _NoRule(f"transformer activation {layer.activation!r} has no rule")


def _layer(b, p: str, layer: nn.TransformerEncoderLayer, x: str) -> str:
    if not layer.self_attn.batch_first:
        raise _NoRule("TransformerEncoderLayer with batch_first=False")
    if b.layout[x] != "tok":
        raise _NoRule("a transformer layer over a tensor that is not (batch, tokens, features)")
    act = _activation(layer)

    def sa(h):
        a = _mha(b, _j(p, "self_attn"), layer.self_attn, h)
        b.node_of[_j(p, "self_attn")] = a
        return _drop(b, _j(p, "dropout1"), layer.dropout1, a)

    def ff(h):
        h = b.weight(_j(p, "linear1"), h, _j(p, "linear1"), layer.linear1, conv=False)
        b.node_of[_j(p, "linear1")] = h
        h = b.emit(_j(p, "activation"), "elementwise", [h], {"activation": act})
        if isinstance(layer.activation, nn.Module):
            b.node_of[_j(p, "activation")] = h
        h = _drop(b, _j(p, "dropout"), layer.dropout, h)
        h = b.weight(_j(p, "linear2"), h, _j(p, "linear2"), layer.linear2, conv=False)
        b.node_of[_j(p, "linear2")] = h
        return _drop(b, _j(p, "dropout2"), layer.dropout2, h)

    if layer.norm_first:
        x = b.emit(_j(p, "add1"), "add", [x, sa(_norm(b, _j(p, "norm1"), layer.norm1, x))])
        x = b.emit(_j(p, "add2"), "add", [x, ff(_norm(b, _j(p, "norm2"), layer.norm2, x))])
    else:
        x = _norm(b, _j(p, "norm1"), layer.norm1, b.emit(_j(p, "add1"), "add", [x, sa(x)]))
        x = _norm(b, _j(p, "norm2"), layer.norm2, b.emit(_j(p, "add2"), "add", [x, ff(x)]))
    b.node_of[p] = x
    b._expanded.add(p)
    return x


def transformer_nodes(b, node, module, ins) -> str:
    """An ``nn.TransformerEncoderLayer`` or ``nn.TransformerEncoder`` (module doc)."""
    p = node.module
    x = ins[0]
    if isinstance(module, nn.TransformerEncoderLayer):
        return _layer(b, p, module, x)
    for i, layer in enumerate(module.layers):
        x = _layer(b, _j(p, f"layers.{i}"), layer, x)
    b.node_of[_j(p, "layers")] = x
    if module.norm is not None:
        x = _norm(b, _j(p, "norm"), module.norm, x)
    b.node_of[p] = x
    return x
