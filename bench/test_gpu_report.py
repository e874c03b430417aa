"""The parts of the GPU command (bench/gpu.py) that run without a GPU: its argument handling
as a command (exit status, one-line errors) and the report it writes from measured results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gpu_report
import pytest
import torch

GPU_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu.py")


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, GPU_PY, *args], capture_output=True, text=True, cwd=cwd)


def test_help_describes_the_stages():
    res = _run("--help")
    assert res.returncode == 0
    for word in ("--out", "--stages", "build", "verify", "bench", "flows", "compute-sanitizer"):
        assert word in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--out", "x", "--stages", "bild"], "argument --stages: expected a comma-separated subset"),
    (["--out", "x", "--stages", ""], "argument --stages"),
    (["--out", "x", "--repeats", "0"], "argument --repeats: expected an integer >= 1, got '0'"),
    (["--stages", "bench"], "the following arguments are required: --out"),
])
def test_bad_arguments_exit_2_naming_the_option(args, message, tmp_path):
    res = _run(*args, cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_it_says_so_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu"
    res = _run("--out", str(out))
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "no CUDA GPU visible to torch" in res.stderr
    assert not out.exists()


def _results():
    core = [{"B": 100, "C": 12, "H": 16, "k": 3, "conv_forward": 5.0e-5, "inv_forward": 8.0e-5,
             "inv_adjoint": 8.5e-5, "conv_forward_backward": 4.0e-4, "inv_forward_backward": 1.6e-3},
            {"B": 100, "C": 48, "H": 8, "k": 3, "conv_forward": 6.0e-5, "inv_forward": 3.0e-4,
             "inv_adjoint": 3.1e-4, "conv_forward_backward": 5.0e-4, "inv_forward_backward": 1.0e-3}]
    scaling = [{"B": B, "C": 4, "H": m, "k": 3, "inv_forward": 1e-6 * (2 * m - 1) * (0.8 if B == 1 else 3),
                "conv_forward": 1e-5 * m, "per_diagonal": 1e-6 * (0.8 if B == 1 else 3)}
               for B in (1, 100) for m in (16, 256)]
    bands = [{"B": 1, "C": 4, "H": 256, "W": 256, "k": 3, "bands": 1.0e-4, "one_block": 3.0e-4,
              "speedup": 3.0, "per_diagonal_bands": 1.0e-4 / 511, "rel_err_vs_cpu": 2e-7, "agrees": True},
             {"B": 8, "C": 12, "H": 64, "W": 64, "k": 3, "bands": 5.0e-5, "one_block": 1.0e-4,
              "speedup": 2.0, "per_diagonal_bands": 5.0e-5 / 127, "rel_err_vs_cpu": 3e-7, "agrees": True}]
    flows = {"mnist": [{"model": "inverse-flow", "width": 64, "parameters": 1000, "forward_seconds": 0.01,
                        "sample_seconds": 0.002, "train_step_seconds": 0.03},
                       {"model": "glow", "width": 70, "parameters": 1001, "forward_seconds": 0.008,
                        "sample_seconds": 0.002, "train_step_seconds": 0.02}]}
    return {"environment": {"GPU": "test GPU", "torch": "2.11.0+cu130"},
            "stages": {"build": {"ok": True, "seconds": 61.0, "detail": "sm_90: backend_info has CUDA kernels"},
                       "verify": {"ok": False, "seconds": 300.0, "detail": "pytest: 1 failed",
                                  "pytest": {"passed": 10, "failed": 1, "skipped": 0, "errors": 0}},
                       "bench": {"ok": True, "seconds": 40.0, "core": core, "scaling": scaling,
                                 "bands": bands, "detail": "2 flow shapes"},
                       "flows": {"ok": True, "seconds": 30.0, "tables": flows, "detail": "mnist: 2 models"}}}


def test_report_files_tables_and_targets(tmp_path):
    results = _results()
    results["stages"]["bench"]["core"][0]["inv_adjoint"] = float("nan")  # a failed measurement
    written = gpu_report.write_report(results, str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == ["gpu-results.json", "gpu-results.md", "gpu-scaling.png"]
    assert (tmp_path / "gpu-scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "gpu-results.json").read_text())  # strict JSON: NaN became null
    assert saved["stages"]["bench"]["core"][0]["inv_adjoint"] is None
    md = (tmp_path / "gpu-results.md").read_text()
    assert "| verify | **FAILED** | 300 s | pytest: 1 failed |" in md
    # 1.60× and 4.00× the conv2d forward+backward of the first shape: met, then missed
    assert "| 100, 12, 16, 3 | 0.050 ms | 0.080 ms | 1.60× yes |" in md
    assert "| 0.400 ms | 1.600 ms | 4.00× **no** | 1.540 ms / 4.990 ms |" in md
    assert "| 100, 48, 8, 3 | 0.060 ms | 0.300 ms | 5.00× **no** |" in md
    assert "| 1 | 4 | 256 | 0.409 ms | 2.560 ms | 0.80 µs yes |" in md
    assert "### mnist-shaped flows, batch 100" in md and "| inverse-flow | 64 | 1,000 |" in md
    assert "| 1, 4, 256 | 0.300 ms | 0.100 ms | 3.0× | 0.20 µs | 2.0e-07 yes |" in md
    assert not list(tmp_path.glob("*.tmp"))


def test_summary_lists_stages_and_each_target():
    lines = gpu_report.summary(_results()).splitlines()
    assert lines[0].startswith("build   ok") and lines[1].startswith("verify  FAILED")
    targets = [line for line in lines if line.startswith("target")]
    # two per flow shape, one for B=1 at 256², two per small batch in bands
    assert len(targets) == 9
    # fwd+bwd of the first shape, inverse of the second, the 2.0× of B=8 in bands
    assert sum("MISSED" in t for t in targets) == 3
    assert any("0.80 µs per anti-diagonal" in t and "met" in t for t in targets)
    assert any("bands at B=1 C=4 256²: 0.20 µs per anti-diagonal" in t and "met" in t for t in targets)
    assert any("bands at B=8 C=12 64²: 2.0× one block per image (≥ 4×)" in t and "MISSED" in t for t in targets)


def test_results_accumulate_across_runs(tmp_path):
    assert gpu_report.load_results(str(tmp_path)) == {"environment": {}, "stages": {}}
    gpu_report.write_report(_results(), str(tmp_path))
    again = gpu_report.load_results(str(tmp_path))
    assert set(again["stages"]) == {"build", "verify", "bench", "flows"}
    assert again["stages"]["bench"]["core"][1]["inv_forward"] == 3.0e-4


def test_pytest_summary_line_is_parsed():
    out = "....\n= 596 passed, 12 skipped, 2 failed, 1 error in 121.3s ="
    assert gpu_report.pytest_counts(out) == {"passed": 596, "failed": 2, "skipped": 12, "errors": 1}
    assert gpu_report.pytest_counts("") == {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}


def test_measurements_have_the_fields_the_report_reads(tmp_path):
    """gpu_measure on the CPU with tiny sizes (on a GPU the same code times CUDA events): every
    row carries what render_markdown and targets() read, as positive seconds."""
    import gpu_measure
    core = gpu_measure.measure_core([(2, 3, 6, 3)], repeats=2, device="cpu")
    scaling = gpu_measure.measure_scaling([4, 8], [1], C=2, repeats=2, device="cpu")
    flows = gpu_measure.measure_flows(batch=4, repeats=1, device="cpu", datasets=("digits",))
    bands = gpu_measure.measure_bands([(1, 2, 6, 5)], repeats=2, device="cpu")
    assert bands[0]["agrees"] and bands[0]["bands"] > 0 and bands[0]["one_block"] > 0
    assert "INVCONV_CUDA_BANDS" not in os.environ  # restored
    assert set(core[0]) == {"B", "C", "H", "k", "conv_forward", "inv_forward", "inv_adjoint",
                            "conv_forward_backward", "inv_forward_backward"}
    assert all(v > 0 for k, v in core[0].items() if k not in "BCHk")
    assert [r["H"] for r in scaling] == [4, 8] and scaling[1]["per_diagonal"] == scaling[1]["inv_forward"] / 15
    assert {r["model"] for r in flows["digits"]} >= {"inverse-flow", "glow"}
    results = {"stages": {"bench": {"ok": True, "core": core, "scaling": scaling, "bands": bands},
                          "flows": {"ok": True, "tables": flows}}}
    gpu_report.write_report(results, str(tmp_path))
    md = (tmp_path / "gpu-results.md").read_text()
    assert "inv_conv2d fwd+bwd" in md and "| 1, 2, 6 |" in md


def _gpu_module():
    import importlib
    import sys as _sys
    _sys.path.insert(0, os.path.dirname(GPU_PY))
    return importlib.import_module("gpu")


def test_quick_selects_the_lease_sized_stages_and_limits():
    gpu = _gpu_module()
    args = gpu.parse_args(["--quick", "--out", "x"])
    assert args.stages == ["build", "verify", "bench"] and args.repeats == 10
    limits = gpu.stage_limits(args)
    assert limits == gpu.QUICK_LIMITS and sum(limits.values()) <= 8 * 60
    assert gpu.stage_limits(gpu.parse_args(["--out", "x", "--stage-limit", "5", "--stages", "bench"])) == {"bench": 5}
    assert gpu.stage_limits(gpu.parse_args(["--out", "x"])) == {s: None for s in gpu.STAGES}


def test_a_stage_past_its_limit_is_stopped_and_the_report_keeps_the_others(tmp_path):
    """The non-GPU part of the run: stages under SIGALRM limits, a subprocess given the time
    left, the report written after every stage (synthetic stages: no GPU needed)."""
    import time as _time

    gpu = _gpu_module()
    args = gpu.parse_args(["--out", str(tmp_path), "--stages", "build,verify,bench", "--stage-limit", "1"])

    def fine(a):
        return {"ok": True, "detail": "done"}

    def sleeps(a):
        _time.sleep(30)
        return {"ok": True}

    def child(a):  # a subprocess of a stage gets the time left, then TimeoutExpired
        subprocess.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=gpu._time_left(a))
        return {"ok": True}

    results = gpu_report.load_results(str(tmp_path))
    t0 = _time.perf_counter()
    status = gpu.run_stages(args, {"build": fine, "verify": sleeps, "bench": child}, results)
    assert _time.perf_counter() - t0 < 10
    assert status == 1
    saved = json.load(open(tmp_path / gpu_report.RESULTS_JSON))
    assert saved["stages"]["build"]["ok"] is True
    for name in ("verify", "bench"):
        assert saved["stages"][name]["ok"] is False and saved["stages"][name].get("timed_out") is True
        assert "time limit of 1 s" in saved["stages"][name]["detail"]
