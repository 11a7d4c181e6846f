"""The ``train_pruned`` run and its configuration, :class:`TrainPrunedConfig`."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass

from sigprop._json import to_jsonable
from sigprop.experiments.runs.network import build_pruned, collapse_summary
from sigprop.validate import (
    InvalidInput,
    InvalidType,
    density,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
)

__all__ = ["TrainPrunedConfig", "run_train_pruned", "train_pruned"]

_TEXT = ("dataset", "activation", "layer", "init", "method", "scope", "optimizer", "device")
_POSITIVE_INT = ("width", "depth", "per_class", "epochs", "batch_size", "dsr_interval")
_NONNEG_INT = ("data_seed", "seed")
_FLAGS = ("rescale", "dsr")


@dataclass(frozen=True)
class TrainPrunedConfig:
    """Everything one ``train_pruned`` run does, checked on construction.

    Types and numeric domains are checked here (:mod:`sigprop.validate`: a wrong type raises
    ``InvalidType``, a value out of its domain ``InvalidInput``); names — datasets,
    activations, pruning methods, optimisers, schedules — are checked by the functions that
    use them. Numbers are stored as Python ``int``/``float``. See :func:`train_pruned` for
    what each field does.
    """

    dataset: str = "digits"
    data_seed: int = 0
    width: int = 100
    depth: int = 4
    activation: str = "tanh"
    layer: str = "masked"
    init: str = "eoc"
    sigma_w: float | None = None
    sigma_b: float = 0.0
    method: str = "snip"
    density: float = 0.1
    scope: str = "global"
    rescale: bool = False
    per_class: int = 10
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float | None = None
    weight_decay: float = 0.0
    schedule: str | None = None
    dsr: bool = False
    dsr_interval: int = 100
    dsr_prune_fraction: float = 0.01
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        checked = {}
        for name in _TEXT:
            if not isinstance(getattr(self, name), str):
                raise InvalidType(f"{name} must be a string, got {getattr(self, name)!r:.80}")
        if self.schedule is not None and not isinstance(self.schedule, str):
            raise InvalidType(f"schedule must be a string or None, got {self.schedule!r:.80}")
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise InvalidType(f"{name} must be true or false, got {getattr(self, name)!r:.80}")
        for name in _POSITIVE_INT:
            checked[name] = positive_int(getattr(self, name), name)
        for name in _NONNEG_INT:
            checked[name] = nonneg_int(getattr(self, name), name)
        if self.sigma_w is not None:
            checked["sigma_w"] = positive_float(self.sigma_w, "sigma_w")
        if self.momentum is not None:
            checked["momentum"] = nonneg_float(self.momentum, "momentum")
        checked["sigma_b"] = nonneg_float(self.sigma_b, "sigma_b")
        checked["density"] = density(self.density)
        checked["lr"] = positive_float(self.lr, "lr")
        checked["weight_decay"] = nonneg_float(self.weight_decay, "weight_decay")
        fraction = positive_float(self.dsr_prune_fraction, "dsr_prune_fraction")
        if fraction > 1:
            raise InvalidInput(f"dsr_prune_fraction must be at most 1, got {fraction!r}")
        checked["dsr_prune_fraction"] = fraction
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, params: Mapping) -> TrainPrunedConfig:
        """From a parameter dict (a sweep row's ``params``); unknown names are refused."""
        if not isinstance(params, Mapping):
            raise InvalidType(f"train_pruned parameters are a table, got {type(params).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k)[:80] for k in params if k not in names)
        if unknown:
            raise InvalidInput(f"train_pruned does not take parameter(s) {unknown}")
        return cls(**params)

    def to_dict(self) -> dict:
        return to_jsonable(self, "RunConfig")

    @classmethod
    def signature(cls) -> inspect.Signature:
        """The keyword-only signature ``train_pruned(**params)`` presents (one parameter per
        field, with its default), so sweeps can check parameter names before running."""
        return inspect.Signature(
            [
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
                for f in dataclasses.fields(cls)
            ],
            return_annotation=dict,
        )


def train_pruned(**params) -> dict:
    """Prune an MLP at initialisation, train it, and report accuracy and (effective) density.

    The parameters are the fields of :class:`TrainPrunedConfig` (all optional, checked
    there); ``train_pruned(**params)`` is ``run_train_pruned(TrainPrunedConfig(**params))``.

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
    1902.05967, Alg. 1); then :func:`~sigprop.experiments.train.train` with ``epochs``,
    ``batch_size``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``schedule``,
    ``seed`` and ``device``. ``method="dense"`` (with ``density=1``) skips pruning: the
    dense baseline.

    Returns ``final_test_accuracy``, ``best_test_accuracy``, ``final_train_accuracy``,
    ``final_test_loss``, ``diverged``, ``epochs_completed``, ``density_actual`` (kept
    fraction after pruning), ``effective_density`` (kept weights on an input–output path,
    Vysogorets & Kempe, arXiv 2107.02306), ``layer_density`` (per weight layer),
    ``collapsed_layers`` (count of fully pruned layers), ``effectively_collapsed_layers``,
    ``connected``, ``kept_weights``, ``train_time`` (seconds), and with DSR the final
    per-layer densities as ``layer_density_end``.
    """
    return run_train_pruned(TrainPrunedConfig.from_dict(params))


train_pruned.__signature__ = TrainPrunedConfig.signature()


def run_train_pruned(config: TrainPrunedConfig) -> dict:
    """One ``train_pruned`` run from its configuration (see :func:`train_pruned`)."""
    import torch

    from sigprop.experiments.data import load_dataset
    from sigprop.experiments.train import train

    if not isinstance(config, TrainPrunedConfig):
        raise InvalidType(f"config must be a TrainPrunedConfig, got {type(config).__name__}")
    c = config
    generator = torch.Generator().manual_seed(c.seed)
    data = load_dataset(c.dataset, seed=c.data_seed)
    if data.n_classes == 0:
        raise InvalidInput("train_pruned needs a classification dataset")
    model = build_pruned(
        data,
        generator,
        width=c.width,
        depth=c.depth,
        activation=c.activation,
        layer=c.layer,
        init=c.init,
        sigma_w=c.sigma_w,
        sigma_b=c.sigma_b,
        method=c.method,
        density=c.density,
        scope=c.scope,
        per_class=c.per_class,
        batch_size=c.batch_size,
        rescale=c.rescale,
    )
    out = {"n_params": sum(p.numel() for p in model.parameters())}
    out.update(collapse_summary(model))
    component = None
    if c.dsr:
        from sigprop.prune import DSR, dsr_dense_layers

        component = DSR(
            model,
            prune_interval=c.dsr_interval,
            target_prune_fraction=c.dsr_prune_fraction,
            dense_layers=dsr_dense_layers(model),
            generator=generator,
        )
    result = train(
        model,
        data,
        epochs=c.epochs,
        batch_size=c.batch_size,
        optimizer=c.optimizer,
        lr=c.lr,
        momentum=c.momentum,
        weight_decay=c.weight_decay,
        schedule=c.schedule,
        dsr=component,
        device=c.device,
        seed=c.seed,
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
    if c.dsr:
        out["layer_density_end"] = collapse_summary(model)["layer_density"]
    return out
