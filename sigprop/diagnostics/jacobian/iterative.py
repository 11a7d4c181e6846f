"""Iterative spectra without forming J: ARPACK's top singular values and stochastic Lanczos
quadrature for the spectral density (module doc of :mod:`sigprop.diagnostics.jacobian`)."""

from __future__ import annotations

import math

import numpy as np
import torch


class _Operator:
    """J·V and Jᵀ·U at one input for blocks of vectors (rows), as numpy functions, with a
    counter of vector products.

    ``linear`` is a linear tangent map (a chain's :class:`_Linearised` or a
    :class:`LinearisedGraph`: ``forward(t)`` for tangents t of shape (n, *in_shape)), whose
    transpose is the vector-Jacobian product of that map; ``model`` (when ``linear`` is None)
    goes through ``torch.func.jvp``/``vjp`` at x, vectorised with ``vmap``.
    """

    def __init__(self, linear, model, x: torch.Tensor):
        self.count = 0
        self.dtype, self.device = x.dtype, x.device
        if linear is not None:
            self.in_shape, self.out_shape = tuple(linear.in_shape), tuple(linear.out_shape)
            self._fwd = linear.forward
            # Jᵀ·u: autograd through the linear map, recorded once at batch size 1
            zero = torch.zeros(1, *self.in_shape, dtype=self.dtype, device=self.device)
            with torch.enable_grad():
                _, vjp = torch.func.vjp(linear.forward, zero)
        else:
            self.in_shape = tuple(x.shape[1:])

            def f(xi):
                return model(xi)

            with torch.no_grad():
                self.out_shape = tuple(f(x).shape[1:])

            def fwd(t):
                one = lambda v: torch.func.jvp(f, (x,), (v.unsqueeze(0),))[1][0]  # noqa: E731
                return torch.func.vmap(one)(t)

            self._fwd = fwd
            _, vjp = torch.func.vjp(f, x)
        self._vjp = torch.func.vmap(lambda u: vjp(u.unsqueeze(0))[0][0])
        self.n_in = math.prod(self.in_shape)
        self.n_out = math.prod(self.out_shape)

    def _tensor(self, a: np.ndarray, shape) -> torch.Tensor:
        a = np.ascontiguousarray(a, dtype=np.float64)
        return torch.as_tensor(a, dtype=self.dtype, device=self.device).reshape(-1, *shape)

    def matmat(self, v: np.ndarray) -> np.ndarray:
        """J vᵢ for each row vᵢ of ``v`` (n, n_in) → (n, n_out)."""
        t = self._tensor(v, self.in_shape)
        self.count += t.shape[0]
        with torch.no_grad():
            out = self._fwd(t)
        return out.reshape(t.shape[0], -1).cpu().numpy().astype(np.float64)

    def rmatmat(self, u: np.ndarray) -> np.ndarray:
        """Jᵀ uᵢ for each row uᵢ of ``u`` (n, n_out) → (n, n_in)."""
        t = self._tensor(u, self.out_shape)
        self.count += t.shape[0]
        with torch.no_grad():
            out = self._vjp(t)
        return out.detach().reshape(t.shape[0], -1).cpu().numpy().astype(np.float64)

    def matvec(self, v: np.ndarray) -> np.ndarray:
        return self.matmat(np.reshape(v, (1, -1)))[0]

    def rmatvec(self, u: np.ndarray) -> np.ndarray:
        return self.rmatmat(np.reshape(u, (1, -1)))[0]

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
    polynomials of degree < 2m); averaging over probes estimates (1/r) tr f(G). The probes'
    Lanczos recurrences run in lockstep, so each step is one *batched* product with G (all
    probes at once), which costs far less than n_probes single products.
    """
    from scipy.linalg import eigh_tridiagonal

    if op.n_in <= op.n_out:
        r = op.n_in

        def gram(v):
            return op.rmatmat(op.matmat(v))
    else:
        r = op.n_out

        def gram(v):
            return op.matmat(op.rmatmat(v))

    m = min(steps, r)
    p = n_probes
    basis = np.zeros((p, m, r))
    alpha, beta = np.zeros((p, m)), np.zeros((p, m))
    basis[:, 0] = rng.choice(np.array([-1.0, 1.0]), size=(p, r)) / math.sqrt(r)
    size = np.full(p, m)
    active = np.ones(p, dtype=bool)
    for j in range(m):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        w = gram(basis[idx, j])
        alpha[idx, j] = np.einsum("pr,pr->p", basis[idx, j], w)
        # full reorthogonalisation (twice is enough) against all previous vectors
        prev = basis[idx, : j + 1]
        for _ in range(2):
            w -= np.einsum("pjr,pj->pr", prev, np.einsum("pjr,pr->pj", prev, w))
        if j + 1 < m:
            norms = np.linalg.norm(w, axis=1)
            scale = np.maximum(np.abs(alpha[idx, : j + 1]).max(axis=1), 1e-300)
            done = norms <= 1e-12 * scale  # invariant subspace: the quadrature is exact
            size[idx[done]] = j + 1
            active[idx[done]] = False
            keep = ~done
            beta[idx[keep], j] = norms[keep]
            basis[idx[keep], j + 1] = w[keep] / norms[keep, None]
    width = p * m
    node_arr, weight_arr = np.zeros(width), np.zeros(width)
    pos = 0
    for i in range(p):
        theta, vecs = eigh_tridiagonal(alpha[i, : size[i]], beta[i, : size[i] - 1])
        node_arr[pos : pos + theta.size] = np.clip(theta, 0.0, None)
        weight_arr[pos : pos + theta.size] = vecs[0] ** 2 / p
        pos += theta.size
    return node_arr, weight_arr
