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
