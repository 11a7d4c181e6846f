"""Data loaders: shapes, standardisation with train statistics, seeded splits, npz validation."""

import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sigprop.experiments import data
from sigprop.experiments.data import (
    batches,
    class_balanced_batch,
    load_dataset,
    minibatches,
    sources,
)
from sigprop.prune import samples_per_class


def _rows_sorted(x: torch.Tensor) -> np.ndarray:
    a = x.reshape(x.shape[0], -1).numpy()
    return a[np.lexsort(a.T[::-1])]


def test_digits_shapes_flat_and_image():
    flat = load_dataset("digits", seed=0)
    img = load_dataset("digits", seed=0, flatten=False)
    assert flat.x_train.shape[1:] == (64,) and flat.input_shape == (64,)
    assert img.x_train.shape[1:] == (1, 8, 8) and img.input_shape == (1, 8, 8)
    assert flat.x_train.dtype == torch.float32 and flat.y_train.dtype == torch.int64
    assert flat.n_classes == 10 and flat.task == "classification"
    assert flat.x_train.shape[0] + flat.x_test.shape[0] == 1797
    # the flat vectors are the images in row-major order
    assert torch.equal(flat.x_train, img.x_train.reshape(-1, 64))
    # stratified 20 % test split: round(0.2 n_c) test samples of every class
    counts = np.bincount(flat.y_test.numpy(), minlength=10)
    full = np.bincount(np.concatenate([flat.y_train.numpy(), flat.y_test.numpy()]))
    assert np.array_equal(counts, np.round(0.2 * full).astype(int))


def test_standardisation_uses_train_statistics_only():
    raw = load_dataset("digits", seed=3, standardize=False)
    std = load_dataset("digits", seed=3)
    x = raw.x_train.double()
    mean, sd = x.mean(0), x.std(0, correction=0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    # float32 storage: relative rounding 6e-8 on values of size <= ~40 -> 1e-5 absolute is ample
    assert torch.allclose(std.x_train.double(), (x - mean) / sd, atol=1e-5)
    assert torch.allclose(std.x_test.double(), (raw.x_test.double() - mean) / sd, atol=1e-5)
    assert torch.allclose(std.mean.double(), mean, atol=1e-5)
    # the train split has mean 0 and unit variance on every non-constant pixel (float32 sums)
    assert std.x_train.double().mean(0).abs().max() < 1e-5
    live = raw.x_train.std(0) > 0
    assert torch.allclose(
        std.x_train.double().std(0, correction=0)[live],
        torch.ones(int(live.sum())).double(),
        atol=1e-5,
    )
    # constant pixels (the digits' borders) are only centred, never divided by zero
    assert torch.isfinite(std.x_train).all() and torch.isfinite(std.x_test).all()
    # the test set is not standardised with its own statistics
    assert std.x_test.double().mean(0).abs().max() > 1e-3


def test_seeding_reproduces_and_varies_the_split():
    a = load_dataset("digits", seed=1, val_fraction=0.1)
    b = load_dataset("digits", seed=1, val_fraction=0.1)
    c = load_dataset("digits", seed=2, val_fraction=0.1)
    for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, part), getattr(b, part))
    assert not torch.equal(a.y_test, c.y_test)


def test_validation_split_partitions_the_training_data():
    # continuous teacher inputs have no duplicate rows, so row multisets identify samples
    whole = load_dataset("teacher", seed=4, standardize=False, n_train=300, n_test=50)
    split = load_dataset(
        "teacher", seed=4, standardize=False, n_train=300, n_test=50, val_fraction=0.25
    )
    assert split.x_val.shape[0] == 75 and split.x_train.shape[0] == 225
    joined = torch.cat([split.x_train, split.x_val])
    assert np.array_equal(_rows_sorted(joined), _rows_sorted(whole.x_train))
    assert torch.equal(split.x_test, whole.x_test)


def test_mnist1d_is_generated_locally_and_leaves_global_rng_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGPROP_CACHE_DIR", str(tmp_path))  # an empty cache: generate
    data._mnist1d_cached.cache_clear()  # make sure the generator really runs here
    # the legacy global state is exactly what must stay untouched
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002
    py_state = random.getstate()
    ds = load_dataset("mnist1d", flatten=False)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    assert random.getstate() == py_state
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)
    assert ds.n_classes == 10 and set(ds.y_train.unique().tolist()) == set(range(10))
    flat = load_dataset("mnist1d")
    assert flat.x_train.shape == (4000, 40)


@pytest.fixture
def fake_mnist1d(tmp_path, monkeypatch):
    """An empty cache folder, and mnist1d's generator replaced by a counting stand-in that
    returns fixed arrays of the canonical shapes (the real one takes ~2 s a call)."""
    import mnist1d.data

    rng = np.random.default_rng(0)
    made = {
        "x": rng.standard_normal((8, 40)),
        "y": np.arange(8) % 10,
        "x_test": rng.standard_normal((3, 40)),
        "y_test": np.arange(3),
    }
    calls = []

    def make_dataset(args):
        calls.append(args)
        return made

    monkeypatch.setenv("SIGPROP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist1d.data, "make_dataset", make_dataset)
    sources._mnist1d_cached.cache_clear()
    yield made, calls
    sources._mnist1d_cached.cache_clear()


def test_mnist1d_is_cached_between_processes_bit_for_bit(fake_mnist1d):
    made, calls = fake_mnist1d
    first = sources._mnist1d()
    assert len(calls) == 1
    files = list(sources.cache_dir().glob("mnist1d-*.npz"))
    assert len(files) == 1 and not list(sources.cache_dir().glob("*.tmp"))
    sources._mnist1d_cached.cache_clear()  # a new process: read back, no generation
    second = sources._mnist1d()
    assert len(calls) == 1
    for a, b in zip(first, second):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert np.array_equal(second[0][:, 0, :], made["x"])


def _npz(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


_GOOD = {
    "x": np.zeros((2, 1, 40)),
    "y": np.zeros(2, dtype=np.int64),
    "x_test": np.zeros((1, 1, 40)),
    "y_test": np.zeros(1, dtype=np.int64),
}


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: p.write_bytes(b"not a zip at all"),
        lambda p: p.write_bytes(b""),
        lambda p: _npz(p, **{**_GOOD, "extra": np.zeros(1)}),
        lambda p: _npz(p, **{k: v for k, v in _GOOD.items() if k != "y"}),
        lambda p: _npz(p, **{**_GOOD, "y": np.array([object()], dtype=object)}),  # a pickle
        lambda p: _npz(p, **{**_GOOD, "x": _GOOD["x"].astype(np.float32)}),
        lambda p: _npz(p, **{**_GOOD, "x": np.full((2, 1, 40), np.nan)}),
        lambda p: _npz(p, **{**_GOOD, "y": np.array([0, 10])}),
        lambda p: _npz(p, **{**_GOOD, "y": np.zeros(3, dtype=np.int64)}),
        lambda p: _npz(p, **{**_GOOD, "x_test": np.zeros((1, 1, 39))}),
        lambda p: p.mkdir(),
    ],
    ids=[
        "garbage",
        "empty",
        "extra-key",
        "missing-key",
        "object-array",
        "float32",
        "nan",
        "label-10",
        "length",
        "test-width",
        "a-folder",
    ],
)
def test_a_cache_file_that_does_not_fit_is_regenerated(fake_mnist1d, corrupt):
    made, calls = fake_mnist1d
    path = sources._mnist1d_file()
    path.parent.mkdir(parents=True)
    corrupt(path)
    x, y, xt, yt = sources._mnist1d()
    assert len(calls) == 1 and np.array_equal(x[:, 0, :], made["x"])
    assert np.array_equal(yt, made["y_test"])
    if path.is_file():  # rewritten (a folder in the way is left alone)
        sources._mnist1d_cached.cache_clear()
        assert np.array_equal(sources._mnist1d()[0], x) and len(calls) == 1


def test_an_unwritable_cache_still_gives_the_data(fake_mnist1d, tmp_path, monkeypatch):
    made, calls = fake_mnist1d
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    monkeypatch.setenv("SIGPROP_CACHE_DIR", str(blocker / "sub"))
    x = sources._mnist1d()[0]
    assert np.array_equal(x[:, 0, :], made["x"]) and len(calls) == 1


def test_teacher_tasks():
    a = load_dataset("teacher", seed=7, n_train=500, n_test=100, n_classes=3, in_features=8)
    b = load_dataset("teacher", seed=7, n_train=500, n_test=100, n_classes=3, in_features=8)
    c = load_dataset("teacher", seed=8, n_train=500, n_test=100, n_classes=3, in_features=8)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_train, c.y_train)
    assert a.x_train.shape == (500, 8) and a.n_classes == 3
    assert int(a.y_train.min()) >= 0 and int(a.y_train.max()) <= 2
    reg = load_dataset("teacher", seed=7, n_classes=0, n_train=100, n_test=20)
    assert reg.task == "regression" and reg.y_train.shape == (100, 1)
    assert reg.y_train.dtype == torch.float32 and reg.out_features == 1


def test_npz_round_trip_and_auto_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=rng.normal(size=(60, 3, 4)),
        y_train=np.arange(60) % 3,
        x_test=rng.normal(size=(9, 3, 4)),
        y_test=np.arange(9) % 3,
    )
    ds = load_dataset(f"npz:{path}", flatten=False)
    assert ds.x_train.shape == (60, 3, 4) and ds.x_test.shape == (9, 3, 4) and ds.n_classes == 3
    only_train = tmp_path / "t.npz"
    np.savez(only_train, x_train=rng.normal(size=(50, 2)), y_train=rng.normal(size=50))
    reg = load_dataset(f"npz:{only_train}", test_fraction=0.2)
    assert reg.task == "regression" and reg.x_test.shape == (10, 2) and reg.y_train.shape == (40, 1)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((4, 2))}, "lacks the array 'y_train'"),
        ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(3, int)}, "disagree"),
        ({"x_train": np.full((4, 2), np.nan), "y_train": np.zeros(4, int)}, "NaN"),
        ({"x_train": np.zeros((4, 2)), "y_train": -np.ones(4, int)}, "non-negative"),
        (
            {"x_train": np.zeros((4, 2)), "y_train": np.arange(4) % 2, "x_test": np.zeros((2, 2))},
            "both x_test and y_test",
        ),
        (
            {
                "x_train": np.zeros((4, 2)),
                "y_train": np.arange(4) % 2,
                "x_test": np.zeros((2, 3)),
                "y_test": np.arange(2),
            },
            "x_test samples have shape",
        ),
        ({"x_train": np.array(["a", "b"]), "y_train": np.arange(2)}, "numeric"),
    ],
)
def test_npz_errors_name_the_problem(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(f"npz:{path}")


def test_npz_refuses_pickles_and_missing_files(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1))
    with pytest.raises(ValueError, match="without pickle"):
        load_dataset(f"npz:{path}")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "cifar"}, "unknown dataset"),
        ({"name": "digits", "val_fraction": 1.0}, "val_fraction"),
        ({"name": "digits", "seed": -1}, "seed"),
        ({"name": "digits", "width": 3}, "takes no option"),
        ({"name": "teacher", "widht": 3}, "unknown teacher option"),
        ({"name": "teacher", "n_classes": 1}, "n_classes"),
        ({"name": "teacher", "activation": "swish"}, "activation"),
    ],
)
def test_bad_arguments(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        load_dataset(name, **kwargs)


def test_class_balanced_batch_is_samples_per_class():
    # one implementation: the same draw as sigprop.prune.samples_per_class on the split, and
    # one rule for the generator (None = seed 0, an int = that seed)
    ds = load_dataset("digits", seed=0)
    ref = samples_per_class(ds.x_train, ds.y_train, 3, generator=torch.Generator().manual_seed(7))
    for got in (
        class_balanced_batch(ds, 3, torch.Generator().manual_seed(7)),
        class_balanced_batch(ds, 3, 7),
    ):
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    default = class_balanced_batch(ds, 3)
    assert torch.equal(default[0], class_balanced_batch(ds, 3, 0)[0])
    assert torch.equal(default[0], samples_per_class(ds.x_train, ds.y_train, 3)[0])
    xv, yv = class_balanced_batch(ds, 2, 1, split="test")
    assert bool((ds.x_test == xv[0]).all(dim=1).any())


def test_class_balanced_batch():
    ds = load_dataset("digits", seed=0)
    x, y = class_balanced_batch(ds, 4, torch.Generator().manual_seed(5))
    assert x.shape == (40, 64)
    assert np.array_equal(np.bincount(y.numpy()), np.full(10, 4))
    x2, _ = class_balanced_batch(ds, 4, torch.Generator().manual_seed(5))
    x3, _ = class_balanced_batch(ds, 4, torch.Generator().manual_seed(6))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    # every returned sample is a training sample of the stated class
    for xi, yi in zip(x, y):
        hits = (ds.x_train == xi).all(dim=1)
        assert bool((ds.y_train[hits] == yi).all()) and bool(hits.any())
    with pytest.raises(ValueError, match="fewer than k=1000"):
        class_balanced_batch(ds, 1000)
    with pytest.raises(ValueError, match="classification"):
        class_balanced_batch(load_dataset("teacher", n_classes=0, n_train=10, n_test=5), 1)


@given(
    n=st.integers(1, 200),
    batch_size=st.integers(1, 64),
    seed=st.integers(0, 2**31),
    drop=st.booleans(),
)
def test_minibatches_visit_every_sample_once(n, batch_size, seed, drop):
    x = torch.arange(n, dtype=torch.float32)[:, None]
    y = torch.arange(n)
    seen = []
    for xb, yb in minibatches(
        x, y, batch_size, generator=torch.Generator().manual_seed(seed), drop_last=drop
    ):
        assert torch.equal(xb[:, 0].long(), yb)
        assert xb.shape[0] == batch_size or not drop
        seen.append(yb)
    got = torch.cat(seen).sort().values if seen else torch.empty(0, dtype=torch.long)
    expected = n - n % batch_size if drop else n
    assert got.numel() == expected and got.unique().numel() == expected


def test_minibatches_needs_a_generator_to_shuffle():
    with pytest.raises(ValueError, match="Generator"):
        next(minibatches(torch.zeros(3, 1), torch.zeros(3), 2))
    assert batches is minibatches  # the earlier name keeps working
