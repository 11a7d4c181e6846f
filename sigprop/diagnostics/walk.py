"""The walk behind ``describe``: weight layers, the activation on each one's output and
input, and sigprop residual blocks, in forward order (chains module by module, other models
through ``torch.fx``); whatever the walk cannot map is reported, never guessed.
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from sigprop.diagnostics.graph.capture import is_attention_leaf
from sigprop.nn.activation import theory_spec
from sigprop.nn.kinds import is_weight_layer

#: Modules that neither carry weights nor change the mean-field statistics of a sample.
_NEUTRAL_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)

_ELEMENTWISE_FUNCTIONS = {
    torch.relu: "relu",
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    torch.nn.functional.relu: "relu",
    torch.nn.functional.tanh: "tanh",
    torch.nn.functional.sigmoid: "sigmoid",
    torch.nn.functional.gelu: "gelu",
    torch.nn.functional.silu: "silu",
    torch.nn.functional.elu: "elu",
    torch.nn.functional.leaky_relu: "leaky_relu",
}
_ELEMENTWISE_METHODS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, getattr, operator.getitem}
_SHAPE_METHODS = {"flatten", "view", "reshape", "contiguous", "size", "squeeze", "unsqueeze"}


def activation_name(module: nn.Module) -> str | None:
    """Theory spec of an elementwise activation module (``"relu"``, ``"leaky_relu:0.2"``), or
    ``None`` if the module is not one the theory registry knows
    (:func:`sigprop.nn.activation.theory_spec`, the one table of the torch side)."""
    return theory_spec(module)


def is_neutral(module: nn.Module) -> bool:
    return isinstance(module, _NEUTRAL_MODULES)


def _is_residual_block(module: nn.Module) -> bool:
    # attention's ``scale`` is its softmax temperature 1/sqrt(d), not a branch scale
    return (
        hasattr(module, "scale")
        and not is_attention_leaf(module)
        and not is_weight_layer(module)
        and any(is_weight_layer(m) for m in module.modules())
    )


def _residual_scale(module: nn.Module) -> float:
    scale = module.scale
    if isinstance(scale, torch.Tensor):
        return float(scale.detach())
    return float(scale)


class _Walker:
    """Collects weight layers, the activation applied to each one's output and the one
    applied to its input, in forward order.

    An activation applied to something other than a weight layer's output (the residual
    stream of a pre-activation block, the input) is "floating": it is mapped when a weight
    layer consumes it directly (it becomes that layer's ``input_activation``) and reported
    as unmapped otherwise. Graph walks match producers and consumers through fx nodes;
    the sequential walk through adjacency.
    """

    _SEQ = "sequential"

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.unmapped: list[str] = []
        self.pending: dict | None = None  # last weight layer, while its output is untouched
        self.last_act: str | None = None  # sequential walk: the op just before, if an act
        self.act_nodes: dict = {}  # graph walk: activation node -> name
        self.floating: dict = {}  # key (node or _SEQ) -> (name, where), not yet consumed

    def weight(self, name: str, module: nn.Module, scale=None, block=None, node=None) -> None:
        if node is None:
            input_act = self.last_act
            self.floating.pop(self._SEQ, None)
        else:
            source = _source(node)
            input_act = self.act_nodes.get(source)
            self.floating.pop(source, None)
        self.entries.append(
            {
                "name": name,
                "module": module,
                "activation": None,
                "input_activation": input_act,
                "scale": scale,
                "block": block,
                "node": node,
            }
        )
        self.pending = self.entries[-1]
        self.last_act = None

    def activation(self, name: str, where: str, node=None) -> None:
        pending = self.pending
        if node is None:
            self.flush()  # an earlier floating activation nobody consumed
            if pending is not None:
                pending["activation"] = name
            else:
                self.floating[self._SEQ] = (name, where)
        else:
            self.act_nodes[node] = name
            if pending is not None and _source(node) is pending["node"]:
                pending["activation"] = name
            else:
                self.floating[node] = (name, where)
        self.pending = None
        self.last_act = name

    def other(self, desc: str) -> None:
        self.unmapped.append(desc)
        self.pending = None
        self.last_act = None
        self.flush()

    def flush(self) -> None:
        """Report floating activations that no weight layer consumed."""
        for name, where in self.floating.values():
            self.unmapped.append(
                f"{where}: activation {name} not applied to a weight layer's output or input"
            )
        self.floating.clear()


def _walk_sequential(model: nn.Module, prefix: str, walker: _Walker) -> None:
    for child_name, child in model.named_children():
        name = f"{prefix}.{child_name}" if prefix else child_name
        if is_weight_layer(child):
            walker.weight(name, child)
        elif isinstance(child, nn.Sequential):
            _walk_sequential(child, name, walker)
        elif _is_residual_block(child):
            _walk_traced(child, name, walker, block=True)
        elif (act := activation_name(child)) is not None:
            walker.activation(act, name)
        elif is_neutral(child):
            continue
        elif any(True for _ in child.children()):
            _walk_traced(child, name, walker, block=False)
        else:
            walker.other(f"{name}: {type(child).__name__}")


def _walk_traced(module: nn.Module, prefix: str, walker: _Walker, block: bool) -> None:
    """Trace a composite module (a residual block or a custom module) and walk its graph."""
    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is reported, not guessed
        walker.other(
            f"{prefix or type(module).__name__}: not traceable by torch.fx ({type(exc).__name__})"
        )
        return
    block_info = (_residual_scale(module), prefix) if block else None
    _walk_graph(module, graph, prefix, walker, block_info)
    if block:
        # the block's output is the residual sum, not the branch's last weight layer
        walker.pending = None
        walker.last_act = None


class _Tracer(torch.fx.Tracer):
    """fx tracer that keeps weight layers, activations and residual blocks as leaves (sigprop
    modules live outside ``torch.nn`` and would otherwise be traced through)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if is_weight_layer(m) or activation_name(m) is not None:
            return True
        if _is_residual_block(m) and module_qualified_name:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _source(node):
    """The tensor argument of a single-input node, looking through shape-only operations."""
    arg = node.args[0] if node.args else None
    while (
        isinstance(arg, torch.fx.Node)
        and (
            (arg.op == "call_method" and arg.target in _SHAPE_METHODS)
            or (arg.op == "call_function" and arg.target in (torch.flatten, torch.reshape))
        )
        and arg.args
    ):
        arg = arg.args[0]
    return arg


def _walk_graph(root: nn.Module, graph, prefix: str, walker: _Walker, block_info=None) -> None:
    scale, block = block_info if block_info else (None, None)
    residual_ops_fn = (operator.add, operator.mul, torch.add, torch.mul)
    for node in graph.nodes:
        where = f"{prefix}.{node.name}" if prefix else node.name
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_module":
            qual = f"{prefix}.{node.target}" if prefix else node.target
            module = root.get_submodule(node.target)
            if is_weight_layer(module):
                walker.weight(qual, module, scale, block, node)
            elif (act := activation_name(module)) is not None:
                walker.activation(act, qual, node)
            elif is_neutral(module):
                continue
            elif _is_residual_block(module) and block_info is None:
                _walk_traced(module, qual, walker, block=True)
            else:
                walker.other(f"{qual}: {type(module).__name__}")
        elif node.op == "call_function":
            if node.target in _ELEMENTWISE_FUNCTIONS:
                act = _ELEMENTWISE_FUNCTIONS[node.target]
                if act == "leaky_relu":
                    slope = node.kwargs.get(
                        "negative_slope", node.args[1] if len(node.args) > 1 else 0.01
                    )
                    act = f"leaky_relu:{slope:g}"
                walker.activation(act, where, node)
            elif node.target in _SHAPE_FUNCTIONS:
                continue
            elif block_info is not None and node.target in residual_ops_fn:
                continue  # the residual sum and the branch scale: recorded as residual_scale
            else:
                walker.other(f"{where}: {_fn_name(node.target)}")
        elif node.op == "call_method":
            if node.target in _ELEMENTWISE_METHODS:
                walker.activation(_ELEMENTWISE_METHODS[node.target], where, node)
            elif node.target in _SHAPE_METHODS:
                continue
            elif block_info is not None and node.target in ("add", "mul"):
                continue
            else:
                walker.other(f"{where}: .{node.target}()")


def _fn_name(target) -> str:
    return getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
