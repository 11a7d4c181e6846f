"""The result type of :func:`sigprop.diagnostics.jacobian_spectrum`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sigprop._json import to_jsonable
from sigprop.validate import InvalidInput

__all__ = ["JacobianSpectrum"]


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
        """JSON-ready fields (``sigprop._json``: NaN residuals become ``None``)."""
        return to_jsonable(self)
