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

from sigprop.experiments.data.dataset import (
    Dataset,
    batches,
    class_balanced_batch,
    load_dataset,
    minibatches,
)
from sigprop.experiments.data.sources import DATASETS, _mnist1d_cached  # noqa: F401 (tests)

__all__ = [
    "DATASETS",
    "Dataset",
    "batches",
    "class_balanced_batch",
    "load_dataset",
    "minibatches",
]
