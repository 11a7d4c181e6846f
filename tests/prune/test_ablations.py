"""Frankle et al. 2021 ablations: each changes what it should and nothing else."""

import copy

import pytest
import torch
from torch import nn

import sigprop.prune as sp


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    )
    sp.attach_masks(model)
    g = torch.Generator().manual_seed(1)
    return model, (torch.randn(16, 1, 6, 6, generator=g), torch.arange(16) % 10)


def _weights(model):
    return {n: m.weight.detach().clone() for n, m in sp.prunable_layers(model).items()}


@pytest.mark.parametrize("method", ["magnitude", "snip", "synflow"])
def test_ablations_change_only_what_they_should(method):
    model, data = _model()
    before = copy.deepcopy(model.state_dict())
    kw = {"rounds": 5} if method == "synflow" else {}
    res = sp.ablations(model, method, 0.2, data, generator=3, **kw)
    for k, v in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k])
    orig = res["original"]
    w0 = _weights(model)
    # shuffle: each layer keeps its count, the mask moves, the weights are the initial ones
    sh = res["shuffle"]
    moved = False
    for n in orig.masks:
        assert int(sh.masks[n].sum()) == int(orig.masks[n].sum())
        moved |= not torch.equal(sh.masks[n], orig.masks[n])
        w = sp.prunable_layers(sh.model)[n].weight.detach()
        assert torch.equal(w, w0[n] * sh.masks[n])
    assert moved
    # reinit: the same mask, new kept values drawn from the layer's own initial values
    ri = res["reinit"]
    for n in orig.masks:
        assert torch.equal(ri.masks[n], orig.masks[n])
        w = sp.prunable_layers(ri.model)[n].weight.detach()
        kept = orig.masks[n]
        assert not torch.equal(w[kept], w0[n][kept])
        assert torch.equal(w[~kept], torch.zeros_like(w[~kept]))
        assert set(w[kept].tolist()) <= set(w0[n].reshape(-1).tolist())
    # biases and everything else are the initial model's
    for variant in (sh, ri):
        sd = variant.model.state_dict()
        for k, v in before.items():
            if not (k.endswith(".weight") or k.endswith("weight_mask")):
                assert torch.equal(sd[k], v)
    # invert: the same global count; every kept weight scores below every pruned one
    inv = res["invert"]
    assert inv.report.kept == orig.report.kept
    if method == "magnitude":
        scores = sp.magnitude_scores(model)
        lo_kept = max(float(scores[n][inv.masks[n]].max()) for n in scores)
        hi_pruned = min(float(scores[n][~inv.masks[n]].min()) for n in scores)
        assert lo_kept <= hi_pruned


def test_inverted_layerwise_keeps_each_layer_count_and_lowest_scores():
    model, data = _model()
    res = sp.ablations(model, "snip", 0.3, data, kinds=("invert",), scope="layer")
    scores = sp.snip_scores(copy.deepcopy(model), data)
    for n, s in scores.items():
        inv, orig = res["invert"].masks[n], res["original"].masks[n]
        assert int(inv.sum()) == int(orig.sum()) == round(0.3 * s.numel())
        assert float(s[inv].max()) <= float(s[~inv].min())


def test_ablations_are_reproducible_and_validate():
    model, data = _model()
    a = sp.ablations(model, "random", 0.2, kinds=("shuffle", "reinit"), generator=5)
    b = sp.ablations(model, "random", 0.2, kinds=("shuffle", "reinit"), generator=5)
    for kind in ("original", "shuffle", "reinit"):
        for n in a[kind].masks:
            assert torch.equal(a[kind].masks[n], b[kind].masks[n])
    with pytest.raises(ValueError, match="kinds"):
        sp.ablations(model, "random", 0.2, kinds=("flip",))
    with pytest.raises(ValueError, match="no scores to invert"):
        sp.ablations(model, "kstarts", 0.2, data)
    assert set(a.to_dict()["variants"]) == {"shuffle", "reinit"}
