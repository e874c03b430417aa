r"""The paper's timing table: forward time (FT, data→latent log-likelihood) and sampling time
(ST, latent→data) per batch, a training step (forward + backward + Adam), and parameter counts,
for Inverse-Flow and every baseline at equal size, in one run (:func:`time_models`; the
command line is ``invconv-time``).

"Equal size": each coupled baseline's coupling width is chosen so its parameter count is the
closest to the reference's (Inverse-Flow's; ``base``'s model). A model without couplings (the
CNN-only family) has no width to vary: its count is its architecture's, reported as it is.
Inputs are random data (timing does not depend on the values).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from .bpd import bits_per_dim
from .models import (FAMILY_BASELINE, MODELS, REGISTRY, FlowConfig, build_flow, family_of,
                     parameter_count)
from .validate import require_int

__all__ = ["time_models", "markdown", "matched_config", "equal_size_configs", "median_seconds",
           "n_params"]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_config(base: FlowConfig, model: str, target: int) -> FlowConfig:
    """``base`` with ``model`` and the coupling width whose parameter count is closest to
    ``target`` (parameters grow monotonically with the width: bisection)."""
    def count(width):  # on the meta device: nothing is allocated
        return parameter_count(dataclasses.replace(base, model=model, width=width))
    lo, hi = 1, max(2, base.width)
    while count(hi) < target:
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    width = min((lo, hi), key=lambda w: abs(count(w) - target))
    return dataclasses.replace(base, model=model, width=width)


def equal_size_configs(base: FlowConfig, models=MODELS) -> dict:
    """``{model: FlowConfig}`` for each of ``models`` at equal size: ``base.model`` (the
    reference, e.g. Inverse-Flow) keeps ``base``'s coupling width, every other coupled model
    gets the width whose parameter count is the closest to the reference's
    (:func:`matched_config`); a model without couplings keeps ``base`` (nothing to vary).
    Raises ValueError for an empty list, an unknown model or models of two families."""
    models = tuple(models)
    family_of(models)
    ref = parameter_count(base)
    return {m: matched_config(base, m, ref) if REGISTRY[m].coupled and m != base.model
            else dataclasses.replace(base, model=m) for m in models}


def _timed(fn, device) -> float:
    """Wall time of one call of ``fn()``, the device synchronised around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def median_seconds(fn, device, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call, with the
    device synchronised around each call."""
    fn()
    return float(np.median([_timed(fn, device) for _ in range(repeats)]))


def time_models(base: FlowConfig, device="cpu", batch: int = 100, repeats: int = 5,
                models=MODELS) -> list[dict]:
    """One row per model of ``models``: ``model``, ``width``, ``parameters``,
    ``forward_seconds``, ``sample_seconds``, ``train_step_seconds`` (medians of ``repeats`` for
    a batch of ``batch`` random images); ``width`` None for a model without couplings. Sized by
    :func:`equal_size_configs` (``base``'s model is the reference).

    The models are timed round by round -- each round one train step, one forward and one
    sampling call of every model in turn, after a warm-up round -- so a machine that speeds up
    or slows down during the measurement (shared machines drift by 10-30 % within a minute)
    shifts every model alike and the ratios between them stay put."""
    require_int("batch", batch, 1)
    require_int("repeats", repeats, 1)
    configs = equal_size_configs(base, models)
    device = torch.device(device)
    torch.manual_seed(0)
    x = torch.rand(batch, *base.image_shape, device=device) * 0.98 + 0.01
    runs = []
    for name, cfg in configs.items():
        model = build_flow(cfg).to(device)
        with torch.no_grad():
            model(x)  # ActNorm init
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def train_step(model=model, opt=opt, cfg=cfg):
            loss = bits_per_dim(model(x), model.dims, cfg.n_bins).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        runs.append((name, cfg, model, train_step, {"train": [], "forward": [], "sample": []}))
    for round_ in range(repeats + 1):  # round 0 warms up
        for name, cfg, model, train_step, times in runs:
            model.train()
            train_s = _timed(train_step, device)
            model.eval()
            with torch.no_grad():
                ft = _timed(lambda: model(x), device)
                st = _timed(lambda: model.sample(batch), device)
            if round_:
                times["train"].append(train_s)
                times["forward"].append(ft)
                times["sample"].append(st)
    return [{"model": name, "width": cfg.coupling_width, "parameters": n_params(model),
             "forward_seconds": float(np.median(t["forward"])),
             "sample_seconds": float(np.median(t["sample"])),
             "train_step_seconds": float(np.median(t["train"]))}
            for name, cfg, model, _, t in runs]


def markdown(rows, title: str) -> str:
    glow = next((r for r in rows if r["model"] in FAMILY_BASELINE.values()), None)
    lines = [f"{title}", "",
             "| model | coupling width | parameters | FT (ms / 100) | ST (ms / 100) | train step (ms / 100) | ST / Glow ST |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        rel = f"{r['sample_seconds'] / glow['sample_seconds']:.2f}×" if glow else "—"
        lines.append(f"| {r['model']} | {r['width'] or '—'} | {r['parameters']:,} | {r['forward_seconds'] * 1e3:.2f} | "
                     f"{r['sample_seconds'] * 1e3:.2f} | {r['train_step_seconds'] * 1e3:.2f} | {rel} |")
    return "\n".join(lines)
