"""jacobian_spectrum on graphs that are not chains: the linearised-graph route against
autograd, the batched Lanczos quadrature, explicit routes and the choice by cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sigprop.diagnostics import jacobian_spectrum
from sigprop.diagnostics.graph import capture
from sigprop.diagnostics.jacobian import _exact_is_cheaper
from sigprop.diagnostics.jacobian.graph import LinearisedGraph, linearisable
from sigprop.nn import MaskedConv2d

F64 = torch.float64


class _Block(nn.Module):
    """conv-BN-ReLU-conv-BN + shortcut, then a concatenation and pooling: every kind the
    linearised graph handles (eval mode)."""

    def __init__(self, c: int, gen: torch.Generator) -> None:
        super().__init__()
        self.c1 = MaskedConv2d(c, c, 3, padding=1, dtype=F64)
        self.b1 = nn.BatchNorm2d(c, dtype=F64)
        self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False, dtype=F64)
        self.b2 = nn.BatchNorm2d(c, dtype=F64)
        self.gate = nn.Parameter(torch.rand(1, c, 1, 1, generator=gen, dtype=F64))
        with torch.no_grad():
            for bn in (self.b1, self.b2):
                bn.running_mean.normal_(generator=gen)
                bn.running_var.uniform_(0.5, 2.0, generator=gen)
                bn.weight.normal_(generator=gen)
            self.c1.weight_mask.bernoulli_(0.5, generator=gen)

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        y = y * self.gate + x  # a product with a parameter, a residual sum
        return torch.cat([nn.functional.gelu(y), x / 2.0], dim=1)


def _net(seed: int = 0, classes: int = 5) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # test-side seeding only: layers draw their init from it
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=F64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, padding=1),
        _Block(4, gen),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, classes, dtype=F64),
    )
    return net.eval()


def _autograd_singular_values(model, x):
    return np.stack(
        [
            torch.linalg.svdvals(
                torch.autograd.functional.jacobian(
                    lambda v: model(v[None])[0].reshape(-1), xi
                ).reshape(-1, xi.numel())
            ).numpy()
            for xi in x
        ]
    )


def test_linearised_graph_is_the_jacobian():
    model = _net()
    x = torch.randn(3, 2, 6, 6, dtype=F64)
    g = capture(model, x)
    assert linearisable(g) is None
    for xi in x:
        lin = LinearisedGraph(g, xi[None])
        t = torch.randn(4, 2, 6, 6, dtype=F64)
        ref = torch.stack([torch.func.jvp(model, (xi[None],), (ti[None],))[1][0] for ti in t])
        got, ref = lin.forward(t).detach(), ref.detach()
        assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize("classes", [5, 200])  # reverse mode (torch.func), forward mode (graph)
def test_exact_routes_agree_with_autograd(classes):
    model = _net(1, classes)
    x = torch.randn(2, 2, 6, 6, dtype=F64)
    got = jacobian_spectrum(model, x, progress=False)
    assert got.method == ("torch.func" if classes < 72 else "graph")
    ref = _autograd_singular_values(model, x)
    np.testing.assert_allclose(got.singular_values, ref, rtol=1e-10, atol=1e-12 * ref.max())
    forced = jacobian_spectrum(model, x, method="graph", progress=False)
    assert forced.method == "graph"
    np.testing.assert_allclose(forced.singular_values, ref, rtol=1e-10, atol=1e-12 * ref.max())


def test_batched_lanczos_on_a_graph():
    model = _net(2, 200)
    x = torch.randn(1, 2, 6, 6, dtype=F64)
    exact = jacobian_spectrum(model, x, progress=False)
    lan = jacobian_spectrum(
        model, x, method="lanczos", k=4, lanczos_steps=72, n_probes=4, progress=False
    )
    assert lan.method == "lanczos" and lan.converged
    np.testing.assert_allclose(lan.singular_values[0], exact.singular_values[0, :4], rtol=1e-7)
    assert np.all(lan.residuals < 1e-6)
    # 72 steps on the 72-dimensional Gram matrix JᵀJ: each probe's Gauss quadrature is exact,
    # so the estimate is exactly the Hutchinson average over the probes drawn (same stream)
    jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0].reshape(-1), x[0])
    gram = (lambda j: j.T @ j)(jac.reshape(200, 72).numpy())
    rng = np.random.default_rng(0)
    rng.standard_normal(72)  # ARPACK's start vector comes first
    probes = rng.choice(np.array([-1.0, 1.0]), size=(4, 72)) / np.sqrt(72)
    powers = [np.linalg.matrix_power(gram, k) for k in range(1, 5)]
    want = [np.mean([v @ g @ v for v in probes]) for g in powers]
    np.testing.assert_allclose(lan.moments[0], want, rtol=1e-8)


def test_routes_are_explicit_and_refused_where_they_do_not_apply():
    model = _net()
    x = torch.randn(1, 2, 6, 6, dtype=F64)
    with pytest.raises(ValueError, match="chain"):
        jacobian_spectrum(model, x, method="chain", progress=False)
    assert jacobian_spectrum(model, x, method="torch.func", progress=False).method == "torch.func"
    model.train()  # batch statistics: not a linear map of one input
    with pytest.raises(ValueError, match="train mode"):
        jacobian_spectrum(model, x, method="graph", progress=False)
    chain = nn.Sequential(nn.Linear(4, 3, dtype=F64), nn.Tanh())
    assert (
        jacobian_spectrum(
            chain, torch.randn(1, 4, dtype=F64), method="chain", progress=False
        ).method
        == "chain"
    )


def test_auto_chooses_by_cost():
    f64 = torch.float64
    assert _exact_is_cheaper(1000, 3072, 1000, 6, 60, 8, 4096, f64)  # ResNet-18, CIFAR-10 input
    assert not _exact_is_cheaper(150528, 150528, 150528, 6, 60, 8, 4096, f64)  # J too large
    assert not _exact_is_cheaper(8192, 8192, 8192, 6, 60, 8, 4096, f64)  # Lanczos cheaper
    assert _exact_is_cheaper(1100, 8192, 8192, 6, 60, 8, 1000, f64)
