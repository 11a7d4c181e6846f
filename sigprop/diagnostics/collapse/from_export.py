"""The connectivity graph of a ``torch.export`` program (aten operators)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sigprop.diagnostics.collapse.graph import ConnectivityGraph, WeightLayer
from sigprop.diagnostics.collapse.ops import (
    BINARY_OPS,
    RESHAPE_OPS,
    SHAPE_OPS,
    UNITWISE_OPS,
    Unmappable,
    op_name,
)
from sigprop.validate import InvalidInput

__all__ = ["LAYER_OPS", "ParameterLeaves", "export_graph", "map_export"]


class _Walker:
    """Shared node handling for torch.fx and torch.export graphs."""

    def __init__(self, graph: ConnectivityGraph) -> None:
        self.g = graph
        self.sites: dict[Any, int | None] = {}
        #: nodes whose value is a tuple led by a unit-wise result (aten batch norm)
        self.tuple_sites: dict[Any, bool] = {}

    def site_of(self, arg: Any) -> int | None:
        return self.sites.get(arg) if _hashable(arg) else None

    def tensor_args(self, args: Iterable[Any]) -> list[int]:
        out = []
        for a in args:
            if isinstance(a, (list, tuple)):
                out.extend(self.tensor_args(a))
            else:
                s = self.site_of(a)
                if s is not None:
                    out.append(s)
        return out

    def generic(self, node: Any, name: str, args: Sequence[Any], kwargs: dict) -> int | None:
        tensors = self.tensor_args(list(args) + list(kwargs.values()))
        if not tensors:
            return None  # shape arithmetic, constants
        if name in SHAPE_OPS:
            return None
        if name == "getitem":
            # only tuple outputs of unit-wise ops (batch norm's (out, mean, var)) map
            if isinstance(args[1], int) and args[1] == 0 and self.tuple_sites.get(args[0]):
                return self.site_of(args[0])
            raise Unmappable(f"{node}: indexing a tensor is not supported")
        if name in UNITWISE_OPS:
            return tensors[0]
        if name in RESHAPE_OPS:
            return self.g.flatten(tensors[0])
        if name in BINARY_OPS:
            return self.g.add(*tensors) if len(tensors) > 1 else tensors[0]
        if name in ("cat", "concat", "concatenate"):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim != 1:
                raise Unmappable(f"{node}: concatenation along dim {dim} is not supported")
            return self.g.concat(*tensors)
        if name in ("mean", "amax", "sum") and len(tensors) == 1:
            dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
            dims = [dims] if isinstance(dims, int) else dims
            if dims and all(isinstance(d, int) and (d >= 2 or d < -1) for d in dims):
                return tensors[0]  # global pooling over spatial dimensions
        raise Unmappable(f"operation {name!r} ({node}) cannot be mapped to unit connectivity")


def export_graph(program: Any, notes: list[str] | None = None) -> ConnectivityGraph:
    """Build the :class:`ConnectivityGraph` of a ``torch.export.ExportedProgram``.

    Weight layers are the ``aten.linear`` / ``aten.conv*`` / ``aten.convolution`` calls;
    their weight argument is a parameter, or a product of a parameter and a mask buffer
    (how ``torch.nn.utils.prune`` and masked layers appear in the graph). Raises
    ``InvalidInput`` for operations that cannot be mapped.
    """
    g, reason = map_export(program)
    if reason is not None:
        raise InvalidInput(reason)
    return g


class ParameterLeaves:
    """The parameter tensors behind the values of an export graph: a parameter or buffer
    placeholder is a leaf ``(name, tensor)``; parameter-only arithmetic (``weight * mask``,
    dtype casts and copies) derives the leaves it combines. A weight layer's weight
    argument must resolve to a parameter, or a parameter times a mask buffer."""

    def __init__(self, program: Any) -> None:
        from torch.export.graph_signature import InputKind

        self._user = InputKind.USER_INPUT
        self.specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}
        self.tensors = dict(program.state_dict)
        self.tensors.update(getattr(program, "constants", {}) or {})
        self._values: dict[Any, Any] = {}  # node -> (tensor name, tensor)
        self._derived: dict[Any, list] = {}  # node -> leaves of a parameter-only product

    def placeholder(self, node: Any) -> str:
        """``"input"`` (a user input), ``"tensor"`` (a parameter, buffer or constant, now a
        leaf) or ``"other"``."""
        spec = self.specs.get(node.name)
        if spec is not None and spec.kind == self._user:
            return "input"
        if spec is not None and spec.target in self.tensors:
            self._values[node] = (spec.target, self.tensors[spec.target])
            return "tensor"
        return "other"

    def of(self, node: Any) -> list | None:
        """The leaves ``node`` is computed from, or None (not parameter-only)."""
        if _hashable(node) and node in self._values:
            return [self._values[node]]
        return self._derived.get(node) if _hashable(node) else None

    def tensor(self, node: Any) -> Any:
        """The tensor of a parameter placeholder (a BatchNorm scale), or None."""
        leaves = self.of(node)
        return leaves[0][1] if leaves and len(leaves) == 1 else None

    def derive(self, node: Any, name: str, args: Sequence[Any]) -> None:
        """Record the node of parameter-only arithmetic ``name(args)``."""
        if name in ("mul", "to", "_to_copy", "clone", "detach", "alias", "contiguous"):
            self._derived[node] = [x for a in args if self.of(a) for x in self.of(a)]

    def layer(self, node: Any, name: str, args: Sequence[Any]) -> WeightLayer:
        """The :class:`WeightLayer` of an ``aten.linear``/``conv*``/``convolution`` node."""
        if name == "convolution" and len(args) > 6 and args[6]:
            raise Unmappable(f"{node}: transposed convolutions are not supported")
        groups = 1
        if name == "convolution" and len(args) > 8:
            groups = int(args[8])
        elif name.startswith("conv") and len(args) > 6:
            groups = int(args[6])
        parts = self.of(args[1])
        if not parts:
            raise Unmappable(f"{node}: weight is not a parameter or a masked parameter")
        return _export_layer(parts, groups)


#: the weight layers of an export graph
LAYER_OPS = frozenset(("linear", "conv1d", "conv2d", "conv3d", "convolution"))


def map_export(program: Any) -> tuple[ConnectivityGraph, str | None]:
    """The graph of ``program`` and ``None``, or a partial graph and why it cannot be
    mapped (no exception: the caller decides what to fall back to)."""
    g = ConnectivityGraph(lenient=True)
    walker = _Walker(g)
    params = ParameterLeaves(program)
    try:
        for node in program.graph.nodes:
            if node.op == "placeholder":
                walker.sites[node] = g.input() if params.placeholder(node) == "input" else None
                continue
            if node.op == "output":
                outs = walker.tensor_args(node.args)
                if not outs:
                    raise Unmappable("the program returns no tensor")
                for s in outs:
                    g.output(s)
                continue
            if node.op != "call_function":
                raise Unmappable(f"node {node} ({node.op}) cannot be mapped")
            name = op_name(node.target)
            args = list(node.args)
            if name in LAYER_OPS:
                layer = params.layer(node, name, args)
                src = walker.site_of(args[0])
                if src is None:
                    raise Unmappable(f"{node}: weight is not a parameter or a masked parameter")
                walker.sites[node] = g.layer(layer, src)
                continue
            if name == "_assert_tensor_metadata":
                walker.sites[node] = None
                continue
            tensor_sites = walker.tensor_args(args + list(node.kwargs.values()))
            if not tensor_sites:
                params.derive(node, name, args)
                walker.sites[node] = None
                continue
            site = walker.generic(node, name, args, dict(node.kwargs))
            if name in UNITWISE_OPS and isinstance(node.meta.get("val"), (tuple, list)):
                walker.tuple_sites[node] = True
            walker.sites[node] = site
    except Unmappable as exc:
        return g, str(exc)
    return g, g.resolve()[1]


def _export_layer(parts: list, groups: int) -> WeightLayer:
    names = {n for n, _ in parts}
    # a mask by structure: ``<stem>_mask`` beside ``<stem>_orig`` or ``<stem>``
    masks = [
        (n, t)
        for n, t in parts
        if n.endswith("_mask") and ({n[: -len("_mask")] + "_orig", n[: -len("_mask")]} & names)
    ]
    weights = [(n, t) for n, t in parts if all(n != m for m, _ in masks)]
    if len(weights) != 1 or len(masks) > 1:
        raise Unmappable(f"weight expression over {[n for n, _ in parts]} is not weight * mask")
    wname, weight = weights[0]
    layer = wname.rsplit(".", 1)[0]
    if wname.rsplit(".", 1)[-1].startswith("in_proj_weight"):
        layer += ".in_proj"  # nn.MultiheadAttention's packed q/k/v projection
    mask = masks[0][1] if masks else None
    return WeightLayer(layer, weight.detach(), mask.detach() if mask is not None else None, groups)


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True
