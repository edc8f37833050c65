"""Locking datasets on S3, against a local moto server (offline: 127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli, movies_table, write_repo
from moto_s3 import fresh_bucket, moto_server  # noqa: F401 (fixtures `s3`, `moto_endpoint`)

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

S3_ENV = """\
name: remote
datasets:
  movies:
    uri: s3://{bucket}/movies/2026.parquet
    columns:
      movie_id: {{dtype: int64, nullable: false}}
      genre: {{dtype: string, domain: [comedy, drama, horror]}}
      runtime_minutes: {{dtype: float64, range: [1, 600]}}
      critic_score: {{dtype: float64, range: [0, 100], serving: false}}
"""


def _parquet_bytes(seed: int, rows: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(movies_table(seed, rows), sink)
    return sink.getvalue()


def _repo(tmp_path: Path, bucket: str) -> Path:
    return write_repo(tmp_path, envs={"remote": S3_ENV.format(bucket=bucket)})


def _lock(root: Path) -> dict:
    import json

    return json.loads((root / "environments" / "remote.lock.json").read_text())


def test_s3_digest_equals_local_sha256(tmp_path, s3):
    client, bucket = s3
    data = _parquet_bytes(1, 20)
    local = tmp_path / "local.parquet"
    local.write_bytes(data)
    client.put_object(Bucket=bucket, Key="movies/2026.parquet", Body=data)
    root = _repo(tmp_path / "repo", bucket)

    code, out, err = invoke_cli(["lock", "remote"], root)
    assert (code, err) == (0, ""), err
    assert out == "remote: updated (1 dataset, 20 rows)\n"
    locked = _lock(root)["datasets"]["movies"]
    assert locked == {"uri": f"s3://{bucket}/movies/2026.parquet", "format": "parquet",
                      "digest": "sha256:" + hashlib.sha256(local.read_bytes()).hexdigest(),
                      "size": len(data), "rows": 20}
    code, out, err = invoke_cli(["lock", "--check", "remote"], root)
    assert (code, out, err) == (0, "1 lock(s) up to date\n", "")


def test_changed_object_is_be051(tmp_path, s3):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="movies/2026.parquet", Body=_parquet_bytes(1, 20))
    root = _repo(tmp_path, bucket)
    assert invoke_cli(["lock", "remote"], root)[0] == 0
    old = _lock(root)["datasets"]["movies"]["digest"]

    changed = _parquet_bytes(9, 25)
    client.put_object(Bucket=bucket, Key="movies/2026.parquet", Body=changed)
    new = "sha256:" + hashlib.sha256(changed).hexdigest()
    code, out, err = invoke_cli(["lock", "--check", "remote"], root)
    assert (code, out) == (1, "")
    uri = f"s3://{bucket}/movies/2026.parquet"
    assert err.splitlines() == [
        f"environments/remote.yaml:4:5: error[BE051]: dataset 'movies' changed since it was "
        f"locked: {old} -> {new} ({uri})",
        f"  hint: if the new data is intended, review `buildenv drift remote --dataset movies "
        f"--against {uri}` and run `buildenv lock remote`",
    ]


def test_missing_object_is_be053(tmp_path, s3):
    _, bucket = s3
    root = _repo(tmp_path, bucket)
    code, out, err = invoke_cli(["lock", "remote"], root)
    assert code == 1
    assert err.splitlines() == [
        f"environments/remote.yaml:4:5: error[BE053]: dataset 'movies': cannot read "
        f"'s3://{bucket}/movies/2026.parquet': file not found",
    ]
    assert not (root / "environments" / "remote.lock.json").exists()


def test_validate_reads_from_s3(tmp_path, s3):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="movies/2026.parquet", Body=_parquet_bytes(1, 20))
    root = _repo(tmp_path, bucket)
    assert invoke_cli(["validate", "remote"], root) == (0, "remote: 1 dataset(s) valid\n", "")
