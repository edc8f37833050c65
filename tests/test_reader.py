"""What every reader of the gate does alike (`data.gate.reader.Reader`), checked on all three:
one dataset file (`DatasetRead`), a directory of them (`PartitionedRead`) and a non-tabular file
(`FileRead`). A missing file is BE053 at its YAML line; a restricted read is audited when it
completes, when it is refused, and when it stops half way."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from buildenv.core.project import Project
from buildenv.data.gate.audit import AuditLog
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.env.resolve import Multiverse

ENV = """\
name: r
datasets:
  one:
    uri: data/one.parquet
    columns:
      id: {dtype: int64}
  many:
    uri: data/many/
    columns:
      id: {dtype: int64}
privacy:
  restricted: [one, many]
"""
URI_LINE = {"one": 4, "many": 8}


@pytest.fixture
def root(tmp_path):
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "r.yaml").write_text(ENV)
    (tmp_path / "data" / "many").mkdir(parents=True)
    table = pa.table({"id": pa.array(range(3000), pa.int64())})
    pq.write_table(table, tmp_path / "data" / "one.parquet", row_group_size=1000)
    for name in ("a", "b"):
        pq.write_table(table, tmp_path / "data" / "many" / f"{name}.parquet",
                       row_group_size=1000)
    (tmp_path / "data" / "notes.json").write_bytes(b"x" * 3_000_000)
    return tmp_path


def gate(root):
    project = Project.discover(root)
    res = Multiverse(project).resolve("r")
    return Gate(project, res.env, "test", where=res)


def open_read(root, kind, expect=None):
    if kind == "file":
        return gate(root).open_file("data/notes.json", what="notes of 'one'", expect=expect,
                                    place=("datasets", "one", "uri"), restricted_dataset="one")
    return gate(root).open(kind, expect=expect)


def first_piece(read, kind):
    """Take the first batch (or chunk) and stop there."""
    if kind == "file":
        return next(read.chunks())
    return next(read.batches(["id"], batch_rows=500))


def records(root):
    return AuditLog(Project.discover(root).data_state_dir).records()


WHAT = {"one": ("dataset 'one'", "data/one.parquet"),
        "many": ("dataset 'many'", "data/many/"),
        "file": ("notes of 'one'", "data/notes.json")}


@pytest.mark.parametrize("kind", ["one", "many", "file"])
def test_a_missing_file_is_be053_at_its_uri_line(root, kind):
    what, uri = WHAT[kind]
    target = root / uri
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(GateError) as caught:
        open_read(root, kind)
    d = caught.value.diagnostic
    assert (d.code, d.message) == ("BE053", f"{what}: '{uri}' not found")
    assert (d.path, d.line) == ("environments/r.yaml", URI_LINE["many" if kind == "many"
                                                               else "one"])


@pytest.mark.parametrize("kind", ["one", "many", "file"])
def test_a_restricted_read_that_stops_half_way_is_audited_incomplete(root, kind):
    with open_read(root, kind) as read:
        first_piece(read, kind)
    (record,) = records(root)
    details = record["details"]
    assert details["outcome"] == "incomplete"
    assert record["dataset"] == ("one" if kind in ("one", "file") else "many")
    assert details.get("files") == (2 if kind == "many" else None)
    assert details.get("file") == ("data/notes.json" if kind == "file" else None)


@pytest.mark.parametrize("kind", ["one", "many", "file"])
def test_a_completed_restricted_read_is_audited_with_its_digest(root, kind):
    with open_read(root, kind) as read:
        if kind == "file":
            b"".join(read.chunks())
        else:
            read.table(["id"])
        digest = read.verify()
    (record,) = records(root)
    assert record["details"]["outcome"] == "read" and record["digest"] == digest
    if kind == "file":
        expected = hashlib.sha256((root / "data" / "notes.json").read_bytes()).hexdigest()
        assert digest == f"sha256:{expected}"


@pytest.mark.parametrize("kind, code", [("one", "BE055"), ("file", "BE055")])
def test_a_mismatch_is_refused_and_audited_with_what_was_found(root, kind, code):
    wrong = "sha256:" + "0" * 64

    def read_all(read):
        if kind == "file":
            b"".join(read.chunks())
            read.verify()
        else:
            read.table(["id"])

    with open_read(root, kind, expect=wrong) as read, pytest.raises(GateError) as caught:
        read_all(read)
    d = caught.value.diagnostic
    what, uri = WHAT[kind]
    assert d.code == code and d.message.startswith(f"{what} does not match the lock: expected "
                                                   f"{wrong}, found sha256:")
    assert d.message.endswith(f"({uri}); nothing read from it is used")
    (record,) = records(root)
    assert record["details"]["outcome"] == "refused: does not match the lock"
    assert record["digest"] not in (None, wrong)
