"""The benchmarked baselines compute the same thing as the compiled core (a benchmark of a wrong
computation proves nothing). Runs with --benchmark-disable (CI); skipped under --benchmark-only."""

import numpy as np
import pytest
import torch
from bench_methods import METHODS, _FACTORIES, make_problem


def _as_np(t):
    return t.detach().cpu().double().numpy() if torch.is_tensor(t) else np.asarray(t, dtype=np.float64)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "compiled"])
def test_baseline_matches_compiled(method):
    B, C, m, k = 2, 3, 6, 3
    y, w, gx = make_problem(B, C, m, k, "cpu", dtype=torch.float64, seed=1)
    ref_f, ref_b, _ = _FACTORIES["compiled"](y, w, gx, "TL")
    f, b, fb = _FACTORIES[method](y, w, gx, "TL")
    x_ref = ref_f().numpy()
    gy_ref, gw_ref = (t.numpy() for t in ref_b())
    x = _as_np(f())
    if method == "sequential":  # returns (N, B) in wavefront order: compare sorted values
        from invconv_core.oracle import structure
        perm = structure(C, m, m, k, k, "TL")[3]
        full = np.empty((B, C * m * m))
        full[:, perm] = x.T
        x = full.reshape(x_ref.shape)
        gyp, gw = b()
        gy = np.empty((B, C * m * m))
        gy[:, perm] = gyp.T
        gy = gy.reshape(gy_ref.shape)
        gw = gw.reshape(gw_ref.shape)
    else:
        gy, gw = (_as_np(t) for t in b())
    for got, want in ((x, x_ref), (gy, gy_ref), (gw, gw_ref)):
        assert np.allclose(got, want, rtol=1e-9, atol=1e-9)
    assert len(fb()) == 2
