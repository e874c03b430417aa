"""kernel_ab.py: two versions of the CPU kernel built side by side and timed in one process."""

from __future__ import annotations

import re
import subprocess

import pytest

import kernel_ab

IN_GIT = subprocess.run(["git", "-C", kernel_ab.REPO, "rev-parse", "HEAD"],
                        capture_output=True).returncode == 0


@pytest.mark.skipif(not IN_GIT, reason="needs the git checkout (builds HEAD's cpp/)")
def test_builds_head_and_the_working_tree_and_times_both(capsys):
    assert kernel_ab.main(["HEAD", "--shapes", "3,5,6", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\| 3, 5, 6 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$",
                     out, re.M), out


def test_a_bad_shape_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as err:
        kernel_ab.main(["HEAD", "--shapes", "3,5"])
    assert err.value.code == 2
    assert "--shapes: expected B,C,H" in capsys.readouterr().err
