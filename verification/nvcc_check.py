"""Static check of the CUDA sources with nvcc, without a GPU: every `.cu` of the package must
compile for the target architectures with warnings as errors, and its kernels must neither
spill registers nor use local memory (ptxas' ``--resource-usage`` report).

Used by test_cuda_compile.py; ``python verification/nvcc_check.py`` prints the report.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import build_flags  # noqa: E402

ARCHS = ["sm_80", "sm_90"]


def find_nvcc() -> str | None:
    return build_flags.find_cuda_tool("nvcc")


def cuda_sources() -> list[str]:
    return sorted(glob.glob(os.path.join(REPO, "cpp", "cuda", "*.cu")))


@dataclass
class KernelUsage:
    """One kernel of one architecture, as ptxas reports it."""
    name: str
    arch: str
    registers: int = 0
    stack_bytes: int = 0      # local memory of the stack frame
    spill_stores: int = 0
    spill_loads: int = 0
    shared_bytes: int = 0     # static shared memory (dynamic shared memory is set at launch)
    barriers: int = 0


def parse_resource_usage(text: str) -> list[KernelUsage]:
    """Kernels of nvcc's ``--resource-usage`` output, in order."""
    kernels: list[KernelUsage] = []
    current: KernelUsage | None = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
        if m:
            current = KernelUsage(m.group(1), m.group(2))
            kernels.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.stack_bytes, current.spill_stores, current.spill_loads = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current.registers = int(m.group(1))
            b = re.search(r"used (\d+) barriers", line)
            current.barriers = int(b.group(1)) if b else 0
            s = re.search(r"(\d+) bytes smem", line)
            current.shared_bytes = int(s.group(1)) if s else 0
            lmem = re.search(r"(\d+) bytes lmem", line)
            if lmem:
                current.stack_bytes = max(current.stack_bytes, int(lmem.group(1)))
    return kernels


def problems(kernels: list[KernelUsage]) -> list[str]:
    """What the check rejects: spilled registers or local memory in any kernel."""
    out = []
    for k in kernels:
        if k.spill_stores or k.spill_loads:
            out.append(f"{k.name} ({k.arch}): spills {k.spill_stores} bytes stored / {k.spill_loads} loaded")
        if k.stack_bytes:
            out.append(f"{k.name} ({k.arch}): {k.stack_bytes} bytes of local memory (stack frame)")
    return out


@dataclass
class CompileResult:
    command: list[str]
    returncode: int
    output: str
    kernels: list[KernelUsage]


def compile_check(source: str, archs: list[str] = ARCHS, include_dirs: list[str] | None = None,
                  nvcc: str | None = None) -> CompileResult:
    """Compiles `source` to a throw-away object with the package's nvcc flags (warnings are
    errors). include_dirs: torch's include paths by default."""
    if include_dirs is None:
        from torch.utils.cpp_extension import include_paths
        include_dirs = include_paths()
    # (system includes: their warnings are torch's; the package's own headers are reached by
    # relative #include, so their warnings count)
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = build_flags.nvcc_check_command(source, os.path.join(tmp, "out.o"), archs, include_dirs)
        cmd[0] = nvcc
        proc = subprocess.run(cmd, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    return CompileResult(cmd, proc.returncode, output, parse_resource_usage(output))


def demangle(names: list[str]) -> dict[str, str]:
    """Readable kernel names (c++filt where present)."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    res = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    return dict(zip(names, res.stdout.splitlines())) if res.returncode == 0 else {n: n for n in names}


def main() -> int:
    if find_nvcc() is None:
        print("nvcc not found", file=sys.stderr)
        return 1
    status = 0
    for src in cuda_sources():
        res = compile_check(src)
        print(f"{os.path.relpath(src, REPO)}: nvcc exit {res.returncode}")
        if res.returncode:
            print(res.output)
            status = 1
        names = demangle([k.name for k in res.kernels])
        for k in res.kernels:
            short = re.sub(r"invconv_core::cuda_kernels::|\(.*$", "", names[k.name])
            print(f"  {k.arch}  {short:55s} {k.registers:3d} registers  {k.shared_bytes} B static smem  "
                  f"{k.stack_bytes} B stack  {k.spill_stores}/{k.spill_loads} B spilled  {k.barriers} barriers")
        for p in problems(res.kernels):
            print("  PROBLEM:", p)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
