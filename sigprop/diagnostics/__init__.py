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

The names are imported from their submodules on first use (the package's module class
customises attribute access), so that a check that needs no torch (``sigprop check
FILE.safetensors``) reaches ``check_collapse`` without importing it: every submodule but
``collapse`` and ``trainable`` imports torch.
"""

import importlib
import sys
import types

#: public name -> the submodule defining it
_WHERE = {
    "Agreement": "compare",
    "compare": "compare",
    "check_collapse": "collapse",
    "JacobianSpectrum": "jacobian",
    "jacobian_spectrum": "jacobian",
    "GradientFlow": "measure",
    "Measurement": "measure",
    "gradient_flow": "measure",
    "measure": "measure",
    "Prediction": "predict",
    "input_moments": "predict",
    "predict": "predict",
    "LayerSpec": "spec",
    "ModelSpec": "spec",
    "UnitDensity": "spec",
    "describe": "spec",
    "Trainability": "trainable",
    "trainability": "trainable",
}

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


class _Package(types.ModuleType):
    """This package, its names imported on first use."""

    def __getattr__(self, name: str):
        where = _WHERE.get(name)
        if where is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value) -> None:
        # the import system binds each submodule on its package; where one shares its name
        # with a function of this package (measure, predict, compare), the function keeps
        # the name, as it did when the names were imported eagerly
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_WHERE))


sys.modules[__name__].__class__ = _Package
