"""Relocking a Delta table from its log (`buildenv.data.tables.delta_replay`): the pinned
version's files plus the commits since give the very lock opening the table with delta-rs
gives, and anything but plain appends and removals falls back to delta-rs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from partitioned_repo import age
from tables_repo import batch, make_delta_repo, write_delta_env

from buildenv.core.project import Project
from buildenv.data.tables import delta
from buildenv.env.resolve import Multiverse
from buildenv.labels.locking import lock_environments

deltalake = pytest.importorskip("deltalake")


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every time the lock opens a Delta table with delta-rs (the slow path), by uri."""
    calls: list[str] = []
    real = delta._open

    def counting(location, uri, version=None):
        calls.append(uri)
        return real(location, uri, version)

    monkeypatch.setattr(delta, "_open", counting)
    return calls


def _lock(root: Path, env: str = "tab") -> list[str]:
    """Lock `env` in process; the problems' codes."""
    _, problems = lock_environments(Multiverse(Project.discover(root)), [env])
    return [p.code for p in problems]


def _lock_path(root: Path, env: str = "tab") -> Path:
    return root / "environments" / f"{env}.lock.json"


def relock_both_ways(root: Path, opened: list[str], env: str = "tab") -> bool:
    """Relock `env` (the replay may answer), then again without the previous lock (delta-rs
    answers); assert both lock files are byte-identical. Whether the first one replayed."""
    del opened[:]
    assert _lock(root, env) == []
    replayed = not opened
    fast = _lock_path(root, env).read_text()
    _lock_path(root, env).unlink()
    assert _lock(root, env) == []
    assert opened, "without a previous lock the table is opened"
    assert _lock_path(root, env).read_text() == fast
    return replayed


def _table(root: Path) -> Path:
    return root / "data" / "events"


def _commit(table: Path, *actions: dict) -> None:
    """Write the next commit by hand (what another writer, e.g. Spark, may write)."""
    log = table / "_delta_log"
    number = max(int(p.stem) for p in log.glob("*.json")) + 1
    info = {"commitInfo": {"timestamp": 1_800_000_000_000 + number, "operation": "WRITE"}}
    (log / f"{number:020d}.json").write_text(
        "\n".join(json.dumps(a) for a in (info, *actions)) + "\n")


def _an_add(table: Path) -> dict:
    last = sorted((table / "_delta_log").glob("*.json"))[-1]
    return next(json.loads(line)["add"] for line in last.read_text().splitlines()
                if '"add"' in line)


@pytest.mark.parametrize("partition", [True, False])
def test_appends_deletes_and_compaction_relock_from_the_log_byte_identical(
        tmp_path, opened, partition):
    root = make_delta_repo(tmp_path, partition=partition)
    age(root)
    assert _lock(root) == []
    table = deltalake.DeltaTable(str(_table(root)))
    steps = [
        lambda: deltalake.write_deltalake(str(_table(root)), batch(90, 120), mode="append"),
        lambda: deltalake.write_deltalake(str(_table(root)), batch(120, 130), mode="append"),
        lambda: deltalake.DeltaTable(str(_table(root))).delete("id < 10"),  # remove + add
        lambda: deltalake.DeltaTable(str(_table(root))).optimize.compact(),
        lambda: deltalake.write_deltalake(str(_table(root)), batch(130, 150), mode="append"),
    ]
    for step in steps:
        step()
        assert relock_both_ways(root, opened), "a plain commit is replayed from the log"
    assert json.loads(_lock_path(root).read_text())["datasets"]["events"]["table"][
        "version"] == table.version() + len(steps)
    # a pinned version replays up to that version only; and a relock with no new commit
    latest = deltalake.DeltaTable(str(_table(root))).version()
    deltalake.write_deltalake(str(_table(root)), batch(150, 160), mode="append")
    write_delta_env(root, f"    version: {latest + 1}\n")
    assert relock_both_ways(root, opened)
    assert relock_both_ways(root, opened)


def _schema_change(root: Path) -> None:
    extra = batch(90, 100).append_column("z", pa.array(range(10), pa.int64()))
    deltalake.write_deltalake(str(_table(root)), extra, mode="append", schema_mode="merge")


def _protocol(root: Path) -> None:
    deltalake.write_deltalake(str(_table(root)), batch(90, 100), mode="append")
    _commit(_table(root), {"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})


def _missing_commit(root: Path) -> None:
    for lo in (90, 100, 110):
        deltalake.write_deltalake(str(_table(root)), batch(lo, lo + 10), mode="append")
    deltalake.DeltaTable(str(_table(root))).create_checkpoint()
    (_table(root) / "_delta_log" / f"{2:020d}.json").unlink()  # after the lock's version 1


def _written_anew(root: Path) -> None:
    shutil.rmtree(_table(root))
    for lo in (0, 10, 20):  # as before, but three commits: versions 0-2
        deltalake.write_deltalake(str(_table(root)), batch(lo, lo + 10), mode="append",
                                  partition_by=["plan"])


def _no_row_count(root: Path) -> None:
    table = _table(root)
    add = _an_add(table)
    name = add["path"].replace("part-", "part-copy-")
    shutil.copy(table / add["path"], table / name)
    _commit(table, {"add": {k: v for k, v in add.items() if k != "stats"} | {"path": name}})


def _escaped_path(root: Path) -> None:
    rows = batch(90, 93)
    rows = rows.set_column(1, "plan", pa.array(["a b"] * 3, pa.string()))
    deltalake.write_deltalake(str(_table(root)), rows, mode="append")


def _unknown_remove(root: Path) -> None:
    deltalake.write_deltalake(str(_table(root)), batch(90, 100), mode="append")
    _commit(_table(root), {"remove": {"path": "plan=basic/part-gone.parquet",
                                      "deletionTimestamp": 1, "dataChange": True}})


@pytest.mark.parametrize("change", [_schema_change, _protocol, _missing_commit, _written_anew,
                                    _no_row_count, _escaped_path, _unknown_remove])
def test_anything_but_plain_commits_falls_back_to_delta_rs(tmp_path, opened, change):
    root = make_delta_repo(tmp_path)
    age(root)
    assert _lock(root) == []
    change(root)
    age(root)
    assert not relock_both_ways(root, opened), "delta-rs answers"


def test_a_deletion_vector_falls_back_and_is_refused(tmp_path, opened):
    from test_tables_delta import _add_deletion_vector

    root = make_delta_repo(tmp_path, commits=1, partition=False)
    assert _lock(root) == []
    _add_deletion_vector(_table(root))
    del opened[:]
    assert _lock(root) == ["BE075"]
    assert opened


def test_a_time_pin_is_not_replayed(tmp_path, opened):
    root = make_delta_repo(tmp_path)
    write_delta_env(root, "    as_of: '2100-01-01T00:00:00+00:00'\n")
    assert _lock(root) == []
    deltalake.write_deltalake(str(_table(root)), batch(90, 100), mode="append")
    assert not relock_both_ways(root, opened)


@pytest.mark.parametrize("path", ["../outside.parquet", "plan=a/../../x.parquet", "./x.parquet",
                                  "plan=a//x.parquet", "/abs.parquet", "s3://b/x.parquet",
                                  "plan=a%20b/x.parquet", ""])
def test_only_plain_paths_inside_the_table_are_replayed(path):
    """A path the log could name outside the table (or spell two ways) is left to delta-rs."""
    from buildenv.data.tables import delta_replay

    with pytest.raises(delta_replay._Fallback):
        delta_replay._plain_path(path)
    assert delta_replay._plain_path("plan=a/part-0.parquet") == "plan=a/part-0.parquet"
