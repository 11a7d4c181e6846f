"""The graph of a ``.pt2`` archive, built from its ``models/<name>.json`` alone.

:func:`build_graph` turns the serialized graph (nodes with a dotted operator name, named
arguments that refer to earlier values, outputs; the signature saying which input is a
user input, a parameter, a buffer or a constant) into an :class:`ExportedGraph`: plain
objects with the attributes of ``torch.export.ExportedProgram`` that connectivity reads.
Nothing is resolved, imported or evaluated: an operator is kept as its name
(``torch.ops.aten.conv2d.default`` -> ``"conv2d"``), an argument connectivity does not use
(a dtype, a device, a subgraph) as an opaque token. As in torch's deserializer, an
operator with several outputs gets one ``getitem`` node per output.
"""

from __future__ import annotations

import re
from typing import Any

from sigprop.io import limits

__all__ = ["ExportNode", "ExportedGraph", "InputSpec", "Malformed", "build_graph"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET = re.compile(rf"#?{_IDENT}(\.{_IDENT})*")


class Malformed(Exception):
    """The archive's JSON does not describe a graph (reported as a CheckpointError)."""


class ExportNode:
    """A node of an :class:`ExportedGraph`: ``op`` (``"placeholder"``, ``"call_function"``,
    ``"output"``), ``name``, ``target`` (the operator's name: ``"conv2d"``, ``"getitem"``),
    ``args``, ``kwargs`` (other nodes, numbers, lists) and ``meta`` (``"val"`` is a tuple
    for an operator with several outputs)."""

    __slots__ = ("name", "op", "target", "args", "kwargs", "meta", "full_target")

    def __init__(
        self, name: str, op: str, target: str = "", args=(), kwargs=None, full_target: str = ""
    ) -> None:
        self.name = name
        self.op = op
        self.target = target
        self.args = tuple(args)
        self.kwargs = kwargs or {}
        self.meta: dict[str, Any] = {}
        self.full_target = full_target

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


class _Opaque:
    """An argument connectivity does not look at (a dtype, a device, a subgraph)."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<{self.kind}>"


class _Arg:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class InputSpec:
    """``kind`` (a ``torch.export.graph_signature.InputKind``), ``arg.name``, ``target``."""

    __slots__ = ("kind", "arg", "target")

    def __init__(self, kind: Any, name: str, target: str | None) -> None:
        self.kind = kind
        self.arg = _Arg(name)
        self.target = target


class _Signature:
    __slots__ = ("input_specs",)

    def __init__(self, specs: list[InputSpec]) -> None:
        self.input_specs = specs


class _Graph:
    __slots__ = ("nodes",)

    def __init__(self, nodes: list[ExportNode]) -> None:
        self.nodes = nodes


class ExportedGraph:
    """The graph of a ``.pt2`` archive, read from its JSON (see the module docstring).

    It has the attributes of ``torch.export.ExportedProgram`` that a connectivity analysis
    reads: ``graph.nodes``, ``graph_signature.input_specs``, ``state_dict`` and
    ``constants`` (name -> :class:`~sigprop.io.LazyTensor`). It cannot be run.
    """

    def __init__(self, nodes, specs, state_dict, constants) -> None:
        self.graph = _Graph(nodes)
        self.graph_signature = _Signature(specs)
        self.state_dict = state_dict
        self.constants = constants

    def __repr__(self) -> str:
        return f"ExportedGraph({len(self.graph.nodes)} nodes, {len(self.state_dict)} weights)"


# --------------------------------------------------------------------------- graph
def _one(d: Any, what: str) -> tuple[str, Any]:
    if not (isinstance(d, dict) and len(d) == 1):
        raise Malformed(f"{what} is not a one-key union")
    ((k, v),) = d.items()
    return k, v


def _name(v: Any, what: str) -> str:
    if not (isinstance(v, dict) and isinstance(v.get("name"), str)):
        raise Malformed(f"{what} has no name")
    if len(v["name"]) > limits.MAX_NAME_CHARS:
        raise Malformed(f"{what} has an overlong name")
    return v["name"]


def _arg_name(arg: Any) -> str | None:
    """The name an Argument union defines (a tensor's or a symbol's), if any."""
    if not (isinstance(arg, dict) and len(arg) == 1):
        return None
    ((_, v),) = arg.items()
    if isinstance(v, dict):
        for key in ("name", "as_name"):
            if isinstance(v.get(key), str) and len(v[key]) <= limits.MAX_NAME_CHARS:
                return v[key]
    return None


def _size(s: Any) -> int | None:
    """A serialized dimension: its int (bounded), or None when symbolic or malformed."""
    v = s.get("as_int") if isinstance(s, dict) and len(s) == 1 else None
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= limits.MAX_DECLARED_ELEMENTS:
        return v
    return None


def _op_name(target: str) -> str:
    parts = target.lstrip("#").split(".")
    if parts[:2] == ["torch", "ops"] and len(parts) >= 4:
        return parts[3]
    return parts[-1]


def build_graph(doc: dict, tensors: dict, constants: dict) -> ExportedGraph:
    from torch.export.graph_signature import InputKind

    gm = doc.get("graph_module")
    graph = gm.get("graph") if isinstance(gm, dict) else None
    signature = gm.get("signature") if isinstance(gm, dict) else None
    if not isinstance(graph, dict) or not isinstance(signature, dict):
        raise Malformed("no graph or signature")
    values: dict[str, Any] = {}
    nodes: list[ExportNode] = []
    counter = [0]

    def ref(name: str) -> ExportNode:
        if name not in values:
            raise Malformed(f"an argument refers to an unknown value {name[:80]!r}")
        return values[name]

    def define(node: ExportNode) -> ExportNode:
        nodes.append(node)
        if len(nodes) > 4 * limits.MAX_TENSORS:
            raise Malformed("too many nodes")
        values[node.name] = node
        return node

    def sym(v: Any) -> Any:
        k, inner = _one(v, "a symbolic value")
        if k == "as_name":
            return ref(inner)
        return inner if k in ("as_int", "as_float", "as_bool") else _Opaque(k)

    def value(arg: Any) -> Any:
        k, v = _one(arg, "an argument")
        if k == "as_none":
            return None
        if k == "as_tensor":
            return ref(_name(v, "a tensor argument"))
        if k in ("as_tensors", "as_optional_tensors"):
            if not isinstance(v, list):
                raise Malformed("a tensor list is not a list")
            return [
                value(x) if k == "as_optional_tensors" else ref(_name(x, "a tensor")) for x in v
            ]
        if k == "as_optional_tensor":
            return value(v)
        if k in ("as_int", "as_float", "as_bool", "as_string"):
            return v
        if k in ("as_ints", "as_floats", "as_bools", "as_strings"):
            return list(v) if isinstance(v, list) else _Opaque(k)
        if k in ("as_sym_int", "as_sym_float", "as_sym_bool"):
            return sym(v)
        if k in ("as_sym_ints", "as_sym_floats", "as_sym_bools"):
            return [sym(x) for x in v] if isinstance(v, list) else _Opaque(k)
        return _Opaque(k)

    def output_name(out: Any) -> str | None:
        k, v = _one(out, "an output")
        if k == "as_tensor":
            return _name(v, "an output")
        if k in ("as_sym_int", "as_sym_float", "as_sym_bool"):
            k2, v2 = _one(v, "an output")
            return v2 if k2 == "as_name" and isinstance(v2, str) else None
        return None

    # placeholders, in signature order
    specs: list[InputSpec] = []
    kinds = {
        "user_input": InputKind.USER_INPUT,
        "parameter": InputKind.PARAMETER,
        "buffer": InputKind.BUFFER,
        "tensor_constant": InputKind.CONSTANT_TENSOR,
        "custom_obj": InputKind.CUSTOM_OBJ,
        "token": InputKind.TOKEN,
        "constant_input": InputKind.USER_INPUT,
    }
    targets = {
        "parameter": "parameter_name",
        "buffer": "buffer_name",
        "tensor_constant": "tensor_constant_name",
        "custom_obj": "custom_obj_name",
    }
    for spec in signature.get("input_specs") or []:
        k, v = _one(spec, "an input spec")
        if k not in kinds or not isinstance(v, dict):
            raise Malformed(f"unknown input kind {str(k)[:40]!r}")
        if k == "user_input":
            name = _arg_name(v.get("arg")) or f"__input{len(specs)}"
        elif k == "constant_input":
            name = str(v.get("name", f"__input{len(specs)}"))
        else:
            name = _name(v.get("arg"), f"a {k} input")
        target = v.get(targets[k]) if k in targets else None
        if target is not None and not isinstance(target, str):
            raise Malformed("an input spec names a non-string target")
        specs.append(InputSpec(kinds[k], name, target))
    for spec in specs:
        if spec.arg.name not in values:
            define(ExportNode(spec.arg.name, "placeholder"))
    shapes = graph.get("tensor_values")
    for spec in specs:  # a user input's example shape (None for a symbolic dimension)
        meta = shapes.get(spec.arg.name) if isinstance(shapes, dict) else None
        sizes = meta.get("sizes") if isinstance(meta, dict) else None
        if (
            spec.kind == InputKind.USER_INPUT
            and isinstance(sizes, list)
            and len(sizes) <= limits.MAX_NDIM
        ):
            values[spec.arg.name].meta["shape"] = tuple(_size(s) for s in sizes)

    for raw in graph.get("nodes") or []:
        if not isinstance(raw, dict) or not isinstance(raw.get("target"), str):
            raise Malformed("a node has no target")
        target = raw["target"]
        if len(target) > 256 or not _TARGET.fullmatch(target):
            raise Malformed(f"a node target {target[:80]!r} is not a dotted name")
        args, kwargs = [], {}
        for named in raw.get("inputs") or []:
            if not isinstance(named, dict) or not isinstance(named.get("name"), str):
                raise Malformed("a node input is malformed")
            v = value(named.get("arg"))
            if named.get("kind") == 2:  # ArgumentKind.KEYWORD
                kwargs[named["name"]] = v
            else:
                args.append(v)
        outs = raw.get("outputs") or []
        if not isinstance(outs, list):
            raise Malformed("a node's outputs are not a list")
        counter[0] += 1
        single = output_name(outs[0]) if len(outs) == 1 else None
        name = single or f"__node{counter[0]}"
        node = define(ExportNode(name, "call_function", _op_name(target), args, kwargs, target))
        if single is None:
            node.meta["val"] = tuple(range(len(outs)))
            for i, out in enumerate(outs):
                k, v = _one(out, "an output")
                if k == "as_tensors" and isinstance(v, list):
                    part = define(
                        ExportNode(f"__node{counter[0]}_{i}", "call_function", "getitem", (node, i))
                    )
                    part.meta["val"] = tuple(range(len(v)))
                    for j, t in enumerate(v):
                        define(
                            ExportNode(_name(t, "an output"), "call_function", "getitem", (part, j))
                        )
                else:
                    out_name = output_name(out)
                    if out_name is not None:
                        define(ExportNode(out_name, "call_function", "getitem", (node, i)))
    results = [value(out) for out in graph.get("outputs") or []]
    nodes.append(ExportNode("output", "output", "output", (tuple(results),)))
    return ExportedGraph(nodes, specs, tensors, constants)
