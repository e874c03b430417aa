"""invconv_core.testing: every check shown failing on a planted fault (with its property named in
one line), passing on correct layers, and reachable the ways users reach it: the Python API, the
installed pytest fixture, and ``invconv-verify --layer/--model`` as a command."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given
from test_console_scripts import run

import invconv_core as ic
from invconv_core.flows import ActNorm, FlowConfig, InvConv2d, build_flow
from invconv_core.flows.bpd import dequantize
from invconv_core.flows.models import SplitPrior, _gaussian_logp
from invconv_core.testing import (DENSE_LIMIT, ExampleTooLarge, FlowCheckError, check_flow_layer,
                                  check_flow_model, detect_protocol, entropy_bound, tolerance)
from invconv_core.testing.strategies import operands



class Scale(torch.nn.Module):
    """z = x·exp(s) per channel (N, C, H, W): forward log-det H·W·Σ s. ``fault`` plants one bug."""

    def __init__(self, channels: int, fault: str | None = None):
        super().__init__()
        self.s = torch.nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.fault = fault

    def _logdet(self, x):
        s = self.s if self.fault != "missing-term" else self.s[:, 1:]  # one channel's term left out
        ld = (x.shape[2] * x.shape[3]) * s.sum()
        if self.fault == "sign":
            ld = -ld
        ld = ld.expand(x.shape[0])
        if self.fault == "batch-coupled":  # a log-det that sees the rest of the batch
            ld = ld + 0.1 * x.mean()
        return ld

    def forward(self, x):
        z = x * torch.exp(self.s)
        if self.fault == "nan":
            z = z.clone()
            z[0, 0, 0, 0] = float("nan")
        return z, self._logdet(x)

    def inverse(self, z):
        x = z * torch.exp(-self.s)
        if self.fault == "approximate-inverse":
            x = x + 1e-3
        return x, -self._logdet(x)


class _WrongGrad(torch.autograd.Function):
    """x·exp(s) with the gradient of s off by 10 %."""

    @staticmethod
    def forward(ctx, x, s):
        ctx.save_for_backward(x, s)
        return x * torch.exp(s)

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        return g * torch.exp(s), 1.1 * (g * x * torch.exp(s)).sum((0, 2, 3), keepdim=True)


class WrongGradScale(Scale):
    def forward(self, x):
        return _WrongGrad.apply(x, self.s), self._logdet(x)


class StillInitialising(ActNorm):
    """An ActNorm whose data-dependent initialisation runs on every batch (its flag never set)."""

    def forward(self, x):
        self._initialize(x)
        self.is_initialized = False
        return super().forward(x)


def _example(shape=(2, 3, 4, 4)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(3))


def test_correct_layers_pass_every_property():
    for layer in (Scale(3), InvConv2d(3, 3, "BR"), ActNorm(3)):
        report = check_flow_layer(layer, _example())
        assert report.passed, str(report)
        assert {r.property for r in report.results} == {"finite", "inverse", "log-det", "log-det pair",
                                                         "batch independence", "gradcheck"}


@pytest.mark.parametrize("fault, prop, direction", [
    ("sign", "log-det", "forward"),
    ("missing-term", "log-det", "forward"),
    ("approximate-inverse", "inverse", "inverse∘forward"),
    ("batch-coupled", "batch independence", "forward"),
    ("nan", "finite", "forward"),
])
def test_each_planted_layer_fault_is_caught_by_its_property(fault, prop, direction):
    report = check_flow_layer(Scale(3, fault), _example())
    assert not report.passed
    failed = [r for r in report.failures if r.property == prop and r.direction == direction]
    assert failed, str(report)
    line = failed[0].line()
    assert "\n" not in line and line.startswith(f"FAIL {prop}") and direction in line
    if prop in ("log-det", "inverse"):  # the worst element, measured against expected
        assert "at sample" in line and "worst" in line and "tolerance" in line
    with pytest.raises(FlowCheckError, match=prop):
        report.raise_if_failed()


def test_a_sign_flip_also_breaks_the_pair_and_a_coupled_logdet_is_named_so():
    flipped = check_flow_layer(Scale(3, "sign"), _example())
    assert flipped.failed("log-det") and not flipped.failed("log-det pair")  # both flipped: still opposite
    coupled = check_flow_layer(Scale(3, "batch-coupled"), _example())
    line = next(r for r in coupled.failures if r.property == "batch independence").line()
    assert "log-det" in line and "in the batch" in line


def test_an_actnorm_still_initialising_is_batch_coupled():
    report = check_flow_layer(StillInitialising(3), _example((3, 3, 4, 4)))
    assert report.failed("batch independence"), str(report)


def test_a_wrong_gradient_fails_gradcheck_naming_the_parameter():
    report = check_flow_layer(WrongGradScale(3), _example())
    failed = [r for r in report.failures if r.property == "gradcheck"]
    assert failed and all(r.property == "gradcheck" for r in report.failures), str(report)
    assert "d output / d s" in failed[0].line() and "finite differences" in failed[0].line()


def test_a_layer_without_inverse_is_said_so_and_its_forward_still_checked():
    class ForwardOnly(torch.nn.Module):
        def forward(self, x):
            return 3 * x, torch.full((x.shape[0],), x[0].numel() * math.log(3.0), dtype=x.dtype)

        def inverse(self, z):
            raise NotImplementedError

    report = check_flow_layer(ForwardOnly(), _example())
    assert report.failed("inverse") and not report.failed("log-det")
    assert check_flow_layer(ForwardOnly(), _example(), directions=("forward",)).passed


def test_a_layer_that_raises_is_a_failure_in_one_line_not_a_traceback():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shapes do not match\nsecond line")

        def inverse(self, z):
            return z, z.new_zeros(len(z))

    report = check_flow_layer(Broken(), _example())
    assert [r.line() for r in report.results] == [
        "FAIL finite               forward            raised RuntimeError: shapes do not match"]


def test_the_tolerance_comes_from_the_dtype_and_float32_skips_gradcheck():
    assert tolerance(torch.float64) == torch.finfo(torch.float64).eps ** (2 / 3)
    report = check_flow_layer(InvConv2d(3, 3, "TL"), _example(), dtype=torch.float32)
    assert report.passed and report.results[-1].passed is None and "float64" in report.results[-1].line()
    assert all(r.limit == tolerance(torch.float32) for r in report.results if not math.isnan(r.limit))


def test_the_layer_checked_is_a_copy_and_the_callers_rng_is_untouched():
    layer = ActNorm(3)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    check_flow_layer(layer, _example())
    assert torch.equal(torch.rand(3), expected)
    assert not layer.is_initialized and layer.bias.dtype == torch.float32 and torch.all(layer.logs == 0)


def test_an_example_too_large_for_a_dense_jacobian_is_refused_in_one_line():
    big = torch.empty(1, 1, 65, 64)  # 4,160 values per sample
    with pytest.raises(ExampleTooLarge) as info:
        check_flow_layer(Scale(1), big)
    msg = str(info.value)
    assert "\n" not in msg and "4,160" in msg and f"{DENSE_LIMIT:,}" in msg and "shrink" in msg
    with pytest.raises(ValueError, match="directions must be"):
        check_flow_layer(Scale(1), _example(), directions=("backward",))
    with pytest.raises(ValueError, match="example must be a floating-point tensor"):
        check_flow_layer(Scale(1), torch.zeros(2, 3, dtype=torch.int64))


def test_protocols_are_detected_from_the_defining_library():
    def fake(module):
        return type("Layer", (torch.nn.Module,), {"__module__": module, "inverse": lambda self, z: z})()
    assert [detect_protocol(fake(m)) for m in ("nflows.transforms.base", "normflows.flows", "zuko.flows",
                                               "FrEIA.modules", "mine")] == ["nflows", "normflows", "zuko",
                                                                            "freia", "invconv"]
    assert detect_protocol(torch.distributions.ExpTransform()) == "zuko"
    with pytest.raises(ValueError, match="protocol: cannot tell"):
        detect_protocol(torch.nn.Linear(2, 2))


# -- models ---------------------------------------------------------------------------------------

def _model(model="inverse-flow"):
    torch.manual_seed(0)
    return build_flow(FlowConfig(model=model, image_shape=(1, 4, 4), levels=2, steps=2, width=8, kernel_size=3))


def test_a_prior_with_unit_variance_is_caught(monkeypatch):
    """The prior term's log-prob ignores the learned log-scale while sample() uses it."""
    x = 0.05 + 0.9 * torch.rand(2, 1, 4, 4)
    assert check_flow_model(_model(), x, entropy_steps=0).passed

    def unit_variance(self, h):
        kept, out = h[:, :self.keep], h[:, self.keep:]
        mean, logs = self._stats(kept)
        return kept, _gaussian_logp(out, mean, torch.zeros_like(logs))
    monkeypatch.setattr(SplitPrior, "log_prob", unit_variance)
    report = check_flow_model(_model(), x, entropy_steps=0)
    assert report.failed("prior") and report.failed("density"), str(report)
    assert not report.failed("log-det") and not report.failed("inverse")


def _half_bin(k, n_bins, generator=None):
    """Dequantization over half a bin: u ~ U[0, 1/2)."""
    return (k + 0.5 * torch.rand(k.shape, generator=generator, dtype=k.dtype)) / n_bins


def test_dequantization_over_half_a_bin_breaks_the_entropy_bound():
    """Pixels uniform on two adjacent levels have 1 bit/dim; with noise over half a bin the
    trained model goes below it, with the whole bin it cannot."""
    wrong = entropy_bound(_model(), (1, 4, 4), dequantize=_half_bin)
    assert wrong.passed is False and wrong.measured < wrong.limit < 1, wrong.line()
    assert wrong.line().startswith("FAIL entropy bound") and "held-out bits/dim" in wrong.line()
    right = entropy_bound(_model(), (1, 4, 4), dequantize=dequantize)
    assert right.passed, right.line()


# -- the operator's strategies ------------------------------------------------------------------

@given(ops=operands(max_c=3, max_hw=5, max_k=4))
def test_the_operand_strategy_draws_solvable_problems(ops):
    y, weight, order = ops
    x = ic.inv_conv2d(y, weight, order)
    torch.testing.assert_close(ic.causal_conv2d(x, weight, order), y, rtol=1e-9, atol=1e-9)


# -- the ways users reach it --------------------------------------------------------------------

USER_CODE = textwrap.dedent('''
    import math
    import torch
    from invconv_core.flows import InvConv2d, FlowConfig, build_flow

    def good():
        return InvConv2d(3, 3, "TR")

    class Doubling(torch.nn.Module):
        """z = 2x with the log-det of z = x/2: a sign flip."""
        def forward(self, x):
            return 2 * x, torch.full((x.shape[0],), -x[0].numel() * math.log(2.0), dtype=x.dtype)
        def inverse(self, z):
            return z / 2, torch.full((z.shape[0],), z[0].numel() * math.log(2.0), dtype=z.dtype)

    def with_example():
        return good(), torch.randn(2, 3, 3, 3)

    def model():
        return build_flow(FlowConfig(model="glow", image_shape=(1, 4, 4), levels=2, steps=1, width=8))
''')


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "user_layers.py").write_text(USER_CODE)
    return tmp_path


def _verify(cwd, *args):
    return run("invconv-verify", *args, cwd=cwd)


def test_invconv_verify_checks_a_users_layer_from_the_shell(user_dir):
    ok = _verify(user_dir, "--layer", "user_layers:good", "--input-shape", "2,3,4,4", "--json", "r.json")
    assert ok.returncode == 0 and "VERIFIED: user_layers:good" in ok.stdout and ok.stderr == "", ok.stdout + ok.stderr
    assert '"passed": true' in (user_dir / "r.json").read_text()
    bad = _verify(user_dir, "--layer", "user_layers.py:Doubling", "--input-shape", "2,3,4,4")
    assert bad.returncode == 1 and "FAILED: user_layers.py:Doubling" in bad.stdout
    assert any(line.startswith("FAIL log-det") and "forward" in line for line in bad.stdout.splitlines())
    assert _verify(user_dir, "--layer", "user_layers:with_example").returncode == 0
    model = _verify(user_dir, "--model", "user_layers:model", "--input-shape", "2,1,4,4", "--entropy-steps", "0")
    assert model.returncode == 0 and "PASS density" in model.stdout, model.stdout + model.stderr


@pytest.mark.parametrize("args, message", [
    (["--layer", "user_layers:nope", "--input-shape", "2,3,4,4"],
     "--layer user_layers:nope: module 'user_layers' has no attribute 'nope'"),
    (["--layer", "missing.py:f", "--input-shape", "2,3,4,4"], "--layer missing.py:f: no file 'missing.py'"),
    (["--layer", "user_layers:good"],
     "--layer user_layers:good: --input-shape is required unless the factory returns (layer, example)"),
    (["--layer", "user_layers:good", "--input-shape", "1,3,64,64"], "exceed the dense-Jacobian limit of 4,096"),
    (["--layer", "user_layers:good", "--input-shape", "2,3,4,4", "--protocol", "keras"], "protocol must be auto or one of"),
    (["--layer", "user_layers:good", "--input-shape", "2,x"], "argument --input-shape: expected"),
    (["--layer", "user_layers:good", "--cases", "3"], "--cases and --deep apply to the operator checks"),
])
def test_invconv_verify_refuses_a_bad_layer_spec_in_one_line(user_dir, args, message):
    proc = _verify(user_dir, *args)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and message in last and last.startswith("invconv-verify: error:"), proc.stderr
    assert proc.stdout == ""


def test_the_flow_checker_fixture_is_installed_for_pytest(user_dir):
    (user_dir / "test_user.py").write_text(textwrap.dedent('''
        import torch
        from user_layers import Doubling, good

        def test_good(flow_checker):
            flow_checker(good(), torch.randn(2, 3, 4, 4))

        def test_doubling(flow_checker):
            flow_checker(Doubling(), torch.randn(2, 3, 4, 4))
    '''))
    # the interpreter of the installed package: its pytest11 entry point registers the fixture
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
                          capture_output=True, text=True, cwd=user_dir, timeout=300)
    assert proc.returncode == 1 and "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    assert "FlowCheckError" in proc.stdout and "FAIL log-det" in proc.stdout


def test_the_pytest_plugin_imports_neither_torch_nor_the_core():
    """pytest loads the plugin in every run of an environment that has invconv-core installed:
    loading it must cost nothing until a test asks for a fixture."""
    import importlib.metadata
    plugins = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "invconv_core"]
    assert [e.value for e in plugins] == ["invconv_core_pytestplugin"]
    code = ("import sys, invconv_core_pytestplugin as p; "
            "assert 'torch' not in sys.modules and 'invconv_core' not in sys.modules, sorted(sys.modules); "
            "print(p.flow_checker, p.flow_model_checker)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
