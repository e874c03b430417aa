"""Flow layers and models: inverse consistency, and every log-det against a dense Jacobian
(torch.autograd.functional.jacobian + slogdet) on tiny float64 inputs, in both directions, by
the checker users run on their own layers (invconv_core.testing)."""

from __future__ import annotations

import pytest
import torch

from invconv_core.flows import (MODELS, ActNorm, AffineCoupling, Conv1x1, FlowConfig, FlowSequence,
                                InvConv2d, LogitTransform, SmoothLeakyReLU, Squeeze, bits_per_dim,
                                build_flow)
from invconv_core.flows.models import ALL_MODELS, REGISTRY
from invconv_core.testing import check_flow_layer, check_flow_model


def _step(model, channels, index, width, k):
    """The layers of step ``index`` of ``model``, from the registry's builder."""
    cfg = FlowConfig(model=model, width=width, kernel_size=k)
    return REGISTRY[model].build_step(cfg, channels, index)


@pytest.fixture(autouse=True)
def _float64_default():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _layers():  # constructed inside the float64 fixture (see LAYERS below)
    yield "invconv-inverse-TL", InvConv2d(3, 3, "TL", placement="inverse"), (2, 3, 4, 5)
    yield "invconv-inverse-BR-k2x4", InvConv2d(2, (2, 4), "BR", placement="inverse"), (2, 2, 4, 3)
    yield "invconv-conv-TR", InvConv2d(3, 3, "TR", placement="conv"), (2, 3, 3, 4)
    yield "invconv-conv-BL-fixed-diag", InvConv2d(2, 2, "BL", placement="conv", learn_diag=False), (2, 2, 3, 3)
    yield "actnorm", ActNorm(3), (2, 3, 3, 3)
    yield "coupling", AffineCoupling(3, width=8), (2, 3, 3, 3)
    yield "squeeze", Squeeze(), (2, 2, 4, 2)
    yield "conv1x1", Conv1x1(3), (2, 3, 2, 3)
    yield "logit", LogitTransform(0.05), (2, 1, 3, 3)
    yield "smooth-leaky-relu", SmoothLeakyReLU(0.1), (2, 3, 3, 4)
    yield "smooth-leaky-relu-mirrored", SmoothLeakyReLU(0.2, mirrored=True), (2, 3, 3, 4)


LAYER_NAMES = ["invconv-inverse-TL", "invconv-inverse-BR-k2x4", "invconv-conv-TR",
               "invconv-conv-BL-fixed-diag", "actnorm", "coupling", "squeeze", "conv1x1", "logit",
               "smooth-leaky-relu", "smooth-leaky-relu-mirrored"]


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layer_inverse_and_logdet(name):
    """Every property of invconv_core.testing.check_flow_layer (the checker users run on their
    own layers): inverse both ways, each direction's log-det against slogdet of the dense
    Jacobian per sample, the pair opposite, batch independence, gradcheck, finite."""
    layer, shape = {n: (lay, shp) for n, lay, shp in _layers()}[name]
    x = torch.rand(shape) if name == "logit" else torch.randn(shape)
    report = check_flow_layer(layer, x, perturb=0.1, seed=1)
    assert len(report.results) == 11, str(report)
    report.raise_if_failed()


def test_smooth_leaky_relu_inverts_far_out_exactly_and_refuses_a_bad_alpha():
    """Issue 21's activation: the inverse is exact to round-off over a wide range (Newton from
    above; softplus computed without torch's threshold), in float64 and float32; the slope stays
    in (alpha, 1), so the forward logabsdet lies in (n log alpha, 0)."""
    act = SmoothLeakyReLU(0.1)
    x = torch.cat([torch.linspace(-400, 400, 2001), torch.tensor([0.0, -1e-300, 1e-300, 25.0, 40.0])])
    for dtype in (torch.float64, torch.float32):
        xd = x.to(dtype).view(1, -1)
        z, ld = act(xd)
        back, ld_inv = act.inverse(z)
        # within 4 units of round-off (2.5 measured)
        tol = 4 * torch.finfo(dtype).eps * xd.abs().clamp_min(1)
        assert ((back - xd).abs() <= tol).all(), ((back - xd).abs() / tol).max()
        torch.testing.assert_close(ld_inv, -ld)
        assert (-ld < -xd.numel() * torch.log(torch.tensor(0.1, dtype=dtype))).all() and (ld < 0).all()
    # strictly increasing on a sorted grid
    g = torch.linspace(-50, 50, 10001).view(1, -1)
    assert torch.all(act(g)[0].diff() > 0)
    # non-finite inputs stay non-finite and stop nothing else from inverting
    z = torch.tensor([[float("nan"), 1.0, float("inf")]])
    back = act.inverse(z)[0]
    assert torch.isnan(back[0, 0]) and back[0, 2] == float("inf")
    torch.testing.assert_close(act(back[:, 1:2])[0], z[:, 1:2])
    for bad in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="alpha must be in"):
            SmoothLeakyReLU(bad)


def test_smooth_leaky_relu_mirrored_is_the_turned_function():
    """mirrored: z = −f(−x), slope α on the positive side and 1 on the negative one."""
    act, turned = SmoothLeakyReLU(0.1), SmoothLeakyReLU(0.1, mirrored=True)
    x = torch.linspace(-30, 30, 601, dtype=torch.float64).view(1, -1)
    z, ld = turned(x)
    torch.testing.assert_close(z, -act(-x)[0])
    torch.testing.assert_close(ld, act(-x)[1])
    slope = z.diff() / x.diff()
    assert slope[0, 0] > 0.99 and slope[0, -1] < 0.11  # 1 far left, α far right


def test_newton_stops_once_converged_in_float32_and_past_non_finite_values(monkeypatch):
    """The inverse's loop ends within a few steps: float32 iterates that flip by one ulp at the
    root, and a NaN or inf value (no root), used to run all max_iter steps (the CNN-only flows'
    sampling took ~1 s per 100 images, 100 steps per activation)."""
    act = SmoothLeakyReLU(0.1)
    calls = []
    real = SmoothLeakyReLU._newton_step
    monkeypatch.setattr(SmoothLeakyReLU, "_newton_step",
                        lambda self, x, z: calls.append(1) or real(self, x, z))
    g = torch.Generator().manual_seed(0)
    for z in (torch.randn(100, 8, 7, 7, generator=g) * 10,
              torch.tensor([[float("nan"), 2.0, float("-inf"), -3.0]])):
        calls.clear()
        x = act.inverse(z)[0]
        assert len(calls) <= 12, len(calls)  # 5-6 measured, + the final autograd step
        finite = torch.isfinite(z)
        torch.testing.assert_close(act(x)[0][finite], z[finite], rtol=4e-7, atol=4e-7)


def test_invconv_placement_decides_which_direction_solves():
    inv = InvConv2d(2, 3, "TL", placement="inverse").double()
    conv = InvConv2d(2, 3, "TL", placement="conv").double()
    conv.load_state_dict(inv.state_dict())
    x = torch.randn(2, 2, 5, 5)
    z_inv, ld_inv = inv(x)
    z_conv, ld_conv = conv(x)
    torch.testing.assert_close(inv.inverse(z_inv)[0], x)
    torch.testing.assert_close(z_inv, conv.inverse(x)[0])  # T⁻¹x either way
    torch.testing.assert_close(ld_inv, -ld_conv)


def test_invconv_is_invertible_for_any_parameter_value():
    layer = InvConv2d(3, 3, "TL").double()
    with torch.no_grad():
        layer.diag_param.fill_(-50.0)  # softplus → 0; the floor keeps the diagonal positive
    assert torch.all(layer.diag() >= layer.min_diag)
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(layer.inverse(layer(x)[0])[0], x)


def test_actnorm_init_is_a_buffer_that_survives_state_dict():
    a = ActNorm(2)
    a(torch.randn(8, 2, 3, 3) * 5 + 2)
    b = ActNorm(2)
    b.load_state_dict(a.state_dict())
    assert bool(b.initialized)
    before = b.bias.clone()
    b(torch.randn(8, 2, 3, 3))  # must not re-initialise
    torch.testing.assert_close(b.bias, before)


# The published step of each model, data→latent (models.py names the sources); (kind, order,
# placement) of every layer. Orders of the single k×k conv alternate TL, BR, TR, BL by step.
PUBLISHED_STEPS = {
    "inverse-flow": lambda o: [("InvConv2d", o, "inverse"), ("ActNorm",), ("Conv1x1",), ("AffineCoupling",)],
    "glow": lambda o: [("ActNorm",), ("Conv1x1",), ("AffineCoupling",)],
    "emerging": lambda o: [("ActNorm",), ("Conv1x1",), ("InvConv2d", "TL", "conv"),
                           ("InvConv2d", "BR", "conv"), ("AffineCoupling",)],
    "finc": lambda o: [("ActNorm",), ("Conv1x1",), ("InvConv2d", o, "conv"), ("AffineCoupling",)],
    # the CNN-only family: the convolution is the only layer that mixes (no coupling)
    # (the activation is mirrored on odd steps: orders BR and BL here)
    "cnn-inverse-flow": lambda o: [("InvConv2d", o, "inverse"), ("ActNorm",),
                                   ("SmoothLeakyReLU", o in ("BR", "BL"))],
    "cnn-finc": lambda o: [("InvConv2d", o, "conv"), ("ActNorm",), ("SmoothLeakyReLU", o in ("BR", "BL"))],
    "cnn-glow": lambda o: [("Conv1x1",), ("ActNorm",), ("SmoothLeakyReLU", o in ("BR", "BL"))],
}


def _describe(layer):
    if isinstance(layer, InvConv2d):
        return (type(layer).__name__, layer.order, layer.placement)
    if isinstance(layer, SmoothLeakyReLU):
        return (type(layer).__name__, layer.mirrored)
    return (type(layer).__name__,)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_each_model_builds_its_published_step(model):
    assert set(PUBLISHED_STEPS) == set(ALL_MODELS)
    for index, order in enumerate(["TL", "BR", "TR", "BL", "TL"]):
        layers = _step(model, 4, index, 8, 3)
        assert [_describe(lay) for lay in layers] == PUBLISHED_STEPS[model](order)
    flow = build_flow(FlowConfig(model=model, image_shape=(1, 8, 8), levels=2, steps=3, width=8))
    for level in flow.levels:  # a squeeze, then the steps, nothing else (no channel permutation)
        kinds = [_describe(lay) for lay in level.layers]
        expected = [("Squeeze",)] + sum((PUBLISHED_STEPS[model](o) for o in ["TL", "BR", "TR"]), [])
        assert kinds == expected


@pytest.mark.parametrize("model", MODELS)
def test_a_seed_gives_the_model_it_gave_before_the_registry(model, monkeypatch):
    """Parameters are drawn from the global RNG in construction order; 0.2 built each glow-like
    step's coupling before its other layers, and the registry keeps that order, so the
    published runs (README, bench/RESULTS.md) reproduce. (The registry's first form built the
    coupling last: every seed then gave another initialisation.)"""
    built = []
    for cls in (AffineCoupling, ActNorm, Conv1x1, InvConv2d):
        real = cls.__init__

        def record(self, *a, _real=real, _name=cls.__name__, **k):
            built.append(_name)
            _real(self, *a, **k)
        monkeypatch.setattr(cls, "__init__", record)
    layers = _step(model, 4, 1, 8, 3)
    assert built[0] == "AffineCoupling" and built[1:] == [type(x).__name__ for x in layers[:-1]]


def test_the_registry_refuses_a_second_model_of_one_name_and_an_unknown_family():
    from invconv_core.flows.models import register_model
    with pytest.raises(ValueError, match="model 'glow' is registered twice"):
        register_model("glow", "glow-like", True, "again")(lambda cfg, c, i: [])
    with pytest.raises(ValueError, match="family must be one of glow-like, cnn-only, got 'other'"):
        register_model("new", "other", False, "?")
    assert set(REGISTRY) == set(ALL_MODELS) and REGISTRY["glow"].summary != "again"


@pytest.mark.parametrize("model", ALL_MODELS)
def test_one_step_inverse_and_logdet_against_the_dense_jacobian(model, flow_checker):
    """One step of each model through the installed pytest fixture (ActNorm initialised on the
    example, then fixed; every parameter moved off its initialisation)."""
    torch.manual_seed(0)
    step = FlowSequence(_step(model, 4, 1, 8, 2))
    flow_checker(step, torch.randn(2, 4, 3, 3), perturb=0.1, seed=1)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_model_logdet_and_exact_inverse(model):
    """The whole model by check_flow_model (density = dense Jacobian + the prior against
    torch.distributions, the sampling path inverting the map), and sampling stays in [0, 1]."""
    torch.manual_seed(0)
    flow = build_flow(FlowConfig(model=model, image_shape=(1, 4, 4), levels=2, steps=2, width=8,
                                 kernel_size=2, n_bins=16))
    x = torch.rand(3, 1, 4, 4) * 0.9 + 0.05
    report = check_flow_model(flow, x, samples=3, seed=1, entropy_steps=0).raise_if_failed()
    # untrained cnn-glow's samples saturate the logit (every one of 8), so no sample maps back
    skipped = [r.property for r in report.results if r.passed is None]
    assert skipped == ([] if model != "cnn-glow" else ["sampling"]), str(report)
    s = flow.sample(4)
    assert s.shape == (4, 1, 4, 4) and torch.all((s >= 0) & (s <= 1))


def test_bits_per_dim_formula():
    # the uniform density on [0,1)^D has log p = 0: bpd = log2(n_bins) exactly
    assert bits_per_dim(torch.zeros(3), dims=784, n_bins=256).tolist() == [8.0] * 3
    # per image, not per batch: doubling the batch does not change the value
    lp = torch.tensor([-100.0, -200.0])
    bpd = bits_per_dim(lp, dims=64, n_bins=17)
    torch.testing.assert_close(bpd, -(lp - 64 * torch.log(torch.tensor(17.0))) / (64 * torch.log(torch.tensor(2.0))))
    with pytest.raises(ValueError, match="dims must be >= 1"):
        bits_per_dim(lp, dims=0, n_bins=17)
