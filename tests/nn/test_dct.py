"""DCT-plus-sparse layers against materialised references (float64)."""

import copy
import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from sigprop.nn import (
    DCTPlusSparseConv1d,
    DCTPlusSparseConv2d,
    DCTPlusSparseLinear,
    dct2,
    dct3,
    dct_matrix,
)

f64 = torch.float64
sizes = st.integers(1, 160)


@given(n_in=sizes, n_out=sizes)
def test_dct_matrix_is_scipy_orthonormal_dct_block(n_in, n_out):
    # Independent reference: scipy's orthonormal DCT-II of the identity, whose column j is
    # the transform of e_j. 1e-14: both are float64 evaluations of the same cosines.
    big_n = max(n_in, n_out)
    ref = scipy.fft.dct(np.eye(big_n), type=2, norm="ortho", axis=0)[:n_out, :n_in]
    assert np.abs(dct_matrix(n_out, n_in).numpy() - ref).max() < 1e-14


@given(n_in=sizes, n_out=sizes)
def test_every_singular_value_of_d_is_one(n_in, n_out):
    # D is made of whole rows or whole columns of an orthogonal matrix. 1e-12: float64
    # SVD of a matrix of size <= 160 (backward error ~ n * eps).
    s = torch.linalg.svdvals(dct_matrix(n_out, n_in))
    assert s.numel() == min(n_in, n_out)
    assert torch.all((s - 1).abs() < 1e-12)


@given(n_in=st.integers(1, 600), n_out=st.integers(1, 600), batch=st.integers(1, 5))
def test_fast_dct_matches_materialised_d(n_in, n_out, batch):
    # The bound: <= 1e-10 in float64 (measured: at most ~4e-15 up to N = 4096).
    x = torch.randn(batch, n_in, dtype=f64, generator=torch.Generator().manual_seed(n_in))
    err = (dct2(x, n_out) - x @ dct_matrix(n_out, n_in).T).abs().max().item()
    assert err <= 1e-10


@given(n_in=st.integers(1, 600), n_out=st.integers(1, 600), batch=st.integers(1, 5))
def test_fast_transpose_matches_materialised_d(n_in, n_out, batch):
    # dct3 applies D^T (the backward of dct2) by an inverse FFT; same bound as above.
    g = torch.randn(batch, n_out, dtype=f64, generator=torch.Generator().manual_seed(n_out))
    err = (dct3(g, n_in) - g @ dct_matrix(n_out, n_in)).abs().max().item()
    assert err <= 1e-10


def test_fast_dct_gradients():
    # The backward of x -> D x is g -> D^T g; compare with the materialised transpose
    # (1e-12: float64 FFT round-off), then finite differences for first and second order.
    for n_in, n_out in [(17, 5), (5, 17), (64, 64), (33, 100), (1, 1), (2, 3)]:
        x = torch.randn(3, n_in, dtype=f64, requires_grad=True)
        g = torch.randn(3, n_out, dtype=f64)
        dct2(x, n_out).backward(g)
        assert (x.grad - g @ dct_matrix(n_out, n_in)).abs().max() < 1e-12
    x = torch.randn(2, 11, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dct2(t, 7), (x,))
    assert torch.autograd.gradgradcheck(lambda t: dct2(t, 7), (x,))
    g = torch.randn(2, 7, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dct3(t, 11), (g,))
    assert torch.autograd.gradgradcheck(lambda t: dct3(t, 11), (g,))


@given(
    n_in=st.integers(1, 120),
    n_out=st.integers(1, 120),
    density=st.floats(1e-3, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_layer_at_init_is_a_partial_isometry(n_in, n_out, density, seed):
    # S = 0 at init, alpha = 1: the Jacobian is D, all singular values 1, at any density.
    # 1e-10: float64 Jacobian through the FFT, then SVD.
    layer = DCTPlusSparseLinear(n_in, n_out, density=density, generator=seed, dtype=f64)
    assert torch.all(layer.weight == 0)
    jac = torch.autograd.functional.jacobian(layer, torch.zeros(n_in, dtype=f64))
    s = torch.linalg.svdvals(jac)
    assert torch.all((s - 1).abs() < 1e-10)


@pytest.mark.parametrize("kernel", ["csr", "dense", "auto"])
@pytest.mark.parametrize("shape", [(300, 200), (64, 256), (1, 9), (40, 40)])
@pytest.mark.parametrize("density", [0.01, 0.3, 1.0])
def test_forward_and_gradients_match_dense_reference(kernel, shape, density):
    n_in, n_out = shape
    layer = DCTPlusSparseLinear(
        n_in,
        n_out,
        density=density,
        alpha=0.7,
        sparse_std=1.0,
        generator=0,
        kernel=kernel,
        dtype=f64,
    )
    with torch.no_grad():
        layer.bias.normal_(generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, n_in, dtype=f64, generator=gen, requires_grad=True)
    g = torch.randn(2, 3, n_out, dtype=f64, generator=gen)
    y = layer(x)
    y.backward(g)
    grads = (
        x.grad.clone(),
        layer.weight.grad.clone(),
        layer.alpha.grad.clone(),
        layer.bias.grad.clone(),
    )

    # Dense reference with the materialised D, same parameters.
    d = dct_matrix(n_out, n_in)
    alpha = layer.alpha.detach().clone().requires_grad_()
    s = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    x.grad = None
    y_ref = x @ (alpha * d + s * layer.weight_mask).T + b
    y_ref.backward(g)
    # 1e-11: float64, sums of <= 300 terms of size O(1) (measured ~1e-14).
    assert (y - y_ref).abs().max() < 1e-11
    assert (grads[0] - x.grad).abs().max() < 1e-11
    assert (grads[1] - s.grad).abs().max() < 1e-11
    assert torch.all(grads[1][layer.weight_mask == 0] == 0)  # pruned entries get no gradient
    assert (grads[2] - alpha.grad).abs() < 1e-11
    assert (grads[3] - b.grad).abs().max() < 1e-11
    assert layer.uses_sparse_kernel() == (
        kernel == "csr" or (kernel == "auto" and n_in * n_out >= 1 << 16 and density <= 0.2)
    )


def _csr_layer(dtype=f64):
    layer = DCTPlusSparseLinear(
        60, 40, density=0.1, sparse_std=1.0, generator=0, kernel="csr", dtype=dtype
    )
    x = torch.randn(5, 60, dtype=dtype, generator=torch.Generator().manual_seed(1))
    return layer, x


def test_sparse_path_gradient_skips_the_masking_pass_only_when_it_is_the_whole_gradient():
    # The CSR path builds the weight gradient from the kept entries (zero elsewhere by
    # construction) and the gradient hook skips its full masking pass for it. A gradient
    # that also holds another contribution -- a penalty on the weight itself, accumulation
    # into an existing .grad, or one that arrives without the sparse path in the same
    # backward -- must still be masked.
    layer, x = _csr_layer()
    pruned = layer.weight_mask == 0
    target = torch.ones_like(layer.weight)

    def sparse_grad():
        d_values = torch.autograd.grad(layer(x).square().sum(), layer.weight)[0]
        return d_values

    # 1. the sparse path alone: exact gradient, zero at pruned positions
    expected = sparse_grad()
    layer.weight.grad = None
    layer(x).square().sum().backward()
    assert torch.equal(layer.weight.grad, expected) and torch.all(layer.weight.grad[pruned] == 0)
    # 2. plus a penalty on the weight itself: its gradient at pruned positions is masked
    layer.weight.grad = None
    (layer(x).square().sum() + (layer.weight - target).square().sum()).backward()
    penalty = 2 * (layer.weight.detach() - target)
    # float64: two terms, summed once (1e-12)
    torch.testing.assert_close(
        layer.weight.grad, (expected + penalty) * layer.weight_mask, rtol=1e-12, atol=1e-12
    )
    assert torch.all(layer.weight.grad[pruned] == 0)
    # 3. accumulation into an existing gradient (zero_grad(set_to_none=False))
    layer.weight.grad = torch.ones_like(layer.weight)
    layer(x).square().sum().backward()
    torch.testing.assert_close(
        layer.weight.grad, (1 + expected) * layer.weight_mask, rtol=1e-12, atol=1e-12
    )
    # 4. the sparse path via autograd.grad (nothing accumulated), then a backward that
    # reaches the weight only through a penalty: no stale mark may skip the masking
    sparse_grad()
    assert "_masked_grad" not in layer.__dict__  # the mark dies with its backward pass
    layer.weight.grad = None
    (layer.weight - target).square().sum().backward()
    assert torch.all(layer.weight.grad[pruned] == 0)
    torch.testing.assert_close(layer.weight.grad, penalty * layer.weight_mask)


def test_sparse_path_skips_the_masking_pass_and_never_with_a_stale_mark():
    layer, x = _csr_layer()
    calls = []
    original = layer._grad_is_masked

    def spy(grad):
        calls.append(original(grad))
        return calls[-1]

    layer._grad_is_masked = spy  # an instance attribute shadows the method
    layer(x).sum().backward()
    assert calls == [True]  # the sparse path alone: the hook's full pass is skipped

    # a mask changed between forward and backward: the gradient is masked with the new one
    layer.weight.grad = None
    y = layer(x).sum()
    layer.set_mask(torch.zeros_like(layer.weight_mask))
    y.backward()
    assert calls[-1] is False and torch.all(layer.weight.grad == 0)

    # a backward pass that fails after the layer's backward leaves its mark behind; the next
    # forward clears it, and copies never carry it
    class Fail(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("upstream failure")

    layer.set_mask(torch.ones_like(layer.weight_mask))
    x_in = x.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="upstream failure"):  # nothing is accumulated
        torch.autograd.grad(layer(Fail.apply(x_in)).sum(), [layer.weight, x_in])
    assert "_masked_grad" in layer.__dict__
    assert "_masked_grad" not in copy.deepcopy(layer).__dict__
    layer(x)
    assert "_masked_grad" not in layer.__dict__


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_path_gradient_in_lazily_zeroed_memory_matches_dense_product(dtype):
    layer, x = _csr_layer(dtype)
    layer(x).sin().sum().backward()
    s = (layer.weight.detach() * layer.weight_mask).requires_grad_()
    ref = x @ (layer.alpha.detach() * dct_matrix(40, 60, dtype=dtype) + s).T + layer.bias.detach()
    ref.sin().sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-12  # round-off of sums of 60 terms
    torch.testing.assert_close(layer.weight.grad, s.grad * layer.weight_mask, rtol=tol, atol=tol)
    assert layer.weight.grad.dtype == dtype and layer.weight.grad.is_contiguous()


def test_kernel_follows_mask_changes():
    # The CSR pattern is cached; changing the mask in place must rebuild it.
    layer = DCTPlusSparseLinear(
        50, 30, density=0.1, sparse_std=1.0, generator=0, kernel="csr", dtype=f64
    )
    x = torch.randn(4, 50, dtype=f64)
    layer(x)
    new_mask = (torch.rand(30, 50, generator=torch.Generator().manual_seed(5)) < 0.5).to(f64)
    with torch.no_grad():
        layer.weight.normal_(generator=torch.Generator().manual_seed(6))
    layer.set_mask(new_mask)
    ref = x @ (dct_matrix(30, 50) + layer.weight * new_mask).T + layer.bias
    assert (layer(x) - ref).abs().max() < 1e-12  # 1e-12: float64 round-off
    with torch.no_grad():
        layer.weight_mask.zero_()  # an in-place write bumps the version counter
    assert (layer(x) - (x @ dct_matrix(30, 50).T + layer.bias)).abs().max() < 1e-12


def _reference_conv(layer, x):
    """Per-patch loop over F.unfold: flatten each patch (k_h, k_w, c_in) channel fastest,
    multiply by the c_out x P DCT block, add the plain conv of S."""
    kh, kw = layer.kernel_size
    patches = F.unfold(
        x, (kh, kw), dilation=layer.dilation, padding=layer.padding, stride=layer.stride
    )
    b, p, n_pos = patches.shape
    d = dct_matrix(layer.out_channels, p)
    out = torch.zeros(b, layer.out_channels, n_pos, dtype=f64)
    for i in range(b):
        for j in range(n_pos):
            patch = patches[i, :, j].view(layer.in_channels, kh, kw)
            flat = patch.permute(1, 2, 0).reshape(-1)  # (kh, kw, c_in), channel fastest
            out[i, :, j] = layer.alpha.detach() * (d @ flat)
    h = (x.shape[2] + 2 * layer.padding[0] - layer.dilation[0] * (kh - 1) - 1) // layer.stride[
        0
    ] + 1
    w = (x.shape[3] + 2 * layer.padding[1] - layer.dilation[1] * (kw - 1) - 1) // layer.stride[
        1
    ] + 1
    s_part = F.conv2d(
        x,
        layer.weight.detach() * layer.weight_mask,
        layer.bias.detach(),
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
    )
    return out.view(b, layer.out_channels, h, w) + s_part


@pytest.mark.parametrize(
    "c_in,c_out,k,stride,padding,dilation",
    [(3, 5, 3, 1, 1, 1), (2, 40, 3, 2, 0, 1), (4, 4, 2, 1, 1, 2), (1, 3, (3, 2), 1, (1, 0), 1)],
)
@pytest.mark.parametrize("kernel", ["csr", "dense"])
def test_conv2d_matches_per_patch_reference(c_in, c_out, k, stride, padding, dilation, kernel):
    # c_out < P truncates the patch DCT, c_out > P zero-pads it (both covered above).
    layer = DCTPlusSparseConv2d(
        c_in, c_out, k, stride=stride, padding=padding, dilation=dilation,
        density=0.3, alpha=1.3, sparse_std=1.0, generator=0, kernel=kernel, dtype=f64,
    )  # fmt: skip
    x = torch.randn(2, c_in, 7, 6, dtype=f64, generator=torch.Generator().manual_seed(1))
    # 1e-12: float64, sums over P <= 40 terms.
    assert (layer(x) - _reference_conv(layer, x)).abs().max() < 1e-12
    # The materialised kernel gives the same map through F.conv2d.
    ref = F.conv2d(x, layer.effective_weight(), layer.bias, stride, padding, dilation)
    assert (layer(x) - ref).abs().max() < 1e-12


def test_conv_gradients_match_materialised_kernel():
    layer = DCTPlusSparseConv2d(
        3, 6, 3, padding=1, density=0.2, sparse_std=1.0, generator=0, kernel="csr", dtype=f64
    )
    x = torch.randn(2, 3, 5, 5, dtype=f64, requires_grad=True)
    g = torch.randn(2, 6, 5, 5, dtype=f64)
    layer(x).backward(g)
    gx, gw, ga = x.grad.clone(), layer.weight.grad.clone(), layer.alpha.grad.clone()
    x.grad = None
    layer.zero_grad()
    F.conv2d(x, layer.effective_weight(), layer.bias, padding=1).backward(g)
    # 1e-11: float64 round-off over 2*25 patches.
    assert (gx - x.grad).abs().max() < 1e-11
    assert (gw - layer.weight.grad).abs().max() < 1e-11
    assert (ga - layer.alpha.grad).abs() < 1e-11


def test_conv1d_matches_materialised_kernel_and_conv2d():
    layer = DCTPlusSparseConv1d(
        2, 7, 5, stride=2, padding=2, density=0.5, sparse_std=1.0, generator=0, dtype=f64
    )
    x = torch.randn(3, 2, 40, dtype=f64)
    ref = F.conv1d(x, layer.effective_weight(), layer.bias, stride=2, padding=2)
    assert (layer(x) - ref).abs().max() < 1e-12  # float64 round-off
    assert layer(x).shape == (3, 7, 20)


def test_conv_at_init_is_per_patch_isometry():
    # Patches of length P = 2*3*3 = 18 mapped to c_out = 18 channels by an orthogonal D:
    # with a 3x3 input and no padding there is one patch, so ||y|| = ||x||.
    layer = DCTPlusSparseConv2d(2, 18, 3, bias=False, density=0.1, generator=0, dtype=f64)
    x = torch.randn(4, 2, 3, 3, dtype=f64)
    y = layer(x)
    assert torch.allclose(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-12, atol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="density"):
        DCTPlusSparseLinear(4, 4, density=0.0)
    with pytest.raises(ValueError, match="density"):
        DCTPlusSparseConv2d(2, 2, 3, density=2.0)
    with pytest.raises(ValueError, match="kernel"):
        DCTPlusSparseLinear(4, 4, density=0.5, kernel="coo")
    with pytest.raises(ValueError, match="in_features"):
        DCTPlusSparseLinear(0, 4, density=0.5)
    with pytest.raises(ValueError, match="sparse_std"):
        DCTPlusSparseLinear(4, 4, density=0.5, sparse_std=math.nan)
    layer = DCTPlusSparseLinear(4, 3, density=0.5)
    with pytest.raises(ValueError, match="features"):
        layer(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="binary"):
        layer.set_mask(torch.full((3, 4), 2.0))
    with pytest.raises(ValueError, match="shape"):
        DCTPlusSparseConv2d(2, 2, 3, density=0.5)(torch.zeros(1, 3, 5, 5))


def test_alpha_is_a_trainable_scalar_and_d_is_not_stored():
    layer = DCTPlusSparseLinear(512, 512, density=1e-3, alpha=2.0, generator=0)
    assert layer.alpha.shape == () and layer.alpha.item() == 2.0 and layer.alpha.requires_grad
    frozen = DCTPlusSparseLinear(8, 8, density=0.5, alpha_trainable=False)
    assert not frozen.alpha.requires_grad
    # Parameters and buffers: S (weight), its mask, bias, alpha -- nothing of D's size more.
    stored = sum(t.numel() for t in layer.state_dict().values())
    assert stored == 2 * 512 * 512 + 512 + 1
    assert set(layer.state_dict()) == {"weight", "weight_mask", "bias", "alpha"}


# ---------------------------------------------------------------------------------------
# Compact storage: S's kept entries as a length-nnz parameter on a fixed support.
# ---------------------------------------------------------------------------------------
def _pair_of_layers(n_in, n_out, density, seed, kernel="auto", cls=DCTPlusSparseLinear, **kw):
    """The same layer (same seed, hence same S and mask) in dense and compact storage."""
    common = dict(density=density, alpha=0.7, sparse_std=1.0, generator=seed, kernel=kernel)
    dense = cls(n_in, n_out, **kw, **common, dtype=f64)
    compact = cls(n_in, n_out, **kw, **common, storage="compact", dtype=f64)
    return dense, compact


@given(
    n_in=st.integers(1, 200),
    n_out=st.integers(1, 200),
    density=st.floats(1e-3, 1.0),
    kernel=st.sampled_from(["csr", "dense", "auto"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_compact_storage_matches_materialised_reference(n_in, n_out, density, kernel, seed):
    dense, layer = _pair_of_layers(n_in, n_out, density, seed, kernel)
    # Same draws in both modes: S identical bit for bit, and only kept entries stored.
    assert torch.equal(layer.weight, dense.weight)
    assert torch.equal(layer.weight_mask, dense.weight_mask)
    assert layer.values.shape == (layer.kept,) and "weight" not in dict(layer.named_parameters())
    with torch.no_grad():
        layer.bias.normal_(generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, n_in, dtype=f64, generator=gen, requires_grad=True)
    g = torch.randn(3, n_out, dtype=f64, generator=gen)
    y = layer(x)
    y.backward(g)
    gx = x.grad.clone()

    # Reference: materialised D, S scattered from the values, plain autograd.
    d = dct_matrix(n_out, n_in)
    keep = layer.weight_mask.reshape(-1) != 0
    alpha = layer.alpha.detach().clone().requires_grad_()
    s = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    x.grad = None
    y_ref = x @ (alpha * d + s * layer.weight_mask).T + b
    y_ref.backward(g)
    # 1e-10: the bound for the fast path vs materialised D in float64; sums of
    # <= 200 O(1) terms (measured ~1e-14).
    assert (y - y_ref).abs().max() <= 1e-10
    assert (gx - x.grad).abs().max() <= 1e-10
    assert layer.values.grad.shape == layer.values.shape  # nnz gradients only
    assert torch.all((layer.values.grad - s.grad.reshape(-1)[keep]).abs() <= 1e-10)
    assert (layer.alpha.grad - alpha.grad).abs() <= 1e-10
    assert (layer.bias.grad - b.grad).abs().max() <= 1e-10


def test_compact_conv_matches_materialised_kernel():
    for cls, shape, x_shape, conv in [
        (DCTPlusSparseConv2d, (3, 6, 3), (2, 3, 5, 5), F.conv2d),
        (DCTPlusSparseConv1d, (2, 7, 5), (3, 2, 12), F.conv1d),
    ]:
        for kernel in ("csr", "dense"):
            dense, layer = _pair_of_layers(*shape[:2], 0.3, 0, kernel, cls, kernel_size=shape[2])
            x = torch.randn(*x_shape, dtype=f64, requires_grad=True)
            g = torch.randn_like(dense(x))
            layer(x).backward(g)
            gx, gv, ga = x.grad.clone(), layer.values.grad.clone(), layer.alpha.grad.clone()
            x.grad = None
            dense(x).backward(g)
            keep = dense.weight_mask.reshape(-1) != 0
            # 1e-11: float64 round-off over at most 3 * 12 patches of length <= 27.
            assert (gx - x.grad).abs().max() < 1e-11
            assert (gv - dense.weight.grad.reshape(-1)[keep]).abs().max() < 1e-11
            assert (ga - dense.alpha.grad).abs() < 1e-11
            ref = conv(x, layer.effective_weight(), layer.bias)
            assert (layer(x) - ref).abs().max() < 1e-12  # float64 round-off


def test_compact_state_dict_is_the_dense_layout_and_loads_into_either_mode():
    dense, compact = _pair_of_layers(60, 40, 0.1, 3)
    sd = compact.state_dict()
    assert set(sd) == set(dense.state_dict()) == {"weight", "weight_mask", "bias", "alpha"}
    for key, value in dense.state_dict().items():
        assert torch.equal(sd[key], value)
    x = torch.randn(5, 60, dtype=f64)
    # Into a compact layer with a different support (another seed): support and values follow.
    other = DCTPlusSparseLinear(60, 40, density=0.3, generator=9, storage="compact", dtype=f64)
    values = other.values
    other.load_state_dict(sd)
    assert other.values is values and other.values.numel() == compact.kept
    assert torch.equal(other(x), compact(x))
    # Into a dense layer, and back from a dense checkpoint.
    plain = DCTPlusSparseLinear(60, 40, density=0.5, generator=8, dtype=f64)
    plain.load_state_dict(sd)
    assert torch.equal(plain(x), compact(x))
    again = DCTPlusSparseLinear(60, 40, density=0.5, generator=7, storage="compact", dtype=f64)
    again.load_state_dict(dense.state_dict())
    assert torch.equal(again(x), dense(x))
    with pytest.raises(RuntimeError, match="weight"):
        DCTPlusSparseLinear(61, 40, density=0.5, storage="compact").load_state_dict(
            {k: v.float() for k, v in sd.items()}
        )


def test_storage_conversion_round_trip_and_copies():
    import copy
    import pickle

    dense, layer = _pair_of_layers(30, 50, 0.2, 4)
    x = torch.randn(4, 30, dtype=f64)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone.storage == "compact" and torch.equal(clone(x), dense(x))
    layer.to_dense_storage()
    assert layer.storage == "dense" and isinstance(layer.weight, torch.nn.Parameter)
    assert torch.equal(layer.weight, dense.weight) and torch.equal(layer(x), dense(x))
    assert set(dict(layer.named_parameters())) == set(dict(dense.named_parameters()))
    layer.to_compact_storage().to_compact_storage()  # idempotent
    assert layer.storage == "compact" and torch.equal(layer(x), dense(x))


def test_compact_support_is_fixed():
    layer = DCTPlusSparseLinear(20, 10, density=0.3, generator=0, storage="compact")
    with pytest.raises(ValueError, match="compact"):
        layer.set_mask(torch.ones(10, 20))
    with pytest.raises(ValueError, match="read-only"):
        layer.weight = torch.nn.Parameter(torch.zeros(10, 20))
    with pytest.raises(ValueError, match="storage"):
        DCTPlusSparseLinear(4, 4, density=0.5, storage="csr")
    with torch.no_grad():
        layer.weight_mask.copy_(layer.weight_mask.flip(0))  # same count, other positions
    with pytest.raises(ValueError, match="support is fixed"):
        layer(torch.zeros(1, 20))
    # Re-masking goes through dense storage.
    layer = DCTPlusSparseLinear(20, 10, density=0.3, generator=0, storage="compact")
    layer.to_dense_storage().set_mask(torch.ones(10, 20))
    assert layer.to_compact_storage().values.numel() == 200 and layer.density == 1.0
    with torch.no_grad():
        layer.values[0] = math.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        layer.apply_mask_()


def test_compact_layers_read_like_dense_ones_by_diagnostics_and_io(tmp_path):
    # describe (spec), check_collapse and sigprop.io read `weight`, `weight_mask`, `alpha`:
    # a compact model must give the same answers as the same model in dense storage.
    from sigprop.diagnostics.collapse import check_collapse
    from sigprop.diagnostics.spec import describe
    from sigprop.io import load_checkpoint

    def model(storage):
        return torch.nn.Sequential(
            DCTPlusSparseLinear(
                30, 20, density=0.1, sparse_std=1.0, generator=1, storage=storage, dtype=f64
            ),
            torch.nn.ReLU(),
            DCTPlusSparseLinear(20, 10, density=0.05, generator=2, storage=storage, dtype=f64),
        )

    dense, compact = model("dense"), model("compact")
    assert describe(compact).to_dict() == describe(dense).to_dict()
    assert check_collapse(compact).to_dict() == check_collapse(dense).to_dict()
    torch.save(compact.state_dict(), tmp_path / "compact.pt")
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    a = load_checkpoint(tmp_path / "compact.pt").to_dict()
    b = load_checkpoint(tmp_path / "dense.pt").to_dict()
    assert a["layers"] == b["layers"]
