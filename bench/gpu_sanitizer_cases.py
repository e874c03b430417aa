"""A few small CUDA solves for compute-sanitizer (memcheck, racecheck), run by bench/gpu.py:
every dtype, every order, forward and adjoint, a kernel larger than the image, more images than
blocks would hold in one pass, and two multi-block cases: 1×4×96×80 and 2×48×6×6 leave the SMs
idle, so launch_config splits them into bands of rows over several blocks (6 and 3 bands an
image: tickets, progress flags and halo rows between blocks, docs/design.md §5); then, in
float32 with one block per image (INVCONV_CUDA_BANDS=0), the kernel's other two places for the
image: a ring of its last diagonals in shared memory (1×4×200×160: 512 KB of image) and the
global scratch (1×48×256×8: even the ring, 245 KB, is past 227 KiB beside the taps). Exits
non-zero if a result is not finite."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "verification"))

import torch  # noqa: E402
from cases import ORDERS, operands  # noqa: E402

import invconv_core as ic  # noqa: E402

assert ic.backend_info()["cuda"], "the compiled core has no CUDA kernels"
SHAPES = [(2, 3, 5, 6, 3), (1, 4, 96, 80, 3), (3, 2, 2, 3, 7), (2, 48, 6, 6, 3)]  # B, C, H, W, k
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    for B, C, H, W, k in SHAPES:
        for order in ORDERS:
            w, y = operands(C, k, k, order, (B, C, H, W), dtype, "cuda", seed=C + H)
            for out in (ic.inv_conv2d(y, w, order), ic.inv_conv2d_transpose(y, w, order)):
                if not torch.isfinite(out).all():
                    sys.exit(f"non-finite result: {dtype} {(B, C, H, W, k)} {order}")
os.environ["INVCONV_CUDA_BANDS"] = "0"  # read by the CUDA glue at every call: one block per image
for B, C, H, W, k in [(1, 4, 200, 160, 3), (1, 48, 256, 8, 3)]:
    w, y = operands(C, k, k, "TL", (B, C, H, W), torch.float32, "cuda", seed=C)
    for out in (ic.inv_conv2d(y, w, "TL"), ic.inv_conv2d_transpose(y, w, "TL")):
        if not torch.isfinite(out).all():
            sys.exit(f"non-finite result: float32 {(B, C, H, W, k)} TL")
torch.cuda.synchronize()
print("sanitizer cases done")
