"""Named run functions: what one grid point of a sweep does.

Each run takes keyword parameters only (JSON values, so a TOML file can set them) and returns
a flat JSON-able dict of numbers, strings, booleans and lists of numbers. A sweep refers to
a run by its name in :data:`RUNS` or, for your own runs, by ``"package.module:function"``
(importable on every worker).

``mean_field``
    Theory only (no torch): q*, χ₁, c*, depth scales and the phase at (σ_w, σ_b).
``train_pruned``
    Build an MLP of masked layers, initialise it (EOC or given σ's), prune it at
    initialisation, optionally rescale, train it with :func:`~sigprop.experiments.train.train`;
    report accuracy, actual and effective density, collapsed layers.
``signal_flow``
    No training: the mean-field prediction for the (pruned, rescaled) network against the
    measurement on real inputs — q^l, χ^l and gradient-norm ratios, layer by layer.

Runs seed everything from their ``seed`` parameter (a local ``torch.Generator``), so a row
is reproducible from its parameters alone.
"""

from __future__ import annotations

import importlib

from sigprop.validate import InvalidInput

__all__ = ["RUNS", "get_run", "mean_field", "signal_flow", "train_pruned"]


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


def _build_mlp(
    dataset, *, width, depth, activation, layer, init, sigma_w, sigma_b, generator, density=1.0
):
    import torch

    from sigprop.nn.init import eoc_init_, gaussian_init_
    from sigprop.nn.models import mlp

    model = mlp(
        dataset.n_features,
        width,
        depth,
        dataset.out_features,
        activation,
        layer=layer,
        density=density,
        generator=generator,
    )
    if init == "eoc":
        if sigma_w is not None:
            raise InvalidInput("init='eoc' chooses sigma_w itself; pass init='gaussian' to set it")
        eoc_init_(model, activation, sigma_b=sigma_b, generator=generator)
    elif init == "gaussian":
        if sigma_w is None:
            raise InvalidInput("init='gaussian' needs sigma_w")
        gaussian_init_(model, sigma_w, sigma_b, generator=generator)
    elif init != "default":
        raise InvalidInput(f"init must be 'eoc', 'gaussian' or 'default', got {init!r}")
    return model.to(torch.get_default_dtype())


def _prune(model, dataset, method, density, *, scope, per_class, batch_size, generator):
    from sigprop.experiments.data import class_balanced_batch, minibatches
    from sigprop.prune import METHODS, prune_at_init

    if method in ("dense", "none"):
        if density != 1.0:
            raise InvalidInput(f"method={method!r} keeps every weight; density must be 1.0")
        return
    if method not in METHODS:
        raise InvalidInput(
            f"unknown pruning method {method!r}; choose from {list(METHODS)} or 'dense'"
        )
    if method in ("kstarts", "dissipating", "kstarts+dissipating"):
        data = list(minibatches(dataset.x_train, dataset.y_train, batch_size, generator=generator))
    elif dataset.n_classes > 0:
        data = class_balanced_batch(dataset, per_class, generator)
    else:
        data = (dataset.x_train[: per_class * 10], dataset.y_train[: per_class * 10])
    prune_at_init(model, method, density, data, scope=scope, generator=generator, progress=False)


def _collapse(model) -> dict:
    from sigprop.diagnostics import check_collapse

    report = check_collapse(model)
    layer_density = [(layer.kept / layer.total) if layer.total else None for layer in report.layers]
    eff = report.effective_sparsity
    return {
        "density_actual": report.kept / report.total,
        "effective_density": None if eff is None else 1.0 - eff,
        "layer_density": layer_density,
        "collapsed_layers": len(report.collapsed_layers),
        "effectively_collapsed_layers": len(report.effectively_collapsed_layers),
        "connected": report.connected,
        "kept_weights": report.kept,
    }


def _build_pruned(
    data,
    generator,
    *,
    width,
    depth,
    activation,
    layer,
    init,
    sigma_w,
    sigma_b,
    method,
    density,
    scope,
    per_class,
    batch_size,
    rescale,
):
    """The network of :func:`train_pruned` and :func:`theory_vs_measurement`: built from
    ``generator``, pruned with ``method`` at ``density``, rescaled when asked (Hayou et al.,
    arXiv 2002.08797, §4)."""
    model = _build_mlp(
        data,
        width=width,
        depth=depth,
        activation=activation,
        layer=layer,
        init=init,
        sigma_w=sigma_w,
        sigma_b=sigma_b,
        generator=generator,
    )
    _prune(
        model,
        data,
        method,
        density,
        scope=scope,
        per_class=per_class,
        batch_size=batch_size,
        generator=generator,
    )
    if rescale:
        from sigprop.nn.init import rescale_

        rescale_(model)
    return model


def train_pruned(
    *,
    dataset: str = "digits",
    data_seed: int = 0,
    width: int = 100,
    depth: int = 4,
    activation: str = "tanh",
    layer: str = "masked",
    init: str = "eoc",
    sigma_w: float | None = None,
    sigma_b: float = 0.0,
    method: str = "snip",
    density: float = 0.1,
    scope: str = "global",
    rescale: bool = False,
    per_class: int = 10,
    epochs: int = 10,
    batch_size: int = 64,
    optimizer: str = "sgd",
    lr: float = 0.01,
    momentum: float | None = None,
    weight_decay: float = 0.0,
    schedule: str | None = None,
    dsr: bool = False,
    dsr_interval: int = 100,
    dsr_prune_fraction: float = 0.01,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Prune an MLP at initialisation, train it, and report accuracy and (effective) density.

    Steps: :func:`~sigprop.experiments.data.load_dataset` (split seeded by ``data_seed``, so
    the data stay fixed while ``seed`` varies); ``sigprop.nn.models.mlp`` with ``depth``
    weight layers (the readout included) of ``width`` units and ``layer`` layers
    (``"masked"`` or ``"dct"``);
    initialisation at the edge of chaos (``init="eoc"``, ``sigprop.nn.init.eoc_init_`` with
    ``sigma_b``; Schoenholz et al., arXiv 1611.01232) or N(0, σ_w²/fan_in)
    (``init="gaussian"``); ``sigprop.prune.prune_at_init(method, density)`` on
    ``per_class`` samples per class (data-dependent scores) or one epoch of mini-batches
    (K-starts, dissipating gradients); the rescaling trick (``rescale=True``,
    ``sigprop.nn.init.rescale_``; Hayou et al., arXiv 2002.08797, §4); optionally DSR during
    training (``dsr=True``, ``sigprop.prune.DSR`` every ``dsr_interval`` steps with target
    prune count ``dsr_prune_fraction`` of the kept weights — 1e-2 is the default
    ``target_fraction_to_prune`` of the authors' dynamic-sparse code; Mostafa & Wang, arXiv
    1902.05967, Alg. 1); then :func:`~sigprop.experiments.train.train`.
    ``method="dense"`` (with ``density=1``) skips pruning: the dense baseline.

    Returns ``final_test_accuracy``, ``best_test_accuracy``, ``final_train_accuracy``,
    ``final_test_loss``, ``diverged``, ``epochs_completed``, ``density_actual`` (kept
    fraction after pruning), ``effective_density`` (kept weights on an input–output path,
    Vysogorets & Kempe, arXiv 2107.02306), ``layer_density`` (per weight layer),
    ``collapsed_layers`` (count of fully pruned layers), ``effectively_collapsed_layers``,
    ``connected``, ``kept_weights``, ``train_time`` (seconds), and with DSR the final
    per-layer densities as ``layer_density_end``.
    """
    import torch

    from sigprop.experiments.data import load_dataset
    from sigprop.experiments.train import train

    generator = torch.Generator().manual_seed(seed)
    data = load_dataset(dataset, seed=data_seed)
    if data.n_classes == 0:
        raise InvalidInput("train_pruned needs a classification dataset")
    model = _build_pruned(
        data,
        generator,
        width=width,
        depth=depth,
        activation=activation,
        layer=layer,
        init=init,
        sigma_w=sigma_w,
        sigma_b=sigma_b,
        method=method,
        density=density,
        scope=scope,
        per_class=per_class,
        batch_size=batch_size,
        rescale=rescale,
    )
    out = {"n_params": sum(p.numel() for p in model.parameters())}
    out.update(_collapse(model))
    component = None
    if dsr:
        from sigprop.prune import DSR, dsr_dense_layers

        component = DSR(
            model,
            prune_interval=dsr_interval,
            target_prune_fraction=dsr_prune_fraction,
            dense_layers=dsr_dense_layers(model),
            generator=generator,
        )
    result = train(
        model,
        data,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        dsr=component,
        device=device,
        seed=seed,
        progress=False,
    )
    out.update(
        final_test_accuracy=result.final_test_accuracy,
        best_test_accuracy=result.best_test_accuracy,
        final_train_accuracy=result.final_train_accuracy,
        final_test_loss=result.final_test_loss,
        diverged=result.diverged,
        epochs_completed=result.epochs,
        train_time=result.wall_time,
    )
    if dsr:
        out["layer_density_end"] = _collapse(model)["layer_density"]
    return out


def signal_flow(
    *,
    dataset: str = "mnist1d",
    data_seed: int = 0,
    n_inputs: int = 64,
    width: int = 256,
    depth: int = 10,
    activation: str = "tanh",
    layer: str = "masked",
    init: str = "eoc",
    sigma_w: float | None = None,
    sigma_b: float = 0.0,
    method: str = "random",
    density: float = 0.1,
    scope: str = "global",
    rescale: bool = False,
    per_class: int = 10,
    seed: int = 0,
) -> dict:
    """Theory against measurement for one (pruned, rescaled) network at initialisation.

    Builds and prunes the network exactly as :func:`train_pruned` does, then compares the
    mean-field predictions of ``sigprop.diagnostics.predict`` for that network (masks
    included: a random mask of density ρ maps σ_w² → ρσ_w², Hayou et al., arXiv 2002.08797,
    §3) with ``sigprop.diagnostics.measure`` on ``n_inputs`` test inputs. Returns the
    per-layer ``q_measured``/``q_predicted``, ``chi_measured``/``chi_predicted``,
    ``grad_ratio_measured``/``grad_ratio_predicted`` (lists, first layer first), their
    maximum and median relative errors (``q_rel_err_max``, ...), and the density bookkeeping
    of :func:`train_pruned`.
    """
    import numpy as np
    import torch

    from sigprop.diagnostics import compare, describe, input_moments, measure, predict
    from sigprop.experiments.data import load_dataset

    generator = torch.Generator().manual_seed(seed)
    data = load_dataset(dataset, seed=data_seed)
    model = _build_pruned(
        data,
        generator,
        width=width,
        depth=depth,
        activation=activation,
        layer=layer,
        init=init,
        sigma_w=sigma_w,
        sigma_b=sigma_b,
        method=method,
        density=density,
        scope=scope,
        per_class=per_class,
        batch_size=64,
        rescale=rescale,
    )
    inputs = data.x_test[:n_inputs]
    spec = describe(model)
    q0, c0 = input_moments(inputs)
    prediction = predict(spec, q0=q0, c0=c0)
    measurement = measure(model, inputs, spec=spec, seed=seed)
    agreement = compare(prediction, measurement)

    def lst(a):
        return [float(v) for v in np.asarray(a, dtype=np.float64)]

    out = {
        "q_measured": lst(measurement.q),
        "q_predicted": lst(prediction.q),
        "chi_measured": lst(measurement.chi),
        "chi_predicted": lst(prediction.chi),
        "grad_ratio_measured": lst(measurement.grad_ratio),
        "grad_ratio_predicted": lst(prediction.grad_ratio),
    }
    for name in ("q", "chi", "grad_ratio"):
        err = np.abs(np.asarray(getattr(agreement, f"{name}_rel_err"), dtype=np.float64))
        out[f"{name}_rel_err_max"] = float(np.nanmax(err)) if np.isfinite(err).any() else None
        out[f"{name}_rel_err_median"] = float(np.nanmedian(err)) if np.isfinite(err).any() else None
    out.update(_collapse(model))
    return out


#: The runs a sweep can name.
RUNS = {
    "mean_field": mean_field,
    "train_pruned": train_pruned,
    "signal_flow": signal_flow,
}


def get_run(ref: str):
    """The run function for a name in :data:`RUNS` or a ``"package.module:function"`` path."""
    if not isinstance(ref, str):
        raise InvalidInput(f"a run is named by a string, got {type(ref).__name__}")
    if ref in RUNS:
        return RUNS[ref]
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InvalidInput(f"cannot import the module of run {ref!r}: {exc}") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise InvalidInput(f"{module_name} has no function {attr!r}")
        return fn
    raise InvalidInput(
        f"unknown run {ref!r}; choose from {sorted(RUNS)} or 'package.module:function'"
    )
