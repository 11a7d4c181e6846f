"""Data that ships with the install: ``digits``, ``mnist1d``, a synthetic teacher task, user ``.npz``.

Every loader returns the same frozen :class:`Dataset`: float32 inputs, labels as int64 class
indices (classification) or float32 targets (regression), a seeded split into train /
validation / test, and inputs standardised per feature with the statistics of the final
training split only (the validation and test sets never leak into them).

Datasets
--------
``"digits"``
    ``sklearn.datasets.load_digits``: 1797 grey-scale 8×8 images of 10 digits, shipped with
    scikit-learn. ``flatten=True`` gives 64-vectors, ``flatten=False`` images of shape
    ``(1, 8, 8)``. There is no official test split: a stratified split of ``test_fraction``
    (default 0.2) is drawn from ``seed``.
``"mnist1d"``
    MNIST-1D (Greydanus 2020, arXiv 2011.14439): 10 classes of length-40 1-D signals,
    generated locally by ``mnist1d.data.make_dataset`` with the package's default arguments
    (5000 samples, the canonical 4000/1000 train/test split, generation seed 42). The
    generator only computes; it never touches the network (``get_dataset``, which may
    download and writes a pickle into the working directory, is deliberately not used).
    ``make_dataset`` seeds NumPy's and Python's global generators; that state is saved and
    restored around the call, so loading leaves the caller's global random state intact.
    ``flatten=False`` gives signals of shape ``(1, 40)`` for 1-D convnets.
``"teacher"``
    A teacher–student task: inputs x ~ N(0, I_d) and a random teacher MLP with weights
    N(0, σ_w²/fan_in) and biases N(0, σ_b²) (the mean-field convention of Poole et al.,
    arXiv 1606.05340, §2); labels are the argmax of the teacher's ``n_classes`` outputs, or,
    with ``n_classes=0``, the teacher's scalar output is a regression target. Options (keyword
    arguments of :func:`load_dataset`): ``in_features=20, n_classes=4, n_train=2000,
    n_test=1000, width=64, depth=2, activation="tanh"|"relu"|"linear", sigma_w=1.5,
    sigma_b=0.1, noise=0.0`` (standard deviation of Gaussian noise added to the teacher's
    outputs before the argmax / to the regression target).
``"npz:PATH"``
    User data: a ``.npz`` file with arrays ``x_train``, ``y_train`` and optionally ``x_test``,
    ``y_test`` (without them a stratified ``test_fraction`` is split off). Integer labels
    0..K−1 make a classification task; float targets (or ``task="regression"``) a
    regression task. Loaded with ``allow_pickle=False``; every inconsistency raises
    ``ValueError`` naming the key and the problem.

Example
-------
>>> from sigprop.experiments.data import load_dataset
>>> ds = load_dataset("digits", seed=0)
>>> ds.x_train.shape, ds.n_classes
(torch.Size([1438, 64]), 10)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "DATASETS",
    "Dataset",
    "batches",
    "class_balanced_batch",
    "load_dataset",
    "minibatches",
]

#: Names accepted by :func:`load_dataset` (plus ``"npz:PATH"``).
DATASETS = ("digits", "mnist1d", "teacher")

_TEACHER_DEFAULTS = {
    "in_features": 20,
    "n_classes": 4,
    "n_train": 2000,
    "n_test": 1000,
    "width": 64,
    "depth": 2,
    "activation": "tanh",
    "sigma_w": 1.5,
    "sigma_b": 0.1,
    "noise": 0.0,
}
_TEACHER_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda h: np.maximum(h, 0.0),
    "linear": lambda h: h,
}


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
        return {
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


# ----------------------------------------------------------------------------- helpers


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _stratified_split(x, y, fraction, rng, *, stratify=True):
    """Split off ``round(fraction·n_c)`` samples of every class c (of all samples if not
    ``stratify``); returns (x_keep, y_keep, x_out, y_out), each part in a random order."""
    if stratify:
        groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    else:
        groups = [np.arange(len(x))]
    keep, out = [], []
    for g in groups:
        g = rng.permutation(g)
        k = int(round(fraction * len(g)))
        out.append(g[:k])
        keep.append(g[k:])
    keep = rng.permutation(np.concatenate(keep))
    out = rng.permutation(np.concatenate(out))
    return x[keep], y[keep], x[out], y[out]


@functools.lru_cache(maxsize=1)
def _digits_cached():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float64)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _digits():
    x, y = _digits_cached()
    return x.copy(), y.copy()


@functools.lru_cache(maxsize=1)
def _mnist1d_cached():
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # canonical arguments: 5000 samples, 80/20 split, seed 42
    # make_dataset seeds the legacy global generators: save and restore them around it
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    arrays = [
        np.asarray(data["x"], dtype=np.float64)[:, None, :],
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float64)[:, None, :],
        np.asarray(data["y_test"], dtype=np.int64),
    ]
    for a in arrays:
        a.flags.writeable = False
    return tuple(arrays)


def _mnist1d():
    return tuple(a.copy() for a in _mnist1d_cached())


def _teacher(rng, opt):
    ints = ("in_features", "n_classes", "n_train", "n_test", "width", "depth")
    for key in ints:
        v = opt[key]
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise InvalidInput(f"teacher option {key} must be an integer, got {v!r}")
    for key in ("in_features", "n_train", "n_test", "width", "depth"):
        if opt[key] < 1:
            raise InvalidInput(f"teacher option {key} must be >= 1, got {opt[key]}")
    if opt["n_classes"] < 0 or opt["n_classes"] == 1:
        raise InvalidInput(
            f"teacher option n_classes must be 0 (regression) or >= 2, got {opt['n_classes']}"
        )
    for key in ("sigma_w", "sigma_b", "noise"):
        v = float(opt[key])
        if not math.isfinite(v) or v < 0:
            raise InvalidInput(
                f"teacher option {key} must be a finite number >= 0, got {opt[key]!r}"
            )
    if opt["activation"] not in _TEACHER_ACTIVATIONS:
        raise InvalidInput(
            f"teacher activation {opt['activation']!r} unknown; choose from {sorted(_TEACHER_ACTIVATIONS)}"
        )
    phi = _TEACHER_ACTIVATIONS[opt["activation"]]
    d, width, n_classes = opt["in_features"], opt["width"], opt["n_classes"]
    sizes = [d] + [width] * opt["depth"] + [max(n_classes, 1)]
    layers = [
        (
            rng.normal(0.0, opt["sigma_w"] / math.sqrt(n_in), size=(n_in, n_out)),
            rng.normal(0.0, opt["sigma_b"], size=n_out),
        )
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    ]
    n = opt["n_train"] + opt["n_test"]
    x = rng.standard_normal((n, d))
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = phi(h)
    h = h + opt["noise"] * rng.standard_normal(h.shape)
    y = np.argmax(h, axis=1) if n_classes > 0 else h
    ntr = opt["n_train"]
    kind = f"{n_classes}-class" if n_classes > 0 else "regression"
    desc = (
        f"teacher-student ({kind}): x ~ N(0, I_{d}), {opt['activation']} teacher MLP "
        f"depth {opt['depth']} width {width}, sigma_w {opt['sigma_w']}, sigma_b {opt['sigma_b']}, "
        f"noise {opt['noise']}"
    )
    return x[:ntr], y[:ntr], x[ntr:], y[ntr:], n_classes, desc


def _npz(path, task, test_fraction, rng):
    if not os.path.exists(path):
        raise InvalidInput(f"npz file {path!r} does not exist")
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise InvalidInput(f"{path!r} is not a readable .npz file (no zip signature)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise InvalidInput(f"npz file {path!r} cannot be read without pickle: {exc}") from None
    except (OSError, EOFError) as exc:
        raise InvalidInput(f"{path!r} is not a readable .npz file: {exc}") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise InvalidInput(
                f"npz file {path!r} lacks the array {key!r} (found {sorted(arrays)})"
            )
    has_test = ("x_test" in arrays, "y_test" in arrays)
    if has_test[0] != has_test[1]:
        raise InvalidInput(f"npz file {path!r} must have both x_test and y_test, or neither")
    parts = ["train", "test"] if has_test[0] else ["train"]
    for part in parts:
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        for key, a in ((f"x_{part}", x), (f"y_{part}", y)):
            if a.dtype.kind not in "biuf":
                raise InvalidInput(f"npz array {key!r} must be numeric, got dtype {a.dtype}")
            if a.ndim == 0 or a.shape[0] == 0:
                raise InvalidInput(f"npz array {key!r} is empty")
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise InvalidInput(f"npz array {key!r} contains NaN or inf")
        if x.shape[0] != y.shape[0]:
            raise InvalidInput(
                f"npz arrays x_{part} and y_{part} disagree: {x.shape[0]} vs {y.shape[0]} samples"
            )
    if has_test[0] and arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
        raise InvalidInput(
            f"npz x_test samples have shape {arrays['x_test'].shape[1:]}, "
            f"x_train samples {arrays['x_train'].shape[1:]}"
        )
    ys = [arrays[f"y_{p}"] for p in parts]
    integral = all(y.ndim == 1 and np.all(np.mod(y, 1) == 0) for y in ys)
    if task == "auto":
        task = "classification" if integral else "regression"
    if task == "classification":
        if not integral:
            raise InvalidInput("npz labels must be 1-D integers 0..K-1 for classification")
        if min(int(y.min()) for y in ys) < 0:
            raise InvalidInput("npz labels must be non-negative class indices 0..K-1")
        n_classes = max(int(y.max()) for y in ys) + 1
        if n_classes < 2:
            raise InvalidInput("npz labels contain a single class; classification needs >= 2")
        ys = [y.astype(np.int64) for y in ys]
    else:
        n_classes = 0
        ys = [y.reshape(y.shape[0], -1).astype(np.float64) for y in ys]
    x_tr = arrays["x_train"].astype(np.float64)
    if has_test[0]:
        return x_tr, ys[0], arrays["x_test"].astype(np.float64), ys[1], n_classes
    x_tr, y_tr, x_te, y_te = _stratified_split(
        x_tr, ys[0], test_fraction, rng, stratify=n_classes > 0
    )
    if len(x_te) == 0:
        raise InvalidInput(f"npz file {path!r}: too few samples to split off a test set")
    return x_tr, y_tr, x_te, y_te, n_classes
