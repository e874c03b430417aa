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
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    assert link.is_symlink() and target.is_file() and '"seed": 3' in target.read_text()
    if _is_root():
        device = _char_device_copy(tmp_path)
        proc = run("invconv-verify", "--seed", "3", "--cases", "2", "--json", device)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        assert stat.S_ISCHR(os.lstat(device).st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen([sys.executable, "-c", f"import sys; print(len(open({str(fifo)!r}, 'rb').read()))"],
                              stdout=subprocess.PIPE, text=True)
    try:
        proc = run("invconv-verify", "--seed", "3", "--cases", "2", "--json", fifo)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        assert int(reader.communicate(timeout=60)[0]) > 100 and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    finally:
        reader.kill()
