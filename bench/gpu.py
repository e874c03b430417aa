"""The GPU command: build, verify and time invconv_core on a machine with a CUDA GPU.

    python bench/gpu.py --out DIR [--stages build,verify,bench,flows]
    python bench/gpu.py --quick --out DIR     # ≤ 8 minutes on a 16-core H100/H200 machine

Stages (each selectable, so a run fits in 10-minute pieces; results accumulate in DIR):
  build   builds the extension for this GPU's architecture (pip install --no-build-isolation
          -e ., TORCH_CUDA_ARCH_LIST set from the device) and checks backend_info()["cuda"];
  verify  invconv-verify (every device), pytest verification/ (CUDA cases included) and
          compute-sanitizer memcheck and racecheck on small cases (bench/gpu_sanitizer_cases.py)
          where it is installed;
  bench   inverse, adjoint and forward+backward against cuDNN conv2d at the flow shapes,
          scaling up to 512², B in {1, 100}, and the small batches (B = 1 at 4×256², B = 8 at
          12×64²) in bands against one block per image (INVCONV_CUDA_BANDS=0), each checked
          against the CPU core (bench/gpu_measure.py);
  flows   forward / sampling / train-step times of the MNIST- and CIFAR-shaped flows, batch 100.
--quick fits a 15-minute device lease: build; invconv-verify and only the CUDA tests
(test_cuda.py and the CUDA cases of the dense-oracle tests, a small Hypothesis budget) with
compute-sanitizer (its cases include a multi-block banded solve); the core benchmarks at the
flow shapes, the scaling at B = 1 and the small batches in bands; no flows stage. Every stage runs under a time limit (--stage-limit, seconds; --quick: QUICK_LIMITS): a
stage past it is stopped and reported as such, and the later stages still run. The results are
written after each stage, so a run killed from outside keeps what it finished.
Writes DIR/gpu-results.json, DIR/gpu-results.md, DIR/gpu-scaling.png and the logs of each
stage, and prints a one-screen summary. Nothing is downloaded.

Exit status: 0 every selected stage passed; 1 a stage failed, or no CUDA GPU; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "verification"))

import build_flags  # noqa: E402
import gpu_report  # noqa: E402

STAGES = ("build", "verify", "bench", "flows")
#: Seconds per stage of --quick (8 minutes in all at most: 3 + 2.5 + 2.5).
QUICK_LIMITS = {"build": 180, "verify": 150, "bench": 150}
#: What --quick runs of pytest verification/: the CUDA tests, not the CPU suite (37 minutes).
QUICK_PYTEST_ARGS = "verification/test_cuda.py verification/test_dense_oracle.py -k 'cuda and not emulated'"


def _stage_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STAGES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(STAGES)}, got {text!r}")
    return [s for s in STAGES if s in names]  # always in pipeline order


def _positive_int(text: str) -> int:
    # (not invconv_core.flows.validate: this process must not import invconv_core before the
    # build stage has built it)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/gpu.py", description=__doc__,
        epilog="Results accumulate in --out: run the stages in separate calls if one call "
               "would take too long.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for the results (created if needed)")
    p.add_argument("--stages", type=_stage_list, default=list(STAGES),
                   help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    p.add_argument("--pytest-args", default="", help="extra arguments for pytest verification/, "
                   "e.g. \"-k 'cuda or emulated'\"")
    p.add_argument("--repeats", type=_positive_int, default=30,
                   help="timed calls per measurement (median; default 30)")
    p.add_argument("--quick", action="store_true",
                   help="the lease-sized run: build, verify (CUDA tests only), bench (core shapes, "
                        "scaling at B = 1) under QUICK_LIMITS; no flows stage")
    p.add_argument("--stage-limit", type=_positive_int, default=None,
                   help="seconds each stage may take (default: none; --quick: "
                        + ", ".join(f"{k} {v}" for k, v in QUICK_LIMITS.items()) + ")")
    args = p.parse_args(argv)
    if args.quick:
        args.stages = [s for s in args.stages if s in QUICK_LIMITS]
        args.repeats = min(args.repeats, 10)
    return args


def stage_limits(args) -> dict:
    """Seconds each selected stage may take (None: no limit)."""
    if args.stage_limit is not None:
        return {name: args.stage_limit for name in args.stages}
    return {name: (QUICK_LIMITS.get(name) if args.quick else None) for name in args.stages}


class StageTimeout(Exception):
    pass


def run_stage(runner, args, limit) -> dict:
    """``runner(args)`` under a time limit (SIGALRM: stages run in this process, in the main
    thread; their subprocesses get the time left); a stage past it is reported, not fatal."""
    import signal

    def expire(signum, frame):
        raise StageTimeout()

    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, expire) if limit else None
    if limit:
        signal.setitimer(signal.ITIMER_REAL, limit)
    args.deadline = time.monotonic() + limit if limit else None
    try:
        outcome = runner(args)
    except (StageTimeout, subprocess.TimeoutExpired):
        outcome = {"ok": False, "timed_out": True, "detail": f"stopped at its time limit of {limit} s"}
    except Exception as err:  # a failed stage is reported, the later stages still run
        outcome = {"ok": False, "detail": f"{type(err).__name__}: {err}"}
    finally:
        if limit:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    outcome["seconds"] = time.perf_counter() - start
    return outcome


def run_stages(args, runners, results) -> int:
    """Runs the selected stages in order, each under its limit, writing the report after each;
    0 if every stage passed, else 1."""
    status = 0
    limits = stage_limits(args)
    for name in args.stages:
        print(f"== {name}" + (f" (limit {limits[name]} s)" if limits[name] else ""), flush=True)
        outcome = run_stage(runners[name], args, limits[name])
        results["stages"][name] = outcome
        gpu_report.write_report(results, args.out)
        if not outcome["ok"]:
            status = 1
        print(f"   {'ok' if outcome['ok'] else 'FAILED'} in {outcome['seconds']:.0f} s: {outcome.get('detail', '')}",
              flush=True)
    return status


def _time_left(args):
    """Seconds a subprocess of the current stage may run (None: no limit)."""
    deadline = getattr(args, "deadline", None)
    return None if deadline is None else max(1.0, deadline - time.monotonic())


def _run_logged(cmd, log_path, **kwargs) -> tuple[int, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # timeout: TimeoutExpired
    output = proc.stdout + proc.stderr
    with open(log_path, "w", encoding="utf-8") as f:
        f.write("$ " + shlex.join(map(str, cmd)) + "\n" + output)
    return proc.returncode, output


def _environment() -> dict:
    import torch
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "python": platform.python_version(), "torch": torch.__version__,
           "torch CUDA": str(torch.version.cuda), "GPU": torch.cuda.get_device_name(),
           "compute capability": "%d.%d" % torch.cuda.get_device_capability()}
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                       capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        env["commit"] = "unknown"
    return env


def stage_build(args) -> dict:
    import torch
    arch = "%d.%d" % torch.cuda.get_device_capability()
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=arch, MAX_JOBS=str(os.cpu_count() or 4))
    env.pop("INVCONV_FORCE_CPU", None)
    cuda_home = build_flags.find_cuda_home()  # a wrapper nvcc on PATH misleads torch's guess
    if cuda_home:
        env.setdefault("CUDA_HOME", cuda_home)
    rc, out = _run_logged([sys.executable, "-m", "pip", "install", "--no-build-isolation",
                           "--no-deps", "-e", REPO], os.path.join(args.out, "build.log"), env=env,
                          timeout=_time_left(args))
    if rc != 0:
        return {"ok": False, "arch": arch, "detail": f"pip install failed (exit {rc}); see build.log"}
    probe = ("import json, invconv_core as ic; print(json.dumps(ic.backend_info()))")
    rc, out = _run_logged([sys.executable, "-c", probe], os.path.join(args.out, "backend.log"),
                          cwd=args.out)
    info_line = out.strip().splitlines()[-1] if out.strip() else ""
    ok = rc == 0 and '"cuda": true' in info_line and '"compiled": true' in info_line
    return {"ok": ok, "arch": arch, "backend_info": info_line, "cuda_home": env.get("CUDA_HOME"),
            "detail": f"sm_{arch.replace('.', '')}: backend_info {'has' if ok else 'LACKS'} CUDA kernels"}


def stage_verify(args) -> dict:
    # first what a user runs on their own install: invconv-verify, on every device present
    vrc, vout = _run_logged([sys.executable, "-m", "invconv_core.verify", "--json",
                             os.path.join(args.out, "invconv-verify.json")],
                            os.path.join(args.out, "invconv-verify.log"), cwd=args.out,
                            timeout=_time_left(args))
    verdict = vout.strip().splitlines()[-1] if vout.strip() else f"no output (exit {vrc})"
    if args.quick:  # the CUDA tests only, with a small Hypothesis budget
        targets = shlex.split(QUICK_PYTEST_ARGS)
        env = dict(os.environ, INVCONV_HYPOTHESIS="quick")
    else:
        targets, env = [os.path.join(REPO, "verification")], None
    cmd = [sys.executable, "-m", "pytest", *targets, "-q", "-p", "no:cacheprovider",
           *shlex.split(args.pytest_args)]
    rc, out = _run_logged(cmd, os.path.join(args.out, "verify-pytest.log"), cwd=REPO, env=env,
                          timeout=_time_left(args))
    counts = gpu_report.pytest_counts(out)
    sanitizer = {}
    tool = build_flags.find_cuda_tool("compute-sanitizer")
    for check in ("memcheck", "racecheck"):
        if tool is None:
            sanitizer[check] = "not installed"
            continue
        src, _ = _run_logged([tool, "--tool", check, "--error-exitcode", "3", sys.executable,
                              os.path.join(HERE, "gpu_sanitizer_cases.py")],
                             os.path.join(args.out, f"sanitizer-{check}.log"), cwd=REPO,
                             timeout=_time_left(args))
        sanitizer[check] = "clean" if src == 0 else f"errors (exit {src}; sanitizer-{check}.log)"
    ok = vrc == 0 and rc == 0 and not any(v.startswith("errors") for v in sanitizer.values())
    detail = (f"invconv-verify: {verdict}; pytest: {counts['passed']} passed, {counts['failed']} failed, "
              f"{counts['skipped']} skipped; " + ", ".join(f"{k} {v}" for k, v in sanitizer.items()))
    return {"ok": ok, "invconv_verify": verdict, "invconv_verify_exit": vrc, "pytest": counts,
            "pytest_exit": rc, "sanitizer": sanitizer, "detail": detail}


def stage_bench(args) -> dict:
    import gpu_measure
    core = gpu_measure.measure_core(repeats=args.repeats)
    batches = [1] if args.quick else gpu_measure.SCALING_BATCHES
    scaling = gpu_measure.measure_scaling(batches=batches, repeats=max(3, args.repeats // 3))
    bands = gpu_measure.measure_bands(repeats=max(3, args.repeats // 3))
    ok = all(r["agrees"] for r in bands)
    return {"ok": ok, "core": core, "scaling": scaling, "bands": bands,
            "detail": f"{len(core)} flow shapes, {len(scaling)} scaling points, "
                      f"{len(bands)} small batches in bands vs one block per image"
                      + ("" if ok else " -- a banded solve DISAGREES with the CPU core")}


def stage_flows(args) -> dict:
    import gpu_measure
    tables = gpu_measure.measure_flows(repeats=max(3, args.repeats // 6))
    return {"ok": True, "tables": tables, "detail": ", ".join(f"{k}: {len(v)} models" for k, v in tables.items())}


RUNNERS = {"build": stage_build, "verify": stage_verify, "bench": stage_bench, "flows": stage_flows}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    if torch.version.cuda is None or not torch.cuda.is_available():
        print(f"gpu.py: no CUDA GPU visible to torch {torch.__version__} (CUDA build: "
              f"{torch.version.cuda}); run this on a machine with a GPU and a CUDA build of torch",
              file=sys.stderr)
        return 1
    try:
        os.makedirs(args.out, exist_ok=True)
        probe = os.path.join(args.out, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as err:
        print(f"gpu.py: --out {args.out!r} is not a writable directory: {err.strerror}", file=sys.stderr)
        return 1
    results = gpu_report.load_results(args.out)
    results["environment"] = _environment()
    status = run_stages(args, RUNNERS, results)
    print()
    print(gpu_report.summary(results))
    print(f"\nreport: {os.path.join(args.out, gpu_report.RESULTS_MD)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
