"""Same-process A/B timing of two versions of the CPU kernel, beside F.conv2d.

    python bench/kernel_ab.py REV_A [REV_B] [--shapes 100,12,16 100,48,4] [--threads 2]

Timings on a shared 2-core machine drift by 10-30 % between runs (conv2d itself moves that
much), so two builds timed in separate runs cannot resolve a 5 % change. Here both versions run
in one process, interleaved call batch by call batch, and each line reports medians of 15
rounds. REV_A and REV_B are git revisions (REV_B defaults to the working tree); each version's
``cpp/`` is built as a test-only library (the ``INVCONV_TEST_LIBRARY`` switch of
``cpp/testing/``) under its own op namespace, with hidden symbols so the two cannot bind to each
other's functions. Before timing, every shape is checked to give the same bits in both
(``--allow-different`` when a change of summation order is intended).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

SHAPES = ("100,4,4", "100,4,14", "100,8,7", "100,12,16", "100,24,8", "100,48,4", "1,4,4", "1,12,64")


def _export(rev: str | None, dest: str) -> None:
    """cpp/ of `rev` (None: the working tree) into dest/cpp."""
    os.makedirs(dest)
    if rev is None:
        subprocess.run(["cp", "-r", os.path.join(REPO, "cpp"), dest], check=True)
    else:
        archive = subprocess.run(["git", "-C", REPO, "archive", rev, "cpp"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)


def _build(name: str, root: str):
    import torch
    from torch.utils.cpp_extension import load
    sys.path.insert(0, REPO)
    import build_flags
    wrapper = os.path.join(root, f"{name}.cpp")
    with open(wrapper, "w") as f:
        f.write(f"#define INVCONV_TEST_LIBRARY {name}\n#include \"cpp/cpu/wavefront_solve_cpu.cpp\"\n")
    load(name=name, is_python_module=False, verbose=False,
         sources=[wrapper, os.path.join(root, "cpp", "solve_plan.cpp")],
         extra_cflags=["-O3", "-fvisibility=hidden", *build_flags.CXX],
         extra_ldflags=["-fopenmp"], build_directory=root)
    return getattr(torch.ops, name).inv_conv2d


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev_a")
    p.add_argument("rev_b", nargs="?", default=None, help="default: the working tree")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), metavar="B,C,H")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--allow-different", action="store_true")
    args = p.parse_args(argv)
    shapes = []
    for s in args.shapes:
        try:
            B, C, H = (int(v) for v in s.split(","))
        except ValueError:
            p.error(f"--shapes: expected B,C,H (three integers), got {s!r}")
        shapes.append((B, C, H))

    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ops = {}
        for key, rev in (("a", args.rev_a), ("b", args.rev_b)):
            root = os.path.join(tmp, key)
            _export(rev, root)
            ops[key] = _build(f"invconv_ab_{key}", root)
        print(f"A = {args.rev_a}, B = {args.rev_b or 'working tree'}; {args.threads} threads, "
              f"float32, k = 3, TL; medians of 15 interleaved rounds")
        print("| B, C, H=W | A (µs) | B (µs) | conv2d (µs) | B / A | A / conv2d | B / conv2d |")
        print("|---|---|---|---|---|---|---|")
        for B, C, H in shapes:
            g = torch.Generator().manual_seed(0)
            w = torch.randn(C, C, 3, 3, generator=g) / (3 * C ** 0.5)
            w[:, :, 2, 2] += torch.eye(C)
            y = torch.randn(B, C, H, H, generator=g)
            same = torch.equal(ops["a"](y, w, "TL", False), ops["b"](y, w, "TL", False))
            if not same and not args.allow_different:
                print(f"{B},{C},{H}: the two versions give different results "
                      "(--allow-different to time them anyway)", file=sys.stderr)
                return 1
            calls = max(5, int(1e7 / (B * C * C * H * H * 9)))
            fns = {"a": lambda: ops["a"](y, w, "TL", False), "b": lambda: ops["b"](y, w, "TL", False),
                   "conv": lambda: F.conv2d(y, w, padding=1)}
            times = {k: [] for k in fns}
            with torch.no_grad():
                for _ in range(15):
                    for k, f in fns.items():
                        t0 = time.perf_counter()
                        for _ in range(calls):
                            f()
                        times[k].append((time.perf_counter() - t0) / calls * 1e6)
            m = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {B}, {C}, {H} | {m['a']:.1f} | {m['b']:.1f} | {m['conv']:.1f} | "
                  f"{m['b'] / m['a']:.3f} | {m['a'] / m['conv']:.2f} | {m['b'] / m['conv']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
