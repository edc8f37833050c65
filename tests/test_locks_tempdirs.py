"""Cross-process locks, owner-named temp dirs and atomic directories, with real processes."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO_ROOT

import buildenv.core.mutex as mutex_module
from buildenv.cli.progress_view import Lines
from buildenv.core import progress
from buildenv.core.atomic import atomic_dir
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.mutex import mutex
from buildenv.core.tempdirs import owned_temp_dir, process_start, sweep

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

HOLD_LOCK = """
import sys, time
from pathlib import Path
from buildenv.core.mutex import mutex
with mutex(Path(sys.argv[1]), "the test resource", 5):
    print("held", flush=True)
    time.sleep(120)
"""


def test_lock_excludes_another_process_and_dies_with_it(tmp_path):
    path = tmp_path / "locks" / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(DiagnosticError) as caught, mutex(path, "the test resource", 0.5):
            pass
        assert time.monotonic() - started >= 0.5
        assert re.match(
            rf"buildenv: error\[BE760\]: gave up after 0\.5 s waiting for the test resource "
            rf"\(held by process {holder.pid} \(python -c \S+\) since "
            rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)$",
            caught.value.diagnostics[0].to_text().splitlines()[0])
        holder.send_signal(signal.SIGKILL)  # the kernel releases the lock of a killed holder
        holder.wait()
        with mutex(path, "the test resource", 5):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_wait_is_shown_with_its_holder_and_timed_as_a_phase(tmp_path):
    """Waiting for another process is visible: the task waiting switches to the phase `wait`
    (so a build's timings say where its time went), and a progress task names the holder."""
    path = tmp_path / "locks" / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    stream = io.StringIO()
    try:
        assert holder.stdout.readline().strip() == "held"
        with progress.installed(Lines(stream, after=0, ticking=False)), \
                progress.task("build demo @ base") as task:
            task.phase("check")
            with pytest.raises(DiagnosticError, match="BE760"), \
                    mutex(path, "the test resource", 0.3):
                pass
            assert task.phase_name == "check"  # back to what it was doing
            assert task.timings["wait"] >= 0.3
    finally:
        holder.kill()
        holder.wait()
    lines = stream.getvalue().splitlines()
    assert "wait build demo @ base: started" in lines
    waiting = [line for line in lines if line.startswith("waiting for the test resource")]
    assert re.fullmatch(rf"waiting for the test resource, held by process {holder.pid} "
                        rf"\(python -c \S+\) since \S+Z: started", waiting[0]), waiting


def test_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(tmp_path, monkeypatch):
    """The other thread is seen refused by the lock (not merely started) before the holder
    lets go: synchronised by an event on flock's answer, not by a pause."""
    path = tmp_path / "y.lock"
    order = []
    refused = threading.Event()
    real = mutex_module.fcntl

    def flock(fd, operation):
        try:
            return real.flock(fd, operation)
        except BlockingIOError:
            if threading.current_thread().name == "other":
                refused.set()
            raise

    monkeypatch.setattr(mutex_module, "fcntl", SimpleNamespace(
        flock=flock, LOCK_EX=real.LOCK_EX, LOCK_NB=real.LOCK_NB, LOCK_UN=real.LOCK_UN))
    with mutex(path, "y", 1), mutex(path, "y", 1):  # the same thread again: no deadlock
        def other():
            with mutex(path, "y", 30):
                order.append("other")

        thread = threading.Thread(target=other, name="other")
        thread.start()
        assert refused.wait(30), "the other thread never tried the lock"
        order.append("first")
    thread.join(30)
    assert order == ["first", "other"]


def _dead_pid() -> tuple[int, int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    start = process_start(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, start


def test_sweep_removes_only_what_dead_owners_left(tmp_path):
    pid, start = _dead_pid()
    dead = tmp_path / f".out.tmp-{pid}-{start}-abc123"
    reused = tmp_path / f".out.tmp-{os.getpid()}-{process_start(os.getpid()) + 1}-def456"
    mine = owned_temp_dir(tmp_path, "out")
    foreign = tmp_path / ".out.tmp-handmade"
    plain = tmp_path / "out"
    for d in (dead, reused, foreign, plain):
        d.mkdir()
        (d / "f").write_text("x")
    removed = sweep(tmp_path)
    assert sorted(removed) == sorted([dead, reused])  # a reused pid is another process
    assert mine.is_dir() and foreign.is_dir() and plain.is_dir()


WRITE_DIR = """
import sys, time
from pathlib import Path
from buildenv.cli.progress_view import Lines
from buildenv.core import progress
from buildenv.core.atomic import atomic_dir
final, scratch, tag = Path(sys.argv[1]), Path(sys.argv[2]) if sys.argv[2] else None, sys.argv[3]
with atomic_dir(final, scratch) as tmp:
    for i in range(40):
        (tmp / f"f{i}").write_text(tag)
        time.sleep(0.01)
    print("written", flush=True)
    if tag == "hang":
        time.sleep(120)
"""


@pytest.mark.parametrize("use_scratch", [False, True])
def test_a_failed_atomic_dir_removes_the_parents_it_made_only(tmp_path, use_scratch):
    """Nothing partial: a failed or interrupted block leaves no empty `dist/<training>/`,
    while a parent that existed before (empty or not) is left as it was."""
    scratch = tmp_path / "scratch" if use_scratch else None
    def half_written(error: type[BaseException]) -> None:
        with atomic_dir(tmp_path / "dist" / "t" / "e", scratch) as tmp:
            (tmp / "model.bin").write_text("half")
            raise error()

    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error):
            half_written(error)
        assert not (tmp_path / "dist").exists()
    (tmp_path / "dist" / "t").mkdir(parents=True)
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "dist" / "t" / "e", scratch):
        raise RuntimeError()
    assert (tmp_path / "dist" / "t").is_dir() and not any((tmp_path / "dist" / "t").iterdir())
    with atomic_dir(tmp_path / "dist" / "u" / "e", scratch) as tmp:
        (tmp / "model.bin").write_text("whole")
    assert (tmp_path / "dist" / "u" / "e" / "model.bin").read_text() == "whole"


@pytest.mark.parametrize("use_scratch", [False, True])
def test_concurrent_atomic_dirs_do_not_sweep_each_other(tmp_path, use_scratch):
    final = tmp_path / "dist" / "t" / "e"
    scratch = tmp_path / "scratch" if use_scratch else ""
    procs = [subprocess.Popen([sys.executable, "-c", WRITE_DIR, str(final), str(scratch),
                               f"p{i}"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    contents = {p.read_text() for p in final.iterdir()}
    assert len(contents) == 1 and len(list(final.iterdir())) == 40  # one writer's, whole
    assert [p.name for p in final.parent.iterdir()] == ["e"]
    assert oct(final.stat().st_mode & 0o777) == "0o755"


def test_a_killed_writer_leaves_nothing_in_the_final_directory(tmp_path):
    final, scratch = tmp_path / "dist" / "t" / "e", tmp_path / "scratch"
    proc = subprocess.Popen([sys.executable, "-c", WRITE_DIR, str(final), str(scratch), "hang"],
                            env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    assert list(final.parent.iterdir()) == []  # the temp dir is in scratch, not beside
    [left] = [p for p in scratch.iterdir() if p.is_dir()]  # beside the record of dist/ and t/
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    with atomic_dir(final, scratch) as tmp:  # the next writer sweeps the dead one's dir
        assert not left.exists()
        (tmp / "ok").write_text("1")
    assert [p.name for p in final.iterdir()] == ["ok"]
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("before", ["nothing", "dist", "a sibling"])
def test_the_empty_parents_a_killed_writer_made_go_with_its_temp_dir(tmp_path, before):
    """SIGKILL skips the cleanup that removes the parents a failed block made: the block
    records them in scratch first, and the sweep that removes its temp dir (the next build's,
    whichever training it builds) removes them too while they are empty. A parent that existed
    before stays, and so does one that another writer filled meanwhile."""
    final, scratch = tmp_path / "dist" / "t" / "e", tmp_path / "scratch"
    if before == "dist":
        (tmp_path / "dist").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", WRITE_DIR, str(final), str(scratch), "hang"],
                            env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "dist" / "t").is_dir() and not final.exists()  # what the kill left
    if before == "a sibling":  # another build's result arrived in dist/t/ since
        with atomic_dir(tmp_path / "dist" / "t" / "other", tmp_path / "other-scratch") as tmp:
            (tmp / "ok").write_text("1")
    sweep(scratch)
    assert list(scratch.iterdir()) == []
    if before == "nothing":
        assert not (tmp_path / "dist").exists()
    elif before == "dist":
        assert list((tmp_path / "dist").iterdir()) == []
    else:
        assert [p.name for p in (tmp_path / "dist" / "t").iterdir()] == ["other"]


def test_temp_dir_falls_back_beside_the_target_on_another_filesystem(tmp_path, monkeypatch):
    final = tmp_path / "out" / "x"
    scratch = tmp_path / "scratch"
    real_stat = Path.stat

    def other_device(self, *args, **kwargs):
        result = real_stat(self, *args, **kwargs)
        if self == scratch:
            return os.stat_result((result.st_mode, result.st_ino, result.st_dev + 1,
                                   *tuple(result)[3:]))
        return result

    monkeypatch.setattr(Path, "stat", other_device)
    with atomic_dir(final, scratch) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".x.tmp-")
    assert final.is_dir()


WRITE_FILE = """
import os, sys
from pathlib import Path
from buildenv.core.atomic import atomic_write_text
def die(src, dst):  # killed between writing the temp file and renaming it
    os.kill(os.getpid(), 9)
os.replace = die
target, scratch = Path(sys.argv[1]), Path(sys.argv[2]) if sys.argv[2] else None
atomic_write_text(target, "new", durable=False, scratch=scratch)
"""


@pytest.mark.parametrize("use_scratch", [False, True])
def test_a_file_writer_killed_before_its_rename_leaves_a_temp_the_sweep_removes(
        tmp_path, use_scratch):
    target = tmp_path / "objects" / "ab" / "record.json"
    target.parent.mkdir(parents=True)
    target.write_text("old")
    scratch = tmp_path / "scratch" if use_scratch else None
    proc = subprocess.run([sys.executable, "-c", WRITE_FILE, str(target), str(scratch or "")],
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert target.read_text() == "old"  # never half of the new one
    where = scratch if scratch is not None else target.parent
    [left] = [p for p in where.iterdir() if p != target]
    assert re.match(r"^\.record\.json\.tmp-\d+-\d+-\w+$", left.name), left.name
    if scratch is not None:
        assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]
    mine_fd, mine = tempfile_owned(where)
    assert sweep(where) == [left]  # the dead writer's, not a live one's
    assert Path(mine).exists()
    os.close(mine_fd)


def tempfile_owned(where: Path) -> tuple[int, str]:
    from buildenv.core.tempdirs import owned_temp_file
    return owned_temp_file(where, "record.json")


def test_a_file_written_through_a_scratch_on_another_filesystem_lands_beside(
        tmp_path, monkeypatch):
    import errno as errno_module

    from buildenv.core.atomic import atomic_write_text
    target, scratch = tmp_path / "out" / "r.json", tmp_path / "scratch"
    real_replace = os.replace

    def cross_device(src, dst):
        if Path(src).parent == scratch:
            raise OSError(errno_module.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", cross_device)
    atomic_write_text(target, "x", scratch=scratch)
    assert target.read_text() == "x"
    assert list(scratch.iterdir()) == [] and [p.name for p in target.parent.iterdir()] == [
        "r.json"]


def test_a_write_beside_its_target_removes_what_killed_writers_of_it_left_there(tmp_path):
    """A writer killed before its rename leaves its temp file beside the target; the next
    atomic write of that file removes it (a write of another file leaves it: the directory
    may be shared), and leaves a live writer's temp file alone."""
    from buildenv.core.atomic import atomic_write_text, create_new_text

    target = tmp_path / "state" / "record.json"
    target.parent.mkdir()
    proc = subprocess.run([sys.executable, "-c", WRITE_FILE, str(target), ""],
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    [left] = list(target.parent.iterdir())
    atomic_write_text(target.parent / "plan.json", "new", durable=False)
    assert left.exists()
    mine_fd, mine = tempfile_owned(target.parent)
    atomic_write_text(target, "new", durable=False)
    assert not left.exists()
    assert Path(mine).exists()
    os.close(mine_fd)
    Path(mine).unlink()
    assert sorted(p.name for p in target.parent.iterdir()) == ["plan.json", "record.json"]
    new = target.parent / "new.txt"
    subprocess.run([sys.executable, "-c", WRITE_FILE, str(new), ""], env=ENV, timeout=60)
    assert create_new_text(new, "x")
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "new.txt", "plan.json", "record.json"]


def test_a_sweep_beside_a_target_leaves_other_users_files_and_never_fails(tmp_path,
                                                                          monkeypatch):
    """In a directory other users share, a dead writer's temp file of theirs is not this
    user's to remove; one that cannot be removed is left, and the write goes on."""
    from buildenv.core.atomic import atomic_write_text
    from buildenv.core.tempdirs import sweep

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(done.stdout)
    theirs = tmp_path / f".record.json.tmp-{dead}-0-theirs"
    stuck = tmp_path / f".record.json.tmp-{dead}-0-stuck"
    theirs.write_text("")
    stuck.write_text("")
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    os.chown(theirs, 65534, 65534)
    real_unlink = Path.unlink

    def refused(self, missing_ok=False):
        if self.name == stuck.name:
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    assert sweep(tmp_path, "record.json") == []
    atomic_write_text(tmp_path / "record.json", "x")
    assert theirs.exists() and stuck.exists()
    assert (tmp_path / "record.json").read_text() == "x"
