"""Capture the computation graph of any torch model: the one tracer of the package.

:func:`capture` traces a model with ``torch.fx`` and classifies every node into a small,
closed vocabulary of *kinds* (:data:`KINDS`). Everything that reads a model's structure —
``describe``/``predict`` (mean-field propagation through the graph), ``measure`` (hooks at
the same module names), ``check_collapse`` (reachability, effective sparsity) — starts from
the :class:`CapturedGraph` it returns, so "what is this node?" is answered once.

Tracing policy
--------------
* Leaves: every ``torch.nn`` module (fx's default), every weight layer
  (:func:`sigprop.nn.kinds.is_weight_layer`: masked, ``torch.nn.utils.prune``d and
  DCT-plus-sparse layers, wherever they are defined), sigprop's activation modules, and the
  attention modules whose ``forward`` branches on tensor properties and cannot be traced
  symbolically (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``,
  ``nn.TransformerEncoder``, timm's ``Attention``); each becomes one node whose kind names
  its computation.
* Containers (``nn.Sequential``, a ResNet's ``BasicBlock``, ...) are traced through; the
  node that produces a container's output is recorded in
  :attr:`CapturedGraph.module_outputs`, so every module's qualified name (as in
  ``model.named_modules()``) maps to the node whose value is that module's output.
* Arguments of ``forward`` after the first that have defaults are traced at their default
  (``concrete_args``): an optional mask defaulting to ``None`` stays ``None``.
* Per-sample shapes come from running the traced graph once on the ``meta`` device (no
  arithmetic) at batch size 2, or, where a module has no meta implementation, on the CPU.

Anything the vocabulary does not cover gets kind ``"unmapped"`` with the reason in its
``attrs["reason"]``; consumers report such nodes by name and never guess.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import nn

from sigprop.nn.activation import theory_spec
from sigprop.nn.kinds import is_weight_layer, layer_kind
from sigprop.validate import InvalidInput

__all__ = ["KINDS", "CapturedGraph", "GraphNode", "capture", "is_attention_leaf"]

#: The closed vocabulary of node kinds.
KINDS = (
    # sources and sinks
    "input", "output", "param", "constant",
    # weight layers (sigprop.nn.kinds.WEIGHT_KINDS)
    "linear", "conv", "dct_linear", "dct_conv",
    # elementwise
    "act", "dropout", "identity", "scale",
    # normalisation
    "batchnorm", "layernorm", "groupnorm",
    # pooling and reductions
    "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "mean",
    # combination of tensors
    "add", "mul", "cat", "matmul",
    # layout: same values, other shape
    "flatten", "reshape", "permute", "transpose", "expand", "select", "split", "getitem",
    # attention
    "attention", "sdpa", "softmax", "transformer_layer", "transformer_encoder",
    # not a tensor computation (shape queries, asserts)
    "meta",
    "unmapped",
)  # fmt: skip

_ATTENTION_LEAVES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder)
#: Class names of third-party attention modules kept as leaves (timm's ``Attention``, whose
#: forward branches on ``fused_attn``; its ``qkv`` and ``proj`` are Linear children).
_ATTENTION_CLASS_NAMES = {"Attention"}

_POOL_MODULES = {
    nn.MaxPool1d: "maxpool", nn.MaxPool2d: "maxpool", nn.MaxPool3d: "maxpool",
    nn.AvgPool1d: "avgpool", nn.AvgPool2d: "avgpool", nn.AvgPool3d: "avgpool",
    nn.AdaptiveAvgPool1d: "adaptive_avgpool", nn.AdaptiveAvgPool2d: "adaptive_avgpool",
    nn.AdaptiveAvgPool3d: "adaptive_avgpool",
    nn.AdaptiveMaxPool1d: "adaptive_maxpool", nn.AdaptiveMaxPool2d: "adaptive_maxpool",
    nn.AdaptiveMaxPool3d: "adaptive_maxpool",
}  # fmt: skip
_NORM_MODULES = {
    nn.BatchNorm1d: "batchnorm", nn.BatchNorm2d: "batchnorm", nn.BatchNorm3d: "batchnorm",
    nn.SyncBatchNorm: "batchnorm", nn.LayerNorm: "layernorm", nn.GroupNorm: "groupnorm",
}  # fmt: skip
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)

#: torch.nn classes with a rule of their own: their subclasses elsewhere (timm's LayerNorm)
#: stay leaves too.
_RULE_MODULES = (*_NORM_MODULES, *_POOL_MODULES, *_DROPOUT_MODULES, nn.Identity, nn.Flatten)

# functions and methods, by name (torch, torch.nn.functional, operator, Tensor methods)
_FUNCTION_KINDS = {
    "add": "add", "iadd": "add", "sub": "add", "isub": "add",
    "mul": "mul", "imul": "mul", "truediv": "scale", "div": "scale",
    "cat": "cat", "concat": "cat", "concatenate": "cat",
    "matmul": "matmul", "bmm": "matmul", "mm": "matmul",
    "flatten": "flatten", "reshape": "reshape", "view": "reshape", "contiguous": "identity",
    "squeeze": "reshape", "unsqueeze": "reshape",
    "permute": "permute", "transpose": "transpose",
    "expand": "expand", "expand_as": "expand",
    "getitem": "getitem", "unbind": "split", "chunk": "split", "split": "split",
    "mean": "mean", "softmax": "softmax",
    "scaled_dot_product_attention": "sdpa",
    "adaptive_avg_pool1d": "adaptive_avgpool", "adaptive_avg_pool2d": "adaptive_avgpool",
    "adaptive_max_pool2d": "adaptive_maxpool",
    "max_pool2d": "maxpool", "avg_pool2d": "avgpool",
    "layer_norm": "layernorm", "batch_norm": "batchnorm", "group_norm": "groupnorm",
    "dropout": "dropout",
    "size": "meta", "dim": "meta", "getattr": "meta", "_assert": "meta", "eq": "meta",
    "ne": "meta", "numel": "meta", "_assert_is_none": "meta",
}  # fmt: skip
_FUNCTION_ACTIVATIONS = {
    "relu": "relu", "relu_": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "gelu": "gelu",
    "silu": "silu", "elu": "elu", "leaky_relu": "leaky_relu", "softplus": "softplus",
}  # fmt: skip


@dataclass
class GraphNode:
    """One node of a captured graph.

    Fields
    ------
    name: the fx node's name (unique in the graph).
    kind: one of :data:`KINDS`.
    inputs: names of the tensor-valued nodes it reads, in argument order.
    module: qualified module name (as in ``model.named_modules()``) for module calls,
        the parameter/buffer name for ``param`` nodes, else ``None``.
    shape: per-sample shape of the output (batch dimension removed) where the output is a
        batched tensor, the full shape for unbatched tensors (``batched`` False), ``None``
        for non-tensors.
    batched: whether the output's first dimension is the batch.
    attrs: kind-specific facts (``act``: ``spec``; ``unmapped``: ``reason``; functions:
        ``target`` name, ``args``/``kwargs`` with non-tensor values).
    fx: the underlying ``torch.fx.Node``.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    module: str | None
    shape: tuple[int, ...] | None
    batched: bool
    attrs: dict[str, Any] = field(default_factory=dict)
    fx: Any = None


@dataclass
class CapturedGraph:
    """A traced model: nodes in topological order and where each module's output is.

    Fields
    ------
    model: the traced model (not copied).
    graph_module: the ``torch.fx.GraphModule`` (shares the model's parameters).
    nodes: name → :class:`GraphNode`, in topological order.
    inputs / outputs: names of the input placeholders and of the nodes the model returns.
    module_outputs: qualified module name → name of the node holding that module's output
        (leaves and traced containers alike; the root module is ``""``).
    input_shape: per-sample shape of the (first) input.
    """

    model: nn.Module
    graph_module: torch.fx.GraphModule
    nodes: dict[str, GraphNode]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    module_outputs: dict[str, str]
    input_shape: tuple[int, ...]

    @property
    def unmapped(self) -> list[GraphNode]:
        """Nodes of kind ``"unmapped"``, in order."""
        return [n for n in self.nodes.values() if n.kind == "unmapped"]

    def weight_nodes(self) -> list[GraphNode]:
        """Nodes that call a weight layer, in topological order."""
        return [
            n for n in self.nodes.values() if n.kind in ("linear", "conv", "dct_linear", "dct_conv")
        ]

    def attribute(self, fx_node: Any) -> Any:
        """The parameter, buffer or constant a ``get_attr`` node (kind ``"param"``) names."""
        value = self.graph_module
        for part in str(fx_node.target).split("."):
            value = getattr(value, part)
        return value

    def consumers(self) -> dict[str, list[str]]:
        """Node name → names of the nodes that read it."""
        out: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for src in node.inputs:
                out[src].append(node.name)
        return out


def _is_attention_leaf(m: nn.Module) -> bool:
    return isinstance(m, _ATTENTION_LEAVES) or (
        type(m).__name__ in _ATTENTION_CLASS_NAMES
        and isinstance(getattr(m, "qkv", None), nn.Linear)
        and isinstance(getattr(m, "proj", None), nn.Linear)
    )


def is_attention_leaf(m: nn.Module) -> bool:
    """True for the attention modules the tracer keeps as leaves (``nn.MultiheadAttention``,
    ``nn.TransformerEncoder(Layer)``, timm's ``Attention``)."""
    return _is_attention_leaf(m)


def _is_leaf(m: nn.Module) -> bool:
    if is_weight_layer(m) or _is_attention_leaf(m) or isinstance(m, _RULE_MODULES):
        return True
    return theory_spec(m) is not None and not any(True for _ in m.children())


class _Root(nn.Module):
    """Holds a model that is itself a leaf (a bare ``nn.TransformerEncoder``), so that it is
    traced as one module call; its name prefix is removed again."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


class _Tracer(torch.fx.Tracer):
    """fx tracer with sigprop's leaf policy that records where every module's output is."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module_outputs: dict[str, torch.fx.Node] = {}
        # decided before tracing: reading a module's parameters while tracing records them
        self.leaves = {id(m) for m in model.modules() if _is_leaf(m)}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if id(m) in self.leaves:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        if isinstance(out, torch.fx.Proxy):
            self.module_outputs[self.path_of_module(m)] = out.node
        return out


def _concrete_defaults(model: nn.Module) -> dict[str, Any]:
    """Arguments of ``forward`` after the first, fixed at their defaults."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    out = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not inspect.Parameter.empty:
            out[p.name] = p.default
    return out


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", type(target).__name__)


def _tensor_inputs(node: torch.fx.Node) -> tuple[str, ...]:
    names: list[str] = []

    def visit(a):
        if isinstance(a, torch.fx.Node):
            names.append(a.name)
        return a

    torch.fx.node.map_aggregate((node.args, node.kwargs), visit)
    return tuple(names)


def _plain(value: Any) -> Any:
    """Non-tensor arguments as plain data (nodes by name)."""
    return torch.fx.node.map_aggregate(
        value, lambda a: ("node", a.name) if isinstance(a, torch.fx.Node) else a
    )


def _classify_module(name: str, m: nn.Module) -> tuple[str, dict]:
    kind = layer_kind(m)
    if kind is not None:
        return kind, {}
    if _is_attention_leaf(m):
        if isinstance(m, nn.TransformerEncoder):
            return "transformer_encoder", {}
        if isinstance(m, nn.TransformerEncoderLayer):
            return "transformer_layer", {}
        return "attention", {}
    for cls, k in _NORM_MODULES.items():
        if isinstance(m, cls):
            return k, {}
    for cls, k in _POOL_MODULES.items():
        if isinstance(m, cls):
            return k, {}
    if isinstance(m, _DROPOUT_MODULES):
        return "dropout", {"p": float(m.p)}
    if isinstance(m, nn.Identity):
        return "identity", {}
    if isinstance(m, nn.Flatten):
        return "flatten", {"start_dim": m.start_dim, "end_dim": m.end_dim}
    spec = theory_spec(m)
    if spec is not None:
        return "act", {"spec": spec}
    reason = f"module {name!r} of type {type(m).__name__} has no rule"
    if not any(True for _ in m.children()) and type(m).__module__.startswith("torch.nn"):
        reason = f"activation or layer {type(m).__name__} at {name!r} is not in sigprop's registry"
    return "unmapped", {"reason": reason, "type": type(m).__name__}


def _classify_function(node: torch.fx.Node) -> tuple[str, dict]:
    name = _target_name(node.target)
    attrs = {"target": name, "args": _plain(node.args[1:]), "kwargs": _plain(dict(node.kwargs))}
    if name in _FUNCTION_ACTIVATIONS:
        spec = _FUNCTION_ACTIVATIONS[name]
        if spec == "leaky_relu":
            slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
            spec = f"leaky_relu:{float(slope)!r}"
        if spec == "gelu" and node.kwargs.get("approximate", "none") != "none":
            return "unmapped", {**attrs, "reason": "tanh-approximated GELU has no rule"}
        return "act", {**attrs, "spec": spec}
    kind = _FUNCTION_KINDS.get(name)
    if kind is None:
        return "unmapped", {**attrs, "reason": f"operation {name!r} has no rule"}
    if kind in ("add", "mul", "scale"):
        tensors = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        if len(tensors) == 1 and kind != "add":
            kind = "scale"  # tensor times (or divided by) a number
        elif len(tensors) == 1:
            kind = "add"  # tensor plus a number: a shift, recorded with its constant
        attrs["subtract"] = name in ("sub", "isub")
        attrs["divide"] = name in ("truediv", "div")
    return kind, attrs


def capture(
    model: nn.Module, example_input: Any = None, *, input_shape=None, run: bool = True
) -> CapturedGraph:
    """Trace ``model`` and classify its nodes (module doc).

    ``example_input`` (a tensor of shape (B, *sample_shape); only its shape and dtype are
    used) or ``input_shape`` (the per-sample shape) fixes the shapes. ``run=False`` only
    traces and classifies: no shape run, every node's ``shape`` is ``None`` and neither
    input is needed (for consumers that read structure alone, such as channel-level
    connectivity). Raises ``InvalidInput`` when torch.fx cannot trace the model.
    """
    if not isinstance(model, nn.Module):
        raise InvalidInput(f"capture needs a torch.nn.Module, got {type(model).__name__}")
    if example_input is None and input_shape is None and run:
        raise InvalidInput("capture needs example_input or input_shape")
    if example_input is None and input_shape is None:
        sample_shape, dtype = (), torch.float32
    elif example_input is not None:
        if not isinstance(example_input, torch.Tensor) or example_input.ndim < 1:
            raise InvalidInput("example_input must be a tensor of shape (batch, *sample_shape)")
        sample_shape = tuple(int(s) for s in example_input.shape[1:])
        dtype = example_input.dtype
    else:
        sample_shape = tuple(int(s) for s in input_shape)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    root, prefix = model, ""
    if _is_leaf(model) or isinstance(model, (nn.Linear, nn.Conv2d)):
        root, prefix = _Root(model), "model."
    tracer = _Tracer(root)
    try:
        graph = tracer.trace(root, concrete_args=_concrete_defaults(root) or None)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "not traceable"
        raise InvalidInput(
            f"torch.fx could not trace the model ({type(exc).__name__}: {_one_line(exc)})"
        ) from None
    gm = torch.fx.GraphModule(tracer.root, graph)
    shapes = _shapes(gm, sample_shape, dtype) if run else {}
    modules = dict(root.named_modules())

    def unprefix(name: str) -> str:
        if prefix and name == prefix[:-1]:
            return ""
        return name[len(prefix) :] if prefix and name.startswith(prefix) else name

    nodes: dict[str, GraphNode] = {}
    inputs, outputs = [], []
    for fx_node in graph.nodes:
        shape, batched = shapes.get(fx_node.name, (None, False))
        module = None
        if fx_node.op == "placeholder" and not inputs:
            kind, attrs = "input", {}
            inputs.append(fx_node.name)
        elif fx_node.op == "placeholder":  # a forward argument fixed at its default
            kind, attrs = "constant", {"value": _plain(fx_node.args[0] if fx_node.args else None)}
        elif fx_node.op == "output":
            kind, attrs = "output", {}
            outputs.extend(_tensor_inputs(fx_node))
        elif fx_node.op == "get_attr":
            kind, attrs, module = "param", {}, unprefix(str(fx_node.target))
        elif fx_node.op == "call_module":
            kind, attrs = _classify_module(str(fx_node.target), modules[str(fx_node.target)])
            module = unprefix(str(fx_node.target))
        else:
            kind, attrs = _classify_function(fx_node)
            if kind == "meta" and shape is not None:
                kind = "unmapped"
                attrs["reason"] = f"{attrs['target']} returns a tensor here"
        nodes[fx_node.name] = GraphNode(
            name=fx_node.name,
            kind=kind,
            inputs=_tensor_inputs(fx_node),
            module=module,
            shape=shape,
            batched=batched,
            attrs=attrs,
            fx=fx_node,
        )
    module_outputs = {unprefix(n): node.name for n, node in tracer.module_outputs.items()}
    if outputs:
        module_outputs[""] = outputs[0]
    return CapturedGraph(
        model=model,
        graph_module=gm,
        nodes=nodes,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        module_outputs=module_outputs,
        input_shape=sample_shape,
    )


_SHAPE_BATCH = 2


def _shapes(gm: torch.fx.GraphModule, sample_shape: Sequence[int], dtype) -> dict:
    """Per-node (per-sample shape, batched) from one run at batch 2 (meta device first)."""
    shapes: dict[str, tuple[tuple[int, ...] | None, bool]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            if isinstance(value, torch.Tensor):
                s = tuple(int(d) for d in value.shape)
                batched = len(s) >= 1 and s[0] == _SHAPE_BATCH
                shapes[n.name] = (s[1:] if batched else s, batched)
            return value

    class Run(nn.Module):
        def __init__(self, inner: torch.fx.GraphModule) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return Recorder(self.inner).run(x)

    x_shape = (_SHAPE_BATCH, *sample_shape)
    state = dict(gm.state_dict(keep_vars=True))
    try:
        meta = {f"inner.{k}": torch.empty_like(v, device="meta") for k, v in state.items()}
        with torch.no_grad():
            torch.func.functional_call(
                Run(gm), meta, (torch.zeros(x_shape, dtype=dtype, device="meta"),)
            )
        return shapes
    except Exception:  # noqa: BLE001 - a module without meta kernels: run it for real
        shapes.clear()
    device = next((v.device for v in state.values()), torch.device("cpu"))
    was_training = {name: m.training for name, m in gm.named_modules()}
    try:
        gm.eval()  # no running-statistics update, no dropout draw from the global generator
        with torch.no_grad():
            Recorder(gm).run(torch.zeros(x_shape, dtype=dtype, device=device))
    except Exception as exc:  # noqa: BLE001 - the model cannot run on this input shape
        raise InvalidInput(
            f"the model does not run on inputs of shape {tuple(sample_shape)} "
            f"({type(exc).__name__}: {_one_line(exc)})"
        ) from None
    finally:
        for name, m in gm.named_modules():
            m.training = was_training.get(name, m.training)
    return shapes


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
