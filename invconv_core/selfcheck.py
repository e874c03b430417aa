"""Checks of the installed operators against the dense float64 oracle (oracle.py), on every
device present and every implementation in use: what ``invconv-verify`` runs (verify.py is its
command line), so that nobody has to take the gradients on trust.

A check compares one quantity over random cases: the inverse, the adjoint solve, ∂L/∂y, ∂L/∂w
(through autograd of the public op), the log-det, and ``gradcheck``. Every error is measured
against the forward-error bound of a triangular solve (``oracle.solve_tolerance``), so a check
passes on every case or reports its smallest failing case as a Python snippet that replays it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

import invconv_core as ic  # the public API, as users call it (the package is initialised by now)
from ._geometry import ORDERS
from ._loader import BUILD_INFO, COMPILED
from .oracle import (DenseProblem, operand_arrays, rel_err, solve_tolerance, to_np,
                     weight_grad_bound)
from .wavefront import wavefront_solve

__all__ = ["Case", "CheckResult", "draw_cases", "devices", "implementations", "run_checks",
           "snippet", "ORDERS", "CHECKS"]


CHECKS = ("inverse", "adjoint", "grad_y", "grad_w", "logabsdet", "gradcheck")
DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class Case:
    """One random problem: a batch (B, C, H, W), a kernel kh × kw, an order and the seed of its
    operands (oracle.operand_arrays: a well-conditioned weight, y and an output gradient)."""
    B: int
    C: int
    H: int
    W: int
    kh: int
    kw: int
    order: str
    seed: int

    @property
    def size(self) -> int:
        return self.B * self.C * self.H * self.W

    @property
    def terms(self) -> int:
        """Products summed per unknown (the n of the cond·n·u tolerance)."""
        return self.C * self.kh * self.kw

    def arrays(self):
        """(weight, y, g) as float64 arrays."""
        return operand_arrays(self.C, self.kh, self.kw, self.order, (self.B, self.C, self.H, self.W),
                              self.seed, extra=1)


def draw_cases(seed: int, n: int, deep: bool = False) -> list[Case]:
    """``n`` cases from ``seed``: C in 1..12 (1..16 deep), H, W in 1..8 (1..12), kernels up
    to 9 (15) -- often larger than the image --, B in 1..3, the four orders in turn."""
    rng = np.random.default_rng(seed)
    max_c, max_hw, max_k = (16, 12, 15) if deep else (12, 8, 9)
    cases = []
    for i in range(n):
        cases.append(Case(B=int(rng.integers(1, 4)), C=int(rng.integers(1, max_c + 1)),
                          H=int(rng.integers(1, max_hw + 1)), W=int(rng.integers(1, max_hw + 1)),
                          kh=int(rng.integers(1, max_k + 1)), kw=int(rng.integers(1, max_k + 1)),
                          order=ORDERS[i % 4], seed=int(rng.integers(0, 2**32))))
    return cases


def devices() -> list[str]:
    """The CPU and every CUDA device torch sees."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def implementations(device: str) -> list[str]:
    """What serves inv_conv2d on ``device`` ("compiled CPU kernel", "CUDA kernel" or
    "pure-PyTorch fallback"), then the pure-PyTorch wavefront itself where it is not already
    that (it serves whenever the compiled core cannot)."""
    if device == "cpu":
        served = "compiled CPU kernel" if COMPILED else "pure-PyTorch fallback"
    else:
        served = "CUDA kernel" if COMPILED and BUILD_INFO.get("cuda") else "pure-PyTorch fallback"
    return [served] + (["pure-PyTorch fallback"] if served != "pure-PyTorch fallback" else [])


@dataclass
class Failure:
    case: Case
    error: float
    tolerance: float


@dataclass
class CheckResult:
    """One line of the report: a check on one device, implementation and dtype."""
    check: str
    device: str
    implementation: str
    dtype: str
    cases: int = 0
    worst_error: float = 0.0        # the error of the case closest to (or furthest past) its tolerance
    worst_tolerance: float = math.inf
    failures: list[Failure] = field(default_factory=list)
    _worst_ratio: float = field(default=-math.inf, repr=False)

    @property
    def passed(self) -> bool:
        return self.cases > 0 and not self.failures

    def record(self, case: Case, error: float, tolerance: float) -> None:
        """One case's error against its tolerance; keeps the case nearest to (or furthest past)
        its tolerance as the worst."""
        self.cases += 1
        if not error <= tolerance:  # NaN fails too
            self.failures.append(Failure(case, error, tolerance))
        ratio = error / tolerance if tolerance > 0 and not math.isnan(error) else math.inf
        if self.cases == 1 or ratio > self._worst_ratio:
            self._worst_ratio = ratio
            self.worst_error, self.worst_tolerance = error, tolerance

    def to_dict(self) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("failures", "_worst_ratio")}
        d["passed"] = self.passed
        d["failures"] = [{"case": dataclasses.asdict(f.case), "error": f.error, "tolerance": f.tolerance}
                         for f in self.failures]
        if self.failures:
            d["snippet"] = snippet(self)
        return _finite(d)


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # JSON has no inf/NaN
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _solver(implementation: str):
    if implementation == "pure-PyTorch fallback" and COMPILED:
        return lambda y, w, order, transpose: wavefront_solve(y, w, order, transpose)
    return lambda y, w, order, transpose: (ic.inv_conv2d_transpose if transpose else ic.inv_conv2d)(y, w, order)


def _tensor(a, dtype, device, grad=False):
    return torch.tensor(a, dtype=dtype, device=device).requires_grad_(grad)


def run_checks(cases: list[Case], device_list: list[str] | None = None, progress=None) -> list[CheckResult]:
    """Every check over ``cases`` on every device and implementation; ``progress(result)`` is
    called as each result completes. The dense problem of a case is built once."""
    device_list = devices() if device_list is None else device_list
    dense = {c: DenseProblem(c.arrays()[0], c.H, c.W, c.order) for c in cases}
    cond = {c: dense[c].cond() for c in cases}
    results = []

    def done(r):
        results.append(r)
        if progress:
            progress(r)

    def over_cases(names, device, impl, dtype, measure):
        """One CheckResult per name; measure(case, tol) -> {name: (error, tolerance)}."""
        found = {n: CheckResult(n, device, impl, str(dtype).replace("torch.", "")) for n in names}
        for c in cases:
            tol = solve_tolerance(cond[c], c.terms, dtype)
            for name, (err, bound) in measure(c, tol).items():
                found[name].record(c, err, bound)
        for r in found.values():
            done(r)

    for device in device_list:
        for impl in implementations(device):
            solve = _solver(impl)
            for dtype in DTYPES:
                def solves(c, tol, dtype=dtype, device=device, solve=solve):
                    w, y, g = c.arrays()
                    wt, yt, gt = (_tensor(a, dtype, device) for a in (w, y, g))
                    return {"inverse": (rel_err(to_np(solve(yt, wt, c.order, False)), dense[c].solve(y)), tol),
                            "adjoint": (rel_err(to_np(solve(gt, wt, c.order, True)), dense[c].solve_transpose(g)), tol)}
                over_cases(("inverse", "adjoint"), device, impl, dtype, solves)
            # gradients, log-det and gradcheck go through the public op (autograd formula)
            if impl != implementations(device)[0]:
                continue
            for dtype in DTYPES:
                def gradients(c, tol, dtype=dtype, device=device):
                    w, y, g = c.arrays()
                    wt, yt = _tensor(w, dtype, device, True), _tensor(y, dtype, device, True)
                    (ic.inv_conv2d(yt, wt, c.order) * _tensor(g, dtype, device)).sum().backward()
                    x_ref, gy_ref = dense[c].solve(y), dense[c].solve_transpose(g)
                    gw_ref = dense[c].weight_grad(gy_ref, x_ref)
                    bound = weight_grad_bound(tol, c.B * c.H * c.W, dtype, gy_ref, x_ref)
                    return {"grad_y": (rel_err(to_np(yt.grad), gy_ref), tol),
                            "grad_w": (float(np.abs(to_np(wt.grad) - gw_ref).max(initial=0.0)), bound + 1e-300)}
                over_cases(("grad_y", "grad_w"), device, impl, dtype, gradients)
            ld = CheckResult("logabsdet", device, impl, "float64")
            for c in _at_least_one([c for c in cases if c.C * c.H * c.W <= 400], cases):
                # slogdet of the dense T: kept cheap
                w = _tensor(c.arrays()[0], torch.float64, device)
                problem = dense[c] if c in dense else DenseProblem(c.arrays()[0], c.H, c.W, c.order)
                expected = problem.logabsdet()
                got = float(ic.logabsdet(w, c.H, c.W, c.order))
                ld.record(c, abs(got - expected), 1e-9 * max(1.0, abs(expected)) + c.C * c.H * c.W * 1e-12)
            done(ld)
            gc = CheckResult("gradcheck", device, impl, "float64")
            for c in _at_least_one([c for c in cases if c.size <= 60][:4], cases):
                w, y, _ = c.arrays()
                wt, yt = _tensor(w, torch.float64, device, True), _tensor(y, torch.float64, device, True)
                ok = all(torch.autograd.gradcheck(lambda a, b, f=f: f(a, b, c.order), (yt, wt),
                                                  raise_exception=False)
                         for f in (ic.inv_conv2d, ic.inv_conv2d_transpose))
                gc.record(c, 0.0 if ok else 1.0, 0.5)  # pass/fail: 0 passes, 1 fails
            done(gc)
    return results


def _at_least_one(chosen: list, cases: list) -> list:
    """``chosen`` (the cases small enough for a costly check), or -- when none was small enough
    -- the smallest case shrunk to at most 1×4×3×3 (same kernel, order and operand seed), so
    that no check reports "0 cases" (which is a failure: a check that ran nothing proves
    nothing). The shrunk case is replayable like any other."""
    if chosen or not cases:
        return chosen
    c = min(cases, key=lambda c: c.size)
    return [dataclasses.replace(c, B=1, C=min(c.C, 4), H=min(c.H, 3), W=min(c.W, 3))]


def snippet(result: CheckResult) -> str:
    """Python code that replays the smallest failing case of ``result`` and prints its error."""
    f = min(result.failures, key=lambda f: f.case.size)
    c = f.case
    dt = f"torch.{result.dtype}"
    head = [f"# {result.check} on {result.device} ({result.implementation}, {result.dtype}): "
            f"error {f.error:.3g} > tolerance {f.tolerance:.3g}",
            "import numpy as np, torch",
            "import invconv_core as ic",
            "from invconv_core.oracle import DenseProblem, operand_arrays, rel_err",
            f"w, y, g = operand_arrays({c.C}, {c.kh}, {c.kw}, {c.order!r}, ({c.B}, {c.C}, {c.H}, {c.W}), seed={c.seed}, extra=1)",
            f"dense = DenseProblem(w, {c.H}, {c.W}, {c.order!r})",
            f"T = lambda a, grad=False: torch.tensor(a, dtype={dt}, device={result.device!r}).requires_grad_(grad)",
            "np_ = lambda t: t.detach().cpu().double().numpy()"]
    if result.implementation == "pure-PyTorch fallback":
        head.append("from invconv_core.wavefront import wavefront_solve")
        inv = f"wavefront_solve(T(y), T(w), {c.order!r}, False)"
        adj = f"wavefront_solve(T(g), T(w), {c.order!r}, True)"
    else:
        inv = f"ic.inv_conv2d(T(y), T(w), {c.order!r})"
        adj = f"ic.inv_conv2d_transpose(T(g), T(w), {c.order!r})"
    body = {
        "inverse": [f"print(rel_err(np_({inv}), dense.solve(y)))"],
        "adjoint": [f"print(rel_err(np_({adj}), dense.solve_transpose(g)))"],
        "grad_y": ["yt, wt = T(y, True), T(w, True)",
                   f"(ic.inv_conv2d(yt, wt, {c.order!r}) * T(g)).sum().backward()",
                   "print(rel_err(np_(yt.grad), dense.solve_transpose(g)))"],
        "grad_w": ["yt, wt = T(y, True), T(w, True)",
                   f"(ic.inv_conv2d(yt, wt, {c.order!r}) * T(g)).sum().backward()",
                   "print(np.abs(np_(wt.grad) - dense.weight_grad(dense.solve_transpose(g), dense.solve(y))).max())"],
        "logabsdet": [f"print(float(ic.logabsdet(T(w), {c.H}, {c.W}, {c.order!r})) - dense.logabsdet())"],
        "gradcheck": ["yt, wt = T(y, True), T(w, True)",
                      f"print(torch.autograd.gradcheck(lambda a, b: ic.inv_conv2d(a, b, {c.order!r}), (yt, wt)))"],
    }[result.check]
    return "\n".join(head + body)
