"""invconv_core.testing on code nobody here wrote: representative layers and whole small models
of zuko, nflows, normflows and FrEIA, as their users build them, checked through each library's
own protocol. Skipped unless the libraries are installed: ``tox -e peers`` installs them at the
pinned versions of tox.ini and runs this file; docs/testing.md tabulates the outcome.

A layer either passes every property or fails exactly the properties stated here, each with its
reason (a discrepancy in the peer's code or convention, reproduced by the call in the test); a
failure is never made to pass by loosening the checker.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from invconv_core.testing import check_flow_layer, check_flow_model

warnings.filterwarnings("ignore", category=UserWarning)

D = 6  # vector flows: 6 features


def _vec(n=3):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(0))


def _img(n=2, c=4):
    return torch.randn(n, c, 4, 4, generator=torch.Generator().manual_seed(0))


def _data(n=3):
    return 0.05 + 0.9 * torch.rand(n, D, generator=torch.Generator().manual_seed(0))


def _expect(report, failing=()):
    """The report passes, or fails exactly the properties named in ``failing``."""
    assert {r.property for r in report.failures} == set(failing), str(report)


# -- nflows -----------------------------------------------------------------------------------

def _nflows_layers():
    nt = pytest.importorskip("nflows.transforms")
    from nflows.nn.nets import ResidualNet
    mask = torch.tensor([1, 0, 1, 0, 1, 0])
    return {
        "AffineCouplingTransform": (lambda: nt.AffineCouplingTransform(mask, lambda i, o: ResidualNet(i, o, 8)), _vec),
        "AdditiveCouplingTransform": (lambda: nt.AdditiveCouplingTransform(mask, lambda i, o: ResidualNet(i, o, 8)), _vec),
        "ActNorm": (lambda: nt.ActNorm(D), _vec),
        "LULinear": (lambda: nt.LULinear(D), _vec),
        "OneByOneConvolution": (lambda: nt.OneByOneConvolution(4), _img),
        "MaskedAffineAutoregressiveTransform": (lambda: nt.MaskedAffineAutoregressiveTransform(D, 8), _vec),
        "MaskedPiecewiseRationalQuadraticAutoregressiveTransform": (
            lambda: nt.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(D, 8, tails="linear", tail_bound=3.0), _vec),
        "PiecewiseRationalQuadraticCouplingTransform": (
            lambda: nt.PiecewiseRationalQuadraticCouplingTransform(mask, lambda i, o: ResidualNet(i, o, 8),
                                                                    tails="linear", tail_bound=3.0), _vec),
    }


NFLOWS = ["AffineCouplingTransform", "AdditiveCouplingTransform", "ActNorm", "LULinear", "OneByOneConvolution",
          "MaskedAffineAutoregressiveTransform", "MaskedPiecewiseRationalQuadraticAutoregressiveTransform",
          "PiecewiseRationalQuadraticCouplingTransform"]


def test_nflows_model():
    """A masked autoregressive flow with a standard-normal base. nflows' StandardNormal draws
    its noise with ``torch.randn`` in the default dtype, so a float64 model cannot sample:
    ``Flow.sample`` raises "mat1 and mat2 must have the same dtype" (nflows 0.14,
    distributions/normal.py). Everything else passes."""
    flows = pytest.importorskip("nflows.flows")
    torch.manual_seed(0)
    model = flows.MaskedAutoregressiveFlow(features=D, hidden_features=8, num_layers=2, num_blocks_per_layer=1)
    report = check_flow_model(model, _data(), entropy_steps=200)
    print(report)
    _expect(report, {"sampling"})
    assert "same dtype" in report.failures[0].detail
    # in float32 (the dtype its noise is drawn in) sampling works and maps back
    _expect(check_flow_model(model, _data(), dtype=torch.float32, entropy_steps=0))


# -- normflows --------------------------------------------------------------------------------

def _normflows_layers():
    nf = pytest.importorskip("normflows")
    return {
        "AffineCouplingBlock": (lambda: nf.flows.AffineCouplingBlock(nf.nets.MLP([3, 8, 6])), _vec),
        "MaskedAffineFlow": (lambda: nf.flows.MaskedAffineFlow(torch.tensor([1.0, 0] * 3), nf.nets.MLP([D, 8, D]),
                                                              nf.nets.MLP([D, 8, D])), _vec),
        "ActNorm": (lambda: nf.flows.ActNorm((4, 1, 1)), _img),
        "Invertible1x1Conv": (lambda: nf.flows.Invertible1x1Conv(4), _img),
        "Invertible1x1Conv-LU": (lambda: nf.flows.Invertible1x1Conv(4, use_lu=True), _img),
        "GlowBlock": (lambda: nf.flows.GlowBlock(4, 8), _img),
        "LULinearPermute": (lambda: nf.flows.LULinearPermute(D), _vec),
        "AutoregressiveRationalQuadraticSpline": (lambda: nf.flows.AutoregressiveRationalQuadraticSpline(D, 1, 8), _vec),
        "CoupledRationalQuadraticSpline": (lambda: nf.flows.CoupledRationalQuadraticSpline(D, 1, 8), _vec),
    }


NORMFLOWS = ["AffineCouplingBlock", "MaskedAffineFlow", "ActNorm", "Invertible1x1Conv", "Invertible1x1Conv-LU",
             "GlowBlock", "LULinearPermute", "AutoregressiveRationalQuadraticSpline", "CoupledRationalQuadraticSpline"]


def test_normflows_batchnorm_is_batch_coupled_by_design():
    """normflows.flows.BatchNorm normalises with the batch's statistics and its log-det leaves
    out their derivatives (its docstring says so); it has no inverse. So a sample's output and
    log-det depend on the rest of the batch, and the log-det is not the per-sample Jacobian's:
    ``check_flow_layer(nf.flows.BatchNorm(), torch.randn(3, 6), directions=("forward",))``."""
    nf = pytest.importorskip("normflows")
    report = check_flow_layer(nf.flows.BatchNorm(), _vec(), directions=("forward",))
    print(report)
    _expect(report, {"batch independence", "log-det"})


def test_normflows_model():
    nf = pytest.importorskip("normflows")
    torch.manual_seed(0)
    layers = []
    for i in range(2):
        mask = torch.tensor([(i + j) % 2 for j in range(D)], dtype=torch.float32)
        layers += [nf.flows.MaskedAffineFlow(mask, nf.nets.MLP([D, 8, D], init_zeros=True),
                                             nf.nets.MLP([D, 8, D], init_zeros=True)), nf.flows.ActNorm(D)]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(D), layers)
    report = check_flow_model(model, _data(), entropy_steps=200)
    print(report)
    _expect(report)


# -- zuko -------------------------------------------------------------------------------------

def _zuko_layers():
    zuko = pytest.importorskip("zuko")
    f = zuko.flows
    return {
        "MaskedAutoregressiveTransform": (lambda: f.MaskedAutoregressiveTransform(D, 0, hidden_features=(8,)), _vec),
        "MAF": (lambda: f.MAF(D, 0, transforms=2, hidden_features=(8,)).transform, _vec),
        "NSF": (lambda: f.NSF(D, 0, transforms=2, hidden_features=(8,)).transform, _vec),
        "RealNVP": (lambda: f.RealNVP(D, 0, transforms=2, hidden_features=(8,)).transform, _vec),
        "NICE": (lambda: f.NICE(D, 0, transforms=2, hidden_features=(8,)).transform, _vec),
    }


ZUKO = ["MaskedAutoregressiveTransform", "MAF", "NSF", "RealNVP", "NICE"]


def test_zuko_sospf_inverts_by_bisection_to_its_tolerance():
    """zuko's SOSPF (sum-of-squares polynomial flow) has a monotonic transform whose inverse is
    found by bisection to an absolute tolerance ``eps=1e-6`` (zuko.transforms.MonotonicTransform):
    its forward passes every property; its inverse is off by up to that tolerance, so the
    inverse property fails in float64 -- by design, stated, not a bug. (The full two-way
    check differentiates through the bisection: ~7 minutes on 2 cores, so only the forward
    direction runs here.)"""
    zuko = pytest.importorskip("zuko")
    from invconv_core.testing import layer_adapter
    torch.manual_seed(0)
    flow = zuko.flows.SOSPF(D, 0, transforms=2, hidden_features=(8,)).transform
    _expect(check_flow_layer(flow, _vec(), directions=("forward",), protocol="zuko"))
    adapter = layer_adapter(flow.double(), "zuko")
    x = _vec().double()
    with torch.no_grad():
        back = adapter.map("inverse")(adapter.map("forward")(x)[0])[0]
    err = float((back - x).abs().max())
    print(f"SOSPF inverse(forward(x)) worst error {err:.3g}")
    assert 1e-10 < err <= 2e-6, err


@pytest.mark.parametrize("name", ["MAF", "NSF", "RealNVP"])
def test_zuko_model(name):
    zuko = pytest.importorskip("zuko")
    torch.manual_seed(0)
    model = getattr(zuko.flows, name)(D, 0, transforms=2, hidden_features=(8,))
    report = check_flow_model(model, _data(), entropy_steps=200)
    print(report)
    _expect(report)


# -- FrEIA ------------------------------------------------------------------------------------

def _subnet(c_in, c_out):
    return torch.nn.Sequential(torch.nn.Linear(c_in, 8), torch.nn.ReLU(), torch.nn.Linear(8, c_out))


def _conv_subnet(c_in, c_out):
    return torch.nn.Sequential(torch.nn.Conv2d(c_in, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, c_out, 3, padding=1))


def _freia_layers():
    Fm = pytest.importorskip("FrEIA.modules")

    return {
        "AllInOneBlock": (lambda: Fm.AllInOneBlock([(D,)], subnet_constructor=_subnet), _vec),
        "GLOWCouplingBlock": (lambda: Fm.GLOWCouplingBlock([(D,)], subnet_constructor=_subnet), _vec),
        "RNVPCouplingBlock": (lambda: Fm.RNVPCouplingBlock([(D,)], subnet_constructor=_subnet), _vec),
        "NICECouplingBlock": (lambda: Fm.NICECouplingBlock([(D,)], subnet_constructor=_subnet), _vec),
        "ActNorm": (lambda: Fm.ActNorm([(4, 4, 4)]), _img),
        "IRevNetDownsampling": (lambda: Fm.IRevNetDownsampling([(4, 4, 4)]), _img),
        "AllInOneBlock-conv": (lambda: Fm.AllInOneBlock([(4, 4, 4)], subnet_constructor=_conv_subnet), _img),
    }


FREIA = ["AllInOneBlock", "GLOWCouplingBlock", "RNVPCouplingBlock", "NICECouplingBlock", "ActNorm",
         "IRevNetDownsampling", "AllInOneBlock-conv"]


# every peer layer that passes every property: (protocol, name) → its library's factory table
# (built after the library's importorskip, so the names are listed here for parametrize)
LAYER_TABLES = {"nflows": _nflows_layers, "normflows": _normflows_layers, "zuko": _zuko_layers,
                "freia": _freia_layers}
PEER_LAYERS = ([("nflows", n) for n in NFLOWS] + [("normflows", n) for n in NORMFLOWS] +
               [("zuko", n) for n in ZUKO] + [("freia", n) for n in FREIA])


@pytest.mark.parametrize("protocol, name", PEER_LAYERS, ids=[f"{p}-{n}" for p, n in PEER_LAYERS])
def test_peer_layer(protocol, name):
    make, example = LAYER_TABLES[protocol]()[name]
    torch.manual_seed(0)
    report = check_flow_layer(make(), example(), protocol=protocol)
    print(report)
    _expect(report)


def test_freia_soft_permutation_is_exact_to_float32_only():
    """FrEIA 0.2's AllInOneBlock(permute_soft=True) stores its random rotation as
    ``torch.FloatTensor(w)`` and its inverse as ``torch.FloatTensor(w.T)``
    (modules/all_in_one_block.py): once rounded to float32 the transpose is no longer the exact
    inverse and |det| is no longer 1, which its log-det assumes. So in float64 the inverse, both
    log-dets and their pair are off by ~1e-7 (float32's precision) -- a real discrepancy, the
    same whatever the default dtype the model is built in; checked in float32 it passes. Call:
    ``check_flow_layer(SequenceINN of two AllInOneBlock(permute_soft=True), torch.randn(3, 6))``."""
    Fm = pytest.importorskip("FrEIA.modules")
    Ff = pytest.importorskip("FrEIA.framework")
    torch.manual_seed(0)
    inn = Ff.SequenceINN(D)
    for _ in range(2):
        inn.append(Fm.AllInOneBlock, subnet_constructor=_subnet, permute_soft=True)
    report = check_flow_layer(inn, _vec(), protocol="freia")
    print(report)
    _expect(report, {"inverse", "log-det", "log-det pair"})
    assert all(1e-9 < r.measured < 1e-5 for r in report.failures), str(report)
    _expect(check_flow_layer(inn, _vec(), protocol="freia", dtype=torch.float32))


def test_normflows_composite_sums_its_logdet_in_float32():
    """normflows 1.7.3's ``flows.Composite`` accumulates the log-dets of its layers in
    ``torch.zeros(batch_size)`` -- the default dtype, float32 -- so a float64 composite returns a
    float32-rounded log-det (off by ~1e-8) whose gradient has the wrong dtype ("Double did not
    match Float"). Its layers alone pass. Call:
    ``check_flow_layer(nf.flows.Composite([nf.flows.ActNorm((6,)), nf.flows.MaskedAffineFlow(...)]), torch.randn(3, 6))``."""
    nf = pytest.importorskip("normflows")
    torch.manual_seed(0)
    mask = torch.tensor([1.0, 0] * 3)
    layers = [nf.flows.ActNorm((D,)), nf.flows.MaskedAffineFlow(mask, nf.nets.MLP([D, 8, D]), nf.nets.MLP([D, 8, D]))]
    report = check_flow_layer(nf.flows.Composite(layers), _vec(), protocol="normflows")
    print(report)
    failed = {r.property for r in report.failures}  # the pair too, where the two roundings differ
    assert {"log-det", "gradcheck"} <= failed <= {"log-det", "log-det pair", "gradcheck"}, str(report)
    for layer in layers:
        _expect(check_flow_layer(layer, _vec(), protocol="normflows"))


def test_invconv_verify_checks_a_peer_layer_from_the_shell(tmp_path):
    """The command on another library's layer, its protocol named: exit 0 and every property
    passed (nflows' affine coupling), exit 1 with the failing properties (normflows' BatchNorm,
    which has no inverse)."""
    pytest.importorskip("nflows")
    pytest.importorskip("normflows")
    from test_console_scripts import run
    (tmp_path / "peer_layers.py").write_text(
        "import torch\n"
        "import nflows.transforms as nt\n"
        "import normflows as nf\n"
        "from nflows.nn.nets import ResidualNet\n"
        "def coupling():\n"
        "    return nt.AffineCouplingTransform(torch.tensor([1, 0, 1, 0]), lambda i, o: ResidualNet(i, o, 8))\n"
        "def batchnorm():\n"
        "    return nf.flows.BatchNorm()\n")
    ok = run("invconv-verify", "--layer", "peer_layers:coupling", "--input-shape", "3,4", "--protocol", "nflows",
             cwd=tmp_path)
    assert ok.returncode == 0 and "(protocol nflows, float64)" in ok.stdout, ok.stdout + ok.stderr
    bad = run("invconv-verify", "--layer", "peer_layers:batchnorm", "--input-shape", "3,4", cwd=tmp_path)
    assert bad.returncode == 1 and "FAIL batch independence" in bad.stdout, bad.stdout + bad.stderr
