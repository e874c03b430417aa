"""The CNN-only depth sweep (issue 21, part 2): ``invconv-compare --depths`` as a library
function (:func:`invconv_core.flows.compare_depths`) and as the installed command, on a tiny
configuration -- one comparison per K, each run built at that K, the depth table, JSON and plot;
continuing skips what is finished; settings it cannot continue are refused before any work."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess

import pytest

from invconv_core.flows import (CNN_MODELS, CompareConfig, DepthSweepConfig, RunExistsError,
                                compare_depths, load_flow)
from invconv_core.flows import comparison as compare_module
from invconv_core.flows.comparison import run_directory
from invconv_core.flows.depth_sweep import depth_directory

pytest.importorskip("matplotlib", reason="invconv-compare plots with the optional matplotlib")

TINY = dict(dataset="digits", models=CNN_MODELS, seeds=1, epochs=1, max_train=200, max_test=100,
            batch_size=50, samples=4, timing_repeats=1, lr=5e-3)


def sweep(out, depths=(1, 2), **kw) -> DepthSweepConfig:
    return DepthSweepConfig(CompareConfig.from_options(str(out), **{**TINY, **kw}), depths)


def quiet(line):
    pass


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "depth"
    return out, compare_depths(sweep(out), log=quiet)


def test_one_comparison_per_depth_each_run_at_its_depth(done):
    out, result = done
    assert result.depths == (1, 2) and len(result.comparisons) == 2
    for k, comparison in zip(result.depths, result.comparisons):
        assert comparison.out == depth_directory(str(out), k)
        assert [m.model for m in comparison.models] == list(CNN_MODELS)
        for model in CNN_MODELS:
            flow = load_flow(os.path.join(run_directory(comparison.out, model, 0), "last.pt"), "cpu")
            assert flow.config.steps == k and flow.config.model == model
            # K steps of [conv, ActNorm, activation] after the squeeze of each level
            assert len(flow.levels[0].layers) == 1 + 3 * k
    # cnn-inverse-flow and cnn-finc have the same parameters; the 1×1 baseline fewer
    for comparison in result.comparisons:
        params = {m.model: m.parameters for m in comparison.models}
        assert params["cnn-inverse-flow"] == params["cnn-finc"] > params["cnn-glow"]
        assert all(m.width is None for m in comparison.models)  # no couplings to size


def test_table_json_and_plot(done):
    out, result = done
    table = (out / "depth_table.md").read_text()
    assert table == result.markdown
    assert "| model | K = 1 | K = 2 |" in table
    for i, model in enumerate(CNN_MODELS):
        row = next(line for line in table.splitlines() if line.startswith(f"| {model} |"))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        for cell, comparison in zip(cells, result.comparisons):
            m = comparison.models[i]
            assert cell == f"{m.test_bpd_mean:.3f} ({m.parameters:,})"  # one seed: no spread
    saved = json.loads((out / "depths.json").read_text())
    assert saved["depths"] == [1, 2] and [c["steps"] for c in saved["comparisons"]] == [1, 2]
    assert saved["comparisons"][1]["settings"]["run"]["steps"] == 2
    assert (out / "bpd_vs_depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for k in (1, 2):
        assert (out / f"steps{k}" / "table.md").is_file()


def test_again_skips_finished_runs_and_a_new_depth_adds_its_comparison(done, tmp_path, monkeypatch):
    out, _ = done
    trained = []
    real_fit = compare_module.fit
    monkeypatch.setattr(compare_module, "fit",
                        lambda cfg, log=print: trained.append(cfg) or real_fit(cfg, log=log))
    again = compare_depths(sweep(out, depths=(1, 2, 3)), log=quiet)
    assert [(c.steps, c.model) for c in trained] == [(3, m) for m in CNN_MODELS]
    assert again.depths == (1, 2, 3)
    assert "| K = 3 |" in (out / "depth_table.md").read_text()


def test_a_depth_trained_with_other_settings_is_refused_before_any_training(done, monkeypatch):
    out, _ = done
    monkeypatch.setattr(compare_module, "fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(RunExistsError, match=r"steps2: holds a comparison trained with other "
                                             r"settings \(kernel_size 3 → 2\)"):
        compare_depths(sweep(out, depths=(2, 5), kernel_size=2), log=quiet)
    assert not os.path.exists(depth_directory(str(out), 5))


@pytest.mark.parametrize("depths, message", [((), "depths must name at least one"),
                                             ((1, 0), "depths must be an integer >= 1, got 0"),
                                             ((2, 2), "depths must not repeat a value")])
def test_bad_depths_are_refused(tmp_path, depths, message):
    with pytest.raises(ValueError, match=message):
        sweep(tmp_path / "o", depths=depths)


def test_the_comparison_is_a_template_whose_steps_each_depth_replaces(tmp_path):
    cfg = sweep(tmp_path / "o", depths=(4,), steps=9, width=5)
    at = cfg.at(4)
    assert at.run.steps == 4 and at.run.width == 5 and at.out == str(tmp_path / "o" / "steps4")
    assert dataclasses.replace(cfg.comparison.run, steps=4) == dataclasses.replace(at.run, out=cfg.comparison.out)


def test_command_runs_the_sweep_and_exits_0(tmp_path):
    from test_console_scripts import one_error_line, script

    out = tmp_path / "depth"
    args = [script("invconv-compare"), "--dataset", "digits", "--models", "cnn-inverse-flow",
            "cnn-glow", "--depths", "1", "2", "--seeds", "1", "--epochs", "1", "--max-train", "100",
            "--max-test", "50", "--batch-size", "50", "--samples", "4", "--timing-repeats", "1",
            "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    assert (out / "depth_table.md").read_text().strip() in proc.stdout
    assert "| cnn-inverse-flow |" in proc.stdout and "| cnn-glow |" in proc.stdout
    # models of two families: one line naming them, status 1, nothing trained
    bad = subprocess.run([*args[:4], "glow", *args[5:-1], str(tmp_path / "mixed")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert "models must be of one family" in one_error_line(bad, "invconv-compare")
    assert not (tmp_path / "mixed" / "steps1" / "runs").exists()
