"""A static model of the CUDA solve on an H100, from the kernel's machine code (SASS) -- a
**model, not a measurement**: no GPU ran anything here. It turns the SASS profile
(verification/sass_profile.py: the instructions each loop level of the solve kernel issues)
into estimated times at four flow shapes (SHAPES: the CUDA targets' shapes), for the kernel of
any git revision, so a change to the kernel is judged before a GPU is at hand.

    python bench/sass_model.py [--before REV] [--json FILE] [--markdown]
    python bench/sass_model.py --bands      (small batches: one block per image vs bands)

What it assumes (MACHINE below holds the numbers):

* One block per image on its own SM (the four shapes have B <= 132 SMs: one wave); the threads
  and the shared/global placement are the kernel's own launch_config (mirrored here for the
  kernel before the SASS rewrite, b78180e, which had 48 KiB, one channel per thread and no
  opt-in).
* Per anti-diagonal: each thread solves ceil(pairs / threads) (pixel, channel group) pairs in
  turn. A diagonal takes max(issue, latency) + a barrier:
    - issue: the instructions of one pair (the SASS loop levels: the hot loop's own code once,
      the taps' row loop kh times, the column loop and the dot loop once per neighbour -- with
      the dot loops' trip counts for C input channels -- and, in the old kernel, the M y loops
      over (C + 1) / 2 channels), times the warps each scheduler holds, one instruction per
      cycle per scheduler; a float64 FMA issues in 2 cycles (64 FP64 lanes per SM);
    - latency: one pair's dependent chain: per dot-loop iteration one load latency (no
      prefetch across iterations) plus the FMAs that accumulate into one channel, one after
      another; the old kernel's chain starts with the loads of y and M y, the new kernel's load
      of z overlaps the sum (x = z - sum).
  The instruction counts come as a [fewest, most] range over each loop's forward paths
  (branches not taken / all taken): the model gives a range, not a number.
* Every pixel counted with all its kh * kw - 1 neighbours (edge pixels have fewer: an
  overestimate of at most (kh - 1) / H).
* The new kernel's two image passes (z = M y before the wavefront, the output after it) and the
  staging of the taps: each thread's items one after another, a DRAM latency per item of pass 1
  (its loads in flight together), and no faster than the SM's share of DRAM bandwidth.
* The plan kernels: L^{-1} (:func:`lower_inverse_cycles`: formerly one thread per column,
  C^2 / 2 dependent float64 FMAs; now every column at once, C steps of a division, an FMA, a
  shared-memory load and a barrier) and the fold (old: C (c + 1) dependent FMAs in one thread;
  new: C), plus LAUNCH_US per kernel launch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "verification"))

MACHINE = {
    "name": "H100 SXM (model)",
    "sms": 132,
    "schedulers": 4,            # per SM, one warp instruction per cycle each
    "clock_ghz": 1.98,
    "fma32_latency": 4,         # cycles, dependent FFMA
    "fma64_latency": 8,         # cycles, dependent DFMA
    "fma64_issue": 2,           # cycles a warp's DFMA occupies its scheduler
    "lds_latency": 30,          # shared-memory load
    "generic_latency": 34,      # generic load that resolves to shared memory
    "l1_latency": 40,           # global load hitting L1 (the taps: read-only, reused by every pixel)
    "l2_latency": 260,          # global load hitting L2 (an image written by the block)
    "dram_latency": 600,        # global load from DRAM (y, read once)
    "barrier": 24,              # __syncthreads() once every warp has arrived
    "div64_latency": 80,        # a float64 division: MUFU.RCP64H, Newton steps and the rounding fix (≈ 10 DFMAs)
    "dram_gb_s": 3350.0,        # shared by the SMs that stream at once
    "launch_us": 2.0,           # per kernel launch, back to back on one stream
    "optin_shared": 227 * 1024,
    "default_shared": 48 * 1024,
}

# the CUDA targets' shapes: (B, C, H, W), k = 3 (8 causal neighbours), float32
SHAPES = [(100, 12, 16, 16), (100, 12, 32, 32), (100, 48, 8, 8), (1, 4, 256, 256)]
# cuDNN conv2d on an H100 at the first three (the CUDA issue's measurements; bench/RESULTS.md §4)
CONV2D_US = {(100, 12, 16, 16): 54.0, (100, 12, 32, 32): 79.0, (100, 48, 8, 8): 67.0}
K_SIZE = 3


@dataclass
class Launch:
    threads: int
    groups: int              # channel groups per pixel (channels per thread = C / groups)
    taps_in_shared: bool
    image: str               # "shared", "ring" (of the last kh + kw - 1 diagonals) or "global"

    @property
    def image_in_shared(self) -> bool:
        return self.image == "shared"

    @property
    def image_code(self) -> int:  # the kernel's template argument
        return {"global": 0, "shared": 1, "ring": 2}[self.image]


def launch_new(B, C, H, W, kh, kw, acc_size, shared_limit, cpt=4, ring=True) -> Launch:
    """cuda_kernels::launch_config (wavefront_kernel.cuh) of the kernel since the SASS rewrite
    (bench/test_sass_model.py checks it against the compiled one). With cpt=1, ring=False and
    48 KiB it is the launch of the kernel before the SASS rewrite (one channel per thread, taps
    [kh kw + 1][C][C]: the packed size at one channel per group): :func:`launch_old`."""
    G = -(-C // cpt)
    widest = min(H, W) * G
    threads = max(1, min(-(-widest // 32) * 32, 1024))
    taps = (kh * kw + 1) * G * C * cpt * acc_size
    image = H * W * C * acc_size
    ring_bytes = (kh + kw - 1) * H * C * acc_size
    t_sh = taps <= shared_limit
    used = taps if t_sh else 0
    where = "shared" if used + image <= shared_limit else \
        "ring" if ring and ring_bytes < image and used + ring_bytes <= shared_limit else "global"
    return Launch(threads, G, t_sh, where)


@dataclass
class BandLaunch:
    """cuda_kernels::band_config: bands of `rows` rows per image, one block each."""
    threads: int            # compute + the two comm warps
    compute: int            # threads that solve pairs
    split: int              # threads per pair
    rows: int
    bands: int
    groups: int
    taps_in_shared: bool
    image: str = "band"

    @property
    def image_code(self) -> int:
        return 3


def launch_band(B, C, H, W, kh, kw, acc_size, shared_limit, sms=132, max_threads=1024):
    """The mirror of cuda_kernels::band_config (wavefront_kernel.cuh) for a device of `sms`
    multiprocessors: a BandLaunch, or None where the kernel keeps one block per image
    (bench/test_sass_model.py checks it against the compiled one)."""
    taps, halo, G = kh * kw - 1, kh - 1, -(-C // 4)
    max_threads = min(max_threads, 512)  # kMaxThreadsBand
    comm = (max(1, -(-halo * C // (32 * 4))) + 1) * 32  # band_comm_threads
    if taps < 1 or sms <= 0 or 2 * B > sms or max_threads < comm + 32:
        return None
    S = min(8, taps)
    max_pairs = (max_threads - comm) // S
    fill = -(-H // (sms // B))
    h = max(fill, max(1, 128 // (S * G)))  # kBandThreads
    if min(h, W) * G > max_pairs:
        h = max(1, max_pairs // G)
    h = max(h, max(halo, 1))

    def compute_for(rows):
        pairs = min(min(rows, W) * G, max_pairs)
        return min(-(-pairs * S // 32) * 32, max_threads - comm)

    def size(rows, taps_shared):
        values = ((kh * kw + 1) * G * C * 4 if taps_shared else 0) + compute_for(rows) * 4 + \
            (halo + rows) * W * C
        return values * acc_size + 4

    taps_shared = size(max(halo, 1), True) <= shared_limit
    while h > max(halo, 1) and size(h, taps_shared) > shared_limit:
        h = max(max(halo, 1), h // 2)
    if size(h, taps_shared) > shared_limit:
        return None
    bands = -(-H // h)
    if bands < 2:
        return None
    compute = compute_for(h)
    return BandLaunch(compute + comm, compute, S, h, bands, G, taps_shared)


def model_band(profile: dict, shape, launch: BandLaunch, acc_size: int = 4, m: dict = MACHINE) -> dict:
    """Estimated time of one banded solve (kImageBand) at `shape`, as model_solve's dict. Per
    band and anti-diagonal (the bands run in lockstep, each trailing the one above):
      * the pairs' threads: their taps (ceil(taps / split) of them) -- the tap loop's path and
        its dot loops (issue: the warps each scheduler holds; latency: per dot iteration a
        shared-memory load, then the FMAs into one accumulator) -- while the copier warps store
        the halo values they loaded during the diagonal before (waiting only for what of the L2
        latency that diagonal did not cover) and poll the band above (low: never, its value
        answering many diagonals; high: one L2 round trip a diagonal);
      * a barrier; each channel's sum of the split partial sums (shared-memory loads, split
        dependent adds, x = z - sum) and the round's own instructions (the SASS loop around the
        tap loop); a barrier;
      * the publishing warp's release fence overlaps both (it is its own warp).
    Plus, down the bands: per band the two diagonals it trails the band above by and a hand-off
    (its publish fence and a poll, two L2 round trips); pass 1 (z = M y of the band's rows, as
    model_solve's), staging the taps, the ticket
    (an L2 atomic), the plan kernels and launches (the fold kernel zeroes the flags)."""
    B, C, H, W = shape
    kh = kw = K_SIZE
    nb = kh * kw - 1
    S, h = launch.split, launch.rows
    per_thread_taps = -(-nb // S)
    fma_lat = m["fma64_latency"] if acc_size == 8 else m["fma32_latency"]
    dot_instr, dot_iters = _dot(profile["dot_loops"], C)
    fma_extra = (m["fma64_issue"] - 1) * per_thread_taps * C * 4 if acc_size == 8 else 0
    outer = profile.get("outer_path", [0, 0])
    per_thread = [per_thread_taps * (profile["pair_path"][k] + dot_instr) + outer[k] + fma_extra
                  for k in (0, 1)]
    lat_t = m["lds_latency"] if launch.taps_in_shared else m["l1_latency"]
    lat_load = max(m["lds_latency"], lat_t)
    partial = per_thread_taps * sum(lat_load + it * fma_lat for it in dot_iters)
    summed = m["lds_latency"] + S * fma_lat + fma_lat
    sched = m["schedulers"]
    slots = launch.compute // S
    cycles = [0.0, 0.0]
    for d in range(h + W - 1):  # one band's diagonals (a full band: the widest)
        pixels = min(h - 1, d) - max(0, d - (W - 1)) + 1
        pairs = pixels * launch.groups
        rounds = -(-pairs // slots)
        warps = -(-min(pairs, slots) * S // 32)
        per_sched = -(-warps // sched)
        for k in (0, 1):
            rest = rounds * (max(per_sched * per_thread[k], partial) + 2 * m["barrier"] + summed)
            poll = (0, m["l2_latency"])[k]
            copy = m["lds_latency"] + poll + max(0, m["l2_latency"] - rest)  # loaded a diagonal ago
            cycles[k] += max(rest, copy + 2 * m["barrier"] + summed)
    # the critical path: the first band's diagonals, then each further band's own last rows
    # (h more diagonals each) -- (H + W - 1) diagonals in all -- plus, per band below the
    # first, the two diagonals it trails the band above by (its halo loaded a diagonal ahead)
    # and a hand-off (the publish fence and a poll)
    per_diag = [c / (h + W - 1) for c in cycles]
    handoff = 2 * m["l2_latency"]
    wave = [per_diag[k] * (H + W - 1 + 2 * (launch.bands - 1)) + (launch.bands - 1) * handoff
            for k in (0, 1)]
    active = min(B * launch.bands, m["sms"])
    bw_cycles_per_byte = m["clock_ghz"] * 1e9 / (m["dram_gb_s"] * 1e9 / active)
    items = h * W * launch.groups
    pass1 = max(-(-items // launch.threads) * (m["dram_latency"] + 4 * fma_lat),
                h * W * C * 4 * bw_cycles_per_byte)
    taps_values = (kh * kw + 1) * launch.groups * C * 4
    stage = (m["l2_latency"] + taps_values / launch.threads * 4) if launch.taps_in_shared else 0
    fixed = pass1 + stage + m["l2_latency"] + 2 * m["barrier"]  # + the ticket
    waves = -(-(B * launch.bands) // m["sms"])
    plan_cycles = lower_inverse_cycles(C, parallel=True, m=m) + C * m["fma64_latency"] + m["l2_latency"]
    us = lambda c: c / (m["clock_ghz"] * 1e3)  # noqa: E731
    plan_us = us(plan_cycles) + 3 * m["launch_us"]  # the two plan kernels (the fold zeroes the flags), the solve
    low, high = (waves * us(wave[k] + fixed) + plan_us for k in (0, 1))
    return {"shape": list(shape), "threads": launch.threads, "bands": launch.bands, "rows": h,
            "split": S, "taps_in_shared": launch.taps_in_shared, "image": "band",
            "instr_per_thread": per_thread, "chain_cycles_per_diagonal": per_diag,
            "plan_us": plan_us, "passes_us": us(fixed), "low_us": low, "high_us": high,
            "per_diagonal_us": [(t - plan_us) / (waves * (H + W - 1)) for t in (low, high)]}


# the small-batch shapes of the banded kernel's targets: B = 1 at 4 x 256^2, B = 8 at 12 x 64^2
SMALL_BATCHES = [(1, 4, 256, 256), (8, 12, 64, 64)]


def model_small_batches(profiles: list[dict], acc: str = "float") -> list[dict]:
    """One block per image against bands, both from the same (current) kernel's SASS."""
    acc_size = 8 if acc == "double" else 4
    rows = []
    for shape in SMALL_BATCHES:
        B, C, H, W = shape
        one = launch_new(B, C, H, W, K_SIZE, K_SIZE, acc_size, MACHINE["optin_shared"])
        band = launch_band(B, C, H, W, K_SIZE, K_SIZE, acc_size, MACHINE["optin_shared"], MACHINE["sms"])
        rows.append({"shape": shape,
                     "one_block": model_solve(pick(profiles, acc, one, True), shape, one, True, acc_size),
                     "bands": model_band(pick(profiles, acc, band, True), shape, band, acc_size)})
    return rows


def markdown_small_batches(rows: list[dict]) -> str:
    out = ["| shape (B, C, H=W) | one block per image: modelled solve (per anti-diagonal) | "
           "bands: launch | bands: modelled solve (per anti-diagonal) | speed-up (fewest paths; most) |",
           "|---|---|---|---|---|"]
    for r in rows:
        o, b = r["one_block"], r["bands"]
        B, C, H, _ = r["shape"]
        out.append(
            f"| {B}, {C}, {H} | {o['low_us']:.0f}–{o['high_us']:.0f} µs ({o['per_diagonal_us'][0]:.2f}–"
            f"{o['per_diagonal_us'][1]:.2f} µs) | {B} × {b['bands']} blocks of {b['rows']} rows, "
            f"{b['threads']} threads, {b['split']} a pair | {b['low_us']:.0f}–{b['high_us']:.0f} µs "
            f"({b['per_diagonal_us'][0]:.2f}–{b['per_diagonal_us'][1]:.2f} µs) | "
            f"{o['low_us'] / b['low_us']:.1f}×; {o['high_us'] / b['high_us']:.1f}× |")
    return "\n".join(out)


def launch_old(B, C, H, W, kh, kw, acc_size, shared_limit=48 * 1024) -> Launch:
    """The launch of the kernel before the SASS rewrite (b78180e)."""
    return launch_new(B, C, H, W, kh, kw, acc_size, shared_limit, cpt=1, ring=False)


def _dot(loops: list[dict], channels: int) -> tuple[int, list[int]]:
    """(instructions, channels per iteration of each iteration run) of the dot loops for
    `channels` input channels: the widest loop first, the rest to the narrower ones (the
    compiler's unrolled loop and its remainder loops); what none covers is straight-line code
    counted in the enclosing loop's path."""
    instr, iters, rest = 0, [], channels
    for lp in loops:
        n = rest // lp["channels"]
        instr += n * lp["instructions"]
        iters += [lp["channels"]] * n
        rest -= n * lp["channels"]
    if rest:
        iters.append(rest)
    return instr, iters


def pick(profiles: list[dict], acc: str, launch: Launch, new: bool) -> dict:
    prefix = f"wavefront_solve_kernel<{acc}, {acc}"
    for p in profiles:
        if not p["short"].startswith(prefix):
            continue
        if not new:
            return p
        if p["short"].startswith(f"{prefix}, {str(launch.taps_in_shared).lower()}, "
                                 f"{launch.image_code}, int>"):
            return p
    raise LookupError(f"no solve kernel {prefix} for {launch}")


def lower_inverse_cycles(C: int, parallel: bool = True, m: dict = MACHINE) -> float:
    """Cycles of lower_inverse_kernel at C channels (one block). One thread per column (its
    former form): the longest column's C^2 / 2 dependent float64 FMAs, each result written and
    read back through L1, plus its divisions. Every column at once (the kernel now): C + 1
    steps, each a shared-memory load, a division, a dependent FMA and a barrier (at most C^2 / 4
    updates a step over up to 1024 threads: one or more rounds), and the result written out."""
    if not parallel:
        return (C * C / 2) * m["fma64_latency"] + C * m["div64_latency"] + m["l2_latency"]
    rounds = -(-max(C, C * C // 4) // 1024)
    step = rounds * (m["lds_latency"] + m["div64_latency"] + m["fma64_latency"]) + m["barrier"]
    return (C + 1) * step + m["l2_latency"]


def model_solve(profile: dict, shape, launch: Launch, new: bool, acc_size: int = 4,
                m: dict = MACHINE) -> dict:
    """Estimated time of one solve at `shape`: {"low_us", "high_us", "per_diagonal_us", ...}."""
    B, C, H, W = shape
    kh = kw = K_SIZE
    nb = kh * kw - 1
    cpt = profile.get("channels_per_thread", 1)
    fma_lat = m["fma64_latency"] if acc_size == 8 else m["fma32_latency"]
    dot_instr, dot_iters = _dot(profile["dot_loops"], C)
    rhs_instr, rhs_iters = _dot(profile.get("rhs_loops", []), (C + 1) // 2)
    fma_extra = 0
    if acc_size == 8:  # DFMA occupies its scheduler twice as long
        fma_extra = (m["fma64_issue"] - 1) * (nb * C * cpt + (0 if new else (C + 1) // 2))
    per_pair = []
    for k in (0, 1):
        per_pair.append(profile["pair_path"][k] + kh * profile["row_path"][k] +
                        nb * (profile["neighbour_path"][k] + dot_instr) + rhs_instr + fma_extra)
    # the load each dot iteration waits for
    if new:
        lat_x = m["l2_latency"] if launch.image == "global" else m["lds_latency"]
        lat_t = m["lds_latency"] if launch.taps_in_shared else m["l1_latency"]
        first = m["lds_latency"] if launch.image_in_shared else m["l2_latency"]  # z
    else:
        lat_x = m["generic_latency"] if launch.image_in_shared else m["l2_latency"]
        lat_t = m["generic_latency"] if launch.taps_in_shared else m["l1_latency"]
        first = m["dram_latency"] + sum(it * fma_lat for it in rhs_iters) + \
            (((C + 1) // 2) % 4) * fma_lat  # y, then M y
    lat_load = max(lat_x, lat_t)
    # per iteration: the load, then the FMAs into one accumulator (it channels of c2 in a row);
    # the new kernel reads z last (x = z - sum): its load overlaps the sum
    taps_chain = nb * sum(lat_load + it * fma_lat for it in dot_iters)
    chain = max(first, taps_chain) + fma_lat if new else first + taps_chain
    sched = m["schedulers"]
    cycles = [0.0, 0.0]
    for d in range(H + W - 1):
        pixels = min(H - 1, d) - max(0, d - (W - 1)) + 1
        pairs = pixels * launch.groups
        rounds = -(-pairs // launch.threads)
        warps = -(-min(pairs, launch.threads) // 32)
        per_sched = -(-warps // sched)
        lat = rounds * chain
        for k in (0, 1):
            cycles[k] += max(rounds * per_sched * per_pair[k], lat) + m["barrier"]
    # image passes and staging (new), staging (old)
    active = min(B, m["sms"])
    bw_cycles_per_byte = m["clock_ghz"] * 1e9 / (m["dram_gb_s"] * 1e9 / active)
    taps_values = (kh * kw + 1) * launch.groups * C * (cpt if new else 1)
    stage = (m["l2_latency"] + taps_values / launch.threads * 4) if launch.taps_in_shared else 0
    passes = 0.0
    if new:
        items = H * W * launch.groups
        rounds1 = -(-items // launch.threads)
        pass1 = max(rounds1 * (m["dram_latency"] + min(C, cpt) * fma_lat),
                    H * W * C * 4 * bw_cycles_per_byte)
        # (the ring writes the output during the wavefront: its stores, in the pair's path)
        pass3 = 0 if launch.image == "ring" else \
            max(-(-H * W * C // launch.threads) * 12 / 1.0, H * W * C * 4 * bw_cycles_per_byte)
        passes = pass1 + pass3 + 2 * m["barrier"]
    image_cycles = [c + stage + passes for c in cycles]
    waves = -(-B // m["sms"])
    # plan kernels: L^{-1} (a column's C^2 / 2 chain), the fold, each launch
    plan_cycles = lower_inverse_cycles(C, parallel=new, m=m)
    plan_cycles += (C * C if not new else C) * m["fma64_latency"] + m["l2_latency"]
    us = lambda c: c / (m["clock_ghz"] * 1e3)  # noqa: E731
    plan_us = us(plan_cycles) + 3 * m["launch_us"]
    low, high = (waves * us(image_cycles[k]) + plan_us for k in (0, 1))
    return {"shape": list(shape), "threads": launch.threads, "groups": launch.groups,
            "taps_in_shared": launch.taps_in_shared, "image": launch.image,
            "instr_per_pair": per_pair, "instr_per_pixel_channel": [p * launch.groups / C for p in per_pair],
            "chain_cycles_per_pair": chain, "plan_us": plan_us, "passes_us": us(passes + stage),
            "low_us": low, "high_us": high,
            # all but the plan, per anti-diagonal (the passes included)
            "per_diagonal_us": [(t - plan_us) / (waves * (H + W - 1)) for t in (low, high)]}


def model(profiles_before: list[dict], profiles_after: list[dict], acc: str = "float") -> list[dict]:
    acc_size = 8 if acc == "double" else 4
    rows = []
    for shape in SHAPES:
        B, C, H, W = shape
        lo = launch_old(B, C, H, W, K_SIZE, K_SIZE, acc_size)
        ln = launch_new(B, C, H, W, K_SIZE, K_SIZE, acc_size, MACHINE["optin_shared"])
        before = model_solve(pick(profiles_before, acc, lo, False), shape, lo, False, acc_size)
        after = model_solve(pick(profiles_after, acc, ln, True), shape, ln, True, acc_size)
        rows.append({"shape": shape, "before": before, "after": after,
                     "conv2d_us": CONV2D_US.get(shape)})
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| shape (B, C, H=W) | before: modelled solve | after: modelled solve | after / cuDNN conv2d | "
           "after: per anti-diagonal | instructions per (pixel, channel): before → after |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        b, a = r["before"], r["after"]
        B, C, H, _ = r["shape"]
        ratio = f"{a['low_us'] / r['conv2d_us']:.1f}–{a['high_us'] / r['conv2d_us']:.1f}×" \
            if r["conv2d_us"] else "—"
        out.append(
            f"| {B}, {C}, {H} | {b['low_us']:.0f}–{b['high_us']:.0f} µs | {a['low_us']:.0f}–{a['high_us']:.0f} µs "
            f"| {ratio} | {a['per_diagonal_us'][0]:.2f}–{a['per_diagonal_us'][1]:.2f} µs "
            f"(before {b['per_diagonal_us'][0]:.2f}–{b['per_diagonal_us'][1]:.2f}) "
            f"| {b['instr_per_pixel_channel'][0]:.0f}–{b['instr_per_pixel_channel'][1]:.0f} → "
            f"{a['instr_per_pixel_channel'][0]:.0f}–{a['instr_per_pixel_channel'][1]:.0f} |")
    return "\n".join(out)


def _profiles(rev: str | None) -> list[dict]:
    import tempfile
    from dataclasses import asdict

    import sass_profile as sp
    if rev is None:
        return [asdict(p) for p in sp.profile(arch="sm_90")]
    with tempfile.TemporaryDirectory(prefix="sass-rev-") as tmp:
        sp.source_tree(rev, tmp)
        src = os.path.join(tmp, "cpp", "cuda", "inv_conv2d_cuda.cu")
        return [asdict(p) for p in sp.profile(src, arch="sm_90")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="static model of the CUDA solve (a model, not a measurement)")
    ap.add_argument("--before", default="b78180e",
                    help="git revision of the 'before' kernel (default: b78180e, the kernel before the SASS rewrite)")
    ap.add_argument("--acc", default="float", choices=["float", "double"])
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--bands", action="store_true",
                    help="only the small batches: one block per image against bands of rows over "
                         "several blocks, both this checkout's kernel")
    ap.add_argument("--inverse", action="store_true",
                    help="only the plan's triangular inverse: one thread per column against every "
                         "column at once, at C = 4, 12, 48, 128")
    args = ap.parse_args(argv)
    if args.inverse:
        us = lambda c: c / (MACHINE["clock_ghz"] * 1e3)  # noqa: E731
        print(f"MODEL (not a measurement): {MACHINE['name']}, lower_inverse_kernel")
        print("| C | one thread per column (µs) | every column at once (µs) | ratio |\n|---|---|---|---|")
        for C in (4, 12, 48, 128):
            old, new = (us(lower_inverse_cycles(C, p)) for p in (False, True))
            print(f"| {C} | {old:.2f} | {new:.2f} | {old / new:.1f}× |")
        return 0
    if args.bands:
        rows = model_small_batches(_profiles(None), args.acc)
        print(f"MODEL (not a measurement): {MACHINE['name']}, {args.acc}, k = {K_SIZE}, "
              f"{MACHINE['sms']} SMs; this checkout's kernel")
        print(markdown_small_batches(rows))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": MACHINE, "acc": args.acc, "rows": rows}, f, indent=1)
        return 0
    rows = model(_profiles(args.before), _profiles(None), args.acc)
    print(f"MODEL (not a measurement): {MACHINE['name']}, {args.acc}, k = {K_SIZE}; "
          f"before = {args.before}, after = this checkout")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": MACHINE, "acc": args.acc, "before": args.before, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
