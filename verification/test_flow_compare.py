"""invconv-compare as a library function (:func:`invconv_core.flows.compare`) on a tiny
configuration: its outputs, its resumption, its refusals; the installed command's exit statuses
are in the last tests."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from invconv_core.flows import CompareConfig, RunExistsError, compare
from invconv_core.flows import comparison as compare_module
from invconv_core.flows.comparison import run_directory

pytest.importorskip("matplotlib", reason="invconv-compare plots with the optional matplotlib")

TINY = dict(dataset="digits", models=("inverse-flow", "glow"), seeds=2, epochs=2, steps=1,
            width=8, max_train=200, max_test=100, batch_size=50, samples=4, timing_repeats=1)


def tiny(out, **kw) -> CompareConfig:
    return CompareConfig.from_options(str(out), **{**TINY, **kw})


def quiet(line):
    pass


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    lines = []
    return out, compare(tiny(out), log=lines.append), lines


def test_outputs(done):
    out, result, lines = done
    assert [m.model for m in result.models] == ["inverse-flow", "glow"]
    assert len(result.runs) == 4 and {(r.model, r.config["width"]) for r in result.runs} == \
        {(m.model, m.width) for m in result.models}
    for m in result.models:
        mine = [r for r in result.runs if r.model == m.model]
        assert [r.out for r in mine] == [run_directory(str(out), m.model, s) for s in (0, 1)]
        assert m.test_bpd_per_seed == tuple(r.test_bpd for r in mine)
        assert m.test_bpd_mean == pytest.approx(sum(m.test_bpd_per_seed) / 2)
        assert m.test_bpd_std == pytest.approx(abs(mine[0].test_bpd - mine[1].test_bpd) / 2 ** 0.5)
        assert all(r.epochs == 2 and len(r.history) == 2 for r in mine)
        assert m.forward_seconds > 0 and m.sample_seconds > 0 and m.train_step_seconds > 0
        assert os.path.isfile(os.path.join(mine[0].out, "last.pt"))
    # equal parameter count: Glow's width is matched to Inverse-Flow's size
    ref, glow = result.models
    assert ref.width == 8 and abs(glow.parameters - ref.parameters) <= 0.05 * ref.parameters
    # different seeds are different runs
    assert ref.test_bpd_per_seed[0] != ref.test_bpd_per_seed[1]

    table = (out / "table.md").read_text()
    assert table == result.markdown
    for m in result.models:
        row = next(line for line in table.splitlines() if line.startswith(f"| {m.model} |"))
        assert f"{m.parameters:,}" in row and f"{m.test_bpd_mean:.4f} ± {m.test_bpd_std:.4f}" in row
    assert "digits 1×8×8, 17 levels" in table and "2 epochs" in table and "seeds 0–1" in table

    saved = json.loads((out / "results.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))
    assert saved == json.loads(json.dumps(result.to_dict()))
    assert saved["settings"]["models"] == ["inverse-flow", "glow"] and len(saved["runs"]) == 4

    for png in ["bpd_vs_epoch.png", "samples/inverse-flow.png", "samples/glow.png"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert any(line.startswith("[glow seed 1] epoch 2/2") for line in lines)


def test_finished_runs_are_skipped(done, monkeypatch):
    out, first, _ = done
    monkeypatch.setattr(compare_module, "fit", lambda *a, **k: pytest.fail("a finished run was retrained"))
    lines = []
    again = compare(tiny(out), log=lines.append)
    assert sum("finished earlier" in line and line.endswith("skipped") for line in lines) == 4
    assert [r.test_bpd for r in again.runs] == [r.test_bpd for r in first.runs]


def test_interrupted_comparison_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    """Ctrl-C during the third run; the next call skips the two finished runs, continues the
    interrupted one from its last.pt and trains the last: the numbers equal an uninterrupted
    comparison's (CPU training is bit-reproducible)."""
    reference = compare(tiny(tmp_path / "ref"), log=quiet)

    real_fit = compare_module.fit
    calls = []

    def interrupted_fit(cfg, log=print):
        calls.append(cfg.out)
        if len(calls) == 3:  # Ctrl-C in the third run, after its first epoch was saved
            real_fit(dataclasses.replace(cfg, epochs=1), log=log)
            os.unlink(os.path.join(cfg.out, "metrics.json"))  # written only when a run ends
            raise KeyboardInterrupt
        return real_fit(cfg, log=log)

    out = tmp_path / "cmp"
    monkeypatch.setattr(compare_module, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        compare(tiny(out), log=quiet)
    third = run_directory(str(out), "glow", 0)
    assert torch.load(os.path.join(third, "last.pt"), weights_only=True)["epoch"] == 0
    assert not os.path.exists(os.path.join(third, "metrics.json"))

    resumed_cfgs = []
    monkeypatch.setattr(compare_module, "fit",
                        lambda cfg, log=print: resumed_cfgs.append(cfg) or real_fit(cfg, log=log))
    lines = []
    result = compare(tiny(out), log=lines.append)
    assert [(c.out, c.resume) for c in resumed_cfgs] == [(third, True), (run_directory(str(out), "glow", 1), False)]
    assert sum(line.endswith("skipped") for line in lines) == 2
    assert [r.test_bpd for r in result.runs] == [r.test_bpd for r in reference.runs]
    assert [r.history for r in result.runs] == [r.history for r in reference.runs]


def test_more_epochs_seeds_and_models_extend_the_comparison(done, tmp_path):
    out = tmp_path / "grow"
    compare(tiny(out, models=("glow",), seeds=1, epochs=1), log=quiet)
    lines = []
    result = compare(tiny(out, epochs=2), log=lines.append)
    assert any(line == f"[glow seed 0] continuing in {run_directory(str(out), 'glow', 0)}" for line in lines)
    _, full, _ = done  # the same runs trained in one go
    assert [r.test_bpd for r in result.runs] == [r.test_bpd for r in full.runs]


def test_other_settings_are_refused_unless_overwrite(done, tmp_path):
    out = tmp_path / "cmp"
    compare(tiny(out, models=("glow",), seeds=1, epochs=1), log=quiet)
    with pytest.raises(RunExistsError, match=r"cmp: holds a comparison trained with other settings "
                                              r"\(width 8 → 16, lr 0.001 → 0.002\)"):
        compare(tiny(out, models=("glow",), seeds=1, epochs=1, width=16, lr=2e-3), log=quiet)
    stale = run_directory(str(out), "glow", 0)
    result = compare(tiny(out, models=("inverse-flow",), seeds=1, epochs=1, width=16, overwrite=True), log=quiet)
    assert not os.path.exists(stale) and result.models[0].width == 16
    # the new settings are the ones remembered now
    compare(tiny(out, models=("inverse-flow",), seeds=1, epochs=1, width=16), log=quiet)


def test_compare_json_follows_the_one_migration_rule(done, tmp_path):
    """compare.json is read by migration.py's rule (issue 29 item 4): a setting every version
    wrote that is missing means a damaged file, refused naming it (before, it silently took
    today's default); a changed setting is named. (A setting added since the file was written
    takes the default recorded with it: test_reliability_round3.py adds one in a subprocess and
    continues a comparison under it.)"""
    import shutil
    out = tmp_path / "cmp"
    shutil.copytree(done[0], out)
    saved = json.loads((out / "compare.json").read_text())
    again = compare(tiny(out), log=quiet)
    assert [m.test_bpd_mean for m in again.models] == [m.test_bpd_mean for m in done[1].models]
    with pytest.raises(RunExistsError, match=r"lr 0.001 → 0.01"):
        compare(tiny(out, lr=1e-2), log=quiet)
    del saved["defining"]["grad_clip"]
    (out / "compare.json").write_text(json.dumps(saved))
    with pytest.raises(RunExistsError, match=r"compare.json: not a readable .*lacks the setting 'grad_clip'"):
        compare(tiny(out), log=quiet)


def test_defining_settings_are_the_run_settings_a_resume_may_not_change():
    """One list: what a comparison refuses to continue with other values of is what a run
    refuses to resume with (RESUME_MAY_CHANGE), but each run's own directory, model and seed."""
    from invconv_core.flows.training import RESUME_MAY_CHANGE
    cfg = tiny("o")
    assert set(cfg.defining()) == {f.name for f in dataclasses.fields(cfg.run)} - set(
        RESUME_MAY_CHANGE) - {"model", "seed"}
    assert {"dataset", "steps", "width", "kernel_size", "lr", "max_train"} <= set(cfg.defining())


@pytest.mark.parametrize("kw,message", [
    (dict(models=()), "models must be a non-empty list of"),
    (dict(models=("glow", "realnvp")), "models must be a non-empty list of"),
    (dict(models=("glow", "cnn-glow")), r"models must be of one family \(glow-like: .*cnn-only: "),
    (dict(models=("glow", "glow")), "models must not repeat a model"),
    (dict(seeds=0), "seeds must be an integer >= 1, got 0"),
    (dict(epochs=0), "epochs must be an integer >= 1, got 0"),
    (dict(dataset="svhn"), "dataset must be one of"),
    (dict(timing_repeats=0), "timing_repeats must be an integer >= 1, got 0"),
    (dict(lr=0.0), "lr must be a finite number > 0.0"),
])
def test_config_values_are_checked(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(tmp_path / "o", **kw)


def test_missing_matplotlib_fails_before_any_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(compare_module, "fit", lambda *a, **k: pytest.fail("trained without matplotlib"))
    with pytest.raises(ImportError, match=r"matplotlib, an optional extra: pip install 'invconv-core\[plots\]'"):
        compare(tiny(tmp_path / "o"), log=quiet)
    assert not os.path.exists(tmp_path / "o" / "runs")


# ------------------------------------------------------------------ the installed command

CLI_TINY = ["--dataset", "digits", "--models", "inverse-flow", "glow", "--seeds", "1", "--epochs",
            "1", "--steps", "1", "--width", "8", "--max-train", "200", "--max-test", "100",
            "--batch-size", "50", "--samples", "4", "--timing-repeats", "1"]


def _run(*args, env=None):
    from test_console_scripts import script
    return subprocess.run([script("invconv-compare"), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def _one_error_line(proc):
    from test_console_scripts import one_error_line
    return one_error_line(proc, "invconv-compare")


def test_command_writes_the_table_and_exits_0(tmp_path):
    out = tmp_path / "cmp"
    proc = _run(*CLI_TINY, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    assert "| inverse-flow | 8 |" in proc.stdout and "| glow |" in proc.stdout
    assert (out / "table.md").read_text().strip() in proc.stdout
    # again: nothing to train, status 0
    proc = _run(*CLI_TINY, "--out", out)
    assert proc.returncode == 0 and proc.stdout.count("skipped") == 2, proc.stderr
    # other settings: one line naming the directory and the change, status 1
    proc = _run(*CLI_TINY, "--kernel-size", "2", "--out", out)
    assert proc.returncode == 1
    assert f"{out}: holds a comparison trained with other settings (kernel_size 3 → 2)" in _one_error_line(proc)


@pytest.mark.parametrize("args,message", [
    (["--seeds", "0"], "argument --seeds: expected an integer >= 1, got 0"),
    (["--epochs", "x"], "argument --epochs: expected an integer >= 1, got 'x'"),
    (["--models", "realnvp"], "argument --models: invalid choice: 'realnvp'"),
    (["--dataset", "svhn"], "argument --dataset: invalid choice: 'svhn'"),
    (["--timing-repeats", "0"], "argument --timing-repeats: expected an integer >= 1, got 0"),
])
def test_bad_command_line_exits_2(tmp_path, args, message):
    proc = _run("--out", tmp_path / "o", *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"invconv-compare: error: {message}")
    assert not os.path.exists(tmp_path / "o")


def test_unusable_out_and_missing_scikit_image_exit_1_before_training(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = _run(*CLI_TINY, "--out", afile)
    assert proc.returncode == 1 and "not a directory" in _one_error_line(proc)
    # an installation without scikit-image: a package of that name that cannot be imported
    blocker = tmp_path / "blocked" / "skimage"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('scikit-image is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "blocked")}
    proc = _run("--dataset", "photos", "--epochs", "100", "--out", tmp_path / "p", env=env)
    assert proc.returncode == 1
    assert "the 'photos' dataset needs scikit-image" in _one_error_line(proc)
    assert not os.path.exists(tmp_path / "p" / "runs")


def test_ctrl_c_exits_130_and_the_next_call_continues(tmp_path):
    from test_console_scripts import script
    out = tmp_path / "cmp"
    args = list(CLI_TINY)
    args[args.index("--epochs") + 1] = "200"
    proc = subprocess.Popen([script("invconv-compare"), *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until the first run has saved an epoch
            if line.startswith("[inverse-flow seed 0] epoch 1/200"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip().endswith("invconv-compare: interrupted"), err
    first = run_directory(str(out), "inverse-flow", 0)
    saved = torch.load(os.path.join(first, "last.pt"), weights_only=True)["epoch"] + 1
    args[args.index("--epochs") + 1] = str(saved + 1)
    done = _run(*args, "--out", out)
    assert done.returncode == 0, done.stderr
    assert f"[inverse-flow seed 0] continuing in {first}" in done.stdout
    assert json.loads((out / "results.json").read_text())["epochs"] == saved + 1
