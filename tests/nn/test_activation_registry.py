"""sigprop.nn.activation's module registry: one table (ELEMENTWISE_MODULES, theory_spec) used by
SynFlow, describe and jacobian_spectrum, with isinstance on real classes."""

import numpy as np
import pytest
import torch
from torch import nn

from sigprop.diagnostics import describe, jacobian_spectrum
from sigprop.diagnostics.jacobian import _plain_linear_weight, chain_ops
from sigprop.nn import Activation, MaskedLinear
from sigprop.nn.activation import ELEMENTWISE_MODULES, is_elementwise, theory_spec
from sigprop.theory import get_activation


class _MyTanh(nn.Tanh):
    """A subclass that keeps nn.Tanh's forward."""


class _Shifted(nn.Tanh):
    """A subclass whose forward is another function."""

    def forward(self, x):
        return torch.tanh(x) + 1.0


class _MyMasked(MaskedLinear):
    """A MaskedLinear subclass with the same forward."""


@pytest.mark.parametrize(
    "module",
    [
        nn.ReLU(),
        nn.Tanh(),
        nn.Sigmoid(),
        nn.GELU(),
        nn.SiLU(),
        nn.ELU(alpha=0.5),
        nn.SELU(),
        nn.Softplus(),
        nn.Hardtanh(),
        nn.LeakyReLU(0.2),
        Activation("erf"),
        _MyTanh(),
    ],
)
def test_theory_spec_is_the_same_function(module):
    # the spec handed to the theory is the module's own function: float64 round-off (the
    # theory evaluates with numpy/scipy, torch with its kernels; a few ulps at |φ| ≤ 5)
    x = np.linspace(-5.0, 5.0, 1001)
    spec = theory_spec(module)
    assert spec is not None and is_elementwise(module)
    got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, get_activation(spec).phi(x), rtol=1e-12, atol=1e-14)


def test_unknown_or_changed_functions_have_no_spec():
    for module in (_Shifted(), nn.Hardtanh(-2.0, 2.0), nn.GELU("tanh"), nn.Softplus(beta=2.0)):
        assert theory_spec(module) is None
    for module in (nn.Mish(), nn.PReLU(), nn.Linear(2, 2), nn.Softmax(dim=-1)):
        assert theory_spec(module) is None
    assert all(is_elementwise(cls()) for cls in ELEMENTWISE_MODULES)
    assert not is_elementwise(nn.Softmax(dim=-1)) and not is_elementwise(nn.Linear(2, 2))


def test_subclasses_are_recognised_by_describe_and_jacobian():
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        _MyMasked(6, 5, density=0.5, generator=gen).double(),
        _MyTanh(),
        nn.Linear(5, 4, dtype=torch.float64),
    )
    spec = describe(model)
    assert spec.complete and [layer.activation for layer in spec.layers][0] == "tanh"
    assert [k for k, _, _ in chain_ops(model)] == ["weight", "elementwise", "weight"]
    # a MaskedLinear subclass keeping the forward takes the plain-matmul route (it used to be
    # missed by an exact class-name match); one that changes the forward does not
    assert torch.equal(_plain_linear_weight(model[0]), model[0].masked_weight().detach())

    class _Scaled(MaskedLinear):
        def forward(self, x):
            return 2.0 * super().forward(x)

    assert _plain_linear_weight(_Scaled(3, 3)) is None
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    got = jacobian_spectrum(model, x, progress=False)
    ref = np.stack(
        [torch.linalg.svdvals(torch.autograd.functional.jacobian(model, xi)).numpy() for xi in x]
    )
    assert got.method == "chain"
    # float64 round-off of a 2-layer product and an SVD: a few ulps of σ_max
    np.testing.assert_allclose(got.singular_values, ref, rtol=0, atol=1e-12 * ref.max())


EXPRESSIONS = [
    "x*tanh(x)",
    "max(x, 0)",
    "x/(1+abs(x))",
    "erf(x)",
    "Heaviside(x - 0.5)",
    "log(1+exp(x))",
    "max(x,0)+min(exp(x)-1,0)",
    "x*sigmoid(x) + 0.1*sin(x)",
    "sqrt(x^2+1) - 1",
    "min(max(x, -2), 3)*cosh(x/4)",
    "softplus(x) - log(2) + atan(x)*asinh(x)",
    "x^3/(1+x^2) + sign(x)*erfc(abs(x))",
]


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_expression_twin_is_the_theory_function(text):
    # torch walks the same checked tree as the theory (sigprop.theory.expression), with
    # torch kernels instead of numpy/scipy: float64 round-off (a few ulps of |φ| ≤ 40)
    x = np.linspace(-6.0, 6.0, 1201)
    act = get_activation(text)
    module = Activation(text)
    assert module.spec == text and theory_spec(module) == text and is_elementwise(module)
    np.testing.assert_allclose(
        module(torch.from_numpy(x)).numpy(), act.phi(x), rtol=1e-13, atol=1e-14
    )
    # autograd through the twin gives the theory's φ′ away from the kinks
    away = x[np.all(np.abs(x[:, None] - np.array([*act.kinks, np.inf])) > 1e-6, axis=1)]
    t = torch.from_numpy(away).requires_grad_(True)
    y = module(t).sum()
    # a step function's output does not depend on t in autograd at all (derivative 0)
    grad = torch.autograd.grad(y, t)[0] if y.requires_grad else torch.zeros_like(t)
    np.testing.assert_allclose(grad.numpy(), act.dphi(away), rtol=1e-12, atol=1e-13)


def test_expression_twin_float32_and_pickle():
    import pickle

    module = pickle.loads(pickle.dumps(Activation("x/(1+abs(x))")))
    x = torch.linspace(-3, 3, 7, dtype=torch.float32)
    out = module(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x / (1 + x.abs()))


@pytest.mark.parametrize("text", ["x.__class__", "gamma(x)", "exp(x**2)", "1/x", "9**9**9 + x"])
def test_expression_twin_refuses_what_the_theory_refuses(text):
    from sigprop.validate import InvalidInput

    with pytest.raises(InvalidInput):
        Activation(text)
