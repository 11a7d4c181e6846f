"""The network both torch runs build: an MLP of masked (or DCT-plus-sparse) layers,
initialised at the edge of chaos or with given σ's, pruned at initialisation, optionally
rescaled; and the density bookkeeping of the result."""

from __future__ import annotations

from sigprop.validate import InvalidInput

__all__ = ["build_mlp", "build_pruned", "collapse_summary", "prune_network"]


def build_mlp(
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


def prune_network(model, dataset, method, density, *, scope, per_class, batch_size, generator):
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


def collapse_summary(model) -> dict:
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


def build_pruned(
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
    """The network of ``train_pruned`` and ``signal_flow``: built from
    ``generator``, pruned with ``method`` at ``density``, rescaled when asked (Hayou et al.,
    arXiv 2002.08797, §4)."""
    model = build_mlp(
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
    prune_network(
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
