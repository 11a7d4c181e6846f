"""Singular values of the input–output Jacobian, per input.

Dynamical isometry (Pennington, Schoenholz & Ganguli 2017, arXiv 1711.04735, §2) asks for the
whole spectrum of J = ∂f(x)/∂x = D^L W^L ⋯ D^1 W^1, with D^l = diag(φ′(h^l)). The route
actually used is reported in ``JacobianSpectrum.method``; ``method=`` may name one:

``"chain"`` (``nn.Sequential`` of linear/conv/masked/DCT layers, elementwise activations,
    affine maps and reshapes): one forward pass accumulates the tangent matrix
    J ← D_l(W_l J) from the identity (≈ 2LN³ flops), then ``torch.linalg.svdvals``.
``"graph"`` (any other model whose captured graph has only linearisable nodes: ResNets,
    VGGs, DenseNets in eval mode): the primal pass runs once and stores each node's
    derivative, then batches of tangents go through the linear parts only
    (:class:`~sigprop.diagnostics.jacobian.graph.LinearisedGraph`), at the cost of a forward
    pass per batch; Jᵀ·u is autograd through that linear map.
``"torch.func"`` (everything else: train-mode batch norm, attention): ``jacrev`` (or
    ``jacfwd`` when the input is smaller than the output), ``chunk_size`` bounding memory.

``method="exact"`` takes the first route that applies, in that order; ``"lanczos"`` never
forms J: the top ``k`` singular values come from ARPACK (``scipy.sparse.linalg.svds``) over
J·v and Jᵀ·u of the same route, with residuals ‖Jv − σu‖/σ₁ reported, and the spectral
density of JJᵀ from stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017, SIAM J. Matrix
Anal. Appl. 38(4), §3; Golub & Meurant 2010, ch. 6): Rademacher probes, m Lanczos steps with
full reorthogonalisation run for all probes at once (one batched product per step).
``method="auto"`` chooses by cost (:func:`_exact_is_cheaper`).

Computation is in float64 by default: in float32 the smallest singular values of a deep
product are round-off (Pennington, Schoenholz & Ganguli 2018, arXiv 1802.09979, §4 compute
their spectra in high precision for the same reason).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from sigprop.diagnostics.graph import capture
from sigprop.diagnostics.jacobian.chain import (
    _chain_jacobian,
    _func_jacobian,
    _in_dtype,
    _layer_singular_values,
    _Linearised,
    _plain_linear_weight,  # noqa: F401 - imported by tests/nn
    _weight_segments,
    chain_ops,
)
from sigprop.diagnostics.jacobian.graph import LinearisedGraph, linearisable
from sigprop.diagnostics.jacobian.iterative import _Operator, _slq, _top_singular
from sigprop.diagnostics.jacobian.result import JacobianSpectrum
from sigprop.validate import InvalidInput

__all__ = ["JacobianSpectrum", "chain_ops", "jacobian_spectrum"]

#: The routes an explicit ``method`` may name (``JacobianSpectrum.method`` reports the one used).
_ROUTES = ("chain", "graph", "torch.func")
_METHODS = ("auto", "exact", "lanczos", *_ROUTES)


def _moments(squared: np.ndarray, n_moments: int) -> np.ndarray:
    return np.stack([np.mean(squared**k, axis=-1) for k in range(1, n_moments + 1)], axis=-1)


def jacobian_spectrum(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    layerwise: bool = False,
    method: str = "auto",
    k: int = 6,
    dtype: torch.dtype = torch.float64,
    n_moments: int = 4,
    chunk_size: int | None = None,
    exact_max_dim: int = 4096,
    lanczos_steps: int = 60,
    n_probes: int = 8,
    tol: float = 1e-8,
    seed: int = 0,
    progress: bool = True,
) -> JacobianSpectrum:
    """Singular values of the input–output Jacobian ∂f(x)/∂x for each input x.

    Parameters
    ----------
    model: the network; ``inputs``: a batch (n_inputs, *sample_shape).
    layerwise: also return each weight layer's Jacobian spectrum (chain models only).
    method: ``"exact"`` (all singular values, by the first route that applies),
        ``"chain"``/``"graph"``/``"torch.func"`` (exact, by that route), ``"lanczos"`` (top
        ``k`` plus an SLQ density, J never formed) or ``"auto"`` (exact when
        min(n_in, n_out) ≤ ``exact_max_dim`` or when it needs fewer products than Lanczos
        and J fits in 2 GiB).
    k: number of top singular values for ``"lanczos"``.
    dtype: computation precision (float64 by default; see the module docstring). The model is
        not modified: layers in another precision are copied.
    n_moments: number of moments m_k of the squared singular values returned.
    chunk_size: ``torch.func`` chunking for non-chain models (bounds memory).
    lanczos_steps, n_probes: SLQ settings; ``tol``: ARPACK tolerance; ``seed``: probes/start
        vectors. ``progress``: tqdm bar over inputs.

    Returns
    -------
    JacobianSpectrum

    Notes
    -----
    The model is evaluated in its current mode (call ``model.eval()`` first for dropout and
    batch norm); a chain in training mode that contains them falls back to ``torch.func``.
    """
    from tqdm.auto import tqdm

    if method not in _METHODS:
        raise InvalidInput(f"method must be one of {_METHODS}, got {method!r}")
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2 or inputs.shape[0] == 0:
        raise InvalidInput(
            "inputs must be a tensor of shape (n_inputs, *sample_shape) with n_inputs ≥ 1"
        )
    if not dtype.is_floating_point:
        raise InvalidInput(f"dtype must be a floating type, got {dtype}")
    if n_moments < 1:
        raise InvalidInput(f"n_moments must be ≥ 1, got {n_moments}")
    if not torch.isfinite(inputs).all():
        raise InvalidInput("inputs contain NaN or inf")
    x_all = inputs.detach().to(dtype)
    route = _Route(model, x_all[:1], dtype, method)
    if layerwise and route.ops is None:
        raise InvalidInput(
            "layerwise=True needs a chain model (nn.Sequential of weight layers, elementwise "
            f"activations and reshapes); {type(model).__name__} is not one"
        )
    n_in, n_out = route.n_in, route.n_out
    r = min(n_in, n_out)
    if method == "auto":
        method = "exact" if _exact_is_cheaper(r, n_in, n_out, k, lanczos_steps, n_probes,
                                              exact_max_dim, dtype) else "lanczos"  # fmt: skip
    elif method in _ROUTES:
        method = "exact"
    if method == "lanczos" and not 1 <= k < r:
        raise InvalidInput(
            f"k must satisfy 1 ≤ k < min(n_in, n_out) = {r} for method='lanczos', got {k}"
        )

    rng = np.random.default_rng(seed)
    rows, layer_rows, nodes, weights, resid = [], [], [], [], []
    converged, n_matvec = True, 0
    for i in tqdm(range(x_all.shape[0]), desc="jacobian", disable=not progress, leave=False):
        x = x_all[i : i + 1]
        if method == "exact":
            jac = route.jacobian(x, chunk_size)
            rows.append(torch.linalg.svdvals(jac).to(torch.float64).cpu().numpy())
        else:
            op = route.operator(x)
            top, res, ok = _top_singular(op, k, tol, rng)
            nd, wt = _slq(op, n_probes, lanczos_steps, rng)
            rows.append(top)
            resid.append(res)
            nodes.append(nd)
            weights.append(wt)
            converged &= ok
            n_matvec += op.count
        if layerwise:
            layer_rows.append(_layer_singular_values(route.ops, x))
    singular_values = np.stack(rows)
    if method == "exact":
        moments = _moments(singular_values**2, n_moments)
    else:
        nd, wt = np.stack(nodes), np.stack(weights)
        moments = np.stack([(wt * nd**kk).sum(axis=1) for kk in range(1, n_moments + 1)], axis=-1)
    names = tuple(name for name, _ in _weight_segments(route.ops)) if route.ops else ()
    return JacobianSpectrum(
        singular_values=singular_values,
        moments=moments,
        method=route.exact_name if method == "exact" else "lanczos",
        n_in=int(n_in),
        n_out=int(n_out),
        dtype=str(dtype).replace("torch.", ""),
        layer_names=names,
        layer_singular_values=(
            tuple(np.stack([row[j] for row in layer_rows]) for j in range(len(names)))
            if layerwise
            else None
        ),
        density_nodes=np.stack(nodes) if nodes else None,
        density_weights=np.stack(weights) if weights else None,
        residuals=np.stack(resid) if resid else None,
        converged=bool(converged),
        n_matvec=int(n_matvec),
    )


#: Address space the exact route may use for J (bytes).
_EXACT_MEMORY = 2 << 30


def _exact_is_cheaper(r, n_in, n_out, k, steps, n_probes, exact_max_dim, dtype) -> bool:
    """``method="auto"``: the exact route unless J is large and Lanczos needs fewer products.

    The exact route costs r = min(n_in, n_out) vector products (batched) and holds J; the
    iterative one about 20(2k + 1) single products for ARPACK (a few restarts of a Krylov
    space of 2k + 1 vectors) plus 2·steps·n_probes batched ones for the quadrature. Below
    ``exact_max_dim`` the exact spectrum is always computed (it is the complete answer).
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    if r * max(n_in, n_out) * itemsize > _EXACT_MEMORY:
        return False
    if r <= exact_max_dim:
        return True
    return r <= 20 * (2 * k + 1) + 2 * steps * n_probes


class _Route:
    """How J is computed for this model: ``"chain"`` (the chain's linearised pass),
    ``"graph"`` (the captured graph linearised, :class:`LinearisedGraph`) or
    ``"torch.func"`` (``jacrev``/``jacfwd``, ``jvp``/``vjp``); an explicit ``method`` naming
    a route forces it."""

    def __init__(self, model: nn.Module, x: torch.Tensor, dtype, method: str) -> None:
        self.ops = chain_ops(model) if method in ("auto", "exact", "lanczos", "chain") else None
        self.captured = None
        if self.ops is not None:
            self.ops = [(kind, name, _in_dtype(m, dtype)) for kind, name, m in self.ops]
            self.name = self.exact_name = "chain"
            with torch.no_grad():
                lin = _Linearised(self.ops, x)
            self.n_in, self.n_out = math.prod(lin.in_shape), math.prod(lin.out_shape)
            return
        if method == "chain":
            raise InvalidInput(
                f"method='chain' needs a chain model; {type(model).__name__} is not one"
            )
        self.model = _in_dtype(model, dtype)
        self.name = "torch.func"
        if method != "torch.func":
            why = None
            try:
                self.captured = capture(self.model, x)
                why = linearisable(self.captured)
            except InvalidInput as exc:  # not traceable: torch.func needs no graph
                why = str(exc)
            if why is None:
                self.name = "graph"
            else:
                self.captured = None
                if method == "graph":
                    raise InvalidInput(f"method='graph' cannot linearise this model: {why}")
        self.n_in = x[0].numel()
        with torch.no_grad():
            self.n_out = math.prod(self.model(x).shape[1:])
        # the exact Jacobian in reverse mode (fewer outputs than inputs) is torch.func.jacrev's
        # strength (vectorised autograd); the linearised graph wins in forward mode, where
        # torch.func.jvp recomputes the primal pass and is many times slower
        self.exact_name = self.name
        if self.name == "graph" and method != "graph" and self.n_out <= self.n_in:
            self.exact_name = "torch.func"

    def linear(self, x: torch.Tensor):
        """The linear tangent map at ``x`` (None for the torch.func route)."""
        if self.ops is not None:
            return _Linearised(self.ops, x)
        if self.captured is not None:
            with torch.no_grad():
                return LinearisedGraph(self.captured, x)
        return None

    def operator(self, x: torch.Tensor) -> _Operator:
        return _Operator(self.linear(x), getattr(self, "model", None), x)

    def jacobian(self, x: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
        """J or Jᵀ at ``x`` (same singular values)."""
        if self.exact_name == "chain":
            return _chain_jacobian(self.ops, x)
        if self.exact_name == "torch.func":
            return _func_jacobian(self.model, x, chunk_size)
        op = self.operator(x)
        r = min(op.n_in, op.n_out)
        chunk = chunk_size or max(1, min(r, 256))
        rows = []
        for start in range(0, r, chunk):
            basis = np.zeros((min(chunk, r - start), r))
            basis[np.arange(basis.shape[0]), start + np.arange(basis.shape[0])] = 1.0
            rows.append(op.matmat(basis) if op.n_in <= op.n_out else op.rmatmat(basis))
        return torch.as_tensor(np.concatenate(rows), dtype=x.dtype)
