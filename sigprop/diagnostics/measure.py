"""Empirical twins of the mean-field quantities, measured with hooks on real inputs.

``measure(model, inputs)`` records, for every weight layer l that ``describe`` lists:

* q^l — the mean squared pre-activation (1/N_l)‖h^l‖², per input and averaged
  (Poole et al. 2016, arXiv 1606.05340, eq. 3: the empirical side of the variance map);
* c^l — the correlation h_a·h_b / (‖h_a‖‖h_b‖) of the pre-activations of input pairs
  (a, b) = (0, 1), (2, 3), … (ibid. eq. 4–5: the covariance map);
* δ^l = ∂(gᵀ f(x))/∂h^l for Gaussian probes g ~ N(0, I) at the output, and
  χ^l = ‖δ^{l−1}‖² / ‖δ^l‖² (δ^0 = the input gradient): the per-layer backward growth whose
  mean-field value is σ_{w,l}² E[φ′(h^{l−1})²] (Schoenholz et al. 2017, arXiv 1611.01232,
  §3, eq. 10), and ``grad_ratio`` ‖δ^l‖²/‖δ^L‖², predicted by Π_{k>l} χ^k.

``gradient_flow(model, data, loss=...)`` measures per-layer squared Frobenius norms of the
weight gradients at initialisation next to the theory's ratios.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from sigprop._json import to_jsonable
from sigprop.diagnostics.spec import ModelSpec, describe
from sigprop.validate import InvalidInput

__all__ = ["GradientFlow", "Measurement", "gradient_flow", "measure", "input_pairs"]


def input_pairs(n_inputs: int) -> np.ndarray:
    """The disjoint consecutive pairs (0, 1), (2, 3), … used for correlations, shape (P, 2)."""
    n_pairs = n_inputs // 2
    return np.stack([np.arange(0, 2 * n_pairs, 2), np.arange(1, 2 * n_pairs, 2)], axis=1)


@dataclass(frozen=True)
class Measurement:
    """Per-layer empirical statistics of a model on a batch of inputs (layers in forward order).

    Fields
    ------
    names: weight-layer names (as in ``describe(model).names``).
    q: (L,) mean over inputs of (1/N_l)‖h^l‖² (pre-activation of weight layer l).
    q_per_input: (L, B) the same per input.
    c: (L,) mean over pairs of the pre-activation correlation; ``None`` with one input.
    c_per_pair: (L, P) the same per pair (pairs from ``input_pairs``); ``None`` with one input.
    chi: (L,) ratio of mean squared backpropagated norms ⟨‖δ^{l−1}‖²⟩ / ⟨‖δ^l‖²⟩, δ^0 the
        gradient with respect to the input (so chi[0] compares with σ_{w,1}²).
    delta_sq: (L,) ⟨‖δ^l‖²⟩ over inputs and probes, for output probes g ~ N(0, I).
    grad_ratio: (L,) delta_sq / delta_sq[-1].
    q0, c0: input second moment (1/N_0)‖x‖² (mean over inputs) and mean pair cosine
        (``None`` with one input) — what ``predict`` takes.
    n_inputs, n_probes: batch size and backward probes per input.
    spectrum: the ``JacobianSpectrum`` when requested (``jacobian=True``), else ``None``.
    nodes: module qualified name → measured record (``sigprop.diagnostics.graph.nodes``:
        ``q``, ``mean``, ``correlation``, ``avg_sq_ch_mean``, ``avg_ch_var`` and, for weight
        layers, ``weight_grad`` = ‖∇W ⊙ M‖²/B of a random readout and ``weight_grad_ratio``),
        for every module the translated graph maps; empty when the model cannot be traced.
    blocks: module names whose output is a residual sum (as ``Prediction.blocks``).
    """

    names: tuple[str, ...]
    q: np.ndarray
    q_per_input: np.ndarray
    c: np.ndarray | None
    c_per_pair: np.ndarray | None
    chi: np.ndarray
    delta_sq: np.ndarray
    grad_ratio: np.ndarray
    q0: float
    c0: float | None
    n_inputs: int
    n_probes: int
    spectrum: object | None = None
    nodes: dict = field(default_factory=dict)
    blocks: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready fields (``sigprop._json``); ``spectrum`` through its own ``to_dict``."""
        spectrum = None if self.spectrum is None else self.spectrum.to_dict()
        out = {**{f.name: getattr(self, f.name) for f in fields(self)}, "spectrum": spectrum}
        return to_jsonable(out, "Measurement")


def _model_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    if all(t.dtype == dtype for t in tensors):
        return model
    return copy.deepcopy(model).to(dtype)


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _check_inputs(inputs, name: str = "inputs") -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2 or inputs.shape[0] == 0:
        raise InvalidInput(
            f"{name} must be a tensor of shape (batch, *sample_shape) with batch ≥ 1"
        )
    if not inputs.is_floating_point():
        raise InvalidInput(f"{name} must be a floating-point tensor, got {inputs.dtype}")
    if not torch.isfinite(inputs).all():
        raise InvalidInput(f"{name} contain NaN or inf")
    return inputs


class _Recorder:
    """Forward hooks on the weight layers: keep each pre-activation (with its graph)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in names:
            module = model.get_submodule(name) if name else model
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, args, output):
            if name in self.outputs:
                raise InvalidInput(
                    f"layer {name!r} ran twice in one forward pass (shared weights); "
                    "per-layer statistics are undefined"
                )
            if not isinstance(output, torch.Tensor):
                raise InvalidInput(f"layer {name!r} returned {type(output).__name__}, not a tensor")
            if output.requires_grad:
                output.retain_grad()
            self.outputs[name] = output

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _per_sample_sq(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(t.shape[0], -1).pow(2).sum(dim=1)


def measure(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    spec: ModelSpec | None = None,
    n_probes: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    jacobian: bool = False,
    jacobian_inputs: int = 4,
    node_probes: int = 1,
    layers: bool = True,
    **jacobian_kwargs,
) -> Measurement:
    """Measure q^l, c^l, χ^l and the backward norm flow of ``model`` on ``inputs``.

    Parameters
    ----------
    model: a torch model (not modified; copied when ``dtype`` differs from its own).
    inputs: a batch (B, *sample_shape); B ≥ 2 for correlations (pairs (0,1), (2,3), …).
    spec: the ``describe(model)`` result, computed if not given (its layer names are hooked).
    n_probes: Gaussian output probes per input for the backward pass.
    seed: seeds the probes (a local ``torch.Generator``).
    dtype: computation precision (float64 by default).
    jacobian: also compute ``jacobian_spectrum`` on the first ``jacobian_inputs`` inputs
        (extra keyword arguments are passed to it).
    node_probes: random readouts averaged for the per-module weight-gradient norms
        (``nodes``; one forward pass, one backward pass per readout).
    layers: ``False`` (graph specs only) skips the per-weight-layer pass (its forward and
        ``n_probes`` backward passes): ``nodes`` only, the per-layer arrays NaN — what a
        signal-propagation plot needs.

    Without ``spec`` the model is described with ``inputs`` as the example input (shapes
    only), so ``nodes`` covers every module of any traceable model; a model torch.fx cannot
    trace gets the per-weight-layer fields only. Weight layers of a graph spec that never
    run on their own (attention's ``out_proj``) get NaN in the per-layer arrays.

    The model is run in its current mode; use ``model.eval()`` for dropout/batch norm.
    """
    inputs = _check_inputs(inputs)
    if n_probes < 1:
        raise InvalidInput(f"n_probes must be ≥ 1, got {n_probes}")
    if spec is None:
        try:
            spec = describe(model, example_input=inputs)
        except InvalidInput:  # not traceable: the per-weight-layer walk alone
            spec = describe(model)
    all_names = spec.names
    work = _model_in(model, dtype)
    device = _device(work)
    x = inputs.detach().to(device=device, dtype=dtype).requires_grad_(True)
    nodes = {}
    if spec.graph is not None:
        from sigprop.diagnostics.graph.nodes import measure_nodes

        nodes = measure_nodes(work, spec.graph, x.detach(), n_probes=node_probes, seed=seed)
    if not layers:
        if spec.graph is None:
            raise InvalidInput("measure(layers=False) needs a graph spec: describe(model, x)")
        return _nodes_only(spec, inputs, n_probes, nodes)
    names = all_names
    gen = torch.Generator(device="cpu").manual_seed(seed)
    recorder = _Recorder(work, names)
    try:
        with torch.enable_grad():
            out = work(x)
            if not isinstance(out, torch.Tensor):
                raise InvalidInput(f"model returned {type(out).__name__}, not a tensor")
            if spec.structure == "graph":  # attention's out_proj never runs on its own
                names = tuple(n for n in all_names if n in recorder.outputs)
            missing = [n for n in names if n not in recorder.outputs]
            if missing:
                raise InvalidInput(f"weight layers not used in the forward pass: {missing}")
            hs = [recorder.outputs[n] for n in names]
            batch = x.shape[0]
            q_per_input = torch.stack([_per_sample_sq(h) / h[0].numel() for h in hs])  # (L, B)
            pairs = input_pairs(batch)
            c_per_pair = None
            if len(pairs):
                rows = []
                for h in hs:
                    flat = h.detach().reshape(batch, -1)
                    a, b = flat[pairs[:, 0]], flat[pairs[:, 1]]
                    rows.append((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)))
                c_per_pair = torch.stack(rows)
            delta_sq = torch.zeros(len(hs) + 1, dtype=torch.float64)
            for p in range(n_probes):
                g = torch.randn(out.shape, generator=gen, dtype=dtype).to(device)
                targets = [x, *hs]
                grads = torch.autograd.grad(
                    (g * out).sum(), targets, retain_graph=p + 1 < n_probes, allow_unused=True
                )
                for i, grad in enumerate(grads):
                    if grad is None:
                        raise InvalidInput(f"output does not depend on layer {names[i - 1]!r}")
                    delta_sq[i] += _per_sample_sq(grad).mean().cpu().double()
            delta_sq /= n_probes
    finally:
        recorder.close()
    q0, c0 = _input_moments(inputs, pairs)
    spectrum = None
    if jacobian:
        from sigprop.diagnostics.jacobian import jacobian_spectrum

        jacobian_kwargs.setdefault("progress", False)
        spectrum = jacobian_spectrum(
            model, inputs[:jacobian_inputs], dtype=dtype, **jacobian_kwargs
        )
    ds = delta_sq.numpy()
    q_np = q_per_input.cpu().double().numpy()
    c_np = None if c_per_pair is None else c_per_pair.cpu().double().numpy()
    if names != all_names:  # graph spec: NaN rows for layers that never ran on their own
        rows = [names.index(n) if n in names else -1 for n in all_names]
        q_np, ds_l = _expand(q_np, rows), _expand(ds[1:], rows)
        c_np = None if c_np is None else _expand(c_np, rows)
        ds = np.concatenate([ds[:1], ds_l])
    with np.errstate(divide="ignore", invalid="ignore"):
        chi = ds[:-1] / ds[1:]
    return Measurement(
        names=all_names,
        q=q_np.mean(axis=1),
        q_per_input=q_np,
        c=None if c_np is None else c_np.mean(axis=1),
        c_per_pair=c_np,
        chi=chi,
        delta_sq=ds[1:],
        grad_ratio=ds[1:] / ds[-1],
        q0=q0,
        c0=c0,
        n_inputs=int(inputs.shape[0]),
        n_probes=int(n_probes),
        spectrum=spectrum,
        nodes=nodes,
        blocks=tuple(spec.blocks),
    )


def _input_moments(inputs: torch.Tensor, pairs: np.ndarray) -> tuple[float, float | None]:
    """(q0, c0) of the inputs in float64: mean square, mean cosine of the ``pairs``."""
    x_flat = inputs.detach().to(torch.float64).reshape(inputs.shape[0], -1).cpu()
    c0 = None
    if len(pairs):
        a, b = x_flat[pairs[:, 0]], x_flat[pairs[:, 1]]
        c0 = float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())
    return float((x_flat**2).mean()), c0


def _nodes_only(spec: ModelSpec, inputs: torch.Tensor, n_probes: int, nodes: dict):
    """A :class:`Measurement` with the per-module ``nodes`` and NaN per-layer arrays."""
    n, b = len(spec.names), int(inputs.shape[0])
    nan = np.full(n, np.nan)
    pairs = input_pairs(b)
    q0, c0 = _input_moments(inputs, pairs)
    return Measurement(
        names=spec.names,
        q=nan,
        q_per_input=np.full((n, b), np.nan),
        c=None if c0 is None else nan.copy(),
        c_per_pair=None if c0 is None else np.full((n, len(pairs)), np.nan),
        chi=nan.copy(),
        delta_sq=nan.copy(),
        grad_ratio=nan.copy(),
        q0=q0,
        c0=c0,
        n_inputs=b,
        n_probes=int(n_probes),
        nodes=nodes,
        blocks=tuple(spec.blocks),
    )


def _expand(a: np.ndarray, rows: list[int]) -> np.ndarray:
    out = np.full((len(rows), *a.shape[1:]), np.nan)
    for i, r in enumerate(rows):
        if r >= 0:
            out[i] = a[r]
    return out


# gradient_flow lives in sigprop.diagnostics.flow; re-exported here (its historical path)
from sigprop.diagnostics.flow import GradientFlow, gradient_flow  # noqa: E402
