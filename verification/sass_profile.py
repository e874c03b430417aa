"""The SASS profile of the CUDA kernels, without a GPU: nvcc compiles ``cpp/cuda/*.cu`` to a
cubin for one architecture (build_flags.nvcc_cubin_command: the package's flags), ``nvdisasm``
prints its machine code, and this module reads the loops back out of the branches and counts
what each loop issues.

Per kernel: registers, spills and local memory (ptxas), the instruction mix of the whole
kernel, of the **hot loop** (the largest loop around the dot product that has no barrier: the
work of one anti-diagonal) and of the **innermost loop** (the loop with the most FMAs: the dot
product over the input channels), by kind: FMA (FFMA/DFMA/HFMA2), generic LD/ST (the pointer
may be shared or global: the slow path), LDS/STS, LDG/STG, local LDL/STL, 64-bit integer
arithmetic (the carry halves IADD3.X/IMAD.X/LEA.HI.X, IMAD.WIDE, 64-bit compares ISETP.EX),
barriers.

The disassemblers come from the CUDA toolkit or from the registry packages
``nvidia-cuda-nvdisasm`` / ``nvidia-cuda-cuobjdump`` (the test environment installs them);
test_sass_profile.py skips, visibly, where neither is present.

    python verification/sass_profile.py [--arch sm_90] [--source cpp/cuda/inv_conv2d_cuda.cu]
                                        [-D NAME ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_flags  # noqa: E402
from nvcc_check import demangle, find_nvcc, parse_resource_usage  # noqa: E402

SOURCE = os.path.join(REPO, "cpp", "cuda", "inv_conv2d_cuda.cu")
FMA_OPS = {"FFMA", "DFMA", "HFMA2"}


def find_disassembler(name: str = "nvdisasm") -> str | None:
    """nvdisasm / cuobjdump: on PATH or in the toolkit, else the registry package's copy
    (``nvidia/cu13/bin``, ``nvidia/cuda_nvdisasm/bin``, ...); None where absent."""
    found = build_flags.find_cuda_tool(name)
    if found:
        return found
    try:
        import nvidia  # namespace package of the nvidia-* wheels
    except ImportError:
        return None
    for root in getattr(nvidia, "__path__", []):
        for path in sorted(glob.glob(os.path.join(root, "*", "bin", name)), reverse=True):
            if os.access(path, os.X_OK):
                return path
    return None


# --- machine code ------------------------------------------------------------------------------

@dataclass
class Instr:
    offset: int
    opcode: str          # with modifiers: "LDS.128", "IADD3.X", "FFMA"
    operands: str
    predicate: str = ""  # "@P0", "@!P1" or ""

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]

    @property
    def mods(self) -> set[str]:
        return set(self.opcode.split(".")[1:])


def kind(ins: Instr) -> str | None:
    """The counted kind of an instruction (None: not counted separately)."""
    b, m = ins.base, ins.mods
    if b in FMA_OPS:
        return "fma"
    if b in ("LD", "ST"):
        return "generic_" + ("ld" if b == "LD" else "st")
    if b in ("LDS", "STS", "LDG", "STG"):
        return b.lower()
    if b in ("LDL", "STL"):
        return "local"
    if b == "BAR":
        return "bar"
    if b in ("IADD3", "IMAD", "LEA", "IADD", "UIADD3", "UIMAD", "ULEA", "IADD32I") and \
            ("X" in m or "WIDE" in m or "64" in m):
        return "wide_int"
    if b in ("ISETP", "UISETP") and "EX" in m:
        return "wide_int"
    return None


@dataclass
class Mix:
    """What a stretch of code issues, once through."""
    instructions: int = 0
    fma: int = 0
    generic_ld: int = 0
    generic_st: int = 0
    lds: int = 0
    sts: int = 0
    ldg: int = 0
    stg: int = 0
    local: int = 0
    wide_int: int = 0
    bar: int = 0

    @property
    def fma_share(self) -> float:
        return self.fma / self.instructions if self.instructions else 0.0

    @classmethod
    def of(cls, instrs: list[Instr]) -> "Mix":
        mix = cls()
        for ins in instrs:
            if ins.base == "NOP":
                continue  # alignment padding: never issued in the loop
            mix.instructions += 1
            k = kind(ins)
            if k:
                setattr(mix, k, getattr(mix, k) + 1)
        return mix

    def as_dict(self) -> dict:
        d = asdict(self)
        d["fma_share"] = round(self.fma_share, 4)
        return d


@dataclass
class Loop:
    start: int   # offset of the first instruction (the branch target)
    end: int     # offset of the last backward branch to it
    children: list["Loop"] = field(default_factory=list)

    def contains(self, other: "Loop") -> bool:
        return self.start <= other.start and other.end <= self.end and self is not other


@dataclass
class Function:
    name: str                    # mangled
    instrs: list[Instr]
    loops: list[Loop]            # outermost first (a forest, children filled in)
    labels: dict = field(default_factory=dict)  # label -> offset

    def body(self, loop: Loop) -> list[Instr]:
        return [i for i in self.instrs if loop.start <= i.offset <= loop.end]

    def all_loops(self) -> list[Loop]:
        out, todo = [], list(self.loops)
        while todo:
            lp = todo.pop(0)
            out.append(lp)
            todo.extend(lp.children)
        return out


_FUNC = re.compile(r"^\.text\.(\S+):\s*$")
_LABEL = re.compile(r"^(\.L_x_\d+):\s*$")
_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?)\s*;")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def parse_sass(text: str) -> dict[str, Function]:
    """The functions of ``nvdisasm -c`` output, with their loops: a loop is a branch back to an
    earlier label (several branches back to one label: one loop, to the last of them)."""
    funcs: dict[str, Function] = {}
    cur_name, instrs, labels, branches = None, [], {}, []
    pending: list[str] = []

    def close():
        if cur_name is None:
            return
        spans: dict[int, int] = {}
        for off, label in branches:
            target = labels.get(label)
            if target is not None and target <= off:
                spans[target] = max(spans.get(target, off), off)
        loops = [Loop(s, e) for s, e in sorted(spans.items())]
        # nest them: each loop's parent is the smallest loop containing it
        roots = []
        for lp in loops:
            parents = [o for o in loops if o.contains(lp)]
            if parents:
                min(parents, key=lambda o: o.end - o.start).children.append(lp)
            else:
                roots.append(lp)
        funcs[cur_name] = Function(cur_name, list(instrs), roots, dict(labels))

    for line in text.splitlines():
        m = _FUNC.match(line.strip())
        if m:
            close()
            cur_name, instrs, labels, branches, pending = m.group(1), [], {}, [], []
            continue
        if cur_name is None:
            continue
        m = _LABEL.match(line.strip())
        if m:
            pending.append(m.group(1))
            continue
        m = _INSTR.match(line)
        if m:
            ins = Instr(int(m.group(1), 16), m.group(3), m.group(4), (m.group(2) or "").strip())
            for label in pending:
                labels[label] = ins.offset
            pending = []
            instrs.append(ins)
            if ins.base in ("BRA", "BRX"):
                t = _TARGET.search(ins.operands)
                if t:
                    branches.append((ins.offset, t.group(1)))
    close()
    return funcs


# --- the profile of one kernel ----------------------------------------------------------------

@dataclass
class KernelProfile:
    name: str
    short: str
    arch: str
    registers: int
    spilled_bytes: int
    stack_bytes: int
    kernel: dict
    hot_loop: dict | None
    innermost: dict | None
    # The loop nest under the hot loop, for the static model (bench/sass_model.py): for each
    # level, the instructions one pass through it issues outside its inner loops, as [fewest,
    # most] over its forward paths (branches not taken / taken): the hot loop's (once per
    # (pixel, channel group) pair), the tap-row loop's (once per row of taps), the tap-column
    # loop's (once per neighbour); each dot loop's body with the input channels an iteration
    # covers, and the right-hand side's loops (M y, in the hot loop of the old kernel).
    pair_path: list[int] = field(default_factory=lambda: [0, 0])
    row_path: list[int] = field(default_factory=lambda: [0, 0])
    neighbour_path: list[int] = field(default_factory=lambda: [0, 0])
    # one iteration of the loop right around the hot loop, outside it (the banded kernel: a
    # round of a diagonal's pairs -- the partial sums' stores, the sum, the writes, two barriers)
    outer_path: list[int] = field(default_factory=lambda: [0, 0])
    dot_loops: list[dict] = field(default_factory=list)
    rhs_loops: list[dict] = field(default_factory=list)
    channels_per_thread: int = 1


def _depth(fn: Function, loop: Loop) -> int:
    return sum(1 for lp in fn.all_loops() if lp.contains(loop))


def _innermost_fma_loop(fn: Function) -> Loop | None:
    """The dot product: of the loops holding FMAs and no other loop, the most deeply nested
    (the right-hand side's M y loop sits higher), then the one with the most FMAs."""
    leaves = [lp for lp in fn.all_loops() if not lp.children and Mix.of(fn.body(lp)).fma]
    return max(leaves, key=lambda lp: (_depth(fn, lp), Mix.of(fn.body(lp)).fma,
                                       -(lp.end - lp.start)), default=None)


def _hot_loop(fn: Function, inner: Loop) -> Loop:
    """The largest loop around `inner` without a barrier (one anti-diagonal's pairs)."""
    around = sorted([lp for lp in fn.all_loops() if lp.contains(inner) or lp is inner],
                    key=lambda lp: lp.end - lp.start, reverse=True)
    for lp in around:
        if Mix.of(fn.body(lp)).bar == 0:
            return lp
    return inner


def profile_function(fn: Function, arch: str, usage=None, short: str | None = None,
                     channels_per_thread: int = 1) -> KernelProfile:
    inner = _innermost_fma_loop(fn)
    hot = _hot_loop(fn, inner) if inner else None
    prof = KernelProfile(
        name=fn.name, short=short or fn.name, arch=arch,
        registers=usage.registers if usage else 0,
        spilled_bytes=(usage.spill_stores + usage.spill_loads) if usage else 0,
        stack_bytes=usage.stack_bytes if usage else 0,
        kernel=Mix.of(fn.instrs).as_dict(),
        hot_loop=Mix.of(fn.body(hot)).as_dict() if hot else None,
        innermost=Mix.of(fn.body(inner)).as_dict() if inner else None,
        channels_per_thread=channels_per_thread)
    if hot is not None:
        # dot loops: FMA loops without inner loops, nested at least two loops below the hot loop
        # (inside the taps' row and column loops); FMA loops right under it compute M y
        leaves = [lp for lp in fn.all_loops() if hot.contains(lp) and not lp.children]
        fma_leaves = [lp for lp in leaves if Mix.of(fn.body(lp)).fma]
        hot_depth = _depth(fn, hot)
        dots = [lp for lp in fma_leaves if _depth(fn, lp) - hot_depth >= 2]
        rhs = [lp for lp in fma_leaves if lp not in dots]

        def summaries(loops):  # widest first: the order the model assigns trip counts in
            mixes = [Mix.of(fn.body(lp)) for lp in loops]
            return sorted(({"instructions": m.instructions, "fma": m.fma,
                            "channels": max(1, m.fma // channels_per_thread)} for m in mixes),
                          key=lambda d: -d["channels"])

        prof.dot_loops, prof.rhs_loops = summaries(dots), summaries(rhs)
        # the loops around the dot loops, innermost first: tap column, tap row, ..., the hot loop
        around = sorted({id(lp): lp for d in dots for lp in fn.all_loops()
                         if lp.contains(d) and (hot.contains(lp) or lp is hot)}.values(),
                        key=lambda lp: lp.end - lp.start)
        prof.pair_path = path_lengths(fn, hot)
        outer = [lp for lp in fn.all_loops() if lp.contains(hot) and lp is not hot]
        if outer:
            prof.outer_path = path_lengths(fn, min(outer, key=lambda lp: lp.end - lp.start))
        if len(around) >= 3:
            prof.neighbour_path = path_lengths(fn, around[0])
            prof.row_path = path_lengths(fn, around[1])
        elif len(around) == 2:  # the two tap loops merged into one
            prof.neighbour_path = path_lengths(fn, around[0])
    return prof


def path_lengths(fn: Function, loop: Loop) -> list[int]:
    """[fewest, most] instructions one iteration of `loop` issues outside its inner loops: the
    shortest and the longest forward path from its first instruction to a branch back to it
    (an inner loop is passed through at no cost; a branch out of the loop ends no iteration)."""
    body = [i for i in fn.instrs if loop.start <= i.offset <= loop.end]
    index = {ins.offset: k for k, ins in enumerate(body)}
    inner = {c.start: c.end for c in loop.children}
    INF = float("inf")
    lo, hi = [INF] * (len(body) + 1), [-INF] * (len(body) + 1)
    lo[0] = hi[0] = 0
    done_lo, done_hi = INF, -INF
    k = 0
    while k < len(body):
        ins = body[k]
        if lo[k] == INF:
            k += 1
            continue
        if ins.offset in inner:  # an inner loop: on to the instruction after it, free
            nxt = next((j for j in range(k, len(body)) if body[j].offset > inner[ins.offset]), len(body))
            lo[nxt], hi[nxt] = min(lo[nxt], lo[k]), max(hi[nxt], hi[k])
            k += 1
            continue
        cost = 0 if ins.base == "NOP" else 1
        l, h = lo[k] + cost, hi[k] + cost
        succ = []
        if ins.base in ("BRA", "BRX"):
            t = _TARGET.search(ins.operands)
            target = fn.labels.get(t.group(1)) if t else None
            if target == loop.start:
                done_lo, done_hi = min(done_lo, l), max(done_hi, h)
            elif target is not None and target in index and target > ins.offset:
                succ.append(index[target])
            if ins.predicate:
                succ.append(k + 1)
        elif ins.base in ("EXIT", "RET"):
            if ins.predicate:
                succ.append(k + 1)
        else:
            succ.append(k + 1)
        for j in succ:
            if j < len(lo):
                lo[j], hi[j] = min(lo[j], l), max(hi[j], h)
        k += 1
    if done_lo == INF:
        return [0, 0]
    return [int(done_lo), int(done_hi)]


def compile_cubin(source: str, arch: str, defines: list[str] = (), include_dirs=None,
                  workdir: str | None = None) -> tuple[str, list, str]:
    """(cubin path, ptxas resource usage per kernel, compiler output); raises on failure."""
    if include_dirs is None:
        from torch.utils.cpp_extension import include_paths
        include_dirs = include_paths()
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")
    workdir = workdir or tempfile.mkdtemp(prefix="sass-")
    out = os.path.join(workdir, f"{os.path.basename(source)}.{arch}.cubin")
    cmd = build_flags.nvcc_cubin_command(source, out, arch, include_dirs, list(defines))
    cmd[0] = nvcc
    proc = subprocess.run(cmd, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode:
        raise RuntimeError(f"nvcc failed ({' '.join(cmd)}):\n{output[-4000:]}")
    return out, parse_resource_usage(output), output


def disassemble(cubin: str) -> str:
    tool = find_disassembler("nvdisasm")
    if tool is None:
        raise FileNotFoundError("nvdisasm not found: pip install nvidia-cuda-nvdisasm")
    proc = subprocess.run([tool, "-c", cubin], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"nvdisasm failed: {proc.stderr[-2000:]}")
    return proc.stdout


def _short(name: str) -> str:
    s = re.sub(r"^void |invconv_core::cuda_kernels::|\(.*$|c10::", "", name)
    # the kernel's policy argument (KernelPolicy, or a planted one of cpp/testing/planted_kernel.h)
    s = re.sub(r", (?:KernelPolicy|Planted\w+)>", ">", s)
    return s.replace("BFloat16", "bfloat16").replace("Half", "half").replace("long", "int64")


def _channels_per_thread(source: str) -> int:
    """The solve kernel's channels per thread, read from the profiled tree's plan_math.h (its
    one home); 1 where the constant is absent (a kernel of one channel per thread, before the
    SASS rewrite)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(source))), "plan_math.h")
    try:
        m = re.search(r"constexpr int kChannelsPerThread = (\d+);", open(path).read())
    except OSError:
        m = None
    return int(m.group(1)) if m else 1


def profile(source: str = SOURCE, arch: str = "sm_90", defines: list[str] = (),
            include_dirs=None) -> list[KernelProfile]:
    """The profile of every kernel of `source` compiled for `arch`."""
    with tempfile.TemporaryDirectory(prefix="sass-") as tmp:
        cubin, usage, _ = compile_cubin(source, arch, defines, include_dirs, tmp)
        funcs = parse_sass(disassemble(cubin))
    names = demangle(list(funcs))
    by_name = {u.name: u for u in usage if u.arch == arch}
    out = []
    for mangled, fn in funcs.items():
        short = _short(names[mangled])
        cpt = _channels_per_thread(source) if "wavefront_solve_kernel" in short else 1
        out.append(profile_function(fn, arch, by_name.get(mangled), short, cpt))
    return out


def source_tree(rev: str, dest: str) -> None:
    """The cpp/ directory of git revision `rev`, extracted under `dest`."""
    archive = subprocess.run(["git", "-C", REPO, "archive", rev, "cpp"], capture_output=True)
    if archive.returncode:
        raise RuntimeError(f"git archive {rev} cpp: {archive.stderr.decode()[-500:]}")
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)


def solve_kernels(profiles: list[KernelProfile], acc: str) -> list[KernelProfile]:
    """The solve kernels whose stored and accumulation types are both `acc` ("float"/"double")."""
    return [p for p in profiles if p.short.startswith(f"wavefront_solve_kernel<{acc}, {acc}")]


MIN_FMA_SHARE = 0.30


IMAGE_MODES = {0: "global", 1: "shared", 2: "ring", 3: "band"}  # wavefront_kernel.cuh's kImage* constants


def _solve_variant(short: str) -> tuple[bool, bool, bool] | None:
    """(taps in shared, image (or its ring) in shared, 64-bit index) of a solve kernel's name."""
    m = re.search(r"wavefront_solve_kernel<[^,]+, [^,]+, (true|false), (\d), ([^>]+)>", short)
    if not m:
        return None
    return m.group(1) == "true", IMAGE_MODES[int(m.group(2))] != "global", "64" in m.group(3)


def violations(profiles: list[KernelProfile], accs=("float", "double")) -> list[str]:
    """What the profile test rejects in the float32/float64 solve kernels (the defects the SASS
    rewrite removed):
      * generic LD/ST in the hot loop (the compiler could not tell shared from global memory);
      * FMA share of the innermost loop below MIN_FMA_SHARE;
      * local memory, spills;
      * on the 32-bit-index path, 64-bit integer arithmetic in the innermost loop beyond forming
        the 64-bit address of each global stream (its two carry halves: 2 per stream of taps or
        image in global memory, none when both are in shared memory; with the ring of
        diagonals, the neighbours are read from shared memory).
    Each message starts with its kind: "generic", "fma", "local", "64-bit"."""
    out = []
    for acc in accs:
        kernels = solve_kernels(profiles, acc)
        if not kernels:
            out.append(f"missing: no solve kernel for {acc}")
        for k in kernels:
            hot, inner = k.hot_loop or {}, k.innermost or {}
            if not inner:
                out.append(f"fma: {k.short}: no FMA loop found")
                continue
            generic = hot.get("generic_ld", 0) + hot.get("generic_st", 0)
            if generic:
                out.append(f"generic: {k.short}: {generic} generic loads/stores in the hot loop")
            if inner["fma_share"] < MIN_FMA_SHARE:
                out.append(f"fma: {k.short}: FMA share {inner['fma_share']:.1%} of the innermost "
                           f"loop ({inner['fma']} of {inner['instructions']})")
            if k.spilled_bytes or k.stack_bytes or k.kernel.get("local", 0):
                out.append(f"local: {k.short}: {k.spilled_bytes} B spilled, {k.stack_bytes} B stack, "
                           f"{k.kernel.get('local', 0)} local loads/stores")
            variant = _solve_variant(k.short)
            if variant and not variant[2]:
                allowed = 2 * ((not variant[0]) + (not variant[1]))
                if inner["wide_int"] > allowed:
                    out.append(f"64-bit: {k.short}: {inner['wide_int']} 64-bit integer ops in the "
                               f"innermost loop (at most {allowed}: the global streams' addresses)")
    return out


def table(profiles: list[KernelProfile]) -> str:
    rows = [f"{'kernel':58s} {'regs':>4s} {'instr':>5s} | {'hot':>4s} {'FMA':>4s} {'LD/ST':>5s} "
            f"{'LDS':>4s} {'LDG':>4s} {'64b':>4s} | {'inner':>5s} {'FMA%':>5s} {'LD/ST':>5s} {'64b':>4s}"]
    for p in profiles:
        h, i = p.hot_loop or {}, p.innermost or {}
        rows.append(
            f"{p.short[:58]:58s} {p.registers:4d} {p.kernel['instructions']:5d} | "
            f"{h.get('instructions', 0):4d} {h.get('fma', 0):4d} "
            f"{h.get('generic_ld', 0) + h.get('generic_st', 0):5d} {h.get('lds', 0):4d} "
            f"{h.get('ldg', 0):4d} {h.get('wide_int', 0):4d} | {i.get('instructions', 0):5d} "
            f"{100 * i.get('fma_share', 0):5.1f} {i.get('generic_ld', 0) + i.get('generic_st', 0):5d} "
            f"{i.get('wide_int', 0):4d}")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--source", default=SOURCE)
    ap.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME",
                    help="a define for nvcc (e.g. a planted counter-example)")
    ap.add_argument("--rev", help="profile the kernel of this git revision (its cpp/, this "
                    "checkout's flags): the 'before' of a change")
    ap.add_argument("--json", help="write the profiles here")
    ap.add_argument("--all", action="store_true", help="every kernel (default: the solve kernels)")
    args = ap.parse_args(argv)
    if args.rev:
        with tempfile.TemporaryDirectory(prefix="sass-rev-") as tmp:
            source_tree(args.rev, tmp)
            profs = profile(os.path.join(tmp, os.path.relpath(args.source, REPO)), args.arch, args.defines)
    else:
        profs = profile(args.source, args.arch, args.defines)
    shown = profs if args.all else [p for p in profs if "wavefront_solve_kernel" in p.short]
    print(table(shown))
    bad = violations(profs)
    for v in bad:
        print("VIOLATION:", v)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(p) for p in profs], f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
