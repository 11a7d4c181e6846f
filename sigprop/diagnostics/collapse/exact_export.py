"""Exact weight-level effective sparsity of a ``torch.export`` program (``.pt2``).

The definition and the arithmetic are those of :mod:`.exact` (Vysogorets & Kempe, arXiv
2107.02306, Sec. 3): 0/1 weight copies, an all-ones input, every sum binarised both ways,
a kept weight effective iff the gradient of the summed output reaches it. Here the graph is
the program's aten graph (read by sigprop from the archive's JSON, or a trusted
``torch.export.load``), interpreted node by node from the fixed table below: no operator
name of the file is resolved, imported or run, and the program itself never runs.

The table: ``linear``/``conv*``/``convolution`` (the layer's kept pattern, no bias);
unit-wise activations, dropout and casts (identities); batch, layer and group norm (a zero
scale cuts its unit; layer and group norm connect the units they normalise together);
max, average and adaptive pooling (window OR); ``mean``/``sum``/``amax`` over dims; sums
and products (OR of the paths); layout operators (view, reshape, flatten, permute,
transpose, unsqueeze, squeeze, expand, select, slice, cat, split, chunk) run on the 0/1
tensors. Parameters, buffers and constants start no path (zeros). Anything else
(attention's ``matmul``/``softmax``/``scaled_dot_product_attention``, indexing by
tensors) leaves the count unavailable, with the operator named.

The counts are made in float32 where the tensors of the forward pass bound every count below
2^24 (:func:`.exact.count_bound`), else as :func:`.exact.counting_dtype` decides.

The program is specialised to the shapes it was exported with: the count is made for the
example input's shape (its batch too; a symbolic dimension takes ``input_shape``, the
batch 1), and a different ``input_shape`` is refused with a note, not guessed.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F

from sigprop.diagnostics.collapse.exact import (
    FLOAT32_COUNTS,
    adaptive_or,
    binarise,
    count_bound,
    counting_dtype,
    group_mix,
    norm_mix,
    path_or,
    scale_cut,
    window_or,
)
from sigprop.diagnostics.collapse.from_export import LAYER_OPS, ParameterLeaves
from sigprop.diagnostics.collapse.ops import BINARY_OPS, UNITWISE_OPS, Unmappable, op_name
from sigprop.io.pt2_graph import ExportNode

__all__ = ["export_effective_masks", "example_shape"]

_NORMS = frozenset(
    """batch_norm _native_batch_norm_legit_no_training _native_batch_norm_legit
    native_batch_norm layer_norm native_layer_norm group_norm native_group_norm
    instance_norm""".split()
)
_POOLS = frozenset(
    """max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices
    avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d
    adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d""".split()
)
#: aten operators returning a tuple led by the result (the rest: statistics or indices)
_TUPLED = frozenset(
    """_native_batch_norm_legit_no_training _native_batch_norm_legit native_batch_norm
    native_layer_norm native_group_norm native_dropout max_pool2d_with_indices
    max_pool3d_with_indices adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d""".split()
)
_IDENTITIES = (UNITWISE_OPS - _NORMS - _POOLS) | {"type_as", "lift_fresh_copy"}
_SKIPPED = frozenset(("_assert_tensor_metadata", "_assert_scalar", "_assert_async"))


class _Constant:
    """A parameter, buffer or constant (or arithmetic on them only): it starts no path.
    ``shape`` when known, for an operator that needs it as zeros."""

    __slots__ = ("shape",)

    def __init__(self, shape: tuple | None = None) -> None:
        self.shape = shape

    def zeros(self, dtype: torch.dtype) -> torch.Tensor:
        if self.shape is None:
            raise Unmappable("a tensor computed from parameters alone joins the graph")
        return torch.zeros(self.shape, dtype=dtype)


def _is_node(a: Any) -> bool:
    return isinstance(a, ExportNode | torch.fx.Node)


def _user_inputs(program: Any, params: ParameterLeaves) -> list:
    return [
        n for n in program.graph.nodes if n.op == "placeholder" and params.placeholder(n) == "input"
    ]


def example_shape(node: Any) -> tuple | None:
    """The example shape of a user-input placeholder, batch first (``None`` entries for
    symbolic dimensions), or None when the program does not say."""
    shape = node.meta.get("shape")
    if shape is None and hasattr(node.meta.get("val"), "shape"):
        shape = tuple(node.meta["val"].shape)
    if shape is None:
        return None
    return tuple(int(s) if isinstance(s, int) else None for s in shape)


#: the largest input (batch included) the count is run on, in elements
MAX_INPUT_ELEMENTS = 1 << 24


def _run_shape(example: tuple | None, input_shape: Any) -> tuple[tuple | None, str | None]:
    shape, reason = _wanted_shape(example, input_shape)
    if shape is not None and _numel(shape) > MAX_INPUT_ELEMENTS:
        return None, f"the input {shape} has more than {MAX_INPUT_ELEMENTS} elements"
    return shape, reason


def _wanted_shape(example: tuple | None, input_shape: Any) -> tuple[tuple | None, str | None]:
    want = tuple(int(s) for s in input_shape) if input_shape is not None else None
    if example is None:
        if want is None:
            return None, "the program does not record its input shape; give an input shape"
        return (1, *want), None
    batch, dims = example[0] or 1, example[1:]
    if want is not None and (
        len(want) != len(dims) or any(d is not None and d != w for d, w in zip(dims, want))
    ):
        return None, (
            f"the exported program is specialised to input shape "
            f"{tuple('?' if d is None else d for d in dims)}, not {want}"
        )
    if any(d is None for d in dims):
        if want is None:
            return None, "the program's input shape is symbolic; give an input shape"
        dims = want
    return (batch, *dims), None


def export_effective_masks(
    program: Any, input_shape: Any = None
) -> tuple[dict[str, torch.Tensor] | None, str | None, tuple | None]:
    """Boolean effective-weight masks by layer name (module doc), the reason they could not
    be computed, and the per-sample input shape they are for."""
    params = ParameterLeaves(program)
    inputs = _user_inputs(program, params)
    if len(inputs) != 1:
        return None, f"exact effective sparsity not computed: {len(inputs)} model inputs", None
    shape, reason = _run_shape(example_shape(inputs[0]), input_shape)
    if reason is not None:
        return None, f"exact effective sparsity not computed: {reason}", None
    # first pass: the parameter-only arithmetic (weight * mask) and the weight layers,
    # whose sizes choose the dtype
    layers, live = {}, {inputs[0]}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name, raw = op_name(node.target), list(node.args)
        if not any(_is_node(a) and a in live for a in _flat(raw) + _flat(dict(node.kwargs))):
            params.derive(node, name, raw)
            continue
        live.add(node)
        if name in LAYER_OPS:
            try:
                layers[node] = params.layer(node, name, raw)
            except Unmappable as exc:
                return None, f"exact effective sparsity not computed: {exc}", None
    sizes = [_numel(lay.shape) for lay in {lay.name: lay for lay in layers.values()}.values()]

    def run_in(dtype):
        interpreter = _Interpreter(params, layers, live, dtype)
        return interpreter, interpreter.forward(program, inputs[0], shape)

    try:
        with torch.enable_grad():
            # float32 where the tensors the forward pass made bound every count below 2^24
            # (exact.count_bound: measured on this run, not read from the file's metadata)
            run, total = run_in(torch.float32)
            if count_bound([*sizes, run.largest], _readers(program)) >= FLOAT32_COUNTS:
                run, total = run_in(counting_dtype(sum(sizes)))
            if total is not None and total.requires_grad:
                total.backward()
    except Unmappable as exc:
        return None, f"exact effective sparsity not computed: {exc} is not supported", None
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:  # a shape the table
        # cannot follow (e.g. a view of a constant): named, never a guess
        text = " ".join(str(exc).split())[:160]
        return None, f"exact effective sparsity not computed: {text}", None
    return run.masks(), None, tuple(shape[1:])


def _readers(program: Any) -> int:
    """The most operations that read one node of ``program``."""
    users: dict[Any, int] = {}
    for node in program.graph.nodes:
        for a in _flat(list(node.args)) + _flat(dict(node.kwargs)):
            if _is_node(a):
                users[a] = users.get(a, 0) + 1
    return max(users.values(), default=1)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class _Interpreter:
    def __init__(self, params: ParameterLeaves, layers: dict, live: set, dtype) -> None:
        self.params = params
        self.layers = layers
        self.live = live  # the nodes computed from the input
        self.dtype = dtype
        self.kept: dict[str, torch.Tensor] = {}  # 0/1 leaves
        self.keeps: dict[str, torch.Tensor] = {}  # the same, boolean
        self.largest = 1  # the most elements of a tensor the forward pass made

    def kept_of(self, layer) -> torch.Tensor:
        if layer.name not in self.kept:
            src = layer.mask if layer.mask is not None else layer.weight
            t = src.load() if hasattr(src, "load") else torch.as_tensor(src)
            keep = t != 0
            self.keeps[layer.name] = keep
            self.kept[layer.name] = keep.to(self.dtype).requires_grad_(True)
        return self.kept[layer.name]

    def masks(self) -> dict[str, torch.Tensor]:
        return {
            name: self.keeps[name] & (k.grad > 0.5)
            if k.grad is not None
            else torch.zeros_like(self.keeps[name])
            for name, k in self.kept.items()
        }

    def forward(self, program: Any, user: Any, shape: tuple) -> torch.Tensor | None:
        env: dict[Any, Any] = {}

        def val(a):
            if _is_node(a):
                return env[a]
            if isinstance(a, list | tuple):
                return type(a)(val(x) for x in a)
            return a

        outputs: list = []
        for node in program.graph.nodes:
            if node.op == "placeholder":
                if node is user:
                    env[node] = torch.ones(shape, dtype=self.dtype)
                else:
                    t = self.params.tensor(node)
                    env[node] = _Constant(tuple(t.shape) if t is not None else None)
                continue
            if node.op == "output":
                outputs = [o for o in _flat(val(node.args)) if isinstance(o, torch.Tensor)]
                continue
            if node.op != "call_function":
                raise Unmappable(f"node {node} ({node.op})")
            name = op_name(node.target)
            args, kwargs = val(list(node.args)), val(dict(node.kwargs))
            if name in _SKIPPED:
                env[node] = None
            elif node not in self.live:
                env[node] = _constant_value(name, args, kwargs)
            elif node in self.layers:
                env[node] = self._layer(name, self.layers[node], args, kwargs)
            else:
                env[node] = self._op(node, name, args, kwargs)
            for t in _flat(env[node]):
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel())
        if not outputs:
            return None
        return sum(o.sum() for o in outputs)

    # -- operators -----------------------------------------------------------------------
    def _layer(self, name, layer, args, kwargs):
        k, x = self.kept_of(layer), args[0]
        if name == "linear":
            return binarise(F.linear(x, k))
        a = list(args) + [None] * 9
        if name == "convolution":
            stride, padding, dilation, groups = a[3], a[4], a[5], a[8]
        else:
            stride, padding, dilation, groups = a[3], a[4], a[5], a[6]
            stride = kwargs.get("stride", stride)
            padding = kwargs.get("padding", padding)
            dilation = kwargs.get("dilation", dilation)
            groups = kwargs.get("groups", groups)
        fn = (F.conv1d, F.conv2d, F.conv3d)[k.ndim - 3]
        return binarise(
            fn(
                x,
                k,
                None,
                stride if stride is not None else 1,
                padding if padding is not None else 0,
                dilation if dilation is not None else 1,
                int(groups) if groups is not None else 1,
            )
        )

    def _op(self, node, name: str, args: list, kwargs: dict) -> Any:
        a = list(args) + [None] * 8
        x = a[0]
        if not any(isinstance(t, torch.Tensor | tuple) for t in _flat(args)):
            if name in _SYMBOLIC and len(args) == 2:  # arithmetic on sizes read off the input
                return _SYMBOLIC[name](*args)
        if name == "getitem":
            return x[a[1]]
        if name in ("sym_size", "size"):
            return _shape_value(name, args)
        if name in _IDENTITIES:
            return (x, None) if name in _TUPLED else x
        if name in _NORMS:
            out = self._norm(name, a, list(node.args) + [None] * 8)
            return (out, None, None) if name in _TUPLED else out
        if name in _POOLS:
            out = self._pool(name, a)
            return (out, None) if name in _TUPLED else out
        if name in ("mean", "sum", "amax"):
            dims = kwargs.get("dim", a[1])
            keep = kwargs.get("keepdim", a[2] if a[2] is not None else False)
            if dims is None or dims == []:
                dims = list(range(x.ndim))
            return binarise(x.sum(dims, keepdim=bool(keep)))
        if name in BINARY_OPS or name == "rsub":
            out = path_or([t for t in args if isinstance(t, torch.Tensor)])
            shapes = [c.shape for c in args if isinstance(c, _Constant) and c.shape is not None]
            if shapes:  # a constant operand may broadcast the result
                out = out.expand(torch.broadcast_shapes(out.shape, *shapes))
            return out
        if name in ("cat", "concat", "concatenate", "stack"):
            parts = [t.zeros(self.dtype) if isinstance(t, _Constant) else t for t in x]
            dim = kwargs.get("dim", a[1] if a[1] is not None else 0)
            return (torch.stack if name == "stack" else torch.cat)(parts, dim)
        layout = _LAYOUT.get(name)
        if layout is not None:
            if not isinstance(x, torch.Tensor):
                x = x.zeros(self.dtype)
            return layout(x, *[v for v in args[1:]], **kwargs)
        raise Unmappable(f"operator {name!r} ({node})")

    def _norm(self, name: str, a: list, raw: list) -> torch.Tensor:
        """``a`` the values of the arguments, ``raw`` the arguments (for the scale's
        parameter: a normalisation's gamma is read from the program's tensors)."""
        x = a[0]
        if name == "instance_norm":
            raise Unmappable("operator 'instance_norm'")
        if name in ("layer_norm", "native_layer_norm"):
            return scale_cut(norm_mix(x, len(a[1])), self._scale(raw[2]), -1)
        if name in ("group_norm", "native_group_norm"):
            groups = a[1] if name == "group_norm" else a[6]
            return scale_cut(group_mix(x, int(groups)), self._scale(raw[2]), 1)
        return scale_cut(x, self._scale(raw[1]), 1)

    def _scale(self, arg: Any) -> torch.Tensor | None:
        """A normalisation's scale parameter, or None (no scale, or not a parameter)."""
        t = self.params.tensor(arg) if _is_node(arg) else None
        if t is None:
            return None
        return t.load() if hasattr(t, "load") else t

    def _pool(self, name: str, a: list) -> torch.Tensor:
        x = a[0]
        if name.startswith("adaptive"):
            return adaptive_or(x, a[1])
        kernel = a[1]
        stride = a[2] if a[2] else kernel
        padding = a[3] if a[3] is not None else 0
        if name.startswith("max"):
            dilation, ceil = a[4], a[5]
            if dilation not in (None, 1, [1], [1, 1], [1, 1, 1]):
                raise Unmappable("dilated pooling")
        else:
            ceil = a[4]
            if a[6] is not None:
                raise Unmappable("average pooling with divisor_override")
        return window_or(x, kernel, stride, padding, bool(ceil))


def _constant_value(name: str, args: list, kwargs: dict) -> Any:
    """The value of an operation on constants alone: a :class:`_Constant` (with its shape
    where a layout operator or a broadcast says it), or a plain value (shape arithmetic)."""
    consts = [c for c in _flat(args) + _flat(kwargs) if isinstance(c, _Constant)]
    if not consts:
        return None  # arithmetic on numbers: nothing the graph reads as a tensor
    first = args[0] if args else None
    if isinstance(first, _Constant) and first.shape is not None and name in _LAYOUT:
        meta = torch.empty(first.shape, device="meta")
        try:
            out = _LAYOUT[name](meta, *args[1:], **kwargs)
        except (RuntimeError, TypeError, ValueError, IndexError):
            return _Constant()
        return _Constant(tuple(out.shape)) if isinstance(out, torch.Tensor) else _Constant()
    if name in _IDENTITIES and isinstance(first, _Constant):
        return first
    return _Constant()


def _shape_value(name: str, args: list) -> Any:
    x = args[0]
    if not isinstance(x, torch.Tensor):
        raise Unmappable(f"the shape of a constant ({name})")
    return x.size(args[1]) if len(args) > 1 and args[1] is not None else tuple(x.shape)


def _flat(v: Any) -> list:
    if isinstance(v, dict):
        v = list(v.values())
    if isinstance(v, list | tuple):
        return [x for item in v for x in _flat(item)]
    return [v]


def _slice(x, dim=0, start=None, end=None, step=1):
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, end, step)
    return x[tuple(index)]


#: arithmetic on sizes (a symbolic batch): integers, computed as such
_SYMBOLIC = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
}

#: layout operators: run on the 0/1 tensors with the program's arguments
_LAYOUT = {
    "view": lambda x, size: x.reshape(size),
    "reshape": lambda x, size: x.reshape(size),
    "_unsafe_view": lambda x, size: x.reshape(size),
    "flatten": lambda x, start_dim=0, end_dim=-1: x.flatten(start_dim, end_dim),
    "permute": lambda x, dims: x.permute(dims),
    "transpose": lambda x, dim0, dim1: x.transpose(dim0, dim1),
    "t": lambda x: x.t(),
    "unsqueeze": lambda x, dim: x.unsqueeze(dim),
    "squeeze": lambda x, dim=None: x.squeeze() if dim is None else x.squeeze(dim),
    "expand": lambda x, size, implicit=False: x.expand(size),
    "select": lambda x, dim, index: x.select(dim, index),
    "slice": _slice,
    "split": lambda x, size, dim=0: x.split(size, dim),
    "split_with_sizes": lambda x, sizes, dim=0: x.split(sizes, dim),
    "chunk": lambda x, chunks, dim=0: x.chunk(chunks, dim),
    "unbind": lambda x, dim=0: x.unbind(dim),
}
