"""Translate a captured torch graph into the theory's IR (``sigprop.theory.propagation``).

:func:`translate` walks a :class:`~sigprop.diagnostics.graph.capture.CapturedGraph` in
topological order and emits one or a few :class:`TheoryNode` per captured node, with the
layer's parameters *as they are* (squared effective weights, masks applied; see
:func:`weight_arrays`), BatchNorm in the mode of ``module.training``. Layouts: a torch
tensor (B, C, *S) is the record (C, *S) ("cf"); a token tensor (B, T, D) is (D, T) ("tok",
the input when it is 2-D per sample and no convolution reads it).

Whatever has no rule becomes an ``unmapped`` node carrying the module's name, type and the
reason; the engine then reports it and everything downstream unreachable — never a guess.

Two rewrites, both exact identities: a max-pool that reads a monotone activation's output is
computed as the activation of the max-pool of its input (φ∘maxpool = maxpool∘φ for
non-decreasing φ; the engine's max-pool rule assumes Gaussian input), and ``x.mean(spatial
dims)`` is an adaptive average pool to size 1 followed by a flatten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sigprop.diagnostics.graph.capture import CapturedGraph, GraphNode
from sigprop.diagnostics.graph.tokens import CONSTANT, TOKEN_KINDS, token_node
from sigprop.nn.kinds import is_dct_layer
from sigprop.theory.propagation import TheoryGraph, TheoryNode
from sigprop.theory.propagation.activation import resolve

__all__ = ["Translation", "translate", "weight_arrays", "WeightRef"]

#: activations that are non-decreasing (they commute with max-pooling)
_MONOTONE = ("relu", "relu6", "leaky_relu", "hardtanh", "clamp", "elu", "tanh", "sigmoid")


@dataclass(frozen=True)
class WeightRef:
    """Where a weight layer's gradient is: ``module`` (qualified name), the attribute the
    forward pass multiplies by (``attr``), its 0/1 ``mask`` (None: dense), the theory node
    and, for attention, the key of the engine's weight-gradient dict."""

    module: str
    attr: str
    mask: torch.Tensor | None
    node: str
    key: str | None = None


@dataclass(frozen=True)
class Translation:
    """A translated model.

    Fields
    ------
    graph: the :class:`TheoryGraph` (outputs: the model's outputs).
    node_of: module qualified name → theory node holding that module's output.
    layout: theory node → ``"cf"`` or ``"tok"`` (how the torch tensor maps to the record).
    unmapped: one dict per untranslated node: ``node``, ``module``, ``type``, ``reason``.
    blocks: module names whose output is a residual sum (or an elementwise map or norm of
        one), innermost first when several share an output, in forward order.
    weights: module name → :class:`WeightRef` for every weight layer (and attention part).
    block_parts: block name → the module names of the residual sum's inputs in argument
        order (branch and shortcut; ``None`` for a sum input no module produces, e.g. the
        identity shortcut of the block input read directly), for Brock et al.'s
        residual-branch variance.
    """

    graph: TheoryGraph
    node_of: dict
    layout: dict
    unmapped: tuple
    blocks: tuple
    weights: dict = field(default_factory=dict)
    block_parts: dict = field(default_factory=dict)

    def describe_unmapped(self) -> tuple[str, ...]:
        return tuple(
            f"{u['module'] or u['node']}: {u['type']} ({u['reason']})" for u in self.unmapped
        )


def _np(t) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def _square(w: torch.Tensor) -> np.ndarray:
    """w² as float64 numpy, with one allocation (VGG's first classifier layer has 10⁸)."""
    return w.detach().to(torch.float64, copy=True).cpu().square_().numpy()


def mask01(mask: torch.Tensor) -> np.ndarray:
    """A torch mask as a float64 0/1 numpy array (torch's bool-to-float cast: numpy's
    ``astype(float)`` of a bool array is five times slower)."""
    return (mask.detach() != 0).to(torch.float64).cpu().numpy()


def weight_arrays(module: nn.Module, attr: str = "weight"):
    """(effective weight, 0/1 mask or None, the attribute whose gradient is ∇W) of a layer.

    ``torch.nn.utils.prune``: ``<attr>_orig * <attr>_mask``; sigprop masked layers:
    ``weight * weight_mask``; DCT-plus-sparse layers: ``effective_weight()`` (α·D + S ⊙ M,
    Price & Tanner 2021, arXiv 2102.07655, §3) with the sparse part's mask.
    """
    mask = module._buffers.get(f"{attr}_mask")
    if attr == "weight" and is_dct_layer(module):
        return module.effective_weight().detach(), mask, attr
    orig = module._parameters.get(f"{attr}_orig")
    w = orig if orig is not None else getattr(module, attr)
    if mask is not None:
        w = w * mask
    return w.detach(), mask, attr


class _Builder:
    def __init__(self, cg: CapturedGraph):
        self.cg = cg
        self.modules = dict(cg.model.named_modules())
        self.nodes: list[TheoryNode] = []
        self.names: set[str] = set()
        self.tmap: dict[str, str | None] = {}  # captured node -> theory node
        self.layout: dict[str, str] = {}
        self.unmapped: list[dict] = []
        self.node_of: dict[str, str] = {}
        self.weights: dict[str, WeightRef] = {}
        self.tuple_out: set[str] = set()
        self._shapes: dict[str, tuple | None] = {}  # theory node -> record shape
        self._pending_shape: tuple | None = None  # record shape of the node being translated
        self._expanded: set[str] = set()  # containers expanded by the transformer rules
        self.constants: dict[str, np.ndarray] = {}  # expanded parameters (tokens.py)

    # -- emitting ------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}#{k}"
        return name

    def emit(self, base: str, op: str, inputs, params=None, layout=None, shape=None) -> str:
        name = self.fresh(base)
        self.nodes.append(TheoryNode(name, op, tuple(inputs), params or {}))
        self.names.add(name)
        self.layout[name] = layout or (self.layout[inputs[0]] if inputs else "cf")
        self._shapes[name] = self._pending_shape if shape is None else tuple(shape)
        return name

    def fail(self, base: str, inputs, module: str | None, typ: str, reason: str) -> str:
        self.unmapped.append({"node": base, "module": module, "type": typ, "reason": reason})
        return self.emit(base, "unmapped", inputs, {"reason": reason}, layout="cf")

    def op_of(self, tn: str) -> TheoryNode:
        return next(n for n in reversed(self.nodes) if n.name == tn)

    # -- helpers -------------------------------------------------------------------------
    def rank(self, tn: str) -> int:
        """Spatial/token dims of the record."""
        return len(self.shape_of(tn)) - 1

    def shape_of(self, tn: str) -> tuple:
        return self._shapes[tn]

    def weight(self, base, x, mname, m, conv: bool) -> str:
        w, mask, attr = weight_arrays(m)
        signed = _np(w)  # the quenched means (theory.propagation.dense)
        prm = {"w2": np.square(signed), "w": signed}
        if mask is not None:
            prm["mask"] = mask01(mask)
        if getattr(m, "bias", None) is not None:
            prm["b"] = _np(m.bias)
        if conv:
            if getattr(m, "padding_mode", "zeros") != "zeros":
                raise _NoRule(f"padding_mode {m.padding_mode!r} (only zero padding)")
            pad = m.padding
            if isinstance(pad, str):
                if pad == "valid":
                    pad = 0
                elif all(s == 1 for s in m.stride):
                    k = prm["w2"].shape[2:]
                    pad = [d * (kk - 1) // 2 for d, kk in zip(m.dilation, k)]
                    if any((d * (kk - 1)) % 2 for d, kk in zip(m.dilation, k)):
                        raise _NoRule("asymmetric 'same' padding")
                else:
                    raise _NoRule(f"padding {pad!r}")
            prm.update(
                stride=list(m.stride), padding=list(np.atleast_1d(pad)), dilation=list(m.dilation)
            )
            prm["groups"] = int(m.groups)
        tn = self.emit(base, "conv" if conv else "linear", [x], prm)
        self.weights[mname] = WeightRef(mname, attr, mask, tn)
        return tn


class _NoRule(Exception):
    pass


def _act_spec(spec: str) -> str:
    resolve(spec)  # raises for specs the engine cannot take
    return spec


def _int_list(v):
    return [int(a) for a in np.atleast_1d(v)]


def _window(m) -> dict:
    """A pooling module's window: kernel, stride (the kernel when None), padding, ceil mode."""
    return {
        "kernel": _int_list(m.kernel_size),
        "stride": _int_list(m.stride if m.stride is not None else m.kernel_size),
        "padding": _int_list(m.padding),
        "ceil_mode": bool(m.ceil_mode),
    }


def translate(cg: CapturedGraph) -> Translation:
    """The :class:`Translation` of ``cg`` (module doc)."""
    from sigprop.diagnostics.graph.blocks import residual_blocks
    from sigprop.diagnostics.graph.transformer import attention_node, transformer_nodes

    b = _Builder(cg)
    inp = cg.nodes[cg.inputs[0]]
    readers = [n for n in cg.nodes.values() if inp.name in n.inputs]
    tok_input = len(inp.shape) == 2 and not any(
        n.kind in ("conv", "dct_conv", "batchnorm", "maxpool", "avgpool") for n in readers
    )
    outputs = []
    for node in cg.nodes.values():
        shape = node.shape
        if node.kind == "input":
            b._pending_shape = tuple(reversed(shape)) if tok_input else tuple(shape)
            b.tmap[node.name] = b.emit(
                "input",
                "input",
                [],
                {"shape": list(b._pending_shape)},
                "tok" if tok_input else "cf",
            )
            continue
        if node.kind == "output":
            outputs.extend(b.tmap[i] for i in node.inputs if b.tmap.get(i))
            continue
        if node.kind in ("meta", "param", "constant") or (
            node.shape is None and not any(b.tmap.get(i) for i in node.inputs)
        ):  # no tensor of the graph: parameters, shape arithmetic (B, C, H, W = x.shape)
            b.tmap[node.name] = None
            continue
        ins = [b.tmap.get(i) for i in node.inputs]
        # tensors of the same layout as the first input (canonical shape)
        lay = b.layout.get(ins[0], "cf") if ins and ins[0] else "cf"
        if shape is not None and node.batched:
            b._pending_shape = tuple(reversed(shape)) if lay == "tok" and len(shape) == 2 else shape
        else:
            b._pending_shape = None
        base = node.module if node.module is not None else node.name
        module = b.modules.get(node.module) if node.module is not None else None
        typ = type(module).__name__ if module is not None else str(node.attrs.get("target"))
        try:
            if node.kind in ("transformer_layer", "transformer_encoder"):
                tn = transformer_nodes(b, node, module, _valid(ins, node))
            elif node.kind == "attention":
                tn = attention_node(b, node, module, ins)
            else:
                tn = _one(b, node, module, base, ins, lay)
        except _NoRule as exc:
            live = [i for i in ins if i]
            tn = b.fail(base, live, node.module, typ, str(exc))
        b.tmap[node.name] = None if tn is CONSTANT else tn
    for mname, cnode in cg.module_outputs.items():
        tn = b.tmap.get(cnode)
        if tn is not None and mname not in b.node_of:
            b.node_of[mname] = tn
    blocks, parts = residual_blocks(b, cg)
    graph = TheoryGraph(tuple(b.nodes), outputs=tuple(dict.fromkeys(outputs)) or None)
    return Translation(
        graph=graph,
        node_of=b.node_of,
        layout=b.layout,
        unmapped=tuple(b.unmapped),
        blocks=blocks,
        block_parts=parts,
        weights=b.weights,
    )


def _valid(ins, node: GraphNode):
    if not ins or any(i is None for i in ins):
        raise _NoRule(f"reads a value that is not a tensor of the graph ({node.inputs})")
    return ins


def _one(b: _Builder, node: GraphNode, m, base: str, ins, lay: str) -> str:
    """One captured node → theory node(s); raises _NoRule for anything without a rule."""
    k, a = node.kind, node.attrs
    if k in TOKEN_KINDS:
        tn = token_node(b, node, base, ins, lay, _NoRule)
        if tn is not None:
            return tn
    if k in ("linear", "conv", "dct_linear", "dct_conv"):
        (x,) = _valid(ins, node)[:1]
        conv = k in ("conv", "dct_conv")
        if not conv and b.rank(x) > 0 and lay == "cf":
            raise _NoRule("a linear layer on the last axis of a spatial map")
        if conv and lay != "cf":
            raise _NoRule("a convolution over tokens")
        return b.weight(base, x, node.module, m, conv)
    if k == "getitem":
        src = node.inputs[0] if node.inputs else None
        index = a["args"][0] if a.get("args") else None
        if src in b.tuple_out and index == 0:
            return b.tmap[src]
        raise _NoRule(f"indexing {index!r}")
    x = _valid(ins, node)[0]
    if k == "act":
        try:
            spec = _act_spec(a["spec"])
        except Exception as exc:  # noqa: BLE001 - any refusal of the engine
            raise _NoRule(f"activation {a['spec']!r} has no moment rule ({exc})") from None
        return b.emit(base, "elementwise", [x], {"activation": spec})
    if k == "identity":
        return b.emit(base, "identity", [x])
    if k == "dropout":
        if m is None:
            p = a["kwargs"].get("p", a["args"][0] if a["args"] else 0.5)
            training = a["kwargs"].get("training", a["args"][1] if len(a["args"]) > 1 else True)
        else:
            p, training = float(m.p), bool(m.training)
            if type(m) is not nn.Dropout and training:
                raise _NoRule(f"{type(m).__name__} in train mode has no rule")
        return b.emit(base, "dropout", [x], {"p": float(p), "training": bool(training)})
    if k == "batchnorm":
        if m is None:
            raise _NoRule("functional batch_norm")
        if lay != "cf":
            raise _NoRule("BatchNorm over tokens")
        training = bool(m.training or m.running_mean is None)
        prm = {"training": training, "eps": float(m.eps)}
        if m.weight is not None:
            prm.update(gamma=_np(m.weight), beta=_np(m.bias))
        if not training:
            prm.update(running_mean=_np(m.running_mean), running_var=_np(m.running_var))
        return b.emit(base, "batchnorm", [x], prm)
    if k == "layernorm":
        if m is None:
            raise _NoRule("functional layer_norm")
        c = b.shape_of(x)[0]
        if tuple(m.normalized_shape) != (c,) or (lay == "cf" and b.rank(x) > 0):
            raise _NoRule(f"LayerNorm over {tuple(m.normalized_shape)} is not the channel axis")
        prm = {"eps": float(m.eps)}
        if m.weight is not None:
            prm["gamma"] = _np(m.weight)
        if getattr(m, "bias", None) is not None:
            prm["beta"] = _np(m.bias)
        return b.emit(base, "layernorm", [x], prm)
    if k == "groupnorm":
        if m is None or lay != "cf":
            raise _NoRule("functional group_norm or GroupNorm over tokens")
        prm = {"groups": int(m.num_groups), "eps": float(m.eps)}
        if m.weight is not None:
            prm.update(gamma=_np(m.weight), beta=_np(m.bias))
        return b.emit(base, "groupnorm", [x], prm)
    if k == "maxpool":
        if m is None or getattr(m, "return_indices", False) or lay != "cf":
            raise _NoRule("functional max-pool or one returning indices")
        prm = {**_window(m), "dilation": _int_list(m.dilation)}
        src = b.op_of(x)
        spec = src.params.get("activation") if src.op == "elementwise" else None
        if isinstance(spec, str) and spec.split(":")[0] in _MONOTONE:
            pooled = b.emit(base + ".pre", "max_pool", [src.inputs[0]], prm)
            return b.emit(base, "elementwise", [pooled], {"activation": spec})
        return b.emit(base, "max_pool", [x], prm)
    if k == "avgpool":
        if m is None or getattr(m, "divisor_override", None) or lay != "cf":
            raise _NoRule("functional average pool or divisor_override")
        prm = {**_window(m), "count_include_pad": bool(m.count_include_pad)}
        return b.emit(base, "avg_pool", [x], prm)
    if k == "adaptive_avgpool":
        size = m.output_size if m is not None else a["kwargs"].get("output_size", a["args"][0])
        size = [None if s is None else int(s) for s in np.atleast_1d(np.array(size, dtype=object))]
        if len(size) == 1:  # torch: one int is the size of every spatial dim
            size = size * b.rank(x)
        return b.emit(base, "adaptive_avg_pool", [x], {"output_size": size})
    if k == "mean":
        dims = a["kwargs"].get("dim", a["args"][0] if a["args"] else None)
        keep = a["kwargs"].get("keepdim", a["args"][1] if len(a["args"]) > 1 else False)
        nd = b.rank(x) + 2  # torch dims of the batched tensor
        if dims is None:
            raise _NoRule("mean over every dim (the batch included)")
        dims = {int(d) % nd for d in np.atleast_1d(dims)}
        spatial = set(range(2, nd)) if lay == "cf" else {1}
        if lay == "tok" and nd != 3 or dims != spatial or not dims:
            raise _NoRule(f"mean over dims {sorted(dims)} is not over all positions")
        b._pending_shape = b.shape_of(x)[:1] + (1,) * b.rank(x)
        pooled = b.emit(base + ".pool", "adaptive_avg_pool", [x], {"output_size": [1] * b.rank(x)})
        if keep and lay == "cf":
            return pooled
        b._pending_shape = b.shape_of(x)[:1]
        return b.emit(base, "flatten", [pooled], layout="cf")
    if k in ("flatten", "reshape"):
        return _reshape(b, node, m, base, x, lay)
    if k == "add":
        ins = _valid(ins, node)
        if len(ins) != 2 or b.shape_of(ins[0]) != b.shape_of(ins[1]):
            raise _NoRule("a sum of tensors of different shapes, or with a constant")
        scales = [1.0, -1.0] if a.get("subtract") else None
        return b.emit(base, "add", ins, {"scales": scales} if scales else {})
    if k == "mul":
        ins = _valid(ins, node)
        if len(ins) != 2:
            raise _NoRule("a product with a parameter or constant")
        return b.emit(base, "mul", ins)
    if k == "scale":
        fx = node.fx
        nums = [v for v in fx.args[:2] if isinstance(v, (int, float))]
        if len(ins) != 1 or len(nums) != 1:
            raise _NoRule("a scale by a tensor parameter")
        factor = 1.0 / nums[0] if a.get("divide") else float(nums[0])
        return b.emit(base, "scale", [x], {"factor": factor})
    if k == "cat":
        ins = _valid(ins, node)
        dim = a["kwargs"].get("dim", a["args"][0] if a["args"] else 0)
        if lay != "cf" or int(dim) % (b.rank(x) + 2) != 1:
            raise _NoRule(f"concatenation along dim {dim} (only the channel axis)")
        return b.emit(base, "cat", ins, {"axis": "channel"})
    if k == "unmapped":
        raise _NoRule(a.get("reason", "no rule"))
    raise _NoRule(f"operation {a.get('target', node.kind)!r} ({node.kind}) has no rule")


def _reshape(b: _Builder, node: GraphNode, m, base: str, x: str, lay: str) -> str:
    shape_in = b.shape_of(x)
    out = tuple(node.shape or ())
    if node.kind == "flatten":
        a = node.attrs
        if m is not None:
            start, end = m.start_dim, m.end_dim
        else:
            args = list(a["args"])
            start = a["kwargs"].get("start_dim", args[0] if args else 0)
            end = a["kwargs"].get("end_dim", args[1] if len(args) > 1 else -1)
        if start != 1 or end != -1:
            raise _NoRule(f"flatten({start}, {end}) (only flatten(1))")
    elif len(out) != 1 or out[0] != int(np.prod(shape_in)):
        if out == tuple(node.shape) and lay == "cf" and out == shape_in:
            return b.emit(base, "identity", [x])
        raise _NoRule(f"reshape to {out} is not a flatten")
    if lay == "tok":
        raise _NoRule("flattening tokens")
    if len(shape_in) == 1:
        return b.emit(base, "identity", [x])
    return b.emit(base, "flatten", [x], layout="cf")
