"""Bad input: a clear exception that names the argument and what was expected -- through the
public API and through the raw registered ops (compiled core or fallback)."""

from __future__ import annotations

import pytest
import torch

import invconv_core as ic


def good(C=3, kh=2, kw=2, dtype=torch.float32):
    w = torch.randn(C, C, kh, kw, dtype=dtype) * 0.1
    w[:, :, kh - 1, kw - 1] += torch.eye(C, dtype=dtype)
    return torch.randn(2, C, 4, 4, dtype=dtype), w


ENTRY_POINTS = {
    "inv_conv2d": lambda y, w, o="TL": ic.inv_conv2d(y, w, o),
    "inv_conv2d_transpose": lambda y, w, o="TL": ic.inv_conv2d_transpose(y, w, o),
    "causal_conv2d": lambda y, w, o="TL": ic.causal_conv2d(y, w, o),
    "raw inv_conv2d op": lambda y, w, o="TL": torch.ops.invconv_core.inv_conv2d(y, w, o, False),
    "raw causal_conv2d op": lambda y, w, o="TL": torch.ops.invconv_core.causal_conv2d(y, w, o),
}
NAME = {"causal_conv2d": "x", "raw causal_conv2d op": "x"}


def _input_name(entry):
    return NAME.get(entry, "y")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
class TestBadInput:
    def test_input_ndim(self, entry):
        y, w = good()
        with pytest.raises(ValueError, match=rf"{_input_name(entry)} must be a 4-D \(N, C, H, W\) tensor, got shape \[3, 4, 4\]"):
            ENTRY_POINTS[entry](y[0], w)

    def test_weight_ndim(self, entry):
        y, w = good()
        with pytest.raises(ValueError, match=r"weight must be a 4-D \(C, C, kh, kw\) tensor"):
            ENTRY_POINTS[entry](y, w[..., 0])

    def test_weight_not_square_in_channels(self, entry):
        y, _ = good()
        with pytest.raises(ValueError, match=r"weight must have shape \(C, C, kh, kw\) with equal channel axes"):
            ENTRY_POINTS[entry](y, torch.randn(3, 4, 2, 2))

    def test_channel_mismatch(self, entry):
        y, _ = good(C=3)
        _, w = good(C=5)
        with pytest.raises(ValueError, match=rf"{_input_name(entry)} has 3 channels but weight has shape \[5, 5, 2, 2\]"):
            ENTRY_POINTS[entry](y, w)

    def test_empty_kernel(self, entry):
        y, _ = good()
        with pytest.raises(ValueError, match=r"weight must have kh >= 1 and kw >= 1"):
            ENTRY_POINTS[entry](y, torch.randn(3, 3, 0, 2))

    @pytest.mark.parametrize("order", ["tl", "XY", "", "TLX"])
    def test_unknown_order(self, entry, order):
        y, w = good()
        with pytest.raises(ValueError, match=r"order must be one of 'TL', 'TR', 'BL', 'BR'"):
            ENTRY_POINTS[entry](y, w, order)

    @pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64, torch.uint8])
    def test_non_floating_input(self, entry, dtype):
        y, w = good()
        with pytest.raises(TypeError, match=rf"{_input_name(entry)} must have a real floating dtype"):
            ENTRY_POINTS[entry](y.to(dtype), w.to(dtype))

    def test_dtype_mismatch(self, entry):
        y, w = good()
        with pytest.raises(TypeError, match=rf"{_input_name(entry)} and weight must have the same dtype, got torch\.float32 and torch\.float64"):
            ENTRY_POINTS[entry](y, w.double())

    def test_device_mismatch(self, entry):
        y, w = good()
        with pytest.raises(ValueError, match=rf"{_input_name(entry)} and weight must be on the same device"):
            ENTRY_POINTS[entry](y, w.to("meta"))


def test_order_must_be_a_string():
    y, w = good()
    with pytest.raises(ValueError, match="order must be one of"):
        ic.inv_conv2d(y, w, 0)


def test_singular_weight_check_is_opt_in():
    y, w = good()
    w[1, 1, 1, 1] = 0.0
    with pytest.raises(ValueError, match=r"zero, subnormal or not finite for channels \[1\]: the convolution is not invertible"):
        ic.inv_conv2d(y, w, check=True)
    # without the check the solve runs and the singularity shows as inf/NaN, as documented
    assert not torch.isfinite(ic.inv_conv2d(y, w)).all()
    w[1, 1, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="not invertible"):
        ic.check_invertible(w)


def test_check_respects_order():
    y, w = good()
    w[0, 0, 0, 0] = 0.0  # current tap of "BR", an ordinary tap of "TL"
    ic.inv_conv2d(y, w, "TL", check=True)
    with pytest.raises(ValueError, match=r"weight\[c, c, 0, 0\]"):
        ic.inv_conv2d(y, w, "BR", check=True)


@pytest.mark.parametrize("height,width", [(0, 3), (3, -1), (2.5, 3), (True, 3)])
def test_logabsdet_bad_size(height, width):
    _, w = good()
    with pytest.raises(ValueError, match=r"(height|width) must be an int >= 1"):
        ic.logabsdet(w, height, width)


def test_logabsdet_bad_weight():
    with pytest.raises(ValueError, match=r"weight must have shape \(C, C, kh, kw\)"):
        ic.logabsdet(torch.randn(3, 2, 2, 2), 4, 4)


@pytest.mark.parametrize("helper", ["logabsdet", "check_invertible"])
def test_weight_helpers_check_the_weight(helper):
    call = {"logabsdet": lambda w: ic.logabsdet(w, 4, 4), "check_invertible": ic.check_invertible}[helper]
    for shape in ((3, 3, 0, 2), (3, 3, 2, 0), (0, 0, 2, 2)):
        with pytest.raises(ValueError, match=r"weight must have C >= 1, kh >= 1 and kw >= 1"):
            call(torch.ones(shape))
    with pytest.raises(TypeError, match=r"weight must have a real floating dtype .* got torch.int64"):
        call(torch.ones(3, 3, 2, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"weight must be a torch.Tensor, got list"):
        call([[1.0]])


def test_check_refuses_a_subnormal_diagonal_and_a_non_finite_tap():
    """Issue 22 item 9: check=True accepted a diagonal of 1e-45 (47 of 48 outputs non-finite)
    and an inf in an off-current tap. The ignored entries may still hold anything."""
    w = torch.zeros(3, 3, 2, 2)
    w[:, :, 1, 1] = torch.eye(3)
    y = torch.randn(1, 3, 4, 4)
    ic.inv_conv2d(y, w, check=True)
    sub = w.clone()
    sub[1, 1, 1, 1] = 1e-45
    with pytest.raises(ValueError, match=r"zero, subnormal or not finite for channels \[1\]"):
        ic.inv_conv2d(y, sub, check=True)
    far = w.clone()
    far[2, 0, 0, 1] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite entry the convolution reads \(first at weight\[2, 0, 0, 1\]\)"):
        ic.check_invertible(far)
    ignored = w.clone()
    ignored[0, 2, 1, 1] = float("nan")  # above the current tap's channel diagonal: never read
    ic.check_invertible(ignored)
    assert torch.isfinite(ic.inv_conv2d(y, ignored, check=True)).all()


@pytest.mark.parametrize("kind", ["float8", "sparse", "sparse weight", "quantized"])
@pytest.mark.parametrize("op", ["inv_conv2d", "causal_conv2d"])
def test_float8_sparse_and_quantized_operands_are_type_errors(kind, op):
    """Issue 22 item 10: a NotImplementedError from the dispatcher ('Could not run ... with
    arguments from the SparseCPU backend'), make_plan's 'not implemented for Float8_e4m3fn' or a
    RuntimeError deep in conv2d before; now a TypeError naming the argument, in both ops."""
    w = torch.eye(2).view(2, 2, 1, 1)
    y = torch.randn(1, 2, 3, 3)
    name = "y" if op == "inv_conv2d" else "x"
    a, b, says = {
        "float8": (y.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn),
                   f"{name} must have a real floating dtype .* got torch.float8_e4m3fn"),
        "sparse": (y.to_sparse(), w, f"{name} must be a dense \\(strided\\) tensor, got layout torch.sparse_coo"),
        "sparse weight": (y, w.to_sparse(), "weight must be a dense \\(strided\\) tensor"),
        "quantized": (torch.quantize_per_tensor(y, 0.1, 0, torch.qint8), w,
                      f"{name} must be a dense floating tensor, got a quantized one"),
    }[kind]
    with pytest.raises(TypeError, match=says):
        getattr(ic, op)(a, b)
