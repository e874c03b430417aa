"""The CPU kernel's pipelined row schedule (few images: threads solve successive rows, each
behind the row above) checked for races that a 2-core machine would rarely provoke: a test-only
build of the same kernel source stalls the producer after every publish, so a consumer that
read past the published columns would read them unsolved on every run. The check passes on the
real kernel and fails on a planted read-ahead of one column (cpp/testing/). (The test build
also publishes every column, a finer but legal hand-off: with the real chunked publishes a
one-column read-ahead stays hidden behind the chunk the producer has already finished.)"""

from __future__ import annotations

import os

import pytest
import torch
from cases import ORDERS, operands, rel_err, to_np

import invconv_core as ic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTING = os.path.join(REPO, "cpp", "testing")


@pytest.fixture(scope="module")
def race_ops(tmp_path_factory):
    """Builds both test-only variants (≈ 1 minute on 2 cores) and returns their ops."""
    import sys

    from torch.utils.cpp_extension import load
    sys.path.insert(0, REPO)
    import build_flags
    load(name="invconv_pipeline_race", is_python_module=False, verbose=False,
         sources=[os.path.join(TESTING, "pipeline_race_check.cpp"),
                  os.path.join(TESTING, "pipeline_race_planted.cpp"),
                  os.path.join(REPO, "cpp", "solve_plan.cpp")],
         extra_cflags=["-O2", *build_flags.CXX], extra_ldflags=["-fopenmp"],
         build_directory=str(tmp_path_factory.mktemp("race_build")))
    return torch.ops.invconv_race_check.inv_conv2d, torch.ops.invconv_race_planted.inv_conv2d


@pytest.fixture
def two_threads():
    """The pipelined schedule runs when the batch is smaller than the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


# B = 1 image, C = 8, 64² (rows of 4 publish steps, 2.4e6 multiply-adds): the pipelined schedule
C = 8
SHAPE = (1, C, 64, 64)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("transpose", [False, True])
def test_pipeline_with_stalled_producers_is_bit_identical(race_ops, two_threads, order, transpose):
    check, _ = race_ops
    w, y = operands(C, 3, 3, order, SHAPE, torch.float64, seed=1)
    ref = (ic.inv_conv2d_transpose if transpose else ic.inv_conv2d)(y, w, order)
    assert torch.equal(check(y, w, order, transpose), ref)


#: Runs of the planted solve before the check gives up on catching it.
PLANTED_TRIES = 5


def test_race_check_catches_a_consumer_reading_one_column_ahead(race_ops, two_threads):
    """The producer stalls 200 µs after each publish, so the consumer that reads one column
    ahead reads it unsolved -- unless a loaded machine delays the consumer by more than the
    stall (seen once with 50 µs: rel_err 0.0). So: caught within PLANTED_TRIES runs (on an idle
    machine, on the first), never a pass by luck of one run, never a failure by load alone."""
    _, planted = race_ops
    w, y = operands(C, 3, 3, "TL", SHAPE, torch.float64, seed=1)
    ref = ic.inv_conv2d(y, w, "TL")
    errors = []
    for _ in range(PLANTED_TRIES):
        errors.append(rel_err(to_np(planted(y, w, "TL", False)), to_np(ref)))
        if errors[-1] > 1e-3:
            break
    assert errors[-1] > 1e-3, f"the planted read-ahead went unnoticed in {PLANTED_TRIES} runs: {errors}"
