"""Entry points: training (checkpoints, metrics, exact resume, atomic writes), sampling, the
timing table, the classifier, and multi-process training with torchrun + gloo on CPU."""

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

from invconv_core.flows import classify, io, sample, timing, train
from invconv_core.flows.layers import ActNorm

TINY = ["--dataset", "digits", "--steps", "2", "--width", "16", "--max-train", "200",
        "--max-test", "100", "--batch-size", "50", "--no-progress", "--samples", "16"]


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_train_writes_checkpoints_samples_and_metrics(tmp_path):
    out = str(tmp_path / "run")
    m = train.main(TINY + ["--epochs", "2", "--out", out])
    on_disk = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("test_bpd", "epochs", "train_seconds", "sample_seconds_per_100", "forward_seconds_per_100"):
        assert key in on_disk
    assert on_disk["epochs"] == 2 and on_disk["test_bpd"] == m["test_bpd"]
    assert 0 < m["test_bpd"] < 10 and m["sample_seconds_per_100"] > 0
    ck = torch.load(os.path.join(out, "last.pt"), weights_only=False)
    assert {"model", "optimizer", "scheduler", "rng", "config", "epoch", "step", "best_test_bpd"} <= ck.keys()
    assert ck["epoch"] == 1 and ck["step"] == 8
    assert os.path.isfile(os.path.join(out, "best.pt"))
    w, h = _png_size(os.path.join(out, "samples.png"))
    assert w > 8 and h > 8
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_resume_continues_exactly(tmp_path):
    straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
    train.main(TINY + ["--epochs", "2", "--out", straight])
    train.main(TINY + ["--epochs", "1", "--out", resumed])
    train.main(TINY + ["--epochs", "2", "--out", resumed, "--resume"])
    a = torch.load(os.path.join(straight, "last.pt"), weights_only=False)
    b = torch.load(os.path.join(resumed, "last.pt"), weights_only=False)
    assert a["step"] == b["step"] and a["scheduler"] == b["scheduler"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["test_bpd"] for h in a["history"]] == [h["test_bpd"] for h in b["history"]]


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt: no checkpoint to resume from"):
        train.main(TINY + ["--epochs", "1", "--out", str(tmp_path / "none"), "--resume"])
    out = str(tmp_path / "run")
    train.main(TINY + ["--epochs", "1", "--out", out])
    with pytest.raises(ValueError, match="checkpoint config .* differs"):
        train.main(TINY[:4] + ["--width", "8"] + TINY[6:] + ["--epochs", "2", "--out", out, "--resume"])


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


def test_sample_cli(tmp_path):
    out = str(tmp_path / "run")
    train.main(TINY + ["--epochs", "1", "--out", out])
    png = str(tmp_path / "grid.png")
    res = sample.main(["--checkpoint", os.path.join(out, "best.pt"), "--out", png, "--n", "8", "--device", "cpu"])
    assert res["sample_seconds_per_100"] > 0 and _png_size(png)[0] > 8
    with pytest.raises(FileNotFoundError, match="nope.pt: checkpoint not found"):
        sample.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", png])


def test_time_cli_compares_equal_sizes(capsys):
    rows = timing.main(["--shape", "digits", "--steps", "1", "--width", "16", "--repeats", "1",
                        "--batch", "10", "--device", "cpu"])
    assert [r["model"] for r in rows] == ["inverse-flow", "glow", "emerging", "finc"]
    ref = rows[0]["parameters"]
    for r in rows:
        assert abs(r["parameters"] - ref) <= 0.05 * ref, r
        assert r["forward_seconds"] > 0 and r["sample_seconds"] > 0 and r["train_step_seconds"] > 0
    assert "| inverse-flow |" in capsys.readouterr().out


def test_classify_cli(tmp_path):
    m = classify.main(["--dataset", "digits", "--epochs", "3", "--out", str(tmp_path), "--device", "cpu"])
    assert m["invconv_parameters"] == 16
    assert json.load(open(tmp_path / "metrics.json"))["test_accuracy"] == m["test_accuracy"]
    assert m["test_accuracy"] > 0.5  # 3 epochs on 10 balanced classes: far above chance (0.1)


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
           "-m", "invconv_core.flows.train", *TINY, "--epochs", "1", "--out", out, "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["world_size"] == 2 and m["epochs"] == 1
    assert proc.stdout.count("test bpd") == 2  # one epoch line and one summary, from rank 0 only
    ck = torch.load(os.path.join(out, "last.pt"), weights_only=False)
    assert len(ck["rng"]) == 2
