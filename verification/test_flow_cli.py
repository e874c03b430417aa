"""The flow library's functions (fit, sample, load_flow, time_models, train_classifier):
checkpoints, metrics, exact resume, run-directory and input checks, divergence, atomic and
strict writes, checkpoint errors; and multi-process training with torchrun + gloo on CPU.
The console scripts themselves are tested as subprocesses in test_console_scripts.py."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from invconv_core.flows import (ClassifierConfig, CheckpointError, RunExistsError, TrainConfig,
                                TrainingDiverged, evaluate_bpd, fit, io, load_dataset, load_flow,
                                sample, time_models, train_classifier)
from invconv_core.flows.layers import ActNorm
from invconv_core.flows.models import FlowConfig

TINY = dict(dataset="digits", steps=2, width=16, max_train=200, max_test=100, batch_size=50, samples=16)
TINY_ARGS = ["--dataset", "digits", "--steps", "2", "--width", "16", "--max-train", "200",
             "--max-test", "100", "--batch-size", "50", "--no-progress", "--samples", "16"]


def tiny(out, **kw) -> TrainConfig:
    return TrainConfig(out=str(out), **{**TINY, **kw})


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_fit_writes_checkpoints_samples_and_metrics(tmp_path):
    out = str(tmp_path / "run")
    m = fit(tiny(out, epochs=2), log=lambda line: None)
    on_disk = json.load(open(os.path.join(out, "metrics.json")))
    assert on_disk == json.loads(json.dumps(m.to_dict()))
    assert on_disk["epochs"] == 2 and on_disk["test_bpd"] == m.test_bpd
    assert 0 < m.test_bpd < 10 and m.sample_seconds_per_100 > 0
    ck = torch.load(os.path.join(out, "last.pt"), weights_only=True)  # plain data: no pickled code
    assert {"model", "optimizer", "scheduler", "rng", "config", "epoch", "step", "best_test_bpd"} <= ck.keys()
    assert ck["epoch"] == 1 and ck["step"] == 8
    assert os.path.isfile(os.path.join(out, "best.pt"))
    w, h = _png_size(os.path.join(out, "samples.png"))
    assert w > 8 and h > 8
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_resume_continues_exactly(tmp_path):
    straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
    quiet = dict(log=lambda line: None)
    fit(tiny(straight, epochs=2), **quiet)
    fit(tiny(resumed, epochs=1), **quiet)
    fit(tiny(resumed, epochs=2, resume=True), **quiet)
    a = torch.load(os.path.join(straight, "last.pt"), weights_only=True)
    b = torch.load(os.path.join(resumed, "last.pt"), weights_only=True)
    assert a["step"] == b["step"] and a["scheduler"] == b["scheduler"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["test_bpd"] for h in a["history"]] == [h["test_bpd"] for h in b["history"]]
    # a finished run resumed to the same epochs trains nothing more and reports the same
    again = fit(tiny(resumed, epochs=2, resume=True), **quiet)
    assert again.optimizer_steps == b["step"] and again.test_bpd == b["history"][-1]["test_bpd"]
    with pytest.raises(ValueError, match="has trained 2 epochs, more than epochs=1"):
        fit(tiny(resumed, epochs=1, resume=True), **quiet)


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt: no checkpoint to resume from"):
        fit(tiny(tmp_path / "none", epochs=1, resume=True))
    out = str(tmp_path / "run")
    fit(tiny(out, epochs=1), log=lambda line: None)
    with pytest.raises(ValueError, match=r"last.pt: a resumed run cannot change width \(--width\) 16 → 8"):
        fit(tiny(out, epochs=2, width=8, resume=True))
    # a checkpoint of an older version has no train_config: its model config is still checked
    ck = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    del ck["train_config"]
    torch.save(ck, os.path.join(out, "last.pt"))
    with pytest.raises(ValueError, match="checkpoint config differs from this run's: width: saved 16, now 8"):
        fit(tiny(out, epochs=2, width=8, resume=True))


def test_saved_configs_follow_the_one_migration_rule(tmp_path):
    """Issue 29 item 4 (migration.py): a field added since a run was saved takes the default it
    had when it was added (TrainConfig.threads, 0.3.1: a 0.3.0 checkpoint lacks it and resumes);
    a field every version wrote (FlowConfig.logit_alpha) missing is damage, refused naming it;
    a saved value this run does not have is refused naming the field; a field this version does
    not know (a newer version's run) is refused, not ignored."""
    out = str(tmp_path / "run")
    fit(tiny(out, epochs=1), log=lambda line: None)
    path = os.path.join(out, "last.pt")
    ck = torch.load(path, weights_only=True)
    del ck["train_config"]["threads"], ck["threads"]  # as 0.3.0 wrote it
    torch.save(ck, path)
    again = fit(tiny(out, epochs=2, resume=True), log=lambda line: None)
    assert again.epochs == 2
    ck = torch.load(path, weights_only=True)
    del ck["config"]["logit_alpha"]
    torch.save(ck, path)
    with pytest.raises(ValueError, match=r"last.pt: checkpoint config differs .*lacks the setting 'logit_alpha'"):
        fit(tiny(out, epochs=3, resume=True), log=lambda line: None)
    ck["config"]["logit_alpha"] = 0.1
    torch.save(ck, path)
    with pytest.raises(ValueError, match=r"logit_alpha: saved 0.1, now 0.05"):
        fit(tiny(out, epochs=3, resume=True), log=lambda line: None)
    ck["config"]["logit_alpha"] = 0.05
    ck["config"]["activation"] = "spline"
    torch.save(ck, path)
    with pytest.raises(ValueError, match="unknown setting.s. activation"):
        fit(tiny(out, epochs=3, resume=True), log=lambda line: None)
    del ck["config"]["activation"]
    ck["train_config"]["label_smoothing"] = 0.1
    torch.save(ck, path)
    with pytest.raises(ValueError, match=r"last.pt: train_config: unknown setting.s. label_smoothing"):
        fit(tiny(out, epochs=3, resume=True), log=lambda line: None)


def test_metrics_of_an_earlier_version_are_read_with_their_steps_renamed(tmp_path):
    """metrics.json before 0.3.0 called the Adam step count ``steps`` (the flow's K is
    TrainConfig.steps): TrainResult.from_dict migrates it, so invconv-compare still finds
    finished runs of older versions."""
    from invconv_core.flows import TrainResult
    r = fit(tiny(tmp_path / "run", epochs=1), log=lambda line: None)
    d = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert d["optimizer_steps"] == r.optimizer_steps == 4 and "steps" not in d  # 200 images / 50
    old = dict(d)
    old["steps"] = old.pop("optimizer_steps")
    assert TrainResult.from_dict(old) == TrainResult.from_dict(d) == r


def test_a_loader_disagreeing_with_dataset_info_is_refused_before_training(tmp_path, monkeypatch):
    """The model is built from DATASET_INFO (FlowConfig.for_dataset): a loader that returns other
    levels or another shape stops the run with one line naming both, not a bare AssertionError
    after training (or bits/dim on the wrong levels)."""
    from invconv_core.flows import data as data_module
    monkeypatch.setitem(data_module.DATASET_INFO, "digits",
                        data_module.DatasetInfo((1, 8, 8), 16, 2, 50, False))
    with pytest.raises(ValueError, match=r"dataset digits: the loader gives 1×8×8 images with 17 "
                                         r"levels, DATASET_INFO says 1×8×8 with 16"):
        fit(tiny(tmp_path / "run", epochs=1), log=lambda line: None)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_existing_run_is_refused_unless_resume_or_overwrite(tmp_path):
    out = str(tmp_path / "run")
    fit(tiny(out, epochs=1), log=lambda line: None)
    before = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)}
    with pytest.raises(RunExistsError, match=r"already holds a run \(last.pt, best.pt, metrics.json, samples.png\)"):
        fit(tiny(out, epochs=1, width=8))
    assert {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)} == before
    m = fit(tiny(out, epochs=1, width=8, overwrite=True), log=lambda line: None)
    assert m.config["width"] == 8
    assert torch.load(os.path.join(out, "best.pt"), weights_only=True)["config"]["width"] == 8
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        tiny(out, resume=True, overwrite=True)


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    fit(tiny(out, epochs=1), log=lambda line: None)
    good = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    from invconv_core.flows import training
    real = training.bits_per_dim
    calls = {"n": 0}

    def poisoned(*args):  # the 3rd training batch of epoch 2 gives a NaN loss
        calls["n"] += 1
        v = real(*args)
        return v * float("nan") if calls["n"] == 3 else v
    monkeypatch.setattr(training, "bits_per_dim", poisoned)
    with pytest.raises(TrainingDiverged, match=r"training loss became nan at epoch 2, step 7; last.pt and best.pt "
                                               r"of the last good epoch are kept"):
        fit(tiny(out, epochs=2, resume=True), log=lambda line: None)
    kept = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    assert kept["epoch"] == good["epoch"] and kept["step"] == good["step"]
    json.load(open(os.path.join(out, "metrics.json")))  # still the strict JSON of epoch 1


def test_real_divergence_from_a_huge_learning_rate(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"at epoch \d+, step \d+"):
        fit(tiny(tmp_path / "run", epochs=3, lr=50.0, grad_clip=0.0), log=lambda line: None)
    assert not os.path.exists(tmp_path / "run" / "metrics.json")


def test_json_is_strict(tmp_path):
    with pytest.raises(ValueError, match="m.json: refusing to write a non-finite number"):
        io.atomic_write_json({"a": float("nan")}, str(tmp_path / "m.json"))
    assert not os.listdir(tmp_path)


def test_stale_temp_files_of_an_interrupted_write_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".tmp-last.ptk3j2x9q1").write_bytes(b"half a checkpoint")
    (out / ".tmp-metrics.jsonabc").write_bytes(b"{")
    (out / "notes.txt").write_text("mine")
    lines = []
    fit(tiny(out, epochs=1), log=lines.append)
    # and the lock file of the run directory (issue 22: one writer per run)
    assert sorted(os.listdir(out)) == [".invconv-lock", "best.pt", "last.pt", "metrics.json", "notes.txt",
                                       "samples.png"]
    assert sum("left by an interrupted write" in line for line in lines) == 2


def test_output_dir_is_checked_before_any_work(tmp_path, monkeypatch):
    from invconv_core.flows import training
    monkeypatch.setattr(training, "load_dataset", lambda *a: pytest.fail("loaded data first"))
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match="file: the run directory .* is not a directory"):
        fit(tiny(afile))
    with pytest.raises(PermissionError, match="file/run: the run directory .* cannot be created or written"):
        fit(tiny(afile / "run"))  # its parent is a file: it cannot be created


def test_unwritable_output_dir_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): no unwritable directory")
        with pytest.raises(PermissionError, match="cannot be created or written"):
            fit(tiny(ro / "run"))
    finally:
        ro.chmod(0o700)


def test_config_values_are_checked():
    for kw, msg in ((dict(epochs=0), "epochs must be an integer >= 1, got 0"),
                    (dict(levels=0), "levels must be an integer >= 1, got 0"),
                    (dict(max_train=0), "max_train must be an integer >= 1, got 0"),
                    (dict(kernel_size=0), "kernel_size must be an integer >= 1"),
                    (dict(lr=0.0), "lr must be a finite number > 0"),
                    (dict(grad_clip=float("nan")), "grad_clip must be a finite number"),
                    (dict(dataset="svhn"), "dataset must be one of")):
        with pytest.raises(ValueError, match=msg):
            TrainConfig(out="x", **kw)
    with pytest.raises(ValueError, match="levels must be an integer >= 1"):
        FlowConfig(levels=0)


def test_flow_config_is_a_value():
    base = FlowConfig(steps=2, width=8)
    from invconv_core.flows import build_flow
    m = build_flow(base, width=4)
    assert base.width == 8 and m.config.width == 4
    with pytest.raises(Exception):
        base.width = 3
    assert FlowConfig().n_bins == 17 and FlowConfig().image_shape == (1, 8, 8)  # the digits, consistent


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    io.atomic_save({"v": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        io.atomic_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["v"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_sample_and_load_flow(tmp_path):
    out = str(tmp_path / "run")
    fit(tiny(out, epochs=1), log=lambda line: None)
    model = load_flow(os.path.join(out, "best.pt"))
    a, b = sample(model, 8, seed=3), sample(model, 8, seed=3)
    assert a.shape == (8, 1, 8, 8) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        sample(model, 0)
    with pytest.raises(FileNotFoundError, match="nope.pt: checkpoint not found"):
        load_flow(str(tmp_path / "nope.pt"))
    test = load_dataset("digits", "test")
    assert abs(evaluate_bpd(model, test) - evaluate_bpd(model, test)) == 0


@pytest.mark.parametrize("content", [b"", b"hello, I am text\n", bytes(range(256)) * 8, "truncated"])
def test_unreadable_checkpoints_name_the_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        out = str(tmp_path / "run")
        fit(tiny(out, epochs=1), log=lambda line: None)
        content = open(os.path.join(out, "last.pt"), "rb").read()[:5000]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"bad.pt: not a readable invconv-train checkpoint"):
        load_flow(str(path))


def test_checkpoint_with_weights_not_matching_its_config(tmp_path):
    out = str(tmp_path / "run")
    fit(tiny(out, epochs=1), log=lambda line: None)
    ck = torch.load(os.path.join(out, "best.pt"), weights_only=True)
    ck["config"]["width"] = 8
    torch.save(ck, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match=r"mixed.pt: the saved weights do not match the saved config"):
        load_flow(str(tmp_path / "mixed.pt"))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: not an invconv-train checkpoint \(expected a dict"):
        load_flow(str(tmp_path / "other.pt"))


def test_checkpoint_of_a_kxk_model_before_the_published_steps_says_so(tmp_path):
    """0.1.x built the k×k models' steps with a channel reversal where the 1×1 conv is now: the
    state dict of such a run lacks the 1×1 weights and has its layers at other indices."""
    out = str(tmp_path / "run")
    fit(tiny(out, epochs=1, model="finc"), log=lambda line: None)
    ck = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    model = load_flow(os.path.join(out, "last.pt"))
    conv1x1 = {name for name, mod in model.named_modules() if type(mod).__name__ == "Conv1x1"}
    ck["model"] = {k: v for k, v in ck["model"].items() if k.rsplit(".", 1)[0] not in conv1x1}
    torch.save(ck, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"old.pt: the saved weights do not match .* "
                                              r"invconv_core < 0.2.0 .* retrain it"):
        load_flow(str(tmp_path / "old.pt"))


def test_time_models_compares_equal_sizes():
    base = FlowConfig(image_shape=(1, 8, 8), steps=1, width=16, n_bins=17)
    rows = time_models(base, "cpu", batch=10, repeats=1)
    assert [r["model"] for r in rows] == ["inverse-flow", "glow", "emerging", "finc"]
    ref = rows[0]["parameters"]
    for r in rows:
        assert abs(r["parameters"] - ref) <= 0.05 * ref, r
        assert r["forward_seconds"] > 0 and r["sample_seconds"] > 0 and r["train_step_seconds"] > 0
    with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
        time_models(base, "cpu", repeats=0)


def test_train_classifier(tmp_path):
    m = train_classifier(ClassifierConfig(out=str(tmp_path), dataset="digits", epochs=3))
    assert m.invconv_parameters == 16
    assert json.load(open(tmp_path / "metrics.json"))["test_accuracy"] == m.test_accuracy
    assert m.test_accuracy > 0.5  # 3 epochs on 10 balanced classes: far above chance (0.1)
    with pytest.raises(RunExistsError, match="already holds a classifier"):
        train_classifier(ClassifierConfig(out=str(tmp_path), epochs=1))


def test_classifier_output_is_checked_before_training(tmp_path, monkeypatch):
    from invconv_core.flows import classify
    monkeypatch.setattr(classify, "load_dataset", lambda *a: pytest.fail("loaded data first"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        train_classifier(ClassifierConfig(out=str(tmp_path / "f")))


def _actnorm_rank(rank, world, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(6, 2, 3, 3, generator=g) * (rank + 1) + rank
        a = ActNorm(2)
        a(x)
        results[rank] = (a.bias.detach().clone(), a.logs.detach().clone(), x)
    finally:
        dist.destroy_process_group()


def test_actnorm_init_is_synchronised_across_ranks():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_actnorm_rank, args=(2, port, results), nprocs=2, join=True)
    everything = torch.cat([results[0][2], results[1][2]])
    single = ActNorm(2)
    single(everything)
    for r in (0, 1):
        torch.testing.assert_close(results[r][0], single.bias.detach())
        torch.testing.assert_close(results[r][1], single.logs.detach())


def test_torchrun_two_gloo_processes(tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "invconv_core.flows.train", *TINY_ARGS, "--epochs", "1", "--out", out, "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["world_size"] == 2 and m["epochs"] == 1
    assert proc.stdout.count("test bpd") == 2  # one epoch line and one summary, from rank 0 only
    ck = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    assert len(ck["rng"]) == 2


def test_checkpoint_of_the_earlier_format_still_resumes(tmp_path):
    """Runs saved before the library tools stored the numpy RNG state as an ndarray and the
    python one as a tuple; they load (without allowing arbitrary code) and resume."""
    import numpy as np
    out = str(tmp_path / "run")
    fit(tiny(out, epochs=1), log=lambda line: None)
    ck = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    for state in ck["rng"]:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        state["numpy"] = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
        state["python"] = tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:])
    torch.save(ck, os.path.join(out, "last.pt"))
    m = fit(tiny(out, epochs=2, resume=True), log=lambda line: None)
    assert m.epochs == 2
