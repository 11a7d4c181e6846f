"""The ``signal_flow`` run: theory against measurement at initialisation, no training."""

from __future__ import annotations

from sigprop.experiments.runs.network import build_pruned, collapse_summary

__all__ = ["signal_flow"]


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
    model = build_pruned(
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
    out.update(collapse_summary(model))
    return out
