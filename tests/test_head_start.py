"""`buildenv lock`'s head start (issue 25, Parquet lock end to end): the files the lock's plan
pins start hashing before the command imports anything heavy; the command takes a pass only
when the file is still the one hashed, and locks exactly what it locks without it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli, movies_table, write_parquet, write_repo

from buildenv.cli import early, head_start
from buildenv.data.lock import digests, early_hash
from buildenv.data.lock.quick import PLAN_FILE
from buildenv.data.storage import locate


def _backdate(root: Path) -> None:
    past = time.time() - 60
    for path in (root / "data").glob("*.parquet"):
        os.utime(path, (past, past))


@pytest.fixture
def locked(tmp_path) -> Path:
    """The test repo after a full lock (plan written), its stat cache removed: a cold relock."""
    root = write_repo(tmp_path / "repo")
    _backdate(root)
    code, _, err = invoke_cli(["lock"], root)
    assert code == 0, err
    assert (root / ".buildenv" / PLAN_FILE).is_file()
    (root / ".buildenv" / "statcache.json").unlink()
    return root


@pytest.fixture
def passes(monkeypatch) -> dict[str, early_hash.Pass]:
    """This process's passes, empty, its switch interval left alone, and `early`'s prefetch
    from the YAML recorded (`yaml_prefetch`), not started."""
    started: dict[str, early_hash.Pass] = {}
    monkeypatch.setattr(early_hash, "_PASSES", started)
    monkeypatch.setattr(head_start.sys, "setswitchinterval", lambda _: None)
    yaml_prefetch.clear()
    monkeypatch.setattr(early, "prefetch", yaml_prefetch.append)
    return started


yaml_prefetch: list[list[str]] = []


def _data(root: Path, *names: str) -> list[str]:
    return sorted(str((root / "data" / n).resolve()) for n in names)


def _child(root: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("BUILDENV_ROOT", "BUILDENV_NO_PREFETCH", "BUILDENV_NO_QUICK_LOCK")}
    environ.update(PYTHONPATH=str(REPO_ROOT), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=environ,
                          capture_output=True, text=True, timeout=60)


_STARTED = """
import json, sys
from buildenv.cli import early, head_start
from buildenv.data.lock import early_hash
head_start.start(["buildenv", *sys.argv[1:]])
print(json.dumps({"passes": sorted(early_hash._PASSES),
                  "imported": sorted(m for m in sys.modules if m.startswith(
                      ("buildenv.data.lock.digests", "buildenv.data.storage", "buildenv.cli.quick",
                       "buildenv.core.progress", "pyarrow", "yaml")))}))
"""


@pytest.mark.parametrize("args, files", [
    (["lock"], ("movies.parquet", "movies-v2.parquet", "ratings.parquet")),
    (["lock", "child"], ("movies-v2.parquet", "ratings.parquet")),
    (["lock", "base", "--root", "."], ("movies.parquet", "ratings.parquet")),
])
def test_the_plans_files_start_hashing_before_the_command_imports(locked, args, files):
    proc = _child(locked, _STARTED.replace("sys.argv[1:]", repr(args)))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found == {"passes": _data(locked, *files), "imported": []}


_TAKEN = """
import sys
from buildenv.cli import early, head_start
head_start.start(["buildenv", "lock"])
from buildenv.data.lock import digests, early_hash
assert len(early_hash._PASSES) == 3, early_hash._PASSES
for started in list(early_hash._PASSES.values()):
    started.wait()
def hashed_again(*args):
    raise AssertionError("hashed again")
digests.compute_digest = hashed_again
from buildenv.cli import quick_lock
print("EXIT", quick_lock.run(["lock"]))
"""


def _stat_cache(root: Path) -> dict[str, list[object]]:
    """The stat cache's entries without the time each file was hashed at."""
    data = json.loads((root / ".buildenv" / "statcache.json").read_text())
    return {k: e[:5] + e[6:] for k, e in data["entries"].items()}


def test_the_command_takes_the_passes_and_locks_the_same_bytes(locked):
    locks = {p.name: p.read_bytes() for p in (locked / "environments").glob("*.lock.json")}
    taken = _child(locked, _TAKEN)
    assert taken.returncode == 0, taken.stderr
    assert taken.stdout.splitlines()[-1] == "EXIT 0"  # no file hashed again, all answered
    taken_cache = _stat_cache(locked)
    (locked / ".buildenv" / "statcache.json").unlink()
    code, out, err = invoke_cli(["lock"], locked, subprocess=True,
                                env={"BUILDENV_NO_PREFETCH": "1"})
    assert code == 0, err
    assert taken.stdout.splitlines()[:-1] == out.splitlines()
    assert _stat_cache(locked) == taken_cache
    assert {p.name: p.read_bytes() for p in (locked / "environments").glob("*.lock.json")} == locks


def test_a_relock_with_the_head_start_prints_and_writes_what_one_without_it_does(locked):
    """End to end, `python -m buildenv lock` after a data file changed (its lock written anew),
    in two copies of the repository: the same output, locks and stat cache with and without
    the head start."""
    results = []
    for n, env in enumerate(({}, {"BUILDENV_NO_PREFETCH": "1"})):
        root = locked.parent / f"copy-{n}"
        shutil.copytree(locked, root, symlinks=True)
        write_parquet(root / "data" / "ratings.parquet", movies_table(7, 33))
        code, out, err = invoke_cli(["lock"], root, subprocess=True, env=env)
        assert code == 0, err
        cache = {k.replace(str(root.resolve()), "ROOT"): v[0:1] + v[5:]  # size, what it holds
                 for k, v in _stat_cache(root).items()}
        results.append((out, err, cache, {
            p.name: p.read_bytes() for p in (root / "environments").glob("*.lock.json")}))
    assert "updated" in results[0][0]
    assert results[0] == results[1]


def test_a_pass_is_taken_only_while_the_file_is_the_one_it_hashed(tmp_path, passes):
    class Base:
        data_base = tmp_path

    path = write_parquet(tmp_path / "a.parquet", movies_table(1, 10))
    location = locate("a.parquet", Base())  # type: ignore[arg-type]
    early_hash.begin(location.key)
    first = digests.digest_location(location, "parquet")
    assert not passes  # taken
    assert first == digests.compute_digest(location, "parquet", "sha256")

    early_hash.begin(location.key)
    passes[location.key].wait()
    write_parquet(path, movies_table(2, 30))  # changed after the pass
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    second = digests.digest_location(location, "parquet")
    assert second.rows == 30 and second == digests.compute_digest(location, "parquet", "sha256")

    early_hash.begin(location.key)  # a file that is not Parquet: the bytes alone
    assert digests.digest_location(location, digests.FILE) == digests.compute_digest(
        location, digests.FILE, "sha256")


def test_a_pass_over_a_file_that_changed_while_hashed_gives_nothing(tmp_path, monkeypatch):
    import hashlib
    import types

    path = write_parquet(tmp_path / "a.parquet", movies_table(1))

    class Touching:  # sha256 whose first update finds the file modified meanwhile
        def __init__(self) -> None:
            self.real = hashlib.sha256()

        def update(self, data: object) -> None:
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
            self.real.update(data)

        def hexdigest(self) -> str:
            return self.real.hexdigest()

    monkeypatch.setattr(early_hash, "hashlib", types.SimpleNamespace(sha256=Touching))
    started = early_hash.Pass()
    started._run(str(path))  # in this thread
    assert started.result is None
    monkeypatch.undo()
    started = early_hash.Pass()
    started._run(str(path))
    assert started.result is not None and started.result[2] == path.stat().st_size


def test_the_early_prefetch_does_not_hash_a_file_a_pass_is_hashing(tmp_path, passes):
    class Base:
        data_base = tmp_path

    write_parquet(tmp_path / "a.parquet", movies_table(1))
    location = locate("a.parquet", Base())  # type: ignore[arg-type]
    early_hash.begin(location.key)
    digests.prefetch(location, "parquet")
    assert (location.key, "sha256", "parquet") not in digests._PREFETCHED
    assert digests.digest_location(location, "parquet").rows == 20


def _plan(root: Path, edit) -> None:
    path = root / ".buildenv" / PLAN_FILE
    plan = json.loads(path.read_text())
    edit(plan)
    path.write_text(json.dumps(plan))


def _every_dataset(plan: dict, key: str, value: str) -> None:
    for entry in plan["envs"].values():
        for ds in entry["datasets"]:
            ds[key] = value


NOTHING = {  # case: (change, command line, environment, whether `early` prefetches from YAML)
    "the stat cache vouches for every file": (
        lambda r: invoke_cli(["lock"], r), ["lock"], {}, False),
    "CSV files (rows counted from the bytes)": (
        lambda r: _plan(r, lambda p: _every_dataset(p, "format", "csv")), ["lock"], {}, False),
    "object stores": (lambda r: _plan(r, lambda p: _every_dataset(
        p, "uri", "s3://bucket/movies.parquet")), ["lock"], {}, False),
    "BUILDENV_NO_PREFETCH": (lambda r: None, ["lock"], {"BUILDENV_NO_PREFETCH": "1"}, False),
    "another command": (lambda r: None, ["validate"], {}, False),
    "the lock's help": (lambda r: None, ["lock", "child", "--help"], {}, False),
    "another algorithm": (lambda r: None, ["lock", "--algorithm", "blake3"], {}, True),
    "another executor": (lambda r: None, ["lock", "--executor=ray"], {}, True),
    "no plan (a first lock)": (
        lambda r: (r / ".buildenv" / PLAN_FILE).unlink(), ["lock"], {}, True),
    "a damaged plan": (
        lambda r: (r / ".buildenv" / PLAN_FILE).write_text("{"), ["lock"], {}, True),
    "a plan of another algorithm": (
        lambda r: _plan(r, lambda p: p.update(algorithm="blake3")), ["lock"], {}, True),
    "an environment the plan does not hold": (lambda r: None, ["lock", "nope"], {}, True),
}


@pytest.mark.parametrize("case", list(NOTHING))
def test_nothing_is_hashed_ahead_when_nothing_needs_it_or_the_plan_cannot_say(
        locked, case, passes, monkeypatch):
    """... and when the plan cannot say which files the lock pins, `early` starts hashing
    those the environments' YAML names, as the full lock's start would, only sooner."""
    change, args, env, from_yaml = NOTHING[case]
    change(locked)
    monkeypatch.chdir(locked)
    for key in ("BUILDENV_ROOT", "BUILDENV_NO_PREFETCH"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    head_start.start(["buildenv", *args])
    assert not passes
    assert yaml_prefetch == ([args[1:]] if from_yaml else [])


_FIRST = """
import threading
from buildenv.cli import early, head_start
from buildenv.data.lock import digests
calls, prefetch = [], early._prefetch
early._prefetch = lambda args: (calls.append(args), prefetch(args))
head_start.start(["buildenv", "lock"])
assert early._prefetching == [True]  # started before the command's imports
assert "buildenv.cli.quick_lock" not in __import__("sys").modules
early.start(["buildenv", "lock"])  # the full lock's start: no second prefetch
for thread in threading.enumerate():
    if thread.name == "buildenv-early":
        thread.join()
print(len(calls), sorted(key[0] for key in digests._PREFETCHED))
"""


def test_a_first_lock_starts_hashing_from_the_yaml_at_once_and_once(locked):
    (locked / ".buildenv" / PLAN_FILE).unlink()
    proc = _child(locked, _FIRST)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1 " + repr(_data(locked, "movies.parquet",
                                                    "movies-v2.parquet", "ratings.parquet"))


def test_the_plan_is_found_in_the_configured_cache_dir(tmp_path, passes, monkeypatch):
    root = write_repo(tmp_path / "repo")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        'environments_dir = "environments"\n',
        'environments_dir = "environments"\ncache_dir = ".state"\n'))
    code, _, err = invoke_cli(["lock", "base"], root)
    assert code == 0, err
    assert (root / ".state" / PLAN_FILE).is_file()
    (root / ".state" / "statcache.json").unlink()
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    monkeypatch.chdir(root / "data")  # the root is found upwards, as the command finds it
    head_start.start(["buildenv", "lock", "base"])
    assert sorted(passes) == _data(root, "movies.parquet", "ratings.parquet")


def test_a_reporter_closed_while_another_thread_starts_its_first_task_does_not_fail(
        monkeypatch):
    """With no plan, `early`'s prefetch hashes (and reports a task) while the plan's path gives
    up and closes its reporter: `close` must never see a ticker thread not yet started."""
    import io
    import threading

    from buildenv.cli import progress_view
    from buildenv.core import progress

    starting = threading.Event()

    class Slow(threading.Thread):
        def start(self) -> None:
            if self.name == "buildenv-progress":
                starting.set()
                time.sleep(0.3)  # the reporter is closed meanwhile
            super().start()

    monkeypatch.setattr(progress_view.threading, "Thread", Slow)
    reporter = progress_view.Lines(io.StringIO(), after=0)
    with progress.installed(reporter):
        worker = threading.Thread(target=lambda: progress.task("hash x", 1, "bytes").__enter__())
        worker.start()
        assert starting.wait(5)
    worker.join()  # `installed` closed the reporter without raising


def test_a_pass_forks_while_the_process_has_one_thread_else_runs_in_a_thread(tmp_path, passes):
    """The first pass of `buildenv lock` hashes in a forked child (no GIL shared with the
    command's imports); with another thread running it hashes in a thread. Same answer."""
    import threading

    path = str(write_parquet(tmp_path / "a.parquet", movies_table(1)))
    code = ("import sys, threading\n"
            "from buildenv.data.lock import early_hash\n"
            "early_hash.begin(sys.argv[1])\n"
            "started = early_hash.take(sys.argv[1])\n"
            "started.wait()\n"
            "print(started.thread.name, started.result[1], started.result[2])\n")
    proc = _child(tmp_path, code.replace("sys.argv[1]", repr(path)))
    assert proc.returncode == 0, proc.stderr
    forked = proc.stdout.split()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        early_hash.begin(path)
        here = early_hash.take(path)
        assert here is not None
        here.wait()
    finally:
        stop.set()
        other.join()
    assert here.result is not None and here.thread is not None
    assert forked == ["buildenv-early-answer", here.result[1], str(here.result[2])]
    assert here.thread.name == "buildenv-early-hash"
    assert here.result[1] == digests.compute_digest(
        locate(f"file://{path}", None), "parquet", "sha256").digest  # type: ignore[arg-type]


def test_a_forked_pass_the_command_never_asked_for_ends_with_it(tmp_path):
    """A lock that fails before it asks for a digest exits at once: its exit handler kills the
    child still hashing (here: blocked opening a FIFO no one writes) and reaps it."""
    fifo = tmp_path / "never.parquet"
    os.mkfifo(fifo)
    code = ("import atexit, os\n"
            "from buildenv.data.lock import early_hash\n"
            f"early_hash.begin({str(fifo)!r})\n"
            "atexit._run_exitfuncs()\n"  # as `core.leave` does
            "os._exit(0)\n")
    proc = _child(tmp_path, code)  # a child left hashing would keep it from ending (timeout)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("step", ["start_from_recipe", "head_start"])
def test_an_interrupt_in_the_first_milliseconds_of_a_lock_is_interrupted_not_a_traceback(
        monkeypatch, capsys, step):
    """Ctrl-C or SIGTERM (turned into KeyboardInterrupt) may land while the recipe is checked
    or the plan's files are stat'ed: `main` says `interrupted` and exits 130, as later on."""
    import buildenv.cli as cli

    def interrupted(argv):
        raise KeyboardInterrupt

    target = early if step == "start_from_recipe" else head_start
    monkeypatch.setattr(target, "start_from_recipe" if step == "start_from_recipe" else "start",
                        interrupted)
    monkeypatch.setattr(sys, "argv", ["buildenv", "lock"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 130
    assert "interrupted" in capsys.readouterr().err
