"""What the sections build from: the immutable :class:`Bench` (settings, data, seed), the
phase points of the mean-field theory (:func:`phase_points`, the one place the EOC point is
solved), and the networks (:func:`build`, :func:`variants`).

Nothing here is filled in by one section and read by another: a section receives the bench
and the phase points as arguments, and the same arguments give the same networks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from sigprop.experiments.claims.config import DemoConfig
from sigprop.validate import InvalidInput

__all__ = ["Bench", "PhasePoints", "build", "derive_seed", "phase_points", "variants"]


def derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed from ``seed`` and tags, by a stable hash (not Python's salted ``hash``)."""
    text = "/".join([str(seed), *map(str, tags)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@dataclass(frozen=True)
class Bench:
    """Settings, data and seed shared (read-only) by the sections.

    Fields
    ------
    cfg: the :class:`~sigprop.experiments.claims.config.DemoConfig`.
    dataset: the loaded data set (``sigprop.experiments.data.Dataset``); never modified.
    seed: root of every random choice (:meth:`generator`).
    device: torch device of the training comparison.
    progress: show tqdm bars inside the sections.
    """

    cfg: DemoConfig
    dataset: Any
    seed: int
    device: str = "cpu"
    progress: bool = False

    @classmethod
    def load(cls, cfg: DemoConfig, seed: int, **kw) -> Bench:
        """A bench with ``cfg.dataset`` loaded for ``seed``."""
        from sigprop.experiments.data import load_dataset

        return cls(cfg, load_dataset(cfg.dataset, seed=seed), seed, **kw)

    def generator(self, *tags: object):
        """A torch generator seeded from ``seed`` and ``tags`` (stable across runs)."""
        import torch

        return torch.Generator().manual_seed(derive_seed(self.seed, *tags))

    def probe(self, n: int):
        """The first ``n`` training inputs after a seeded permutation (float64) and labels."""
        import torch

        x = self.dataset.x_train
        perm = torch.randperm(x.shape[0], generator=self.generator("probe"))[:n]
        return x[perm].to(torch.float64), self.dataset.y_train[perm]


@dataclass(frozen=True)
class PhasePoints:
    """The EOC point and the σ_w of each phase of the comparison.

    Fields
    ------
    eoc: the ``sigprop.theory.EOCPoint`` (σ_w at which χ₁ = 1 for σ_b, with q*).
    sigma_w: ``(phase, σ_w)`` pairs, σ_w² = factor · σ_w,EOC² in ``cfg.phase_factors`` order.
    """

    eoc: Any
    sigma_w: tuple[tuple[str, float], ...]

    @property
    def phases(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.sigma_w)

    def __getitem__(self, phase: str) -> float:
        for name, sw in self.sigma_w:
            if name == phase:
                return sw
        raise InvalidInput(f"no phase {phase!r} (have {list(self.phases)})")


def phase_points(cfg: DemoConfig, eoc=None) -> PhasePoints:
    """σ_w of each phase of ``cfg``: the EOC of ``cfg.activation`` at ``cfg.sigma_b``
    (Poole et al., arXiv 1606.05340, eq. (3)–(5); ``sigprop.theory.eoc_init``) scaled by
    √factor. ``eoc`` replaces the solved point (to hold a section against a wrong one)."""
    if eoc is None:
        from sigprop import theory

        eoc = theory.eoc_init(cfg.activation, cfg.sigma_b)
    return PhasePoints(
        eoc, tuple((name, math.sqrt(factor) * eoc.sigma_w) for name, factor in cfg.phase_factors)
    )


def build(
    bench: Bench, points: PhasePoints, phase: str, *, layer: str = "masked", tag: str = "weights"
):
    """The default MLP, dense (a full ``weight_mask``), weights N(0, σ_w²/fan_in) of ``phase``.

    The same ``(phase, tag)`` gives the same weights, so pruned and rescaled variants are
    the dense network with weights removed (and rescaled), not a different draw. With
    ``layer="dct"`` the layers are DCT-plus-sparse at density ρ: the sparse part S starts at
    zero (Price & Tanner 2021, arXiv 2102.07655, §3), the offset α·D is orthogonal with gain
    α, so α = σ_w puts the network at the same point of the phase diagram with orthogonal
    weights; biases are N(0, σ_b²) as for the other variants.
    """
    import torch

    from sigprop.nn.init import gaussian_init_
    from sigprop.nn.kinds import is_dct_layer
    from sigprop.nn.models import mlp

    cfg = bench.cfg
    ds = bench.dataset
    sigma_w = points[phase]
    model = mlp(
        ds.n_features,
        cfg.width,
        cfg.depth,
        ds.n_classes,
        activation=cfg.activation,
        layer=layer,
        density=1.0 if layer == "masked" else cfg.density,
        generator=bench.generator(phase, tag, "mask"),
    )
    gen = bench.generator(phase, tag)
    if layer == "dct":
        with torch.no_grad():
            for m in model.modules():
                if is_dct_layer(m):
                    m.alpha.fill_(sigma_w)
                    if m.bias is not None:
                        m.bias.normal_(0.0, cfg.sigma_b, generator=gen)
    else:
        gaussian_init_(model, sigma_w, cfg.sigma_b, generator=gen)
    return model


def variants(bench: Bench, points: PhasePoints, phase: str) -> dict:
    """``{"dense", "pruned", "rescaled"}`` networks of ``phase``: one draw, a random mask of
    density ρ without rescaling, and the same mask with the rescaling trick (Hayou et al.
    2021, arXiv 2002.08797, §4)."""
    import copy

    from sigprop.nn.init import rescale_
    from sigprop.prune import prune_at_init

    dense = build(bench, points, phase)
    pruned = copy.deepcopy(dense)
    prune_at_init(
        pruned,
        "random",
        bench.cfg.density,
        generator=bench.generator(phase, "random-mask"),
        progress=False,
    )
    rescaled = copy.deepcopy(pruned)
    rescale_(rescaled)
    return {"dense": dense, "pruned": pruned, "rescaled": rescaled}
