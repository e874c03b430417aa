"""flow_shapes_report.py: ratios per shape from a pytest-benchmark JSON (synthetic here)."""

from __future__ import annotations

import json

import flow_shapes_report as rep


def _bench(mode, B, C, H, impl, median):
    return {"group": f"flow {mode} cpu B{B} C{C} {H}x{H}", "params": {"impl": impl},
            "stats": {"median": median, "mean": median, "min": median}}


def test_ratios_and_markdown(tmp_path, capsys):
    data = {"benchmarks": [
        _bench("forward", 100, 4, 4, "conv2d", 2e-5), _bench("forward", 100, 4, 4, "inv_conv2d", 3e-5),
        _bench("forward+backward", 100, 4, 4, "conv2d", 1e-4), _bench("forward+backward", 100, 4, 4, "inv_conv2d", 1e-4),
        _bench("forward", 1, 4, 4, "conv2d", 1e-5), _bench("forward", 1, 4, 4, "inv_conv2d", 1.5e-5),
        {"group": "something else", "params": {}, "stats": {"median": 1.0}},
    ]}
    rows = rep.ratios(data)
    assert [(r["B"], r["C"], r["H"]) for r in rows] == [(100, 4, 4), (1, 4, 4)]
    assert rows[0]["forward"][2] == 1.5 and rows[0]["forward+backward"][2] == 1.0
    assert "forward+backward" not in rows[1]
    md = rep.markdown(rows)
    assert "| cpu | 100, 4, 4 | 0.030 / 0.020 ms = 1.50× (over) | 0.100 / 0.100 ms = 1.00× |" in md
    assert "| cpu | 1, 4, 4 | 0.015 / 0.010 ms = 1.50× | — |" in md  # B = 1: target 2×
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(data))
    assert rep.main([str(path)]) == 0 and "100, 4, 4" in capsys.readouterr().out
    path.write_text("{}")
    assert rep.main([str(path)]) == 1
