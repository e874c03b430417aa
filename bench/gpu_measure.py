"""Measurements of the GPU command (bench/gpu.py): the compiled CUDA core against cuDNN
`F.conv2d` at the flow shapes, its scaling with the image size, and the flows' timing table.

Every function returns plain data (lists of dicts, seconds), which gpu_report.py renders.
Times are medians of CUDA-event-timed calls on the current stream after warm-up; each
comparison (our op against conv2d) is taken in the same process, one shape after another.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from cases import operands

import invconv_core as ic

# (B, C, H = W, k): the shapes of the CUDA issue (CIFAR level 1, CIFAR-like 32², C = 48).
FLOW_SHAPES = [(100, 12, 16, 3), (100, 12, 32, 3), (100, 48, 8, 3)]
SCALING_SIZES = [16, 32, 64, 128, 256, 512]
SCALING_BATCHES = [1, 100]
SCALING_CHANNELS = 4


def seconds(fn, device: str = "cuda", repeats: int = 30, warmup: int = 3) -> float:
    """Median seconds of ``fn()``: on CUDA timed by events on the current stream around each
    call; on the CPU (to test this module without a GPU) by the wall clock."""
    for _ in range(warmup):
        fn()
    if device != "cuda":
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def _conv_fns(y, w):
    """conv2d of the same shape (bench/test_core_vs_conv2d.py): forward on the pre-padded
    input, and forward + backward (input and weight gradients) including the padding."""
    k = w.shape[-1]
    pad = (k - 1, 0, k - 1, 0)
    padded = F.pad(y.detach(), pad)
    weight = w.detach()

    def forward():
        return F.conv2d(padded, weight)

    def forward_backward():
        out = F.conv2d(F.pad(y, pad), w)
        return torch.autograd.grad(out.sum(), (y, w))

    return forward, forward_backward


def _inv_fns(y, w):
    def forward():
        return ic.inv_conv2d(y, w, "TL")

    def adjoint():
        return ic.inv_conv2d_transpose(y, w, "TL")

    def forward_backward():
        out = ic.inv_conv2d(y, w, "TL")
        return torch.autograd.grad(out.sum(), (y, w))

    return forward, adjoint, forward_backward


def measure_core(shapes=FLOW_SHAPES, dtype=torch.float32, repeats: int = 30,
                 device: str = "cuda") -> list[dict]:
    """One row per shape: seconds of conv2d forward / forward+backward and of inv_conv2d
    forward, adjoint (the input-gradient solve) and forward+backward, float32."""
    rows = []
    for B, C, H, k in shapes:
        w, y = operands(C, k, k, "TL", (B, C, H, H), dtype, device, requires_grad=True)
        conv_f, conv_fb = _conv_fns(y, w)
        inv_f, inv_adj, inv_fb = _inv_fns(y, w)
        with torch.no_grad():
            row = {"B": B, "C": C, "H": H, "k": k,
                   "conv_forward": seconds(conv_f, device, repeats),
                   "inv_forward": seconds(inv_f, device, repeats),
                   "inv_adjoint": seconds(inv_adj, device, repeats)}
        row["conv_forward_backward"] = seconds(conv_fb, device, repeats)
        row["inv_forward_backward"] = seconds(inv_fb, device, repeats)
        rows.append(row)
    return rows


def measure_scaling(sizes=SCALING_SIZES, batches=SCALING_BATCHES, C: int = SCALING_CHANNELS,
                    k: int = 3, repeats: int = 10, device: str = "cuda") -> list[dict]:
    """inv_conv2d forward and conv2d forward over image sizes m×m: seconds, and seconds per
    anti-diagonal (2m - 1 of them)."""
    rows = []
    for B in batches:
        for m in sizes:
            w, y = operands(C, k, k, "TL", (B, C, m, m), torch.float32, device)
            conv_f, _ = _conv_fns(y, w)
            inv_f, _, _ = _inv_fns(y, w)
            with torch.no_grad():
                inv = seconds(inv_f, device, repeats)
                conv = seconds(conv_f, device, repeats)
            rows.append({"B": B, "C": C, "H": m, "k": k, "inv_forward": inv, "conv_forward": conv,
                         "per_diagonal": inv / (2 * m - 1)})
            del w, y
    return rows


#: the banded kernel's small-batch targets (bench/sass_model.py --bands models the same shapes)
BAND_SHAPES = [(1, 4, 256, 256), (8, 12, 64, 64)]


def measure_bands(shapes=BAND_SHAPES, k: int = 3, repeats: int = 10, device: str = "cuda") -> list[dict]:
    """inv_conv2d forward, float32, at batches that leave SMs idle: in bands (the default) and
    with one block per image (INVCONV_CUDA_BANDS=0), side by side in one run; the banded result
    against the CPU core (`agrees`: relative error <= 1e-5)."""
    import os

    from cases import rel_err, to_np

    import invconv_core as ic
    rows = []
    for B, C, H, W in shapes:
        w, y = operands(C, k, k, "TL", (B, C, H, W), torch.float32, device)
        times, before = {}, os.environ.get("INVCONV_CUDA_BANDS")
        with torch.no_grad():
            try:
                for name, env in (("bands", "1"), ("one_block", "0")):
                    os.environ["INVCONV_CUDA_BANDS"] = env
                    times[name] = seconds(lambda: ic.inv_conv2d(y, w, "TL"), device, repeats)
                os.environ["INVCONV_CUDA_BANDS"] = "1"
                banded = ic.inv_conv2d(y, w, "TL")
            finally:
                os.environ.pop("INVCONV_CUDA_BANDS")
                if before is not None:
                    os.environ["INVCONV_CUDA_BANDS"] = before
            err = rel_err(to_np(banded), to_np(ic.inv_conv2d(y.cpu(), w.cpu(), "TL")))
        rows.append({"B": B, "C": C, "H": H, "W": W, "k": k, "bands": times["bands"],
                     "one_block": times["one_block"], "speedup": times["one_block"] / times["bands"],
                     "per_diagonal_bands": times["bands"] / (H + W - 1), "rel_err_vs_cpu": err,
                     "agrees": bool(err <= 1e-5)})
        del w, y
    return rows


def measure_flows(batch: int = 100, repeats: int = 5, device: str = "cuda",
                  datasets=("mnist", "cifar10")) -> dict[str, list[dict]]:
    """The flows' forward / sampling / train-step table (flows.timing.time_models) on CUDA for
    the MNIST- and CIFAR-shaped default models."""
    from invconv_core.flows.data import DATASET_INFO
    from invconv_core.flows.models import FlowConfig
    from invconv_core.flows.timing import time_models

    tables = {}
    for name in datasets:
        info = DATASET_INFO[name]
        base = FlowConfig(image_shape=info.image_shape, levels=info.levels, n_bins=info.n_bins)
        tables[name] = time_models(base, device=device, batch=batch, repeats=repeats)
    return tables
