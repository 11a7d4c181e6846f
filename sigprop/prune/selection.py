"""Selection: scores to masks with exact counts and deterministic ties, and the schedules of
iterative pruning.

* :func:`select` turns scores into binary masks that keep **exactly** :func:`kept_count`
  entries (globally, per layer, or per layer with given counts), breaking ties
  deterministically: among equal scores the entry with the smaller flat index (layers in
  model order, row-major inside a layer) is kept.
* :func:`schedule` gives the densities of an iterative schedule (SynFlow's exponential one,
  Tanaka et al. 2020, arXiv 2006.05467, Sec. 6 / Alg. 1; or a linear one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch

from sigprop.nn.masked import check_density
from sigprop.prune._checks import _check_scores, validate_mask
from sigprop.prune.topk import topk_masks
from sigprop.validate import InvalidInput, positive_int

__all__ = ["COUNTINGS", "kept_count", "schedule", "select"]

_SCOPES = ("global", "layer")
_SCHEDULES = ("exponential", "linear")


#: the kept-count conventions of :func:`kept_count`
COUNTINGS = ("round", "official")


def kept_count(density: float, total: int, counting: str = "round") -> int:
    """Exact number of entries kept at ``density`` out of ``total``.

    ``counting="round"`` (sigprop's rule, the same as the masked layers): ``round(density *
    total)`` with Python's ``round`` (half to even). ``counting="official"``: ``total −
    int((1 − density) * total)`` in Python floats, the rule of the reference code of
    Synaptic-Flow (ganguli-lab/Synaptic-Flow ``Pruners/pruners.py``, ``_global_mask`` /
    ``_local_mask``: ``k = int((1.0 - sparsity) * numel)`` scores at or below the k-th
    smallest are pruned, their ``sparsity`` being the fraction kept) and of GraSP
    (alecwangcq/GraSP ``pruner/GraSP.py``: ``int(len(all_scores) * (1 - ratio))`` removed).
    The two differ by at most one weight: ``N − ⌊(1−d)N⌋ = ⌈dN⌉`` up to the float rounding
    of ``(1 − d) N``, against ``dN`` rounded to nearest, so the default keeps at most one
    weight per round more or fewer than the reference code. Measured
    (``tests/prune/test_conventions.py``): with ``counting="official"`` the masks are
    identical to a re-implementation of the reference ``_global_mask``, and 20 rounds of
    ``prune_at_init(..., "synflow", counting="official")`` reproduce the reference
    ``prune_loop`` mask bit for bit. At a tie on the threshold the reference prunes every
    tied score (keeping fewer); sigprop keeps the count exact (ties to the smaller index).
    """
    density = check_density(density)
    total = int(total)
    if counting == "round":
        return int(round(density * total))
    if counting == "official":
        return total - int((1.0 - density) * total)
    raise InvalidInput(f"unknown counting {counting!r}; choose one of {', '.join(COUNTINGS)}")


def select(
    scores: Mapping[str, torch.Tensor],
    density: float,
    *,
    scope: str = "global",
    current: Mapping[str, torch.Tensor] | None = None,
    min_per_layer: int = 0,
    dense: Iterable[str] = (),
    counts: Mapping[str, int] | None = None,
    counting: str = "round",
    assume_finite: bool = False,
) -> dict[str, torch.Tensor]:
    """Keep the highest-scoring weights: exact counts, deterministic ties.

    Parameters
    ----------
    scores
        ``{parameter name: score tensor}``; higher scores are kept. Finite real values.
    density
        Fraction of weights kept, in (0, 1]. ``scope="global"`` keeps exactly
        ``round(density * N)`` of the ``N`` weights of all non-``dense`` layers together;
        ``scope="layer"`` keeps exactly ``round(density * n_l)`` in each layer.
    scope
        ``"global"`` (one ranking over all layers) or ``"layer"`` (one ranking per layer).
    current
        Optional current masks: entries already pruned are never revived (iterative
        pruning). Asking to keep more than the current mask has raises ``ValueError``.
    min_per_layer
        Protection against layer collapse: every layer keeps at least
        ``min(min_per_layer, eligible entries)`` of its best weights; the rest of the global
        budget is filled by the global ranking (``scope="global"``), or the layer count is
        raised to that minimum (``scope="layer"``).
    dense
        Names of layers left unpruned (e.g. DSR's first convolution): they keep every
        weight, or their ``current`` mask if given; they are excluded from the budget, so
        ``density`` applies to the other layers.
    counts
        Layer-wise counts (``scope="layer"`` only): ``{name: number kept}`` for every
        non-dense layer, e.g. from :func:`sigprop.prune.allocation.layer_counts` (uniform,
        ERK, smart ratios); replaces the per-layer ``kept_count(density, n_l)``.
    counting
        ``"round"`` or ``"official"``: how ``density`` becomes a count (:func:`kept_count`).
    assume_finite
        Skip the scan that refuses NaN and infinite scores (one pass over all of them), for
        scores their producer has checked (SynFlow's rounds in
        :func:`~sigprop.prune.at_init.prune_at_init`).

    Returns
    -------
    dict[str, torch.Tensor]
        ``torch.bool`` masks with the shapes of the scores.

    Ties: among equal scores the entry with the smaller flat index wins, where the flat
    index runs over the layers in the order of ``scores`` (row-major inside each layer).
    """
    _check_scores(scores, finite=not assume_finite)
    density = check_density(density)
    if scope not in _SCOPES:
        raise InvalidInput(f"unknown scope {scope!r}; choose one of {', '.join(_SCOPES)}")
    if int(min_per_layer) != min_per_layer or min_per_layer < 0:
        raise InvalidInput(f"min_per_layer must be a non-negative integer, got {min_per_layer!r}")
    dense = set(dense)
    unknown = dense - set(scores)
    if unknown:
        raise InvalidInput(f"dense layers {sorted(unknown)} are not among the scored layers")
    names = [n for n in scores if n not in dense]
    if not names:
        raise InvalidInput("every scored layer is marked dense; nothing to prune")
    if counting not in COUNTINGS:
        raise InvalidInput(f"unknown counting {counting!r}; choose one of {', '.join(COUNTINGS)}")
    if counts is not None:
        if scope != "layer":
            raise InvalidInput("counts (a layer-wise allocation) need scope='layer'")
        missing = [n for n in names if n not in counts]
        if missing:
            raise InvalidInput(f"counts has no entry for layers {missing}")
        for n in names:
            c = counts[n]
            if isinstance(c, bool) or int(c) != c or not 0 <= c <= scores[n].numel():
                raise InvalidInput(
                    f"counts[{n!r}] must be an integer in [0, {scores[n].numel()}], got {c!r}"
                )

    eligible: dict[str, torch.Tensor | None] = {}
    available: dict[str, int] = {}
    for n in names:
        e = None
        if current is not None and n in current:
            e = validate_mask(current[n], scores[n].shape, n).reshape(-1)
        if e is None:
            available[n] = scores[n].numel()
        elif e.device.type == "cpu":
            available[n] = int(np.count_nonzero(e.numpy()))  # ~6x torch's count on CPU
        else:
            available[n] = int(torch.count_nonzero(e))
        eligible[n] = None if available[n] == scores[n].numel() else e

    def n_eligible(n: str) -> int:
        return available[n]

    def ranked(n: str) -> torch.Tensor:
        # compared in their own floating dtype (exact); integers are ranked as float64
        flat = scores[n].detach().reshape(-1)
        return flat if flat.is_floating_point() else flat.to(torch.float64)

    masks: dict[str, torch.Tensor] = {}
    if scope == "layer":
        for n in names:
            k = (
                int(counts[n])
                if counts is not None
                else kept_count(density, scores[n].numel(), counting)
            )
            k = max(k, min(int(min_per_layer), n_eligible(n)))
            if k > n_eligible(n):
                raise InvalidInput(
                    f"layer {n!r}: density {density} keeps {k} weights but only "
                    f"{n_eligible(n)} are unpruned (pruning never revives a weight)"
                )
            masks[n] = topk_masks([ranked(n)], k, [eligible[n]])[0].reshape(scores[n].shape)
    else:
        total = sum(scores[n].numel() for n in names)
        k = kept_count(density, total, counting)
        if k == 0:
            raise InvalidInput(f"density {density} keeps no weight out of {total}")
        avail = sum(n_eligible(n) for n in names)
        if k > avail:
            raise InvalidInput(
                f"density {density} keeps {k} weights but only {avail} are unpruned "
                "(pruning never revives a weight)"
            )
        flats = [ranked(n) for n in names]
        elig = [eligible[n] for n in names]
        if min_per_layer > 0:
            reserved = []
            for n, flat, e in zip(names, flats, elig):
                r = min(int(min_per_layer), n_eligible(n))
                reserved.append(topk_masks([flat], r, [e])[0])
            n_reserved = sum(int(r.sum()) for r in reserved)
            if n_reserved > k:
                raise InvalidInput(
                    f"min_per_layer={min_per_layer} reserves {n_reserved} weights, more than "
                    f"the {k} kept at density {density}"
                )
            # reserved entries are taken first; the rest compete globally
            rest = [(~r if e is None else e.to(r.device) & ~r) for e, r in zip(elig, reserved)]
            keeps = topk_masks(flats, k - n_reserved, rest)
            keeps = [kp | r.to(kp.device) for kp, r in zip(keeps, reserved)]
        else:
            keeps = topk_masks(flats, k, elig)
        for n, keep in zip(names, keeps):
            masks[n] = keep.reshape(scores[n].shape)
    for n in scores:
        if n in dense:  # kept as they are: all ones, or the current mask (never revived)
            if current is not None and n in current:
                masks[n] = validate_mask(current[n], scores[n].shape, n).clone()
            else:
                masks[n] = torch.ones(scores[n].shape, dtype=torch.bool, device=scores[n].device)
    return {n: masks[n] for n in scores}


def schedule(
    density: float, rounds: int, kind: str = "exponential", *, start: float = 1.0
) -> list[float]:
    """Densities after rounds 1..``rounds`` of an iterative schedule from ``start`` to ``density``.

    ``"exponential"``: d_k = start · (density/start)^(k/rounds), SynFlow's schedule (Tanaka et
    al. 2020, arXiv 2006.05467, Sec. 6 and Alg. 1: with start = 1, d_k = density^(k/rounds));
    ``"linear"``: d_k = start − (start − density) k / rounds. ``start`` is the density
    before the first round (the current density of a model pruned already). The last entry
    is exactly ``density``.
    """
    density = check_density(density)
    start = check_density(start, "start")
    if density > start:
        raise InvalidInput(f"density {density} is above the starting density {start}")
    rounds = positive_int(rounds, "rounds")
    rounds = int(rounds)
    ks = range(1, rounds + 1)
    if kind == "exponential":
        out = [start * (density / start) ** (k / rounds) for k in ks]
    elif kind == "linear":
        out = [start - (start - density) * k / rounds for k in ks]
    else:
        raise InvalidInput(f"unknown schedule {kind!r}; choose one of {', '.join(_SCHEDULES)}")
    out[-1] = density
    return out
