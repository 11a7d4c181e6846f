"""Translation rules that move between the conv layout and the token layout, and constants
(a ViT's patch embedding, class token, position embedding and class-token readout).

timm's ViT (Dosovitskiy et al. 2020, arXiv 2010.11929, Eq. 1) embeds patches with a
convolution, ``x.flatten(2).transpose(1, 2)`` turns the map (B, D, H, W) into tokens
(B, H·W, D), the class token (a parameter, ``expand``-ed over the batch) is concatenated in
front and a position embedding (a parameter) added; the head reads ``x[:, 0]``. In records:

* ``flatten(2)`` of a (C, *S) record is the engine's ``flatten_positions`` (C, P);
* ``transpose(1, 2)`` of a (C, P) record is the same record read as tokens (D = C, T = P),
  and back;
* a parameter (or its ``expand`` over the batch) read by a ``cat`` or an ``add`` is a
  ``constant`` node of the record's layout (deterministic: its q is its square, its mean
  itself, independent of every random quantity);
* ``x[:, i]`` of tokens is ``select_position`` (one token's q and mean exact).

Shape arithmetic (``B, C, H, W = x.shape``) has no tensor and needs no rule.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["CONSTANT", "TOKEN_KINDS", "constant_of", "token_node"]

#: what :func:`token_node` returns for a constant it keeps for its readers (no theory node)
CONSTANT = object()

#: the kinds :func:`token_node` may translate (others go to the general rules)
TOKEN_KINDS = frozenset({"flatten", "transpose", "expand", "cat", "add", "getitem"})


def constant_of(b, name: str) -> np.ndarray | None:
    """The per-sample value of captured node ``name`` when it is a parameter or buffer (or
    its ``expand`` over the batch), as float64; ``None`` otherwise."""
    if name in b.constants:
        return b.constants[name]
    node = b.cg.nodes.get(name)
    if node is None or node.kind != "param":
        return None
    value = b.cg.attribute(node.fx)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return None
    v = value.detach().to(torch.float64).cpu().numpy()
    return v[0] if v.ndim >= 2 and v.shape[0] == 1 else v  # (1, T, D): one sample


def _record_value(v: np.ndarray, layout: str) -> np.ndarray:
    """A per-sample torch value as a record: tokens (T, D) → (D, T), cf as it is."""
    return v.T.copy() if layout == "tok" and v.ndim == 2 else v


def _dims(a, names, defaults):
    args, kwargs = list(a.get("args", ())), a.get("kwargs", {})
    return [
        kwargs.get(n, args[i] if len(args) > i else d)
        for i, (n, d) in enumerate(zip(names, defaults))
    ]


def token_node(b, node, base: str, ins, lay: str, no_rule):
    """The theory node of ``node`` under this module's rules, or ``None`` when they do not
    apply (the general rules then decide); ``no_rule(reason)`` is the refusal to raise."""
    k, a = node.kind, node.attrs
    if k == "expand":
        value = constant_of(b, node.inputs[0]) if node.inputs else None
        if value is None or not node.batched:
            return None
        b.constants[node.name] = np.broadcast_to(value, node.shape).copy()
        return CONSTANT  # emitted where a tensor of the graph reads it
    if k in ("cat", "add"):
        consts = [constant_of(b, i) for i in node.inputs]
        if not any(c is not None for c in consts):
            return None
        live = [t for t in ins if t]
        if not live:
            raise no_rule("arithmetic of constants only")
        layout = b.layout[live[0]]
        parts = []
        for t, c, src in zip(ins, consts, node.inputs):
            if c is None:
                parts.append(t)
                continue
            rec = _record_value(c, layout)
            parts.append(b.emit(f"{base}.{src}", "constant", [], {"value": rec}, layout, rec.shape))
        if k == "add":
            if len(parts) != 2 or b.shape_of(parts[0]) != b.shape_of(parts[1]):
                raise no_rule("a sum with a constant of another shape")
            b._pending_shape = b.shape_of(live[0])
            return b.emit(base, "add", parts, layout=layout)
        (dim,) = _dims(a, ["dim"], [0])
        if layout != "tok" or int(dim) % 3 != 1:
            raise no_rule(f"concatenation with a constant along dim {dim} (only tokens)")
        shapes = [b.shape_of(p) for p in parts]
        b._pending_shape = (shapes[0][0], sum(s[1] for s in shapes))
        return b.emit(base, "cat", parts, {"axis": 0}, layout="tok")
    if not ins or not ins[0]:
        return None
    x, shape = ins[0], b.shape_of(ins[0])
    if k == "flatten" and node.module is None and lay == "cf" and len(shape) > 2:
        start, end = _dims(a, ["start_dim", "end_dim"], [0, -1])
        if start == 2 and end in (-1, len(shape)):
            b._pending_shape = (shape[0], int(np.prod(shape[1:])))
            return b.emit(base, "flatten_positions", [x], layout="cf")
        return None
    if k == "transpose" and len(shape) == 2:
        d0, d1 = sorted(int(d) % 3 for d in _dims(a, ["dim0", "dim1"], [None, None]))
        if (d0, d1) != (1, 2):
            raise no_rule(f"transpose({d0}, {d1}) of a (batch, ·, ·) tensor")
        b._pending_shape = shape  # the same record, read in the other layout
        return b.emit(base, "identity", [x], layout="cf" if lay == "tok" else "tok")
    if k == "getitem" and lay == "tok":
        (index,) = _dims(a, ["index"], [None])
        if (
            isinstance(index, tuple)
            and len(index) == 2
            and index[0] == slice(None)
            and isinstance(index[1], int)
        ):
            t = index[1] % shape[1]
            b._pending_shape = shape[:1]
            return b.emit(base, "select_position", [x], {"index": [t]}, layout="cf")
    return None
