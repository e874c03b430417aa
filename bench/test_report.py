"""bench/report.py on synthetic pytest-benchmark JSON with known exponents."""

import json

import pytest
from report import fit_exponent, load, main, render


def _doc(alpha_by_method):
    benches = []
    for method, alpha in alpha_by_method.items():
        for m in (4, 8, 16, 32, 64):
            for mode in ("forward", "backward"):
                benches.append({"stats": {"median": 1e-6 * (m * m) ** alpha},
                                "extra_info": dict(device="cpu", method=method, mode=mode,
                                                   C=4, k=3, B=1, m=m)})
    return {"machine_info": {"node": "test", "cpu": {"brand_raw": "X", "count": 2}},
            "benchmarks": benches}


def test_fit_recovers_the_exponent():
    pts = {m: 3e-5 * (m * m) ** 1.5 for m in (8, 16, 32, 64)}
    alpha, lo, hi = fit_exponent(pts, m_min=16)
    assert alpha == pytest.approx(1.5, abs=1e-9) and (lo, hi) == (16, 64)


def test_report_tables_speedups_and_plot(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_doc({"compiled": 1.0, "naive": 3.0, "wavefront": 0.5})))
    data, machine = load([str(path)])
    text = render(data, machine)
    assert "| invconv_core compiled |" in text and "1.00 (m=16..64)" in text
    assert "3.00 (m=16..64)" in text and "0.50 (m=16..64)" in text
    # naive/compiled at m=64 = (64²)^(3-1) = 1.68e7
    assert "m=64: compiled 1.68e+07×" in text
    out = tmp_path / "report.md"
    main([str(path), "--out", str(out), "--plots", str(tmp_path / "plots")])
    assert (tmp_path / "plots" / "scaling-cpu-C4-k3-B1.png").stat().st_size > 1000
    assert "scaling-cpu-C4-k3-B1.png" in out.read_text()
