"""The ``Dataset`` record, ``load_dataset`` and the batch readers."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sigprop._json import to_jsonable
from sigprop.experiments.data.sources import (
    _TEACHER_DEFAULTS,
    DATASETS,
    _check_seed,
    _digits,
    _mnist1d,
    _npz,
    _stratified_split,
    _teacher,
)
from sigprop.validate import InvalidInput, positive_int


@dataclass(frozen=True, eq=False)
class Dataset:
    """A standardised, split data set (all tensors on the CPU unless moved with :meth:`to`).

    Attributes
    ----------
    name : str
        The name it was loaded by (``"digits"``, ``"mnist1d"``, ``"teacher"``, ``"npz:PATH"``).
    description : str
        One line: source, sizes, split and standardisation.
    x_train, x_val, x_test : torch.Tensor
        float32 inputs of shape ``(n, *input_shape)``; ``x_val`` has 0 rows when
        ``val_fraction=0``.
    y_train, y_val, y_test : torch.Tensor
        int64 class indices of shape ``(n,)`` for classification, float32 targets of shape
        ``(n, k)`` for regression.
    n_classes : int
        Number of classes; 0 for a regression task.
    input_shape : tuple of int
        Shape of one input, e.g. ``(64,)`` or ``(1, 8, 8)``.
    mean, std : torch.Tensor or None
        Per-feature training statistics used for standardisation (shape ``input_shape``),
        ``None`` when ``standardize=False``. Apply to new data as ``(x - mean) / std``.
    seed : int
        The seed of the split (and of the teacher for ``"teacher"``).
    """

    name: str
    description: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_shape: tuple[int, ...]
    mean: torch.Tensor | None
    std: torch.Tensor | None
    seed: int

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return "classification" if self.n_classes > 0 else "regression"

    @property
    def n_features(self) -> int:
        """Number of input features (product of ``input_shape``)."""
        return math.prod(self.input_shape)

    @property
    def out_features(self) -> int:
        """Outputs a model needs: ``n_classes``, or the target dimension for regression."""
        return self.n_classes if self.n_classes > 0 else int(self.y_train.shape[1])

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if which not in ("train", "val", "test"):
            raise InvalidInput(f"split must be 'train', 'val' or 'test', got {which!r}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def to(self, device: str | torch.device) -> Dataset:
        """A copy with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    def to_dict(self) -> dict:
        """JSON-serialisable metadata (names, shapes and sizes; no arrays)."""
        summary = {
            "name": self.name,
            "description": self.description,
            "task": self.task,
            "n_classes": self.n_classes,
            "input_shape": list(self.input_shape),
            "n_train": int(self.x_train.shape[0]),
            "n_val": int(self.x_val.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "standardized": self.mean is not None,
            "seed": self.seed,
        }
        return to_jsonable(summary, "Dataset")


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.0,
    test_fraction: float = 0.2,
    standardize: bool = True,
    flatten: bool = True,
    task: str = "auto",
    **options,
) -> Dataset:
    """Load a data set by name, split it with ``seed`` and standardise it.

    Parameters
    ----------
    name : str
        ``"digits"``, ``"mnist1d"``, ``"teacher"`` or ``"npz:PATH"`` (see the module docstring).
    seed : int
        Seed of the validation split, of the test split where the source has none
        (``digits``, ``npz`` without test arrays), and of the teacher network and its inputs.
    val_fraction : float in [0, 1)
        Fraction of the training data held out as a (stratified, for classification)
        validation set.
    test_fraction : float in (0, 1)
        Test fraction where the source has no test split of its own.
    standardize : bool
        Subtract the per-feature training mean and divide by the training standard deviation
        (features that are constant on the training set are only centred).
    flatten : bool
        Flat feature vectors (``True``) or the natural shape: ``(1, 8, 8)`` digits, ``(1, 40)``
        mnist1d signals; ``npz`` arrays keep their stored per-sample shape when ``False``.
    task : ``"auto"``, ``"classification"`` or ``"regression"``
        Only for ``npz``: ``"auto"`` treats integer-valued 1-D labels as classes.
    **options
        Options of ``"teacher"`` (see the module docstring); anything else raises ``ValueError``.
    """
    if not isinstance(name, str):
        raise InvalidInput(f"dataset name must be a string, got {type(name).__name__}")
    seed = _check_seed(seed)
    if not 0.0 <= val_fraction < 1.0 or not math.isfinite(val_fraction):
        raise InvalidInput(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    if not 0.0 < test_fraction < 1.0:
        raise InvalidInput(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if task not in ("auto", "classification", "regression"):
        raise InvalidInput(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
    rng = np.random.default_rng(seed)

    if name == "teacher":
        unknown = set(options) - set(_TEACHER_DEFAULTS)
        if unknown:
            raise InvalidInput(
                f"unknown teacher option(s) {sorted(unknown)}; choose from {sorted(_TEACHER_DEFAULTS)}"
            )
        x_tr, y_tr, x_te, y_te, n_classes, desc = _teacher(rng, {**_TEACHER_DEFAULTS, **options})
        shape = (x_tr.shape[1],)
    else:
        if options:
            raise InvalidInput(
                f"dataset {name!r} takes no option(s) {sorted(options)} (only 'teacher' has options)"
            )
        if name == "digits":
            x, y = _digits()
            x_tr, y_tr, x_te, y_te = _stratified_split(x, y, test_fraction, rng)
            n_classes, shape = 10, (1, 8, 8)
            desc = "sklearn digits: 1797 8x8 images, 10 classes"
        elif name == "mnist1d":
            x_tr, y_tr, x_te, y_te = _mnist1d()
            n_classes, shape = 10, (1, 40)
            desc = "MNIST-1D (Greydanus 2020, arXiv 2011.14439): length-40 signals, 10 classes"
        elif name.startswith("npz:"):
            x_tr, y_tr, x_te, y_te, n_classes = _npz(name[4:], task, test_fraction, rng)
            shape = tuple(x_tr.shape[1:])
            desc = f"user data from {name[4:]}"
        else:
            raise InvalidInput(
                f"unknown dataset {name!r}; choose from {list(DATASETS)} or 'npz:PATH'"
            )
        x_tr = x_tr.reshape((-1, *shape))
        x_te = x_te.reshape((-1, *shape))

    if val_fraction > 0:
        x_tr, y_tr, x_va, y_va = _stratified_split(
            x_tr, y_tr, val_fraction, rng, stratify=n_classes > 0
        )
    else:
        x_va, y_va = x_tr[:0], y_tr[:0]
    if x_tr.shape[0] == 0:
        raise InvalidInput(f"dataset {name!r}: no training samples left after the splits")

    mean = std = None
    if standardize:
        mean = x_tr.mean(axis=0, dtype=np.float64)
        std = x_tr.std(axis=0, dtype=np.float64)
        std = np.where(std > 0, std, 1.0)
        x_tr, x_va, x_te = ((a - mean) / std for a in (x_tr, x_va, x_te))
    if flatten:
        shape = (math.prod(shape),)
        x_tr, x_va, x_te = (a.reshape(a.shape[0], shape[0]) for a in (x_tr, x_va, x_te))
        if mean is not None:
            mean, std = mean.reshape(-1), std.reshape(-1)

    def xt(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    def yt(a):
        if n_classes > 0:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    split_desc = f"{len(x_tr)} train / {len(x_va)} val / {len(x_te)} test, seed {seed}"
    std_desc = "standardised with train statistics" if standardize else "not standardised"
    return Dataset(
        name=name,
        description=f"{desc}; {split_desc}; {std_desc}",
        x_train=xt(x_tr),
        y_train=yt(y_tr),
        x_val=xt(x_va),
        y_val=yt(y_va),
        x_test=xt(x_te),
        y_test=yt(y_te),
        n_classes=int(n_classes),
        input_shape=tuple(int(s) for s in shape),
        mean=None if mean is None else xt(mean),
        std=None if std is None else xt(std),
        seed=seed,
    )


def class_balanced_batch(
    dataset: Dataset,
    per_class: int,
    generator: torch.Generator | int | None = None,
    *,
    split: str = "train",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` random samples of every class of ``split``, as ``(x, y)`` sorted by class.

    The "k samples per class" mini-batch that SNIP (Lee et al. 2019, arXiv 1810.02340, §4)
    and GraSP (Wang et al. 2020, arXiv 2002.07376, §5) score with: exactly
    :func:`sigprop.prune.samples_per_class` on the split, so the same rule for
    ``generator`` applies (a ``torch.Generator`` or an int seed; ``None`` means seed 0, so
    the batch is always deterministic).
    """
    from sigprop.prune.scores import samples_per_class

    if dataset.n_classes == 0:
        raise InvalidInput("class_balanced_batch needs a classification dataset (n_classes > 0)")
    per_class = positive_int(per_class, "per_class")
    x, y = dataset.split(split)
    return samples_per_class(x, y, per_class, num_classes=dataset.n_classes, generator=generator)


def minibatches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield mini-batches ``(x[i], y[i])`` in a random (``shuffle=True``) or fixed order.

    The permutation is drawn from ``generator`` (a CPU ``torch.Generator``), never from the
    global generator; ``shuffle=True`` without a generator raises ``ValueError`` so that a
    run can never be silently unreproducible.
    """
    n = int(x.shape[0])
    if int(y.shape[0]) != n:
        raise InvalidInput(f"x has {n} samples but y has {int(y.shape[0])}")
    batch_size = positive_int(batch_size, "batch_size")
    if shuffle:
        if generator is None:
            raise InvalidInput("minibatches(shuffle=True) needs an explicit torch.Generator")
        order = torch.randperm(n, generator=generator).to(x.device)
    else:
        order = None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]


#: The earlier name of :func:`minibatches`, kept so existing code keeps working. (Reading
#: "data" arguments as batches is :func:`sigprop.nn.utils.as_batches`.)
batches = minibatches
