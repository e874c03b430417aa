"""The flow models in PyTorch's execution modes (issue 24 items 4-7): autocast, torch.compile
with fullgraph=True, TorchScript through the torch.ops form, and the layers' Python surface."""

from __future__ import annotations

import pytest
import torch

import invconv_core as ic
from invconv_core.flows import ALL_MODELS, FlowConfig, InvConv2d, build_flow, dequantize

SHAPE = (1, 8, 8)


def _model(name):
    torch.manual_seed(0)
    model = build_flow(FlowConfig(model=name, image_shape=SHAPE, levels=2, steps=2, width=8,
                                  kernel_size=3, n_bins=17))
    x = dequantize(torch.randint(0, 17, (8, *SHAPE)).float(), 17)
    return model.initialize(x), x


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_trains_under_cpu_autocast(name):
    """Before: Inverse-Flow, FInC and Emerging failed ('y and weight must have the same dtype,
    got BFloat16 and Float'). The ops compute in float32 under autocast (invconv_core/_autocast.py):
    the log-likelihood stays within 0.02 nats per dimension of the float32 one (bfloat16 keeps 8
    significant bits: its relative rounding is 2⁻⁸ ≈ 0.004; measured 0.001–0.005 nats/dim)."""
    model, x = _model(name)
    with torch.no_grad():
        reference = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_px = model(x)
    loss = -log_px.float().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(log_px).all()
    dims = x[0].numel()
    assert (log_px.float() - reference).abs().max() <= 0.02 * dims
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = model.sample(4)
    assert torch.isfinite(images).all()


def test_autocast_runs_the_ops_in_the_widest_dtype_and_errors_read_alike():
    w = torch.zeros(2, 2, 2, 2)
    w[:, :, 1, 1] = torch.eye(2)
    y = torch.randn(1, 2, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ic.inv_conv2d(y.bfloat16(), w).dtype == torch.float32
        assert ic.causal_conv2d(y.bfloat16(), w).dtype == torch.float32
        assert ic.inv_conv2d(y.double(), w).dtype == torch.float64
    # outside autocast mixed dtypes stay an error, worded the same by both ops
    for op in (ic.inv_conv2d, ic.causal_conv2d):
        with pytest.raises(TypeError, match=r"and weight must have the same dtype, got torch\.bfloat16 and torch\.float32"):
            op(y.bfloat16(), w)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_compiles_with_fullgraph(name):
    """Before: ActNorm's `if not bool(self.initialized)` broke the graph of every model. Once
    initialised (model.initialize), the forward and backward trace as one graph (dynamo with the
    eager backend: this checks the capture, the Inductor path is test_autograd's)."""
    model, x = _model(name)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    log_px = compiled(x)
    torch.testing.assert_close(log_px, model(x), rtol=1e-5, atol=1e-4)
    (-log_px.mean()).backward()
    torch._dynamo.reset()


def test_actnorm_initialisation_survives_a_checkpoint_and_compile():
    model, x = _model("inverse-flow")
    fresh = build_flow(model.config)
    fresh.load_state_dict(model.state_dict())
    actnorms = [m for m in fresh.modules() if type(m).__name__ == "ActNorm"]
    assert actnorms and all(m.is_initialized for m in actnorms)
    before = [m.bias.detach().clone() for m in actnorms]
    fresh.train()(x * 0.5)  # an initialised ActNorm is not initialised again
    assert all(torch.equal(m.bias, b) for m, b in zip(actnorms, before))


def test_torchscript_uses_the_torch_ops_form():
    """`torch.jit.script` cannot compile the Python wrappers (keyword-only arguments); the
    registered ops can be scripted directly, as README says."""
    class Inverse(torch.nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = torch.nn.Parameter(weight)

        def forward(self, y):
            return torch.ops.invconv_core.inv_conv2d(y, self.weight, "TL", False)

    w = torch.zeros(2, 2, 2, 2)
    w[:, :, 1, 1] = torch.eye(2)
    w[1, 0, 0, 0] = 0.3
    scripted = torch.jit.script(Inverse(w))
    y = torch.randn(2, 2, 4, 4)
    torch.testing.assert_close(scripted(y), ic.inv_conv2d(y, w), rtol=0, atol=0)


def test_the_layer_says_what_it_is():
    layer = InvConv2d(6, kernel_size=(2, 3), order="BR", placement="conv")
    assert repr(layer) == ("InvConv2d(6, kernel_size=(2, 3), order='BR', placement='conv', "
                           "learn_diag=True, min_diag=0.01)")
    assert "logabsdet" in InvConv2d.forward.__doc__ and InvConv2d.forward.__annotations__
    import importlib.resources
    assert importlib.resources.files("invconv_core").joinpath("py.typed").is_file()
