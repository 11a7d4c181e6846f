"""What the watcher measures on one weight layer, in every mask format.

The weight layers are those of :func:`sigprop.nn.kinds.is_weight_layer` (the one
classification of the package), keyed by the module's qualified name (``"<root>"`` for a
model that is itself one layer). For each, :func:`trained_tensor` finds the tensor the
optimiser updates and the mask of its kept entries:

========================================  ==================  ==========================
format                                    trained tensor      mask
========================================  ==================  ==========================
``nn.Linear`` / ``nn.Conv*`` (dense)      ``weight``          none (every entry kept)
sigprop masked / DCT-plus-sparse layers   ``weight``          ``weight_mask`` buffer
``torch.nn.utils.prune``                  ``weight_orig``     ``weight_mask`` buffer
DCT-plus-sparse, compact storage          ``values`` (nnz)    none (the support is fixed)
========================================  ==================  ==========================

Weight norms are computed on the kept entries (``tensor ⊙ mask``), so a format whose
stored tensor keeps stale values at pruned positions (``weight_orig``) reads the same as
one that zeroes them; gradients are read as the optimiser reads them (:func:`grad_norms`). Everything stays a tensor on the model's device (no synchronisation);
the caller converts a whole record at once.
"""

from __future__ import annotations

import torch
from torch import nn

from sigprop.nn.kinds import is_weight_layer

__all__ = [
    "PreactivationProbe",
    "grad_norms",
    "kept_counts",
    "trained_tensor",
    "watched_layers",
    "weight_norms",
]


def watched_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every weight layer of ``model``, in
    ``named_modules()`` order."""
    return [(name or "<root>", m) for name, m in model.named_modules() if is_weight_layer(m)]


def trained_tensor(module: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(tensor the optimiser updates, 0/1 mask of its kept entries or None)`` (module
    docstring); ``(None, None)`` for a layer with neither. Looked up at every call, so a
    layer converted during training (``to_compact_storage``, ``prune.remove``) is followed."""
    params, buffers = module._parameters, module._buffers
    mask = buffers.get("weight_mask")
    for name in ("weight", "weight_orig"):
        tensor = params.get(name)
        if isinstance(tensor, torch.Tensor):
            if not isinstance(mask, torch.Tensor) or mask.shape != tensor.shape:
                mask = None
            return tensor, mask
    values = params.get("values")
    if isinstance(values, torch.Tensor):
        return values, None
    weight = getattr(module, "weight", None)
    return (weight, None) if isinstance(weight, torch.Tensor) else (None, None)


def _kept(tensor: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return tensor if mask is None else tensor * mask.to(tensor.dtype)


def grad_norms(layers, missing: float = float("nan")) -> torch.Tensor:
    """Per layer ‖∇‖₂ of the trained tensor's ``.grad`` (float32), ``missing`` where a layer
    has no gradient.

    The gradient is taken as stored, which is what the optimiser reads: in every masked
    format it is already zero at pruned positions (sigprop's layers zero it in a hook,
    ``weight_orig.grad`` of ``torch.nn.utils.prune`` is the chain rule through the mask,
    and ``masked_step_`` zeroes it again), so this is the norm on the kept weights. It is
    *not* re-masked with the current mask: a mask changed after the optimiser step (DSR)
    must not change the gradient that step used.
    """
    out = []
    for _, module in layers:
        tensor, _ = trained_tensor(module)
        grad = None if tensor is None else tensor.grad
        if grad is None:
            device = tensor.device if tensor is not None else torch.device("cpu")
            out.append(torch.full((), missing, device=device))
        else:
            out.append(torch.linalg.vector_norm(grad.detach()).float())
    return _stack(out)


def weight_norms(layers) -> torch.Tensor:
    """Per layer ‖W ⊙ M‖₂ of the kept weights (float32)."""
    out = []
    for _, module in layers:
        tensor, mask = trained_tensor(module)
        if tensor is None:
            out.append(torch.full((), float("nan")))
        else:
            out.append(torch.linalg.vector_norm(_kept(tensor.detach(), mask)).float())
    return _stack(out)


def kept_counts(layers) -> tuple[torch.Tensor, list[int]]:
    """Per layer the number of kept weights (float64 tensor) and the number of weights.

    A layer with a ``weight_mask`` buffer counts its nonzero mask entries (compact storage
    included: the mask is the support); a dense layer counts its nonzero weights.
    """
    counts, numels = [], []
    for _, module in layers:
        mask = module._buffers.get("weight_mask")
        if isinstance(mask, torch.Tensor):
            counts.append(torch.count_nonzero(mask.detach()).double())
            numels.append(int(mask.numel()))
            continue
        tensor, _ = trained_tensor(module)
        if tensor is None:
            counts.append(torch.full((), float("nan"), dtype=torch.float64))
            numels.append(0)
        else:
            counts.append(torch.count_nonzero(tensor.detach()).double())
            numels.append(int(tensor.numel()))
    return _stack(counts), numels


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    devices = {v.device for v in values}
    if len(devices) > 1:  # a model spread over devices: gather on the first one
        first = values[0].device
        values = [v.to(first) for v in values]
    return torch.stack(values)


class PreactivationProbe:
    """q^l, the mean squared output of every weight layer, from forward hooks.

    ``q^l = (1/(B·N_l)) Σ_b Σ_i (h_i^l(x_b))²`` over the batch, units and positions — the
    empirical counterpart of the mean-field length map (Poole et al. 2016, arXiv 1606.05340,
    eq. 3). :meth:`arm` registers the hooks; every forward call *with autograd enabled*
    (a training forward: evaluation under ``torch.no_grad``/``inference_mode`` is ignored)
    adds its moment, and :meth:`collect` returns per layer the mean over the calls since
    :meth:`arm` (one call: exactly ``output.float().square().mean()``; several — gradient
    accumulation, a shared layer — their mean weighted by size) and removes the hooks.
    :meth:`on_probe` measures a given batch instead, in ``eval()`` mode without gradients.
    The hooks read ``output.detach()`` only and return nothing, so the forward and
    backward passes are untouched.
    """

    def __init__(self, layers) -> None:
        self.layers = list(layers)
        self._handles: list = []
        self._sums: list[list[tuple[torch.Tensor, int]]] = [[] for _ in self.layers]

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def arm(self, *, training_only: bool = True) -> None:
        self.disarm()
        self._sums = [[] for _ in self.layers]
        for i, (_, module) in enumerate(self.layers):
            self._handles.append(module.register_forward_hook(self._hook(i, training_only)))

    def _hook(self, i: int, training_only: bool):
        sums = self._sums

        def hook(_module, _inputs, output):
            if training_only and not torch.is_grad_enabled():
                return
            if isinstance(output, torch.Tensor) and output.numel() > 0:
                sums[i].append((output.detach().float().square().mean(), output.numel()))

        return hook

    def disarm(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def collect(self) -> torch.Tensor:
        """Per layer q over the calls since :meth:`arm` (NaN for a layer not called); the
        hooks are removed."""
        self.disarm()
        device = next((c[0][0].device for c in self._sums if c), torch.device("cpu"))
        out = []
        for calls in self._sums:
            if not calls:
                out.append(torch.full((), float("nan"), device=device))
            elif len(calls) == 1:
                out.append(calls[0][0])
            else:
                total = sum(n for _, n in calls)
                out.append(sum(m.double() * (n / total) for m, n in calls).float())
        self._sums = [[] for _ in self.layers]
        return _stack(out) if out else torch.zeros(0)

    def on_probe(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """q of every layer on ``inputs``, in ``eval()`` mode without gradients (the model's
        mode is restored)."""
        self.arm(training_only=False)
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(inputs)
        finally:
            model.train(was_training)
            self.disarm()
        return self.collect()
