"""`buildenv lock` of unchanged environments from the plan of the last lock (issue 25 start-up):
the same output, exit code and files as the full lock, without importing typer or pydantic;
and the full lock whenever anything it depends on changed."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    REPO_ROOT,
    invoke_cli,
    movies_table,
    ratings_table,
    write_parquet,
    write_repo,
)

from buildenv.cli import quick_lock
from buildenv.data.lock.quick import PLAN_FILE

# A child process running `buildenv ARGS` as the console script does, which reports on stderr
# whether the command imported typer or pydantic.
_PROBE = """
import sys
sys.argv = ["buildenv", *sys.argv[1:]]
from buildenv.cli import main
try:
    main()
finally:
    print("IMPORTED", "typer" in sys.modules, "pydantic" in sys.modules, file=sys.stderr)
"""


def _probe(root: Path, *args: str, quick: bool) -> tuple[int, str, str, bool, bool]:
    """Run `buildenv ARGS` through the probe: (exit code, stdout, stderr without the probe's
    line, whether typer was imported, whether pydantic was)."""
    env = {k: v for k, v in os.environ.items() if k not in ("BUILDENV_ROOT",
                                                           "BUILDENV_NO_QUICK_LOCK")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if not quick:
        env["BUILDENV_NO_QUICK_LOCK"] = "1"
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = proc.stderr.splitlines()
    probe = lines.pop()
    assert probe.startswith("IMPORTED"), proc.stderr
    _, typer, pydantic = probe.split()
    return proc.returncode, proc.stdout, "\n".join(lines), typer == "True", pydantic == "True"


def buildenv(root: Path, *args: str, quick: bool = True) -> tuple[int, str, str, bool]:
    """(exit code, stdout, stderr without the probe's line, whether pydantic was imported)."""
    code, out, err, _, pydantic = _probe(root, *args, quick=quick)
    return code, out, err, pydantic


def backdate(root: Path) -> None:
    """Data files older than the stat cache's racy window, so its entries are trusted."""
    past = time.time() - 60
    for path in (root / "data").glob("*.parquet"):
        os.utime(path, (past, past))


def files(root: Path) -> dict[str, bytes]:
    """Every file the lock writes or keeps, but the plan and the stat cache (compared apart)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.endswith((PLAN_FILE, "statcache.json")):
            out[f"{rel} {oct(path.stat().st_mode)}"] = path.read_bytes()
    return out


def statcache(root: Path) -> dict:
    """The stat cache's entries, without when each file was hashed (the sixth item of an
    entry: size, mtime, ctime, inode, device, hashed at, digest, digest size, rows)."""
    data = json.loads((root / ".buildenv" / "statcache.json").read_text())
    return {k: e[:5] + e[6:] for k, e in data["entries"].items()}


@pytest.fixture
def locked(tmp_path) -> Path:
    root = write_repo(tmp_path / "repo")
    backdate(root)
    code, out, err = invoke_cli(["lock"], root)  # the full lock: writes the plan
    assert code == 0, err
    assert (root / ".buildenv" / PLAN_FILE).is_file()
    return root


@pytest.mark.parametrize("args", [["lock"], ["lock", "child"], ["lock", "-q"],
                                  ["lock", "child", "base", "--algorithm", "sha256"],
                                  ["lock", "--no-progress", "--root", "."]])
def test_an_unchanged_relock_answers_as_the_full_lock_without_its_imports(locked, args):
    results = {}
    for quick in (False, True, False, True):  # the full lock and the quick one, alternating
        (locked / ".buildenv" / "statcache.json").unlink()  # a cold stat cache: every file hashed
        code, out, err, pydantic = buildenv(locked, *args, quick=quick)
        assert pydantic is not quick  # the quick path answered without pydantic (or typer)
        results.setdefault(quick, []).append((code, out, err, files(locked), statcache(locked)))
    assert results[True][0] == results[False][0] == results[True][1] == results[False][1]
    assert results[True][0][0] == 0 and "unchanged" in results[True][0][1]


def plan(root: Path) -> dict:
    return json.loads((root / ".buildenv" / PLAN_FILE).read_text())


def _rewrite_data(root: Path, name: str, table) -> None:
    write_parquet(root / "data" / name, table)
    backdate(root)


# What changed since the last lock, the environment files not: each the quick path answers,
# writing what the full lock writes.
WRITES = {
    "one environment's file": lambda r: _rewrite_data(r, "movies-v2.parquet", movies_table(7)),
    "a restricted file both environments pin": lambda r: _rewrite_data(
        r, "ratings.parquet", ratings_table(8)),
    "a lock file deleted": lambda r: (r / "environments" / "child.lock.json").unlink(),
    "a lock file edited": lambda r: _append(r / "environments" / "base.lock.json", " "),
    "a kept object lost": lambda r: _drop_objects(r),
    "a recent file (the stat cache cannot vouch for it)": lambda r: write_parquet(
        r / "data" / "movies.parquet", movies_table(9)),
}

UPDATED = {"one environment's file": {"child"}, "a restricted file both environments pin":
           {"base", "child"}, "a lock file deleted": {"child"}, "a lock file edited": {"base"},
           "a kept object lost": set(), "a recent file (the stat cache cannot vouch for it)":
           {"base"}}

# What the quick path cannot judge: it leaves the lock to the full command, having written
# nothing, and the full command's diagnostics and exit code are the user's answer.
HANDED_OVER = {  # the change, and the exit code and code the full lock reports
    "a pinned file removed": (lambda r: (r / "data" / "movies-v2.parquet").unlink(), 1, "BE053"),
    "a file that is not Parquet": (lambda r: (r / "data" / "movies.parquet").write_bytes(
        b"not parquet at all"), 1, "BE053"),
    "a file that is a directory": (lambda r: ((r / "data" / "ratings.parquet").unlink(),
                                              (r / "data" / "ratings.parquet").mkdir()),
                                   2, "BE066"),
    "a link out of the repository to the same bytes": (lambda r: _link_out(
        r / "data" / "ratings.parquet"), 2, "BE015"),
}


def _link_out(path: Path) -> None:
    outside = path.parents[2] / "outside" / path.name
    outside.parent.mkdir(exist_ok=True)
    shutil.copy2(path, outside)
    path.unlink()
    path.symlink_to(outside)


def _drop_objects(root: Path) -> None:
    objects = root / ".buildenv" / "objects"
    for path in objects.rglob("*"):
        if path.is_dir():
            os.chmod(path, 0o700)
    shutil.rmtree(objects)


def _alternate(locked: Path, change, args: list[str]) -> dict[bool, list[tuple]]:
    """Run `buildenv ARGS` after `change` from the same locked repository, alternating the full
    lock and the quick path; what each run printed, exited with and left behind."""
    pristine = locked.with_name("pristine")
    shutil.copytree(locked, pristine, symlinks=True)
    results: dict[bool, list[tuple]] = {}
    for quick in (False, True, False, True):
        _drop_objects(locked)
        shutil.rmtree(locked)
        shutil.copytree(pristine, locked, symlinks=True)
        change(locked)
        (locked / ".buildenv" / "statcache.json").unlink()
        code, out, err, pydantic = buildenv(locked, *args, quick=quick)
        # the stat cache without what each round's copy and change make anew (mtime, ctime,
        # inode, device)
        cache = ({k: e[:1] + e[5:] for k, e in statcache(locked).items()}
                 if (locked / ".buildenv" / "statcache.json").is_file() else None)
        results.setdefault(quick, []).append((code, out, err, files(locked), cache,
                                             plan(locked), pydantic))
    return results


@pytest.mark.parametrize("args", [["lock"], ["lock", "child"], ["lock", "-q"]])
@pytest.mark.parametrize("change", sorted(WRITES))
def test_a_relock_that_writes_answers_as_the_full_lock_without_its_imports(locked, change,
                                                                           args):
    results = _alternate(locked, WRITES[change], args)
    assert [r[-1] for r in results[True]] == [False, False]  # answered without pydantic
    assert [r[-1] for r in results[False]] == [True, True]
    same = [r[:-1] for r in results[True] + results[False]]
    assert all(r == same[0] for r in same), change  # output, exit code, files, plan
    code, out = same[0][0], same[0][1]
    expected = UPDATED[change] & ({"child"} if "child" in args else {"base", "child"})
    assert code == 0
    if "-q" in args:
        assert f"{len(expected)} updated" in out
    else:
        assert {line.split(":")[0] for line in out.splitlines() if "updated" in line} == expected
    # the plan the quick path recorded answers the next relock, unchanged
    code, out, _, pydantic = buildenv(locked, *args)
    assert code == 0 and not pydantic and "updated" not in out.replace(" 0 updated", "")


@pytest.mark.parametrize("change", sorted(HANDED_OVER))
def test_what_the_quick_path_cannot_judge_is_the_full_locks(locked, change):
    before = files(locked)
    change_it, exit_code, reported = HANDED_OVER[change]
    results = _alternate(locked, change_it, ["lock"])
    assert all(r[-1] for r in results[True] + results[False])  # the full lock answered
    # the same output, exit code and files; the stat cache may hold what the quick path
    # hashed before it found what it cannot judge (true of those files)
    same = [r[:4] + r[5:-1] for r in results[True] + results[False]]
    assert all(r == same[0] for r in same), change
    code, _, err = same[0][:3]
    assert code == exit_code and reported in err, err
    assert {k: v for k, v in same[0][3].items() if k.startswith("environments/")} == \
        {k: v for k, v in before.items() if k.startswith("environments/")}


def test_a_file_changed_while_hashed_or_not_kept_leaves_the_lock_to_the_full_command(
        locked, monkeypatch):
    """Nothing is written when a kept file cannot be kept: the full lock then says why."""
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    _rewrite_data(locked, "movies-v2.parquet", movies_table(7))
    lock = (locked / "environments" / "child.lock.json").read_bytes()
    from buildenv.data.lock import objects

    def refuse(*args, **kwargs):
        raise ValueError("changed while it was being kept")

    monkeypatch.setattr(objects.LocalObjects, "add_file", refuse)
    assert quick(locked) is None
    assert (locked / "environments" / "child.lock.json").read_bytes() == lock
    monkeypatch.undo()
    assert quick(locked) == 0
    assert (locked / "environments" / "child.lock.json").read_bytes() != lock


_BIG_ENV = """name: big
datasets:
  events:
    uri: data/events.csv
    format: csv
    columns:
      id: {dtype: int64}
      note: {dtype: string}
"""


_BLOCK = "".join(f'{i},"n{i % 977}, ok"\n' for i in range(100_000)).encode()  # 2.3 MB


def _events(root: Path, seed: int) -> None:
    """300,000 rows (~7 MB, the hash and count take a while), their first line by `seed`."""
    (root / "data" / "events.csv").write_bytes(
        f'id,note\n{seed},"seed"\n'.encode() + _BLOCK[_BLOCK.index(b"\n") + 1:] + _BLOCK * 2)
    backdate(root)


def _whole_objects(root: Path) -> None:
    """Every kept object hashes to its name (a killed copy never becomes one)."""
    import hashlib

    for path in (root / ".buildenv" / "objects").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            algorithm = path.parent.parent.name
            assert hashlib.new(algorithm, path.read_bytes()).hexdigest() == \
                path.parent.name + path.name


def test_concurrent_relocks_that_write_agree_with_the_full_lock(tmp_path):
    root = write_repo(tmp_path / "repo", envs={"big": _BIG_ENV})
    _events(root, 3)
    assert invoke_cli(["lock"], root)[0] == 0
    _events(root, 5)
    twin = tmp_path / "twin"
    shutil.copytree(root, twin, symlinks=True)
    code, _, err, pydantic = buildenv(twin, "lock", "big", quick=False)
    assert code == 0 and pydantic, err
    env = {k: v for k, v in os.environ.items() if k != "BUILDENV_ROOT"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    procs = [subprocess.Popen([sys.executable, "-m", "buildenv", "lock", "big"], cwd=root,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outs
    assert all(out.startswith(("big: updated", "big: unchanged")) for out, _ in outs)
    assert (root / "environments" / "big.lock.json").read_bytes() == \
        (twin / "environments" / "big.lock.json").read_bytes()
    _whole_objects(root)
    code, out, _, pydantic = buildenv(root, "lock", "big")
    assert code == 0 and not pydantic and out.startswith("big: unchanged")


def test_a_relock_that_writes_killed_at_any_point_leaves_a_whole_lock(tmp_path):
    import random
    import signal

    root = write_repo(tmp_path / "repo", envs={"big": _BIG_ENV})
    _events(root, 3)
    assert invoke_cli(["lock"], root)[0] == 0
    lock = root / "environments" / "big.lock.json"
    env = {k: v for k, v in os.environ.items() if k != "BUILDENV_ROOT"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    rng = random.Random(25)
    for seed in (5, 7, 11, 13):
        before = json.loads(lock.read_text())["datasets"]["events"]["digest"]
        _events(root, seed)
        proc = subprocess.Popen([sys.executable, "-m", "buildenv", "lock", "big"], cwd=root,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(0.02, 0.8))  # start-up, then the hash and count, then the writes
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pinned = json.loads(lock.read_text())["datasets"]["events"]["digest"]  # whole JSON
        code, out, err, _ = buildenv(root, "lock", "big")  # the next lock finishes the work
        assert code == 0, err
        after = json.loads(lock.read_text())["datasets"]["events"]["digest"]
        assert pinned in (before, after) and after != before
        _whole_objects(root)
        twin = tmp_path / f"twin{seed}"
        shutil.copytree(root, twin, symlinks=True)
        (twin / ".buildenv" / PLAN_FILE).unlink()
        assert buildenv(twin, "lock", "big", quick=False)[1] == "big: unchanged (1 dataset, " \
            "300,000 rows)\n"  # the full lock finds what the quick one wrote


def test_a_held_restricted_object_is_made_owner_only_again(locked):
    restricted = [p for p in (locked / ".buildenv" / "objects").rglob("*")
                  if p.is_file() and stat.S_IMODE(p.stat().st_mode) == 0o400]
    assert restricted  # `ratings` is restricted
    for path in restricted:
        os.chmod(path, 0o444)
    code, _, _, pydantic = buildenv(locked, "lock", "base")
    assert code == 0 and not pydantic
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o400 for p in restricted)


def quick(root: Path, *args: str) -> int | None:
    """The quick path in process: its exit code, or None when it leaves the lock to the full
    command."""
    return quick_lock.run(["lock", "--root", str(root), *args])


EDITS = {
    "the parent reached through extends": lambda r: _replace(
        r / "environments" / "base.yaml", "range: [1, 600]", "range: [1, 700]"),
    "the environment itself": lambda r: _append(r / "environments" / "child.yaml",
                                                "    format: parquet\n"),
    "another environment": lambda r: (r / "environments" / "other.yaml").write_text(
        "name: other\nextends: base\n"),
    "pyproject.toml": lambda r: _append(r / "pyproject.toml", "\n"),
    "keys reordered": lambda r: _replace(r / "environments" / "child.yaml",
                                         "name: child\nextends: base\n",
                                         "extends: base\nname: child\n"),
    "a description that is not text": lambda r: _append(r / "environments" / "child.yaml",
                                                         "description: 5\n"),
    "a duplicate key": lambda r: _append(r / "environments" / "child.yaml",
                                         "description: one\ndescription: two\n"),
    "a value of another kind": lambda r: _append(r / "environments" / "child.yaml",
                                                 "description: !!binary aGk=\n"),
}

INVALID = {"a description that is not text", "a duplicate key"}

# Edits after which each environment file says what it said (`env.meaning`): the plan still
# answers, as the full lock would.
COSMETIC = {
    "a comment in the parent": lambda r: _append(r / "environments" / "base.yaml",
                                                 "# a comment\n"),
    "layout and quoting": lambda r: _replace(r / "environments" / "child.yaml",
                                             "uri: data/movies-v2.parquet",
                                             "uri: 'data/movies-v2.parquet'   # v2"),
    "descriptions": lambda r: (
        _replace(r / "environments" / "base.yaml", "The root environment", "The base"),
        _replace(r / "environments" / "base.yaml", "movie_id: {dtype: int64, nullable: false}",
                 "movie_id: {dtype: int64, nullable: false, description: the id}"),
        _append(r / "environments" / "child.yaml", "    description: the second cut\n"),
        _append(r / "environments" / "child.yaml", "description: ~\n")),
}


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_any_edit_to_an_input_voids_the_plan(locked, edit, monkeypatch):
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    assert quick(locked, "child") == 0
    EDITS[edit](locked)
    assert quick(locked, "child") is None
    code, out, err = invoke_cli(["lock", "child"], locked)  # the full lock records anew
    if edit in INVALID:  # the full lock refuses it (and records no plan)
        assert code == 2 and "child.yaml" in err, (out, err)
        assert quick(locked, "child") is None
        return
    assert code == 0, err
    assert quick(locked, "child") == 0


@pytest.mark.parametrize("args", [["lock"], ["lock", "child"], ["lock", "-q"]])
@pytest.mark.parametrize("edit", sorted(COSMETIC))
def test_an_edit_that_says_the_same_is_answered_as_the_full_lock(locked, edit, args):
    results = _alternate(locked, COSMETIC[edit], args)
    assert [r[-1] for r in results[True]] == [False, False]  # answered without pydantic
    assert [r[-1] for r in results[False]] == [True, True]
    same = [r[:-1] for r in results[True] + results[False]]
    assert all(r == same[0] for r in same), edit  # output, exit code, files, plan
    assert same[0][0] == 0 and "updated" not in same[0][1].replace(" 0 updated", "")
    # the plan recorded after it answers the next relock from the bytes alone
    code, out, _, pydantic = buildenv(locked, *args)
    assert code == 0 and not pydantic


def test_a_renamed_parent_is_an_edit_the_full_lock_reports(locked, monkeypatch):
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    os.replace(locked / "environments" / "base.yaml", locked / "environments" / "root.yaml")
    assert quick(locked, "child") is None
    code, _, err = invoke_cli(["lock", "child"], locked)
    assert code == 2 and "base" in err


def test_a_lock_file_that_is_not_text_falls_back(locked, monkeypatch):
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    assert quick(locked) == 0
    write_parquet(locked / "data" / "movies-v2.parquet", movies_table(7))
    assert quick(locked, "child") == 0  # changed data is answered (the tests above)
    assert quick(locked, "child") == 0

    lock = locked / "environments" / "base.lock.json"
    lock.write_bytes(b"\xff not text")
    assert quick(locked, "base") is None  # the full lock fails on it as it does


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--check"], ["--executor", "local"],
                                  ["--format", "json"], ["--algorithm", "md5"], ["nope"],
                                  ["--bogus"]])
def test_other_command_lines_are_the_full_commands(locked, args, monkeypatch):
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    assert quick(locked) == 0
    assert quick(locked, *args) is None


def test_a_plan_of_another_algorithm_or_version_is_void(locked, monkeypatch):
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    assert quick(locked, "--algorithm", "blake3") is None
    path = locked / ".buildenv" / PLAN_FILE
    plan = json.loads(path.read_text())
    path.write_text(json.dumps({**plan, "buildenv": "0.0.0"}))
    assert quick(locked) is None
    path.write_text("{not json")
    assert quick(locked) is None


def test_a_plan_made_by_other_code_of_the_same_version_is_void(locked, monkeypatch):
    """An editable install changes without a new version: a plan recorded before one of
    buildenv's modules changed is void (the module's mtime stands for an edit)."""
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    assert quick(locked) == 0
    module = Path(quick_lock.__file__)
    before = module.stat()
    try:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        assert quick(locked) is None
    finally:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert quick(locked) == 0


def test_a_prefetch_is_handed_out_only_once_its_thread_started(tmp_path, monkeypatch):
    """The quick path asks for a digest as soon as the early prefetch started it: a thread
    handed out before its start cannot be joined (that made one quick relock in four fall back
    to the full lock)."""
    import threading

    from buildenv.data.lock import digests
    from buildenv.data.storage import locate

    path = tmp_path / "t.parquet"
    write_parquet(path, movies_table(1))

    class Base:
        data_base = tmp_path

    location = locate("t.parquet", Base())  # type: ignore[arg-type]
    key = (location.key, "sha256", "parquet")
    handed_out_before_start = []

    class Watched(threading.Thread):
        def start(self) -> None:
            if self.name == "buildenv-prefetch":
                handed_out_before_start.append(key in digests._PREFETCHED)
            super().start()

    monkeypatch.setattr(digests.threading, "Thread", Watched)
    digests.prefetch(location, "parquet")
    assert handed_out_before_start == [False]
    assert digests.digest_location(location, "parquet").rows == 20


def _typer_imported(root: Path, *args: str, quick: bool = True) -> tuple[int, str, str, bool]:
    """As `buildenv`, but whether typer was imported."""
    code, out, err, typer, _ = _probe(root, *args, quick=quick)
    return code, out, err, typer


FULL = {  # what the plan cannot answer: the full lock runs, typer-free on a plain command line
    "an environment edited": lambda r: _replace(r / "environments" / "base.yaml",
                                                "range: [1, 600]", "range: [1, 700]"),
    "no plan (a first lock)": lambda r: (r / ".buildenv" / PLAN_FILE).unlink(),
    "an invalid value": lambda r: _append(r / "environments" / "child.yaml", "description: 5\n"),
    "invalid YAML": lambda r: _append(r / "environments" / "child.yaml", "datasets: [\n"),
    "a pinned file removed": HANDED_OVER["a pinned file removed"][0],
}


@pytest.mark.parametrize("args", [["lock"], ["lock", "child"], ["lock", "-q", "--no-progress"],
                                  ["lock", "nope"], ["lock", "--root", ".", "child", "base"]])
@pytest.mark.parametrize("change", sorted(FULL))
def test_a_plain_lock_the_plan_cannot_answer_is_typers_command_without_typer(locked, change,
                                                                             args):
    pristine = locked.with_name("pristine")
    shutil.copytree(locked, pristine, symlinks=True)
    results: dict[bool, list[tuple]] = {}
    for plain in (False, True, False, True):
        _drop_objects(locked)
        shutil.rmtree(locked)
        shutil.copytree(pristine, locked, symlinks=True)
        FULL[change](locked)
        code, out, err, typer = _typer_imported(locked, *args, quick=plain)
        assert typer is not plain  # the plain command line ran without typer
        plan_now = plan(locked) if (locked / ".buildenv" / PLAN_FILE).is_file() else None
        results.setdefault(plain, []).append((code, out, err, files(locked), plan_now))
    same = results[True] + results[False]
    assert all(r == same[0] for r in same), change  # exit code, output, files, plan
    if "nope" in args:
        assert same[0][0] == 2 and "BE014" in same[0][2]


# An environment the plan answers for after an edit of what it says (`env.quick_validate`:
# no `extends`, no label, serving, privacy or evaluation sections, single local files), and a
# child of it.
PLAIN_YAML = """\
name: plain
description: One file, what the plan answers for when it says something else.
datasets:
  movies:
    uri: data/movies.parquet
    columns:
      movie_id: {dtype: int64, nullable: false}
      runtime_minutes: {dtype: float64, range: [1, 600]}
"""

PLAIN_CHILD_YAML = """\
name: plainchild
extends: plain
datasets:
  movies:
    uri: data/movies-v2.parquet
"""

_PLAIN = "environments/plain.yaml"

# Edits that change what `plain` says, each answered by the plan as the full lock would.
MEANINGS = {
    "a range": lambda r: _replace(r / _PLAIN, "range: [1, 600]", "range: [0, 900]"),
    "a fraction and a domain": lambda r: _replace(
        r / _PLAIN, "{dtype: int64, nullable: false}",
        "{dtype: int64, max_null_fraction: 1, domain: [1, 2, 3]}"),
    "a column added": lambda r: _append(r / _PLAIN, "      score: {dtype: float32, "
                                                    "unique: true}\n"),
    "another file": lambda r: _replace(r / _PLAIN, "data/movies.parquet", "data/ratings.parquet"),
    "a dataset added, not kept": lambda r: _append(
        r / _PLAIN, "  ratings:\n    uri: data/ratings.parquet\n    keep: false\n"
                    "    columns:\n      liked: {dtype: bool}\n"),
}

# Edits after which `plain` is invalid: the full lock's diagnostic, exit code 2, no lock.
BROKEN = {
    "an empty range": lambda r: _replace(r / _PLAIN, "range: [1, 600]", "range: [600, 1]"),
    "text for a number": lambda r: _replace(r / _PLAIN, "range: [1, 600]", "range: ['1', 600]"),
    "a count of none": lambda r: _append(r / _PLAIN, "      n: {dtype: int64, min_count: 0}\n"),
    "a domain value twice": lambda r: _append(r / _PLAIN, "      g: {dtype: string, domain: "
                                                          "[a, a]}\n"),
    "an unknown key": lambda r: _append(r / _PLAIN, "      n: {dtype: int64, nullabel: true}\n"),
}


@pytest.fixture
def plain(tmp_path) -> Path:
    root = write_repo(tmp_path / "repo", {"plain": PLAIN_YAML, "plainchild": PLAIN_CHILD_YAML})
    backdate(root)
    code, out, err = invoke_cli(["lock"], root)  # the full lock: writes the plan
    assert code == 0, err
    return root


@pytest.mark.parametrize("args", [["lock", "plain"], ["lock", "plain", "-q"],
                                  ["lock", "base", "plain"]])
@pytest.mark.parametrize("edit", sorted(MEANINGS))
def test_an_edit_that_says_something_else_is_answered_as_the_full_lock(plain, edit, args):
    results = _alternate(plain, MEANINGS[edit], args)
    assert [r[-1] for r in results[True]] == [False, False]  # answered without pydantic
    assert [r[-1] for r in results[False]] == [True, True]
    same = [r[:-1] for r in results[True] + results[False]]
    assert all(r == same[0] for r in same), edit  # output, exit code, files, plan
    assert same[0][0] == 0 and ("plain: updated" in same[0][1] or "1 updated" in same[0][1])
    # the plan recorded after it answers the next relock from the bytes alone
    code, out, _, pydantic = buildenv(plain, *args)
    assert code == 0 and not pydantic and "updated" not in out.replace(" 0 updated", "")


@pytest.mark.parametrize("edit", sorted(BROKEN))
def test_an_edit_that_breaks_the_environment_is_the_full_locks_diagnostic(plain, edit):
    before = (plain / "environments" / "plain.lock.json").read_bytes()
    results = _alternate(plain, BROKEN[edit], ["lock", "plain"])
    assert all(r[-1] for r in results[True] + results[False])  # the full lock answered
    same = [r[:4] + r[5:-1] for r in results[True] + results[False]]
    assert all(r == same[0] for r in same), edit
    code, _, err = same[0][:3]
    assert code == 2 and "plain.yaml" in err, err
    assert (plain / "environments" / "plain.lock.json").read_bytes() == before


def test_a_child_of_an_edited_environment_is_the_full_locks(plain, monkeypatch):
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    MEANINGS["a range"](plain)
    assert quick(plain, "plainchild") is None  # its plan entry says what the parent said
    assert quick(plain) is None
    assert quick(plain, "plain") == 0
    assert quick(plain, "plainchild") is None  # the plan recorded holds `plain` alone
    code, out, err = invoke_cli(["lock", "plainchild"], plain)
    assert code == 0 and "plainchild: updated" in out, err
