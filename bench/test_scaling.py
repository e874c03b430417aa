"""Scaling of the inverse convolution and its backprop against the sequential and the naive
method (issue: O(√n) depth versus O(n³)). Sizes come from --bench-profile (profiles.py).

    pytest bench/test_scaling.py --benchmark-only --benchmark-json=results.json
    python bench/report.py results.json
"""

import pytest
from bench_methods import timed_callable


@pytest.mark.benchmark(max_time=0.5, min_rounds=3, warmup=False)
def test_scaling(benchmark, scaling_case):
    c = scaling_case
    benchmark.group = f"{c.mode} {c.device} C={c.C} k={c.k} B={c.B}"
    benchmark.extra_info.update(c.info())
    fn = timed_callable(c.method, c.mode, c.B, c.C, c.m, c.k, c.device)
    fn()  # warm-up (allocations, first-call setup) outside the timing
    benchmark(fn)
