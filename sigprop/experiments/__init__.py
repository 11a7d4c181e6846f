"""sigprop.experiments: data that ships with the install, one training loop, sweeps.

``data``       :func:`load_dataset` (``digits``, ``mnist1d``, ``teacher``, ``npz:PATH``),
               :func:`class_balanced_batch`, :func:`minibatches` (alias :func:`batches`)
``train``      :func:`train` — the one training loop — and :class:`TrainResult`, :func:`evaluate`
``recorders``  diagnostics during training: :class:`GradientNormRecorder`,
               :class:`PreactivationRecorder`, :class:`JacobianRecorder`, :class:`DensityRecorder`
``sweep``      :class:`Sweep`, :func:`run_sweep` (local processes or Dask, resumable),
               :func:`load_results`, :func:`summary_table`
``runs``       the named runs a sweep calls: ``mean_field``, ``train_pruned`` (its
               configuration :class:`TrainPrunedConfig`), ``signal_flow``

The names above are importable from this package directly; they are loaded on first use, so
``import sigprop.experiments`` stays cheap (torch is imported only when needed).

Example
-------
>>> from sigprop.experiments import load_dataset, train, GradientNormRecorder
>>> from sigprop.nn.models import mlp
>>> ds = load_dataset("digits")
>>> model = mlp(ds.n_features, 64, 3, ds.n_classes, "tanh")
>>> result = train(model, ds, epochs=3, lr=0.05, recorders=[GradientNormRecorder()],
...                progress=False)
>>> result.final_test_accuracy > 0.9
True
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Dataset": "data",
    "DATASETS": "data",
    "load_dataset": "data",
    "class_balanced_batch": "data",
    "batches": "data",
    "minibatches": "data",
    "train": "train",
    "evaluate": "train",
    "TrainResult": "train",
    "Recorder": "recorders",
    "GradientNormRecorder": "recorders",
    "PreactivationRecorder": "recorders",
    "JacobianRecorder": "recorders",
    "DensityRecorder": "recorders",
    "weight_layers": "recorders",
    "Sweep": "sweep",
    "SweepReport": "sweep",
    "run_sweep": "sweep",
    "load_results": "sweep",
    "sweep_rows": "sweep",
    "summary_table": "sweep",
    "format_table": "sweep",
    "run_key": "sweep",
    "RUNS": "runs",
    "get_run": "runs",
    "TrainPrunedConfig": "runs",
    "approximate_isometry_": "isometry",
    "isometry_penalty": "isometry",
    "IsometryResult": "isometry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sigprop.experiments' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sigprop.experiments.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
