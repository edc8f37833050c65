"""`core.process_tree.wait_exit`: Popen's wait with a time limit, woken by the process's exit
(a pidfd) instead of polling; the same answers as `Popen.wait`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from buildenv.core.process_tree import wait_exit


def test_it_returns_the_exit_code_of_a_process_that_exits():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert wait_exit(proc, 60) == 3
    assert proc.returncode == 3  # reaped, as Popen.wait does
    assert wait_exit(proc, 60) == 3  # asked again: the same answer, no new wait


def test_it_raises_timeout_expired_and_leaves_the_process_running():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            wait_exit(proc, 0.2)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
