"""Locks (SPEC §3): digests that match `sha256sum`, row counts, the file format, atomic writes,
the stat cache, and every way a lock can be missing, stale, changed or unreadable."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CHILD_YAML, invoke_cli, movies_table, write_parquet, write_repo

from buildenv.core import atomic as fsutil
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project
from buildenv.data.lock import digests as content
from buildenv.data.lock.lockfile import read_lock
from buildenv.env.resolve import Multiverse
from buildenv.labels.locking import lock_environments


def sha256_of(path: Path) -> str:
    if shutil.which("sha256sum"):
        out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True,
                             check=True).stdout
        return out.split()[0]
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_json(root: Path, name: str) -> dict:
    return json.loads((root / "environments" / f"{name}.lock.json").read_text())


def age(*paths: Path, seconds: int = 60) -> None:
    """Backdate mtimes so the stat cache may trust them (it distrusts just-written files)."""
    past = time.time() - seconds
    for path in paths:
        os.utime(path, (past, past))


@pytest.fixture
def locked(tmp_path) -> Path:
    return write_repo(tmp_path, lock=True)


# --- what a lock holds -------------------------------------------------------------------------

def test_lock_command_output_and_files(repo):
    code, out, err = invoke_cli(["lock"], repo)
    assert (code, err) == (0, "")
    assert out.splitlines() == ["base: updated (2 datasets, 80 rows)",
                                "child: updated (2 datasets, 80 rows)"]
    code, out, _ = invoke_cli(["lock"], repo)
    assert out.splitlines() == ["base: unchanged (2 datasets, 80 rows)",
                                "child: unchanged (2 datasets, 80 rows)"]
    assert sorted(p.name for p in (repo / "environments").iterdir()) == [
        "base.lock.json", "base.yaml", "child.lock.json", "child.yaml"]


def test_digest_equals_sha256sum_and_rows_and_size(locked):
    lock = lock_json(locked, "child")
    movies = locked / "data" / "movies-v2.parquet"
    ratings = locked / "data" / "ratings.parquet"
    assert lock["datasets"]["movies"]["digest"] == "sha256:" + sha256_of(movies)
    assert lock["datasets"]["ratings"]["digest"] == "sha256:" + sha256_of(ratings)
    assert lock["datasets"]["movies"]["size"] == movies.stat().st_size
    assert lock["datasets"]["movies"]["rows"] == 20
    assert lock["datasets"]["ratings"]["rows"] == 60


def test_lock_file_format(locked):
    path = locked / "environments" / "child.lock.json"
    text = path.read_text()
    lock = json.loads(text)
    assert set(lock) == {"lock_version", "environment", "environment_digest", "datasets"}
    assert lock["lock_version"] == 1
    assert lock["environment"] == "child"
    assert lock["environment_digest"] == Multiverse(Project.discover(locked)).resolve(
        "child").digest
    assert list(lock["datasets"]) == ["movies", "ratings"]
    assert lock["datasets"]["movies"] == {
        "uri": "data/movies-v2.parquet", "format": "parquet",
        "digest": "sha256:" + sha256_of(locked / "data" / "movies-v2.parquet"),
        "size": (locked / "data" / "movies-v2.parquet").stat().st_size, "rows": 20}
    # canonical: sorted keys, two-space indent, trailing newline (diff-friendly, reproducible)
    assert text == json.dumps(lock, indent=2, sort_keys=True) + "\n"


def test_golden_data_digests(locked):
    """The seeded test data is byte-identical on every run (the fixture is reproducible)."""
    again = write_repo(locked.parent / "again", lock=True)
    assert lock_json(again, "base")["datasets"] == lock_json(locked, "base")["datasets"]
    assert lock_json(again, "base")["environment_digest"] == \
        lock_json(locked, "base")["environment_digest"]


def test_blake3_algorithm(repo):
    import blake3

    code, _, err = invoke_cli(["lock", "base", "--algorithm", "blake3"], repo)
    assert (code, err) == (0, "")
    data = (repo / "data" / "movies.parquet").read_bytes()
    assert lock_json(repo, "base")["datasets"]["movies"]["digest"] == \
        "blake3:" + blake3.blake3(data).hexdigest()
    code, out, err = invoke_cli(["lock", "--check", "base"], repo)
    assert (code, out, err) == (0, "1 lock(s) up to date\n", "")


def test_unknown_algorithm(repo):
    code, out, err = invoke_cli(["lock", "--algorithm", "md5"], repo)
    assert code == 2
    assert err.splitlines() == ["buildenv: error[BE004]: unknown digest algorithm 'md5'",
                                "  hint: use sha256 or blake3"]


def test_lock_only_named_environments(repo):
    code, out, _ = invoke_cli(["lock", "child"], repo)
    assert code == 0 and out == "child: updated (2 datasets, 80 rows)\n"
    assert not (repo / "environments" / "base.lock.json").exists()
    code, _, err = invoke_cli(["lock", "nope"], repo)
    assert code == 2 and "error[BE014]: unknown environment 'nope'" in err


# --- CSV ------------------------------------------------------------------------------------------

CSV_ENV = """\
name: csvenv
datasets:
  notes:
    uri: data/notes.csv
    format: csv
    columns:
      id: {dtype: int64}
      text: {dtype: string}
"""


@pytest.mark.parametrize("body, rows", [
    ('id,text\n1,"first line\nsecond line"\n2,plain\n3,"with ""quotes"", and comma"\n', 3),
    ("id,text\n1,a\n2,b", 2),                      # no trailing newline
    ("id,text\r\n1,a\r\n2,\"x\r\ny\"\r\n", 2),    # CRLF, quoted CRLF
    ("id,text\n", 0),
    ('\ufeff"id\nnumber",text\n1,"a\nb"\n2,c', 2),  # a BOM is not data: the header is quoted
])
def test_csv_rows_and_digest(tmp_path, body, rows):
    root = write_repo(tmp_path, envs={"csvenv": CSV_ENV}, files={"data/notes.csv": body})
    code, out, err = invoke_cli(["lock", "csvenv"], root)
    assert (code, err) == (0, ""), err
    locked = lock_json(root, "csvenv")["datasets"]["notes"]
    assert locked["rows"] == rows
    assert locked["format"] == "csv"
    assert locked["size"] == len(body.encode())
    assert locked["digest"] == "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def test_csv_larger_than_one_parser_block(tmp_path, monkeypatch):
    monkeypatch.setattr(content, "CHUNK", 1024)  # many blocks, and quoted newlines across them
    lines = ["id,text"] + [f'{i},"row {i}\nsecond line {i}"' for i in range(500)]
    body = "\n".join(lines) + "\n"
    root = write_repo(tmp_path, envs={"csvenv": CSV_ENV}, files={"data/notes.csv": body})
    results, problems = lock_environments(Multiverse(Project.discover(root)), ["csvenv"])
    assert problems == []
    ((_, lock, _),) = results
    assert lock.datasets["notes"].rows == 500
    assert lock.datasets["notes"].digest == "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def test_unreadable_dataset_is_be053(tmp_path):
    root = write_repo(tmp_path, files={"data/movies.parquet": b"not parquet at all"})
    (root / "data" / "movies-v2.parquet").unlink()
    code, out, err = invoke_cli(["lock"], root)
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith("environments/base.yaml:6:5: error[BE053]: dataset 'movies': "
                               "cannot read 'data/movies.parquet': ")
    assert lines[1] == ("environments/child.yaml:5:5: error[BE053]: dataset 'movies': cannot "
                        "read 'data/movies-v2.parquet': file not found")
    assert not list((root / "environments").glob("*.lock.json"))


# --- atomic writes -------------------------------------------------------------------------------

def test_no_temp_files_left(locked):
    write_parquet(locked / "data" / "movies.parquet", movies_table(7))
    assert invoke_cli(["lock"], locked)[0] == 0
    leftovers = [p.name for p in (locked / "environments").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert not [p for p in (locked / ".buildenv").iterdir() if p.name.endswith(".tmp")]


def test_failure_mid_write_keeps_the_old_lock(locked, monkeypatch):
    path = locked / "environments" / "base.lock.json"
    before = path.read_bytes()
    write_parquet(locked / "data" / "movies.parquet", movies_table(7))  # the lock must change
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, handle):
            self._handle = handle

        def write(self, data):
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()
            return False

    monkeypatch.setattr(fsutil.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left on device"):
        lock_environments(Multiverse(Project.discover(locked)), ["base"])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in (locked / "environments").iterdir()) == [
        "base.lock.json", "base.yaml", "child.lock.json", "child.yaml"]
    # and the next run succeeds
    code, out, _ = invoke_cli(["lock", "base"], locked)
    assert (code, out) == (0, "base: updated (2 datasets, 80 rows)\n")
    assert path.read_bytes() != before


# --- the stat cache -------------------------------------------------------------------------------


def test_second_check_costs_no_rehash(repo, hash_calls):
    age(*(repo / "data").iterdir())
    assert invoke_cli(["lock"], repo)[0] == 0
    assert sorted(hash_calls) == ["data/movies-v2.parquet", "data/movies.parquet",
                                  "data/ratings.parquet"]  # each distinct file once
    hash_calls.clear()
    code, out, err = invoke_cli(["lock", "--check"], repo)
    assert (code, out, err) == (0, "2 lock(s) up to date\n", "")
    assert hash_calls == []
    assert invoke_cli(["envs"], repo)[0] == 0
    assert hash_calls == []


def test_just_written_files_are_not_trusted(repo, hash_calls):
    """git's racy rule: a file modified within a second of being hashed is hashed again."""
    assert invoke_cli(["lock", "base"], repo)[0] == 0
    hash_calls.clear()
    assert invoke_cli(["lock", "--check", "base"], repo)[0] == 0
    assert sorted(hash_calls) == ["data/movies.parquet", "data/ratings.parquet"]


def _rewrite_same_size_same_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle: same size
    time.sleep(0.05)  # past the kernel's coarse timestamp tick, so ctime moves
    with open(path, "r+b") as handle:  # in place: same inode
        handle.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns,
                                                                st.st_ino)


def test_same_size_same_mtime_change_is_detected_by_ctime(repo, hash_calls):
    movies = repo / "data" / "movies.parquet"
    age(*(repo / "data").iterdir())
    assert invoke_cli(["lock", "base"], repo)[0] == 0
    old = lock_json(repo, "base")["datasets"]["movies"]["digest"]
    _rewrite_same_size_same_mtime(movies)
    hash_calls.clear()
    code, out, err = invoke_cli(["lock", "--check", "base"], repo)
    assert code == 1
    assert hash_calls == ["data/movies.parquet"]  # ratings still trusted from the cache
    new = "sha256:" + sha256_of(movies)
    assert err.splitlines()[0] == (
        f"environments/base.yaml:6:5: error[BE051]: dataset 'movies' changed since it was "
        f"locked: {old} -> {new} (data/movies.parquet)")


def test_replaced_file_is_detected_by_inode(repo, hash_calls):
    movies = repo / "data" / "movies.parquet"
    age(*(repo / "data").iterdir())
    assert invoke_cli(["lock", "base"], repo)[0] == 0
    st = movies.stat()
    data = bytearray(movies.read_bytes())
    data[100] ^= 0x01
    tmp = movies.with_name("new.parquet")
    tmp.write_bytes(bytes(data))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, movies)
    assert (movies.stat().st_size, movies.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    hash_calls.clear()
    code, _, err = invoke_cli(["lock", "--check", "base"], repo)
    assert code == 1 and "error[BE051]: dataset 'movies' changed" in err
    assert hash_calls == ["data/movies.parquet"]


def test_corrupt_stat_cache_is_a_silent_miss(repo, hash_calls):
    age(*(repo / "data").iterdir())
    assert invoke_cli(["lock", "base"], repo)[0] == 0
    (repo / ".buildenv" / "statcache.json").write_text("{corrupt")
    hash_calls.clear()
    code, out, err = invoke_cli(["lock", "--check", "base"], repo)
    assert (code, err) == (0, "")
    assert len(hash_calls) == 2


# --- stale, changed, missing, invalid -------------------------------------------------------------

def test_uri_changed_is_stale_be052(locked):
    (locked / "environments" / "child.yaml").write_text(
        CHILD_YAML.replace("movies-v2", "movies-v3"))
    code, out, err = invoke_cli(["lock", "--check", "child"], locked)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "environments/child.yaml:5:5: error[BE052]: dataset 'movies' uri changed: lock has "
        "'data/movies-v2.parquet', environment has 'data/movies-v3.parquet'",
        "  hint: run `buildenv lock child`",
    ]


def test_dataset_added_or_removed_is_stale_be052(locked):
    (locked / "environments" / "child.yaml").write_text(
        CHILD_YAML + "  extra:\n    uri: data/ratings.parquet\n    columns:\n"
        "      liked: {dtype: bool}\n")
    code, _, err = invoke_cli(["lock", "--check", "child"], locked)
    assert code == 1
    assert err.splitlines() == [
        "environments/child.yaml:7:5: error[BE052]: dataset 'extra' is not in the lock",
        "  hint: run `buildenv lock child`",
    ]
    (locked / "environments" / "child.yaml").write_text(
        CHILD_YAML + "  ratings: null\nlabel: null\nprivacy: {restricted: []}\n")
    code, _, err = invoke_cli(["lock", "--check", "child"], locked)
    assert code == 1
    assert err.splitlines() == [
        "environments/child.lock.json: error[BE052]: lock pins dataset 'ratings', which "
        "environment 'child' no longer declares",
        "  hint: run `buildenv lock child`",
    ]


def test_changed_data_is_be051_with_digests_and_command(locked):
    old = lock_json(locked, "base")["datasets"]["movies"]["digest"]
    write_parquet(locked / "data" / "movies.parquet", movies_table(9))
    new = "sha256:" + sha256_of(locked / "data" / "movies.parquet")
    code, out, err = invoke_cli(["lock", "--check"], locked)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"environments/base.yaml:6:5: error[BE051]: dataset 'movies' changed since it was "
        f"locked: {old} -> {new} (data/movies.parquet)",
        "  hint: if the new data is intended, review `buildenv drift base --dataset movies "
        "--against data/movies.parquet` and run `buildenv lock base`",
        "  hint: if not, `buildenv checkout base` restores the locked bytes from the object "
        "store",
    ]
    assert old != new


def test_missing_data_file_is_be053(locked):
    (locked / "data" / "movies-v2.parquet").unlink()
    code, _, err = invoke_cli(["lock", "--check", "child"], locked)
    assert code == 1
    assert err.splitlines() == [
        "environments/child.yaml:5:5: error[BE053]: dataset 'movies': 'data/movies-v2.parquet' "
        "not found",
    ]


def test_missing_lock_is_be050(repo):
    code, out, err = invoke_cli(["lock", "--check", "child"], repo)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "environments/child.yaml:1:1: error[BE050]: environment 'child' has no lock "
        "(environments/child.lock.json)",
        "  hint: run `buildenv lock child`",
    ]


@pytest.mark.parametrize("text, message", [
    ("{not json", "invalid lock file: Expecting property name enclosed in double quotes: "
                  "line 1 column 2 (char 1)"),
    ("[]", "invalid lock file: 'list' object has no attribute 'get'"),
    ('{"datasets": {}}', "invalid lock file: no lock_version"),
    ('{"lock_version": 1}', "invalid lock file: missing key 'environment'"),
    ('{"lock_version": 1, "environment": "child", "environment_digest": "x", '
     '"datasets": {"movies": {"uri": "u"}}}', "invalid lock file: missing key 'format'"),
])
def test_invalid_lock_is_be054(locked, text, message):
    (locked / "environments" / "child.lock.json").write_text(text)
    code, out, err = invoke_cli(["lock", "--check", "child"], locked)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"environments/child.lock.json: error[BE054]: {message}",
        "  hint: delete it and run `buildenv lock child`",
    ]


def test_newer_lock_version_is_be013(locked):
    path = locked / "environments" / "child.lock.json"
    data = json.loads(path.read_text())
    data["lock_version"] = 99
    path.write_text(json.dumps(data))
    code, out, err = invoke_cli(["lock", "--check", "child"], locked)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "environments/child.lock.json: error[BE013]: lock_version 99 is newer than this "
        "buildenv supports (4)",
        "  hint: upgrade buildenv",
    ]


def test_older_lock_version_without_upgrade_is_be013(locked):
    path = locked / "environments" / "child.lock.json"
    data = json.loads(path.read_text())
    data["lock_version"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(DiagnosticError) as info:
        read_lock(Project.discover(locked), "child")
    assert [d.code for d in info.value.diagnostics] == ["BE013"]


def test_check_reports_every_environment_at_once(locked):
    (locked / "environments" / "child.lock.json").write_text("{")
    write_parquet(locked / "data" / "movies.parquet", movies_table(9))
    code, _, err = invoke_cli(["lock", "--check"], locked)
    assert code == 2
    codes = [line.split("error[")[1][:5] for line in err.splitlines() if "error[" in line]
    assert codes == ["BE051", "BE054"]


def test_relock_fixes_everything(locked):
    write_parquet(locked / "data" / "movies.parquet", movies_table(9))
    (locked / "environments" / "child.lock.json").write_text("{")
    code, out, _ = invoke_cli(["lock"], locked)
    assert code == 0
    assert out.splitlines() == ["base: updated (2 datasets, 80 rows)",
                                "child: updated (2 datasets, 80 rows)"]
    assert invoke_cli(["lock", "--check"], locked)[0] == 0


def test_csv_with_quoted_newlines_validates(tmp_path):
    body = 'id,text\n1,"first line\nsecond line"\n2,plain\n'
    root = write_repo(tmp_path, envs={"csvenv": CSV_ENV}, files={"data/notes.csv": body})
    assert invoke_cli(["validate", "csvenv"], root) == (0, "csvenv: 1 dataset(s) valid\n", "")


def test_a_version_1_stat_cache_still_vouches_and_is_rewritten_as_version_2(tmp_path):
    """Entries were objects before they were flat lists: an upgrade must not rehash a year
    of data, and a stat that differs in any field is still a miss."""
    from buildenv.data.storage import Stat

    path = tmp_path / "statcache.json"
    stat = Stat(size=3, mtime_ns=1, ctime_ns=2, inode=7, device=1)
    value = content.ContentDigest("sha256:" + "a" * 64, 3, 5)
    path.write_text(json.dumps({"version": 1, "entries": {"sha256:parquet:/data/x.parquet": {
        "stat": {"size": 3, "mtime_ns": 1, "ctime_ns": 2, "inode": 7, "device": 1},
        "hashed_at_ns": 10**18, "digest": value.digest, "size": 3, "rows": 5}}}))
    cache = content.StatCache(path)
    assert cache.get("/data/x.parquet", stat, "sha256", "parquet") == value
    for field in ("size", "mtime_ns", "ctime_ns", "inode", "device"):
        other = stat._replace(**{field: getattr(stat, field) + 1})
        assert cache.get("/data/x.parquet", other, "sha256", "parquet") is None, field
    cache.save()
    assert json.loads(path.read_text())["version"] == 2
    assert content.StatCache(path).get("/data/x.parquet", stat, "sha256", "parquet") == value


def test_the_shared_stat_cache_is_parsed_again_once_rewritten(tmp_path):
    """Gate reads share one parse of the stat cache per process; a cache a lock rewrote
    meanwhile (another process, or this one) is what the next read sees, so a file whose
    entry changed is never vouched for by the old entry."""
    from buildenv.data.storage import Stat

    path = tmp_path / "statcache.json"
    stat = Stat(size=3, mtime_ns=1, ctime_ns=1, inode=7, device=1)
    old = content.ContentDigest("sha256:" + "a" * 64, 3, 0)
    writer = content.StatCache(path)
    writer.put("/data/x.parquet", stat, "sha256", "parquet", old, 10**18)
    writer.save()
    first = content.StatCache.shared(path)
    assert content.StatCache.shared(path) is first  # one parse while the file is unchanged
    assert first.get("/data/x.parquet", stat, "sha256", "parquet") == old
    moved = Stat(size=3, mtime_ns=2, ctime_ns=2, inode=7, device=1)
    new = content.ContentDigest("sha256:" + "b" * 64, 3, 0)
    writer = content.StatCache(path)
    writer.put("/data/x.parquet", moved, "sha256", "parquet", new, 10**18)
    writer.save()
    again = content.StatCache.shared(path)
    assert again is not first
    assert again.get("/data/x.parquet", stat, "sha256", "parquet") is None
    assert again.get("/data/x.parquet", moved, "sha256", "parquet") == new
    assert content.StatCache.shared(tmp_path / "missing.json").get(
        "/data/x.parquet", stat, "sha256", "parquet") is None
