"""`buildenv lock` of unchanged environments from the plan of the last lock (issue 25 start-up):
the same output, exit code and files as the full lock, without importing typer or pydantic;
and the full lock whenever anything it depends on changed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli, movies_table, write_parquet, write_repo

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


def buildenv(root: Path, *args: str, quick: bool = True) -> tuple[int, str, str, bool]:
    """(exit code, stdout, stderr without the probe's line, whether pydantic was imported)."""
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
    return proc.returncode, proc.stdout, "\n".join(lines), probe.split()[2] == "True"


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
    "the parent reached through extends": lambda r: _append(r / "environments" / "base.yaml",
                                                            "# a comment is an edit\n"),
    "the environment itself": lambda r: _append(r / "environments" / "child.yaml", "\n"),
    "another environment": lambda r: (r / "environments" / "other.yaml").write_text(
        "name: other\nextends: base\n"),
    "pyproject.toml": lambda r: _append(r / "pyproject.toml", "\n"),
}


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_any_edit_to_an_input_voids_the_plan(locked, edit, monkeypatch):
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    assert quick(locked, "child") == 0
    EDITS[edit](locked)
    assert quick(locked, "child") is None
    code, out, err = invoke_cli(["lock", "child"], locked)  # the full lock records anew
    assert code == 0, err
    assert quick(locked, "child") == 0


def test_a_renamed_parent_is_an_edit_the_full_lock_reports(locked, monkeypatch):
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    os.replace(locked / "environments" / "base.yaml", locked / "environments" / "root.yaml")
    assert quick(locked, "child") is None
    code, _, err = invoke_cli(["lock", "child"], locked)
    assert code == 2 and "base" in err


def test_changed_data_a_lost_object_or_another_lock_file_fall_back(locked, monkeypatch):
    monkeypatch.delenv("BUILDENV_ROOT", raising=False)
    assert quick(locked) == 0
    write_parquet(locked / "data" / "movies-v2.parquet", movies_table(7))
    assert quick(locked, "child") is None
    code, out, err = invoke_cli(["lock", "child"], locked)
    assert code == 0 and "child: updated" in out, err
    assert quick(locked, "child") == 0

    objects = [p for p in (locked / ".buildenv" / "objects").rglob("*") if p.is_file()]
    os.chmod(objects[0].parent, 0o700)
    objects[0].unlink()
    assert quick(locked) is None  # the full lock keeps the bytes again
    assert invoke_cli(["lock"], locked)[0] == 0
    assert quick(locked) == 0

    lock = locked / "environments" / "base.lock.json"
    lock.write_text(lock.read_text().replace('"base"', '"base" '))
    assert quick(locked, "base") is None


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
