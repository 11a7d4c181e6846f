"""The ``mean_field`` run: theory only (no torch)."""

from __future__ import annotations

__all__ = ["mean_field"]


def mean_field(*, activation: str = "tanh", sigma_w: float, sigma_b: float = 0.0) -> dict:
    """Mean-field fixed point, χ₁ and depth scales of a deep random network at (σ_w, σ_b).

    q* solves q = σ_w² E[φ(√q z)²] + σ_b² (Poole et al. 2016, arXiv 1606.05340, eq. 3–4);
    χ₁ = σ_w² E[φ′(√q* z)²] (ibid. eq. 8); ξ_q, ξ_c are the depth scales of Schoenholz et al.
    2017 (arXiv 1611.01232, eq. 5 and 9). ``phase`` is ``"ordered"`` (χ₁ < 1),
    ``"chaotic"`` (χ₁ > 1) or ``"critical"`` (|χ₁ − 1| < 1e-9).
    """
    from sigprop.theory import depth_scales

    ds = depth_scales(activation, sigma_w, sigma_b)
    chi = float(ds.chi1)
    phase = "critical" if abs(chi - 1.0) < 1e-9 else ("ordered" if chi < 1 else "chaotic")
    return {
        "q_star": float(ds.q_star),
        "chi1": chi,
        "c_star": float(ds.c_star),
        "xi_q": float(ds.xi_q),
        "xi_c": float(ds.xi_c),
        "phase": phase,
    }
