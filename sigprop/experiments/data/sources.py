"""Where the examples come from: scikit-learn's digits, the mnist1d generator (Greydanus
2020, arXiv 2011.14439), a random teacher network, a local ``.npz`` file; none downloads.

mnist1d's generator takes ~2 s per process, so its canonical set is kept in
:func:`cache_dir` (keyed by the mnist1d version and its arguments) and read back as plain
arrays, checked, by the next process; a missing, unreadable or unfit file is regenerated."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import os
import random
import zipfile
from pathlib import Path

import numpy as np

from sigprop.validate import InvalidInput

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


#: Where generated data sets are kept between processes: ``SIGPROP_CACHE_DIR``, else
#: ``$XDG_CACHE_HOME/sigprop``, else ``~/.cache/sigprop``. A file there is only ever
#: read back as plain arrays (no pickle), checked, and regenerated when it does not fit.
_CACHE_ENV = "SIGPROP_CACHE_DIR"
#: mnist1d's canonical set is ~2 MB; a cache file beyond this is not read
_CACHE_MAX_BYTES = 64 << 20
_MNIST1D_KEYS = ("x", "y", "x_test", "y_test")


def cache_dir() -> Path:
    """The folder of generated data sets (see ``_CACHE_ENV``)."""
    explicit = os.environ.get(_CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sigprop"


def _mnist1d_file() -> Path:
    """The cache file of mnist1d's canonical set: its arguments are those of the installed
    version (``get_dataset_args()``), so the version is the key (and mnist1d is imported
    only to generate)."""
    from importlib.metadata import version

    key = hashlib.sha256(f"mnist1d {version('mnist1d')} canonical".encode()).hexdigest()[:16]
    return cache_dir() / f"mnist1d-{key}.npz"


def _read_mnist1d(path: Path) -> tuple[np.ndarray, ...] | None:
    """The four arrays of a cache file, or None when it is absent or does not fit."""
    try:
        if not path.is_file() or path.stat().st_size > _CACHE_MAX_BYTES:
            return None
        with zipfile.ZipFile(path) as zf:  # bound what the members expand to, too
            if sum(info.file_size for info in zf.infolist()) > _CACHE_MAX_BYTES:
                return None
        with np.load(path, allow_pickle=False) as npz:
            if sorted(npz.files) != sorted(_MNIST1D_KEYS):
                return None
            x, y, xt, yt = (npz[k] for k in _MNIST1D_KEYS)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    for a, b in ((x, y), (xt, yt)):
        ok = (
            a.dtype == np.float64
            and b.dtype == np.int64
            and a.ndim == 3
            and a.shape[1] == 1
            and a.shape[2] == x.shape[2]
            and b.shape == (a.shape[0],)
            and a.shape[0] > 0
            and np.all(np.isfinite(a))
            and np.all((b >= 0) & (b < 10))
        )
        if not ok:
            return None
    return x, y, xt, yt


def _write_mnist1d(path: Path, arrays) -> None:
    """Keep the arrays for the next process (atomically; silently not where unwritable)."""
    from sigprop.plotting.files import write_atomic

    buf = io.BytesIO()
    np.savez(buf, **dict(zip(_MNIST1D_KEYS, arrays)))
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())


@functools.lru_cache(maxsize=1)
def _mnist1d_cached():
    path = _mnist1d_file()
    arrays = _read_mnist1d(path)
    if arrays is None:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()  # canonical arguments: 5000 samples, 80/20 split, seed 42
        # make_dataset seeds the legacy global generators: save and restore them around it
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
        try:
            data = make_dataset(args)
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)
        arrays = (
            np.asarray(data["x"], dtype=np.float64)[:, None, :],
            np.asarray(data["y"], dtype=np.int64),
            np.asarray(data["x_test"], dtype=np.float64)[:, None, :],
            np.asarray(data["y_test"], dtype=np.int64),
        )
        _write_mnist1d(path, arrays)
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
