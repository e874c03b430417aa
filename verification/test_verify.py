"""``invconv-verify``: the installed command (exit status, report, JSON), the checks failing on
a planted bug with a snippet that replays the failure, and the oracle without SciPy."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_console_scripts import run

import invconv_core
from invconv_core import oracle, selfcheck, verify

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK_NAMES = ("inverse", "adjoint", "grad_y", "grad_w", "logabsdet", "gradcheck")


def test_installed_command_verifies_and_writes_json(tmp_path):
    proc = run("invconv-verify", "--seed", "5", "--cases", "8", "--json", tmp_path / "v.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert "seed 5 (replay: invconv-verify --seed 5 --cases 8)" in proc.stdout
    assert lines[-1].startswith("VERIFIED: all ") and "checks passed" in lines[-1]
    for name in CHECK_NAMES:
        assert any(line.startswith("cpu ") and f" {name} " in line and line.endswith("PASS") for line in lines), name
    assert any("pure-PyTorch fallback  inverse" in line for line in lines)
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["passed"] is True and report["seed"] == 5 and report["cases"] == 8
    assert {r["check"] for r in report["results"]} == set(CHECK_NAMES)
    assert all(r["passed"] and r["cases"] > 0 for r in report["results"])
    # it checks the installed package: outside the repository unless installed editable
    here = os.path.dirname(os.path.abspath(invconv_core.__file__))
    assert f"({here})" in lines[0]
    if not here.startswith(REPO):
        assert REPO not in lines[0]


def test_python_dash_m_and_help():
    proc = subprocess.run([sys.executable, "-m", "invconv_core.verify", "--help"], capture_output=True,
                          text=True, cwd=os.path.expanduser("~"))
    assert proc.returncode == 0 and "--seed" in proc.stdout and "--deep" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--cases", "0"], "argument --cases: expected an integer in 1..100000, got 0"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["--cases", "many"], "argument --cases: expected an integer in 1..100000, got 'many'"),
])
def test_bad_arguments_exit_2(args, message):
    proc = run("invconv-verify", *args)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == f"invconv-verify: error: {message}"


def test_unwritable_json_is_refused_before_any_check(tmp_path):
    proc = run("invconv-verify", "--json", tmp_path / "missing" / "v.json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("invconv-verify: error: --json")


def test_same_seed_same_cases_covering_orders_and_large_kernels():
    a, b = selfcheck.draw_cases(11, 40), selfcheck.draw_cases(11, 40)
    assert a == b and a != selfcheck.draw_cases(12, 40)
    assert {c.order for c in a} == {"TL", "TR", "BL", "BR"}
    assert any(c.kh > c.H or c.kw > c.W for c in a) and max(c.C for c in a) >= 8


def test_a_planted_bug_fails_with_a_snippet_that_replays_it(monkeypatch):
    """A wrong adjoint (the forward solve returned for T⁻ᵀ, a realistic slip) must fail the adjoint
    check, exit 1, and print the smallest failing case as code that shows the error."""
    monkeypatch.setattr(invconv_core, "inv_conv2d_transpose", lambda g, w, order="TL": invconv_core.inv_conv2d(g, w, order))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = verify.main(["--seed", "3", "--cases", "6"])
    text = out.getvalue()
    assert status == 1
    assert "FAILED:" in text.splitlines()[-1] and "(seed 3)" in text.splitlines()[-1]
    assert any(" adjoint " in line and "FAIL" in line for line in text.splitlines())
    assert all("PASS" in line for line in text.splitlines() if " inverse " in line)
    code = text.split("smallest failing case of adjoint on cpu (compiled CPU kernel, float32):\n")[1]
    code = code.split("\n\n")[0]
    assert code.startswith("# adjoint on cpu")
    replay = io.StringIO()
    with contextlib.redirect_stdout(replay):
        exec(compile(code, "<snippet>", "exec"), {})
    tolerance = float(code.splitlines()[0].split("> tolerance ")[1])
    assert float(replay.getvalue()) > tolerance


def test_oracle_without_scipy_agrees(monkeypatch):
    w, y, g = oracle.operand_arrays(3, 3, 2, "BL", (2, 3, 5, 4), seed=9, extra=1)
    with_scipy = oracle.DenseProblem(w, 5, 4, "BL")
    x, gt = with_scipy.solve(y), with_scipy.solve_transpose(g)
    monkeypatch.setattr(oracle, "_scipy_solve_triangular", None)
    without = oracle.DenseProblem(w, 5, 4, "BL")
    assert np.allclose(without.solve(y), x, rtol=1e-12, atol=1e-12)
    assert np.allclose(without.solve_transpose(g), gt, rtol=1e-12, atol=1e-12)


def test_every_check_runs_at_least_one_case():
    """Issue 22 item 8: a draw with no case small enough for logabsdet/gradcheck made them report
    "0 cases FAIL" (invconv-verify --cases 1 --seed 1: exit 1). Now the smallest case, shrunk,
    serves them."""
    big = selfcheck.Case(B=3, C=12, H=8, W=8, kh=3, kw=3, order="TL", seed=7)
    results = selfcheck.run_checks([big], ["cpu"])
    assert {r.check for r in results} == set(CHECK_NAMES)
    assert all(r.cases >= 1 and r.passed for r in results), [(r.check, r.cases) for r in results]


def test_installed_command_with_one_case_and_a_bound_on_cases():
    proc = run("invconv-verify", "--seed", "1", "--cases", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 cases" not in proc.stdout and "VERIFIED" in proc.stdout
    proc = run("invconv-verify", "--cases", "1000000000")
    assert proc.returncode == 2 and "argument --cases: expected an integer in 1..100000" in proc.stderr
