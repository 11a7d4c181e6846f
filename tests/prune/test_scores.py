"""Every scorer against a small hand-computed example (float64), plus the registry."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sigprop.prune import masks as M
from sigprop.prune import scores as S


def _two_layer(bias=False, act=None, seed=0, dims=(3, 4, 3)):
    g = torch.Generator().manual_seed(seed)
    l1, l2 = nn.Linear(dims[0], dims[1], bias=bias), nn.Linear(dims[1], dims[2], bias=bias)
    layers = [l1] + ([act] if act is not None else []) + [l2]
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    M.attach_masks(model)
    return model


def _batch(n=5, d=3, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(
        0, classes, (n,), generator=g
    )


def test_snip_equals_hand_computed_abs_g_theta():
    model = _two_layer(act=nn.Tanh())
    x, y = _batch()
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    # backprop by hand: logits = W2 tanh(W1 x); cross entropy averaged over the batch
    h = torch.tanh(x @ w1.T)
    p = torch.softmax(h @ w2.T, dim=1)
    d2 = (p - F.one_hot(y, 3).double()) / x.shape[0]
    g2 = d2.T @ h
    g1 = ((d2 @ w2) * (1 - h**2)).T @ x
    raw1, raw2 = (g1 * w1).abs(), (g2 * w2).abs()
    z = raw1.sum() + raw2.sum()
    scores = S.snip_scores(model, (x, y))
    # float64 arithmetic of two equivalent orderings: agreement to round-off (1e-12)
    torch.testing.assert_close(scores["0.weight"], raw1 / z, rtol=1e-12, atol=0)
    torch.testing.assert_close(scores["2.weight"], raw2 / z, rtol=1e-12, atol=0)
    assert float(sum(s.sum() for s in scores.values())) == pytest.approx(1.0, abs=1e-14)


def test_snip_pruned_weights_score_zero_and_batches_sum():
    model = _two_layer(act=nn.Tanh())
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[0] = False
    M.apply(model, {"0.weight": mask})
    x, y = _batch(n=6)
    one = S.snip_scores(model, (x, y))
    assert (one["0.weight"][0] == 0).all()
    # two half batches: gradients of the two mean losses add up to twice the full-batch one,
    # and the normalisation removes the factor (round-off only: 1e-12)
    two = S.snip_scores(model, [(x[:3], y[:3]), (x[3:], y[3:])])
    for n in one:
        torch.testing.assert_close(two[n], one[n], rtol=1e-12, atol=1e-15)


def _flat_loss(model, x, y, temperature):
    shapes = [model[0].weight.shape, model[2].weight.shape]

    def loss(theta):
        w1 = theta[: shapes[0].numel()].reshape(shapes[0])
        w2 = theta[shapes[0].numel() :].reshape(shapes[1])
        return F.cross_entropy(torch.tanh(x @ w1.T) @ w2.T / temperature, y)

    return loss


@pytest.mark.parametrize("temperature", [200.0, 1.0])
def test_grasp_hg_equals_explicit_hessian_times_gradient(temperature):
    model = _two_layer(act=nn.Tanh())
    x, y = _batch(n=8)
    theta = torch.cat([model[0].weight.detach().reshape(-1), model[2].weight.detach().reshape(-1)])
    loss = _flat_loss(model, x, y, temperature)
    hess = torch.autograd.functional.hessian(loss, theta)
    grad = torch.autograd.functional.jacobian(loss, theta)
    raw = theta * (hess @ grad)
    expected = raw / (raw.sum().abs() + 1e-10)
    scores = S.grasp_scores(model, (x, y), temperature=temperature)
    got = torch.cat([scores["0.weight"].reshape(-1), scores["2.weight"].reshape(-1)])
    # same float64 quantity by double backward vs an explicit 24x24 Hessian: round-off
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_grasp_several_batches_use_summed_gradient():
    model = _two_layer(act=nn.Tanh())
    x, y = _batch(n=8)
    theta = torch.cat([model[0].weight.detach().reshape(-1), model[2].weight.detach().reshape(-1)])
    la, lb = _flat_loss(model, x[:4], y[:4], 200.0), _flat_loss(model, x[4:], y[4:], 200.0)
    g = torch.autograd.functional.jacobian(la, theta) + torch.autograd.functional.jacobian(
        lb, theta
    )
    hg = (
        torch.autograd.functional.hessian(la, theta) + torch.autograd.functional.hessian(lb, theta)
    ) @ g
    raw = theta * hg
    expected = raw / (raw.sum().abs() + 1e-10)
    scores = S.grasp_scores(model, [(x[:4], y[:4]), (x[4:], y[4:])])
    got = torch.cat([scores["0.weight"].reshape(-1), scores["2.weight"].reshape(-1)])
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)  # round-off, as above


@pytest.mark.parametrize("bias", [False, True])
def test_synflow_single_round_equals_closed_form(bias):
    # a 2-layer net; its tanh is bypassed, so R = 1ᵀ|W2|(|W1|1 + |b1|) + 1ᵀ|b2|
    model = _two_layer(bias=bias, act=nn.Tanh(), dims=(5, 4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a1, a2 = model[0].weight.detach().abs(), model[2].weight.detach().abs()
    upstream = a1.sum(1) + (model[0].bias.detach().abs() if bias else 0)
    expected1 = a1 * a2.sum(0)[:, None]  # |W1_ij| · Σ_k |W2_ki|
    expected2 = a2 * upstream[None, :]  # |W2_ki| · (|W1|1 + |b1|)_i
    scores = S.synflow_scores(model)
    # float64 throughout; different summation order only (1e-12)
    torch.testing.assert_close(scores["0.weight"], expected1, rtol=1e-12, atol=0)
    torch.testing.assert_close(scores["2.weight"], expected2, rtol=1e-12, atol=0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # model untouched


def test_synflow_bypasses_sigprop_activation_modules():
    from sigprop.nn import Activation

    model = _two_layer(act=Activation("tanh"), dims=(5, 4, 3))
    a1, a2 = model[0].weight.detach().abs(), model[2].weight.detach().abs()
    scores = S.synflow_scores(model)
    # the same closed form as with nn.Tanh: the activation is the identity for R (1e-12)
    torch.testing.assert_close(scores["0.weight"], a1 * a2.sum(0)[:, None], rtol=1e-12, atol=0)
    torch.testing.assert_close(scores["2.weight"], a2 * a1.sum(1)[None, :], rtol=1e-12, atol=0)


def test_synflow_bypasses_in_place_relu_with_a_negative_pre_activation():
    # BatchNorm in eval mode subtracts |running_mean|: with a large mean the linearised
    # pre-activation is negative, and an in-place ReLU (torchvision's) must not clip the
    # input the bypass hands on. R against the linear network written out by hand.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(inplace=True), nn.Linear(6, 2)
    ).double()
    model[1].running_mean.fill_(5.0)
    M.attach_masks(model)
    session = S.SynFlowSession(model)
    lin1, bn, lin2 = model[0], model[1], model[3]
    with torch.no_grad():
        h = lin1.weight.abs() @ torch.ones(4, dtype=torch.float64) + lin1.bias.abs()
        h = (h - bn.running_mean.abs()) * bn.weight.abs() / torch.sqrt(
            bn.running_var.abs() + bn.eps
        ) + bn.bias.abs()
        expected = (lin2.weight.abs() @ h + lin2.bias.abs()).sum()
    assert (h < 0).any()  # the case the in-place ReLU would have clipped
    assert float(session.objective().detach()) == pytest.approx(float(expected), rel=1e-12)
    assert model[2].inplace  # the caller's model is untouched


def test_synflow_switches_to_float64_when_float32_overflows():
    torch.manual_seed(0)
    layers = []
    for _ in range(30):
        layers += [nn.Linear(64, 64, bias=False), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(64, 2, bias=False))
    M.attach_masks(model)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # R = 64 · 32^30 · 32 ≈ 1e48: beyond float32 (3e38)
    session = S.SynFlowSession(model)
    auto = session.scores()
    assert session.dtype == torch.float64
    exact = S.synflow_scores(model, dtype=torch.float64)
    for n in exact:
        assert torch.equal(auto[n], exact[n])
        assert torch.isfinite(auto[n]).all() and (auto[n] > 0).all()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e10)
    with pytest.raises(ValueError, match="not finite"):
        S.synflow_scores(model)


def test_synflow_returns_to_float32_once_pruning_brings_r_into_range():
    depth, width = 20, 64
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width, bias=False), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(width, 2, bias=False))
    M.attach_masks(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # |W| ≈ 0.1: R ≈ 128 (64·0.1)^20 ≈ 1e18, beyond float32
            p.copy_(0.12 * torch.randn(p.shape, generator=g))
    session = S.SynFlowSession(model)
    session.scores()
    assert session.dtype == torch.float64

    def keep_inputs(n):
        keep = torch.zeros(width, width, dtype=torch.bool)
        keep[:, :n] = True
        return {
            name: keep if m.shape == keep.shape else torch.ones_like(m, dtype=torch.bool)
            for name, m in M.current_masks(model).items()
        }

    # 4 inputs per hidden unit: R ≈ 128 (4·0.1)^20 ≈ 1e-6, inside the range
    masks = keep_inputs(4)
    session.set_masks(masks)
    session.scores()  # this round still in float64, the next ones in float32
    assert session.dtype == torch.float32
    got = session.scores()
    reference = copy.deepcopy(model)
    M.apply(reference, masks)
    exact = S.synflow_scores(reference, dtype=torch.float64)
    for n in exact:
        assert got[n].dtype == torch.float32
        # float32 round-off through 21 layers of sums of ≤ 64 terms: relative 1e-5
        torch.testing.assert_close(got[n].double(), exact[n], rtol=1e-5, atol=0)
    # 1 input per unit: R ≈ 128 (0.1)^20 ≈ 1e-18, below the float32 range -> float64 again
    session.set_masks(keep_inputs(1))
    session.scores()
    assert session.dtype == torch.float64


def test_synflow_float32_matches_float64_in_safe_range():
    model = _two_layer(act=nn.ReLU(), dims=(5, 4, 3)).float()
    s32 = S.synflow_scores(model)
    s64 = S.synflow_scores(model, dtype=torch.float64)
    for n in s32:
        assert s32[n].dtype == torch.float32
        # float32 round-off on sums of 5 positive terms: relative 1e-6
        torch.testing.assert_close(s32[n].double(), s64[n], rtol=1e-6, atol=0)


def test_synflow_scores_are_magnitudes_where_a_running_mean_makes_products_negative():
    # eval-mode BatchNorm subtracts |running mean|: a large one makes the normalised values
    # negative, so the last layer's θ ⊙ ∂R/∂θ is negative there and its score is |·|
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        model[1].running_mean.copy_(torch.tensor([40.0, -40.0, 0.5, 0.0]))
        model[1].running_var.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0]))
    M.attach_masks(model)
    w1, b1 = model[0].weight.detach().abs().requires_grad_(), model[0].bias.detach().abs()
    w2, b2 = model[2].weight.detach().abs().requires_grad_(), model[2].bias.detach().abs()
    bn = model[1]
    h = w1 @ torch.ones(5, dtype=torch.float64) + b1
    h = (h - bn.running_mean.abs()) / (bn.running_var.abs() + bn.eps).sqrt()
    h = h * bn.weight.detach().abs() + bn.bias.detach().abs()
    r = (w2 @ h + b2).sum()
    g1, g2 = torch.autograd.grad(r, (w1, w2))
    raw2 = w2.detach() * g2
    assert (raw2 < 0).any() and (raw2 > 0).any()  # the |·| matters for this layer
    scores = S.synflow_scores(model)
    # float64; the hand-written forward sums in another order (1e-12)
    torch.testing.assert_close(scores["0.weight"], (w1.detach() * g1).abs(), rtol=1e-12, atol=0)
    torch.testing.assert_close(scores["2.weight"], raw2.abs(), rtol=1e-12, atol=0)


def test_synflow_reruns_in_float64_when_a_float32_score_overflows():
    # three 1x1 layers: R = 1e-40 · 1e20 · 1e20 = 1 is inside float32's trusted range, but
    # ∂R/∂θ₁ = 1e40 is not a float32 number: that round is scored again in float64
    model = nn.Sequential(*(nn.Linear(1, 1, bias=False) for _ in range(3)))
    with torch.no_grad():
        for lin, v in zip(model, (1e-40, 1e20, 1e20)):
            lin.weight.fill_(v)
    M.attach_masks(model)
    session = S.SynFlowSession(model)
    assert session.dtype == torch.float32
    auto = session.scores()  # (R = 1: the next round tries float32 again)
    exact = S.synflow_scores(model, dtype=torch.float64)
    for n in exact:
        assert auto[n].dtype == torch.float64
        assert torch.equal(auto[n], exact[n])
    # every score is R = 1, up to float32's subnormal 1e-40 (spacing 2^-149 ≈ 1.4e-45:
    # relative 1.4e-5)
    for n in exact:
        torch.testing.assert_close(
            auto[n], torch.ones(1, 1, dtype=torch.float64), rtol=1.5e-5, atol=0
        )


def test_select_assume_finite_skips_only_the_scan():
    from sigprop.prune.selection import select

    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randn(40, generator=g), "b": torch.randn(7, 3, generator=g)}
    for d in (0.1, 0.5, 0.9):
        plain = select(scores, d)
        fast = select(scores, d, assume_finite=True)
        assert all(torch.equal(plain[n], fast[n]) for n in scores)
    bad = dict(scores, a=torch.full((40,), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        select(bad, 0.5)
    # without the scan an infinite score is ranked, not refused: it is the largest
    top = dict(scores, a=torch.where(torch.arange(40) == 7, float("inf"), scores["a"]))
    with pytest.raises(ValueError, match="inf"):
        select(top, 0.01)
    kept = select(top, 1 / 61, assume_finite=True)  # one weight of 61
    assert kept["a"][7] and int(kept["a"].sum() + kept["b"].sum()) == 1


class _BufferOnlyLinear(nn.Linear):
    """Prunable by the documented contract (a ``weight`` and a ``weight_mask`` buffer) but
    computing with the raw weight: only zeroed weights keep it masked."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.register_buffer("weight_mask", torch.ones_like(self.weight))


@pytest.mark.parametrize("kind", ["attach", "masked", "dct", "dct-csr", "buffer-only"])
def test_synflow_rounds_with_session_set_masks_equal_rounds_with_full_apply(kind):
    # SynFlowSession.set_masks only rewrites the copy's masks where the layer computes with
    # weight*mask (pruned weights of the copy keep their |θ|) and zeroes pruned weights
    # elsewhere; each round must still score exactly as a fresh copy of the model with the
    # masks applied (pruned weights zeroed) does.
    from sigprop.nn import DCTPlusSparseLinear, MaskedLinear

    g = torch.Generator().manual_seed(3)
    start = 1.0
    if kind == "attach":
        model = nn.Sequential(
            nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)
        )
        M.attach_masks(model)
    elif kind == "buffer-only":
        model = nn.Sequential(_BufferOnlyLinear(6, 8), nn.ReLU(), _BufferOnlyLinear(8, 3))
    elif kind == "masked":
        model = nn.Sequential(
            MaskedLinear(6, 8, generator=g), nn.Tanh(), MaskedLinear(8, 3, generator=g)
        )
    else:  # the CSR kernel gathers S's kept entries (_KeptValues); start from density 0.5
        start = 1.0 if kind == "dct" else 0.5
        kw = {"kernel": "csr"} if kind == "dct-csr" else {}
        model = nn.Sequential(
            DCTPlusSparseLinear(6, 8, density=start, generator=g, **kw),
            nn.ReLU(),
            DCTPlusSparseLinear(8, 3, density=start, generator=g, **kw),
        )
        with torch.no_grad():
            for m in model:
                if hasattr(m, "weight"):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * m.weight_mask)
    model = model.double()
    densities = M.schedule(0.1, 6, start=start)
    session = S.SynFlowSession(model)
    reference = copy.deepcopy(model)
    masks = M.current_masks(model)
    for d in densities:
        fast = session.scores()
        slow = S.synflow_scores(reference)
        for n in slow:  # the same products, summed in the same order: equal to 1e-12
            torch.testing.assert_close(fast[n], slow[n], rtol=1e-12, atol=0)
        masks = M.select(fast, d, current=masks)
        session.set_masks(masks)
        M.apply(reference, masks)
    assert sum(int(m.sum()) for m in masks.values()) == M.kept_count(
        0.1, sum(m.numel() for m in masks.values())
    )
    with pytest.raises(ValueError, match="not a prunable weight"):
        session.set_masks({"nope.weight": masks[next(iter(masks))]})
    with pytest.raises(ValueError, match="shape"):
        session.set_masks({n: m[:1] for n, m in masks.items()})


def test_snip_and_grasp_with_a_weight_shared_by_two_layers():
    # One Parameter in two prunable layers: autograd returns one gradient tensor for both
    # names, which the scorers must not scale twice in place.
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    model = nn.Sequential(a, nn.Tanh(), b).double()
    with torch.no_grad():
        a.weight.copy_(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
    M.attach_masks(model)
    x, y = _batch(n=6, d=4, classes=4)
    w = a.weight
    g = torch.autograd.grad(F.cross_entropy(model(x), y), w)[0]
    raw = (g * w).abs().detach()
    snip = S.snip_scores(model, (x, y))
    for n in ("0.weight", "2.weight"):  # float64 round-off of one product and a sum
        torch.testing.assert_close(snip[n], raw / (2 * raw.sum()), rtol=1e-12, atol=1e-15)
    gr = torch.autograd.grad(F.cross_entropy(model(x) / 200.0, y), w, create_graph=True)[0]
    hg = torch.autograd.grad(gr, w, grad_outputs=2 * gr.detach())[0]  # both names' ⟨v, g⟩
    raw = (w * hg).detach()
    grasp = S.grasp_scores(model, (x, y))
    for n in ("0.weight", "2.weight"):
        torch.testing.assert_close(
            grasp[n], raw / ((2 * raw.sum()).abs() + 1e-10), rtol=1e-9, atol=1e-15
        )


def test_synflow_input_shape_for_convolutions():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    M.attach_masks(model)
    with pytest.raises(ValueError, match="input_shape"):
        S.synflow_scores(model)
    scores = S.synflow_scores(model, input_shape=(1, 8, 8))
    assert scores["0.weight"].shape == (2, 1, 3, 3)
    via_data = S.synflow_scores(model, (torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)))
    assert torch.equal(via_data["0.weight"], scores["0.weight"])
    with pytest.raises(ValueError, match="input of ones"):
        S.synflow_scores(model, input_shape=(1, 5, 5))


def test_magnitude_and_random():
    model = _two_layer(act=nn.Tanh())
    M.apply(model, {"0.weight": torch.eye(4, 3)})
    mag = S.magnitude_scores(model)
    assert torch.equal(mag["0.weight"], model[0].weight.detach().abs())
    assert torch.equal(mag["2.weight"], model[2].weight.detach().abs())
    r1 = S.random_scores(model, generator=torch.Generator().manual_seed(5))
    r2 = S.random_scores(model, generator=torch.Generator().manual_seed(5))
    r3 = S.random_scores(model, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(r1[n], r2[n]) for n in r1)
    assert not torch.equal(r1["0.weight"], r3["0.weight"])
    assert all(((r >= 0) & (r < 1)).all() for r in r1.values())


def test_samples_per_class():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 0])
    x = torch.arange(9.0)[:, None]
    xs, ys = S.samples_per_class(x, y, 2, generator=torch.Generator().manual_seed(0))
    assert ys.tolist() == [0, 0, 1, 1, 2, 2]
    assert all(int(y[int(v)]) == int(c) for v, c in zip(xs[:, 0], ys))
    assert len(set(xs[:, 0].tolist())) == 6
    with pytest.raises(ValueError, match="class 2 has 2 examples"):
        S.samples_per_class(x, y, 3)
    with pytest.raises(ValueError, match="positive integer"):
        S.samples_per_class(x, y, 0)


def test_registry_and_data_errors():
    model = _two_layer(act=nn.Tanh())
    with pytest.raises(ValueError, match="random, magnitude, snip, grasp, synflow"):
        S.get_scorer("hessian")
    for method in ("snip", "grasp"):
        with pytest.raises(ValueError, match=f"{method} needs data"):
            S.compute_scores(model, method)
    with pytest.raises(ValueError, match="pair"):
        S.snip_scores(model, [(torch.zeros(2, 3),)])
    x, y = _batch()
    with pytest.raises(ValueError, match="NaN"):
        S.snip_scores(model, (x * float("nan"), y))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'0.weight' contains NaN"):
        S.magnitude_scores(model)
    assert set(S.compute_scores(_two_layer(), "magnitude")) == {"0.weight", "1.weight"}


def test_synflow_without_biases_conserves_flow_layer_by_layer():
    """Tanaka et al. (arXiv 2006.05467) Theorem 1: with R = 1ᵀ(Π|W|)1 (no biases), every
    layer's scores sum to R. ``include_bias=False`` gives exactly that on a biased MLP;
    with biases (the official code's linearisation) the sums differ."""
    from sigprop.nn import models
    from sigprop.prune.scores import SynFlowSession

    model = models.mlp(6, 5, 4, 3, "relu", layer="masked", generator=0).double()
    for include_bias, conserved in [(False, True), (True, False)]:
        session = SynFlowSession(model, include_bias=include_bias)
        sums = torch.stack([s.sum() for s in session.scores().values()])
        r = session.objective().detach()
        # rtol 1e-12: float64 round-off over a 4-layer product
        assert torch.allclose(sums, r.expand_as(sums), rtol=1e-12) is conserved


class _WithIdleBranch(nn.Module):
    """A net whose second prunable layer never reaches the output (its gradient is None)."""

    def __init__(self):
        super().__init__()
        self.used = nn.Linear(3, 3)
        self.idle = nn.Linear(3, 3)

    def forward(self, x):
        return self.used(x)


def test_scores_of_a_layer_the_loss_does_not_reach_are_zero():
    model = _WithIdleBranch().double()
    M.attach_masks(model)
    batch = _batch()
    for scores in (S.snip_scores(model, batch), S.grasp_scores(model, batch)):
        assert torch.equal(scores["idle.weight"], torch.zeros(3, 3, dtype=torch.float64))
        assert scores["used.weight"].abs().sum() > 0
    # SNIP normalises by the total over the layers that matter (sum 1 to round-off)
    assert abs(float(S.snip_scores(model, batch)["used.weight"].sum()) - 1) < 1e-12
