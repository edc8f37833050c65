"""On a first lock of an environment with derived data, the plain datasets' bytes are kept in
the store while the transforms run (`data.lock.locking._keep_beside`), not after them; the
lock's own keeper call still decides what is kept and what is reported."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from conftest import invoke_cli
from sourcerepo import source_fixtures

from buildenv.compile import source_process
from buildenv.core.project import Project
from buildenv.data.lock.lockfile import read_lock
from buildenv.data.store import ObjectStore, keeping
from buildenv.env.resolve import Multiverse

_progress, template, locked = source_fixtures("keep-beside")


@pytest.fixture
def first(locked: Path) -> Path:
    """The locked repository as a new checkout has it: nothing kept, nothing derived."""
    shutil.rmtree(locked / ".buildenv")
    return locked


def test_inputs_are_kept_while_the_transform_runs(first: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    kept = threading.Event()
    seen: dict[str, bool] = {}
    real_keep, real_run = keeping.keep_pinned, source_process.SourceProcess.run

    def keep_pinned(project, files, cache):  # type: ignore[no-untyped-def]
        problems = real_keep(project, files, cache)
        if any(f.dataset == "events" for f in files):
            kept.set()
        return problems

    def run(self, res, jobs, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(job.get("kind") == "transform" for job in jobs):
            # the transforms' process is handed its request only once the inputs are kept:
            # without the overlap, keeping starts after this returns and the wait times out
            seen["kept before the transform ran"] = kept.wait(60)
        return real_run(self, res, jobs, *args, **kwargs)

    monkeypatch.setattr(keeping, "keep_pinned", keep_pinned)
    monkeypatch.setattr(source_process.SourceProcess, "run", run)
    code, _, err = invoke_cli(["lock", "ev"], first)
    assert code == 0, err
    assert seen == {"kept before the transform ran": True}
    # every file the lock pins is held, and the lock checks as before
    project = Project.discover(first)
    res = Multiverse(project).resolve("ev")
    lock = read_lock(project, "ev")
    assert lock is not None
    store = ObjectStore.of(project)
    pinned = keeping.pinned_files(project, res.env, lock)
    assert pinned and all(store.has(f.digest) for f in pinned)
    assert invoke_cli(["lock", "ev", "--check"], first)[0] == 0


def test_a_keep_beside_that_fails_is_kept_again_and_nothing_is_lost(
        first: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the thread's keeping fails outright: the lock's own keeper call keeps every file
    calls: list[str] = []
    real_keep = keeping.keep_pinned

    def keep_pinned(project, files, cache):  # type: ignore[no-untyped-def]
        calls.append(threading.current_thread().name)
        if threading.current_thread().name == "buildenv-keep-inputs":
            raise OSError("the store's disk is full")
        return real_keep(project, files, cache)

    monkeypatch.setattr(keeping, "keep_pinned", keep_pinned)
    code, _, err = invoke_cli(["lock", "ev"], first)
    assert code == 0, err
    assert "buildenv-keep-inputs" in calls and calls[-1] != "buildenv-keep-inputs"
    assert invoke_cli(["lock", "ev", "--check"], first)[0] == 0
