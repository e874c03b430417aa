"""The static model of the CUDA solve (bench/sass_model.py) on a synthetic profile: its launch
mirror agrees with the compiled launch_config, and it responds to the machine code the way it
claims to (more instructions or slower loads never make a solve faster). No nvcc needed."""

from __future__ import annotations

import copy
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass_model as sm  # noqa: E402

PROFILE = {"short": "wavefront_solve_kernel<float, float, true, 1, int>", "channels_per_thread": 4,
           "pair_path": [60, 70], "row_path": [15, 20], "neighbour_path": [15, 61],
           "dot_loops": [{"instructions": 32, "fma": 16, "channels": 4}], "rhs_loops": []}


@pytest.mark.parametrize("shape", sm.SHAPES + [(3, 5, 7, 9), (2, 48, 12, 12)])
@pytest.mark.parametrize("acc_size", [4, 8])
@pytest.mark.parametrize("limit", [0, 48 * 1024, 227 * 1024])
def test_the_launch_mirror_is_the_kernels_launch_config(shape, acc_size, limit):
    simt = pytest.importorskip("invconv_core._simt")
    B, C, H, W = shape
    got = simt.launch_config(B, C, H, W, 3, 3, acc_size, limit, False)
    mine = sm.launch_new(B, C, H, W, 3, 3, acc_size, limit)
    assert (mine.threads, mine.taps_in_shared, mine.image) == \
        (got["threads"], got["taps_in_shared"], got["image"])


def test_the_model_gives_a_range_and_never_rewards_more_code():
    shape = (100, 12, 16, 16)
    launch = sm.launch_new(*shape, 3, 3, 4, 227 * 1024)
    base = sm.model_solve(PROFILE, shape, launch, True)
    assert 0 < base["low_us"] <= base["high_us"]
    bigger = copy.deepcopy(PROFILE)
    bigger["dot_loops"][0]["instructions"] *= 3
    assert sm.model_solve(bigger, shape, launch, True)["high_us"] >= base["high_us"]
    slow = dict(sm.MACHINE, lds_latency=sm.MACHINE["l2_latency"])
    assert sm.model_solve(PROFILE, shape, launch, True, m=slow)["low_us"] >= base["low_us"]
    # the dot loop's trip counts: 12 channels = 3 iterations of 4; 13 leave one to straight code
    assert sm._dot(PROFILE["dot_loops"], 12) == (96, [4, 4, 4])
    assert sm._dot(PROFILE["dot_loops"], 13) == (96, [4, 4, 4, 1])


def test_the_markdown_table_says_it_is_a_model():
    shape = (1, 4, 256, 256)
    launch = sm.launch_new(*shape, 3, 3, 4, 227 * 1024)
    row = {"shape": shape, "before": sm.model_solve(PROFILE, shape, launch, True),
           "after": sm.model_solve(PROFILE, shape, launch, True), "conv2d_us": None}
    table = sm.markdown([row])
    assert "modelled" in table and "| 1, 4, 256 |" in table


@pytest.mark.parametrize("shape", sm.SMALL_BATCHES + [(1, 48, 40, 24), (2, 3, 70, 9), (100, 4, 64, 64), (1, 4, 20, 20)])
@pytest.mark.parametrize("acc_size", [4, 8])
@pytest.mark.parametrize("limit", [48 * 1024, 227 * 1024])
def test_the_band_launch_mirror_is_the_kernels_band_config(shape, acc_size, limit):
    simt = pytest.importorskip("invconv_core._simt")
    B, C, H, W = shape
    got = simt.launch_config(B, C, H, W, 3, 3, acc_size, limit, False, sm_count=132)
    mine = sm.launch_band(B, C, H, W, 3, 3, acc_size, limit, sms=132)
    if mine is None:
        assert got["image"] != "band"
    else:
        assert (got["image"], got["threads"], got["compute_threads"], got["split"], got["band_rows"],
                got["bands"], got["taps_in_shared"]) == \
            ("band", mine.threads, mine.compute, mine.split, mine.rows, mine.bands, mine.taps_in_shared)


BAND_PROFILE = {"short": "wavefront_solve_kernel<float, float, true, 3, int>", "channels_per_thread": 4,
                "pair_path": [30, 40], "outer_path": [40, 60],
                "dot_loops": [{"instructions": 32, "fma": 16, "channels": 4}], "rhs_loops": []}


def test_the_band_model_gives_a_range_and_never_rewards_slower_memory():
    shape = (1, 4, 256, 256)
    launch = sm.launch_band(*shape, 3, 3, 4, 227 * 1024)
    base = sm.model_band(BAND_PROFILE, shape, launch)
    assert 0 < base["low_us"] <= base["high_us"] and base["bands"] == launch.bands
    slow = dict(sm.MACHINE, l2_latency=2 * sm.MACHINE["l2_latency"])  # the halo's loads and polls
    assert sm.model_band(BAND_PROFILE, shape, launch, m=slow)["low_us"] > base["low_us"]
    bigger = copy.deepcopy(BAND_PROFILE)
    bigger["outer_path"] = [400, 600]
    assert sm.model_band(bigger, shape, launch)["high_us"] > base["high_us"]
    assert "bands: launch" in sm.markdown_small_batches(
        [{"shape": shape, "one_block": sm.model_solve(PROFILE, shape, sm.launch_new(*shape, 3, 3, 4, 227 * 1024), True),
          "bands": base}])
