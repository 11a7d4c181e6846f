"""Conventions made explicit: the kept-count rule of the reference code, and train/eval mode."""

import copy

import pytest
import torch
from torch import nn

import sigprop.prune as sp


def _official_global_mask(scores, density):
    """ganguli-lab/Synaptic-Flow ``Pruners/pruners.py`` ``_global_mask``, re-implemented:
    the k = int((1 - d) N) smallest scores over *all* weights (pruned ones score 0) and every
    score equal to the k-th are pruned."""
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = int((1.0 - density) * flat.numel())
    thr = torch.kthvalue(flat, k).values
    return {n: s > thr for n, s in scores.items()}


@pytest.mark.parametrize("density", [0.5, 0.1, 0.037, 0.01])
def test_official_counting_gives_the_reference_mask(density):
    g = torch.Generator().manual_seed(0)
    scores = {
        "a": torch.rand(37, 11, generator=g, dtype=torch.float64),
        "b": torch.rand(503, generator=g, dtype=torch.float64),
    }
    ours = sp.select(scores, density, counting="official")
    ref = _official_global_mask(scores, density)
    for n in scores:
        assert torch.equal(ours[n], ref[n])
    n_all = sum(s.numel() for s in scores.values())
    assert abs(sp.kept_count(density, n_all) - sp.kept_count(density, n_all, "official")) <= 1


def _mlp(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 5)
    ).double()
    sp.attach_masks(model)
    return model


def _official_synflow(model, density, rounds):
    """Synaptic-Flow's ``prune_loop`` (exponential schedule, global scope, eval mode) with its
    ``SynFlow.score`` (|θ| for every state_dict entry, input of ones, scores |θ ⊙ ∂R/∂θ|),
    re-implemented on a copy of ``model``."""
    net = copy.deepcopy(model).eval()
    layers = sp.prunable_layers(net)
    with torch.no_grad():
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    for m in layers.values():
        m.weight_mask.fill_(1.0)
    for r in range(rounds):
        weights = [m.weight for m in layers.values()]
        out = net(torch.ones(1, 20, dtype=torch.float64)).sum()
        grads = torch.autograd.grad(out, weights)
        scores = {n: (g * w).abs().detach() for (n, m), w, g in zip(layers.items(), weights, grads)}
        d = density ** ((r + 1) / rounds)
        masks = _official_global_mask(scores, d)
        for n, m in layers.items():
            m.weight_mask.copy_(masks[n])
    return {n: m.weight_mask != 0 for n, m in layers.items()}


def test_synflow_with_official_counting_reproduces_the_reference_loop():
    model = _mlp()
    ref = _official_synflow(model, 0.05, 20)
    work = copy.deepcopy(model)
    sp.prune_at_init(work, "synflow", 0.05, rounds=20, counting="official", progress=False)
    for n, mask in sp.current_masks(work).items():
        assert torch.equal(mask, ref[n])
    # the default rule keeps round(d N): at most one weight per round away
    n_all = sum(m.numel() for m in ref.values())
    for d in sp.schedule(0.05, 20):
        assert abs(sp.kept_count(d, n_all) - sp.kept_count(d, n_all, "official")) <= 1


def _bn_net():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 3),
    )
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(4.0)
    sp.attach_masks(model)
    g = torch.Generator().manual_seed(1)
    return model, (torch.randn(6, 3, 4, 4, generator=g), torch.arange(6) % 3)


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
def test_mode_is_selectable_and_restored(method):
    model, data = _bn_net()
    model.train()
    model[1].eval()  # a mixed state the call must restore
    flags = [m.training for m in model.modules()]
    train = sp.compute_scores(model, method, data, mode="train")
    assert [m.training for m in model.modules()] == flags
    evals = sp.compute_scores(model, method, data, mode="eval")
    assert [m.training for m in model.modules()] == flags
    assert any(not torch.allclose(train[n], evals[n]) for n in train)
    default = sp.compute_scores(model, method, data)
    expected = evals if method == "synflow" else sp.compute_scores(model, method, data, mode=None)
    for n in default:
        assert torch.equal(default[n], expected[n])
    with pytest.raises(ValueError, match="mode"):
        sp.compute_scores(model, method, data, mode="inference")
