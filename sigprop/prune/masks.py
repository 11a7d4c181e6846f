"""Masks: selection from scores, application to a model, bookkeeping and interop.

Shared by every pruning method (a method defines only how it *scores*, STYLE §5):

* :func:`select` turns scores into binary masks that keep **exactly** ``round(density * N)``
  entries (globally, or per layer), breaking ties deterministically: among equal scores the
  entry with the smaller flat index (layers in model order, row-major inside a layer) is kept.
* :func:`schedule` gives the densities of an iterative schedule (SynFlow's exponential one,
  Tanaka et al. 2020, arXiv 2006.05467, Sec. 6 / Alg. 1; or a linear one).
* :func:`apply` writes masks into the layers' ``weight_mask`` buffers and zeroes the pruned
  weights; :func:`density_report` counts what is kept.
* :func:`from_torch_prune`, :func:`to_torch_prune` and :func:`convert_from_torch_prune`
  read and write the ``<name>_orig`` / ``<name>_mask`` format of ``torch.nn.utils.prune``.

A *prunable layer* is any module with a ``weight`` parameter and a ``weight_mask`` buffer of
the same shape (``sigprop.nn`` masked and DCT-plus-sparse layers; ``nn.Linear``/``nn.Conv*``
after :func:`attach_masks`). Masks and scores are keyed by the weight's qualified parameter
name, e.g. ``"layers.0.weight"`` -- the name ``model.state_dict()`` uses. Masks returned by
this module are ``torch.bool`` tensors; :func:`apply` also accepts float 0/1 masks.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from sigprop.nn.masked import check_density, prunable_layers, reapply_mask_, require_prunable
from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "DensityReport",
    "LayerDensity",
    "apply",
    "attach_masks",
    "convert_from_torch_prune",
    "current_masks",
    "density_report",
    "from_torch_prune",
    "kept_count",
    "prunable_layers",
    "schedule",
    "select",
    "tied_layers",
    "to_torch_prune",
    "validate_mask",
]

_SCOPES = ("global", "layer")
_SCHEDULES = ("exponential", "linear")


# --------------------------------------------------------------------------- validation
def kept_count(density: float, total: int) -> int:
    """Exact number of entries kept at ``density`` out of ``total``: ``round(density * total)``.

    Python's ``round`` (half to even) is used, the same rule as the masked layers.
    """
    return int(round(check_density(density) * int(total)))


def validate_mask(mask: torch.Tensor, shape: torch.Size | tuple, name: str) -> torch.Tensor:
    """Check one mask and return it as a ``torch.bool`` tensor.

    Raises ``ValueError`` naming ``name`` if ``mask`` is not a tensor, has the wrong shape,
    contains NaN, or holds values other than 0/1.
    """
    if not isinstance(mask, torch.Tensor):
        raise InvalidInput(f"mask for {name!r} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise InvalidInput(
            f"mask for {name!r} has shape {tuple(mask.shape)}, the weight has {tuple(shape)}"
        )
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() and torch.isnan(mask).any():
        raise InvalidInput(f"mask for {name!r} contains NaN")
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        raise InvalidInput(f"mask for {name!r} is not binary (values other than 0 and 1)")
    return mask != 0


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite (always true for non-float tensors).

    A sum is finite only if every entry is (NaN and ±inf propagate); a sum of finite
    entries that overflows only sends us to the exact check. Summing in the tensor's own
    dtype costs about a sixteenth of ``torch.isfinite(t).all()`` on CPU (and a tenth of a
    float64 sum), measured for 3.4·10⁶ float32 entries.
    """
    if not t.is_floating_point():
        return True
    t = t.detach()
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def _check_scores(scores: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(scores, Mapping) or len(scores) == 0:
        raise InvalidInput("scores must be a non-empty mapping {parameter name: score tensor}")
    for name, s in scores.items():
        if not isinstance(s, torch.Tensor):
            raise InvalidInput(f"scores for {name!r} must be a tensor, got {type(s).__name__}")
        if s.is_complex() or s.dtype == torch.bool:
            raise InvalidInput(f"scores for {name!r} must be real numbers, got dtype {s.dtype}")
        if s.numel() == 0:
            raise InvalidInput(f"scores for {name!r} are empty")
        if not _all_finite(s):
            bad = "NaN" if torch.isnan(s).any() else "inf"
            raise InvalidInput(f"scores for {name!r} contain {bad}")


# --------------------------------------------------------------------------- prunable layers
def _masked_forward_pre_hook(module: nn.Module, args):
    """Keep a layer made prunable by :func:`attach_masks` exactly masked.

    Zeroes pruned weights in place (only when one is nonzero, to leave autograd's version
    counters alone otherwise) and makes sure the current ``weight`` parameter carries a
    gradient hook multiplying its gradient by the mask. Tensor hooks are dropped by
    ``copy.deepcopy``; the hook is therefore (re)registered lazily here, once per parameter
    object, remembered through a weak reference. The hook reaches the module through a weak
    reference too, so it always reads the module's current mask.
    """
    weight, mask = module.weight, module.weight_mask
    # the scan is skipped while neither tensor changed since the last one (their autograd
    # version counters), e.g. for repeated forwards between optimiser steps
    state = (id(weight), weight._version, id(mask), mask._version)
    if module.__dict__.get("_sigprop_masked_state") != state:
        with torch.no_grad():
            if bool(((weight != 0) & (mask == 0)).any()):
                weight.mul_(mask.to(weight.dtype))
        module.__dict__["_sigprop_masked_state"] = (
            id(weight),
            weight._version,
            id(mask),
            mask._version,
        )
    hooked = module.__dict__.get("_sigprop_hooked_weight")
    if weight.requires_grad and (hooked is None or hooked() is not weight):
        module_ref = weakref.ref(module)

        def mask_grad(grad):
            owner = module_ref()
            return grad if owner is None else grad * owner.weight_mask.to(grad.dtype)

        weight.register_hook(mask_grad)
        module.__dict__["_sigprop_hooked_weight"] = weakref.ref(weight)


def _computes_masked(module: nn.Module) -> bool:
    """Whether ``module``'s forward reads its weight only through ``weight * weight_mask``
    (sigprop's masked and DCT-plus-sparse layers, and layers made prunable by
    :func:`attach_masks`, whose pre-hook zeroes pruned weights before each forward). Any
    other module with a ``weight_mask`` buffer is prunable too, but only zeroed weights keep
    it exactly masked."""
    from sigprop.nn.masked import MaskedMixin

    return isinstance(module, MaskedMixin) or any(
        hook is _masked_forward_pre_hook for hook in module._forward_pre_hooks.values()
    )


def attach_masks(
    model: nn.Module,
    layer_types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d),
) -> list[str]:
    """Make the dense ``nn.Linear`` / ``nn.Conv*`` layers of ``model`` prunable, in place.

    Each such layer without a ``weight_mask`` gets a ``weight_mask`` buffer of ones (same
    dtype and device as its weight) and a forward pre-hook that, before every forward pass,
    zeroes pruned weights and ensures the weight's gradient is multiplied by the mask. The
    layer then computes exactly with ``weight * weight_mask``, pruned weights get zero
    gradients (so momentum and weight decay cannot revive them), and ``weight`` stays an
    ``nn.Parameter``: ``state_dict`` keys are unchanged apart from the new
    ``*.weight_mask`` entries. Module objects are kept (no replacement), so references to
    the layers stay valid; ``sigprop.nn.MaskedLinear.from_dense`` & co. are the alternative
    that replaces a layer by a sigprop masked layer.

    Returns the keys (``"<module>.weight"``) of the layers that received a mask.
    """
    attached = []
    for mod_name, module in model.named_modules():
        if not isinstance(module, layer_types):
            continue
        if "weight_orig" in module._parameters:
            raise InvalidInput(
                f"layer {mod_name!r} is pruned with torch.nn.utils.prune; import it with "
                "sigprop.prune.convert_from_torch_prune instead"
            )
        if "weight_mask" in module._buffers:
            continue
        weight = module.weight
        module.register_buffer("weight_mask", torch.ones_like(weight, requires_grad=False))
        module.register_forward_pre_hook(_masked_forward_pre_hook)
        attached.append(f"{mod_name}.weight" if mod_name else "weight")
    return attached


def tied_layers(model: nn.Module) -> dict[str, str]:
    """Prunable layers whose weight is the very tensor of an earlier prunable layer (tied
    weights): ``{key: key of the first layer holding that weight}``.

    A mask belongs to a weight tensor, not to a module: :func:`prune_at_init` ranks a shared
    weight once and gives every layer that holds it the same mask, and :func:`apply` refuses
    different masks for them (each would zero the shared weight where it prunes, leaving
    the intersection).
    """
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for key, module in prunable_layers(model).items():
        owner = first.setdefault(id(module.weight), key)
        if owner != key:
            out[key] = owner
    return out


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's current masks as ``torch.bool`` tensors (copies), keyed like the scores."""
    return {k: m.weight_mask.detach() != 0 for k, m in require_prunable(model).items()}


# --------------------------------------------------------------------------- selection
def _topk_masks(
    flats: list[torch.Tensor],
    k: int,
    eligible: list[torch.Tensor | None],
    use_numpy: bool | None = None,
) -> list[torch.Tensor]:
    """Boolean masks keeping exactly the ``k`` largest eligible entries of 1-D tensors.

    The tensors are ranked together as if concatenated; ties go to the smaller index of
    that concatenation. Only entries with ``eligible`` True (all where ``None``) can be
    kept; ``k`` must not exceed their number. The k-th largest value is found by selection,
    not sorting (O(N)), over the eligible entries only (so iterative pruning gets cheaper
    as it goes): ``numpy.partition`` for CPU tensors (about ten times faster than
    ``torch.kthvalue`` on CPU, measured for 10^6 entries) and ``torch.kthvalue`` elsewhere.
    Entries above it are kept; among entries equal to it, the ones with the smallest
    indices fill the remaining places. ``use_numpy`` forces a backend (tests); by default
    numpy is used when every tensor is on the CPU.
    """
    if use_numpy is None:
        use_numpy = all(f.device.type == "cpu" for f in flats)
    if use_numpy:
        arrs = []
        for f in flats:
            f = f.detach()
            if f.dtype not in (torch.float32, torch.float64):
                f = f.to(torch.float64)  # exact for integer, half and bfloat16 scores
            arrs.append(f.numpy())
        elig = [None if e is None else e.cpu().numpy() for e in eligible]
        backend = np
        count = np.count_nonzero
    else:
        arrs = [f.detach() for f in flats]
        elig = [None if e is None else e.to(a.device) for e, a in zip(eligible, arrs)]
        backend = None
        count = torch.count_nonzero
    size = (lambda a: a.size) if backend else (lambda a: a.numel())
    m = sum(size(a) if e is None else int(count(e)) for a, e in zip(arrs, elig))

    def full(a, e, value):
        if backend:
            return np.full(a.shape, value, dtype=bool) if e is None or not value else e.copy()
        if e is None or not value:
            return torch.full(a.shape, value, dtype=torch.bool, device=a.device)
        return e.clone()

    if k <= 0 or k >= m:
        keeps = [full(a, e, k > 0) for a, e in zip(arrs, elig)]
    else:
        thr = _kth_largest(arrs, elig, k, m, backend)
        keeps = []
        for a, e in zip(arrs, elig):
            keep = a >= thr
            if e is not None:
                keep &= e
            keeps.append(keep)
        surplus = sum(int(count(kp)) for kp in keeps) - k
        for keep, a in zip(reversed(keeps), reversed(arrs)):  # drop the last tied entries
            if surplus <= 0:
                break
            tied = (
                np.flatnonzero(keep & (a == thr))
                if backend
                else torch.nonzero(keep & (a == thr)).squeeze(1)
            )
            n_tied = int(tied.size if backend else tied.numel())
            drop = min(surplus, n_tied)
            keep[tied[n_tied - drop :]] = False
            surplus -= drop
    return [torch.from_numpy(kp) if backend else kp for kp in keeps]


#: below this many eligible entries the k-th largest is found by one partition of all of
#: them; above it a strided sample brackets it first (:func:`_kth_largest`)
_SMALL = 1 << 18
#: about this many entries in the sample that brackets the k-th largest
_SAMPLE = 1 << 16


def _odd_prime_at_least(n: int) -> int:
    n = max(3, n | 1)
    while any(n % p == 0 for p in range(3, math.isqrt(n) + 1, 2)):
        n += 2
    return n


def _kth_largest(arrs, elig, k: int, m: int, backend):
    """The k-th largest of the ``m`` eligible entries of ``arrs`` (1 ≤ k < m), exactly.

    Small inputs: one selection over the gathered eligible entries (``numpy.partition``, or
    ``torch.kthvalue`` off the CPU). Large ones (numpy only): a strided sample of the
    concatenation (a prime stride, so that it does not follow a layer's kernel or channel
    period) brackets the answer between two sample quantiles ``lo ≤ hi`` chosen six binomial
    standard deviations either side of the target rank; one counting pass finds the entries
    above ``hi`` and gathers those in [lo, hi], and a partition of that band gives the
    answer. If the bracket missed (a rare sample, or heavy ties) the full selection runs.
    Only the cost depends on the sample, never the result: selecting over
    11·10⁶ scores (ResNet-18) costs a few passes instead of a partition of all of them.
    """
    take = (lambda a, e: np.compress(e, a)) if backend else (lambda a, e: a[e])

    def exact():
        vals = [a if e is None else take(a, e) for a, e in zip(arrs, elig)]
        if backend:
            pooled = vals[0] if len(vals) == 1 else np.concatenate(vals)
            return np.partition(pooled, m - k)[m - k]
        pooled = torch.cat([v.to(torch.float64) for v in vals]) if len(vals) > 1 else vals[0]
        return torch.kthvalue(pooled, m - k + 1).values

    total = sum(a.size if backend else a.numel() for a in arrs)
    if not backend or m <= _SMALL:
        return exact()
    stride = _odd_prime_at_least(total // _SAMPLE)
    sample, offset = [], 0
    for a, e in zip(arrs, elig):
        start = (-offset) % stride
        part = a[start::stride]
        sample.append(part if e is None else np.compress(e[start::stride], part))
        offset += a.size
    s = np.concatenate(sample)
    n = s.size
    if n < 256:
        return exact()
    q = k / m
    pos = n * (1.0 - q)  # ascending index of the k-th largest in the sample
    delta = 6.0 * math.sqrt(n * q * (1.0 - q)) + 8.0
    i_lo, i_hi = math.floor(pos - delta), math.ceil(pos + delta)
    lo = -np.inf if i_lo < 0 else np.partition(s, i_lo)[i_lo]
    hi = np.inf if i_hi >= n else np.partition(s, i_hi)[i_hi]
    above, inside_count, insides = 0, 0, []
    for a, e in zip(arrs, elig):
        over = a > hi
        if e is not None:
            over &= e
        above += int(np.count_nonzero(over))
        inside = a >= lo
        inside &= ~over
        if e is not None:
            inside &= e
        inside_count += int(np.count_nonzero(inside))
        insides.append(inside)
    need = k - above
    if not 1 <= need <= inside_count:
        return exact()
    if lo == hi:  # the band is one tied value (e.g. the zero scores of unused weights)
        return lo
    b = np.concatenate([np.compress(inside, a) for a, inside in zip(arrs, insides)])
    return np.partition(b, b.size - need)[b.size - need]


def select(
    scores: Mapping[str, torch.Tensor],
    density: float,
    *,
    scope: str = "global",
    current: Mapping[str, torch.Tensor] | None = None,
    min_per_layer: int = 0,
    dense: Iterable[str] = (),
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

    Returns
    -------
    dict[str, torch.Tensor]
        ``torch.bool`` masks with the shapes of the scores.

    Ties: among equal scores the entry with the smaller flat index wins, where the flat
    index runs over the layers in the order of ``scores`` (row-major inside each layer).
    """
    _check_scores(scores)
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

    eligible: dict[str, torch.Tensor | None] = {}
    counts: dict[str, int] = {}
    for n in names:
        e = None
        if current is not None and n in current:
            e = validate_mask(current[n], scores[n].shape, n).reshape(-1)
        counts[n] = scores[n].numel() if e is None else int(torch.count_nonzero(e))
        eligible[n] = None if counts[n] == scores[n].numel() else e

    def n_eligible(n: str) -> int:
        return counts[n]

    def ranked(n: str) -> torch.Tensor:
        # compared in their own floating dtype (exact); integers are ranked as float64
        flat = scores[n].detach().reshape(-1)
        return flat if flat.is_floating_point() else flat.to(torch.float64)

    masks: dict[str, torch.Tensor] = {}
    if scope == "layer":
        for n in names:
            k = kept_count(density, scores[n].numel())
            k = max(k, min(int(min_per_layer), n_eligible(n)))
            if k > n_eligible(n):
                raise InvalidInput(
                    f"layer {n!r}: density {density} keeps {k} weights but only "
                    f"{n_eligible(n)} are unpruned (pruning never revives a weight)"
                )
            masks[n] = _topk_masks([ranked(n)], k, [eligible[n]])[0].reshape(scores[n].shape)
    else:
        total = sum(scores[n].numel() for n in names)
        k = kept_count(density, total)
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
                reserved.append(_topk_masks([flat], r, [e])[0])
            n_reserved = sum(int(r.sum()) for r in reserved)
            if n_reserved > k:
                raise InvalidInput(
                    f"min_per_layer={min_per_layer} reserves {n_reserved} weights, more than "
                    f"the {k} kept at density {density}"
                )
            # reserved entries are taken first; the rest compete globally
            rest = [(~r if e is None else e.to(r.device) & ~r) for e, r in zip(elig, reserved)]
            keeps = _topk_masks(flats, k - n_reserved, rest)
            keeps = [kp | r.to(kp.device) for kp, r in zip(keeps, reserved)]
        else:
            keeps = _topk_masks(flats, k, elig)
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


# --------------------------------------------------------------------------- apply / report
def apply(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Write ``masks`` into the layers' ``weight_mask`` buffers and zero pruned weights.

    ``masks`` maps parameter names (``"<module>.weight"``) to bool or 0/1 tensors of the
    weight's shape; layers not named keep their mask. Every mask is validated (known layer,
    shape, binary, no NaN) before anything is written, so a bad mask changes nothing.
    Layers sharing one weight tensor (:func:`tied_layers`) all get the mask given for any of
    them; different masks for them raise ``ValueError``.
    """
    layers = require_prunable(model)
    checked = {}
    for name, mask in masks.items():
        if name not in layers:
            raise InvalidInput(
                f"{name!r} is not a prunable weight of this model; prunable: {', '.join(layers)}"
            )
        checked[name] = validate_mask(mask, layers[name].weight.shape, name)
    groups: dict[str, list[str]] = {}
    for name, owner in tied_layers(model).items():
        groups.setdefault(owner, [owner]).append(name)
    for members in groups.values():
        given = [n for n in members if n in checked]
        if not given:
            continue
        mask = checked[given[0]]
        for other in given[1:]:
            if not torch.equal(checked[other].to(mask.device), mask):
                raise InvalidInput(
                    f"layers {given[0]!r} and {other!r} share one weight tensor but were given "
                    "different masks"
                )
        checked.update(dict.fromkeys(members, mask))
    with torch.no_grad():
        for name, mask in checked.items():
            module = layers[name]
            module.weight_mask.copy_(mask.to(module.weight_mask.device))
            reapply_mask_(module)


@dataclass(frozen=True)
class LayerDensity:
    """Kept weights of one prunable layer.

    Fields: ``name`` (parameter name), ``shape`` (weight shape), ``kept`` (number of ones in
    the mask), ``total`` (number of weights), ``density`` (kept / total).
    """

    name: str
    shape: tuple[int, ...]
    kept: int
    total: int
    density: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass(frozen=True)
class DensityReport:
    """Kept/total per prunable layer and over the whole model.

    Fields: ``layers`` (tuple of :class:`LayerDensity`, model order), ``kept`` and ``total``
    (summed over layers), ``density`` (kept / total), ``empty_layers`` (names of layers with
    nothing kept -- layer collapse).
    """

    layers: tuple[LayerDensity, ...]
    kept: int
    total: int
    density: float
    empty_layers: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "kept": self.kept,
            "total": self.total,
            "density": self.density,
            "empty_layers": list(self.empty_layers),
        }


def density_report(model: nn.Module) -> DensityReport:
    """Count the kept weights of every prunable layer of ``model`` (from ``weight_mask``).

    Every layer is listed; the model totals count a weight tensor shared by several layers
    (:func:`tied_layers`) once.
    """
    rows = []
    for name, module in require_prunable(model).items():
        kept = int((module.weight_mask != 0).sum())
        total = module.weight_mask.numel()
        rows.append(LayerDensity(name, tuple(module.weight.shape), kept, total, kept / total))
    tied = tied_layers(model)
    kept = sum(r.kept for r in rows if r.name not in tied)
    total = sum(r.total for r in rows if r.name not in tied)
    return DensityReport(
        layers=tuple(rows),
        kept=kept,
        total=total,
        density=kept / total,
        empty_layers=tuple(r.name for r in rows if r.kept == 0),
    )


# --------------------------------------------------------------------------- torch interop
def _state_dict_of(src) -> Mapping[str, torch.Tensor]:
    if isinstance(src, nn.Module):
        return src.state_dict()
    if isinstance(src, Mapping):
        return src
    raise InvalidInput(
        f"expected an nn.Module or a state dict (mapping of tensors), got {type(src).__name__}"
    )


def from_torch_prune(src) -> dict[str, torch.Tensor]:
    """Masks of a model or state dict in the ``torch.nn.utils.prune`` format.

    Every ``<name>_mask`` entry gives the mask of parameter ``<name>``; the parameter itself
    must be present as ``<name>_orig`` (``torch.nn.utils.prune``) or ``<name>`` (sigprop and
    Synaptic-Flow layers) with the same shape (a ``*_mask`` buffer with no such parameter is
    not a pruning mask and is skipped). Returns ``{<name>: bool mask}``. A state dict
    with no mask raises ``ValueError`` (after ``prune.remove`` the masks are gone; zeros in the
    weights alone do not say what was pruned).
    """
    sd = _state_dict_of(src)
    out = {}
    for key, value in sd.items():
        if not key.endswith("_mask"):
            continue
        name = key[: -len("_mask")]
        param = sd.get(f"{name}_orig", sd.get(name))
        if param is None:  # a buffer that merely ends in "_mask", not a parameter's mask
            continue
        out[name] = validate_mask(value, param.shape, name)
    if not out:
        raise InvalidInput("no `<name>_mask` entries found: this is not a masked model/state dict")
    return out


def convert_from_torch_prune(src) -> dict[str, torch.Tensor]:
    """A ``torch.nn.utils.prune`` state dict rewritten in sigprop's format.

    ``<name>_orig`` + ``<name>_mask`` become ``<name>`` (= orig * mask, pruned values zeroed)
    + ``<name>_mask`` (float 0/1 in the parameter's dtype); every other entry is copied.
    Load the result with ``model.load_state_dict`` into a model with sigprop masked layers.
    """
    sd = _state_dict_of(src)
    masks = from_torch_prune(sd)
    out = {}
    for key, value in sd.items():
        if key.endswith("_orig") and key[: -len("_orig")] in masks:
            name = key[: -len("_orig")]
            out[name] = value.detach() * masks[name].to(value.dtype)
        elif key.endswith("_mask") and key[: -len("_mask")] in masks:
            name = key[: -len("_mask")]
            param = sd.get(f"{name}_orig", sd.get(name))
            out[key] = masks[name].to(param.dtype)
        else:
            out[key] = value
    return out


def to_torch_prune(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in the ``torch.nn.utils.prune`` format.

    For every prunable layer, ``<m>.weight`` becomes ``<m>.weight_orig`` and
    ``<m>.weight_mask`` is a float 0/1 tensor in the weight's dtype; other entries are
    unchanged. It loads (``strict=True``) into the same architecture built from ``nn.Linear``
    / ``nn.Conv*`` on which ``torch.nn.utils.prune`` (e.g. ``prune.identity``) was applied.
    """
    layers = require_prunable(model)
    sd = model.state_dict()
    out = {}
    for key, value in sd.items():
        if key in layers:
            out[f"{key}_orig"] = value.detach().clone()
        elif key.endswith("_mask") and key[: -len("_mask")] in layers:
            weight = sd[key[: -len("_mask")]]
            out[key] = (value != 0).to(weight.dtype)
        else:
            out[key] = value
    return out
