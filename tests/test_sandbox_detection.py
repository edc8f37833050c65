"""Detecting what isolation the machine offers, once: bubblewrap's verdict is kept across
processes only while what it depends on holds, only when it is the best one, only where
nobody else may write it, and forgotten when bubblewrap fails after all (docs/sandbox.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli
from sandbox_repo import sandbox_usable

from buildenv.compile import isolation, probe_cache
from buildenv.compile.isolation import Support, detect
from buildenv.compile.sandbox import Sandbox
from buildenv.data.gate.broker import Broker


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """A private cache directory, and detection as in a new process (before and after)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(isolation.MECHANISM_VAR, "auto")
    isolation._detect.cache_clear()
    yield tmp_path / "cache" / "buildenv"
    isolation._detect.cache_clear()


@pytest.fixture
def started(monkeypatch):
    """The programs detection starts."""
    runs: list[list[str]] = []
    real = isolation._start

    def counting(args: list[str]):
        runs.append(args)
        return real(args)

    monkeypatch.setattr(isolation, "_start", counting)
    return runs


def _new_process() -> Support:
    isolation._detect.cache_clear()
    return detect()


@pytest.fixture
def userns_bwrap(cache_home, started):
    if not sandbox_usable("auto"):
        pytest.skip("bubblewrap does not run here")
    if not isolation._detect("auto", True).bwrap_userns:
        pytest.skip("bubblewrap runs only without a user namespace here: never kept")
    for entry in cache_home.glob("*"):  # as if never probed
        entry.unlink()
    isolation._detect.cache_clear()
    started.clear()


def test_a_second_process_does_not_probe_bubblewrap_again(cache_home, started, userns_bwrap):
    first = _new_process()
    assert first.mechanism.startswith("bwrap") and not first.recalled
    assert any("true" in args for args in started)  # it ran bubblewrap with the real flags
    assert len(list(cache_home.glob("sandbox-probe-*.json"))) == 1
    started.clear()
    second = _new_process()
    assert started == [] and second.recalled
    assert (second.bwrap, second.bwrap_userns, second.bwrap_version, second.mechanism) == (
        first.bwrap, first.bwrap_userns, first.bwrap_version, first.mechanism)
    fresh = detect(fresh=True)  # `buildenv doctor`: the real checks
    assert started and not fresh.recalled


def test_a_verdict_others_may_write_is_not_trusted(cache_home, started, userns_bwrap):
    _new_process()
    entry = next(cache_home.glob("sandbox-probe-*.json"))
    for path, mode in ((entry, 0o666), (cache_home, 0o777)):
        os.chmod(path, mode)
        started.clear()
        assert not _new_process().recalled and started  # probed again
        os.chmod(entry, 0o644)
        os.chmod(cache_home, 0o700)


def test_the_key_changes_with_the_binary_and_the_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    binary = tmp_path / "bwrap"
    binary.write_text("#!/bin/sh\n")
    probe = [str(binary), "--unshare-net", "--", "true"]
    entry = probe_cache.entry_path(str(binary), probe)
    assert entry is not None and entry.parent == tmp_path / "cache" / "buildenv"
    assert probe_cache.entry_path(str(binary), probe) == entry  # stable
    assert probe_cache.entry_path(str(binary), [*probe[:-1], "false"]) != entry
    monkeypatch.setattr(probe_cache, "_SYSCTLS", ("/proc/sys/kernel/pid_max",))
    assert probe_cache.entry_path(str(binary), probe) != entry  # another sysctl value
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    os.utime(binary, ns=(1, 1))  # bubblewrap upgraded in place
    assert probe_cache.entry_path(str(binary), probe) != entry
    assert probe_cache.entry_path(str(tmp_path / "missing"), probe) is None


def test_a_lesser_verdict_is_never_kept(cache_home, monkeypatch):
    """Root mode or no bubblewrap: probed every time, so that installing or allowing user
    namespaces takes effect at once."""
    if isolation.shutil.which("bwrap") is None:
        pytest.skip("no bubblewrap binary to fail with")
    monkeypatch.setattr(isolation, "probe", lambda path, userns: ["false"])
    support = _new_process()
    assert support.bwrap is None and support.bwrap_problem == "exit code 1"
    assert not cache_home.exists() or not list(cache_home.iterdir())


def test_bubblewrap_failing_after_all_forgets_the_verdict(cache_home, started, userns_bwrap):
    _new_process()
    assert list(cache_home.glob("sandbox-probe-*.json"))
    support = _new_process()
    assert support.recalled
    box = Sandbox.__new__(Sandbox)  # only what reading bubblewrap's status needs
    box.support, box._status = support, os.pipe()
    try:
        failed = box.setup_failure("bwrap: Creating new namespace failed: Operation not "
                                   "permitted\n")
    finally:
        for fd in box._status:
            os.close(fd)
    assert failed is not None and failed["code"] == "BE326"
    assert "Creating new namespace failed" in failed["message"]
    assert any("checks again" in hint for hint in failed["hints"])
    assert not list(cache_home.glob("sandbox-probe-*.json"))
    started.clear()
    assert not _new_process().recalled and started


def test_the_broker_serves_from_the_start_of_the_training_and_closes_unstarted(tmp_path):
    from buildenv.core.project import Project
    from buildenv.env.spec import Environment

    root = tmp_path / "repo"
    root.mkdir()
    (root / "pyproject.toml").write_text("[tool.buildenv]\n")
    project = Project.discover(root)
    env = Environment.model_validate({"name": "e", "datasets": {}})
    Broker(project, env, {}).close()  # the runner never started: nothing to join, no hang
    broker = Broker(project, env, {})
    try:
        child = os.dup(broker.child_fd)
        os.write(child, b'{"op": "nope"}')  # asked before the build serves: it waits
        broker.started()
        assert b"unknown op" in os.read(child, 1 << 16)
        os.close(child)
    finally:
        broker.close()


def test_doctor_probes_afresh(cache_home, started, userns_bwrap):
    _new_process()
    started.clear()
    code, out, err = invoke_cli(["doctor"], Path(REPO_ROOT))  # in this process: counted
    assert code == 0, err
    assert any("true" in args for args in started)
