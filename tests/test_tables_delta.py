"""Delta Lake datasets: versions pinned as a manifest of their files, written by delta-rs."""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import drop_store, invoke_cli, write_env
from partitioned_repo import age
from tables_repo import batch, make_delta_repo, write_delta_env

from buildenv.core.project import Project
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.filters import parse_filters
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.lockfile import read_lock
from buildenv.env.resolve import Multiverse

deltalake = pytest.importorskip("deltalake")


def lock_json(root: Path, env: str = "tab") -> dict:
    return json.loads((root / "environments" / f"{env}.lock.json").read_text())


def delta_rows(root: Path, version: int | None = None) -> pa.Table:
    """The rows delta-rs itself reads at `version`, sorted by id."""
    table = deltalake.DeltaTable(str(root / "data" / "events"), version=version)
    rows = pa.table(table.to_pyarrow_table()).select(["id", "plan", "x", "y"])
    return rows.sort_by("id")


def gate_read(root: Path, env: str = "tab", filters=None, columns=("id", "plan", "x", "y")
              ) -> pa.Table:
    project = Project.discover(root)
    res = Multiverse(project).resolve(env)
    lock = read_lock(project, env)
    gate = Gate(project, res.env, "build", pins=lock.pins(), manifests=lock.manifests(),
                where=res)
    parsed = (parse_filters(filters, res.env.datasets["events"].columns, "events")
              if filters else None)
    with gate.open("events", filters=parsed) as read:
        return read.table(list(columns)).sort_by("id")


def test_lock_pins_the_latest_version_as_its_files(tmp_path):
    root = make_delta_repo(tmp_path)
    code, out, err = invoke_cli(["lock", "tab"], root)
    assert (code, err) == (0, ""), err
    entry = lock_json(root)["datasets"]["events"]
    assert lock_json(root)["lock_version"] == 3
    assert entry["table"]["version"] == 1 and entry["table"]["pin"] == {}
    assert entry["table"]["schema"] == {"id": "int64", "plan": "string", "x": "double",
                                        "y": "bool"}
    assert entry["partitions"] == ["plan"] and entry["rows"] == 90
    live = deltalake.DeltaTable(str(root / "data" / "events")).file_uris()
    assert sorted(os.path.relpath(p, root / "data" / "events") for p in live) == \
        [f["path"] for f in entry["files"]]
    assert all(f["values"]["plan"] == f["path"].split("/")[0].split("=")[1]
               for f in entry["files"])
    assert invoke_cli(["lock", "base"], root)[0] == 0  # a lock without tables keeps its form
    assert lock_json(root, "base")["lock_version"] == 1


def test_a_pinned_version_is_read_as_delta_rs_reads_it(tmp_path):
    root = make_delta_repo(tmp_path, pin="    version: 0\n", commits=3)
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    assert lock_json(root)["datasets"]["events"]["table"]["version"] == 0
    read = gate_read(root)
    assert read.num_rows == 60
    assert read.equals(delta_rows(root, 0).cast(read.schema))
    # later commits do not make the lock of a pinned version stale
    deltalake.write_deltalake(str(root / "data" / "events"), batch(500, 510), mode="append")
    assert invoke_cli(["lock", "tab", "--check"], root)[:2] == (0, "1 lock(s) up to date\n")


def test_relock_after_an_append_hashes_only_the_new_files(tmp_path, hash_calls):
    root = make_delta_repo(tmp_path)
    age(root)  # the stat cache distrusts files written just before they were hashed
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    assert len(hash_calls) == 6  # two commits, three plans each
    deltalake.write_deltalake(str(root / "data" / "events"), batch(90, 120), mode="append")
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    new = hash_calls[6:]
    assert len(new) == 3 and all("/part-" in uri for uri in new), new  # one per plan
    assert lock_json(root)["datasets"]["events"]["table"]["version"] == 2


def test_lock_check_says_how_far_the_table_moved(tmp_path):
    root = make_delta_repo(tmp_path)
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    table = root / "data" / "events"
    deltalake.write_deltalake(str(table), batch(90, 120), mode="append")
    deltalake.DeltaTable(str(table)).delete("id = 3")
    code, out, err = invoke_cli(["lock", "tab", "--check"], root)
    assert code == 1
    assert ("error[BE051]: dataset 'events' moved since it was locked: version 3, the lock "
            "pins 1: 2 commits — WRITE append 3 files, DELETE 1 file, removed 1") in err
    assert "`buildenv retrain tab`" in err
    code, out, err = invoke_cli(["build", "events", "--env", "tab", "--no-register"], root)
    assert code == 1 and "BE051" in err  # nothing is trained on data the lock does not pin
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    assert lock_json(root)["datasets"]["events"]["table"]["version"] == 3
    assert gate_read(root).equals(delta_rows(root).cast(gate_read(root).schema))


def test_as_of_picks_the_version_committed_by_then_and_refuses_a_time_before_the_table(
        tmp_path):
    root = make_delta_repo(tmp_path, commits=3)
    history = deltalake.DeltaTable(str(root / "data" / "events")).history()
    second = next(h for h in history if h["version"] == 1)["timestamp"]
    import datetime as dt

    when = dt.datetime.fromtimestamp(second / 1000, dt.UTC).isoformat()
    write_delta_env(root, f"    as_of: '{when}'\n")
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    assert lock_json(root)["datasets"]["events"]["table"]["version"] == 1
    write_delta_env(root, "    as_of: '2001-01-01T00:00:00Z'\n")
    code, out, err = invoke_cli(["lock", "tab"], root)
    assert code != 0
    assert "error[BE072]: dataset 'events': Delta table 'data/events' has no version " \
           "committed at or before 2001-01-01T00:00:00Z (its first remaining commit is at" in err


def test_a_version_that_does_not_exist_is_be072(tmp_path):
    root = make_delta_repo(tmp_path, pin="    version: 9\n")
    code, out, err = invoke_cli(["lock", "tab"], root)
    assert code != 0
    assert "error[BE072]: dataset 'events': Delta table 'data/events' has no version 9 " \
           "(its latest is 1)" in err
    assert not (root / "environments" / "tab.lock.json").exists()


def _vacuum(root: Path) -> None:
    table = root / "data" / "events"
    deltalake.write_deltalake(str(table), batch(0, 10), mode="overwrite")
    deltalake.DeltaTable(str(table)).vacuum(retention_hours=0, dry_run=False,
                                            enforce_retention_duration=False)


def test_a_vacuumed_version_is_be077_naming_table_version_and_file(tmp_path):
    root = make_delta_repo(tmp_path, pin="    version: 1\n")
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    _vacuum(root)
    code, out, err = invoke_cli(["lock", "tab", "--check"], root)
    assert code == 1
    assert "error[BE077]: dataset 'events': Delta table 'data/events' version 1: " in err
    assert "no longer exist (vacuumed or cleaned up) and are not kept" in err
    assert "`keep: true`" in err
    code, out, err = invoke_cli(["lock", "tab"], root)  # the version still lists its files
    assert code != 0 and "error[BE077]" in err and "listed by the table but missing" in err
    with pytest.raises(GateError) as caught:
        gate_read(root)
    assert caught.value.diagnostic.code in ("BE064", "BE053")


def test_a_kept_table_survives_vacuum(tmp_path):
    root = make_delta_repo(tmp_path, pin="    version: 1\n    keep: true\n")
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    expected = gate_read(root)
    _vacuum(root)
    assert invoke_cli(["lock", "tab", "--check"], root)[:2] == (0, "1 lock(s) up to date\n")
    assert gate_read(root).equals(expected)  # read from the object store, verified
    code, out, err = invoke_cli(["validate", "tab"], root)  # version 1, from the store
    assert (code, err) == (0, ""), err
    code, out, err = invoke_cli(["checkout", "tab"], root)  # the vacuumed files come back
    assert code == 0, err
    assert deltalake.DeltaTable(str(root / "data" / "events"), version=1) \
        .to_pyarrow_table().num_rows == 90


def test_a_tampered_file_is_caught_by_the_gate_and_the_lock_check(tmp_path):
    root = make_delta_repo(tmp_path, pin="    version: 1\n")
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    drop_store(root)
    victim = sorted((root / "data" / "events").rglob("*.parquet"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    code, out, err = invoke_cli(["lock", "tab", "--check"], root)
    assert code == 1 and "error[BE051]" in err and victim.name in err
    with pytest.raises(GateError) as caught:
        gate_read(root)
    assert caught.value.diagnostic.code in ("BE055", "BE053")


def test_partition_filters_leave_other_partitions_unopened(tmp_path, monkeypatch):
    root = make_delta_repo(tmp_path)
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    from buildenv.data.gate import partitioned_read

    opened: list[str] = []
    real = partitioned_read.FileTask.open

    def spy(self, partitions=True):
        opened.append(self.uri)
        return real(self, partitions)

    monkeypatch.setattr(partitioned_read.FileTask, "open", spy)
    read = gate_read(root, filters=[("plan", "==", "pro")])
    assert read.num_rows == 30 and set(read.column("plan").to_pylist()) == {"pro"}
    assert opened and all("plan=pro/" in uri for uri in opened)
    assert pc.all(pc.equal(read.column("plan"), "pro")).as_py()


def test_a_schema_change_under_declared_columns_is_be076(tmp_path):
    root = make_delta_repo(tmp_path)
    renamed = batch(0, 10).rename_columns(["id", "plan", "feature", "y"])
    deltalake.write_deltalake(str(root / "data" / "events"), renamed, mode="overwrite",
                              schema_mode="overwrite")
    code, out, err = invoke_cli(["lock", "tab"], root)
    assert code != 0
    assert "error[BE076]: dataset 'events': Delta table 'data/events' version 2 has no " \
           "column 'x'" in err


def test_column_mapping_is_refused(tmp_path):
    root = make_delta_repo(tmp_path, commits=1, partition=False)
    shutil.rmtree(root / "data" / "events")
    deltalake.write_deltalake(str(root / "data" / "events"), batch(0, 10), configuration={
        "delta.columnMapping.mode": "name", "delta.minReaderVersion": "2",
        "delta.minWriterVersion": "5"})
    code, out, err = invoke_cli(["lock", "tab"], root)
    assert code != 0
    assert "error[BE075]: dataset 'events': Delta table 'data/events' version 0 uses column " \
           "mapping (mode 'name')" in err


_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def _z85(data: bytes) -> str:
    out = []
    for i in range(0, len(data), 4):
        n = int.from_bytes(data[i:i + 4], "big")
        chunk = []
        for _ in range(5):
            chunk.append(_Z85[n % 85])
            n //= 85
        out.extend(reversed(chunk))
    return "".join(out)


def _add_deletion_vector(table: Path) -> None:
    """Commit a deletion vector (rows 0 and 9 of the first file) as Spark would: delta-rs
    reads them but does not write them. Format: Delta PROTOCOL.md, RoaringBitmapArray."""
    from pyroaring import BitMap

    first = json.loads(next(line for line in
                            (table / "_delta_log" / f"{0:020d}.json").read_text().splitlines()
                            if '"add"' in line))["add"]
    payload = (struct.pack("<i", 1681511377) + struct.pack("<q", 1) + struct.pack("<i", 0)
               + BitMap([0, 9]).serialize())
    name = uuid.uuid4()
    (table / f"deletion_vector_{name}.bin").write_bytes(
        b"\x01" + struct.pack(">i", len(payload)) + payload
        + struct.pack(">I", zlib.crc32(payload)))
    vector = {"storageType": "u", "pathOrInlineDv": _z85(name.bytes), "offset": 1,
              "sizeInBytes": len(payload), "cardinality": 2}
    lines = [{"commitInfo": {"timestamp": first["modificationTime"] + 1,
                             "operation": "DELETE"}},
             {"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
                           "readerFeatures": ["deletionVectors"],
                           "writerFeatures": ["deletionVectors"]}},
             {"remove": {"path": first["path"], "deletionTimestamp": first["modificationTime"]
                         + 1, "dataChange": True}},
             {"add": dict(first, deletionVector=vector)}]
    (table / "_delta_log" / f"{1:020d}.json").write_text(
        "\n".join(json.dumps(line) for line in lines) + "\n")


def test_deletion_vectors_are_refused_naming_the_file(tmp_path):
    root = make_delta_repo(tmp_path, commits=1, partition=False)
    _add_deletion_vector(root / "data" / "events")
    code, out, err = invoke_cli(["lock", "tab"], root)
    assert code != 0
    assert "error[BE075]: dataset 'events': Delta table 'data/events' version 1 has deletion " \
           "vectors (1 file(s), e.g. 'part-" in err


def test_a_restricted_partitioned_table_is_refused_and_an_unpartitioned_one_is_audited(
        tmp_path):
    root = make_delta_repo(tmp_path, extra="privacy: {restricted: [events]}\n")
    code, out, err = invoke_cli(["lock", "tab"], root)
    assert code != 0 and "error[BE075]" in err and "partition values would be written" in err
    shutil.rmtree(root / "data" / "events")
    deltalake.write_deltalake(str(root / "data" / "events"), batch(0, 60))
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    gate_read(root)
    records = [json.loads(line) for line in
               (root / ".buildenv" / "audit" / "log.jsonl").read_text().splitlines()]
    assert records[-1]["dataset"] == "events" and records[-1]["rows"] == 60
    assert records[-1]["details"]["outcome"] == "read" and records[-1]["purpose"] == "build"


def test_a_build_trains_on_the_pinned_version_and_holds_out_the_same_keys(tmp_path):
    root = make_delta_repo(tmp_path)
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    code, out, err = invoke_cli(["build", "events", "--env", "tab", "--no-register"], root)
    assert code == 0, err
    lineage = json.loads((root / "dist" / "events" / "tab" / "buildenv.json").read_text())
    assert lineage["datasets"]["events"]["digest"] == lock_json(root)["datasets"]["events"][
        "digest"]
    first = lineage["metrics"]["rows"]
    # a new version adds rows; the rows held out of the first version stay held out
    deltalake.write_deltalake(str(root / "data" / "events"), batch(90, 150), mode="append")
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    from buildenv.data.evaluation import holdout_mask

    old, new = batch(0, 90), pa.concat_tables([batch(0, 90), batch(90, 150)])
    kept_old = holdout_mask(old, ["id"], 0.2)
    kept_new = holdout_mask(new, ["id"], 0.2)[:90]
    assert list(kept_old) == list(kept_new)
    assert first == 90 - int(sum(kept_old))


def test_a_table_on_s3_is_locked_and_read(tmp_path, s3):
    client, bucket = s3
    root = make_delta_repo(tmp_path, commits=1)
    uri = f"s3://{bucket}/tables/events"
    options = {"AWS_ALLOW_HTTP": "true"}
    deltalake.write_deltalake(uri, batch(0, 40), partition_by=["plan"], storage_options=options)
    deltalake.write_deltalake(uri, batch(40, 50), mode="append", storage_options=options)
    write_env(root, "tab", (root / "environments" / "tab.yaml").read_text()
              .replace("uri: data/events", f"uri: {uri}"))
    code, out, err = invoke_cli(["lock", "tab"], root)
    assert (code, err) == (0, ""), err
    entry = lock_json(root)["datasets"]["events"]
    assert entry["table"]["version"] == 1 and entry["rows"] == 50
    assert entry["table"]["base"] == uri
    assert gate_read(root).num_rows == 50
    deltalake.write_deltalake(uri, batch(50, 60), mode="append", storage_options=options)
    code, out, err = invoke_cli(["lock", "tab", "--check"], root)
    assert code == 1 and "version 2, the lock pins 1: 1 commit — WRITE append" in err


@pytest.mark.slow
def test_retrain_relocks_a_followed_table_to_its_newest_version(tmp_path):
    root = make_delta_repo(tmp_path)
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    deltalake.write_deltalake(str(root / "data" / "events"), batch(90, 150), mode="append")
    events = tmp_path / "events.jsonl"
    code, out, err = invoke_cli(["retrain", "tab", "--events", str(events)], root)
    assert code == 0, err
    assert lock_json(root)["datasets"]["events"]["table"]["version"] == 2
    records = [json.loads(line) for line in events.read_text().splitlines()]
    detect = next(r for r in records if r["step"] == "detect")
    assert detect["status"] == "changed" and "a new version of the table" in detect["message"]
    drift = next(r for r in records if r["step"] == "drift")
    assert drift["status"] in ("passed", "failed") and "against data/events" in drift["message"]
