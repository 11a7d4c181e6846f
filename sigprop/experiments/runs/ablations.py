"""The ``prune_ablations`` run: the sanity checks of Frankle et al. 2021 (arXiv 2009.08576,
Sec. 5) on a small MLP -- prune at initialisation, ablate the mask (shuffle it inside each
layer, re-draw the kept weights, invert the scores: :func:`sigprop.prune.ablations`), train
every variant with the same data order and report the test accuracies."""

from __future__ import annotations

from sigprop.validate import InvalidInput, nonneg_float, positive_int

__all__ = ["prune_ablations"]


def prune_ablations(
    *,
    dataset: str = "digits",
    method: str = "snip",
    density: float = 0.1,
    width: int = 100,
    depth: int = 4,
    activation: str = "relu",
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.1,
    momentum: float = 0.9,
    per_class: int = 10,
    kinds: tuple[str, ...] | list[str] = ("shuffle", "reinit", "invert"),
    seed: int = 0,
    data_seed: int = 0,
) -> dict:
    """Train the original and the ablated masks of ``method`` at ``density``.

    The MLP (``width`` units, ``depth`` weight layers, masked layers) is initialised at the
    edge of chaos (``sigprop.nn.init.eoc_init_``), pruned on ``per_class`` samples per class
    (score-based methods) or one epoch of mini-batches (K-starts, dissipating), ablated by
    :func:`sigprop.prune.ablations` with ``kinds`` (``"invert"`` only for score-based
    methods) and every variant trained by :func:`~sigprop.experiments.train.train` with SGD
    (``lr``, ``momentum``, ``epochs``, ``batch_size``, ``seed``).

    Returns ``accuracy_original`` and ``accuracy_<kind>`` (final test accuracy),
    ``drop_<kind>`` (original − ablated), ``kept_weights``, ``layer_density`` (per layer of
    the original mask) and ``layer_density_<kind>``.
    """
    import torch

    from sigprop.experiments.data import class_balanced_batch, load_dataset, minibatches
    from sigprop.experiments.runs.network import build_mlp
    from sigprop.experiments.train import train
    from sigprop.prune import METHODS, SCORERS, ablations

    if method not in METHODS:
        raise InvalidInput(f"unknown pruning method {method!r}; choose from {list(METHODS)}")
    epochs = positive_int(epochs, "epochs")
    batch_size = positive_int(batch_size, "batch_size")
    per_class = positive_int(per_class, "per_class")
    nonneg_float(momentum, "momentum")
    kinds = tuple(kinds)
    generator = torch.Generator().manual_seed(int(seed))
    data = load_dataset(dataset, seed=int(data_seed))
    if data.n_classes == 0:
        raise InvalidInput("prune_ablations needs a classification dataset")
    model = build_mlp(
        data,
        width=width,
        depth=depth,
        activation=activation,
        layer="masked",
        init="eoc",
        sigma_w=None,
        sigma_b=0.0,
        generator=generator,
    )
    if method in SCORERS:
        batch = class_balanced_batch(data, per_class, generator)
    else:
        batch = list(minibatches(data.x_train, data.y_train, batch_size, generator=generator))
    res = ablations(model, method, density, batch, kinds=kinds, generator=generator)
    out = {
        "kept_weights": res.original.report.kept,
        "layer_density": [layer.density for layer in res.original.report.layers],
    }
    for name in ("original", *kinds):
        variant = res[name]
        trained = train(
            variant.model,
            data,
            epochs=epochs,
            batch_size=batch_size,
            optimizer="sgd",
            lr=lr,
            momentum=momentum,
            seed=int(seed),
            progress=False,
        )
        out[f"accuracy_{name}"] = trained.final_test_accuracy
        if name != "original":
            out[f"layer_density_{name}"] = [layer.density for layer in variant.report.layers]
    for kind in kinds:
        out[f"drop_{kind}"] = out["accuracy_original"] - out[f"accuracy_{kind}"]
    return out
