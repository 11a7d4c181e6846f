"""Dynamic Sparse Reparameterization (Mostafa & Wang 2019, arXiv 1902.05967, Alg. 1).

A training-time component: the training loop calls ``dsr.step(iteration)`` after every
optimiser step (``sigprop.experiments.train(..., dsr=dsr)`` does; in
:func:`sigprop.nn.loop.fit`, or any loop with the callbacks of :mod:`sigprop.nn.loop`, pass
the DSR object itself as a callback: its ``on_step`` is ``step``, and it goes before the
callbacks that record the masks). Every ``prune_interval`` iterations (P in the paper):

1. prune, in every sparse layer, the kept weights with |w| < H -- one global threshold H
   (their Alg. 1, "prune_by_threshold"); a layer never loses its last weight (the official
   code, IntelAI/dynamic-reparameterization ``parameterized_tensors.py``, keeps one; here
   the largest, ties to the smaller index);
2. K = number pruned in total; regrow K weights, split across layers in proportion to each
   layer's *surviving* count (their Alg. 1 / Sec. 3; the rounding leftover goes to the
   largest remainders, ties to the earlier layer), at
   uniformly random positions among the layer's zero positions *excluding those just
   pruned* (official ``grow_random(..., pruned_indices)``), initialised to 0; a layer with
   too few free positions passes its excess to the others; only if no layer has a free
   position left are just-pruned positions reused (at very high densities);
3. adapt H: halve it if K > (1 + δ) N_p, double it if K < (1 − δ) N_p, δ = 0.1 (their
   Alg. 1 and official ``main.py``), with N_p the target number pruned per reallocation;
4. reset the optimiser state (momentum, Adam moments: every state tensor with the weight's
   shape) at the pruned and regrown positions, so a regrown weight starts from scratch.

The total kept count is constant. Layers listed in ``dense_layers`` are left alone
(Mostafa & Wang keep the first convolution and the shortcut 1×1 convolutions dense, and the
final fc of WRNs; :func:`dsr_dense_layers` finds the first two by structure and name).
``history`` records every reallocation (:class:`DSRRecord`), for reallocation plots.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from sigprop._json import to_jsonable
from sigprop.nn.prunable import require_prunable
from sigprop.validate import InvalidInput, positive_int

__all__ = ["DSR", "DSRRecord", "dsr_dense_layers"]


@dataclass(frozen=True)
class DSRRecord:
    """One reallocation.

    Fields: ``iteration`` (the training iteration it happened at); ``threshold`` (H used);
    ``pruned`` (K, weights pruned = regrown); ``target`` (N_p); ``regrown`` (per layer,
    weights regrown); ``counts`` (per layer, kept weights after reallocation);
    ``next_threshold`` (H after adaptation).
    """

    iteration: int
    threshold: float
    pruned: int
    target: int
    regrown: dict[str, int]
    counts: dict[str, int]
    next_threshold: float

    def to_dict(self) -> dict:
        return to_jsonable(self, "DSRRecord")


def dsr_dense_layers(model: nn.Module) -> list[str]:
    """Mostafa & Wang's dense layers: the first convolution and the shortcut convolutions.

    Returns the name of the first prunable layer whose weight has more than two dimensions
    (a convolution), plus every prunable 1×1 convolution whose name contains ``shortcut`` or
    ``downsample``. (Their WRN experiments also keep the final fc dense; pass it yourself.)
    """
    names = []
    first_conv = True
    for name, module in require_prunable(model).items():
        w = module.weight
        if w.dim() <= 2:
            continue
        if first_conv:
            names.append(name)
            first_conv = False
        elif all(s == 1 for s in w.shape[2:]) and ("shortcut" in name or "downsample" in name):
            names.append(name)
    return names


def _largest_remainder(total: int, weights: list[float], caps: list[int]) -> list[int]:
    """Split ``total`` integers ∝ ``weights`` with per-entry ``caps`` (water-filling).

    Returns counts with sum = min(total, Σ caps over positive weights); leftovers of the
    floor go to the largest fractional parts (ties: smaller index).
    """
    out = [0] * len(weights)
    remaining = total
    while remaining > 0:
        active = [i for i, w in enumerate(weights) if w > 0 and out[i] < caps[i]]
        if not active:
            break
        wsum = sum(weights[i] for i in active)
        ideal = {i: remaining * weights[i] / wsum for i in active}
        given = 0
        for i in active:
            add = min(int(math.floor(ideal[i])), caps[i] - out[i])
            out[i] += add
            given += add
        left = remaining - given
        order = sorted(active, key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
        for i in order:
            if left == 0:
                break
            if out[i] < caps[i]:
                out[i] += 1
                left -= 1
        remaining = left
    return out


class DSR:
    """Dynamic Sparse Reparameterization (Mostafa & Wang 2019, arXiv 1902.05967).

    Parameters
    ----------
    model
        Model with prunable layers (``weight`` + ``weight_mask``), already sparse.
    prune_interval
        P: reallocate every ``prune_interval`` iterations (iteration 0 never).
    target_prune_count, target_prune_fraction
        N_p, the target number pruned per reallocation, given as a count or as a fraction of
        the kept weights of the sparse layers at construction (exactly one of the two).
    initial_threshold
        H₀ = 1e-3 as in the paper.
    dense_layers
        Names (``"<module>.weight"``) of prunable layers DSR leaves alone; see
        :func:`dsr_dense_layers`.
    optimizer
        Optional optimiser whose per-parameter state is reset at pruned/regrown positions.
    generator
        Randomness for the regrowth positions.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        prune_interval: int,
        target_prune_count: int | None = None,
        target_prune_fraction: float | None = None,
        initial_threshold: float = 1e-3,
        dense_layers: Iterable[str] = (),
        optimizer: torch.optim.Optimizer | None = None,
        generator: torch.Generator | None = None,
    ):
        prune_interval = positive_int(prune_interval, "prune_interval")
        if not (initial_threshold > 0) or not math.isfinite(initial_threshold):
            raise InvalidInput(f"initial_threshold must be positive, got {initial_threshold!r}")
        layers = require_prunable(model)
        dense = list(dense_layers)
        unknown = [n for n in dense if n not in layers]
        if unknown:
            raise InvalidInput(f"dense_layers {unknown} are not prunable layers of the model")
        self.layers = {n: m for n, m in layers.items() if n not in dense}
        if not self.layers:
            raise InvalidInput("every prunable layer is marked dense; DSR has nothing to do")
        self.dense_layers = tuple(dense)
        kept = self.total_kept
        if (target_prune_count is None) == (target_prune_fraction is None):
            raise InvalidInput("give exactly one of target_prune_count and target_prune_fraction")
        if target_prune_count is not None:
            target_prune_count = positive_int(target_prune_count, "target_prune_count")
            self.target = int(target_prune_count)
        else:
            if not (0.0 < target_prune_fraction < 1.0):
                raise InvalidInput(
                    f"target_prune_fraction must lie in (0, 1), got {target_prune_fraction!r}"
                )
            self.target = max(1, int(round(target_prune_fraction * kept)))
        if self.target >= kept:
            raise InvalidInput(
                f"target prune count {self.target} is not below the {kept} kept weights"
            )
        self.prune_interval = int(prune_interval)
        self.threshold = float(initial_threshold)
        self.optimizer = optimizer
        self.generator = generator
        self.history: list[DSRRecord] = []

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Set the optimiser whose state is reset at pruned/regrown positions (called by
        ``sigprop.experiments.train`` when it creates its optimiser)."""
        self.optimizer = optimizer

    @property
    def total_kept(self) -> int:
        """Kept weights over the sparse (non-dense) layers."""
        return sum(int((m.weight_mask != 0).sum()) for m in self.layers.values())

    def counts(self) -> dict[str, int]:
        """Kept weights per sparse layer."""
        return {n: int((m.weight_mask != 0).sum()) for n, m in self.layers.items()}

    def on_step(self, step: int, model: nn.Module, batch, loss) -> None:
        """The loop callback (:mod:`sigprop.nn.loop`): :meth:`step` with the loop's step."""
        self.step(step)

    def step(self, iteration: int) -> DSRRecord | None:
        """Call after the optimiser step of ``iteration``; reallocates every P iterations."""
        if iteration > 0 and iteration % self.prune_interval == 0:
            return self.reallocate(iteration)
        return None

    def _reset_optimizer_state(self, weight: torch.Tensor, flat_idx: torch.Tensor) -> None:
        if self.optimizer is None or flat_idx.numel() == 0:
            return
        state = self.optimizer.state.get(weight, {})
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                value.view(-1)[flat_idx.to(value.device)] = 0

    @torch.no_grad()
    def reallocate(self, iteration: int = -1) -> DSRRecord:
        """Prune below H, regrow as many ∝ surviving counts, adapt H (module docstring)."""
        names = list(self.layers)
        h = self.threshold
        pruned_idx, survivors, free = {}, [], []
        for n in names:
            m = self.layers[n]
            w = m.weight.detach().reshape(-1)
            mask = m.weight_mask.reshape(-1)
            kept = mask != 0
            if not bool(torch.isfinite(w[kept]).all()):
                raise InvalidInput(f"weight {n!r} contains NaN or inf")
            drop = kept & (w.abs() < h)
            n_kept = int(kept.sum())
            if n_kept > 0 and int(drop.sum()) == n_kept:  # never empty a layer
                mags = torch.where(kept, w.abs(), torch.full_like(w, -1.0))
                drop[int(torch.argmax(mags))] = False
            idx = torch.nonzero(drop).squeeze(1)
            mask[idx] = 0
            m.weight.view(-1)[idx] = 0
            pruned_idx[n] = idx
            survivors.append(n_kept - idx.numel())
            free.append(int((mask == 0).sum()) - idx.numel())
        k_total = sum(i.numel() for i in pruned_idx.values())

        grow = _largest_remainder(k_total, [float(s) for s in survivors], free)
        left = k_total - sum(grow)
        reuse = _largest_remainder(
            left, [float(s) for s in survivors], [pruned_idx[n].numel() for n in names]
        )
        regrown = {}
        for j, n in enumerate(names):
            m = self.layers[n]
            mask = m.weight_mask.reshape(-1)
            just = torch.zeros_like(mask, dtype=torch.bool)
            just[pruned_idx[n]] = True
            parts = []
            for count, pool in ((grow[j], (mask == 0) & ~just), (reuse[j], just)):
                if count == 0:
                    continue
                cand = torch.nonzero(pool).squeeze(1)
                perm = torch.randperm(cand.numel(), generator=self.generator)[:count]
                parts.append(cand[perm.to(cand.device)])
            new = torch.cat(parts) if parts else pruned_idx[n][:0]
            mask[new] = 1
            m.weight.view(-1)[new] = 0
            self._reset_optimizer_state(m.weight, torch.cat([pruned_idx[n], new]))
            regrown[n] = int(new.numel())

        if k_total > 1.1 * self.target:
            self.threshold = h / 2.0
        elif k_total < 0.9 * self.target:
            self.threshold = h * 2.0
        record = DSRRecord(
            iteration=int(iteration),
            threshold=h,
            pruned=k_total,
            target=self.target,
            regrown=regrown,
            counts=self.counts(),
            next_threshold=self.threshold,
        )
        self.history.append(record)
        return record

    def state_dict(self) -> dict:
        """Threshold and history (JSON-able), to resume a run."""
        return {"threshold": self.threshold, "history": [r.to_dict() for r in self.history]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.threshold = float(state["threshold"])
        self.history = [DSRRecord(**r) for r in state["history"]]
