"""The pruning seam: a :class:`Scorer` has one abstract method, ``compute_scores``.

As ``torch.nn.utils.prune.BasePruningMethod`` asks a method only for ``compute_mask``, a
scorer here only computes ``{parameter name: score tensor}`` (higher = keep) for every
prunable layer; masking (:func:`sigprop.prune.selection.select`), schedules and application are
shared. Everything else has a default a subclass may override:

* ``name``, ``needs_data`` (``data`` required), ``default_rounds`` (1; SynFlow 100),
  ``uses_generator`` (whether ``generator`` changes the scores; every scorer *accepts* one),
  ``default_mode`` (``"train"``, ``"eval"`` or ``None`` = the model's own mode);
* :meth:`Scorer.score` -- one round: checks, the train/eval mode, ``compute_scores``;
* :meth:`Scorer.session` -- the object the iterative loop of
  :func:`~sigprop.prune.at_init.prune_at_init` drives (``.model``, ``.scores()``,
  ``.set_masks(masks)``, and optionally ``.finite_scores``: whether ``scores()`` checks
  its scores finite itself, so that selection need not scan them). The default scores the
  model itself each round and ``apply``s the masks to it; SynFlow overrides it to score a
  private linearised copy.

:class:`ScoreMethod` makes a scorer of a plain function ``fn(model, data, **kw)``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Mapping

import torch
from torch import nn

from sigprop.nn.utils import as_batches
from sigprop.prune.masks import apply
from sigprop.validate import InvalidInput

__all__ = ["MODES", "DirectSession", "ScoreMethod", "Scorer", "scoring_mode"]

Scores = dict[str, torch.Tensor]

#: train/eval modes a scorer can run in (``None``: leave the model's modes as they are)
MODES = ("train", "eval", None)


@contextlib.contextmanager
def scoring_mode(model: nn.Module, mode: str | None):
    """Run the body with ``model`` in ``mode`` ("train"/"eval"; ``None`` changes nothing) and
    restore every submodule's own ``training`` flag afterwards."""
    if mode not in MODES:
        raise InvalidInput(f"mode must be 'train', 'eval' or None, got {mode!r}")
    if mode is None:
        yield
        return
    saved = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


_DEFAULT = object()


class Scorer(abc.ABC):
    """A pruning-at-initialisation score (see the module docstring)."""

    name: str = ""
    needs_data: bool = False
    default_rounds: int = 1
    uses_generator: bool = False
    default_mode: str | None = None

    @abc.abstractmethod
    def compute_scores(self, model: nn.Module, data, **kwargs) -> Scores:
        """``{parameter name: score}`` for every prunable layer of ``model`` (higher = keep)."""

    def _mode(self, mode):
        mode = self.default_mode if mode is _DEFAULT else mode
        if mode not in MODES:
            raise InvalidInput(f"mode must be 'train', 'eval' or None, got {mode!r}")
        return mode

    def check_data(self, data) -> None:
        """``ValueError`` if this scorer needs data and ``data`` holds no batch format."""
        if self.needs_data:
            as_batches(data, method=self.name)

    def score(self, model: nn.Module, data=None, *, mode=_DEFAULT, **kwargs) -> Scores:
        """One round of scores, computed in ``mode`` (default :attr:`default_mode`)."""
        self.check_data(data)
        with scoring_mode(model, self._mode(mode)):
            return self.compute_scores(model, data, **kwargs)

    def __call__(self, model: nn.Module, data=None, **kwargs) -> Scores:
        return self.score(model, data, **kwargs)

    def session(self, model: nn.Module, data=None, *, mode=_DEFAULT, **kwargs):
        """An object with ``.model`` (whose masks rounds update), ``.scores()`` and
        ``.set_masks(masks)``: by default the model itself, scored every round."""
        self.check_data(data)
        return DirectSession(self, model, data, self._mode(mode), kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class DirectSession:
    """Score the model itself every round; masks are ``apply``'d to it."""

    finite_scores = False  # a scorer's scores are checked by ``select``

    def __init__(self, scorer: Scorer, model, data, mode, kwargs):
        self.scorer, self.model, self.data, self.mode, self.kwargs = (
            scorer,
            model,
            data,
            mode,
            kwargs,
        )

    def scores(self) -> Scores:
        with scoring_mode(self.model, self.mode):
            return self.scorer.compute_scores(self.model, self.data, **self.kwargs)

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        apply(self.model, masks)


class ScoreMethod(Scorer):
    """A scorer made of a function ``score(model, data, **kw) -> scores``.

    Fields: ``name``; ``fn`` (the function); ``needs_data``; ``default_rounds``;
    ``uses_generator``; ``default_mode``.
    """

    def __init__(
        self,
        name: str,
        score: Callable[..., Scores],
        needs_data: bool,
        default_rounds: int = 1,
        *,
        uses_generator: bool = False,
        default_mode: str | None = None,
    ):
        self.name, self.fn, self.needs_data = name, score, needs_data
        self.default_rounds, self.uses_generator = default_rounds, uses_generator
        self.default_mode = default_mode

    def compute_scores(self, model, data, **kwargs) -> Scores:
        return self.fn(model, data, **kwargs)
