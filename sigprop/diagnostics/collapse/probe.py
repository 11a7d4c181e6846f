"""A measured forward pass: does the output depend on the input at all?

Structure is not function: a network can be connected and still compute an output that is
exactly independent of its input at initialisation (ReLU6 clamping the one surviving sign of
a heavily pruned MobileNet-V2). :func:`with_probe` runs the module in eval mode on
:data:`PROBE_BATCH` standard-normal inputs (a fixed seed) and reports

* ``output_spread``: the largest ``|y_b - y_0|`` over the batch (0 exactly: the output does
  not depend on the input -- ``input_independent``);
* ``input_grad_norm``: the norm of ``d <y, r> / dx`` for a random direction ``r``;
* per weight layer, the output channels that are ``constant`` across the batch and every
  position, and those that are ``zero``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from sigprop.diagnostics.collapse.report import CollapseReport
from sigprop.nn.kinds import is_weight_layer

PROBE_BATCH = 8
_SEED = 0


def _first_tensor(y: Any) -> torch.Tensor | None:
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, (tuple, list)):
        for v in y:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def with_probe(report: CollapseReport, model: nn.Module, input_shape: Any) -> CollapseReport:
    if input_shape is None:
        return report.with_notes("probe not run: the input shape is unknown (--input-shape)")
    gen = torch.Generator().manual_seed(_SEED)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.randn((PROBE_BATCH, *input_shape), generator=gen).to(dtype).requires_grad_(True)
    channels: dict[str, dict[str, list[int]]] = {}
    names = {layer.name for layer in report.layers}

    def hook(name):
        def record(_module, _inputs, out):
            t = _first_tensor(out)
            if t is None or t.ndim < 2:
                return
            v = t.detach().transpose(0, 1).reshape(t.shape[1], -1)  # (channels, batch*pos)
            zero = (v == 0).all(dim=1)
            constant = (v == v[:, :1]).all(dim=1) & ~zero
            channels[name] = {
                "constant": [int(i) for i in torch.nonzero(constant).flatten()],
                "zero": [int(i) for i in torch.nonzero(zero).flatten()],
            }

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if n in names and is_weight_layer(m)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            y = _first_tensor(model(x))
            if y is None:
                return report.with_notes("probe not run: the model returns no tensor")
            spread = float((y.detach() - y.detach()[:1]).abs().max())
            r = torch.randn(y.shape, generator=gen).to(y.dtype)
            (grad,) = torch.autograd.grad((y * r).sum(), x, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    gnorm = 0.0 if grad is None else float(grad.norm())
    probe = {
        "batch": PROBE_BATCH,
        "input_shape": list(input_shape),
        "output_spread": spread,
        "input_grad_norm": gnorm,
        "input_independent": spread == 0.0,
        "channels": channels,
    }
    return dataclasses.replace(report, probe=probe)
