"""Pruning-at-initialisation scores: one interface, masking shared (STYLE §5).

A scorer maps ``(model, data, **kw)`` to ``{parameter name: score tensor}`` for every
prunable layer (see :func:`sigprop.prune.masks.prunable_layers`), with the convention
**higher score = keep**; :func:`sigprop.prune.masks.select` turns scores into masks.
:data:`SCORERS` is the registry; :func:`get_scorer` looks a name up.

``data`` for the data-driven scores is one mini-batch ``(inputs, targets)`` (a tuple) or an
iterable of such batches, read by :func:`sigprop.nn.utils.as_batches` (gradients are summed
over batches). :func:`samples_per_class` draws the
"k samples per class" batch of the SNIP/GraSP protocols.

Already-pruned weights score 0 and contribute nothing to Hessian-gradient products: a
prunable layer computes with ``weight * weight_mask`` (or masks its gradient, as
:func:`~sigprop.prune.masks.attach_masks` layers do), so gradients vanish at pruned
positions; the final scores are multiplied by the mask once more for safety (in place),
the differentiable gradient of GraSP's double backward is not (it would enlarge the graph).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sigprop.nn.activation import is_elementwise
from sigprop.nn.masked import as_generator, require_prunable
from sigprop.nn.utils import as_batches
from sigprop.prune.masks import (
    _all_finite,
    _computes_masked,
    _masked_forward_pre_hook,
    apply,
    validate_mask,
)
from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "SCORERS",
    "ScoreMethod",
    "SynFlowSession",
    "compute_scores",
    "get_scorer",
    "grasp_scores",
    "magnitude_scores",
    "random_scores",
    "samples_per_class",
    "snip_scores",
    "synflow_scores",
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


def _grads(outputs, weights, grad_outputs=None, create_graph: bool = False):
    """``torch.autograd.grad`` of ``outputs`` for ``weights`` (zeros for unused weights).

    ``grad_outputs`` gives vector-Jacobian products: with ``outputs`` a differentiable
    gradient g(θ) and ``grad_outputs = v`` held fixed this is Hv = ∂⟨v, g(θ)⟩/∂θ.
    Without ``create_graph`` the returned tensors are contiguous, distinct and the caller's
    to modify in place (an expanded gradient, or the repeat of a weight shared by two
    layers, is copied first). Entries of a list ``outputs`` that do not depend on the
    weights are skipped with their ``grad_outputs``.
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
            g = g.clone() if id(g) in seen else g.contiguous()
        seen.add(id(g))
        out.append(g)
    return out


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
    model: nn.Module, data=None, *, generator: torch.Generator | None = None
) -> Scores:
    """I.i.d. uniform scores from ``generator``: random pruning (REFERENCES §6).

    With ``select(scope="global")`` this keeps a uniformly random subset of the prescribed
    size over all layers; with ``scope="layer"`` one of the prescribed size in each layer.
    """
    layers = require_prunable(model)
    return {
        n: torch.rand(m.weight.shape, generator=generator, dtype=torch.float64)
        for n, m in layers.items()
    }  # on the CPU, where a default torch.Generator lives


def magnitude_scores(model: nn.Module, data=None) -> Scores:
    """|θ|: magnitude pruning at initialisation (REFERENCES §4, §6; Hayou et al.,
    arXiv 2002.08797, Sec. 3 on its layer-collapse behaviour). Pruned weights are zero."""
    names, weights, masks = _weights_and_masks(model)
    return {n: (w.detach() * m).abs() for n, w, m in zip(names, weights, masks)}


def snip_scores(model: nn.Module, data, *, loss_fn: LossFn | None = None) -> Scores:
    """SNIP connection sensitivity (Lee et al. 2019, arXiv 1810.02340, Eq. 6).

    s_j = |g_j θ_j| / Σ_k |g_k θ_k| with g = ∂L/∂θ on the given mini-batch(es) (the
    derivative of the loss with respect to a multiplicative mask c at c = 1, their Eq. 5),
    summed over all prunable layers. ``loss_fn(outputs, targets)`` defaults to cross
    entropy. The model is used in its current train/eval mode.
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
    return dict(zip(names, _normalise_(raw, masks, "SNIP")))


def grasp_scores(
    model: nn.Module,
    data,
    *,
    temperature: float = 200.0,
    loss_fn: LossFn | None = None,
    eps: float = 1e-10,
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
        hg = _grads(g, weights, grad_outputs=[gi.detach() for gi in g])
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
            for t, h in zip(hg, _grads(g, weights, grad_outputs=g_stop)):
                t.add_(h)
    raw = [h.mul_(w.detach()) for w, h in zip(weights, hg)]
    return dict(zip(names, _normalise_(raw, masks, "GraSP", eps)))


# --------------------------------------------------------------------------- SynFlow
def _identity_hook(module, args, output):
    return args[0]


#: float32 is trusted for SynFlow only while R stays in this range; outside it the round is
#: recomputed in float64 (scores span many decades below R in deep nets; float32's smallest
#: normal number is 1.2e-38, so this leaves ≥ 20 decades of headroom below R).
_FLOAT32_SAFE = (1e-15, 1e15)
#: a float32 model that went to float64 comes back once R is inside this narrower range
_BACK_TO_FLOAT32 = (1e-14, 1e14)


class SynFlowSession:
    """The linearised copy of a model on which SynFlow rounds are scored.

    SynFlow (Tanaka et al. 2020, arXiv 2006.05467, Sec. 6, Alg. 1) scores
    S(θ) = |θ ⊙ ∂R/∂θ| with R = 1ᵀ(Π_l |θ^[l]|)1, the sum of the outputs of the network
    with every parameter replaced by its absolute value, fed an input of ones. Here:

    * the model is deep-copied (the caller's model is never touched -- no abs/sign restore
      step to get wrong), every floating parameter and buffer of the copy except the masks
      is replaced by its absolute value, as in the official code (ganguli-lab/Synaptic-Flow
      ``Pruners/pruners.py``: ``linearize`` takes |·| of every ``state_dict`` entry, and
      ``Utils/generator.py`` ``masked_parameters(bias=False)`` only leaves biases unpruned),
      so biases enter R with |b| and are never scored. The conservation law of the paper
      (Theorem 1, per-layer score sums equal) is exact only without biases; with them the
      layer sums differ by the flow the biases inject, which on deep MLPs favours the last
      layers and can empty the first ones at extreme compression. ``include_bias=False``
      zeroes the copy's biases, so R = 1ᵀ(Π_l |W^l|)1 exactly and every layer's scores sum
      to R (the paper's setting);
    * the copy is put in eval mode and its activation modules (``torch.nn`` activations and
      ``sigprop.nn.Activation``) are bypassed, so R is the paper's linear objective for any
      activation (the official code keeps the activations, which is the same only for ReLU);
      activations applied functionally inside a module's ``forward`` cannot be bypassed;
    * overflow: deep nets make R overflow float32 (R grows like (width·σ_w)^depth). With
      ``dtype=None`` a float32 model is scored in float32 while R stays within
      ``[1e-15, 1e15]`` and in float64 otherwise (decided each round: a round whose R
      leaves the range is recomputed in float64, and once pruning has brought R back within
      ``[1e-14, 1e14]`` the next rounds return to float32); a non-finite R in float64
      raises ``ValueError``. Pass ``dtype=torch.float64`` to always use float64.

    ``session.model`` is the copy; :meth:`set_masks` updates its masks between rounds
    (iterative SynFlow).
    """

    def __init__(
        self,
        model: nn.Module,
        data=None,
        *,
        input_shape: tuple[int, ...] | None = None,
        dtype: torch.dtype | None = None,
        include_bias: bool = True,
    ):
        _weights_and_masks(model)  # validates prunable layers and finite weights
        self.input_shape = _synflow_input_shape(model, data, input_shape)
        self.model = copy.deepcopy(model)
        self.model.eval()
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if p.is_floating_point():
                    if not include_bias and name.rsplit(".", 1)[-1] == "bias":
                        p.zero_()
                    else:
                        p.abs_()
            for name, b in self.model.named_buffers():
                if b.is_floating_point() and not name.endswith("weight_mask"):
                    b.abs_()
        for module in self.model.modules():
            if is_elementwise(module):
                module.register_forward_hook(_identity_hook)
        self.layers = require_prunable(self.model)
        # layers made prunable by attach_masks lose their masking hooks in the copy: their
        # pruned weights are zeroed here and by set_masks instead, once per round rather
        # than checked at every forward and multiplied into every gradient (the scores
        # |θ ⊙ ∂R/∂θ| vanish at a zero weight whatever its gradient)
        self._zeroed = set()
        for name, layer in self.layers.items():
            hooks = layer._forward_pre_hooks
            for key in [k for k, h in hooks.items() if h is _masked_forward_pre_hook]:
                del hooks[key]
            layer.__dict__.pop("_sigprop_hooked_weight", None)
            if not _computes_masked(layer):
                self._zeroed.add(name)
                with torch.no_grad():
                    layer.weight.mul_(layer.weight_mask.to(layer.weight.dtype))
        for m in self.layers.values():
            m.weight.requires_grad_(True)
        model_dtype = next(iter(self.layers.values())).weight.dtype
        if dtype is not None:
            self._auto = False
            self._to(dtype)
        else:
            self._auto = model_dtype == torch.float32
            self._to(
                model_dtype if model_dtype in (torch.float32, torch.float64) else torch.float64
            )

    def _to(self, dtype: torch.dtype) -> None:
        self.model.to(dtype)
        self.dtype = dtype
        device = next(iter(self.layers.values())).weight.device
        self.input = torch.ones((1, *self.input_shape), dtype=dtype, device=device)

    def objective(self) -> torch.Tensor:
        """R: the sum of the outputs of the linearised copy on an input of ones."""
        try:
            out = self.model(self.input)
        except RuntimeError as exc:
            raise InvalidInput(
                f"SynFlow could not run the model on an input of ones of shape "
                f"{tuple(self.input.shape)} ({exc}); pass input_shape=(...) without the batch"
            ) from None
        if not isinstance(out, torch.Tensor):
            raise InvalidInput("SynFlow needs a model whose output is a single tensor")
        return out.sum()

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Write the masks of the next round into the copy's ``weight_mask`` buffers.

        Cheaper than :func:`~sigprop.prune.masks.apply` (no finiteness scan; the copy's
        weights were checked finite when it was made): a layer that computes with
        ``weight * weight_mask`` (:func:`~sigprop.prune.masks._computes_masked`) only gets
        its mask, since R and ∂R/∂θ vanish at its pruned positions whatever the copy stores
        there; any other prunable layer also has its pruned weights zeroed, so that they
        neither feed R nor score. ``masks``: {name: bool or 0/1 tensor of the weight's
        shape}, as :func:`~sigprop.prune.masks.select` returns."""
        with torch.no_grad():
            for name, mask in masks.items():
                layer = self.layers.get(name)
                if layer is None:
                    raise InvalidInput(f"{name!r} is not a prunable weight of the SynFlow copy")
                keep = validate_mask(mask, layer.weight.shape, name)
                layer.weight_mask.copy_(keep)
                if name in self._zeroed:
                    layer.weight.mul_(layer.weight_mask.to(layer.weight.dtype))

    def scores(self) -> Scores:
        """One round of SynFlow scores |θ ⊙ ∂R/∂θ| on the copy (higher = keep)."""
        names = list(self.layers)
        while True:
            weights = [self.layers[n].weight for n in names]
            r = self.objective()
            # no explicit gradient masking: pruned positions score 0, as either the layer
            # computes with weight*mask (∂R/∂weight = 0 there) or the weight is 0 (set_masks)
            grads = _grads(r, weights)
            value = float(r.detach())
            guarded = self._auto and self.dtype == torch.float32
            ok = math.isfinite(value) and (
                not guarded or _FLOAT32_SAFE[0] <= value <= _FLOAT32_SAFE[1]
            )
            if ok:
                break
            if self._auto and self.dtype != torch.float64:
                self._to(torch.float64)
                continue
            raise InvalidInput(
                f"SynFlow objective R = {value} is not finite in {self.dtype}; the network "
                "is too deep for this precision"
            )
        # _grads' tensors are fresh and distinct: the scores are computed in place
        scores = {n: g.mul_(w.detach()).abs_() for n, w, g in zip(names, weights, grads)}
        if self._auto and self.dtype == torch.float64 and _BACK_TO_FLOAT32[0] <= value:
            if value <= _BACK_TO_FLOAT32[1]:
                # pruning only removes paths of R's non-negative terms (|W|, |b|, sums,
                # pooling), so R does not grow again and later rounds are safe in float32
                # (a decade's margin, half the memory traffic); where it could (a norm layer
                # with a nonzero running mean) the per-round range check still sends a
                # round back to float64
                self._to(torch.float32)
        return scores


def _synflow_input_shape(model, data, input_shape) -> tuple[int, ...]:
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s < 1 for s in shape):
            raise InvalidInput(
                f"input_shape must be positive sizes without the batch, got {input_shape!r}"
            )
        return shape
    if data is not None:
        for batch in as_batches(data, method="synflow"):
            return tuple(batch[0].shape[1:])
        raise InvalidInput("synflow: data holds no batch to read the input shape from")
    first = next(iter(require_prunable(model).values()))
    if first.weight.dim() == 2:
        return (first.weight.shape[1],)
    raise InvalidInput(
        "SynFlow is data-free but needs the input shape: pass input_shape=(C, H, W) (without "
        "the batch) or data, for a model whose first prunable layer is not linear"
    )


def synflow_scores(
    model: nn.Module,
    data=None,
    *,
    input_shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    include_bias: bool = True,
) -> Scores:
    """One round of SynFlow scores (Tanaka et al. 2020, arXiv 2006.05467, Sec. 6).

    Data-free: ``data`` is only used for its input shape; without it ``input_shape`` is
    needed unless the first prunable layer is linear. See :class:`SynFlowSession` for the
    linearisation, precision and differences from the official code. ``prune_at_init(...,
    "synflow")`` runs the 100 rounds of the paper.
    """
    return SynFlowSession(
        model, data, input_shape=input_shape, dtype=dtype, include_bias=include_bias
    ).scores()


# --------------------------------------------------------------------------- registry
class _DirectSession:
    """Score the model itself every round (everything but SynFlow)."""

    def __init__(self, fn, model, data, kwargs):
        self.fn, self.model, self.data, self.kwargs = fn, model, data, kwargs

    def scores(self) -> Scores:
        return self.fn(self.model, self.data, **self.kwargs)

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        apply(self.model, masks)


@dataclass(frozen=True)
class ScoreMethod:
    """A registered scoring method.

    Fields: ``name``; ``score`` (the scorer ``score(model, data, **kw) -> scores``);
    ``needs_data`` (whether ``data`` is required); ``default_rounds`` (pruning rounds
    ``prune_at_init`` uses unless told: 100 for SynFlow, 1 for the others).
    """

    name: str
    score: Callable[..., Scores]
    needs_data: bool
    default_rounds: int = 1

    def session(self, model: nn.Module, data=None, **kwargs):
        """An object with ``.model`` (whose masks rounds update) and ``.scores()``."""
        if self.needs_data:
            as_batches(data, method=self.name)
        if self.name == "synflow":
            return SynFlowSession(model, data, **kwargs)
        return _DirectSession(self.score, model, data, kwargs)


#: name -> ScoreMethod. Scores follow "higher = keep".
SCORERS: dict[str, ScoreMethod] = {
    "random": ScoreMethod("random", random_scores, needs_data=False),
    "magnitude": ScoreMethod("magnitude", magnitude_scores, needs_data=False),
    "snip": ScoreMethod("snip", snip_scores, needs_data=True),
    "grasp": ScoreMethod("grasp", grasp_scores, needs_data=True),
    "synflow": ScoreMethod("synflow", synflow_scores, needs_data=False, default_rounds=100),
}


def get_scorer(name: str) -> ScoreMethod:
    """The registered :class:`ScoreMethod` called ``name``; unknown names raise ``ValueError``."""
    try:
        return SCORERS[name]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown scoring method {name!r}; choose one of {', '.join(SCORERS)}"
        ) from None


def compute_scores(model: nn.Module, method: str, data=None, **kwargs) -> Scores:
    """Scores of ``method`` for ``model`` (one round); ``ValueError`` if data is missing."""
    scorer = get_scorer(method)
    if scorer.needs_data:
        as_batches(data, method=method)
    return scorer.score(model, data, **kwargs)
