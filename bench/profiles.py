"""Which (method, mode, shape) cases each benchmark profile runs, and the caps that keep the
slow baselines to sizes where they finish in seconds.

    smoke   tiny sizes, for CI (run with --benchmark-disable: each case executes once)
    quick   the default: ≤ 10 minutes on a 2-core CPU
    full    every C ∈ {1, 4, 12}, k ∈ {2, 3, 5}, B ∈ {1, 100}, m up to 256 (512 on a GPU)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from bench_methods import METHODS, MODES

SIZES = (4, 8, 16, 32, 64, 128, 256)
GPU_SIZES = SIZES + (512,)

# Caps, stated in bench/RESULTS.md. N = C·m² unknowns; nnz ≈ N·C·k² entries of T.
NAIVE_MAX_N = {"cpu": 4096, "cuda": 16384}   # dense LU is O(N³) time and O(N²) memory
SEQUENTIAL_MAX_WORK = 5e7                     # B·nnz: sequential substitution on one core
WAVEFRONT_MAX_WORK = 2e8                      # B·C²·k²·m²: the Python loop's gathers


@dataclass(frozen=True)
class Case:
    device: str
    method: str
    mode: str
    C: int
    k: int
    B: int
    m: int

    @property
    def id(self) -> str:
        return f"{self.device}-{self.method}-{self.mode}-C{self.C}-k{self.k}-B{self.B}-m{self.m}"

    def info(self) -> dict:
        d = asdict(self)
        d.update(pixels=self.m * self.m, unknowns=self.C * self.m * self.m)
        return d


def within_caps(c: Case) -> bool:
    N = c.C * c.m * c.m
    if c.method == "naive":
        return N <= NAIVE_MAX_N["cuda" if c.device == "cuda" else "cpu"]
    if c.method == "sequential":
        return c.device == "cpu" and c.B * N * c.C * c.k * c.k <= SEQUENTIAL_MAX_WORK
    if c.method == "wavefront":
        return c.B * c.C * c.C * c.k * c.k * c.m * c.m <= WAVEFRONT_MAX_WORK
    return c.device == "cuda" or c.m <= 256


def _grid(devices, Cs, ks, Bs, sizes_for):
    out = []
    for device in devices:
        for C in Cs:
            for k in ks:
                for B in Bs:
                    for m in sizes_for(device):
                        for method in METHODS:
                            for mode in MODES:
                                c = Case(device, method, mode, C, k, B, m)
                                if within_caps(c):
                                    out.append(c)
    return out


def cases(profile: str) -> list[Case]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = lambda d: GPU_SIZES if d == "cuda" else SIZES  # noqa: E731
    if profile == "smoke":
        return _grid(devices, (1, 4), (3,), (1,), lambda d: (4, 8))
    if profile == "quick":
        return (_grid(devices, (4,), (3,), (1,), sizes)
                + _grid(devices, (12,), (3,), (100,), lambda d: (4, 8, 16, 32, 64)))
    if profile == "full":
        return _grid(devices, (1, 4, 12), (2, 3, 5), (1, 100), sizes)
    raise ValueError(f"--bench-profile must be one of smoke, quick, full; got {profile!r}")
