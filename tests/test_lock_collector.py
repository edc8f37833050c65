"""`buildenv lock` imports with the cyclic collector paused (`buildenv.cli.collector`): no
collection runs before the lock's modules are imported, the lock's own work is collected as
usual, and every other way out of the command (the plan's answer, typer's) leaves it on."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, write_repo

from buildenv.cli import collector

_PROBE = """
import atexit, gc, sys
sys.argv = ["buildenv", *sys.argv[1:]]
from buildenv.cli import run
seen = []  # whether the lock's modules were imported, at each collection once the command ran
gc.callbacks.append(lambda phase, info: phase == "start" and seen.append(
    "buildenv.compile.locking" in sys.modules))
def report():
    early = sum(1 for imported in seen if not imported)
    print(f"COLLECTIONS {len(seen)} EARLY {early} ENABLED {gc.isenabled()}", file=sys.stderr)
atexit.register(report)
run()
"""


def _lock(root, *argv: str, **env_extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BUILDENV_ROOT"}
    env.update(PYTHONPATH=str(REPO_ROOT), **env_extra)
    proc = subprocess.run([sys.executable, "-c", _PROBE, "lock", *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if line.startswith("COLLECTIONS"))
    words = line.split()
    return dict(zip(words[::2], words[1::2]))


def test_the_full_lock_imports_without_a_collection_and_collects_afterwards(tmp_path):
    root = write_repo(tmp_path / "repo")
    # a first lock: the full command (no plan yet); pydantic, the models and the lock's
    # modules were imported with ~70 collections of nothing before the collector was paused
    found = _lock(root, "base")
    assert found["EARLY"] == "0", found
    assert found["ENABLED"] == "True"
    # typer's lock (a flag the plain command line leaves to it) too
    found = _lock(root, "base", "--check")
    assert found["EARLY"] == "0", found
    assert found["ENABLED"] == "True"


@pytest.mark.parametrize("quick", ["", "1"])
def test_a_lock_answered_without_the_full_command_leaves_the_collector_on(tmp_path, quick):
    root = write_repo(tmp_path / "repo")
    _lock(root, "base")
    extra = {"BUILDENV_NO_QUICK_LOCK": "1"} if quick else {}
    assert _lock(root, "base", **extra)["ENABLED"] == "True"


def test_resume_starts_only_what_pause_stopped():
    assert gc.isenabled()
    collector.resume()
    assert gc.isenabled() and not collector.paused()
    gc.disable()
    try:
        collector.pause()  # already off (someone else's): not ours to start again
        assert not collector.paused()
        collector.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
    frozen = gc.get_freeze_count()
    collector.pause()
    assert not gc.isenabled() and collector.paused()
    collector.resume(freeze=False)
    assert gc.isenabled() and gc.get_freeze_count() == frozen
