"""sigprop.theory: mean-field theory of signal propagation; pure numpy/scipy/sympy.

Importing this package must not import torch (a test enforces it). Submodules:

``activations``  registry of φ, φ′, φ″ and sympy forms (:func:`get_activation`)
``gaussian``     Gaussian expectations (composite Gauss quadrature, 1-D and 2-D)
``meanfield``    q-map, c-map, q*, c*, χ₁, χ_c, depth scales (vectorised over σ grids)
``eoc``          edge of chaos, EOC initialisation, phase diagrams
``symbolic``     sympy derivations of the closed forms (cross-checks)
``spectra``      free-probability Jacobian spectra (imported on first access)
``sparse``       masked-layer theory (imported on first access)

All σ arguments are standard deviations: weights N(0, σ_w²/fan_in), biases N(0, σ_b²).
"""

from __future__ import annotations

import importlib

from sigprop.theory.activations import Activation, get_activation
from sigprop.theory.eoc import (
    EOCCurve,
    EOCPoint,
    PhaseDiagram,
    eoc_curve,
    eoc_init,
    eoc_sigma_w,
    phase_diagram,
)
from sigprop.theory.meanfield import (
    DepthScales,
    c_map,
    c_star,
    chi1,
    chi_c,
    depth_scales,
    q_map,
    q_star,
)

__all__ = [
    "Activation",
    "DepthScales",
    "EOCCurve",
    "EOCPoint",
    "c_map",
    "c_star",
    "chi1",
    "chi_c",
    "depth_scales",
    "eoc_curve",
    "eoc_init",
    "eoc_sigma_w",
    "get_activation",
    "phase_diagram",
    "PhaseDiagram",
    "q_map",
    "q_star",
]

_LAZY_SUBMODULES = (
    "spectra",
    "sparse",
    "pruned",
    "resnet",
    "expression",
    "propagation",
    "symbolic",
)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
