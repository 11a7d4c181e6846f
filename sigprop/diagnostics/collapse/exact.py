"""Exact weight-level effective sparsity (Vysogorets & Kempe, arXiv 2107.02306, Sec. 3).

A kept weight ``W[o, i, k]`` is *effective* iff it lies on a path of kept weights from an
input position to an output position of the unrolled computation for a given input shape.
The paper's code computes it SynFlow-style (linearise the net, weights ``|W| * mask`` made
0/1, an all-ones input, a weight is effective where ``w * dR/dw != 0``, ``R`` the summed
output). Products of path counts overflow float64 on deep nets (and vanish when
normalised), so here every value is kept *boolean*: the captured graph is run in float64 on
0/1 tensors, and after every operation that sums (a weight layer, a pooling window, a
residual add, a normalisation's reduction) the result is binarised ``(x > 0)``. The
binarisation's backward pass binarises the gradient the same way (``(g > 0)``), so

* the forward value at a position is 1 iff it is reachable from the input (the *way in*);
* the gradient at a position is > 0 iff it reaches the output (the *way out*);
* ``dR/dW[o, i, k] = sum_p way_out[o, p] * way_in[i, p + k]`` counts the position pairs the
  weight joins that have both, an integer below ``H*W`` per weight (exact in float64).

Every value is an integer count: a sum of 0/1 products over part of one tensor (a fan-in, a
window, the positions a weight joins), so at most the size of the largest activation or
weight tensor, times the number of operations that read a tensor (its gradient sums
theirs: :func:`count_bound`). Below ``2^24`` float32 holds every such integer and every
partial sum exactly, in any summation order, and binarising at ``0.5`` keeps the result
exact even where a convolution algorithm rounds. The computation therefore runs in float32
when that bound is below :data:`FLOAT32_COUNTS` (ResNet-50 at 224x224: 4.7·10⁶; half the
memory traffic of float64 and the fast convolution kernels), else in float64 unless the
0/1 weight copies and their gradients would exceed :data:`FLOAT64_BYTES`.

Zero padding contributes nothing, strides, dilation and groups are those of the real layer,
max pooling is a window OR (as average pooling's sum: a path through any position of the
window counts, the paper's path semantics), activations, dropout and scalings are unit-wise
identities, a normalisation scale ``gamma = 0`` cuts its unit, and layer norm connects every
feature it normalises together. Biases and batch norm's ``beta`` create no paths: a unit fed
only by constants is not reached, so the weights that read it are ineffective (they act as
biases). Self-attention has its rules in :mod:`.exact_attention`. Operations outside this
vocabulary (a matmul between activations outside attention, a transposed convolution) leave
the exact count unavailable, with the reason in the report's notes; the channel-level count
stays.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sigprop.diagnostics.collapse.from_fx import module_layer, module_weight_layers
from sigprop.diagnostics.collapse.ops import Unmappable
from sigprop.diagnostics.collapse.report import CollapseReport
from sigprop.nn.kinds import WEIGHT_KINDS, is_dct_layer

__all__ = [
    "FLOAT32_COUNTS",
    "FLOAT64_BYTES",
    "averaged",
    "binarise",
    "count_bound",
    "counting_dtype",
    "effective_masks",
    "with_exact",
    "with_masks",
]

#: Memory for the 0/1 weight copies and their gradients up to which float64 is used.
FLOAT64_BYTES = 1 << 29
#: A bound on every count below which the counts are made in float32 (module doc).
FLOAT32_COUNTS = 1 << 24

_IDENTITY_KINDS = frozenset("act dropout identity scale".split())
_LAYOUT_KINDS = frozenset(
    "flatten reshape permute transpose expand select split getitem cat".split()
)


class _Binarise(torch.autograd.Function):
    """``x > t`` forward, ``g > t`` backward: booleans both ways (module doc)."""

    @staticmethod
    def forward(ctx, x, t):
        ctx.t = t
        return (x > t).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        return (g > ctx.t).to(g.dtype), None


def _conv(x, kept, module) -> torch.Tensor:
    dims = kept.ndim - 2
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise Unmappable(f"padding mode {module.padding_mode!r} of the layer")
    fn = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    padding = module.padding
    if isinstance(padding, str):
        pass  # "same"/"valid": conv accepts them
    return fn(x, kept, None, module.stride, padding, module.dilation, module.groups)


def _pool(node, module, x) -> torch.Tensor:
    """Window OR of max/avg pooling (module or functional) as a window sum."""
    if module is not None:
        kernel, stride, padding = module.kernel_size, module.stride, module.padding
        ceil = module.ceil_mode
        dilation = getattr(module, "dilation", 1)
    else:
        args = list(node.attrs.get("args", ()))
        kw = dict(node.attrs.get("kwargs", {}))
        names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode"]
        if node.kind == "avgpool":
            names = ["kernel_size", "stride", "padding", "ceil_mode"]
        vals = dict(zip(names, args))
        vals.update({k: v for k, v in kw.items() if k in names})
        kernel = vals["kernel_size"]
        stride = vals.get("stride") or kernel
        padding, ceil = vals.get("padding", 0), vals.get("ceil_mode", False)
        dilation = vals.get("dilation", 1)
    if dilation not in (1, (1,), (1, 1), (1, 1, 1)):
        raise Unmappable("dilated pooling")
    return window_or(x, kernel, stride, padding, ceil)


def _adaptive(node, module, x) -> torch.Tensor:
    size = module.output_size if module is not None else (list(node.attrs["args"]) or [None])[0]
    return adaptive_or(x, size)


def window_or(x: torch.Tensor, kernel, stride, padding, ceil_mode: bool) -> torch.Tensor:
    """A pooling window's OR of a 0/1 map (max and average pooling alike, module doc)."""
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[x.ndim - 3]
    return averaged(fn, x, kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=True)


def adaptive_or(x: torch.Tensor, size) -> torch.Tensor:
    """An adaptive pool's window OR of a 0/1 map."""
    fn = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[x.ndim - 3]
    return averaged(fn, x, size)


def scale_cut(x: torch.Tensor, gamma: Any, channel_dim: int) -> torch.Tensor:
    """``x`` with the units of a normalisation whose scale ``gamma`` is 0 cut (``gamma`` on
    the channel axis 1, or on the trailing axes for ``channel_dim = -1``; not a tensor:
    nothing cut)."""
    if not isinstance(gamma, torch.Tensor):
        return x
    keep = (gamma.detach() != 0).to(x.dtype)
    if channel_dim == 1:
        keep = keep.reshape(1, -1, *[1] * (x.ndim - 2))
    return x * keep


def norm_mix(x: torch.Tensor, n_last: int) -> torch.Tensor:
    """Layer norm over the last ``n_last`` axes connects every unit it normalises."""
    dims = tuple(range(x.ndim - n_last, x.ndim))
    return binarise(x.sum(dims, keepdim=True).expand_as(x))


def group_mix(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Group norm connects every unit of a channel group."""
    grouped = x.reshape(x.shape[0], groups, -1)
    return binarise(grouped.sum(-1, keepdim=True).expand_as(grouped)).reshape(x.shape)


def path_or(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A sum or product of 0/1 tensors: the OR of their paths (sum, then binarise)."""
    if len(tensors) == 1:
        return tensors[0]
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return binarise(total)


def _gamma(x, module, channel_dim: int) -> torch.Tensor:
    return scale_cut(
        x, getattr(module, "weight", None) if module is not None else None, channel_dim
    )


def _node_value(node, module, args, env, kept_of) -> Any:
    kind = node.kind
    if kind in WEIGHT_KINDS:
        if is_dct_layer(module):
            raise Unmappable(f"{node.module}: the DCT offset of a DCT-plus-sparse layer")
        (x,) = args
        k = kept_of(node.module, module)
        return binarise(F.linear(x, k) if k.ndim == 2 else _conv(x, k, module))
    if kind in _IDENTITY_KINDS:
        return args[0]
    if kind == "batchnorm":
        return _gamma(args[0], module, 1)
    if kind == "layernorm":
        n = len(module.normalized_shape) if module is not None else 1
        return _gamma(norm_mix(args[0], n), module, -1)
    if kind == "groupnorm" and module is not None:
        return _gamma(group_mix(args[0], module.num_groups), module, 1)
    if kind in ("maxpool", "avgpool"):
        return _pool(node, module, args[0])
    if kind in ("adaptive_avgpool", "adaptive_maxpool"):
        return _adaptive(node, module, args[0])
    if kind == "mean":
        a = list(node.attrs.get("args", ()))
        kw = dict(node.attrs.get("kwargs", {}))
        dims = kw.get("dim", a[0] if a else None)
        keep = kw.get("keepdim", a[1] if len(a) > 1 else False)
        return binarise(args[0].sum(dims, keepdim=keep))
    if kind in ("add", "mul"):
        return path_or([a for a in args if isinstance(a, torch.Tensor)])
    if kind in _LAYOUT_KINDS:
        return None  # run the node itself on the 0/1 tensors
    raise Unmappable(f"{node.name} ({node.attrs.get('reason', kind)})")


def counting_dtype(numel: int, bound: int | None = None) -> torch.dtype:
    """float32 where ``bound`` bounds every count below :data:`FLOAT32_COUNTS`
    (:func:`count_bound`); otherwise float64 unless the 0/1 copies of ``numel`` weights and
    their gradients would exceed :data:`FLOAT64_BYTES`, then float32 (module doc)."""
    if bound is not None and bound < FLOAT32_COUNTS:
        return torch.float32
    return torch.float64 if 16 * numel <= FLOAT64_BYTES else torch.float32


def count_bound(sizes: list[int], users: int) -> int:
    """A bound on every count of the computation: a forward count sums 0/1 products over a
    fan-in, a window or a reduction, a weight's gradient over the positions it joins, a
    unit's gradient over a fan-out -- each within one activation or weight tensor of at most
    ``max(sizes)`` elements (per sample) -- and a tensor read by ``users`` operations
    accumulates that many such gradients."""
    return max(sizes) * max(1, users)


def _count_bound(captured: Any, weights: list[int]) -> int | None:
    """:func:`count_bound` of a captured graph (``None`` where its shapes were not run)."""
    nodes = list(captured.nodes.values())
    sizes = [math.prod(n.shape) for n in nodes if n.shape is not None]
    if not sizes:
        return None
    return count_bound(weights + sizes, max(len(n.fx.users) for n in nodes if n.fx is not None))


def binarise(x: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """Binarise an integer count (threshold 0.5: robust to a convolution's rounding)."""
    return _Binarise.apply(x, t)


def averaged(fn, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """An averaging pool of a 0/1 map, binarised both ways at 0: the average is positive iff
    a position of the window is 1 (a positive rational, never rounded to 0), and the
    gradient the pool spreads as ``g / window`` is made 0/1 again before it flows on."""
    return binarise(fn(binarise(x, 0.0), *args, **kwargs), 0.0)


def effective_masks(captured: Any) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """Boolean effective-weight masks by layer name for the captured input shape, or
    ``(None, reason)`` when the graph uses an operation outside the module doc's list."""
    # attention's rules build on this module's: imported here, not at the top (a cycle)
    from sigprop.diagnostics.collapse.exact_attention import ATTENTION_KINDS, attention_value

    model = captured.model
    kept: dict[str, torch.Tensor] = {}  # 0/1 leaves whose gradient marks the paths
    keeps: dict[str, torch.Tensor] = {}  # the same as booleans
    weights = [layer.weight.numel() for layer in module_weight_layers(model)]
    dtype = counting_dtype(sum(weights), _count_bound(captured, weights))

    def kept_of(name: str, module: nn.Module, param: str = "weight") -> torch.Tensor:
        if name not in kept:
            layer = module_layer(name, module, param)
            keep = layer.mask != 0 if layer.mask is not None else layer.weight != 0
            keeps[name] = keep
            kept[name] = keep.to(dtype).requires_grad_(True)
        return kept[name]

    env: dict[str, Any] = {}
    real: dict[str, Any] = {}  # real values of constants: buffers, defaults, shape arithmetic
    outputs = []

    def load(a):
        return env[a.name] if isinstance(a, torch.fx.Node) else a

    def constant(a):
        if not isinstance(a, torch.fx.Node):
            return a
        if a.name not in real:
            raise Unmappable(f"an attention mask computed in forward ({a.name})")
        return real[a.name]

    try:
        with torch.enable_grad():
            for node in captured.nodes.values():
                fx = node.fx
                if node.kind == "input":
                    env[node.name] = torch.ones((1, *captured.input_shape), dtype=dtype)
                    continue
                if node.kind == "output":
                    outputs = [env[n] for n in node.inputs]
                    continue
                if node.kind == "constant":  # a forward argument fixed at its default
                    env[node.name] = real[node.name] = fx.args[0] if fx.args else None
                    continue
                if node.kind == "param":  # a constant: no path starts at it (zeros)
                    value = captured.attribute(fx)
                    is_t = isinstance(value, torch.Tensor)
                    env[node.name] = torch.zeros(value.shape, dtype=dtype) if is_t else value
                    real[node.name] = value
                    continue
                if node.kind == "meta":  # shape queries feed reshapes; asserts are skipped
                    name = str(getattr(fx.target, "__name__", fx.target))
                    asserting = name.startswith("_assert")
                    env[node.name] = None if asserting else _run(fx, load, model)
                    if not asserting:
                        real[node.name] = env[node.name]
                    continue
                args = torch.fx.node.map_arg(fx.args, load)
                module = model.get_submodule(node.module) if node.module is not None else None
                if not any(isinstance(a, torch.Tensor) for a in _flat(args)):
                    env[node.name] = real[node.name] = _run(fx, load, model)  # shape arithmetic
                    continue
                if node.kind in ATTENTION_KINDS:
                    env[node.name] = attention_value(node, module, fx, load, constant, kept_of)
                    continue
                value = _node_value(node, module, args, env, kept_of)
                env[node.name] = value if value is not None else _run(fx, load, model)
            tensors = [o for o in outputs if isinstance(o, torch.Tensor)]
            if not tensors:
                return None, "the model returns no tensor"
            total = sum(t.sum() for t in tensors)
            if not total.requires_grad:
                return {
                    name: torch.zeros_like(k, dtype=torch.bool) for name, k in kept.items()
                }, None
            total.backward()
    except Unmappable as exc:
        return None, f"exact effective sparsity not computed: {exc} is not supported"
    return {
        name: keeps[name] & (k.grad > 0.5)
        if k.grad is not None
        else torch.zeros_like(k, dtype=torch.bool)
        for name, k in kept.items()
    }, None


def _flat(args) -> list:
    out = []
    torch.fx.node.map_aggregate(args, lambda a: out.append(a) or a)
    return out


def _run(fx, load, model) -> Any:
    """Run an fx node on the values computed so far (layout ops, shape queries)."""
    args = torch.fx.node.map_arg(fx.args, load)
    kwargs = torch.fx.node.map_arg(fx.kwargs, load)
    if fx.op == "call_function":
        return fx.target(*args, **kwargs)
    if fx.op == "call_method":
        return getattr(args[0], fx.target)(*args[1:], **kwargs)
    if fx.op == "call_module":
        return model.get_submodule(fx.target)(*args, **kwargs)
    raise Unmappable(f"node {fx.name} ({fx.op})")


def with_exact(report: CollapseReport, captured: Any) -> CollapseReport:
    """The report with per-layer ``effective_kept`` the exact count (module doc), the
    channel-level count kept as ``channel_effective_kept``."""
    masks, reason = effective_masks(captured)
    return with_masks(report, masks, reason, captured.input_shape)


def with_masks(
    report: CollapseReport, masks: dict | None, reason: str | None, input_shape: Any
) -> CollapseReport:
    """:func:`with_exact` from effective-weight masks by layer name computed for one input
    shape (``None`` with the ``reason`` they could not be: the channel-level count stays,
    as a lower bound)."""
    if masks is None:
        return report.with_notes(reason, "effective sparsity at channel level (a lower bound)")
    layers = []
    for layer in report.layers:
        if layer.name not in masks:  # a projection inside an attention leaf
            return report.with_notes(
                f"exact effective sparsity not computed: layer {layer.name!r} is not in the "
                "traced graph",
                "effective sparsity at channel level (a lower bound)",
            )
        eff = int(torch.count_nonzero(masks[layer.name]))  # 6x a bool sum (VGG: 10^8)
        layers.append(
            dataclasses.replace(
                layer,
                effective_kept=eff,
                effective_density=eff / layer.total if layer.total else 0.0,
                effectively_collapsed=eff == 0,
                channel_effective_kept=layer.effective_kept,
            )
        )
    eff_total = sum(layer.effective_kept for layer in layers)
    return dataclasses.replace(
        report,
        layers=tuple(layers),
        effective_kept=eff_total,
        effective_sparsity=1.0 - eff_total / report.total,
        effectively_collapsed_layers=tuple(
            layer.name for layer in layers if layer.effectively_collapsed and not layer.collapsed
        ),
        connected=bool(report.connected) and eff_total > 0,
        effective_exact=True,
        channel_effective_kept=report.effective_kept,
        input_shape=tuple(input_shape),
    )
