"""The sizes and settings of the demo's network and measurements (:class:`DemoConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from sigprop import validate
from sigprop._json import to_jsonable
from sigprop.validate import InvalidInput

__all__ = ["DemoConfig", "check_config"]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and settings of the demo.

    Fields
    ------
    dataset: data set name for :func:`sigprop.experiments.data.load_dataset`.
    activation: theory name of the nonlinearity.
    sigma_b: bias standard deviation (not variance) shared by all phases.
    width: hidden width; depth: number of weight layers of the MLP (``depth − 1`` hidden
        layers of ``width`` units plus the readout; ``sigprop.nn.models.mlp``'s convention).
    density: fraction of weights kept by the pruned networks of sections b, d and e.
    phase_factors: σ_w² of each phase as a multiple of the EOC σ_w².
    n_probe: inputs used for q^l, c^l and gradient-norm measurements.
    n_pairs: input pairs over which c^l is averaged.
    collapse_densities: densities of the layer-collapse section.
    methods: pruning methods of the layer-collapse section.
    n_jacobian: inputs whose hidden-chain Jacobian spectrum is computed.
    epochs, batch_size, lr, momentum: the training comparison (SGD).
    """

    dataset: str = "mnist1d"
    activation: str = "tanh"
    sigma_b: float = 0.2
    width: int = 256
    depth: int = 20
    density: float = 0.1
    phase_factors: tuple[tuple[str, float], ...] = (
        ("ordered", 0.6),
        ("eoc", 1.0),
        ("chaotic", 2.0),
    )
    n_probe: int = 512
    n_pairs: int = 256
    collapse_densities: tuple[float, ...] = (0.1, 0.01, 0.003, 0.001)
    methods: tuple[str, ...] = ("random", "magnitude", "snip", "grasp", "synflow")
    n_jacobian: int = 8
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9

    def to_dict(self) -> dict:
        return to_jsonable(self, "DemoConfig")


def _density(value, what: str) -> None:
    # the one density rule (sigprop.validate.density), under the demo's own message
    try:
        validate.density(value, what)
    except InvalidInput as exc:
        raise type(exc)(f"{what} must be in (0, 1], got {value!r}") from None


def check_config(cfg: DemoConfig) -> DemoConfig:
    """``cfg`` if every field is usable, else :class:`~sigprop.validate.InvalidInput`."""
    if not isinstance(cfg, DemoConfig):
        raise validate.InvalidType(f"config must be a DemoConfig, got {type(cfg).__name__}")
    _density(cfg.density, "density")
    for d in cfg.collapse_densities:
        _density(d, "collapse density")
    width = validate.positive_int(cfg.width, "width")
    depth = validate.positive_int(cfg.depth, "depth")
    if depth < 2 or width < 2:
        raise InvalidInput(f"depth and width must be at least 2, got {depth}, {width}")
    validate.nonneg_float(cfg.sigma_b, "sigma_b")
    for name in ("n_probe", "n_pairs", "n_jacobian", "epochs", "batch_size"):
        validate.positive_int(getattr(cfg, name), name)
    names = [name for name, _ in cfg.phase_factors]
    if "eoc" not in names:
        raise InvalidInput(f"phase_factors must contain 'eoc', got {names}")
    for name, factor in cfg.phase_factors:
        validate.positive_float(factor, f"phase factor of {name!r}")
    return cfg
