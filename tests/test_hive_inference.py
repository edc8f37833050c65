"""Hive partitions found where users put them: a declared column that names `name=<value>`
directories in every file's path is a partition column without `partitions:`; paths that
disagree are BE067, naming the paths and what to write."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import invoke_cli
from partitioned_repo import (
    DAYS,
    FILES_PER_DAY,
    ROWS_PER_FILE,
    age,
    day,
    file_path,
    make_partitioned_repo,
)

from buildenv.core.project import Project
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.lockfile import read_lock
from buildenv.data.lock.manifest import ManifestError, infer_partitions, resolve_partitions
from buildenv.env.resolve import Multiverse

FILES = DAYS * FILES_PER_DAY


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The partitioned repository with `partitions: [date]` left out of the YAML."""
    root = make_partitioned_repo(tmp_path)
    env = root / "environments" / "ev.yaml"
    text = env.read_text()
    assert "    partitions: [date]\n" in text
    env.write_text(text.replace("    partitions: [date]\n", ""))
    age(root)
    return root


def test_paths_alone_decide_in_path_order():
    paths = ["year=2026/month=1/a.parquet", "year=2026/month=2/b.parquet",
             "year=2025/month=12/c.parquet"]
    assert infer_partitions(paths, ["month", "year", "x"]) == ("year", "month")
    assert infer_partitions(paths, ["x"]) == ()  # no declared column in the paths: none
    assert infer_partitions(["a/b.parquet", "c.parquet"], ["a"]) == ()
    # values are URI-decoded keys like partition_values reads them
    assert infer_partitions(["my%20col=1/a.parquet"], ["my col"]) == ("my col",)
    # written partitions win, and `[]` turns inference off
    assert resolve_partitions(["month", "year"], ["month", "year"], paths) == ("month", "year")
    assert resolve_partitions([], ["month", "year"], paths) == ()


@pytest.mark.parametrize("paths, words", [
    (["month=1/a.parquet", "month=2/b.parquet", "c.parquet"],
     ["column 'month' is a 'month=<value>' directory in 2 of 3 file paths but not in "
      "'c.parquet'", "move those files under a 'month=<value>' directory",
      "if 'month' is stored in the files, write `partitions: []` under the dataset"]),
    (["month=1/a.parquet", "Month=2/b.parquet"],
     ["but not in 'Month=2/b.parquet': 'Month=2' differs from 'month' in case only: name it "
      "'month=2'"]),
    (["year=1/month=1/a.parquet", "month=2/year=1/b.parquet"],
     ["1 file path(s) disagree, e.g. 'month=2/year=1/b.parquet'", "another order (month/year)",
      "`partitions: [year, month]`", "every path reads year=<value>/month=<value>/<file>"]),
    (["region=eu/month=1/a.parquet", "region=us/month=2/b.parquet"],
     ["`partitions: [month]`", "'region=eu/month=1/a.parquet'",
      "directory 'region=eu' is not a '<column>=<value>' directory of a declared column: "
      "declare the column"]),
])
def test_paths_that_disagree_are_named_with_what_to_write(paths, words):
    with pytest.raises(ManifestError) as info:
        infer_partitions(paths, ["month", "year"])
    assert {code for code, _ in info.value.problems} == {"BE067"}
    text = str(info.value)
    for word in words:
        assert word in text, text


def test_lock_validate_and_read_find_the_partition_column_in_the_paths(repo):
    code, _, err = invoke_cli(["lock"], repo)
    assert (code, err) == (0, ""), err
    lock = read_lock(Project.discover(repo), "ev")
    assert lock.datasets["events"].manifest.partitions == ("date",)
    code, out, err = invoke_cli(["validate", "ev"], repo)
    assert code == 0, err
    project = Project.discover(repo)
    res = Multiverse(project).resolve("ev")
    gate = Gate(project, res.env, "test", pins=lock.pins(), where=res,
                manifests=lock.manifests())
    with gate.open("events") as read:
        table = read.table(["date", "user"])
    assert table.num_rows == FILES * ROWS_PER_FILE
    assert table.schema.field("date").type == pa.date32()
    assert sorted({d.isoformat() for d in table.column("date").to_pylist()}) == [
        day(i) for i in range(DAYS)]
    # the lock is fresh: nothing stale about the inferred partitions
    code, _, err = invoke_cli(["lock", "--check"], repo)
    assert code == 0, err


def test_inferred_partition_values_are_range_checked(repo):
    target = repo / "data" / "events" / "date=2027-01-05" / "part-0.parquet"
    target.parent.mkdir()
    shutil.copy(file_path(repo, 0, 0), target)
    age(repo)
    assert invoke_cli(["lock"], repo)[0] == 0
    code, _, err = invoke_cli(["validate", "ev"], repo)
    assert code == 1
    assert ("error[BE063]: events.date: the partition value is outside range [2026-09-01, "
            "2026-12-31] in 1 file(s): 'data/events/date=2027-01-05/part-0.parquet'") in err


def test_a_file_outside_the_inferred_directories_is_named_with_the_fix(repo):
    shutil.copy(file_path(repo, 0, 0), repo / "data" / "events" / "stray.parquet")
    code, out, err = invoke_cli(["lock"], repo)
    assert code == 1, err
    assert ("environments/ev.yaml:4:5: error[BE067]: dataset 'events': column 'date' is a "
            f"'date=<value>' directory in {FILES} of {FILES + 1} file paths but not in "
            "'stray.parquet'") in err
    assert "Traceback" not in err
    assert not (repo / "environments" / "ev.lock.json").exists()


def test_an_undeclared_directory_level_asks_for_the_column(repo):
    for i in range(DAYS):
        for part in range(FILES_PER_DAY):
            src = file_path(repo, i, part)
            dst = repo / "data" / "events" / "country=fr" / f"date={day(i)}" / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dst)
        file_path(repo, i, 0).parent.rmdir()
    age(repo)
    code, _, err = invoke_cli(["lock"], repo)
    assert code == 1
    assert "error[BE067]" in err and "directory 'country=fr' is not a '<column>=<value>' " \
                                     "directory of a declared column: declare the column" in err


def test_explicit_empty_partitions_turn_inference_off(repo):
    env = repo / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("    uri: data/events/\n",
                                           "    uri: data/events/\n    partitions: []\n"))
    assert invoke_cli(["lock"], repo)[0] == 0
    code, _, err = invoke_cli(["validate", "ev"], repo)
    assert code == 1 and f"no column 'date' in {FILES} of {FILES} file(s)" in err


def test_a_lock_written_before_inference_is_stale_naming_the_partitions(repo):
    env = repo / "environments" / "ev.yaml"
    original = env.read_text()
    env.write_text(original.replace("    uri: data/events/\n",
                                    "    uri: data/events/\n    partitions: []\n"))
    assert invoke_cli(["lock"], repo)[0] == 0
    env.write_text(original)
    code, _, err = invoke_cli(["lock", "--check"], repo)
    assert code == 1
    assert "dataset 'events' partitions changed: lock has [], environment has ['date']" in err


def test_a_column_missing_from_files_and_paths_hints_at_the_directories(repo):
    for i in range(DAYS):
        path = file_path(repo, i, 0).parent
        path.rename(path.with_name(day(i)))  # 2026-09-01/ instead of date=2026-09-01/
    age(repo)
    assert invoke_cli(["lock"], repo)[0] == 0
    code, _, err = invoke_cli(["validate", "ev"], repo)
    assert code == 1
    assert f"error[BE206]: dataset 'events' has no column 'date' in {FILES} of {FILES} " in err
    assert "if the values of 'date' are in the paths, name those directories 'date=<value>'" \
           in err


def test_a_restricted_dataset_s_paths_give_no_column_and_name_no_value(repo):
    """Written `partitions:` are refused for a restricted dataset (BE060: their values are
    paths, which the lock records and diagnostics name); found in its paths they are refused
    the same way -- by `lock`, and by a read against a lock written before it was restricted
    -- and no path or value is quoted. `partitions: []` reads the paths as names only."""
    assert invoke_cli(["lock"], repo)[0] == 0  # before it is restricted
    env = repo / "environments" / "ev.yaml"
    original = env.read_text()
    env.write_text(original + "privacy:\n  restricted: [events]\n")
    for command in (["validate", "ev"], ["lock"]):
        code, out, err = invoke_cli(command, repo)
        assert code in (1, 2) and "error[BE060]: dataset 'events': restricted, and its " \
            "declared column(s) date are '<column>=<value>' directories of its file paths" \
            in err, (command, err)
        assert day(0) not in err and day(0)[:7] not in err, err
    env.write_text(original.replace("    uri: data/events/\n",
                                    "    uri: data/events/\n    partitions: []\n")
                   + "privacy:\n  restricted: [events]\n")
    code, _, err = invoke_cli(["lock"], repo)
    assert code == 0, err


def test_a_partition_directory_in_the_uri_itself_is_named_as_such(repo):
    """A uri that ends inside the partitions (`data/events/date=2026-09-01/`) gives no `date`
    column: partitions are found below the uri, as pyarrow finds them. The hint said to name
    directories `date=<value>`, which they already were."""
    env = repo / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("uri: data/events/", f"uri: data/events/date={day(0)}/"))
    assert invoke_cli(["lock"], repo)[0] == 0
    code, _, err = invoke_cli(["validate", "ev"], repo)
    assert code == 1 and "error[BE206]: dataset 'events' has no column 'date'" in err
    assert f"  hint: 'date={day(0)}' is part of the dataset's uri, and partitions are found " \
        "below it (as pyarrow finds them): point the uri at its parent directory and filter " \
        "on 'date' where it is read, or drop 'date' from the columns" in err.splitlines(), err


def test_partitions_declared_in_another_order_than_the_paths_say_what_to_write(repo):
    """`partitions: [b, a]` over paths that all read a=/b=: one BE062 saying what the paths
    read and what to write, not one line per file saying neither."""
    events = repo / "data" / "events"
    regions = repo / "data" / "regions"
    for i in range(2):
        for region in ("eu", "us"):
            target = regions / f"date={day(i)}" / f"region={region}" / "part-0.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file_path(repo, i, 0), target)
    shutil.rmtree(events)
    regions.rename(events)
    env = repo / "environments" / "ev.yaml"
    text = env.read_text()
    env.write_text(text.replace("    columns:\n", "    partitions: [region, date]\n"
                                "    columns:\n      region: {dtype: string}\n", 1))
    code, _, err = invoke_cli(["lock"], repo)
    assert code == 1 and err.count("error[BE062]") == 1, err
    assert "4 file path(s) do not match the declared partitions `partitions: [region, date]`" \
        in err and "they read date=<value>/region=<value>/<file>; write " \
        "`partitions: [date, region]`" in err, err


def test_a_column_in_the_directory_of_a_one_file_uri_is_named_as_such(repo):
    """A uri naming one file under `date=<value>/` gives no `date` column (a file's own path
    is not searched for partitions): BE206 says so, and which directory to point at."""
    env = repo / "environments" / "ev.yaml"
    rel = file_path(repo, 0, 0).relative_to(repo).as_posix()
    env.write_text(env.read_text().replace("uri: data/events/", f"uri: {rel}"))
    assert invoke_cli(["lock"], repo)[0] == 0
    code, _, err = invoke_cli(["validate", "ev"], repo)
    assert code == 1 and "error[BE206]: dataset 'events' has no column 'date'" in err, err
    assert f"  hint: 'date={day(0)}' is a directory of the dataset's uri, which names one " \
        "file: a file's own path gives no column; to find 'date' in the paths, point the uri " \
        "at the directory above it ('data/events/'), or drop 'date' from the columns" \
        in err.splitlines(), err
