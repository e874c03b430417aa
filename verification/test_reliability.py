"""What an adversarial user can do to the installed tools (issue 22): crafted dataset files,
special files and symlinks as outputs, two writers on one run directory, a partial distributed
environment, resumes that change settings. Console scripts run as installed subprocesses; the
lock is tested with two real processes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from test_console_scripts import TINY, one_error_line, run, script


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_train_on_a_crafted_cifar_batch_runs_no_code(tmp_path):
    """A data_batch_1 whose pickle calls os.system: before the restricted unpickler the command
    ran and training went on (rc 0)."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    marker = tmp_path / "owned"
    for i in range(1, 6):
        batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
        if i == 1:
            batch[b"labels"] = [0, _System(f"touch {marker}")]
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    (root / "test_batch").write_bytes((root / "data_batch_2").read_bytes())
    proc = run("invconv-train", "--dataset", "cifar10", "--data-dir", tmp_path, "--steps", "1",
               "--width", "4", "--epochs", "1", "--no-progress", "--out", tmp_path / "run")
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc, "invconv-train")
    assert "data_batch_1: not a CIFAR-10 python batch" in line and "refused to load global" in line
    assert not marker.exists()


# ------------------------------------------------------------------ item 2: special files, links

def _is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _char_device_copy(tmp_path):
    """A copy of /dev/null made with mknod inside tmp_path (root only): the system's /dev
    entries are never a test's target."""
    import stat
    if not _is_root():
        pytest.skip("mknod needs root")
    path = tmp_path / "null"
    rdev = os.stat("/dev/null").st_rdev
    os.mknod(path, 0o666 | stat.S_IFCHR, rdev)
    return path


def test_atomic_writes_follow_a_symlink_and_keep_it(tmp_path):
    """Before: os.replace put a regular file where the link was (the target kept old data)."""
    from invconv_core.flows.io import atomic_write_bytes, atomic_write_json

    target = tmp_path / "real" / "metrics.json"
    target.parent.mkdir()
    target.write_text("old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_json({"a": 1}, str(link))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"a":1}'
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o640)  # a replaced file keeps its mode
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "real" / "new.png")
    atomic_write_bytes(b"png", str(dangling))
    assert dangling.is_symlink() and (tmp_path / "real" / "new.png").read_bytes() == b"png"
    assert sorted(os.listdir(tmp_path / "real")) == ["metrics.json", "new.png"]  # no temp file left


def test_atomic_writes_go_through_a_fifo_and_a_device(tmp_path):
    import stat
    import threading

    from invconv_core.flows.io import atomic_write_bytes

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    # a daemon: when a write replaces the FIFO instead (the old behaviour) the reader waits forever
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    atomic_write_bytes(b"through the pipe", str(fifo))
    reader.join(10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    device = _char_device_copy(tmp_path)
    atomic_write_bytes(b"x" * 1000, str(device))
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        atomic_write_bytes(b"", str(tmp_path))


def test_installed_tools_write_through_devices_and_symlinks(tmp_path):
    """invconv-verify --json at a mknod copy of /dev/null and at a symlink; invconv-sample --out
    at a FIFO read by another process. Before: the device node and the link were replaced by
    regular files."""
    import stat

    target = tmp_path / "reports" / "v.json"
    target.parent.mkdir()
    link = tmp_path / "v.json"
    link.symlink_to(target)
    proc = run("invconv-verify", "--seed", "3", "--cases", "2", "--json", link)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert link.is_symlink() and target.is_file() and '"seed": 3' in target.read_text()
    if _is_root():
        device = _char_device_copy(tmp_path)
        proc = run("invconv-verify", "--seed", "3", "--cases", "2", "--json", device)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert stat.S_ISCHR(os.lstat(device).st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen([sys.executable, "-c", f"import sys; print(len(open({str(fifo)!r}, 'rb').read()))"],
                              stdout=subprocess.PIPE, text=True)
    try:
        proc = run("invconv-verify", "--seed", "3", "--cases", "2", "--json", fifo)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert int(reader.communicate(timeout=60)[0]) > 100 and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    finally:
        reader.kill()


# ------------------------------------------------------------------ item 3: one writer per directory

def _wait_for(predicate, seconds=120, proc=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _holds_lock(directory, pid):
    from invconv_core.flows.runlock import LOCK_NAME
    try:
        return (directory / LOCK_NAME).read_text().strip() == str(pid)
    except OSError:
        return False


def _hold_lock(directory):
    """A process holding the lock of ``directory`` until killed."""
    return subprocess.Popen([sys.executable, "-c",
                             "import sys, time; from invconv_core.flows.runlock import run_lock\n"
                             "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)",
                             str(directory)], stdout=subprocess.PIPE, text=True)


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    """The lock is the OS's: a holder killed with SIGKILL leaves no stale lock."""
    import signal

    from invconv_core.flows import RunLockedError
    from invconv_core.flows.runlock import run_lock

    holder = _hold_lock(tmp_path)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"{tmp_path}: another process \(PID {holder.pid}\) is writing"):
            with run_lock(str(tmp_path)):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(str(tmp_path)):  # released by the OS
        pass


def test_a_second_train_on_a_busy_run_directory_is_refused(tmp_path):
    """Before: the second run (plain, --overwrite or --resume) trained into the same directory,
    last.pt alternated between the two runs and both exited 0."""
    import signal

    out = tmp_path / "run"
    first = subprocess.Popen([script("invconv-train"), *TINY, "--epochs", "400", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (out / "last.pt").exists() and _holds_lock(out, first.pid), proc=first), \
            first.communicate()[1] if first.poll() is not None else "first run wrote no checkpoint"
        before = (out / "last.pt").stat().st_mtime_ns
        for extra in ([], ["--overwrite"], ["--resume"]):
            proc = run("invconv-train", *TINY, "--epochs", "400", "--model", "glow", "--out", out, *extra)
            assert proc.returncode == 1, (extra, proc.stdout, proc.stderr)
            line = one_error_line(proc, "invconv-train")
            assert f"{out}: another process (PID {first.pid}) is writing" in line, line
        assert first.poll() is None  # nothing of the first run was taken away
        assert _wait_for(lambda: (out / "last.pt").stat().st_mtime_ns != before, proc=first)
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    import torch
    assert torch.load(out / "last.pt", weights_only=True)["config"]["model"] == "inverse-flow"


def test_a_second_compare_and_classify_on_a_busy_directory_are_refused(tmp_path):
    import signal

    for tool, args in (("invconv-compare", ["--dataset", "digits", "--models", "glow", "--seeds", "1",
                                            "--epochs", "400", "--steps", "1", "--width", "4",
                                            "--max-train", "100", "--max-test", "50",
                                            "--timing-repeats", "1"]),
                       ("invconv-classify", ["--epochs", "100000", "--device", "cpu"])):
        out = tmp_path / tool
        first = subprocess.Popen([script(tool), *args, "--out", str(out)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert _wait_for(lambda: _holds_lock(out, first.pid), proc=first), first.communicate()
            proc = run(tool, *args, "--out", out)
            assert proc.returncode == 1, (proc.stdout, proc.stderr)
            assert f"another process (PID {first.pid}) is writing" in one_error_line(proc, tool)
            proc = run(tool, *args, "--out", out, "--overwrite")
            assert proc.returncode == 1 and f"(PID {first.pid})" in proc.stderr, proc.stderr
            assert first.poll() is None
        finally:
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=120)


def test_stale_temp_files_are_removed_only_under_the_lock(tmp_path):
    """A refused second writer must not delete the running writer's temporary files."""
    import signal

    from invconv_core.flows.runlock import run_lock
    out = tmp_path / "run"
    out.mkdir()
    temp = out / ".tmp-last.ptabc123"
    temp.write_bytes(b"a writer's checkpoint, half written")
    holder = _hold_lock(out)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run("invconv-train", *TINY, "--epochs", "1", "--out", out, "--overwrite")
        assert proc.returncode == 1 and "is writing" in proc.stderr, proc.stderr
        assert temp.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    proc = run("invconv-train", *TINY, "--epochs", "1", "--out", out)
    assert proc.returncode == 0 and f"removed {temp}" in proc.stdout, proc.stderr
    assert not temp.exists()


# ------------------------------------------------------------------ item 4: distributed environment

@pytest.mark.parametrize("env, names", [({"RANK": "1"}, ["RANK=1", "WORLD_SIZE"]),
                                        ({"LOCAL_RANK": "0", "WORLD_SIZE": "2"}, ["RANK"]),
                                        ({"RANK": "2", "WORLD_SIZE": "2"}, ["RANK=2", "WORLD_SIZE=2"]),
                                        ({"RANK": "x", "WORLD_SIZE": "1"}, ["RANK='x'"]),
                                        ({"RANK": "0", "WORLD_SIZE": "2"}, ["MASTER_ADDR", "MASTER_PORT"])])
def test_a_partial_distributed_environment_is_an_error(tmp_path, env, names):
    """Before: RANK=1 alone made the run a silent non-writing rank (rc 0, nothing written)."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = run("invconv-train", *TINY, "--epochs", "1", "--out", tmp_path / "run", env={**clean, **env})
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    line = one_error_line(proc, "invconv-train")
    assert "distributed environment" in line and all(n in line for n in names), line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_missing_peer_rank_times_out_with_a_message(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "INVCONV_DIST_TIMEOUT": "3"}
    t0 = time.monotonic()
    proc = run("invconv-train", *TINY, "--epochs", "1", "--device", "cpu", "--out", tmp_path / "run",
               env=env, timeout=120)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    line = one_error_line(proc, "invconv-train")
    assert "process group did not form: rank 0 of 2 waited 3 s" in line, line
    assert time.monotonic() - t0 < 90


# ------------------------------------------------------------------ item 5: resume

def test_resume_refuses_every_setting_it_cannot_honour(tmp_path):
    """Before: --resume with --lr 0.5 --lr-step 1 --seed 7 ... exited 0; the optimiser kept its
    saved lr and schedule while the recorded config said 0.5 and 1."""
    import torch

    out = tmp_path / "run"
    proc = run("invconv-train", *TINY, "--epochs", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    before = {f: (out / f).read_bytes() for f in ("last.pt", "best.pt", "metrics.json")}
    for option, value in (("--lr", "0.5"), ("--lr-step", "1"), ("--seed", "7"), ("--batch-size", "10"),
                          ("--max-train", "100"), ("--grad-clip", "0"), ("--max-test", "10")):
        proc = run("invconv-train", *TINY, "--epochs", "2", "--resume", "--out", out, option, value)
        assert proc.returncode == 1, (option, proc.stdout, proc.stderr)
        line = one_error_line(proc, "invconv-train")
        assert f"a resumed run cannot change {option[2:].replace('-', '_')} ({option})" in line, line
    assert {f: (out / f).read_bytes() for f in before} == before
    # what it can honour: more epochs, the final samples, the workers, the default lr_step spelled out
    proc = run("invconv-train", *TINY, "--epochs", "2", "--resume", "--out", out, "--samples", "9",
               "--temperature", "0.5", "--workers", "1", "--lr-step", "50")
    assert proc.returncode == 0, proc.stderr
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["train_config"]["lr"] == 1e-3 and ck["optimizer"]["param_groups"][0]["lr"] == 1e-3


# ------------------------------------------------------------------ item 13: workers

def test_the_worker_count_does_not_change_the_run(tmp_path):
    """Before: --workers 2 and --workers 0 trained on different batches (2.87612 vs 2.87498)."""
    import torch

    states = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        proc = run("invconv-train", *TINY, "--epochs", "2", "--workers", workers, "--out", out)
        assert proc.returncode == 0, proc.stderr
        states.append(torch.load(out / "last.pt", weights_only=True)["model"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# ------------------------------------------------------------------ items 9, 10: values and options

@pytest.mark.parametrize("tool, args", [
    ("invconv-train", [*TINY, "--epochs", "1", "--out", "{tmp}/run"]),
    ("invconv-sample", ["--checkpoint", "{tmp}/none.pt", "--out", "{tmp}/s.png"]),
    ("invconv-time", ["--shape", "digits", "--steps", "1", "--width", "4", "--repeats", "1"]),
    ("invconv-classify", ["--epochs", "1", "--out", "{tmp}/cls"]),
    ("invconv-compare", ["--models", "glow", "--seeds", "1", "--epochs", "1", "--out", "{tmp}/cmp"]),
])
@pytest.mark.parametrize("device, says", [("meta", "a meta device cannot run the flows"),
                                          ("bogus", "must be cpu, cuda or cuda:N, got 'bogus'"),
                                          ("cuda:99", "cuda:99")])
def test_a_device_that_cannot_run_is_a_command_line_error(tmp_path, tool, args, device, says):
    """Before: --device meta/bogus gave tracebacks or misleading errors (classify had already
    created --out; sample without CUDA reported a corrupt checkpoint)."""
    proc = run(tool, *[a.format(tmp=tmp_path) for a in args], "--device", device)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert f"argument --device: " in proc.stderr and says in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []  # nothing created


@pytest.mark.parametrize("tool, args", [("invconv-train", [*TINY, "--epochs", "1", "--out", "{tmp}/run"]),
                                        ("invconv-classify", ["--epochs", "1", "--out", "{tmp}/cls"])])
@pytest.mark.parametrize("seed", ["-1", str(2**31), "1e3"])
def test_a_seed_out_of_range_names_the_option(tmp_path, tool, args, seed):
    proc = run(tool, *[a.format(tmp=tmp_path) for a in args], "--seed", seed)
    assert proc.returncode == 2 and "argument --seed: expected an integer in 0..2147483647" in proc.stderr, proc.stderr


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    """Before: invconv-sample drew NaN images from it and exited 0."""
    import torch

    out = tmp_path / "run"
    assert run("invconv-train", *TINY, "--epochs", "1", "--out", out).returncode == 0
    ck = torch.load(out / "best.pt", weights_only=True)
    name = next(k for k, v in ck["model"].items() if v.is_floating_point())
    ck["model"][name] = torch.full_like(ck["model"][name], float("nan"))
    torch.save(ck, tmp_path / "nan.pt")
    proc = run("invconv-sample", "--checkpoint", tmp_path / "nan.pt", "--out", tmp_path / "s.png", "--device", "cpu")
    assert proc.returncode == 1, proc.stdout
    assert f"nan.pt: the saved weights hold NaN or inf ({name}" in one_error_line(proc, "invconv-sample")
    assert not (tmp_path / "s.png").exists()


def test_imagenet_values_outside_8_bits_are_refused(tmp_path):
    """Before: a float or int16 'data' array was wrapped to uint8 (300 -> 44) silently."""
    from invconv_core.flows.data import load_dataset

    for data, says in ((np.full((2, 3 * 32 * 32), 300, np.int16), "values 300..300"),
                       (np.full((2, 3 * 32 * 32), 0.5, np.float32), "dtype float32")):
        np.savez(tmp_path / "val_data.npz", data=data, labels=np.array([1, 2]))
        with pytest.raises(ValueError, match=f"val_data.npz: expected 'data' of 8-bit values 0–255, got .*{says}"):
            load_dataset("imagenet32", "test", str(tmp_path))
    np.savez(tmp_path / "val_data.npz", data=np.full((2, 3 * 32 * 32), 255, np.int64), labels=np.array([1, 2]))
    assert float(load_dataset("imagenet32", "test", str(tmp_path)).images.max()) == 255.0


def _mnist_files(d, n_train=4, n_test=3, test_size=28, labels=None):
    import gzip  # noqa: F401
    rng = np.random.default_rng(0)
    for prefix, n, size in (("train", n_train, 28), ("t10k", n_test, test_size)):
        imgs = rng.integers(0, 256, (n, size, size)).astype(np.uint8)
        lab = (labels if labels is not None else rng.integers(0, 10, n)).astype(np.uint8)[:n]
        for name, magic, arr in ((f"{prefix}-images-idx3-ubyte", 0x803, imgs),
                                 (f"{prefix}-labels-idx1-ubyte", 0x801, lab)):
            header = magic.to_bytes(4, "big") + b"".join(x.to_bytes(4, "big") for x in arr.shape)
            (d / name).write_bytes(header + arr.tobytes())


@pytest.mark.parametrize("case, says", [
    ({"test_size": 14}, "training images are (1, 28, 28) but test images (1, 14, 14)"),
    ({"n_test": 0}, "the test set is empty"),
    ({"n_train": 0}, "the training set is empty"),
])
@pytest.mark.parametrize("tool", ["invconv-train", "invconv-classify"])
def test_inconsistent_datasets_are_named_before_training(tmp_path, case, says, tool):
    """Before: a bare traceback, or "diverged"/num_samples=0."""
    data = tmp_path / "mnist"
    data.mkdir()
    _mnist_files(data, **case)
    extra = ["--steps", "1", "--width", "4", "--no-progress"] if tool == "invconv-train" else []
    proc = run(tool, "--dataset", "mnist", "--data-dir", data, "--epochs", "1", "--device", "cpu",
               "--out", tmp_path / "out", *extra)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert says in one_error_line(proc, tool)


def test_classify_refuses_labels_outside_the_ten_classes(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    _mnist_files(data, labels=np.array([0, 3, 12, 1]))
    proc = run("invconv-classify", "--dataset", "mnist", "--data-dir", data, "--epochs", "1",
               "--device", "cpu", "--out", tmp_path / "out")
    assert proc.returncode == 1 and "training labels must be classes 0–9, found 0..12" in proc.stderr, proc.stderr


def test_a_model_too_large_for_memory_names_its_width(tmp_path):
    """--width 1000000 asks for a 4 TB weight: a traceback before."""
    proc = run("invconv-train", *TINY, "--epochs", "1", "--width", "1000000", "--out", tmp_path / "run")
    assert proc.returncode == 1, proc.stderr
    assert "the model does not fit in memory (width=1000000" in one_error_line(proc, "invconv-train")


@pytest.mark.parametrize("field, value, says", [
    ("best_test_bpd", None, "lacks 'best_test_bpd'"), ("rng", "x", "has a str as 'rng'"),
    ("epoch", 1.5, "has a float as 'epoch'"), ("history", None, "lacks 'history'"),
    ("optimizer", "adam", "has a str as 'optimizer'"), ("adam_shape", None, "optimizer or scheduler state does not fit")])
def test_a_damaged_last_pt_is_named_on_resume(tmp_path, field, value, says):
    """Before: KeyError/TypeError/IndexError tracebacks mid-resume."""
    import torch

    out = tmp_path / "run"
    assert run("invconv-train", *TINY, "--epochs", "1", "--out", out).returncode == 0
    ck = torch.load(out / "last.pt", weights_only=True)
    if field == "adam_shape":
        state = ck["optimizer"]["state"][0]
        state["exp_avg"] = state["exp_avg"].reshape(-1)[:1].clone()
    elif value is None:
        del ck[field]
    else:
        ck[field] = value
    torch.save(ck, out / "last.pt")
    proc = run("invconv-train", *TINY, "--epochs", "2", "--resume", "--out", out)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc, "invconv-train")
    assert "last.pt: " in line and says in line, line


def test_a_fifo_as_checkpoint_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "best.pt"
    os.mkfifo(fifo)
    proc = run("invconv-sample", "--checkpoint", fifo, "--out", tmp_path / "s.png", "--device", "cpu", timeout=60)
    assert proc.returncode == 1 and "best.pt: not a regular file" in one_error_line(proc, "invconv-sample")


@pytest.mark.parametrize("name, value", [("INVCONV_DISABLE_COMPILED", "true"), ("INVCONV_CPU_ISA", "avx512")])
def test_unknown_switch_values_warn_once(name, value):
    code = "import warnings; warnings.simplefilter('always'); import invconv_core, invconv_core.flows"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, name: value}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(f"{name}={value!r} is not one of") == 1, proc.stderr


def test_a_full_disk_names_the_file(tmp_path, monkeypatch, capsys):
    """Before: '[Errno 28] No space left on device' without the file. A mknod copy of /dev/full
    (root only) stands for the full disk. Issue 29 item 9: the full device is refused before any
    check runs (it ran every check, then failed); a disk that fills up during the run is still
    named after the report (here: the device check switched off in-process)."""
    import stat
    if not _is_root():
        pytest.skip("mknod needs root")
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.stat("/dev/full").st_rdev)
    proc = run("invconv-verify", "--seed", "3", "--cases", "1", "--json", full)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_error_line(proc, "invconv-verify")
    assert f"{full}: the JSON file is the full device" in line, line
    assert proc.stdout == ""  # no check ran
    for tool, args in (("invconv-sample", ["--checkpoint", tmp_path / "none.pt", "--out", full]),):
        proc = run(tool, *args)
        assert proc.returncode == 1 and "is the full device" in one_error_line(proc, tool)

    from invconv_core import verify
    from invconv_core.flows import validate
    monkeypatch.setattr(validate, "_FULL_DEVICE", (-1, -1))
    assert verify.main(["--seed", "3", "--cases", "1", "--json", str(full)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write {full}: No space left on device" in err[0], err


def test_a_checkpoint_whose_config_cannot_be_allocated_is_refused(tmp_path):
    """A crafted checkpoint with width 1000000: a traceback from the allocator before."""
    import torch

    out = tmp_path / "run"
    assert run("invconv-train", *TINY, "--epochs", "1", "--out", out).returncode == 0
    ck = torch.load(out / "best.pt", weights_only=True)
    ck["config"]["width"] = 1_000_000
    torch.save(ck, tmp_path / "huge.pt")
    proc = run("invconv-sample", "--checkpoint", tmp_path / "huge.pt", "--out", tmp_path / "s.png", "--device", "cpu")
    assert proc.returncode == 1, proc.stderr
    assert "huge.pt: the model does not fit in memory (width=1000000" in one_error_line(proc, "invconv-sample")


def test_sigterm_with_dataloader_workers_is_not_lost(tmp_path):
    """Workers are forked every epoch; a signal handled during the fork raised inside an at-fork
    hook, where Python drops the exception: the run went on (rc 0 after all its epochs). Now it
    is sent again, and forked workers ignore the scheduler's signal (the main process stops
    them). (torch's DataLoader may add its own 'Exception ignored' lines when its iterator is
    interrupted while starting; the status and our line are what a scheduler reads.)"""
    import signal

    out = tmp_path / "run"
    proc = subprocess.Popen([script("invconv-train"), *TINY, "--epochs", "400", "--workers", "2",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # a few epochs in: the signal lands somewhere in the loop
            assert proc.stdout.readline().startswith("epoch "), proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "invconv-train: interrupted by SIGTERM" in err, (proc.returncode, err)
