"""``gradient_flow(model, data, loss=...)``: per-layer weight-gradient norms at
initialisation next to the theory's ratios (re-exported by ``sigprop.diagnostics.measure``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sigprop._json import to_jsonable
from sigprop.diagnostics.measure import _check_inputs, _device, _model_in, _Recorder
from sigprop.diagnostics.spec import ModelSpec, describe
from sigprop.nn.utils import as_batches, sum_sq
from sigprop.validate import InvalidInput

__all__ = ["GradientFlow", "gradient_flow"]


# --------------------------------------------------------------------------------------------
# Gradient flow
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradientFlow:
    """Per-layer gradient norms at initialisation, measured and predicted.

    Fields
    ------
    names: weight-layer names in forward order.
    grad_sq_norm: (L,) squared Frobenius norm of each layer's weight gradient (restricted to
        kept weights: the gradient times the mask), averaged over batches.
    grad_ratio: (L,) grad_sq_norm / grad_sq_norm[-1].
    delta_sq_norm: (L,) squared norm of the loss gradient at each layer's pre-activation,
        summed over the batch and averaged over batches.
    delta_ratio: (L,) delta_sq_norm / delta_sq_norm[-1].
    theory_delta_ratio: (L,) Π_{k>l} χ^k from ``predict`` (χ₁^{L−l} for equal widths at the
        fixed point); compares with ``delta_ratio``.
    theory_grad_ratio: (L,) the predicted ratio of weight-gradient norms (``predict``'s
        ``weight_grad_ratio``); compares with ``grad_ratio``.
    n_batches: batches averaged; loss: description of the loss used.
    theory_reason: why the theory columns are ``None`` (or partly NaN); ``None`` when
        they are complete.
    """

    names: tuple[str, ...]
    grad_sq_norm: np.ndarray
    grad_ratio: np.ndarray
    delta_sq_norm: np.ndarray
    delta_ratio: np.ndarray
    theory_delta_ratio: np.ndarray | None
    theory_grad_ratio: np.ndarray | None
    n_batches: int
    loss: str
    theory_reason: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready fields (``sigprop._json``: NaN theory entries become ``None``)."""
        return to_jsonable(self, "GradientFlow")


def gradient_flow(
    model: nn.Module,
    data,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | str = "auto",
    spec: ModelSpec | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    predict_kwargs: dict | None = None,
    progress: bool = True,
) -> GradientFlow:
    """Per-layer weight-gradient norms at initialisation, next to the theory's ratios.

    Parameters
    ----------
    model: the network (not modified; gradients are taken on a copy when ``dtype`` differs,
        otherwise through ``torch.autograd.grad`` without touching ``.grad``).
    data: a tensor of inputs, an ``(inputs, targets)`` tuple, or an iterable (list) of either
        (read by :func:`sigprop.nn.utils.as_batches`: a list is always a sequence of batches).
    loss: ``callable(output, targets) -> scalar``, or ``"auto"``: cross-entropy for integer
        targets, mean squared error for float targets, and without targets the random
        projection L = Σ_b ⟨g_b, f(x_b)⟩ with g_b ~ N(0, I) — for which the mean-field ratio
        is exact in expectation (the output gradient is isotropic and independent across
        samples, as the backward mean-field theory assumes; Schoenholz et al. 2017,
        arXiv 1611.01232, §3). With a real loss the cross-sample terms of a batch gradient
        need not follow the single-input theory.
    spec: ``describe(model)`` if not given, or ``describe(model, example_input=first batch)``
        where the closed forms do not cover the model (and torch.fx can trace it);
        ``seed``: the random projection's probes.
    predict_kwargs: passed to ``predict`` (q0/c0 default to the first batch's moments).

    The theory columns come from ``predict``: the graph engine for any model traced with
    the first batch as example input (``describe(model, example_input)``), the closed-form
    recursions for chains and sigprop residual nets. They are ``None`` only when
    ``predict`` does not cover the model, and ``theory_reason`` then says why.
    """
    from tqdm.auto import tqdm

    batches = iter(as_batches(data, method="gradient_flow", targets_required=False))
    first = next(batches, None)
    if first is None:
        raise InvalidInput("data contains no batch")
    if spec is None:
        spec = describe(model)  # chains and sigprop's residual nets: the closed forms
        if not spec.complete:
            try:  # the first batch's shape lets any traceable model through the graph engine
                spec = describe(model, example_input=_check_inputs(first[0]))
            except InvalidInput:
                pass
    names = tuple(n for n in spec.names if not _inside_attention(model, n))
    work = _model_in(model, dtype)
    device = _device(work)
    masks = []
    for name in names:
        module = work.get_submodule(name) if name else work
        mask = getattr(module, "_buffers", {}).get("weight_mask")
        masks.append(None if mask is None else mask.detach())
    gen = torch.Generator(device="cpu").manual_seed(seed)
    grad_sq = np.zeros(len(names))
    delta_sq = np.zeros(len(names))
    n_batches = 0
    loss_desc = None
    first_inputs = None
    for inputs, targets in tqdm(
        itertools.chain([first], batches),
        desc="gradient_flow",
        disable=not progress,
        leave=False,
    ):
        inputs = _check_inputs(inputs)
        if first_inputs is None:
            first_inputs = inputs
        x = inputs.detach().to(device=device, dtype=dtype)
        recorder = _Recorder(work, names)
        try:
            with torch.enable_grad():
                out = work(x)
                value, loss_desc = _loss(loss, out, targets, gen)
                hs = [recorder.outputs[n] for n in names]
                weights = [(work.get_submodule(n) if n else work).weight for n in names]
                grads = torch.autograd.grad(value, [*weights, *hs], allow_unused=True)
        finally:
            recorder.close()
        for i in range(len(names)):
            gw, gh = grads[i], grads[len(names) + i]
            if gw is None or gh is None:
                raise InvalidInput(f"the loss does not depend on layer {names[i]!r}")
            if masks[i] is not None:
                gw = gw * masks[i]
            grad_sq[i] += sum_sq(gw)
            delta_sq[i] += sum_sq(gh)
        n_batches += 1
    if n_batches == 0:
        raise InvalidInput("data contains no batch")
    grad_sq /= n_batches
    delta_sq /= n_batches
    theory_delta = theory_grad = None
    reason = None
    if spec.complete or spec.graph is not None:
        from sigprop.diagnostics.predict import input_moments, predict

        kwargs = dict(predict_kwargs or {})
        if "q0" not in kwargs:
            q0, c0 = input_moments(first_inputs)
            kwargs["q0"] = q0
            if c0 is not None:
                kwargs.setdefault("c0", c0)
        try:
            prediction = predict(spec, **kwargs)
        except ValueError as exc:  # a structure the theory does not cover
            prediction, reason = None, f"predict does not cover this model: {exc}"
        if prediction is not None:
            rows = [spec.names.index(n) for n in names]
            theory_delta = np.asarray(prediction.grad_ratio)[rows]
            theory_grad = np.asarray(prediction.weight_grad_ratio)[rows]
            if prediction.unreachable:
                reason = (
                    "NaN where the graph engine could not reach the layer (untranslated: "
                    + "; ".join(spec.unmapped)
                    + ")"
                )
    else:
        reason = (
            "the model has parts the theory cannot map and could not be traced with an "
            f"example input: {'; '.join(spec.unmapped)}"
        )
    return GradientFlow(
        names=names,
        grad_sq_norm=grad_sq,
        grad_ratio=grad_sq / grad_sq[-1],
        delta_sq_norm=delta_sq,
        delta_ratio=delta_sq / delta_sq[-1],
        theory_delta_ratio=theory_delta,
        theory_grad_ratio=theory_grad,
        n_batches=n_batches,
        loss=loss_desc,
        theory_reason=reason,
    )


def _inside_attention(model: nn.Module, name: str) -> bool:
    """``out_proj`` of an ``nn.MultiheadAttention``: its weight is used by its parent, the
    module itself never runs."""
    parent = name.rpartition(".")[0]
    if not name or parent == name:
        return False
    try:
        return isinstance(model.get_submodule(parent), nn.MultiheadAttention)
    except AttributeError:
        return False


def _loss(loss, out: torch.Tensor, targets, gen: torch.Generator):
    if callable(loss):
        value = loss(out, targets)
        return value, getattr(loss, "__name__", type(loss).__name__)
    if loss != "auto":
        raise InvalidInput(f"loss must be a callable or 'auto', got {loss!r}")
    if targets is None:
        g = torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)
        return (g * out).sum(), "random_projection"
    targets = targets.to(out.device)
    if not targets.is_floating_point():
        return nn.functional.cross_entropy(out, targets, reduction="sum"), "cross_entropy"
    return 0.5 * (out - targets.to(out.dtype)).pow(2).sum(), "mse"
