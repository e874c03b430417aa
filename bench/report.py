r"""Turn pytest-benchmark JSON from bench/test_scaling.py into a markdown report and plots.

    python bench/report.py results.json [more.json ...] [--out report.md] [--plots DIR]

For every (device, C, k, B) group and mode (forward, backward, forward_backward) it prints:
the median time of each method at each image side m; the fitted scaling exponent α of
time ∝ n^α (n = m² pixels; least squares on log-log over the fit range it names); the
speedup of each method over the naive dense method at the sizes both ran; and, at B = 1, the
time per wavefront step (time / (2m − 1)). With --plots it writes one log-log PNG per group.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import defaultdict

METHOD_ORDER = ("compiled", "wavefront", "sequential", "naive")
MODE_ORDER = ("forward", "backward", "forward_backward")
LABEL = {
    "compiled": "invconv_core compiled",
    "wavefront": "pure-PyTorch wavefront",
    "sequential": "sequential substitution (SciPy sparse)",
    "naive": "naive dense LU (torch.linalg.solve)",
}


def load(paths):
    """{(device, C, k, B): {mode: {method: {m: median_seconds}}}} and the machine info."""
    data = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    machine = None
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        machine = machine or doc.get("machine_info", {})
        for b in doc["benchmarks"]:
            e = b.get("extra_info", {})
            if not {"device", "method", "mode", "C", "k", "B", "m"} <= e.keys():
                continue
            key = (e["device"], e["C"], e["k"], e["B"])
            data[key][e["mode"]][e["method"]][e["m"]] = b["stats"]["median"]
    return data, machine or {}


def fit_exponent(points: dict, m_min: int = 16):
    """Least-squares slope of log(time) against log(n = m²) over sizes m >= m_min (or the
    three largest sizes when fewer qualify). Returns (alpha, m_lo, m_hi) or None."""
    sizes = sorted(points)
    use = [m for m in sizes if m >= m_min]
    if len(use) < 3:
        use = sizes[-3:]
    if len(use) < 2:
        return None
    xs = [math.log(m * m) for m in use]
    ys = [math.log(points[m]) for m in use]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, use[0], use[-1]


def _fmt_time(sec: float) -> str:
    if sec >= 1:
        return f"{sec:.2f} s"
    if sec >= 1e-3:
        return f"{sec * 1e3:.3g} ms"
    return f"{sec * 1e6:.3g} µs"


def render(data, machine, m_min=16) -> str:
    lines = []
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor", "")
    lines.append(f"Machine: {machine.get('node', '?')}, {cpu}, "
                 f"{machine.get('cpu', {}).get('count', '?')} logical CPUs, "
                 f"Python {machine.get('python_version', '?')}.\n")
    for key in sorted(data):
        device, C, k, B = key
        lines.append(f"### {device}: C = {C}, k = {k}, B = {B}\n")
        for mode in MODE_ORDER:
            methods = data[key].get(mode)
            if not methods:
                continue
            sizes = sorted({m for pts in methods.values() for m in pts})
            lines.append(f"**{mode.replace('_', ' + ')}** — median time; α = fitted exponent of "
                         f"time ∝ n^α (n = m² pixels)\n")
            lines.append("| method | " + " | ".join(f"m={m}" for m in sizes) + " | α (fit range) |")
            lines.append("|---" * (len(sizes) + 2) + "|")
            for method in METHOD_ORDER:
                pts = methods.get(method)
                if not pts:
                    continue
                fit = fit_exponent(pts, m_min)
                fit_s = f"{fit[0]:.2f} (m={fit[1]}..{fit[2]})" if fit else "—"
                cells = [_fmt_time(pts[m]) if m in pts else "—" for m in sizes]
                lines.append(f"| {LABEL[method]} | " + " | ".join(cells) + f" | {fit_s} |")
            naive = methods.get("naive", {})
            shared = [m for m in sizes if m in naive]
            if shared:
                lines.append("")
                lines.append("Speedup over the naive method: " + "; ".join(
                    f"m={m}: " + ", ".join(f"{meth} {naive[m] / methods[meth][m]:.3g}×"
                                          for meth in METHOD_ORDER
                                          if meth != "naive" and m in methods.get(meth, {}))
                    for m in shared))
            if B == 1:
                per_step = [f"{meth} " + ", ".join(f"m={m}: {_fmt_time(t / (2 * m - 1))}"
                                                    for m, t in sorted(methods[meth].items()))
                            for meth in ("compiled", "wavefront") if meth in methods]
                if per_step:
                    lines.append("")
                    lines.append("Time per wavefront step (time / (2m − 1)): " + "; ".join(per_step))
            lines.append("")
    return "\n".join(lines)


def plot(data, directory: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []
    for key in sorted(data):
        device, C, k, B = key
        modes = [m for m in MODE_ORDER if m in data[key]]
        fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4.2), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            lo, hi = math.inf, 0
            for method in METHOD_ORDER:
                pts = data[key][mode].get(method)
                if not pts:
                    continue
                ms = sorted(pts)
                ax.loglog([m * m for m in ms], [pts[m] for m in ms], "o-", label=LABEL[method])
                lo, hi = min(lo, ms[0] ** 2), max(hi, ms[-1] ** 2)
            ax.set_title(f"{mode.replace('_', ' + ')}")
            ax.set_xlabel("n = pixels (m²)")
            ax.set_ylabel("median time (s)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{device}: C={C}, k={k}, B={B}")
        fig.tight_layout()
        path = os.path.join(directory, f"scaling-{device}-C{C}-k{k}-B{B}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", help="pytest-benchmark --benchmark-json output(s)")
    parser.add_argument("--out", help="write the markdown here (default: stdout)")
    parser.add_argument("--plots", help="directory for the log-log PNGs")
    parser.add_argument("--fit-min", type=int, default=16, help="smallest m in the exponent fit")
    args = parser.parse_args(argv)
    data, machine = load(args.json)
    if not data:
        raise SystemExit(f"no scaling benchmarks found in {args.json} (run bench/test_scaling.py "
                         "with --benchmark-json)")
    text = render(data, machine, args.fit_min)
    if args.plots:
        for path in plot(data, args.plots):
            text += f"\n![{os.path.basename(path)}]({os.path.relpath(path, os.path.dirname(args.out) if args.out else '.')})\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
