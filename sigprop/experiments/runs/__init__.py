"""Named run functions: what one grid point of a sweep does.

Each run takes keyword parameters only (JSON values, so a TOML file can set them) and returns
a flat JSON-able dict of numbers, strings, booleans and lists of numbers. A sweep refers to
a run by its name in :data:`RUNS`; a ``"package.module:function"`` path (your own runs,
importable on every worker) is imported only with an explicit opt-in (``allow_import=True``,
``sigprop sweep --allow-import``), because a config that names a module path is code.

``mean_field``
    Theory only (no torch): q*, χ₁, c*, depth scales and the phase at (σ_w, σ_b).
``train_pruned``
    Build an MLP of masked layers, initialise it (EOC or given σ's), prune it at
    initialisation, optionally rescale, train it with :func:`~sigprop.experiments.train.train`;
    report accuracy, actual and effective density, collapsed layers. Its parameters are the
    fields of :class:`TrainPrunedConfig`.
``signal_flow``
    No training: the mean-field prediction for the (pruned, rescaled) network against the
    measurement on real inputs — q^l, χ^l and gradient-norm ratios, layer by layer.
``trainability_case``
    Build, initialise (σ_w² relative to the edge of chaos), prune and optionally rescale an
    MLP or convnet; record ``sigprop.diagnostics.trainability`` and the baselines before
    training, then train with a fixed budget (the trainability sweeps in
    ``examples/trainability/``).
``prune_ablations``
    Frankle et al.'s sanity checks (arXiv 2009.08576) for one method and density: train
    the pruned network and its shuffled, re-initialised and inverted variants; report each
    accuracy.

Runs seed everything from their ``seed`` parameter (a local ``torch.Generator``), so a row
is reproducible from its parameters alone.

Modules: ``theory`` (mean_field), ``network`` (the pruned MLP both torch runs build),
``training`` (:class:`TrainPrunedConfig`, train_pruned), ``flow`` (signal_flow),
``ablations`` (prune_ablations), ``trainability`` (trainability_case).
"""

from __future__ import annotations

import importlib

from sigprop.experiments.runs.ablations import prune_ablations
from sigprop.experiments.runs.flow import signal_flow
from sigprop.experiments.runs.theory import mean_field
from sigprop.experiments.runs.trainability import trainability_case
from sigprop.experiments.runs.training import TrainPrunedConfig, run_train_pruned, train_pruned
from sigprop.validate import InvalidInput, InvalidType

__all__ = [
    "RUNS",
    "TrainPrunedConfig",
    "check_run_ref",
    "get_run",
    "mean_field",
    "prune_ablations",
    "run_train_pruned",
    "signal_flow",
    "train_pruned",
    "trainability_case",
]

#: The runs a sweep can name.
RUNS = {
    "mean_field": mean_field,
    "train_pruned": train_pruned,
    "signal_flow": signal_flow,
    "prune_ablations": prune_ablations,
    "trainability_case": trainability_case,
}

#: Longest run reference accepted (characters).
MAX_REF_CHARS = 200


def check_run_ref(ref, *, allow_import: bool = False) -> str:
    """``ref`` if it names a run in :data:`RUNS` or — only with ``allow_import`` — is a
    ``"package.module:function"`` path of Python identifiers; :class:`InvalidInput` otherwise.
    """
    if not isinstance(ref, str):
        raise InvalidType(f"a run is named by a string, got {type(ref).__name__}")
    if ref in RUNS:
        return ref
    if ":" not in ref:
        raise InvalidInput(
            f"unknown run {ref!r:.{MAX_REF_CHARS}}; choose from {sorted(RUNS)} "
            "(or 'package.module:function' with --allow-import)"
        )
    module, _, attr = ref.partition(":")
    if len(ref) > MAX_REF_CHARS or not (
        all(part.isidentifier() for part in module.split(".")) and attr.isidentifier()
    ):
        raise InvalidInput(f"run {ref!r:.{MAX_REF_CHARS}} is not a 'package.module:function' path")
    if not allow_import:
        raise InvalidInput(
            f"run {ref!r} would import and call code named by the config; the registered "
            f"runs are {sorted(RUNS)} (--allow-import runs it: only for a config you trust "
            "as code)"
        )
    return ref


def get_run(ref: str, *, allow_import: bool = False):
    """The run function for a name in :data:`RUNS`, or — only with ``allow_import`` — for a
    ``"package.module:function"`` path (the module is imported: that runs its code)."""
    check_run_ref(ref, allow_import=allow_import)
    if ref in RUNS:
        return RUNS[ref]
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import the module of run {ref!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InvalidInput(f"{module_name} has no function {attr!r}")
    return fn
