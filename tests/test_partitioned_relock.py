"""A relock of a partitioned dataset starts hashing the files the stat cache cannot vouch for
while the walk goes on (last paths first): the same manifest and lock bytes as hashing them
after the listing, and a listing that fails waits for the hashes it started."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import invoke_cli
from partitioned_repo import DAYS, age, day, make_partitioned_repo, write_file

from buildenv.core.project import Project
from buildenv.data.lock import manifest as manifest_module
from buildenv.data.lock.lockfile import stat_cache
from buildenv.data.lock.manifest import (
    ManifestError,
    digest_listed,
    digest_partitioned,
    list_partitioned,
)
from buildenv.data.storage import locate


@pytest.fixture
def locked(tmp_path: Path) -> Path:
    repo = make_partitioned_repo(tmp_path)
    age(repo)
    code, out, err = invoke_cli(["lock"], repo)
    assert (code, err) == (0, ""), err
    return repo


@pytest.fixture
def hashed_in(monkeypatch) -> list[tuple[str, str]]:
    """(thread name, path) of every file `hash_file` hashes."""
    calls: list[tuple[str, str]] = []
    real = manifest_module.hash_file

    def spy(task):
        calls.append((threading.current_thread().name, task[0].uri.rsplit("events/", 1)[1]))
        return real(task)

    monkeypatch.setattr(manifest_module, "hash_file", spy)
    return calls


def test_the_walk_hears_of_the_last_paths_first_and_lists_in_path_order(locked):
    location = locate("data/events/", Project.discover(locked))
    heard: list[str] = []
    listed = location.walk(lambda rel, stat: heard.append(rel))
    assert heard[0] == f"date={day(DAYS - 1)}/part-0.parquet" or \
        heard[0] == f"date={day(DAYS - 1)}/part-1.parquet"
    assert sorted(heard) == [rel for rel, _ in listed]
    assert listed == location.walk()


def test_new_files_are_hashed_during_the_walk_to_the_same_manifest(locked, hashed_in):
    # more new files than the walk starts hashing (only they are backdated: a touched file
    # is one the stat cache no longer vouches for)
    age(locked, *[write_file(locked, DAYS + i, 0) for i in range(3)])
    project = Project.discover(locked)
    location = locate("data/events/", project)
    cache = stat_cache(project)
    fast = digest_partitioned(location, None, "sha256", cache, columns=["date", "user"])
    early = sorted(path for thread, path in hashed_in if thread.startswith("buildenv-early"))
    assert early == [f"date={day(DAYS + 1)}/part-0.parquet",
                     f"date={day(DAYS + 2)}/part-0.parquet"]
    assert len(hashed_in) == 3  # the third after the listing; the vouched-for files not at all
    assert all(thread.startswith("buildenv-early") for thread, path in hashed_in
               if path != f"date={day(DAYS)}/part-0.parquet")
    partitions, listed = list_partitioned(location, None, ["date", "user"])
    slow = digest_listed(listed, partitions, "sha256", None)  # every file hashed after listing
    assert fast == slow
    assert fast.digest == slow.digest


def test_the_relocked_lock_is_byte_identical_to_a_lock_from_a_cold_cache(locked, tmp_path):
    age(locked, write_file(locked, DAYS, 0))
    assert invoke_cli(["lock"], locked)[0] == 0
    warm = (locked / "environments" / "ev.lock.json").read_bytes()
    cold = shutil.copytree(locked, tmp_path / "cold")
    shutil.rmtree(cold / ".buildenv")
    (cold / "environments" / "ev.lock.json").unlink()
    assert invoke_cli(["lock"], cold)[0] == 0
    assert (cold / "environments" / "ev.lock.json").read_bytes() == warm


def test_a_listing_that_fails_waits_for_the_hashes_it_started(locked, hashed_in):
    age(locked, write_file(locked, DAYS, 0))
    (locked / "data" / "events" / f"date={day(0)}" / "notes.csv").write_text("a\n1\n")
    project = Project.discover(locked)
    with pytest.raises(ManifestError, match=r"notes\.csv"):
        digest_partitioned(locate("data/events/", project), None, "sha256",
                           stat_cache(project), columns=["date"])
    assert hashed_in and hashed_in[0][0].startswith("buildenv-early")
    assert not [t for t in threading.enumerate() if t.name.startswith("buildenv-early")]
    code, _, err = invoke_cli(["lock"], locked)
    assert code == 1 and "BE061" in err


def test_a_relock_keeps_again_an_object_the_store_lost(locked):
    objects = sorted(p for p in (locked / ".buildenv" / "objects").rglob("*") if p.is_file())
    lost = objects[len(objects) // 2]
    os.chmod(lost.parent, 0o700)
    lost.unlink()
    age(locked, write_file(locked, DAYS, 0))
    assert invoke_cli(["lock"], locked)[0] == 0
    assert lost.is_file()  # kept again, with the new day's object
    assert len([p for p in (locked / ".buildenv" / "objects").rglob("*")
                if p.is_file()]) == len(objects) + 1


def test_a_hashing_thread_reuses_the_read_buffer_another_thread_handed_back(locked):
    from buildenv.data.lock import digests

    location = locate(f"data/events/date={day(0)}/part-0.parquet", Project.discover(locked))
    found = []

    def hash_in_a_new_thread() -> None:
        thread = threading.Thread(target=lambda: found.append(
            digests._digest_bytes(location, "sha256")))
        thread.start()
        thread.join()

    hash_in_a_new_thread()
    kept = list(digests._BUFFERS)
    hash_in_a_new_thread()
    assert kept and [id(b) for b in digests._BUFFERS] == [id(b) for b in kept]
    assert found[0] == found[1] and found[0].digest == "sha256:" + hashlib.sha256(
        location.local.read_bytes()).hexdigest()


def test_one_worker_hashes_after_the_listing(locked, hashed_in):
    from buildenv.data.executor import LocalExecutor

    age(locked, write_file(locked, DAYS, 0))
    project = Project.discover(locked)
    one = digest_partitioned(locate("data/events/", project), None, "sha256",
                             stat_cache(project), LocalExecutor(workers=1), columns=["date"])
    assert [thread for thread, _ in hashed_in] == ["MainThread"]
    partitions, listed = list_partitioned(locate("data/events/", project), None, ["date"])
    assert one == digest_listed(listed, partitions, "sha256", None)
