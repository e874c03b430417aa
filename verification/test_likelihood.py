"""Bits/dim verified end to end (issue 23): the likelihood of whole models against an independent
computation, the priors against their own sampling, the dequantization noise, a known-answer
training run, and invconv-verify's device enumeration.

Each test names the planted bug it catches (applied by hand, one at a time, never in the package):
  P1  flows/bpd.py dequantize: u ~ U[0, 0.5) instead of U[0, 1)   (half a bin)
  P2  flows/models.py SplitPrior.log_prob: unit variance (ignores the learned log-scale) while
      sample() uses it
  P3  selfcheck.py devices(): CUDA devices enumerated from 1 (skips cuda:0)
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from invconv_core import selfcheck
from invconv_core.flows import ALL_MODELS, FlowConfig, build_flow, dequantize, quantize
from invconv_core.testing import check_flow_model, entropy_bound


def _perturbed_model(model_name, shape, seed=0):
    """A float64 model whose every parameter is moved off its initialisation (ActNorm
    initialised from data first): the zero-initialised prior convolutions then predict a
    non-zero mean and log-scale, which a prior that ignores them gets wrong (P2)."""
    torch.manual_seed(seed)
    config = FlowConfig(model=model_name, image_shape=shape, levels=2, steps=2, width=8,
                        kernel_size=3, n_bins=256)
    model = build_flow(config).double()
    with torch.no_grad():
        model(torch.rand(8, *shape, dtype=torch.float64))  # data-dependent ActNorm init
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("model_name", ALL_MODELS)
@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 4, 4)])
def test_the_model_density_is_the_dense_jacobian_and_the_priors(model_name, shape):
    """invconv_core.testing.check_flow_model: log p(x) of each image against the slogdet of the
    dense Jacobian of the whole data→latent map (all factored-out latents and the top one) plus
    every prior term written with torch.distributions from the prior's own mean and log-scale.
    Catches P2 (and any log-det or prior term that is wrong, missing or counted twice)."""
    model = _perturbed_model(model_name, shape)
    x = torch.rand(3, *shape, dtype=torch.float64) * 0.9 + 0.05
    report = check_flow_model(model, x, samples=3, perturb=0.0, initialize=False, entropy_steps=0)
    assert not report.failed("density") and not report.failed("prior") and not report.failed("log-det"), str(report)


def test_split_prior_log_prob_is_the_density_sample_draws_from():
    """The same eps through sample() and back through log_prob() gives Normal(mean,
    exp(logs)).log_prob exactly; at temperature 1 the sample moments match the prior's mean and
    scale within 6 standard errors. Catches P2."""
    model = _perturbed_model("inverse-flow", (1, 4, 4))
    split = model.splits[0]
    kept = torch.randn(4, split.keep, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        mean, logs = split._stats(kept)
        assert float(logs.abs().max()) > 1e-3  # the check below means something
        torch.manual_seed(5)
        full = split.sample(kept, temperature=1.0)
        torch.manual_seed(5)
        eps = torch.randn_like(mean)
        torch.testing.assert_close(full[:, split.keep:], mean + torch.exp(logs) * eps, rtol=0, atol=0)
        kept_back, lp = split.log_prob(full)
        expected = Normal(mean, torch.exp(logs)).log_prob(full[:, split.keep:]).sum((1, 2, 3))
        torch.testing.assert_close(kept_back, kept, rtol=0, atol=0)
        torch.testing.assert_close(lp, expected, rtol=1e-12, atol=1e-12)

        n = 20000
        torch.manual_seed(6)
        draws = split.sample(kept[:1].expand(n, -1, -1, -1), temperature=1.0)[:, split.keep:]
        scale = torch.exp(logs[0])
        se_mean = scale / math.sqrt(n)
        se_std = scale / math.sqrt(2 * n)
        assert ((draws.mean(0) - mean[0]).abs() <= 6 * se_mean).all()
        assert ((draws.std(0) - scale).abs() <= 6 * se_std).all()


def test_dequantization_noise_covers_the_whole_bin():
    """u = dequantize(k)·n_bins − k over 10⁶ draws: min < 10⁻³, max > 1 − 10⁻³, mean within 6
    standard errors of 1/2, variance within 6 standard errors of 1/12 (U[0,1)); and
    quantize(dequantize(k)) == k. Catches P1 (its u has max 0.5, mean 0.25, variance 1/48)."""
    n, n_bins = 1_000_000, 256
    k = torch.randint(0, n_bins, (n,), generator=torch.Generator().manual_seed(0)).double()
    x = dequantize(k, n_bins, generator=torch.Generator().manual_seed(1))
    u = x * n_bins - k
    assert float(u.min()) >= -1e-9 and float(u.max()) < 1.0
    assert float(u.min()) < 1e-3 and float(u.max()) > 1 - 1e-3
    se_mean = math.sqrt(1 / 12 / n)
    se_var = math.sqrt((1 / 80 - 1 / 144) / n)  # Var((u - 1/2)²) for U[0,1): 1/80 - (1/12)²
    assert abs(float(u.mean()) - 0.5) <= 6 * se_mean, float(u.mean())
    assert abs(float(u.var()) - 1 / 12) <= 6 * se_var, float(u.var())
    assert torch.equal(quantize(x, n_bins), k)
    for bins in (2, 17):
        kk = torch.arange(bins, dtype=torch.float32).repeat(1000)
        assert torch.equal(quantize(dequantize(kk, bins), bins), kk)


def test_known_answer_training_never_beats_the_entropy():
    """invconv_core.testing.entropy_bound: 8-bit images 1×4×4 whose pixels are independent and
    uniform on {127, 128}: the discrete entropy is exactly 1 bit/dim, and a dequantized
    continuous model upper-bounds it in expectation. After 300 training steps the held-out
    bits/dim must be ≥ 1 − 6·SE (SE: the standard error of the per-image mean), and within 0.5
    bit of it (what a smooth flow leaves above a two-cell step density after 300 steps).
    Catches P1: with half-bin noise the data occupy 1.5 cells per pixel, and the model goes
    below the entropy (≈ log2 1.5 + its excess)."""
    torch.manual_seed(0)
    model = build_flow(FlowConfig(model="inverse-flow", image_shape=(1, 4, 4), levels=2, steps=2,
                                  width=16, kernel_size=3, n_bins=256))
    result = entropy_bound(model, (1, 4, 4), n_bins=256, steps=300, dequantize=dequantize)
    print(result.line())
    assert result.passed, result.line()
    assert result.measured <= 1.0 + 0.5, result.line()


@pytest.mark.parametrize("count, expected", [(0, ["cpu"]), (1, ["cpu", "cuda:0"]),
                                             (2, ["cpu", "cuda:0", "cuda:1"])])
def test_invconv_verify_enumerates_every_cuda_device(monkeypatch, count, expected):
    """Catches P3 (cuda:0 skipped: with one GPU, no GPU check would run)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    assert selfcheck.devices() == expected
