r"""``invconv-time``: the paper's timing table — forward time (FT, data→latent log-likelihood)
and sampling time (ST, latent→data) per batch of 100, a training step (forward + backward +
Adam), and parameter counts, for Inverse-Flow and every baseline at equal size, in one run.

    invconv-time --shape mnist            # 1×28×28, L=2, K=16
    invconv-time --shape cifar10          # 3×32×32, L=3
    invconv-time --shape digits --steps 4 # small and quick (the demo)

"Equal size": each baseline's coupling width is chosen so its parameter count is the closest
to Inverse-Flow's. Inputs are random data (timing does not depend on the values).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from .bpd import bits_per_dim
from .models import MODELS, FlowConfig, build_flow

SHAPES = {"digits": ((1, 8, 8), 2, 17), "mnist": ((1, 28, 28), 2, 256),
          "cifar10": ((3, 32, 32), 3, 256), "imagenet32": ((3, 32, 32), 3, 256),
          "imagenet64": ((3, 64, 64), 4, 256)}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_config(base: FlowConfig, model: str, target: int) -> FlowConfig:
    """``base`` with ``model`` and the coupling width whose parameter count is closest to
    ``target`` (parameters grow monotonically with the width: bisection)."""
    def count(width):
        return n_params(build_flow(FlowConfig(**{**base.__dict__, "model": model, "width": width})))
    lo, hi = 1, max(2, base.width)
    while count(hi) < target:
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    width = min((lo, hi), key=lambda w: abs(count(w) - target))
    return FlowConfig(**{**base.__dict__, "model": model, "width": width})


def median_seconds(fn, device, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call, with the
    device synchronised around each call."""
    fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append(time.perf_counter() - t)
    return float(np.median(out))


def time_models(base: FlowConfig, device, batch=100, repeats=5, models=MODELS) -> list[dict]:
    torch.manual_seed(0)
    ref = n_params(build_flow(FlowConfig(**{**base.__dict__, "model": "inverse-flow"})))
    rows = []
    x = torch.rand(batch, *base.image_shape, device=device) * 0.98 + 0.01
    for name in models:
        cfg = FlowConfig(**{**base.__dict__, "model": name}) if name == "inverse-flow" else \
            matched_config(base, name, ref)
        model = build_flow(cfg).to(device)
        with torch.no_grad():
            model(x)  # ActNorm init
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def train_step():
            loss = bits_per_dim(model(x), model.dims, cfg.n_bins).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        train_s = median_seconds(train_step, device, repeats)
        model.eval()
        with torch.no_grad():
            ft = median_seconds(lambda: model(x), device, repeats)
            st = median_seconds(lambda: model.sample(batch), device, repeats)
        rows.append({"model": name, "width": cfg.width, "parameters": n_params(model),
                     "forward_seconds": ft, "sample_seconds": st, "train_step_seconds": train_s})
    return rows


def markdown(rows, title: str) -> str:
    glow = next((r for r in rows if r["model"] == "glow"), None)
    lines = [f"{title}", "",
             "| model | coupling width | parameters | FT (ms / 100) | ST (ms / 100) | train step (ms / 100) | ST / Glow ST |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        rel = f"{r['sample_seconds'] / glow['sample_seconds']:.2f}×" if glow else "—"
        lines.append(f"| {r['model']} | {r['width']} | {r['parameters']:,} | {r['forward_seconds'] * 1e3:.2f} | "
                     f"{r['sample_seconds'] * 1e3:.2f} | {r['train_step_seconds'] * 1e3:.2f} | {rel} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="invconv-time", description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="mnist")
    p.add_argument("--levels", type=int, default=None)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--width", type=int, default=64, help="Inverse-Flow's coupling width")
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    shape, levels, n_bins = SHAPES[args.shape]
    base = FlowConfig(model="inverse-flow", image_shape=shape, levels=args.levels or levels,
                      steps=args.steps, width=args.width, kernel_size=args.kernel_size, n_bins=n_bins)
    device = torch.device(args.device)
    rows = time_models(base, device, args.batch, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(markdown(rows, f"{args.shape} {'×'.join(map(str, shape))}, L={base.levels}, K={base.steps}, "
                         f"k={base.kernel_size}, batch {args.batch}, {name}, median of {args.repeats}"))
    return rows


if __name__ == "__main__":
    main()
