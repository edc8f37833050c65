"""The training process started while the build validates (`compile.build._early`,
`launch.EarlyTraining`): its start overlaps validation; when validation fails it is killed and
nothing of it is kept (same diagnostics, no artifact, no scratch dir); when validation passes
the artifact is the one a training started after validation makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from buildrepo import make_build_repo
from conftest import invoke_cli

from buildenv.compile import build as build_module
from buildenv.compile import launch
from buildenv.compile.build import BuildOptions, build_pair
from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.data.validate import validate as validate_module
from buildenv.env.resolve import Multiverse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_build_repo(tmp_path_factory.mktemp("early") / "repo")
    code, _, err = invoke_cli(["lock"], root, subprocess=True)  # this buildenv, under Pants too
    assert code == 0, err
    return root


def _build(root: Path, out: Path):
    project = Project.discover(root)
    return build_pair(project, Multiverse(project), "lr", "base",
                      BuildOptions(out=out, register=False, use_cache=False))


def _spy(monkeypatch) -> list:
    started: list = []
    seen = launch.EarlyTraining._started

    def spy(self, proc):
        started.append(proc)
        seen(self, proc)

    monkeypatch.setattr(launch.EarlyTraining, "_started", spy)
    return started


def test_a_failed_validation_kills_the_training_started_early(repo, tmp_path, monkeypatch):
    started = _spy(monkeypatch)
    planted = Diagnostic("BE101", "planted validation error", "environments/base.yaml", 3)

    def validate(*args, **kwargs):
        import time

        deadline = time.monotonic() + 120
        while not started and time.monotonic() < deadline:  # the training runs already
            time.sleep(0.05)
        return [planted]

    monkeypatch.setattr(validate_module, "validate_env", validate)
    outcome = _build(repo, tmp_path / "out")
    assert started, "the training did not start before validation ended"
    assert started[0].poll() is not None  # killed and reaped
    assert outcome.status == "failed" and outcome.exit_code == 1
    assert outcome.reason == "validate failed (BE101)"
    assert [d for d in outcome.diagnostics if d.is_error] == [planted]
    assert not (tmp_path / "out").exists()
    assert not [p for p in (repo / ".buildenv" / "tmp").glob("*") if "train" in p.name]


def test_the_early_training_gives_the_same_artifact(repo, tmp_path, monkeypatch):
    started = _spy(monkeypatch)
    early = _build(repo, tmp_path / "early")
    assert early.status == "built", [d.to_text() for d in early.diagnostics]
    assert len(started) == 1
    monkeypatch.setattr(build_module, "_early", lambda *args: None)
    late = _build(repo, tmp_path / "late")
    assert late.status == "built" and len(started) == 1
    names = sorted(p.relative_to(tmp_path / "early").as_posix()
                   for p in (tmp_path / "early").rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tmp_path / "late").as_posix()
                           for p in (tmp_path / "late").rglob("*") if p.is_file())
    for name in names:
        if name != "buildenv.json":  # records the timings and where it was written
            assert (tmp_path / "early" / name).read_bytes() == \
                (tmp_path / "late" / name).read_bytes(), name


def test_stop_kills_a_running_training_but_never_one_that_ended(monkeypatch):
    """A process id reaped may belong to another process: once the training ended, `stop`
    kills nothing; while it runs, `stop` kills its group and waits for it to end."""
    import threading

    killed: list = []
    monkeypatch.setattr(launch, "_kill_group_of", killed.append)
    ended = launch.EarlyTraining(lambda on_start: (on_start("first"), {"ok": True})[1])
    assert ended.result() == {"ok": True}
    ended.stop()
    assert killed == []
    release = threading.Event()

    def running(on_start):
        on_start("second")
        release.wait(30)
        return {"ok": False}

    monkeypatch.setattr(launch, "_kill_group_of", lambda proc: (killed.append(proc),
                                                                release.set()))
    launch.EarlyTraining(running).stop()
    assert killed == ["second"]


def test_the_build_goes_on_only_once_the_process_is_started():
    """The fork happens while the build's thread waits, not while it imports validation's
    libraries (a child forked during a dlopen hangs in its preexec_fn)."""
    import threading
    import time

    calls: list = []
    release = threading.Event()

    def start(on_start):
        time.sleep(0.3)
        on_start("proc")
        calls.append("started")
        release.wait(30)
        return {"ok": True}

    early = launch.EarlyTraining(start)
    assert calls == [] or calls == ["started"]
    assert early._proc == "proc"
    release.set()
    assert early.result() == {"ok": True}
