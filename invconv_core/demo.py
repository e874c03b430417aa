r"""Demonstration of the operator on real images: blur scikit-learn's bundled 8×8 handwritten
digits (1,797 images) with a causal 3×3 kernel, undo the blur exactly with ``inv_conv2d``, and
time the inverse against an ordinary ``F.conv2d`` of the same shape.

Run: ``python -m invconv_core.demo`` (or ``tox -e demo``).
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timing repeats (median is reported)")
    parser.add_argument("--upscale", type=int, default=4, help="also time at 8·upscale pixels per side")
    args = parser.parse_args(argv)

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

    print("\ntiming (median of %d, ms)         F.conv2d   causal_conv2d   inv_conv2d   inv/conv" % args.repeats)
    for scale, channels in ((1, 1), (args.upscale, 1), (args.upscale, 12)):
        x = load_digits_tensor()[:256]
        if scale > 1:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        x = x.repeat(1, channels, 1, 1)
        w = blur_kernel(channels)
        y = ic.causal_conv2d(x, w)
        padded = F.pad(y, (2, 0, 2, 0))
        t_conv = median_ms(lambda: F.conv2d(padded, w), args.repeats)
        t_causal = median_ms(lambda: ic.causal_conv2d(y, w), args.repeats)
        t_inv = median_ms(lambda: ic.inv_conv2d(y, w), args.repeats)
        print(f"  {tuple(x.shape)!s:24s}  {t_conv:8.3f}   {t_causal:12.3f}   {t_inv:10.3f}   {t_inv / t_conv:7.2f}x")
    return results


if __name__ == "__main__":
    main()
