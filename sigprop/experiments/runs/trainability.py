"""The ``trainability_case`` run: one point of the trainability sweeps.

Build a network (an MLP, or a convnet: 2-D on the 8×8 digits, 1-D at stride 1 on mnist1d
and the teacher's signals) of masked or DCT-plus-sparse layers (``layer="dct"``: y = α·D·x +
S·x + b with S zero at a uniformly random support of the given density), initialise it at σ_w² = ``sigma_w2_ratio`` × the edge of chaos
σ_w² at ``sigma_b`` (ratio < 1 ordered, > 1 chaotic; Schoenholz et al. 2017, arXiv
1611.01232), prune it at initialisation, optionally rescale; then, *before any training
step*, record :func:`sigprop.diagnostics.trainability` (score and every indicator) and the
baselines a practitioner would use (the density; "no layer collapsed"; the SNIP and GraSP
score sums over the kept weights on the pruning batch); then train with a fixed budget and
record the accuracies. Whether it "trained" is decided afterwards
(:mod:`sigprop.diagnostics.trainable.evaluation`), from ``final_test_accuracy`` and ``chance``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from sigprop.validate import InvalidInput, nonneg_float, nonneg_int, positive_float, positive_int

__all__ = ["MODELS", "load_split", "trainability_case"]

#: Network families of the run.
MODELS = ("mlp", "conv")


def _network(data, model, width, depth, activation, layer, density, generator):
    from sigprop.nn.models import conv1d_net, digits_convnet, mlp

    shape = data.input_shape
    if model == "mlp":
        return mlp(
            math.prod(shape),
            width,
            depth,
            data.out_features,
            activation,
            layer=layer,
            density=density,
            generator=generator,
        )
    channels = (width,) * (depth - 1)
    if depth < 2:
        raise InvalidInput("a convnet needs depth ≥ 2 (convolutions plus the readout)")
    if shape == (1, 8, 8):
        return digits_convnet(
            activation,
            channels=channels,
            num_classes=data.out_features,
            layer=layer,
            density=density,
            generator=generator,
        )
    if len(shape) == 2:
        return conv1d_net(
            activation,
            channels=channels,
            kernel_size=5,
            stride=1,
            length=shape[1],
            in_channels=shape[0],
            num_classes=data.out_features,
            layer=layer,
            density=density,
            generator=generator,
        )
    raise InvalidInput(f"no convnet for inputs of shape {shape}")


def _initialise(net, activation, sigma_w2_ratio, sigma_b, generator):
    import torch

    from sigprop.nn.init import eoc_init_, gaussian_init_
    from sigprop.nn.kinds import is_dct_layer
    from sigprop.theory.eoc import eoc_init

    dct = [m for m in net.modules() if is_dct_layer(m)]
    if dct:
        # S starts at zero; α·D is orthogonal with gain α, so α = σ_w puts the network at
        # the same point of the phase diagram (Price & Tanner 2021, arXiv 2102.07655, §3)
        sw = eoc_init(activation, sigma_b).sigma_w * math.sqrt(sigma_w2_ratio)
        with torch.no_grad():
            for m in dct:
                m.alpha.fill_(sw)
                if m.bias is not None:
                    m.bias.normal_(0.0, sigma_b, generator=generator)
        return
    if sigma_w2_ratio == 1.0:
        eoc_init_(net, activation, sigma_b=sigma_b, generator=generator)
        return
    sw = eoc_init(activation, sigma_b).sigma_w * math.sqrt(sigma_w2_ratio)
    gaussian_init_(net, sw, sigma_b, generator=generator, activation=activation)


def _score_sum(net, method, batch) -> float:
    """Σ over kept weights of the method's raw (unnormalised) score on the pruning batch:
    SNIP's total connection sensitivity Σ|θ ⊙ g|, GraSP's Σ θ ⊙ Hg (a baseline)."""
    import torch

    from sigprop.prune import compute_scores

    scores = compute_scores(net, method, batch, normalise=False)
    return float(sum(torch.sum(s, dtype=torch.float64) for s in scores.values()))


def trainability_case(
    *,
    dataset: str = "digits",
    data_seed: int = 0,
    model: str = "mlp",
    width: int = 100,
    depth: int = 10,
    activation: str = "tanh",
    sigma_b: float = 0.05,
    sigma_w2_ratio: float = 1.0,
    layer: str = "masked",
    method: str = "random",
    density: float = 0.1,
    rescale: bool = False,
    per_class: int = 10,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.0,
    seed: int = 0,
) -> dict:
    """One trainability case (module doc); parameters as named there.

    Returns the prediction (``score``, ``predicted_trainable``, ``effective_depth``,
    ``correlation_depth``, ``log_grad_ratio``, ``signal_fraction``, ``jacobian_spread``,
    ``min_fan_in``, ``fan_in_depth``, ``sigma_w2_loss``, ``reasons``, ``predict_time``), the mask
    (``density_actual``, ``effective_density``, ``connected``, ``collapsed_layers``,
    ``bypassed_layers``), the baselines (``snip_sum``, ``grasp_sum``) and the training
    (``final_test_accuracy``, ``best_test_accuracy``, ``final_train_accuracy``,
    ``diverged``, ``chance``, ``train_time``).
    """
    import torch

    from sigprop.diagnostics import trainability
    from sigprop.experiments.data import class_balanced_batch, load_dataset
    from sigprop.experiments.runs.network import prune_network
    from sigprop.experiments.train import train

    if model not in MODELS:
        raise InvalidInput(f"model must be one of {MODELS}, got {model!r:.40}")
    width, depth = positive_int(width, "width"), positive_int(depth, "depth")
    ratio = positive_float(sigma_w2_ratio, "sigma_w2_ratio")
    sigma_b = nonneg_float(sigma_b, "sigma_b")
    epochs, per_class = positive_int(epochs, "epochs"), positive_int(per_class, "per_class")
    seed = nonneg_int(seed, "seed")
    if not isinstance(rescale, bool):
        raise InvalidInput(f"rescale must be true or false, got {rescale!r:.40}")
    generator = torch.Generator().manual_seed(seed)
    data = load_dataset(dataset, seed=nonneg_int(data_seed, "data_seed"), flatten=model == "mlp")
    if data.n_classes == 0:
        raise InvalidInput("trainability_case needs a classification dataset")
    if layer == "dct" and method != "random":
        raise InvalidInput(
            "DCT-plus-sparse layers draw the support of S uniformly at random at the given "
            "density: use method='random' with layer='dct'"
        )
    dct_density = density if layer == "dct" else 1.0
    net = _network(data, model, width, depth, activation, layer, dct_density, generator)
    _initialise(net, activation, ratio, sigma_b, generator)
    if layer != "dct":
        prune_network(
            net,
            data,
            method,
            density,
            scope="global",
            per_class=per_class,
            batch_size=batch_size,
            generator=generator,
        )
    if rescale:
        from sigprop.nn.init import rescale_

        rescale_(net)
    batch = class_balanced_batch(data, per_class, generator)
    t0 = time.perf_counter()
    pred = trainability(net, batch)
    predict_time = time.perf_counter() - t0
    ind = pred.indicators
    out = {
        "score": pred.score,
        "predicted_trainable": pred.trainable,
        "effective_depth": pred.effective_depth,
        "correlation_depth": ind.correlation_depth,
        "log_grad_ratio": ind.log_grad_ratio,
        "signal_fraction": ind.signal_fraction,
        "jacobian_spread": ind.jacobian_spread,
        "min_fan_in": ind.min_fan_in,
        "fan_in_depth": ind.fan_in_depth,
        "sigma_w2_loss": ind.sigma_w2_loss,
        "reasons": " | ".join(pred.reasons),
        "predict_time": predict_time,
        "density_actual": ind.density,
        "effective_density": ind.effective_density,
        "connected": ind.connected,
        "collapsed_layers": len(ind.collapsed_layers),
        "bypassed_layers": len(ind.bypassed_layers),
        "snip_sum": _score_sum(net, "snip", batch),
        "grasp_sum": _score_sum(net, "grasp", batch),
        "n_params": sum(p.numel() for p in net.parameters()),
        "chance": 1.0 / data.n_classes,
        "n_test": int(data.y_test.shape[0]),
    }
    result = train(
        net,
        data,
        epochs=epochs,
        batch_size=positive_int(batch_size, "batch_size"),
        optimizer="sgd",
        lr=positive_float(lr, "lr"),
        momentum=nonneg_float(momentum, "momentum"),
        seed=seed,
        progress=False,
    )
    out.update(
        final_test_accuracy=result.final_test_accuracy,
        best_test_accuracy=result.best_test_accuracy,
        final_train_accuracy=result.final_train_accuracy,
        diverged=result.diverged,
        train_time=result.wall_time,
    )
    return out


def load_split(path: str | Path) -> list[dict]:
    """The finished ``trainability_case`` rows of a results file, each as its parameters
    merged with its result (latest row per grid point)."""
    from sigprop.experiments.sweep.store import latest_rows, load_results

    rows = []
    for row in latest_rows(load_results(path)).values():
        if row.get("run") == "trainability_case" and row.get("status") == "ok":
            rows.append({**row["params"], **row["result"]})
    if not rows:
        raise InvalidInput(f"{path}: no finished trainability_case runs")
    return rows
