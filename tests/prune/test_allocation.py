"""Layer-wise allocations: closed forms (uniform, ERK with its redistribution, smart ratios)
and exact kept counts, through select and prune_at_init."""

import math

import pytest
import torch
from torch import nn

import sigprop.prune as sp
from sigprop.prune import allocation as A

SHAPES = {
    "conv1": (16, 3, 3, 3),
    "conv2": (32, 16, 3, 3),
    "conv3": (64, 32, 3, 3),
    "fc": (10, 256),
}
SIZES = {n: math.prod(s) for n, s in SHAPES.items()}
N = sum(SIZES.values())


def test_uniform_is_the_density_and_round_per_layer():
    assert A.layer_densities("uniform", SHAPES, 0.1) == dict.fromkeys(SHAPES, 0.1)
    counts = A.layer_counts("uniform", SHAPES, 0.1)
    assert counts == {n: round(0.1 * SIZES[n]) for n in SHAPES}
    official = A.layer_counts("uniform", SHAPES, 0.1, counting="official")
    assert official == {n: SIZES[n] - int(0.9 * SIZES[n]) for n in SHAPES}


def test_erk_closed_form_without_capping():
    d = 0.05
    dens = A.layer_densities("erk", SHAPES, d)
    raw = {n: sum(SHAPES[n]) / SIZES[n] for n in SHAPES}
    eps = d * N / sum(raw[n] * SIZES[n] for n in SHAPES)
    assert all(eps * raw[n] < 1 for n in SHAPES)  # no layer is capped at this density
    for n in SHAPES:
        # one product and a division of exact float64 values: round-off 1e-12
        assert dens[n] == pytest.approx(eps * raw[n], rel=1e-12)
    assert sum(dens[n] * SIZES[n] for n in SHAPES) == pytest.approx(d * N, rel=1e-12)


def test_erk_redistributes_when_a_layer_would_exceed_one():
    d = 0.5
    raw = {n: sum(SHAPES[n]) / SIZES[n] for n in SHAPES}
    eps0 = d * N / sum(raw[n] * SIZES[n] for n in SHAPES)
    assert eps0 * raw["conv1"] > 1  # the small first layer would be over-full
    dens = A.layer_densities("erk", SHAPES, d)
    dense = {n for n in SHAPES if dens[n] == 1.0}
    assert "conv1" in dense and len(dense) < len(SHAPES)
    # the fixed point: ε from the budget left by the dense layers; every dense layer would
    # exceed 1 at that ε, every other layer has density ε·raw < 1
    rest = [n for n in SHAPES if n not in dense]
    eps = (d * N - sum(SIZES[n] for n in dense)) / sum(raw[n] * SIZES[n] for n in rest)
    assert all(eps * raw[n] >= 1 for n in dense)
    for n in rest:
        assert dens[n] == pytest.approx(eps * raw[n], rel=1e-12) and dens[n] < 1
    assert sum(dens[n] * SIZES[n] for n in SHAPES) == pytest.approx(d * N, rel=1e-12)


def test_smart_ratios_quadratic_law_and_classifier():
    d = 0.05
    dens = A.layer_densities("smart_ratios", SHAPES, d)
    assert dens["fc"] == 0.3
    L = len(SHAPES)
    convs = ["conv1", "conv2", "conv3"]
    law = {n: (L - i + 1) ** 2 + (L - i + 1) for i, n in enumerate(convs, start=1)}
    ratio = dens["conv1"] / law["conv1"]
    for n in convs:
        assert dens[n] == pytest.approx(ratio * law[n], rel=1e-12)
    assert sum(dens[n] * SIZES[n] for n in SHAPES) == pytest.approx(d * N, rel=1e-12)


@pytest.mark.parametrize("kind", ["uniform", "erk", "smart_ratios"])
@pytest.mark.parametrize("d", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("counting", ["round", "official"])
def test_counts_are_exact_and_within_one(kind, d, counting):
    if kind == "smart_ratios" and d * N < 0.3 * SIZES["fc"]:
        with pytest.raises(ValueError, match="classifier alone"):
            A.layer_counts(kind, SHAPES, d, counting=counting)
        return
    counts = A.layer_counts(kind, SHAPES, d, counting=counting)
    dens = A.layer_densities(kind, SHAPES, d)
    for n in SHAPES:
        assert 0 <= counts[n] <= SIZES[n]
        assert abs(counts[n] - dens[n] * SIZES[n]) <= 1
    if kind != "uniform":
        assert sum(counts.values()) == sp.kept_count(d, N, counting)


def _convnet():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 10),
    )
    sp.attach_masks(model)
    x = torch.randn(8, 3, 8, 8, generator=g)
    return model, (x, torch.arange(8) % 10)


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow"])
@pytest.mark.parametrize("kind", ["uniform", "erk", "smart_ratios"])
def test_every_scoring_method_takes_every_allocation(method, kind):
    model, data = _convnet()
    shapes = {n: tuple(m.weight.shape) for n, m in sp.prunable_layers(model).items()}
    expected = sp.layer_counts(kind, shapes, 0.1)
    kw = {"rounds": 5} if method == "synflow" else {}
    res = sp.prune_at_init(
        model, method, 0.1, data, allocation=kind, generator=0, progress=False, **kw
    )
    got = {layer.name: layer.kept for layer in res.report.layers}
    assert got == expected
    assert res.scope == "layer" and res.info["allocation"] == kind


def test_allocation_mapping_and_bad_input():
    model, data = _convnet()
    names = list(sp.prunable_layers(model))
    res = sp.prune_at_init(
        model, "magnitude", 0.2, data, allocation=dict.fromkeys(names, 0.2), progress=False
    )
    for layer in res.report.layers:
        assert layer.kept == round(0.2 * layer.total)
    with pytest.raises(ValueError, match="unknown allocation"):
        sp.prune_at_init(_convnet()[0], "magnitude", 0.1, allocation="lamp", progress=False)
    with pytest.raises(ValueError, match="scope='layer'"):
        sp.prune_at_init(
            _convnet()[0], "magnitude", 0.1, allocation="erk", scope="global", progress=False
        )
    with pytest.raises(ValueError, match="missing"):
        sp.prune_at_init(_convnet()[0], "magnitude", 0.1, allocation={names[0]: 0.1})
