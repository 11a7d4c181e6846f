"""SynFlow (Tanaka et al. 2020, arXiv 2006.05467): iterative synaptic-flow scores on a
linearised copy of the model; :class:`SynFlow` is its :class:`~sigprop.prune.scorer.Scorer`,
overriding the iterative session."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from sigprop.nn.activation import is_elementwise
from sigprop.nn.prunable import require_prunable
from sigprop.nn.utils import as_batches
from sigprop.prune.masks import (
    _computes_masked,
    _masked_forward_pre_hook,
    forget_mask_state,
    validate_mask,
)
from sigprop.prune.saliency import _grads, _weights_and_masks
from sigprop.prune.scorer import _DEFAULT, Scorer
from sigprop.validate import InvalidInput

__all__ = ["SynFlow", "SynFlowSession", "synflow_scores"]

Scores = dict[str, torch.Tensor]


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
    * the copy is put in eval mode (``mode="eval"``, the default; the official code's
      ``prune_loop`` calls ``model.eval()`` unless ``train_mode``: then BatchNorm uses its
      running statistics, |μ| and |σ²| after linearisation; ``mode="train"`` normalises with
      the statistics of the batch-1 input of ones instead and needs more than one value per
      channel; ``None`` keeps the model's modes) and its activation modules (``torch.nn`` activations and
      ``sigprop.nn.Activation``) are bypassed, so R is the paper's linear objective for any
      activation (the official code keeps the activations, which is the same only for ReLU);
      activations applied functionally inside a module's ``forward`` cannot be bypassed;
    * overflow: deep nets make R overflow float32 (R grows like (width·σ_w)^depth). With
      ``dtype=None`` a float32 model is scored in float32 while R stays within
      ``[1e-15, 1e15]`` and in float64 otherwise (decided each round: a round whose R
      leaves the range, or with a score that is not finite, is recomputed in float64, and
      once pruning has brought R back within ``[1e-14, 1e14]`` the next rounds return to
      float32); a non-finite R or score in float64 raises ``ValueError``. Pass ``dtype=torch.float64`` to always use float64.

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
        mode: str | None = "eval",
    ):
        if mode not in ("train", "eval", None):
            raise InvalidInput(f"mode must be 'train', 'eval' or None, got {mode!r}")
        _weights_and_masks(model)  # validates prunable layers and finite weights
        self.input_shape = _synflow_input_shape(model, data, input_shape)
        self.model = copy.deepcopy(model)
        if mode is not None:
            self.model.train(mode == "train")
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
                if getattr(module, "inplace", False) is True:
                    module.inplace = False  # an in-place ReLU would rewrite the bypassed input
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
            forget_mask_state(layer)
            if not _computes_masked(layer):
                self._zeroed.add(name)
                keep = layer.weight_mask.detach() != 0
                with torch.no_grad():
                    layer.weight.mul_(keep)
                # the copy's own bookkeeping: nothing computes with this mask, so it is kept
                # boolean (``Module.to(dtype)`` leaves it alone: no float64 copy of it) and on
                # the CPU doubles as the last mask that ``_drop_only`` compares against
                layer.weight_mask = keep
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
                if name in self._zeroed and self._drop_only(layer, keep):
                    continue
                layer.weight_mask.copy_(keep)
                if name in self._zeroed:
                    layer.weight.mul_(layer.weight_mask)

    def _drop_only(self, layer: nn.Module, keep: torch.Tensor) -> bool:
        """Zero just the weights (and mask entries) newly pruned since the last mask, when
        the new mask only removes entries (every round of iterative pruning): two boolean
        passes and a scatter instead of a multiply over all weights."""
        if keep.device.type != "cpu" or layer.weight.device.type != "cpu":
            return False
        prev = layer.weight_mask.view(-1).numpy()
        new = keep.reshape(-1).numpy()
        changed = np.flatnonzero(prev != new)
        if bool(new[changed].any()):
            return False  # entries come back: the general path
        if changed.size:
            dropped = torch.from_numpy(changed)
            layer.weight.detach().view(-1)[dropped] = 0.0
            prev[changed] = False
        return True

    #: the scores this session returns are checked finite (``select`` need not scan them)
    finite_scores = True

    def scores(self) -> Scores:
        """One round of SynFlow scores |θ ⊙ ∂R/∂θ| on the copy (higher = keep), finite."""
        names = list(self.layers)
        while True:
            weights = [self.layers[n].weight for n in names]
            r = self.objective()
            value = float(r.detach())
            guarded = self._auto and self.dtype == torch.float32
            ok = math.isfinite(value) and (
                not guarded or _FLOAT32_SAFE[0] <= value <= _FLOAT32_SAFE[1]
            )
            if ok:
                # no explicit gradient masking: pruned positions score 0, as either the layer
                # computes with weight*mask (∂R/∂weight = 0 there) or the weight is 0
                scores = _products(names, weights, _grads(r, weights))
                if scores is not None:
                    break
                what = "its scores are"
            else:
                what = f"its objective R = {value} is"
            del r  # R alone decides the precision: no backward pass for a refused round
            if self._auto and self.dtype != torch.float64:
                self._to(torch.float64)
                continue
            raise InvalidInput(
                f"SynFlow: {what} not finite in {self.dtype}; the network is too deep for "
                "this precision"
            )
        if self._auto and self.dtype == torch.float64 and _BACK_TO_FLOAT32[0] <= value:
            if value <= _BACK_TO_FLOAT32[1]:
                # pruning only removes paths of R's non-negative terms (|W|, |b|, sums,
                # pooling), so R does not grow again and later rounds are safe in float32
                # (a decade's margin, half the memory traffic); where it could (a norm layer
                # with a nonzero running mean) the per-round range check still sends a
                # round back to float64
                self._to(torch.float32)
        return scores


def _products(names, weights, grads) -> Scores | None:
    """|θ ⊙ ∂R/∂θ| per layer, computed in place in ``grads`` (``_grads``' tensors are fresh
    and distinct), or ``None`` if a score is not finite.

    The copy's weights are |θ| ≥ 0 and, where every value in the network is non-negative
    (no norm layer centring with a nonzero mean), so is ∂R/∂θ: one read pass
    (``torch.aminmax``) finds the sign and finiteness together, and |·| is taken only for a
    layer with a negative product."""
    scores = {}
    for n, w, g in zip(names, weights, grads):
        s = g.mul_(w.detach())
        lo, hi = (float(v) for v in torch.aminmax(s))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None
        scores[n] = s.abs_() if lo < 0 else s
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
    mode: str | None = "eval",
) -> Scores:
    """One round of SynFlow scores (Tanaka et al. 2020, arXiv 2006.05467, Sec. 6).

    Data-free: ``data`` is only used for its input shape; without it ``input_shape`` is
    needed unless the first prunable layer is linear. See :class:`SynFlowSession` for the
    linearisation, precision and differences from the official code. ``prune_at_init(...,
    "synflow")`` runs the 100 rounds of the paper.
    """
    return SynFlowSession(
        model, data, input_shape=input_shape, dtype=dtype, include_bias=include_bias, mode=mode
    ).scores()


class SynFlow(Scorer):
    """SynFlow as a :class:`~sigprop.prune.scorer.Scorer`: data-free, 100 rounds by default,
    scored in eval mode on a linearised copy (:class:`SynFlowSession`), which is the session
    the iterative loop drives."""

    name = "synflow"
    needs_data = False
    default_rounds = 100
    default_mode = "eval"

    def compute_scores(self, model: nn.Module, data, **kwargs) -> Scores:
        return SynFlowSession(model, data, **kwargs).scores()

    def score(self, model: nn.Module, data=None, *, mode=_DEFAULT, **kwargs) -> Scores:
        return self.session(model, data, mode=mode, **kwargs).scores()

    def session(self, model: nn.Module, data=None, *, mode=_DEFAULT, **kwargs):
        return SynFlowSession(model, data, mode=self._mode(mode), **kwargs)
