"""Data-driven and simple pruning-at-initialisation scores: random, magnitude, SNIP, GraSP.

Each is a function ``(model, data, **kw) -> {parameter name: score tensor}`` for every
prunable layer (see :func:`sigprop.prune.masks.prunable_layers`), with the convention
**higher score = keep**; :func:`sigprop.prune.selection.select` turns scores into masks and
:mod:`sigprop.prune.scores` registers them as :class:`~sigprop.prune.scorer.Scorer` s.

``data`` for the data-driven scores is one mini-batch ``(inputs, targets)`` (a tuple) or an
iterable of such batches, read by :func:`sigprop.nn.utils.as_batches` (gradients are summed
over batches). :func:`samples_per_class` draws the "k samples per class" batch of the
SNIP/GraSP protocols.

Train/eval mode: these functions use the model in its current mode; through
``prune_at_init(..., mode=...)`` or ``Scorer.score(..., mode=...)`` the mode is chosen
(default: as the model is). GraSP's official code (alecwangcq/GraSP ``pruner/GraSP.py``)
scores a copy of the network in train mode on two half-batches of its
``GraSP_fetch_data`` batch: ``prune_at_init(model, "grasp", d, data=[first_half,
second_half], mode="train")`` reproduces that protocol (with several batches g is summed over
them first, then Hg, as there).

Already-pruned weights score 0 and contribute nothing to Hessian-gradient products: a
prunable layer computes with ``weight * weight_mask`` (or masks its gradient, as
:func:`~sigprop.prune.masks.attach_masks` layers do), so gradients vanish at pruned
positions; the final scores are multiplied by the mask once more for safety (in place),
the differentiable gradient of GraSP's double backward is not (it would enlarge the graph).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sigprop.nn.masked import as_generator
from sigprop.nn.prunable import require_prunable
from sigprop.nn.utils import as_batches
from sigprop.prune._checks import _all_finite
from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "grasp_scores",
    "magnitude_scores",
    "random_scores",
    "samples_per_class",
    "snip_scores",
]

Scores = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- data helpers
def _check_batch(batch, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch from :func:`~sigprop.nn.utils.as_batches` with finite inputs."""
    x, y = batch
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise InvalidInput(f"{method}: the inputs contain NaN or inf")
    return x, y


def samples_per_class(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    k: int,
    *,
    num_classes: int | None = None,
    generator: torch.Generator | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``k`` random samples of every class: the SNIP/GraSP pruning batch.

    Lee et al. (arXiv 1810.02340) prune on one mini-batch; later protocols (Wang et al.,
    arXiv 2002.07376, ``GraSP_fetch_data``; Hayou et al., arXiv 2002.08797, Sec. 5) use a
    batch of ``k`` examples per class (10 for CIFAR-10 in Hayou et al.). Classes are
    ``0 .. num_classes-1`` (default: ``targets.max() + 1``); the batch is ordered by class.
    A class with fewer than ``k`` examples raises ``ValueError``.

    ``generator`` is a CPU ``torch.Generator`` or an int seed; ``None`` means seed 0, so the
    batch is always reproducible (never torch's global generator). For class ``c`` in order,
    ``torch.randperm(n_c, generator=generator)[:k]`` picks among its examples (in data order).
    """
    k = positive_int(k, "k (samples per class)")
    if targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
        raise InvalidInput("targets must be a 1-D tensor with one label per input")
    if targets.is_floating_point():
        raise InvalidInput("targets must be integer class labels")
    gen = as_generator(0 if generator is None else generator)
    labels = targets.detach().cpu()
    n_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    chosen = []
    for c in range(n_classes):
        idx = torch.nonzero(labels == c).squeeze(1)
        if idx.numel() < k:
            raise InvalidInput(f"class {c} has {idx.numel()} examples, fewer than k={k}")
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[: int(k)]])
    index = torch.cat(chosen)
    return inputs[index.to(inputs.device)], targets[index.to(targets.device)]


def _weights_and_masks(model: nn.Module):
    layers = require_prunable(model)
    names = list(layers)
    weights = [layers[n].weight for n in names]
    masks = [layers[n].weight_mask.to(layers[n].weight.dtype) for n in names]
    for n, w in zip(names, weights):
        if not _all_finite(w):
            raise InvalidInput(f"weight {n!r} contains NaN or inf")
    return names, weights, masks


def _grads(
    outputs, weights, grad_outputs=None, create_graph: bool = False, contiguous: bool = True
):
    """``torch.autograd.grad`` of ``outputs`` for ``weights`` (zeros for unused weights).

    ``grad_outputs`` gives vector-Jacobian products: with ``outputs`` a differentiable
    gradient g(θ) and ``grad_outputs = v`` held fixed this is Hv = ∂⟨v, g(θ)⟩/∂θ.
    Without ``create_graph`` the returned tensors are contiguous, distinct and the caller's
    to modify in place (an expanded gradient, or the repeat of a weight shared by two
    layers, is copied first); ``contiguous=False`` leaves autograd's strides alone (repeats
    are still copied), for a caller whose next step writes a fresh tensor anyway. Entries
    of a list ``outputs`` that do not depend on the weights are skipped with their
    ``grad_outputs``.
    """
    if isinstance(outputs, list):
        keep = [i for i, o in enumerate(outputs) if o.requires_grad]
        if not keep:
            return [torch.zeros_like(w) for w in weights]
        outputs = [outputs[i] for i in keep]
        grad_outputs = None if grad_outputs is None else [grad_outputs[i] for i in keep]
    grads = torch.autograd.grad(
        outputs,
        weights,
        grad_outputs=grad_outputs,
        create_graph=create_graph,
        allow_unused=True,
        retain_graph=create_graph,
    )
    out, seen = [], set()
    for g, w in zip(grads, weights):
        if g is None:
            g = torch.zeros_like(w)
        elif not create_graph:
            # a weight shared by two layers gets the same tensor twice: copy the repeats
            g = g.clone() if id(g) in seen else (g.contiguous() if contiguous else g)
        seen.add(id(g))
        out.append(g)
    return out


def _times(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """θ ⊙ h in one pass: in place into ``h`` where it is contiguous, else into a fresh
    tensor of the weight's layout (the double backward of a convolution returns Hg with
    input and output channels' strides swapped; a contiguous copy first would be a second
    pass)."""
    w = w.detach()
    if h.is_contiguous():
        return h.mul_(w)
    return torch.mul(w, h, out=torch.empty_like(w, memory_format=torch.contiguous_format))


def _normalise_(raw: list[torch.Tensor], masks, what: str, eps: float | None = None):
    """Mask ``raw`` and divide it by its total, in place; returns ``raw``.

    ``eps=None``: the total must be positive and finite (else ``ValueError`` naming ``what``);
    otherwise the divisor is |Σ| + ``eps`` (GraSP's signed scores, as in its official code).
    """
    for r, m in zip(raw, masks):
        r.mul_(m)
    total = sum(float(r.sum()) for r in raw)
    if eps is not None:
        norm = abs(total) + eps
    else:
        norm = total
        if not norm > 0 or not math.isfinite(norm):
            raise InvalidInput(
                f"{what} scores cannot be normalised (Σ = {norm}): the loss does not depend "
                "on any kept weight"
            )
    for r in raw:
        r.div_(norm)
    return raw


# --------------------------------------------------------------------------- scorers
def random_scores(
    model: nn.Module, data=None, *, generator: torch.Generator | int | None = None
) -> Scores:
    """I.i.d. uniform scores from ``generator``: random pruning.

    ``generator``: a CPU ``torch.Generator``, an int seed (a fresh generator) or ``None``
    (torch's default generator). With ``select(scope="global")`` this keeps a uniformly
    random subset of the prescribed size over all layers; with ``scope="layer"`` (or a
    layer-wise allocation) one of the prescribed size in each layer.
    """
    layers = require_prunable(model)
    gen = as_generator(generator)
    return {
        n: torch.rand(m.weight.shape, generator=gen, dtype=torch.float64) for n, m in layers.items()
    }  # on the CPU, where a default torch.Generator lives


def magnitude_scores(model: nn.Module, data=None) -> Scores:
    """|θ|: magnitude pruning at initialisation (Hayou et al., arXiv 2002.08797, Sec. 3 on its
    layer-collapse behaviour). Pruned weights are zero."""
    names, weights, masks = _weights_and_masks(model)
    return {n: (w.detach() * m).abs() for n, w, m in zip(names, weights, masks)}


def snip_scores(
    model: nn.Module, data, *, loss_fn: LossFn | None = None, normalise: bool = True
) -> Scores:
    """SNIP connection sensitivity (Lee et al. 2019, arXiv 1810.02340, Eq. 6).

    s_j = |g_j θ_j| / Σ_k |g_k θ_k| with g = ∂L/∂θ on the given mini-batch(es) (the
    derivative of the loss with respect to a multiplicative mask c at c = 1, their Eq. 5),
    summed over all prunable layers. ``loss_fn(outputs, targets)`` defaults to cross
    entropy. The model is used in its current train/eval mode. ``normalise=False`` returns
    the masked |g_j θ_j| without the division (their sum is the network's total connection
    sensitivity).
    """
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    names, weights, masks = _weights_and_masks(model)
    total = None
    for batch in as_batches(data, method="snip"):
        x, y = _check_batch(batch, "snip")
        grads = _grads(loss_fn(model(x), y), weights)
        if total is None:
            total = grads
        else:
            for t, g in zip(total, grads):
                t.add_(g)
    if total is None:
        raise InvalidInput("snip: data holds no batch")
    raw = [g.mul_(w.detach()).abs_() for g, w in zip(total, weights)]
    if not normalise:
        return {n: r.mul_(m) for n, r, m in zip(names, raw, masks)}
    return dict(zip(names, _normalise_(raw, masks, "SNIP")))


def grasp_scores(
    model: nn.Module,
    data,
    *,
    temperature: float = 200.0,
    loss_fn: LossFn | None = None,
    eps: float = 1e-10,
    normalise: bool = True,
) -> Scores:
    """GraSP: gradient-signal preservation (Wang et al. 2020, arXiv 2002.07376, Eq. 8).

    GraSP scores S(−θ) = −θ ⊙ Hg, with g = ∇L and H the Hessian of the loss of the logits
    divided by ``temperature`` (T = 200 in the paper's code), and removes the weights with
    the *largest* S (official code alecwangcq/GraSP ``pruner/GraSP.py``: the top scores are
    dropped, scores ≤ the cut are kept). This function returns −S / (|ΣS| + eps) = θ ⊙ Hg
    normalised as in that code, so that, like every scorer here, the largest are kept.

    Hg = ∂/∂θ ⟨stop_grad(g), ∇L⟩ by one double backward (the vector-Jacobian product of the
    differentiable gradient with v = stop_grad(g)). With a single batch, g and Hg
    come from one forward pass (g is built with ``create_graph=True``); with several batches
    g is summed over all of them first, then Hg = Σ_b ∂⟨g, ∇L_b⟩/∂θ (their Alg. 1). Linear
    layers are *not* re-initialised with Xavier as in the official code (a quirk of theirs).
    ``normalise=False`` returns the masked θ ⊙ Hg without the division.
    """
    if not temperature > 0:
        raise InvalidInput(f"temperature must be positive, got {temperature!r}")
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    names, weights, masks = _weights_and_masks(model)
    data = as_batches(data, method="grasp")
    checked = [_check_batch(b, "grasp") for b in data]
    if not checked:
        raise InvalidInput("grasp: data holds no batch")

    def loss_of(x, y):
        return loss_fn(model(x) / temperature, y)

    if len(checked) == 1:
        # g and Hg from one forward pass; Hg as the vector-Jacobian product of the
        # differentiable gradient with v = stop_grad(g) (no scalar ⟨v, g⟩ is formed)
        x, y = checked[0]
        g = _grads(loss_of(x, y), weights, create_graph=True)
        hg = _grads(g, weights, grad_outputs=[gi.detach() for gi in g], contiguous=False)
    else:
        # fresh accumulators: a gradient may share memory with a grad_output in degenerate
        # models, and g_stop is reused for every batch
        g_stop = [torch.zeros_like(w) for w in weights]
        for x, y in checked:
            for t, gi in zip(g_stop, _grads(loss_of(x, y), weights)):
                t.add_(gi)
        hg = [torch.zeros_like(w) for w in weights]
        for x, y in checked:
            g = _grads(loss_of(x, y), weights, create_graph=True)
            for t, h in zip(hg, _grads(g, weights, grad_outputs=g_stop, contiguous=False)):
                t.add_(h)
    raw = [_times(w, h) for w, h in zip(weights, hg)]
    if not normalise:
        return {n: r.mul_(m) for n, r, m in zip(names, raw, masks)}
    return dict(zip(names, _normalise_(raw, masks, "GraSP", eps)))
