"""Exact weight-level effective sparsity through self-attention (the attention leaves of the
capture: ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder``
and timm's ``Attention``), in the boolean semantics of :mod:`.exact`.

One head of self-attention computes ``out_t = Σ_s a_ts v_s`` with ``a_t = softmax(q_t·k_s /
√d)`` over the keys ``s`` row ``t`` may attend to. On 0/1 reachability values:

* **values**: ``out_t[f]`` is reached iff ``v_s[f]`` is reached for some allowed ``s`` (the
  attention weights are positive); the way out of ``v_s[f]`` is that of any row attending to
  ``s``;
* **scores**: ``q_t·k_s`` depends on the input iff some feature ``j`` of the head is reached
  in both ``q_t`` and ``k_s`` (a product: with biases creating no paths an unreached factor
  is exactly zero); a score changes ``out_t`` through ``a_ts (v_s − out_t)``, which vanishes
  when the values of the allowed keys do not depend on the input (then ``out_t`` is a
  constant) or when row ``t`` attends to one key only (its softmax is 1). So the query and
  key weights are effective only where the head's values are reached and the row attends
  to at least two keys.

Hence ``out_t[f] = [V_t[f] · (1 + S_t)]`` with ``V_t[f] = [Σ_s allowed_ts v_s[f]]`` and
``S_t = [Σ_s allowed_ts [q_t · k_s]]·[row t attends to ≥ 2 keys]`` (``[·]`` the binarisation
of :mod:`.exact`, forward and backward), per head; the product rule of autograd gives each
factor the way out of the other. Masks: ``attn_mask``/``src_mask`` (boolean, ``True`` =
not allowed, or additive with ``-inf``), ``is_causal`` without a mask (lower triangular),
each a constant of the model (a buffer, a default); a mask computed in ``forward`` from the
input, a key-padding mask, ``bias_k``/``add_zero_attn`` and separate q/k/v projections are
outside this vocabulary. LayerNorm mixes the features of a token, feed-forward layers are
weight layers, the activation and dropout unit-wise identities, the residual adds ORs; the
weight layers are named as :func:`~.from_fx.module_weight_layers` names them
(``<mha>.in_proj``, ``<mha>.out_proj``, timm's ``<attn>.qkv``/``<attn>.proj``, the encoder
layer's ``linear1``/``linear2``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sigprop.diagnostics.collapse.exact import binarise, norm_mix, path_or, scale_cut
from sigprop.diagnostics.collapse.ops import Unmappable

__all__ = ["ATTENTION_KINDS", "attention_value"]

#: The capture's kinds handled here.
ATTENTION_KINDS = frozenset({"attention", "transformer_layer", "transformer_encoder"})


def _j(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def attention_value(node, module: nn.Module, fx, load, constant, kept_of) -> Any:
    """The 0/1 value of an attention leaf ``node`` (module doc). ``load`` maps a graph
    argument to its 0/1 value, ``constant`` to its real value (a buffer or a default; it
    raises :class:`Unmappable` for a value computed from the input), ``kept_of(name, module,
    param)`` gives a weight layer's 0/1 leaf."""
    bound = inspect.signature(module.forward).bind(*fx.args, **fx.kwargs)
    arg = bound.arguments
    if node.kind == "attention":
        if isinstance(module, nn.MultiheadAttention):
            if not (arg["query"] is arg.get("key") is arg.get("value")):
                raise Unmappable(f"{node.module}: attention whose query, key and value differ")
            if constant(arg.get("key_padding_mask")) is not None:
                raise Unmappable(f"{node.module}: a key padding mask")
            x = load(arg["query"])
            mask = constant(arg.get("attn_mask"))
            out = _mha(node.module, module, x, mask, bool(constant(arg.get("is_causal"))), kept_of)
            return out, None  # (output, attention weights): the weights carry no path here
        if constant(arg.get("attn_mask")) is not None:  # timm's Attention(x, attn_mask=None)
            raise Unmappable(f"{node.module}: timm attention with a mask")
        return _timm(node.module, module, load(arg["x"]), kept_of)
    if constant(arg.get("src_key_padding_mask")) is not None:
        raise Unmappable(f"{node.module}: a key padding mask")
    x = load(arg["src"])
    causal = bool(constant(arg.get("is_causal")))
    if node.kind == "transformer_layer":
        return _encoder_layer(
            node.module, module, x, constant(arg.get("src_mask")), causal, kept_of
        )
    mask = constant(arg.get("mask"))
    for i, layer in enumerate(module.layers):
        x = _encoder_layer(_j(node.module, f"layers.{i}"), layer, x, mask, causal, kept_of)
    return _norm(x, module.norm) if module.norm is not None else x


def allowed_keys(mask: Any, causal: bool, t: int, dtype: torch.dtype) -> torch.Tensor:
    """``(T, T)`` 0/1: may query ``t`` attend to key ``s`` (``mask`` boolean with ``True``
    not allowed, or additive with ``-inf`` not allowed; ``None``: all, or the lower triangle
    when ``causal``)."""
    if mask is None:
        allowed = torch.ones(t, t, dtype=torch.bool)
        return (allowed.tril() if causal else allowed).to(dtype)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (t, t):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise Unmappable(f"an attention mask of shape {shape} (other than ({t}, {t}))")
    allowed = ~mask if mask.dtype == torch.bool else ~torch.isneginf(mask)
    return allowed.to(dtype)


def attend(qkv: torch.Tensor, heads: int, allowed: torch.Tensor):
    """The head mixing of packed 0/1 ``qkv`` (B, T, 3E) into (B, T, E) (module doc)."""
    b, t, e3 = qkv.shape
    e = e3 // 3
    if heads < 1 or e % heads:
        raise Unmappable(f"embedding {e} not divisible into {heads} heads")
    q, k, v = (z.reshape(b, t, heads, e // heads).transpose(1, 2) for z in qkv.split(e, -1))
    scores = binarise(q @ k.transpose(-1, -2))  # (B, H, T, T): depends on the input
    several = (allowed.sum(-1) >= 2).to(qkv.dtype)  # a softmax over one key is constant
    s_row = binarise((scores * allowed).sum(-1)) * several  # (B, H, T)
    v_row = binarise(allowed @ v)  # (B, H, T, d)
    out = binarise(v_row * (1.0 + s_row[..., None]))
    return out.transpose(1, 2).reshape(b, t, e)


def _project(x, name: str, module: nn.Module, kept_of, param: str = "weight"):
    return binarise(F.linear(x, kept_of(name, module, param)))


def _mha(name: str, m: nn.MultiheadAttention, x, mask, causal: bool, kept_of):
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise Unmappable(f"{name}: MultiheadAttention with separate q/k/v, bias_k or zero attn")
    tokens = x if m.batch_first else x.transpose(0, 1)
    qkv = _project(tokens, _j(name, "in_proj"), m, kept_of, "in_proj_weight")
    heads = attend(qkv, m.num_heads, allowed_keys(mask, causal, tokens.shape[1], x.dtype))
    out = _project(heads, _j(name, "out_proj"), m.out_proj, kept_of)
    return out if m.batch_first else out.transpose(0, 1)


def _timm(name: str, m: nn.Module, x, kept_of):
    for sub in ("q_norm", "k_norm", "norm"):
        if not isinstance(getattr(m, sub, nn.Identity()), nn.Identity):
            raise Unmappable(f"{name}: timm attention with a {sub} that is not Identity")
    qkv = _project(x, _j(name, "qkv"), m.qkv, kept_of)
    heads = attend(qkv, int(m.num_heads), allowed_keys(None, False, x.shape[1], x.dtype))
    return _project(heads, _j(name, "proj"), m.proj, kept_of)


def _norm(x, norm: nn.Module):
    if not isinstance(norm, nn.LayerNorm):
        raise Unmappable(f"a {type(norm).__name__} in a transformer layer")
    return scale_cut(norm_mix(x, len(norm.normalized_shape)), norm.weight, -1)


def _encoder_layer(name: str, m: nn.TransformerEncoderLayer, x, mask, causal: bool, kept_of):
    def attn(h):
        return _mha(_j(name, "self_attn"), m.self_attn, h, mask, causal, kept_of)

    def ff(h):  # the activation and dropout are unit-wise identities
        h = _project(h, _j(name, "linear1"), m.linear1, kept_of)
        return _project(h, _j(name, "linear2"), m.linear2, kept_of)

    if m.norm_first:
        x = path_or([x, attn(_norm(x, m.norm1))])
        return path_or([x, ff(_norm(x, m.norm2))])
    x = _norm(path_or([x, attn(x)]), m.norm1)
    return _norm(path_or([x, ff(x)]), m.norm2)
