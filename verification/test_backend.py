"""Which implementation serves the ops: the compiled core must be the one in use (so a broken
build cannot pass as the fallback), and the fallback must work, warn once, and agree."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import torch
from cases import solve_tolerance, to_np
from invconv_core.oracle import DenseProblem

import invconv_core as ic


def test_compiled_core_is_in_use():
    info = ic.backend_info()
    assert info["compiled"] is True, f"compiled core not loaded: {info['load_error']}"
    assert info["load_error"] is None
    assert info["version"] == ic.__version__
    assert isinstance(info["cuda"], bool)
    # its autograd is the C++ kernel (cpp/autograd.cpp), not the fallback's Python formula
    w = torch.eye(2)[:, :, None, None].repeat(1, 1, 3, 3)
    x = ic.inv_conv2d(torch.randn(1, 2, 3, 3, requires_grad=True), w)
    assert "InvConv2dFunction" in x.grad_fn.name()


def test_fallback_warns_once_and_agrees_with_compiled():
    script = textwrap.dedent("""
        import warnings, torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import invconv_core as ic
        msgs = [str(w.message) for w in caught if "compiled core could not be loaded" in str(w.message)]
        assert len(msgs) == 1, msgs
        assert "INVCONV_DISABLE_COMPILED" in msgs[0]
        info = ic.backend_info()
        assert info["compiled"] is False and info["cuda"] is False
        torch.manual_seed(0)
        w = torch.randn(3, 3, 3, 3, dtype=torch.float64) * 0.1
        w[:, :, 0, 2] += torch.eye(3, dtype=torch.float64)
        y = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
        x = ic.inv_conv2d(y, w, "BL")
        torch.save({"x": x.detach(), "gy": torch.autograd.grad(x.sum(), y)[0]}, "out.pt")
    """)
    env = dict(os.environ, INVCONV_DISABLE_COMPILED="1")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=tmp)
        res = torch.load(os.path.join(tmp, "out.pt"))
    torch.manual_seed(0)
    w = torch.randn(3, 3, 3, 3, dtype=torch.float64) * 0.1
    w[:, :, 0, 2] += torch.eye(3, dtype=torch.float64)
    y = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    x = ic.inv_conv2d(y, w, "BL")
    gy = torch.autograd.grad(x.sum(), y)[0]
    # two float64 solves of the same well-conditioned system, each within the solve bound
    tol = 2 * solve_tolerance(DenseProblem(to_np(w), 5, 6, "BL").cond(), 27, torch.float64)
    for key, ours in (("x", x), ("gy", gy)):
        err = (res[key] - ours.detach()).norm() / ours.detach().norm()
        assert err <= tol, (key, err.item(), tol)


def test_fallback_schemas_match_the_compiled_ones():
    """The pure-PyTorch fallback defines the operators from _loader.SCHEMAS; they must be the
    schemas the compiled core registers (cpp/invconv.cpp), or code written against one would
    break on the other."""
    from invconv_core import _loader
    assert ic.backend_info()["compiled"], "needs the compiled core to compare against"
    registered = tuple(str(getattr(torch.ops.invconv_core, name).default._schema)
                       for name in ("causal_conv2d", "inv_conv2d"))
    assert registered == tuple("invconv_core::" + s for s in _loader.SCHEMAS)


def test_fallback_takes_half_types_with_gradients():
    """The pure-PyTorch fallback, as the dispatcher serves it (compiled core disabled), accepts
    float16/bfloat16 like the compiled core: forward and both gradients, in the half type, close
    to a float32 solve (README: half types accumulate in float32)."""
    script = textwrap.dedent("""
        import warnings, torch
        warnings.simplefilter("ignore")
        import invconv_core as ic
        assert ic.backend_info()["compiled"] is False
        torch.manual_seed(0)
        w = torch.randn(3, 3, 3, 3) * 0.1
        w[:, :, 0, 0] += torch.eye(3)  # the current tap of order BR
        y = torch.randn(2, 3, 5, 6)
        out = {}
        for dt in (torch.float16, torch.bfloat16):
            yy, ww = y.to(dt).requires_grad_(), w.to(dt).requires_grad_()
            x = ic.inv_conv2d(yy, ww, "BR")
            x.float().square().sum().backward()
            out[str(dt)] = (x.detach(), yy.grad, ww.grad)
        torch.save(out, "half.pt")
    """)
    env = dict(os.environ, INVCONV_DISABLE_COMPILED="1")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=tmp)
        res = torch.load(os.path.join(tmp, "half.pt"))
    torch.manual_seed(0)
    w = torch.randn(3, 3, 3, 3) * 0.1
    w[:, :, 0, 0] += torch.eye(3)  # the current tap of order BR
    y = torch.randn(2, 3, 5, 6)
    for dt, rel in ((torch.float16, 1e-2), (torch.bfloat16, 5e-2)):
        # the reference: the compiled core in float32 on the half-rounded inputs
        yy, ww = y.to(dt).float().requires_grad_(), w.to(dt).float().requires_grad_()
        x = ic.inv_conv2d(yy, ww, "BR")
        x.square().sum().backward()
        for got, ref in zip(res[str(dt)], (x.detach(), yy.grad, ww.grad)):
            assert got.dtype == dt
            assert (got.float() - ref).norm() <= rel * ref.norm(), (dt, (got.float() - ref).norm() / ref.norm())


def test_baseline_cpu_kernels_agree_with_the_dense_oracle():
    """The kernels are compiled for x86-64-v3 and for the baseline ISA (old CPUs); a current CPU
    runs the first, so the second is forced here (INVCONV_CPU_ISA=baseline, in a subprocess):
    every channel-vector mix and both directions against the dense float64 oracle, and the
    pipelined schedule (one image, 2 threads) bit-identical to the raster one (1 thread)."""
    script = textwrap.dedent("""
        import torch, invconv_core as ic
        assert ic.backend_info()["cpu_isa"] == "baseline", ic.backend_info()
        op = torch.ops.invconv_core.inv_conv2d
        out = {}
        for C in (1, 3, 12, 17):
            for dtype in (torch.float32, torch.float64):
                g = torch.Generator().manual_seed(C)
                w = (torch.randn(C, C, 3, 3, generator=g) * 0.2 / C ** 0.5).to(dtype)
                w[:, :, 2, 2] += torch.eye(C, dtype=dtype)
                y = torch.randn(5, C, 6, 9, generator=g).to(dtype)
                for t in (False, True):
                    out[(C, str(dtype), t)] = (w, y, op(y, w, "TL", t))
        torch.save(out, "out.pt")
        g = torch.Generator().manual_seed(0)
        w = torch.randn(8, 8, 3, 3, generator=g) * 0.1 + torch.eye(8)[:, :, None, None]
        y = torch.randn(1, 8, 40, 64, generator=g)  # 1.5e6 multiply-adds: pipelined on 2 threads
        for t in (False, True):
            torch.set_num_threads(1)
            raster = op(y, w, "BR", t)
            torch.set_num_threads(2)
            assert torch.equal(op(y, w, "BR", t), raster), t
    """)
    env = dict(os.environ, INVCONV_CPU_ISA="baseline")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=tmp)
        res = torch.load(os.path.join(tmp, "out.pt"))
    assert ic.backend_info()["cpu_isa"] in ("x86-64-v3", "baseline")
    for (C, dtype, transpose), (w, y, got) in res.items():
        dense = DenseProblem(to_np(w), 6, 9, "TL")
        expected = dense.solve_transpose(to_np(y)) if transpose else dense.solve(to_np(y))
        err = float(np.linalg.norm(to_np(got) - expected) / np.linalg.norm(expected))
        tol = solve_tolerance(dense.cond(), C * 9, got.dtype)
        assert err <= tol, (C, dtype, transpose, err, tol)
