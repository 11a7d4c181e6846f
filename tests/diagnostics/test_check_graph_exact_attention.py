"""Exact weight-level effective sparsity through self-attention (``exact_attention``).

The oracle is independent of the boolean rules: the real network in float64 with every
bias, class token and position embedding zero (constants create no path), the activations
linearised (a GELU far in its negative tail has a derivative below any threshold), and the
kept weights drawn with random signs and magnitudes U(0.5, 1.5)/√(kept fan-in) so that
neither LayerNorm nor the softmax saturates. A weight is effective iff it is kept and
``∂⟨r, f(x)⟩/∂w`` is non-zero for some of a few Gaussian inputs ``x`` and projections ``r``.
Structural zeros are exact zeros or float64 round-off of the softmax's backward pass (a
single attended key: 1·(g − 1·g)), measured at ~1e-17 of the largest gradient, while the
smallest genuine gradient in these nets is above 1e-8 of it: the threshold 1e-11 separates
the two by three orders of magnitude either side.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from sigprop.diagnostics.collapse import check_collapse
from sigprop.diagnostics.collapse.exact import effective_masks
from sigprop.diagnostics.graph import capture

from .helpers import AttentionHead

_ROUNDOFF = 1e-11


class _LM(nn.Module):
    """An embedding, two encoder layers and a head; optionally causal with the mask as a
    buffer, and the head reading the first token only (which then attends to itself)."""

    def __init__(self, norm_first: bool = False, causal: bool = False, first: bool = False):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            16, 4, 32, dropout=0.0, batch_first=True, activation="gelu", norm_first=norm_first
        )
        final = nn.LayerNorm(16) if norm_first else None
        self.emb = nn.Linear(8, 16)
        self.enc = nn.TransformerEncoder(layer, 2, norm=final, enable_nested_tensor=False)
        self.head = nn.Linear(16, 8)
        self.causal, self.first = causal, first
        self.register_buffer("causal_mask", torch.triu(torch.full((6, 6), float("-inf")), 1))

    def forward(self, x):
        h = self.enc(self.emb(x), mask=self.causal_mask) if self.causal else self.enc(self.emb(x))
        return self.head(h[:, 0] if self.first else h)


def _sparse_(model: nn.Module, density: float, seed: int) -> dict[str, torch.Tensor]:
    """The oracle's weights (module doc), in place; the weight tensors by layer name."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                if pname.endswith("bias") or pname in ("cls_token", "pos_embed"):
                    p.zero_()
                elif p.ndim >= 2 and pname in ("weight", "in_proj_weight"):
                    keep = torch.rand(p.shape, generator=g) < density
                    sign = 2.0 * (torch.rand(p.shape, generator=g) < 0.5) - 1.0
                    value = keep * sign * (0.5 + torch.rand(p.shape, generator=g))
                    fan = keep.flatten(1).sum(1).clamp(min=1).to(p.dtype).sqrt()
                    p.copy_(value / fan.view(-1, *[1] * (p.ndim - 1)))
                    weights[name + (".in_proj" if pname == "in_proj_weight" else "")] = p
    return weights


def _oracle(model: nn.Module, shape, weights, inputs: int = 2) -> dict[str, torch.Tensor]:
    eff = {k: torch.zeros(w.shape, dtype=torch.bool) for k, w in weights.items()}
    g = torch.Generator().manual_seed(5)
    for _ in range(inputs):
        model.zero_grad()
        y = model(torch.randn(1, *shape, generator=g, dtype=torch.float64))
        (y * torch.randn(y.shape, generator=g, dtype=torch.float64)).sum().backward()
        top = max(float(w.grad.abs().max()) for w in weights.values())
        for k, w in weights.items():
            eff[k] |= (w.grad.abs() > _ROUNDOFF * top) & (w != 0)
    return eff


def _linearised(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            module.activation = lambda x: x
        if hasattr(module, "act") and isinstance(module.act, nn.GELU):
            module.act = nn.Identity()
    return model


def _assert_equal_to_oracle(model, shape, density, seed):
    weights = _sparse_(model, density, seed)
    masks, reason = effective_masks(capture(model, input_shape=shape))
    assert reason is None, reason
    oracle = _oracle(_linearised(model), shape, weights)
    assert set(masks) == set(oracle)
    for name in oracle:
        assert torch.equal(masks[name], oracle[name]), (name, masks[name].sum(), oracle[name].sum())
    return masks


@pytest.mark.parametrize(
    ("norm_first", "causal", "first", "density", "seed"),
    [
        (False, False, False, 0.03, 0),
        (False, False, False, 0.3, 1),
        (True, False, False, 0.1, 2),
        (False, True, True, 0.1, 0),
        (True, True, True, 0.3, 1),
    ],
)
def test_encoder_stack_equals_the_gradient_oracle(norm_first, causal, first, density, seed):
    torch.manual_seed(seed)  # test-side seeding of torch's default init
    model = _LM(norm_first, causal, first).double().eval()
    masks = _assert_equal_to_oracle(model, (6, 8), density, seed)
    query_key = masks["enc.layers.1.self_attn.in_proj"][:32]  # q and k rows of the last layer
    if causal and first:  # the first token attends to itself only: scores never matter
        assert not query_key.any()
    elif density >= 0.1:
        assert query_key.any()


@pytest.mark.parametrize(("density", "seed"), [(0.01, 0), (0.05, 1)])
def test_timm_vit_equals_the_gradient_oracle(density, seed):
    from sigprop.nn.arch import build_model

    torch.manual_seed(seed)
    model = build_model(
        "timm:vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10, depth=3
    )
    _assert_equal_to_oracle(model.double().eval(), (3, 32, 32), density, seed)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_module_equals_the_oracle(batch_first):
    torch.manual_seed(0)
    # sequence-first: the example (1, 5, 16) is 5 sequences of one token each
    masks = _assert_equal_to_oracle(AttentionHead(batch_first).double().eval(), (5, 16), 0.2, 3)
    assert bool(masks["a.in_proj"][:32].any()) is batch_first  # q, k: one key, no effect


def test_pruned_stack_report_is_exact_and_removal_is_harmless():
    torch.manual_seed(0)
    model = _LM().double().eval()
    params = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    params += [(layer.self_attn, "in_proj_weight") for layer in model.enc.layers]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.9)
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if pname.endswith("bias"):
                with torch.no_grad():
                    p.zero_()
    report = check_collapse(model, input_shape=(6, 8))
    assert report.effective_exact, report.notes
    assert [layer.name for layer in report.layers][:3] == [
        "emb",
        "enc.layers.0.self_attn.in_proj",
        "enc.layers.0.self_attn.out_proj",
    ]
    # LayerNorm mixes the features of a token at channel level too: the channel-level count
    # bounds the exact one from above, layer by layer
    for layer in report.layers:
        assert layer.effective_kept <= layer.channel_effective_kept, layer.name
    # zeroing every weight called ineffective leaves the output unchanged to the bit
    masks, _ = effective_masks(capture(model, input_shape=(6, 8)))
    x = torch.randn(4, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(x)
        for module, pname in params:
            name = next(n for n, m in model.named_modules() if m is module)
            key = name + (".in_proj" if pname == "in_proj_weight" else "")
            getattr(module, pname + "_mask").mul_(masks[key])
        after = model(x)  # the pruning hooks recompute the weights from the masks
    assert torch.equal(after, before)
    assert report.kept - report.effective_kept > 0


def test_masks_outside_the_vocabulary_keep_the_channel_level_count_and_say_why():
    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.MultiheadAttention(16, 4, batch_first=True)
            # (batch, keys) for the batch of 2 the graph is traced with
            self.register_buffer("pad", torch.tensor([[False, False, True, True, True]] * 2))

        def forward(self, x):
            return self.a(x, x, x, key_padding_mask=self.pad)[0]

    report = check_collapse(Padded(), input_shape=(5, 16))
    assert not report.effective_exact
    assert any("key padding mask" in note for note in report.notes), report.notes
