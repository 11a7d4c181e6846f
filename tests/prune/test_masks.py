"""Shared masking: exact counts, deterministic ties, protection, schedules, apply, reports."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from sigprop.nn import MaskedLinear
from sigprop.prune import masks as M
from sigprop.prune.topk import topk_masks


def _reference_select(scores: dict, k: int) -> dict:
    """Global top-k by (score descending, flat index ascending), by a full numpy sort."""
    flat = np.concatenate([s.reshape(-1).numpy() for s in scores.values()])
    order = np.lexsort((np.arange(flat.size), -flat))  # last key is the primary one
    keep = np.zeros(flat.size, dtype=bool)
    keep[order[:k]] = True
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = torch.from_numpy(keep[start : start + s.numel()].reshape(tuple(s.shape)))
        start += s.numel()
    return out


def _net(seed=0):
    torch.manual_seed(seed)  # tests may seed; the library never does
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3))
    M.attach_masks(model)
    return model


shapes = st.lists(
    st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4
)


@given(shapes=shapes, density=st.floats(0.01, 1.0), seed=st.integers(0, 2**31 - 1))
def test_global_select_exact_count_and_matches_reference_ties(shapes, density, seed):
    g = torch.Generator().manual_seed(seed)
    # integer scores from a small range force many ties
    scores = {
        f"l{i}.weight": torch.randint(0, 4, s, generator=g).double() for i, s in enumerate(shapes)
    }
    total = sum(math.prod(s) for s in shapes)
    k = round(density * total)
    if k == 0:
        with pytest.raises(ValueError, match="keeps no weight"):
            M.select(scores, density)
        return
    masks = M.select(scores, density)
    assert sum(int(m.sum()) for m in masks.values()) == k
    ref = _reference_select(scores, k)
    for name in scores:
        assert masks[name].dtype == torch.bool and masks[name].shape == scores[name].shape
        assert torch.equal(masks[name], ref[name])


@given(shapes=shapes, density=st.floats(0.01, 1.0), seed=st.integers(0, 2**31 - 1))
def test_layer_select_exact_count_per_layer(shapes, density, seed):
    g = torch.Generator().manual_seed(seed)
    scores = {f"l{i}": torch.randint(0, 3, s, generator=g).float() for i, s in enumerate(shapes)}
    masks = M.select(scores, density, scope="layer")
    for name, s in scores.items():
        assert int(masks[name].sum()) == round(density * s.numel())
        assert torch.equal(
            masks[name], _reference_select({name: s}, round(density * s.numel()))[name]
        )


@given(shapes=shapes, k=st.integers(0, 60), seed=st.integers(0, 2**31 - 1))
def test_torch_and_numpy_selection_backends_agree(shapes, k, seed):
    # the torch backend (used for GPU tensors) run on CPU against the numpy one
    g = torch.Generator().manual_seed(seed)
    flats = [torch.randint(0, 3, (math.prod(s),), generator=g).float() for s in shapes]
    elig = [torch.rand(f.shape, generator=g) < 0.7 if i % 2 else None for i, f in enumerate(flats)]
    k = min(k, sum(int(f.numel() if e is None else e.sum()) for f, e in zip(flats, elig)))
    a = topk_masks(flats, k, elig, use_numpy=True)
    b = topk_masks(flats, k, elig, use_numpy=False)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert sum(int(x.sum()) for x in a) == k
    assert all(not (x & ~e).any() for x, e in zip(a, elig) if e is not None)


def test_large_input_path_is_exact_with_ties():
    # 127000 entries, 50 distinct values in the first layer: the cut falls inside a block
    # of ~2400 ties, resolved by index across the two layers.
    g = torch.Generator().manual_seed(1)
    scores = {
        "a": torch.randint(0, 50, (300, 400), generator=g).double(),
        "b": torch.rand(7000, generator=g, dtype=torch.float64),
    }
    for density in (0.001, 0.37, 0.5, 0.999):
        k = round(density * 127000)
        masks = M.select(scores, density)
        ref = _reference_select(scores, k)
        assert all(torch.equal(masks[n], ref[n]) for n in scores)


def test_ties_are_deterministic_first_indices_win():
    scores = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    masks = M.select(scores, 0.5)  # 5 of 10, all tied: the first five flat indices
    assert masks["a"].reshape(-1).tolist() == [True] * 5 + [False]
    assert masks["b"].tolist() == [False] * 4
    again = M.select(scores, 0.5)
    assert all(torch.equal(masks[n], again[n]) for n in scores)


@given(
    density=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**31 - 1),
    scope=st.sampled_from(["global", "layer"]),
)
def test_current_mask_is_never_revived(density, seed, scope):
    g = torch.Generator().manual_seed(seed)
    scores = {"a": torch.rand(5, 6, generator=g), "b": torch.rand(9, generator=g)}
    current = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    current["a"][:, :2] = False  # 10 of 30 pruned already
    current["b"][::3] = False  # 3 of 9
    avail_a, avail_b = 20, 6
    if scope == "global":
        ok = round(density * 39) <= avail_a + avail_b
    else:
        ok = round(density * 30) <= avail_a and round(density * 9) <= avail_b
    if not ok:
        with pytest.raises(ValueError, match="revives|unpruned"):
            M.select(scores, density, scope=scope, current=current)
        return
    masks = M.select(scores, density, scope=scope, current=current)
    for n in scores:
        assert not (masks[n] & ~current[n]).any()


def test_min_per_layer_protects_a_layer_and_keeps_the_total():
    scores = {"big": torch.arange(1.0, 101.0), "small": torch.full((10,), 1e-6)}
    plain = M.select(scores, 0.1)
    assert int(plain["small"].sum()) == 0  # global top-k collapses the small-score layer
    protected = M.select(scores, 0.1, min_per_layer=2)
    assert int(protected["small"].sum()) == 2
    assert int(protected["big"].sum()) == 9  # 11 kept in total = round(0.1 * 110)
    assert protected["big"][-9:].all()  # the best 9 of the big layer
    with pytest.raises(ValueError, match="min_per_layer"):
        M.select(scores, 0.01, min_per_layer=2)  # 1 kept < 4 reserved


def test_dense_layers_are_kept_and_excluded_from_budget():
    scores = {"first": torch.zeros(3, 3), "rest": torch.arange(20.0)}
    masks = M.select(scores, 0.25, dense=["first"])
    assert masks["first"].all()
    assert int(masks["rest"].sum()) == 5 and masks["rest"][-5:].all()
    with pytest.raises(ValueError, match="not among"):
        M.select(scores, 0.25, dense=["nope"])


def test_schedule_values():
    s = M.schedule(0.01, 100)
    assert len(s) == 100 and s[-1] == 0.01
    assert s[0] == pytest.approx(0.01 ** (1 / 100), rel=1e-15)  # float rounding only
    assert all(a > b for a, b in zip(s, s[1:]))
    lin = M.schedule(0.2, 4, "linear")
    assert lin == pytest.approx([0.8, 0.6, 0.4, 0.2], abs=1e-15)  # float rounding only
    started = M.schedule(0.05, 2, start=0.5)  # from a model already at density 0.5
    assert started == pytest.approx([0.5 * 0.1**0.5, 0.05], rel=1e-15)  # round-off only
    with pytest.raises(ValueError, match="above the starting density"):
        M.schedule(0.6, 2, start=0.5)
    with pytest.raises(ValueError, match="schedule"):
        M.schedule(0.2, 4, "cosine")
    with pytest.raises(ValueError, match="rounds"):
        M.schedule(0.2, 0)


@pytest.mark.parametrize(
    "bad", [0.0, -0.1, 1.5, float("nan"), "a", "0.5", None, True, np.bool_(True), torch.tensor(0.5)]
)
def test_density_validation(bad):
    # the same rule as sigprop.nn's layers (one check_density): bools and strings are
    # rejected even when float() would accept them
    with pytest.raises(ValueError, match="density"):
        M.select({"a": torch.rand(4)}, bad)
    with pytest.raises(ValueError, match="density"):
        MaskedLinear(4, 4, density=bad)


@pytest.mark.parametrize("good", [0.5, np.float32(0.5), np.float64(0.5), 1, np.int64(1)])
def test_density_accepts_numpy_scalars(good):
    # select and the masked layers accept the same real numbers and keep the same count
    kept = int(M.select({"a": torch.rand(10)}, good)["a"].sum())
    assert kept == round(float(good) * 10)
    assert MaskedLinear(5, 2, density=good).kept == kept


def test_select_rejects_bad_scores():
    with pytest.raises(ValueError, match="NaN"):
        M.select({"a": torch.tensor([1.0, float("nan")])}, 0.5)
    with pytest.raises(ValueError, match="inf"):
        M.select({"a": torch.tensor([1.0, float("inf")])}, 0.5)
    with pytest.raises(ValueError, match="non-empty"):
        M.select({}, 0.5)
    with pytest.raises(ValueError, match="scope"):
        M.select({"a": torch.rand(4)}, 0.5, scope="channel")


def test_apply_writes_masks_and_zeroes_weights():
    model = _net()
    masks = M.select({n: m.weight.abs() for n, m in M.prunable_layers(model).items()}, 0.3)
    M.apply(model, masks)
    for n, m in M.prunable_layers(model).items():
        assert torch.equal(m.weight_mask != 0, masks[n])
        assert (m.weight[~masks[n]] == 0).all()
    report = M.density_report(model)
    assert report.kept == round(0.3 * report.total) and report.total == 6 * 8 + 8 * 5 + 5 * 3
    assert [layer.name for layer in report.layers] == ["0.weight", "2.weight", "4.weight"]
    json.dumps(report.to_dict())


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(8, 5), "shape"),
        (torch.full((8, 6), 0.5), "not binary"),
        (torch.full((8, 6), float("nan")), "NaN"),
        ("ones", "torch.Tensor"),
    ],
)
def test_apply_rejects_bad_masks_and_changes_nothing(mask, message):
    model = _net()
    before = copy.deepcopy(model.state_dict())
    good = torch.zeros(5, 8)
    with pytest.raises(ValueError, match=message) as err:
        M.apply(model, {"2.weight": good, "0.weight": mask})
    assert "0.weight" in str(err.value)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_apply_rejects_unknown_layer_and_model_without_masks():
    with pytest.raises(ValueError, match="not a prunable weight"):
        M.apply(_net(), {"9.weight": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="attach_masks"):
        M.density_report(nn.Sequential(nn.Linear(2, 2)))


def test_attached_masks_hold_through_sgd_and_deepcopy():
    model = _net()
    M.apply(
        model,
        M.select(
            {
                n: torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(3))
                for n, m in M.prunable_layers(model).items()
            },
            0.4,
            scope="layer",
        ),
    )
    masks = M.current_masks(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for n, m in M.prunable_layers(model).items():  # masked gradients: nothing revived
        assert (m.weight.grad[~masks[n]] == 0).all()
        assert (m.weight[~masks[n]] == 0).all() and m.weight[masks[n]].ne(0).all()
    clone = copy.deepcopy(model)
    M.apply(clone, {"0.weight": torch.zeros(8, 6)})
    with torch.no_grad():
        clone[0].weight.add_(1.0)  # the clone's hook must use the clone's own mask
    assert torch.equal(clone(x), clone(x * 0))  # first layer fully pruned: input ignored
    nn.functional.cross_entropy(clone(x), y).backward()
    assert (clone[0].weight.grad == 0).all() and (clone[2].weight.grad != 0).any()
    assert not torch.equal(model(x), model(x * 0))


@pytest.mark.parametrize("change", ["in_place", "new_tensor"])
def test_a_dense_mask_skips_gradient_masking_until_the_mask_changes(change):
    # an all-ones mask leaves gradients as autograd made them (no multiply); a mask pruned
    # after the forward pass -- in place or replaced by a new tensor -- is honoured by the
    # very next backward, with no forward in between to rescan it
    torch.manual_seed(0)
    model = _net()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    loss = nn.functional.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, [model[0].weight], retain_graph=True)
    assert (g != 0).all()
    keep = torch.rand(model[0].weight.shape) < 0.5
    if change == "in_place":
        model[0].weight_mask.copy_(keep)
    else:
        model[0].weight_mask = keep.float()
    (g2,) = torch.autograd.grad(loss, [model[0].weight])
    assert torch.equal(g2, g * keep)


def test_compact_dct_layers_are_refused_not_skipped():
    """A compact-storage DCT layer has a fixed support: pruning a model that mixes it with
    prunable layers must say so instead of silently leaving it out."""

    from sigprop.nn import DCTPlusSparseLinear, MaskedLinear
    from sigprop.prune import prune_at_init

    model = nn.Sequential(
        MaskedLinear(8, 8, generator=0),
        DCTPlusSparseLinear(8, 8, density=0.5, storage="compact", generator=1),
    )
    with pytest.raises(ValueError, match="to_dense_storage"):
        prune_at_init(model, "random", 0.5, generator=torch.Generator().manual_seed(0))
    model[1].to_dense_storage()
    prune_at_init(model, "random", 0.5, generator=torch.Generator().manual_seed(0))
