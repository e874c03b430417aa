"""Ratios of the flow-shape benchmarks (bench/test_flow_shapes.py): one line per shape with the
inverse / conv2d forward and forward+backward ratios, from a pytest-benchmark JSON file.

    python bench/flow_shapes_report.py flow.json [--stat median]
"""

from __future__ import annotations

import argparse
import json
import re
import sys

TARGET_B100 = 1.2
TARGET_B1 = 2.0


def ratios(data: dict, stat: str = "median") -> list[dict]:
    """[{device, B, C, H, forward, forward_backward: (ours, conv2d, ratio)}] per shape, in the
    order the shapes first appear."""
    table: dict = {}
    for bench in data.get("benchmarks", []):
        m = re.fullmatch(r"flow (forward|forward\+backward) (\w+) B(\d+) C(\d+) (\d+)x\d+", bench.get("group") or "")
        if not m:
            continue
        mode, device, B, C, H = m.group(1), m.group(2), *map(int, m.groups()[2:])
        impl = bench["params"]["impl"]
        row = table.setdefault((device, B, C, H), {"device": device, "B": B, "C": C, "H": H})
        row.setdefault(mode, {})[impl] = bench["stats"][stat]
    out = []
    for row in table.values():
        for mode in ("forward", "forward+backward"):
            t = row.get(mode, {})
            if "conv2d" in t and "inv_conv2d" in t:
                row[mode] = (t["inv_conv2d"], t["conv2d"], t["inv_conv2d"] / t["conv2d"])
            else:
                row.pop(mode, None)
        out.append(row)
    return out


def _cell(entry, target):
    if entry is None:
        return "—"
    ours, conv, ratio = entry
    mark = "" if ratio <= target else " (over)"
    return f"{ours * 1e3:.3f} / {conv * 1e3:.3f} ms = {ratio:.2f}×{mark}"


def markdown(rows: list[dict]) -> str:
    lines = ["| device | B, C, H=W | inverse / conv2d | forward+backward / conv2d's |", "|---|---|---|---|"]
    for r in rows:
        target = TARGET_B1 if r["B"] == 1 else TARGET_B100
        lines.append(f"| {r['device']} | {r['B']}, {r['C']}, {r['H']} | {_cell(r.get('forward'), target)} | "
                     f"{_cell(r.get('forward+backward'), target)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", help="pytest-benchmark --benchmark-json output")
    p.add_argument("--stat", default="median", choices=["median", "mean", "min"])
    args = p.parse_args(argv)
    try:
        with open(args.json, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        print(f"flow_shapes_report: {args.json}: {err}", file=sys.stderr)
        return 1
    rows = ratios(data, args.stat)
    if not rows:
        print(f"flow_shapes_report: {args.json}: no flow-shape benchmarks in it", file=sys.stderr)
        return 1
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
