"""Report of the GPU command (bench/gpu.py): the results of its stages as JSON, markdown with
the CUDA issue's targets checked, PNG plots, and a one-screen summary.

`results` is a plain dict, built up stage by stage and saved after each (so a run split into
10-minute pieces keeps what the earlier pieces measured):

    {"environment": {...},
     "stages": {"build":  {"ok", "seconds", "detail", ...},
                "verify": {"ok", "seconds", "detail", "pytest": {"passed", "failed", "skipped", ...},
                           "sanitizer": {"memcheck": "clean" | "errors" | "not installed", ...}},
                "bench":  {"ok", "seconds", "core": [rows of gpu_measure.measure_core],
                           "scaling": [rows of gpu_measure.measure_scaling]},
                "flows":  {"ok", "seconds", "tables": {"mnist": [...], "cifar10": [...]}}}}
"""

from __future__ import annotations

import json
import math
import os
import re

RESULTS_JSON = "gpu-results.json"
RESULTS_MD = "gpu-results.md"

# The CUDA issue's targets (ratios to cuDNN conv2d measured in the same run).
TARGET_INVERSE_RATIO = 2.0
TARGET_FORWARD_BACKWARD_RATIO = 3.0
TARGET_SECONDS_PER_DIAGONAL = 1e-6

# The public reference CUDA implementation on an H100, float32, k = 3 (from the CUDA issue):
# (B, C, H) -> (inverse, input-gradient solve) seconds.
REFERENCE = {(100, 12, 16): (1.54e-3, 4.99e-3), (100, 12, 32): (3.49e-3, 24.8e-3),
             (100, 48, 8): (5.26e-3, 9.17e-3)}


def load_results(out_dir: str) -> dict:
    """The results saved in ``out_dir`` by an earlier run, or an empty skeleton."""
    path = os.path.join(out_dir, RESULTS_JSON)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        results.setdefault("stages", {})
        return results
    return {"environment": {}, "stages": {}}


def _ms(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def core_table(rows: list[dict]) -> str:
    lines = ["| B, C, H=W, k | cuDNN conv2d | inv_conv2d | ratio (≤ 2×) | adjoint solve | "
             "conv2d fwd+bwd | inv_conv2d fwd+bwd | ratio (≤ 3×) | reference inverse / adjoint |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        inv_ratio = r["inv_forward"] / r["conv_forward"]
        fb_ratio = r["inv_forward_backward"] / r["conv_forward_backward"]
        ref = REFERENCE.get((r["B"], r["C"], r["H"]))
        ref_s = f"{_ms(ref[0])} / {_ms(ref[1])}" if ref else "—"
        lines.append(
            f"| {r['B']}, {r['C']}, {r['H']}, {r['k']} | {_ms(r['conv_forward'])} | {_ms(r['inv_forward'])} | "
            f"{inv_ratio:.2f}× {_mark(inv_ratio <= TARGET_INVERSE_RATIO)} | {_ms(r['inv_adjoint'])} | "
            f"{_ms(r['conv_forward_backward'])} | {_ms(r['inv_forward_backward'])} | "
            f"{fb_ratio:.2f}× {_mark(fb_ratio <= TARGET_FORWARD_BACKWARD_RATIO)} | {ref_s} |")
    return "\n".join(lines)


def scaling_table(rows: list[dict]) -> str:
    lines = ["| B | C | H=W | inv_conv2d | conv2d | per anti-diagonal (≤ 1 µs at B=1) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        per = r["per_diagonal"]
        mark = f" {_mark(per <= TARGET_SECONDS_PER_DIAGONAL)}" if r["B"] == 1 else ""
        lines.append(f"| {r['B']} | {r['C']} | {r['H']} | {_ms(r['inv_forward'])} | {_ms(r['conv_forward'])} | "
                     f"{per * 1e6:.2f} µs{mark} |")
    return "\n".join(lines)


def bands_table(rows: list[dict]) -> str:
    lines = ["| B, C, H=W | one block per image | in bands | speed-up (≥ 4× at B=8) | per anti-diagonal "
             "in bands (≤ 0.3 µs at B=1) | banded vs CPU core |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['B']}, {r['C']}, {r['H']} | {_ms(r['one_block'])} | {_ms(r['bands'])} | "
                     f"{r['speedup']:.1f}× | {r['per_diagonal_bands'] * 1e6:.2f} µs | "
                     f"{r['rel_err_vs_cpu']:.1e} {_mark(r['agrees'])} |")
    return "\n".join(lines)


def flows_tables(tables: dict) -> str:
    from invconv_core.flows.timing import markdown
    return "\n\n".join(markdown(rows, f"### {name}-shaped flows, batch 100") for name, rows in tables.items())


def render_markdown(results: dict) -> str:
    env = results.get("environment", {})
    stages = results.get("stages", {})
    out = ["# invconv_core on a GPU (`python bench/gpu.py`)", ""]
    if env:
        out += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(env.items())] + [""]
    out += ["## Stages", "", "| stage | result | time | detail |", "|---|---|---|---|"]
    for name in ("build", "verify", "bench", "flows"):
        st = stages.get(name)
        if st is None:
            out.append(f"| {name} | not run | | |")
            continue
        detail = str(st.get("detail", "")).replace("|", "/").replace("\n", " ")
        out.append(f"| {name} | {'passed' if st.get('ok') else '**FAILED**'} | {st.get('seconds', 0):.0f} s | {detail} |")
    bench = stages.get("bench", {})
    if bench.get("core"):
        out += ["", "## Inverse against cuDNN conv2d at the flow shapes (float32, same run)", "",
                core_table(bench["core"])]
    if bench.get("scaling"):
        out += ["", "## Scaling with the image size (float32, C = 4, k = 3)", "",
                scaling_table(bench["scaling"]), "", "![scaling](gpu-scaling.png)"]
    if bench.get("bands"):
        out += ["", "## Small batches: bands of rows over several blocks against one block per image "
                "(float32, k = 3, same run)", "", bands_table(bench["bands"])]
    flows = stages.get("flows", {})
    if flows.get("tables"):
        out += ["", "## Flows: forward, sampling and train step", "", flows_tables(flows["tables"])]
    return "\n".join(out) + "\n"


def targets(results: dict) -> list[tuple[str, bool]]:
    """(description, met) for each target the measured results decide."""
    bench = results.get("stages", {}).get("bench", {})
    found = []
    for r in bench.get("core", []):
        shape = f"B={r['B']} C={r['C']} {r['H']}²"
        inv = r["inv_forward"] / r["conv_forward"]
        fb = r["inv_forward_backward"] / r["conv_forward_backward"]
        found.append((f"inverse {inv:.2f}× conv2d at {shape} (≤ {TARGET_INVERSE_RATIO:g}×)",
                      inv <= TARGET_INVERSE_RATIO))
        found.append((f"fwd+bwd {fb:.2f}× conv2d's at {shape} (≤ {TARGET_FORWARD_BACKWARD_RATIO:g}×)",
                      fb <= TARGET_FORWARD_BACKWARD_RATIO))
    for r in bench.get("scaling", []):
        if r["B"] == 1 and r["H"] == 256:
            found.append((f"B=1 256²: {r['per_diagonal'] * 1e6:.2f} µs per anti-diagonal (≤ 1 µs), "
                          f"{_ms(r['inv_forward'])} (≤ 0.5 ms)", r["per_diagonal"] <= TARGET_SECONDS_PER_DIAGONAL))
    for r in bench.get("bands", []):
        shape = f"B={r['B']} C={r['C']} {r['H']}²"
        found.append((f"bands at {shape} agree with the CPU core (rel. error {r['rel_err_vs_cpu']:.1e})",
                      r["agrees"]))
        if r["B"] == 1:
            found.append((f"bands at {shape}: {r['per_diagonal_bands'] * 1e6:.2f} µs per anti-diagonal "
                          f"(≤ 0.3 µs)", r["per_diagonal_bands"] <= 0.3e-6))
        else:
            found.append((f"bands at {shape}: {r['speedup']:.1f}× one block per image (≥ 4×)",
                          r["speedup"] >= 4.0))
    return found


def summary(results: dict) -> str:
    """One screen: each stage, then each target met or missed."""
    lines = []
    for name in ("build", "verify", "bench", "flows"):
        st = results.get("stages", {}).get(name)
        if st is not None:
            lines.append(f"{name:7s} {'ok    ' if st.get('ok') else 'FAILED'} {st.get('seconds', 0):6.0f} s  "
                         f"{str(st.get('detail', '')).splitlines()[0] if st.get('detail') else ''}")
    for text, met in targets(results):
        lines.append(f"target {'met   ' if met else 'MISSED'} {text}")
    return "\n".join(lines)


def plot_scaling(rows: list[dict], path: str) -> str | None:
    """Log-log plot of inv_conv2d and conv2d against the image side, one line per batch."""
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for B in sorted({r["B"] for r in rows}):
        sel = sorted((r for r in rows if r["B"] == B), key=lambda r: r["H"])
        ax.loglog([r["H"] for r in sel], [r["inv_forward"] * 1e3 for r in sel], "o-", label=f"inv_conv2d B={B}")
        ax.loglog([r["H"] for r in sel], [r["conv_forward"] * 1e3 for r in sel], "s--", label=f"cuDNN conv2d B={B}")
    ax.set_xlabel("image side H = W")
    ax.set_ylabel("ms per call")
    ax.set_title("CUDA: inverse vs convolution (float32, C = 4, k = 3)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _finite(obj):
    """JSON has no NaN/inf: they become null (a failed measurement stays visible as null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_report(results: dict, out_dir: str) -> list[str]:
    """Writes gpu-results.json, gpu-results.md and gpu-scaling.png (when there is scaling data)
    into ``out_dir``, each atomically; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def atomic(name, text):
        path = os.path.join(out_dir, name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        written.append(path)

    atomic(RESULTS_JSON, json.dumps(_finite(results), indent=1, allow_nan=False) + "\n")
    atomic(RESULTS_MD, render_markdown(results))
    plot = plot_scaling(results.get("stages", {}).get("bench", {}).get("scaling", []),
                        os.path.join(out_dir, "gpu-scaling.png"))
    if plot:
        written.append(plot)
    return written


def pytest_counts(output: str) -> dict:
    """passed / failed / skipped / errors from pytest's final summary line."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    tail = output.strip().splitlines()[-1] if output.strip() else ""
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail):
        key = "errors" if word.startswith("error") else word
        counts[key] = counts.get(key, 0) + int(n)
    return counts
