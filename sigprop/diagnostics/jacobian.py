"""Singular values of the input–output Jacobian, per input.

Dynamical isometry (Pennington, Schoenholz & Ganguli 2017, arXiv 1711.04735, §2) asks for the
whole spectrum of J = ∂f(x)/∂x = D^L W^L ⋯ D^1 W^1, with D^l = diag(φ′(h^l)). Three routes:

``"exact"`` on a chain (``nn.Sequential`` of linear/conv/masked/DCT layers, elementwise
    activations and reshapes): one forward pass accumulates the tangent matrix J ← D_l(W_l J)
    starting from the identity, i.e. L matrix products (≈ 2LN³ flops), then
    ``torch.linalg.svdvals``.
``"exact"`` on any other model: ``torch.func.jacrev`` (or ``jacfwd`` when the input is
    smaller than the output) per input, with ``chunk_size`` bounding memory.
``"lanczos"``: without forming J. The top ``k`` singular values come from ARPACK
    (``scipy.sparse.linalg.svds``) over a ``LinearOperator`` whose J·v and Jᵀ·u are the
    linearised network (hand-written for chains: the stored D_l and the layers' linear parts;
    ``torch.func.jvp``/``vjp`` otherwise), with residuals ‖Jv − σu‖/σ₁ reported. The
    spectral density of JJᵀ comes from stochastic Lanczos quadrature (Ubaru, Chen & Saad
    2017, SIAM J. Matrix Anal. Appl. 38(4), §3; Golub & Meurant 2010, ch. 6): Rademacher
    probes, m Lanczos steps with full reorthogonalisation, Gauss quadrature nodes/weights.

Computation is in float64 by default: in float32 the smallest singular values of a deep
product are round-off (REFERENCES §8).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sigprop.diagnostics.spec import effective_weight, is_weight_layer
from sigprop.nn.activation import is_elementwise
from sigprop.nn.masked import MaskedLinear
from sigprop.validate import InvalidInput

__all__ = ["JacobianSpectrum", "jacobian_spectrum", "chain_ops"]

_METHODS = ("auto", "exact", "lanczos")

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


@dataclass(frozen=True)
class JacobianSpectrum:
    """Spectrum of the input–output Jacobian, one row per input.

    Fields
    ------
    singular_values: (n_inputs, r) float64, descending. ``"exact"``: all r = min(n_out, n_in)
        singular values; ``"lanczos"``: the top k.
    moments: (n_inputs, n_moments) float64, m_k = (1/r) Σ_i s_i^{2k}, k = 1..n_moments — the
        normalised moments of the squared singular values (of JJᵀ or JᵀJ, whichever is
        r×r). Exact for ``"exact"``; the stochastic-Lanczos-quadrature estimate for
        ``"lanczos"`` (its error is the Hutchinson trace estimator's, polynomials of degree
        < 2m being integrated exactly per probe).
    method: ``"chain"``, ``"torch.func"`` or ``"lanczos"`` — the route actually used.
    n_in, n_out: input and output dimensions (flattened per sample).
    dtype: the floating type the computation ran in.
    layer_names: names of the weight layers (chain models; empty otherwise).
    layer_singular_values: with ``layerwise=True``, one (n_inputs, r_l) array per weight layer:
        the singular values of that layer's Jacobian ∂x^l/∂x^{l-1}, from the input of weight
        layer l to the input of weight layer l+1 (activation included; the model output
        for the last), the quantity of "layerwise dynamical isometry" (Lee et al. 2020,
        arXiv 1906.06307, §4).
    density_nodes, density_weights: ``"lanczos"`` only: (n_inputs, n_probes·m) quadrature nodes
        (squared singular values) and weights (summing to 1 per input) of the SLQ estimate of
        the empirical spectral measure of the squared singular values.
    residuals: ``"lanczos"`` only: (n_inputs, k) ‖J v_i − s_i u_i‖ / s_1 for the returned
        singular triplets.
    converged: False if ARPACK reported non-convergence for some input.
    n_matvec: number of J·v plus Jᵀ·u products used (``"lanczos"``).
    """

    singular_values: np.ndarray
    moments: np.ndarray
    method: str
    n_in: int
    n_out: int
    dtype: str
    layer_names: tuple[str, ...] = ()
    layer_singular_values: tuple[np.ndarray, ...] | None = None
    density_nodes: np.ndarray | None = None
    density_weights: np.ndarray | None = None
    residuals: np.ndarray | None = None
    converged: bool = True
    n_matvec: int = 0

    @property
    def squared(self) -> np.ndarray:
        """Squared singular values (eigenvalues of JJᵀ), same layout as ``singular_values``."""
        return self.singular_values**2

    def density(self, grid: np.ndarray, bandwidth: float | None = None) -> np.ndarray:
        """Density of the squared singular values on ``grid``, pooled over inputs.

        Gaussian-kernel smoothing of the exact eigenvalues (``"exact"``) or of the SLQ
        quadrature measure (``"lanczos"``); ``bandwidth`` defaults to Silverman's rule.
        """
        grid = np.asarray(grid, dtype=np.float64)
        if self.density_nodes is not None:
            nodes = self.density_nodes.ravel()
            weights = self.density_weights.ravel() / self.density_weights.shape[0]
        else:
            nodes = self.squared.ravel()
            weights = np.full(nodes.size, 1.0 / nodes.size)
        if bandwidth is None:
            mean = float(np.sum(weights * nodes))
            std = math.sqrt(max(float(np.sum(weights * (nodes - mean) ** 2)), 1e-300))
            bandwidth = 1.06 * std * nodes.size ** (-1 / 5)
        if bandwidth <= 0:
            raise InvalidInput(f"bandwidth must be positive, got {bandwidth}")
        z = (grid[:, None] - nodes[None, :]) / bandwidth
        return (np.exp(-0.5 * z**2) * weights).sum(axis=1) / (bandwidth * math.sqrt(2 * math.pi))

    def to_dict(self) -> dict:
        def arr(a):
            return None if a is None else np.asarray(a).tolist()

        return {
            "singular_values": arr(self.singular_values),
            "moments": arr(self.moments),
            "method": self.method,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "dtype": self.dtype,
            "layer_names": list(self.layer_names),
            "layer_singular_values": None
            if self.layer_singular_values is None
            else [arr(a) for a in self.layer_singular_values],
            "density_nodes": arr(self.density_nodes),
            "density_weights": arr(self.density_weights),
            "residuals": arr(self.residuals),
            "converged": self.converged,
            "n_matvec": self.n_matvec,
        }


# --------------------------------------------------------------------------------------------
# Chains
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Iterative methods
# --------------------------------------------------------------------------------------------


class _Operator:
    """J·v and Jᵀ·u at one input, as numpy functions, with a product counter."""

    def __init__(self, ops, model, x: torch.Tensor):
        self.count = 0
        if ops is not None:
            lin = _Linearised(ops, x)
            self.in_shape, out_shape = lin.in_shape, lin.out_shape
            self._fwd = lambda v: lin.forward(v.reshape(1, *self.in_shape))
            zero = torch.zeros(1, *self.in_shape, dtype=x.dtype, device=x.device)
            _, vjp = torch.func.vjp(lin.forward, zero)
        else:
            self.in_shape = tuple(x.shape[1:])

            def f(xi):
                return model(xi)

            with torch.no_grad():
                out_shape = tuple(f(x).shape[1:])
            self._fwd = lambda v: torch.func.jvp(f, (x,), (v.reshape(1, *self.in_shape),))[1]
            _, vjp = torch.func.vjp(f, x)
        self._vjp = vjp
        self.out_shape = out_shape
        self.n_in = math.prod(self.in_shape)
        self.n_out = math.prod(out_shape)
        self.dtype = x.dtype
        self.device = x.device

    def matvec(self, v: np.ndarray) -> np.ndarray:
        self.count += 1
        t = torch.as_tensor(
            np.ascontiguousarray(v).reshape(-1), dtype=self.dtype, device=self.device
        )
        with torch.no_grad():
            return self._fwd(t).reshape(-1).cpu().numpy().astype(np.float64)

    def rmatvec(self, u: np.ndarray) -> np.ndarray:
        self.count += 1
        t = torch.as_tensor(
            np.ascontiguousarray(u).reshape(-1), dtype=self.dtype, device=self.device
        )
        with torch.no_grad():
            out = self._vjp(t.reshape(1, *self.out_shape))[0]
        return out.reshape(-1).cpu().numpy().astype(np.float64)

    def linear_operator(self):
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(
            (self.n_out, self.n_in), matvec=self.matvec, rmatvec=self.rmatvec, dtype=np.float64
        )


def _top_singular(op: _Operator, k: int, tol: float, rng: np.random.Generator):
    """Top-k singular triplets by ARPACK's implicitly restarted Lanczos (scipy ``svds``)."""
    from scipy.sparse.linalg import ArpackNoConvergence, svds

    v0 = rng.standard_normal(min(op.n_in, op.n_out))
    converged = True
    try:
        u, s, vt = svds(op.linear_operator(), k=k, tol=tol, v0=v0, solver="arpack")
    except ArpackNoConvergence as exc:
        converged = False
        s = np.asarray(exc.eigenvalues, dtype=np.float64)
        s = np.sqrt(np.clip(s, 0.0, None)) if s.size else s
        u = vt = None
    order = np.argsort(s)[::-1]
    s = np.asarray(s)[order]
    residuals = np.full(k, np.nan)
    if u is not None:
        u, vt = u[:, order], vt[order]
        for i in range(len(s)):
            residuals[i] = np.linalg.norm(op.matvec(vt[i]) - s[i] * u[:, i]) / max(s[0], 1e-300)
    top = np.full(k, np.nan)
    top[: len(s)] = s
    return top, residuals, converged


def _slq(op: _Operator, n_probes: int, steps: int, rng: np.random.Generator):
    """Stochastic Lanczos quadrature for the spectral measure of the r×r Gram matrix
    (JᵀJ if n_in ≤ n_out else JJᵀ), r = min(n_in, n_out) (Ubaru, Chen & Saad 2017, §3).

    Each Rademacher probe v/‖v‖ gives the m-point Gauss quadrature of vᵀf(G)v (exact for
    polynomials of degree < 2m); averaging over probes estimates (1/r) tr f(G).
    """
    from scipy.linalg import eigh_tridiagonal

    if op.n_in <= op.n_out:
        r = op.n_in

        def gram(v):
            return op.rmatvec(op.matvec(v))
    else:
        r = op.n_out

        def gram(v):
            return op.matvec(op.rmatvec(v))

    m = min(steps, r)
    nodes, weights = [], []
    for _ in range(n_probes):
        v = rng.choice(np.array([-1.0, 1.0]), size=r) / math.sqrt(r)
        basis = np.zeros((m, r))
        alpha, beta = np.zeros(m), np.zeros(m)
        basis[0] = v
        size = m
        for j in range(m):
            w = gram(basis[j])
            alpha[j] = basis[j] @ w
            # full reorthogonalisation (twice is enough) against all previous vectors
            for _ in range(2):
                w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
            if j + 1 < m:
                beta[j] = np.linalg.norm(w)
                if beta[j] <= 1e-12 * max(abs(alpha[: j + 1]).max(), 1e-300):
                    size = j + 1  # invariant subspace: the quadrature is exact
                    break
                basis[j + 1] = w / beta[j]
        theta, vecs = eigh_tridiagonal(alpha[:size], beta[: size - 1])
        nodes.append(np.clip(theta, 0.0, None))
        weights.append(vecs[0] ** 2 / n_probes)
    width = n_probes * m
    node_arr, weight_arr = np.zeros(width), np.zeros(width)
    pos = 0
    for th, wt in zip(nodes, weights):
        node_arr[pos : pos + th.size] = th
        weight_arr[pos : pos + th.size] = wt
        pos += th.size
    return node_arr, weight_arr


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


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
    method: ``"exact"`` (all singular values), ``"lanczos"`` (top ``k`` plus an SLQ density,
        J never formed) or ``"auto"`` (exact when min(n_in, n_out) ≤ ``exact_max_dim``).
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
    ops = chain_ops(model)
    if ops is not None:
        ops = [(kind, name, _in_dtype(m, dtype)) for kind, name, m in ops]
        run_model = None
    else:
        run_model = _in_dtype(model, dtype)
    if layerwise and ops is None:
        raise InvalidInput(
            "layerwise=True needs a chain model (nn.Sequential of weight layers, elementwise "
            f"activations and reshapes); {type(model).__name__} is not one"
        )
    n_in = x_all[0].numel()
    with torch.no_grad():
        probe_out = (
            _Linearised(ops, x_all[:1]).out_shape
            if ops is not None
            else run_model(x_all[:1]).shape[1:]
        )
    n_out = math.prod(probe_out)
    r = min(n_in, n_out)
    if method == "auto":
        method = "exact" if r <= exact_max_dim else "lanczos"
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
            jac = (
                _chain_jacobian(ops, x)
                if ops is not None
                else _func_jacobian(run_model, x, chunk_size)
            )
            rows.append(torch.linalg.svdvals(jac).to(torch.float64).cpu().numpy())
        else:
            op = _Operator(ops, run_model, x)
            top, res, ok = _top_singular(op, k, tol, rng)
            nd, wt = _slq(op, n_probes, lanczos_steps, rng)
            rows.append(top)
            resid.append(res)
            nodes.append(nd)
            weights.append(wt)
            converged &= ok
            n_matvec += op.count
        if layerwise:
            layer_rows.append(_layer_singular_values(ops, x))
    singular_values = np.stack(rows)
    if method == "exact":
        moments = _moments(singular_values**2, n_moments)
    else:
        nd, wt = np.stack(nodes), np.stack(weights)
        moments = np.stack([(wt * nd**kk).sum(axis=1) for kk in range(1, n_moments + 1)], axis=-1)
    names = tuple(name for name, _ in _weight_segments(ops)) if ops is not None else ()
    return JacobianSpectrum(
        singular_values=singular_values,
        moments=moments,
        method=("chain" if ops is not None else "torch.func") if method == "exact" else "lanczos",
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
