"""Any traced model linearised at one input: J·t for a batch of tangents at the cost of a
forward pass.

``torch.func.jvp`` recomputes the primal pass with every product and, on convolutions in
float64, runs 20–30 times slower than a plain forward pass on this kind of machine;
Lanczos needs hundreds of products. :class:`LinearisedGraph` runs the primal pass once
through the :func:`~sigprop.diagnostics.graph.capture`d graph and stores what each node's
derivative needs (φ′(h) of activations, the argmax of max pooling, the scale of eval-mode
batch norm, the weights the layers multiply by, the primal operands of products). Then
``forward(t)`` maps a batch of tangents t (n, *input_shape) through the linear parts only:
layers without their bias, activations as multiplications by φ′(h), every linear operation
(pooling, reshapes, residual additions, concatenation, scaling) applied to the tangents as
it is. Products of two tensors follow the product rule. Jᵀ·u is the vector-Jacobian product
of this linear map (autograd through it), also batched.

A graph with a node whose derivative is not one of these (train-mode batch norm or
dropout, layer norm, attention, an unmapped operation) is not linearisable here:
:func:`linearisable` says why and the caller uses ``torch.func`` instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from sigprop.diagnostics.graph import CapturedGraph
from sigprop.diagnostics.spec import effective_weight
from sigprop.nn.masked import MaskedConv1d, MaskedConv2d, MaskedLinear
from sigprop.validate import InvalidInput

__all__ = ["LinearisedGraph", "linearisable"]

#: Kinds whose derivative is the operation itself applied to the tangents.
_LINEAR_KINDS = {
    "avgpool", "adaptive_avgpool", "flatten", "reshape", "permute", "transpose", "expand",
    "select", "getitem", "split", "cat", "identity", "mean", "scale", "add",
}  # fmt: skip
_SKIPPED = {"param", "constant", "meta", "output", "input"}
_STANDARD_CONV = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3, MaskedConv1d: 1, MaskedConv2d: 2}
_MAX_POOL = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}


def linearisable(captured: CapturedGraph) -> str | None:
    """``None`` if :class:`LinearisedGraph` handles every node of ``captured``, else why not."""
    modules = dict(captured.graph_module.named_modules())
    for node in captured.nodes.values():
        kind = node.kind
        divides = node.attrs.get("divide")
        if kind == "scale" and divides and not isinstance(node.fx.args[0], torch.fx.Node):
            return f"{node.name} (a number divided by a tensor)"
        if kind in _SKIPPED or kind in _LINEAR_KINDS or kind in ("act", "mul", "matmul"):
            continue
        if kind in ("linear", "conv", "dct_linear", "dct_conv"):
            continue
        target = modules.get(node.fx.target) if node.fx.op == "call_module" else None
        if (
            kind == "batchnorm"
            and target is not None
            and not target.training
            and getattr(target, "running_var", None) is not None
        ):
            continue
        if kind == "dropout" and (target is None or not target.training):
            continue
        if kind == "maxpool" and type(target) in _MAX_POOL:
            continue
        where = node.module or node.name
        return f"{where} ({kind}{', train mode' if getattr(target, 'training', False) else ''})"
    return None


def _elementwise_derivative(f, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(h) and f′(h) of an elementwise f: the gradient of Σ f(h) (one backward pass, much
    cheaper than forward-mode AD here)."""
    with torch.enable_grad():
        leaf = h.detach().requires_grad_(True)
        value = f(leaf + 0.0)  # not the leaf itself: in-place activations (ReLU(inplace=True))
        (deriv,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), deriv


def _view(vec: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast over (n, C, *spatial)."""
    return vec.reshape(1, -1, *([1] * (ndim - 2)))


class LinearisedGraph:
    """The captured model linearised at one sample ``x`` (leading batch dimension 1)."""

    def __init__(self, captured: CapturedGraph, x: torch.Tensor) -> None:
        why = linearisable(captured)
        if why is not None:
            raise InvalidInput(f"the model is not linearisable at {why}")
        self.captured = captured
        self.modules = dict(captured.graph_module.named_modules())
        self.in_shape = tuple(x.shape[1:])
        self.store: dict[str, Any] = {}  # per node: what its derivative needs
        needs_primal = {
            src for n in captured.nodes.values() if n.kind in ("mul", "matmul") for src in n.inputs
        }
        self.primal: dict[str, torch.Tensor] = {}
        env: dict[str, Any] = {}
        with torch.no_grad():
            for node in captured.nodes.values():
                fx = node.fx
                if fx.op == "placeholder":
                    value = x if node.kind == "input" else fx.args[0] if fx.args else None
                elif fx.op == "output":
                    out = env[captured.outputs[0]]
                    break
                else:
                    args, kwargs = torch.fx.node.map_arg(
                        (fx.args, fx.kwargs), lambda a: env[a.name]
                    )
                    value = self._primal(node, args, kwargs)
                env[node.name] = value
                if node.name in needs_primal:
                    self.primal[node.name] = value
        self.out_shape = tuple(out.shape[1:])
        self.n_in = math.prod(self.in_shape)
        self.n_out = math.prod(self.out_shape)

    # ------------------------------------------------------------------ primal pass
    def _primal(self, node, args, kwargs):
        fx = node.fx
        if fx.op == "get_attr":
            return self._param(fx)
        if fx.op == "call_module":
            module = self.modules[fx.target]
            if node.kind == "act":
                value, self.store[node.name] = _elementwise_derivative(module, args[0])
                return value
            if node.kind == "maxpool":
                pool = _MAX_POOL[type(module)]
                value, idx = pool(
                    args[0], module.kernel_size, module.stride, module.padding,
                    module.dilation, ceil_mode=module.ceil_mode, return_indices=True,
                )  # fmt: skip
                self.store[node.name] = idx
                return value
            if node.kind == "batchnorm":
                scale = torch.rsqrt(module.running_var + module.eps)
                if module.weight is not None:
                    scale = scale * module.weight
                self.store[node.name] = scale.detach()
                return module(*args, **kwargs)
            if node.kind in ("linear", "conv", "dct_linear", "dct_conv"):
                self.store[node.name] = self._weight_step(module, args[0])
            return module(*args, **kwargs)
        fn = fx.target if fx.op == "call_function" else None
        if node.kind == "act":
            h = args[0]
            f = (lambda t: fn(t, *args[1:], **kwargs)) if fn else None
            if f is None:
                f = lambda t: getattr(t, fx.target)(*args[1:], **kwargs)  # noqa: E731
            value, self.store[node.name] = _elementwise_derivative(f, h)
            return value
        if fn is not None:
            return fn(*args, **kwargs)
        return getattr(args[0], fx.target)(*args[1:], **kwargs)

    def _weight_step(self, module: nn.Module, h: torch.Tensor):
        """How a weight layer maps tangents: its weight without the bias, or its affine map
        minus its value at zero for layers with another forward (DCT-plus-sparse)."""
        if type(module) in (nn.Linear, MaskedLinear) or (
            isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward
        ):
            return ("linear", effective_weight(module).detach())
        dims = _STANDARD_CONV.get(type(module))
        if dims is not None and module.padding_mode == "zeros":
            conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
            weight = effective_weight(module).detach()
            geometry = (module.stride, module.padding, module.dilation, module.groups)
            return ("conv", (conv, weight, geometry))
        return ("affine", (module, module(torch.zeros_like(h))))

    # ------------------------------------------------------------------ tangents
    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """J applied to each row of ``t`` (shape (n, *in_shape)); returns (n, *out_shape)."""
        env: dict[str, Any] = {}
        values: dict[str, Any] = {}  # parameters and constants, for shape queries
        n = t.shape[0]
        for node in self.captured.nodes.values():
            fx = node.fx
            if node.kind == "input":
                env[node.name] = t
                continue
            if fx.op == "output":
                return env[self.captured.outputs[0]]
            if node.kind in ("param", "constant"):
                env[node.name] = None  # no tangent
                values[node.name] = self._param(fx)
                continue
            if node.kind == "meta":  # shape queries see the tangents' batch size
                args, kwargs = torch.fx.node.map_arg(
                    (fx.args, fx.kwargs),
                    lambda a: env[a.name] if env[a.name] is not None else values.get(a.name),
                )
                env[node.name] = self._call(fx, args, kwargs)
                continue
            env[node.name] = self._tangent(node, env, n)
        raise AssertionError("graph without output")  # capture always has one

    def _param(self, fx):
        if fx.op == "placeholder":
            return fx.args[0] if fx.args else None
        return self.captured.attribute(fx)

    def _call(self, fx, args, kwargs):
        if fx.op == "call_function":
            return fx.target(*args, **kwargs)
        if fx.op == "call_method":
            return getattr(args[0], fx.target)(*args[1:], **kwargs)
        return self.modules[fx.target](*args, **kwargs)

    def _zeros_like(self, name: str, n: int, like: torch.Tensor) -> torch.Tensor:
        node = self.captured.nodes[name]
        shape = (n, *node.shape) if node.batched else tuple(node.shape)
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def _tangent(self, node, env, n):
        fx, kind = node.fx, node.kind
        tangents = [env[s] for s in node.inputs]
        if all(v is None for v in tangents):
            return None  # depends on parameters only
        if kind == "act":
            return env[node.inputs[0]] * self.store[node.name]
        if kind in ("linear", "conv", "dct_linear", "dct_conv"):
            step, payload = self.store[node.name]
            x = env[node.inputs[0]]
            if step == "linear":
                return F.linear(x, payload)
            if step == "conv":
                conv, weight, (stride, padding, dilation, groups) = payload
                return conv(x, weight, None, stride, padding, dilation, groups)
            module, offset = payload
            return module(x) - offset
        if kind == "batchnorm":
            x = env[node.inputs[0]]
            return x * _view(self.store[node.name], x.ndim)
        if kind == "maxpool":
            x = env[node.inputs[0]]
            idx = self.store[node.name]
            flat = x.flatten(2)
            gathered = flat.gather(2, idx.flatten(2).expand(x.shape[0], -1, -1))
            return gathered.reshape(x.shape[0], *idx.shape[1:])
        if kind == "dropout":
            return env[node.inputs[0]]
        if kind == "add":
            return self._add(node, env)
        if kind in ("mul", "matmul"):
            a, b = node.inputs
            ta, tb = env[a], env[b]
            op = fx.target if fx.op == "call_function" else None

            def apply(u, v):
                return op(u, v) if op is not None else getattr(u, fx.target)(v)

            terms = []
            if ta is not None:
                terms.append(apply(ta, self.primal[b]))
            if tb is not None:
                terms.append(apply(self.primal[a], tb))
            return terms[0] if len(terms) == 1 else terms[0] + terms[1]
        # any other linear operation: apply it, with zeros where a tensor input has none
        args, kwargs = torch.fx.node.map_arg(
            (fx.args, fx.kwargs),
            lambda a: (
                env[a.name]
                if env[a.name] is not None
                else self._zeros_like(a.name, n, next(v for v in tangents if v is not None))
            ),
        )
        return self._call(fx, args, kwargs)

    def _add(self, node, env):
        """Sum (or difference) of the tangents of the tensor operands; numbers drop out."""
        fx = node.fx
        operands = list(fx.args[:2])
        alpha = fx.kwargs.get("alpha", 1)
        out = None
        for position, arg in enumerate(operands):
            if not isinstance(arg, torch.fx.Node) or env[arg.name] is None:
                continue
            term = env[arg.name]
            if position == 1:
                term = term * alpha
                if node.attrs.get("subtract"):
                    term = -term
            out = term if out is None else out + term
        return out
