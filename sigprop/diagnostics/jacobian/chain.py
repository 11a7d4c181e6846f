"""Chains (``nn.Sequential`` of weight layers, elementwise activations, affine maps and
reshapes): the tangent matrix accumulated as J ← D_l(W_l J) in one forward pass."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from sigprop.diagnostics.spec import effective_weight
from sigprop.nn.activation import is_elementwise
from sigprop.nn.kinds import is_weight_layer
from sigprop.nn.masked import MaskedLinear

__all__ = ["chain_ops"]

#: Affine modules without weights that a chain may contain (their linear part is applied to
#: tangents as ``m(t) - m(0)``).
_AFFINE_EXTRA = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
)
_RESHAPE = (nn.Flatten, nn.Unflatten, nn.Identity)


def chain_ops(model: nn.Module, prefix: str = "") -> list[tuple[str, str, nn.Module]] | None:
    """Flatten ``model`` into ``(kind, name, module)`` ops if it is a chain, else ``None``.

    kinds: ``"weight"`` (linear/conv/masked/DCT layer), ``"affine"`` (other affine maps:
    average pooling, eval-mode batch norm), ``"elementwise"`` (activations),
    ``"reshape"`` (Flatten, Identity, eval-mode Dropout).
    """
    if is_weight_layer(model):
        return [("weight", prefix, model)]
    if not isinstance(model, nn.Sequential):
        return None
    ops: list[tuple[str, str, nn.Module]] = []
    for child_name, child in model.named_children():
        name = f"{prefix}.{child_name}" if prefix else child_name
        if is_weight_layer(child):
            ops.append(("weight", name, child))
        elif isinstance(child, nn.Sequential):
            sub = chain_ops(child, name)
            if sub is None:
                return None
            ops.extend(sub)
        elif is_elementwise(child):
            ops.append(("elementwise", name, child))
        elif isinstance(child, _RESHAPE) or (isinstance(child, nn.Dropout) and not child.training):
            ops.append(("reshape", name, child))
        elif isinstance(child, _AFFINE_EXTRA) or (
            isinstance(child, nn.modules.batchnorm._BatchNorm) and not child.training
        ):
            ops.append(("affine", name, child))
        else:
            return None
    return ops


def _in_dtype(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    tensors = list(module.parameters()) + list(module.buffers())
    if all(t.dtype == dtype for t in tensors if t.is_floating_point()):
        return module
    return copy.deepcopy(module).to(dtype)


def _plain_linear_weight(module: nn.Module) -> torch.Tensor | None:
    """W_eff of a layer whose forward is exactly ``F.linear(x, W_eff, b)``: an ``nn.Linear`` or
    sigprop ``MaskedLinear``, subclasses included as long as they keep that ``forward``, so
    tangents can skip the bias; ``None`` for anything else."""
    if isinstance(module, nn.Linear) and type(module).forward in (
        nn.Linear.forward,
        MaskedLinear.forward,
    ):
        return effective_weight(module).detach()
    return None


class _Linearised:
    """The chain linearised at one input: the stored D_l and the layers' linear parts."""

    def __init__(self, ops, x: torch.Tensor):
        # x: one sample with a leading batch dimension of 1
        self.steps: list[tuple[str, object]] = []
        self.in_shape = tuple(x.shape[1:])
        h = x
        with torch.no_grad():
            for kind, _, module in ops:
                if kind in ("weight", "affine"):
                    weight = _plain_linear_weight(module) if h.ndim == 2 else None
                    if weight is not None:
                        self.steps.append(("matmul", weight))
                    else:
                        offset = module(torch.zeros_like(h))
                        self.steps.append(("affine", (module, offset)))
                    h = module(h)
                elif kind == "elementwise":
                    # for an elementwise map, the jvp along all-ones is φ′(h) itself
                    h_next, deriv = torch.func.jvp(module, (h,), (torch.ones_like(h),))
                    self.steps.append(("scale", deriv))
                    h = h_next
                else:
                    self.steps.append(("reshape", module))
                    h = module(h)
        self.out_shape = tuple(h.shape[1:])

    def forward(self, t: torch.Tensor, *, identity: bool = False) -> torch.Tensor:
        """Apply J to a batch of tangents ``t`` of shape (n, *in_shape).

        ``identity=True`` says ``t`` is the identity (ours, so it may be overwritten): a
        leading plain linear layer then gives Wᵀ without a product.
        """
        inplace = not torch.is_grad_enabled()
        for i, (kind, payload) in enumerate(self.steps):
            if kind == "matmul":
                if identity and i == 0:
                    t = payload.T.contiguous()
                else:
                    t = torch.nn.functional.linear(t, payload)
                inplace = not torch.is_grad_enabled()  # a fresh tensor of ours
            elif kind == "affine":
                module, offset = payload
                t = module(t)
                t = t.sub_(offset) if inplace else t - offset
            elif kind == "scale":
                t = t.mul_(payload) if inplace and (identity or i > 0) else t * payload
            else:
                t = payload(t)
        return t


def _weight_segments(ops) -> list[tuple[str, list]]:
    """Split a chain into segments that each start at a weight layer (ops before the first
    weight layer join the first segment)."""
    segments: list[tuple[str, list]] = []
    head: list = []
    for op in ops:
        if op[0] == "weight":
            segments.append((op[1], head + [op]))
            head = []
        elif segments:
            segments[-1][1].append(op)
        else:
            head.append(op)
    return segments


def _identity_tangents(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    n = math.prod(shape)
    return torch.eye(n, dtype=like.dtype, device=like.device).reshape(n, *shape)


def _chain_jacobian(ops, x: torch.Tensor) -> torch.Tensor:
    """Jᵀ (n_in × n_out) at one sample x (leading batch dim 1), by J ← D_l(W_l J) in one
    pass; row j is J e_j. The transpose is what the pass produces contiguously, and it has
    the same singular values."""
    lin = _Linearised(ops, x)
    with torch.no_grad():
        t = lin.forward(_identity_tangents(lin.in_shape, x), identity=True)
    return t.reshape(t.shape[0], -1)


def _func_jacobian(model: nn.Module, x: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    def f(xi):
        return model(xi.unsqueeze(0)).reshape(-1)

    n_in = x[0].numel()
    with torch.no_grad():
        n_out = f(x[0]).numel()
    if n_in < n_out:
        jac = (
            torch.func.jacfwd(f)(x[0])
            if chunk_size is None
            else _jacfwd_chunked(f, x[0], chunk_size)
        )
    else:
        jac = torch.func.jacrev(f, chunk_size=chunk_size)(x[0])
    return jac.reshape(n_out, n_in).detach()


def _jacfwd_chunked(f, x0: torch.Tensor, chunk_size: int) -> torch.Tensor:
    basis = _identity_tangents(tuple(x0.shape), x0)

    def column(v):
        return torch.func.jvp(f, (x0,), (v,))[1]

    cols = torch.func.vmap(column, chunk_size=chunk_size)(basis)
    return cols.T


def _layer_singular_values(ops, x: torch.Tensor) -> list[np.ndarray]:
    out = []
    h = x
    for _, segment in _weight_segments(ops):
        jac = _chain_jacobian(segment, h)
        out.append(torch.linalg.svdvals(jac).to(torch.float64).cpu().numpy())
        with torch.no_grad():
            for _, _, module in segment:
                h = module(h)
    return out
