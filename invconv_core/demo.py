r"""The main job on the embedded default data (scikit-learn's bundled 8×8 handwritten digits,
1,797 real images), on a 2-core CPU in a few minutes (``tox -e demo`` or ``invconv-demo``):

1. the operator: blur the digits with a causal 3×3 kernel, undo it exactly with ``inv_conv2d``,
   time the inverse against ``F.conv2d``;
2. Inverse-Flow and Glow-1×1 at equal parameter count trained for the same epochs
   (``invconv-train``), test bits/dim of each, a sample grid of Inverse-Flow;
3. the paper's two-inv-conv-layer classifier (``invconv-classify``), test accuracy;
4. the forward/sampling time table against every baseline (``invconv-time``).

Outputs go to ``--out`` (default ``runs/demo``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import invconv_core as ic


def load_digits_tensor(dtype=torch.float32) -> torch.Tensor:
    """(1797, 1, 8, 8) images in [0, 1] from scikit-learn's bundled digits (16 grey levels)."""
    from sklearn.datasets import load_digits

    images = load_digits().images  # float64 in 0..16
    return torch.tensor(images, dtype=dtype).unsqueeze(1) / 16.0


def blur_kernel(channels: int, order: str = "TL", dtype=torch.float32) -> torch.Tensor:
    """A causal 3×3 blur: the current pixel with weight 1, its 8 causal neighbours 0.1 each
    (their total 0.8 < 1 keeps the inverse stable), mixing channel c from channels <= c."""
    w = torch.zeros(channels, channels, 3, 3, dtype=dtype)
    for c in range(channels):
        w[c, c] = 0.1
        w[c, :c] += 0.05 / max(c, 1)
    a, b = ic.ops.current_tap(order, 3, 3)
    w[:, :, a, b] = torch.eye(channels, dtype=dtype) + torch.tril(torch.full((channels, channels), 0.05, dtype=dtype), -1)
    return w


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def operator_demo(repeats: int = 20, upscale: int = 4) -> dict:
    """Part 1: exact deblurring of the digits, and timing against F.conv2d."""
    info = ic.backend_info()
    print(f"invconv_core {info['version']}  compiled core: {info['compiled']}  cuda: {info['cuda']}  "
          f"torch {info['torch']}  threads: {torch.get_num_threads()}")
    results = {}
    for dtype in (torch.float32, torch.float64):
        x = load_digits_tensor(dtype)
        for order in ("TL", "BR"):
            w = blur_kernel(1, order, dtype)
            y = ic.causal_conv2d(x, w, order)
            x_rec = ic.inv_conv2d(y, w, order)
            rel = ((x_rec - x).norm() / x.norm()).item()
            blur = ((y - x).norm() / x.norm()).item()
            results[(str(dtype), order)] = rel
            print(f"digits {tuple(x.shape)} {str(dtype):14s} order {order}: blur changed the images by "
                  f"{blur:.1%}; inverse recovers them to relative error {rel:.2e}, "
                  f"max |error| {(x_rec - x).abs().max().item():.2e}")

    print("\ntiming (median of %d, ms)         F.conv2d   causal_conv2d   inv_conv2d   inv/conv" % repeats)
    for scale, channels in ((1, 1), (upscale, 1), (upscale, 12)):
        x = load_digits_tensor()[:256]
        if scale > 1:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        x = x.repeat(1, channels, 1, 1)
        w = blur_kernel(channels)
        y = ic.causal_conv2d(x, w)
        padded = F.pad(y, (2, 0, 2, 0))
        t_conv = median_ms(lambda: F.conv2d(padded, w), repeats)
        t_causal = median_ms(lambda: ic.causal_conv2d(y, w), repeats)
        t_inv = median_ms(lambda: ic.inv_conv2d(y, w), repeats)
        print(f"  {tuple(x.shape)!s:24s}  {t_conv:8.3f}   {t_causal:12.3f}   {t_inv:10.3f}   {t_inv / t_conv:7.2f}x")
    return results


def main(argv=None) -> dict:
    import json
    import os

    from .flows import classify, timing, train
    from .flows.models import FlowConfig, build_flow
    from .flows.timing import matched_config, n_params

    parser = argparse.ArgumentParser(prog="invconv-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "demo"))
    parser.add_argument("--epochs", type=int, default=40, help="flow training epochs (each model)")
    parser.add_argument("--steps", type=int, default=8, help="K steps per level")
    parser.add_argument("--width", type=int, default=64, help="Inverse-Flow's coupling width")
    parser.add_argument("--classifier-epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=20, help="timing repeats (median is reported)")
    args = parser.parse_args(argv)

    print("== 1. the operator: undo a causal blur of the digits ==")
    operator_demo(args.repeats)

    print("\n== 2. Inverse-Flow vs Glow-1x1 on digits (equal parameters, equal epochs) ==")
    base = FlowConfig(model="inverse-flow", image_shape=(1, 8, 8), levels=2, steps=args.steps,
                      width=args.width, n_bins=17)
    glow_width = matched_config(base, "glow", n_params(build_flow(base))).width
    results = {}
    for model, width in (("inverse-flow", args.width), ("glow", glow_width)):
        out = os.path.join(args.out, model)
        print(f"-- {model} (coupling width {width}) --")
        results[model] = train.main(["--dataset", "digits", "--model", model, "--epochs", str(args.epochs),
                                     "--steps", str(args.steps), "--width", str(width), "--out", out,
                                     "--no-progress"])
    for model, m in results.items():
        print(f"{model:13s} params {m['parameters']:,}  test bits/dim {m['test_bpd']:.4f} "
              f"(17-level digits, {m['epochs']} epochs)  samples: {os.path.join(args.out, model, 'samples.png')}")

    print("\n== 3. two inv-conv layers + one linear layer classifier ==")
    cls = classify.main(["--dataset", "digits", "--epochs", str(args.classifier_epochs),
                         "--out", os.path.join(args.out, "classifier")])

    print("\n== 4. forward (FT) and sampling (ST) time per batch of 100 ==")
    rows = timing.main(["--shape", "digits", "--steps", str(args.steps), "--width", str(args.width),
                        "--repeats", "5"])
    summary = {"flows": {k: {key: v[key] for key in ("test_bpd", "parameters", "epochs")}
                         for k, v in results.items()},
               "classifier_test_accuracy": cls["test_accuracy"], "timing": rows}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
