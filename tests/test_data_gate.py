"""The data gate: one typed reader per format, verified reads, pinned bytes, evaluation split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import drop_store, invoke_cli

from buildenv.core.project import Project
from buildenv.data.evaluation import holdout_mask, key_hash
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.env.resolve import Multiverse

CSV_ENV = """\
name: csv
datasets:
  t:
    uri: data/t.csv
    format: csv
    columns:
      code: {dtype: string, domain: ["007", "042"]}
      note: {dtype: string}
      n: {dtype: int64}
      at: {dtype: timestamp}
"""


def gate_for(root: Path, env: str, purpose: str = "test", pins: dict | None = None) -> Gate:
    res = Multiverse(Project.discover(root)).resolve(env)
    return Gate(Project.discover(root), res.env, purpose, pins=pins or {}, where=res)


def csv_repo(tmp_path: Path, text: str) -> Path:
    (tmp_path / "environments").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "environments" / "csv.yaml").write_text(CSV_ENV)
    (tmp_path / "data" / "t.csv").write_text(text)
    return tmp_path


# --- one reader, configured once ---------------------------------------------------------------

def test_csv_is_typed_by_the_environment_and_empty_means_null(tmp_path):
    root = csv_repo(tmp_path, 'code,note,n,at\n007,"",1,2026-01-02T03:04:05Z\n'
                              '042,,,2026-01-02 03:04:05\n,"a\nb",3,2026-01-02\n')
    with gate_for(root, "csv").open("t", expect=None) as read:
        rows = read.table(["code", "note", "n", "at"]).to_pylist()
    assert [r["code"] for r in rows] == ["007", "042", None]   # text, not the number 7
    assert [r["note"] for r in rows] == ["", None, "a\nb"]     # quoted "" is a value
    assert [r["n"] for r in rows] == [1, None, 3]
    assert [r["at"].isoformat() for r in rows] == [
        "2026-01-02T03:04:05+00:00", "2026-01-02T03:04:05+00:00", "2026-01-02T00:00:00+00:00"]


def test_validate_and_training_read_the_same_nulls(tmp_path):
    """An empty cell in a string column with a domain is null for validation too (it used to
    be the value "" and fail the domain)."""
    root = csv_repo(tmp_path, "code,note,n,at\n007,x,1,2026-01-01\n,y,2,2026-01-01\n")
    code, out, err = invoke_cli(["validate", "csv"], root)
    assert (code, err) == (0, ""), err


def test_na_text_is_a_value_not_a_null(tmp_path):
    root = csv_repo(tmp_path, "code,note,n,at\n007,NA,NA,2026-01-01\n")
    code, out, err = invoke_cli(["validate", "csv"], root)
    assert code == 1
    assert ("error[BE201]: dataset 't', column 'n', data row 1: CSV conversion error to int64: "
            "invalid value 'NA'") in err


def test_parquet_narrower_types_are_widened_for_training(tmp_path, repo):
    table = pa.table({"movie_id": pa.array([1, 2], pa.int32()), "liked": [True, False]})
    pq.write_table(table, repo / "data" / "ratings.parquet")
    with gate_for(repo, "base").open("ratings", expect=None) as read:
        assert read.schema.field("movie_id").type == pa.int32()
        assert read.table(["movie_id"]).schema.field("movie_id").type == pa.int64()


# --- verified reads ----------------------------------------------------------------------------

def test_a_read_is_verified_against_the_pin(repo):
    data = (repo / "data" / "movies.parquet").read_bytes()
    import hashlib

    good = "sha256:" + hashlib.sha256(data).hexdigest()
    with gate_for(repo, "base", pins={"movies": good}).open("movies") as read:
        assert read.table(["movie_id"]).num_rows == 20
        assert read.digest == good
    wrong = "sha256:" + "0" * 64
    with (gate_for(repo, "base", pins={"movies": wrong}).open("movies") as read,
          pytest.raises(GateError) as caught):
        read.table(["movie_id"])
    d = caught.value.diagnostic
    assert d.code == "BE055" and good in d.message and wrong in d.message
    assert "dataset 'movies' does not match the lock" in d.message


def test_bytes_are_pinned_when_the_file_is_replaced_during_the_read(repo):
    """The gate decodes the file it opened: a new file renamed over the path mid-read is not
    what is read (and the digest is of what was read)."""
    path = repo / "data" / "movies.parquet"
    before = path.read_bytes()
    with gate_for(repo, "base").open("movies", expect=None) as read:
        replacement = path.with_suffix(".new")
        pq.write_table(pa.table({"movie_id": pa.array([99], pa.int64())}), replacement)
        os.replace(replacement, path)
        table = read.table(["movie_id"])
    import hashlib

    assert table.num_rows == 20
    assert read.digest == "sha256:" + hashlib.sha256(before).hexdigest()


def test_a_write_during_the_read_is_refused(repo):
    path = repo / "data" / "movies.parquet"
    with gate_for(repo, "base").open("movies", expect=None) as read:
        schema = read.schema
        with open(path, "r+b") as handle:  # an in-place writer
            handle.seek(0, os.SEEK_END)
            handle.write(b"\0")
        with pytest.raises(GateError) as caught:
            read.table(list(schema.names))
    assert caught.value.diagnostic.code == "BE056"


TRAIN_RACE = """
import os, pyarrow as pa, pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression


def train(ctx):
    # another writer lands a new version after the build checked the lock
    path = os.path.join("data", "ratings.parquet")
    pq.write_table(pa.table({"movie_id": pa.array([1, 2, 3, 4], pa.int64()),
                             "liked": [True, False, True, False]}), path + ".tmp")
    os.replace(path + ".tmp", path)
    try:
        df = ctx.read("ratings", columns=["movie_id", "liked"])
    except Exception:
        df = None  # a training that swallows the error gets nowhere either
    import pandas as pd
    df = pd.DataFrame({"movie_id": [1, 2, 3, 4], "liked": [True, False, True, False]})
    return LogisticRegression().fit(df[["movie_id"]], df["liked"])
"""


def test_build_refuses_bytes_that_changed_after_the_lock_check(repo):
    code, out, err = invoke_cli(["lock"], repo)
    assert code == 0, err
    drop_store(repo)  # the pinned bytes are nowhere else
    (repo / "train" / "demo.py").write_text(TRAIN_RACE)
    code, out, err = invoke_cli(["build", "demo", "--env", "base", "--no-register"], repo)
    assert code == 1
    # the gate refuses the new bytes (BE055); a training process that writes a dataset file
    # is refused before that (BE322), sandboxed or not
    assert "error[BE055]: dataset 'ratings' does not match the lock: expected sha256:" in err \
        or "error[BE322]: the training opened 'data/ratings.parquet.tmp' directly" in err, err
    assert not (repo / "dist" / "demo" / "base").exists()  # nothing trained on it was emitted


TRAIN_COUNTS = TRAIN_RACE.replace(
    "        df = ctx.read(\"ratings\", columns=[\"movie_id\", \"liked\"])",
    "        df = ctx.read(\"ratings\", columns=[\"movie_id\", \"liked\"])\n"
    "        ctx.log_metric(\"rows_read\", float(len(df)))")


def test_a_build_reads_the_pinned_bytes_from_the_store_when_the_file_changed(repo):
    """The lock kept the pinned bytes: a new version landing mid-build is not what is read."""
    code, out, err = invoke_cli(["lock"], repo)
    assert code == 0, err
    (repo / "train" / "demo.py").write_text(TRAIN_COUNTS)
    code, out, err = invoke_cli(["build", "demo", "--env", "base", "--no-register"], repo)
    if code == 1:  # the training's own write into the dataset was refused (BE322)
        assert "error[BE322]: the training opened 'data/ratings.parquet.tmp' directly" in err
        return
    assert code == 0, err
    lineage = json.loads((repo / "dist" / "demo" / "base" / "buildenv.json").read_text())
    assert lineage["metrics"]["rows_read"] > 4  # the 60 pinned rows less the holdout
    assert lineage["datasets"]["ratings"]["digest"] == json.loads(
        (repo / "environments" / "base.lock.json").read_text())["datasets"]["ratings"]["digest"]


# --- the evaluation split ------------------------------------------------------------------------

def test_key_hash_is_stable_and_documented():
    """The v1 key hash is a contract: held-out rows must stay held out across versions and
    machines. These values are pinned; changing them re-splits every user's data."""
    table = pa.table({"id": pa.array([0, 1, 2, None], pa.int64()),
                      "name": pa.array(["a", "b", None, "d"])})
    assert [int(v) for v in key_hash(table, ["id"])] == [
        int(v) for v in key_hash(pa.table({"id": pa.array([0, 1, 2, None], pa.int32())}),
                                 ["id"])]  # the stored width does not matter
    assert key_hash(table, ["id", "name"]).tolist() == [
        key_hash(table.slice(i, 1), ["id", "name"])[0] for i in range(4)]  # row-local
    assert key_hash(table, ["id", "name"]).tolist() == [
        _reference_hash([0, "a"]), _reference_hash([1, "b"]), _reference_hash([2, None]),
        _reference_hash([None, "d"])]
    import datetime as dt

    mixed = pa.table({"d": pa.array([dt.date(1970, 1, 3), None], pa.date32()),
                      "b": pa.array([True, False])})
    assert key_hash(mixed, ["d", "b"]).tolist() == [_reference_hash([2, 1]),
                                                    _reference_hash([None, 0])]
    floats = pa.table({"x": pa.array([0.0, -0.0, float("nan"), 1.5])})
    codes = key_hash(floats, ["x"]).tolist()
    assert codes[0] == codes[1] and codes[2] == _reference_hash([float("nan")])
    assert codes[3] == _reference_hash([1.5])


def _reference_hash(values: list) -> int:
    """The key hash as docs/data.md specifies it, one row at a time in plain Python."""
    import hashlib
    import math
    import struct

    mask = (1 << 64) - 1

    def mix(x: int) -> int:
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    h = 0
    for value in values:
        if value is None:
            code = 0x6E756C6C6E756C6C
        elif isinstance(value, str):
            code = int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(),
                                  "little")
        elif isinstance(value, float):
            value = 0.0 if value == 0 else (math.nan if math.isnan(value) else value)
            code = mix(struct.unpack("<Q", struct.pack("<d", value))[0])
        else:
            code = mix(value & mask)
        h = mix((h * 0x9E3779B97F4A7C15 + code) & mask)
    return h


def test_holdout_fraction_and_stability_across_versions():
    ids = pa.table({"id": pa.array(np.arange(100_000), pa.int64())})
    held = holdout_mask(ids, ["id"], 0.2)
    assert abs(held.mean() - 0.2) < 0.005
    more = pa.table({"id": pa.array(np.arange(150_000), pa.int64())})  # a later export
    assert (holdout_mask(more, ["id"], 0.2)[:100_000] == held).all()


# --- verified snapshots: the lock's stat cache vouches for an unchanged open file ---------------

def test_a_file_the_lock_just_hashed_is_not_hashed_again(repo):
    code, out, err = invoke_cli(["lock"], repo)
    assert code == 0, err
    import json
    import time

    lock = json.loads((repo / "environments" / "base.lock.json").read_text())
    pins = {name: entry["digest"] for name, entry in lock["datasets"].items()}
    cache = repo / ".buildenv" / "statcache.json"
    entries = json.loads(cache.read_text())["entries"]
    # entries: [size, mtime_ns, ctime_ns, inode, device, hashed_at_ns, digest, size, rows]
    for entry in entries.values():  # as if hashed a while ago: outside the racy window
        entry[5] = time.time_ns()
        entry[1] -= 5_000_000_000
    path = repo / "data" / "movies.parquet"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 5_000_000_000))
    key = next(k for k in entries if k.endswith("movies.parquet"))
    entries[key][1:3] = [path.stat().st_mtime_ns, path.stat().st_ctime_ns]
    cache.write_text(json.dumps({"version": 2, "entries": entries}))
    with gate_for(repo, "base", pins=pins).open("movies") as read:
        assert read._pinned._digest == pins["movies"]  # vouched before any decoding
        assert read.table(["movie_id"]).num_rows == 20
        assert read._pinned._thread is None  # nothing was hashed


def test_an_in_place_edit_that_restores_mtime_is_still_caught(repo):
    """Size and mtime can be put back after a write; ctime cannot: the stat cache stops
    vouching and the read is hashed, which finds the edit."""
    code, out, err = invoke_cli(["lock"], repo)
    assert code == 0, err
    drop_store(repo)
    lock = json.loads((repo / "environments" / "base.lock.json").read_text())
    pins = {name: entry["digest"] for name, entry in lock["datasets"].items()}
    path = repo / "data" / "movies.parquet"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in a data page
    with open(path, "r+b") as handle:
        handle.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with gate_for(repo, "base", pins=pins).open("movies") as read:
        assert read._pinned._digest is None  # not vouched: its ctime moved
        with pytest.raises(GateError) as caught:
            read.verify()
    assert caught.value.diagnostic.code == "BE055"
