"""Diagnostics: what the theory predicts for *this* network, and what it actually does.

``describe(model)``
    per-layer spec bridging torch and theory (``spec``).
``predict(spec, q0=..., c0=...)``
    the mean-field predictions for that spec (``predict``).
``measure(model, inputs)`` / ``gradient_flow(model, data)``
    the same quantities measured with hooks (``measure``).
``compare(prediction, measurement)``
    agreement metrics (``compare``).
``jacobian_spectrum(model, inputs)``
    singular values of the input–output Jacobian (``jacobian``).
``check_collapse(...)``
    layer collapse, dead units and effective sparsity (``collapse``).
``trainability(model, inputs=None)``
    will it train? The theory's indicators combined by a documented rule (``trainable``).
"""

from sigprop.diagnostics.collapse import check_collapse
from sigprop.diagnostics.compare import Agreement, compare
from sigprop.diagnostics.jacobian import JacobianSpectrum, jacobian_spectrum
from sigprop.diagnostics.measure import GradientFlow, Measurement, gradient_flow, measure
from sigprop.diagnostics.predict import Prediction, input_moments, predict
from sigprop.diagnostics.spec import LayerSpec, ModelSpec, UnitDensity, describe
from sigprop.diagnostics.trainable import Trainability, trainability

__all__ = [
    "Agreement",
    "GradientFlow",
    "JacobianSpectrum",
    "LayerSpec",
    "Measurement",
    "ModelSpec",
    "Prediction",
    "Trainability",
    "UnitDensity",
    "check_collapse",
    "compare",
    "describe",
    "gradient_flow",
    "input_moments",
    "jacobian_spectrum",
    "measure",
    "predict",
    "trainability",
]
