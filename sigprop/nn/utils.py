"""Helpers shared by ``sigprop.prune``, ``sigprop.diagnostics`` and ``sigprop.experiments``.

* :func:`as_batches`: the one rule for reading "data" arguments as ``(inputs, targets)``
  batches: only a *tuple* of two tensors is one ``(inputs, targets)`` batch; a list (or any
  other iterable, e.g. a ``DataLoader``) is a sequence of batches, so ``[x1, x2]`` is never
  mistaken for inputs and targets.
* :func:`sum_sq`: Σ t² in float64 for a tensor of any size, without a float64 copy of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from sigprop.validate import InvalidInput

__all__ = ["as_batches", "sum_sq"]

Batch = tuple[Tensor, Tensor | None]


class _Batches:
    """A view of an iterable of batches; every item is checked when reached. ``one_shot``
    says whether the underlying iterable is an iterator (exhausted after one pass)."""

    def __init__(self, data: Iterable, method: str, targets_required: bool) -> None:
        self._data = data
        self._method = method
        self._targets_required = targets_required
        self.one_shot = isinstance(data, Iterator)

    def __iter__(self) -> Iterator[Batch]:
        for i, item in enumerate(self._data):
            yield _read_batch(item, self._method, self._targets_required, f"batch {i}")


def _read_batch(item, method: str, targets_required: bool, where: str) -> Batch:
    if isinstance(item, Tensor):
        if targets_required:
            raise InvalidInput(
                f"{method}: {where} is a bare tensor; every batch must be a pair (inputs, targets)"
            )
        return item, None
    # a DataLoader yields [inputs, targets] lists: inside the sequence a list is a pair too
    if isinstance(item, tuple | list) and len(item) == 2:
        x, y = item
        if isinstance(x, Tensor) and isinstance(y, Tensor):
            _check_lengths(x, y, method)
            return x, y
    # a DataLoader over a one-tensor dataset yields [inputs]
    if (
        not targets_required
        and isinstance(item, tuple | list)
        and len(item) == 1
        and isinstance(item[0], Tensor)
    ):
        return item[0], None
    raise InvalidInput(
        f"{method}: {where} must be a pair (inputs, targets) of tensors"
        + ("" if targets_required else " or a tensor of inputs")
        + f", got {type(item).__name__}"
    )


def _check_lengths(x: Tensor, y: Tensor, method: str) -> None:
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise InvalidInput(
            f"{method}: inputs and targets must have the same number of samples, got "
            f"shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )


def as_batches(
    data, *, method: str = "this method", targets_required: bool = True
) -> Iterable[Batch]:
    """Read ``data`` as an iterable of ``(inputs, targets)`` batches.

    * a *tuple* ``(inputs, targets)`` of two tensors is one batch;
    * a tensor is one batch of inputs without targets (``targets_required=False`` only);
    * anything else iterable (a list, a generator, a ``DataLoader``) is a sequence of
      batches, each a pair of tensors (tuple or list, as a ``DataLoader`` yields) or, when
      targets are optional, a tensor of inputs or a one-element ``[inputs]`` (its targets
      are ``None``).

    Inputs and targets of a batch must have the same number of samples. The result can be
    iterated several times when ``data`` can (lists, ``DataLoader``s; its ``one_shot``
    attribute is ``True`` for an iterator); each batch is checked when it is reached.
    A result of ``as_batches`` is returned unchanged. ``None``, a string or a non-iterable
    raises ``ValueError`` naming ``method``.
    """
    if data is None:
        raise InvalidInput(
            f"{method} needs data: a batch (inputs, targets) or an iterable of such batches"
        )
    if isinstance(data, _Batches):
        return data
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        _check_lengths(data[0], data[1], method)
        return [(data[0], data[1])]
    if isinstance(data, Tensor):
        return [_read_batch(data, method, targets_required, "data")]
    if isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise InvalidInput(
            f"{method}: data must be a batch (inputs, targets) or an iterable of such "
            f"batches, got {type(data).__name__}"
        )
    return _Batches(data, method, targets_required)


#: elements per float64 chunk of :func:`sum_sq` (512 KiB: stays in cache)
_SUM_SQ_CHUNK = 1 << 16


def sum_sq(t: Tensor) -> float:
    """Σ t² accumulated in float64, chunk by chunk: every square is exact in float64 (for
    float32 or narrower inputs), as in ``float(t.double().pow(2).sum())``, but with no
    float64 copy of ``t`` (7× faster on VGG-16's 10⁸-weight classifier). ``inf`` or
    ``nan`` when ``t`` holds a non-finite value."""
    flat = t.detach().reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=flat.device)
    for chunk in flat.split(_SUM_SQ_CHUNK):
        total += chunk.to(torch.float64).pow(2).sum()
    return float(total)
