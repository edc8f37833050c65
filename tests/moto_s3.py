"""An S3 bucket on a local moto server (offline: 127.0.0.1 only), as pytest fixtures:
`moto_endpoint` (one server per module) and `s3` (a fresh bucket, AWS variables pointing at the
server, the process-wide S3 client reset around the test; yields (client, bucket))."""

from __future__ import annotations

import uuid

import pytest
from conftest import moto_server_running

from buildenv.data import storage

__all__ = ["fresh_bucket", "moto_server"]


@pytest.fixture(scope="module", name="moto_endpoint")
def moto_server():
    yield from moto_server_running()


@pytest.fixture(name="s3")
def fresh_bucket(moto_endpoint, monkeypatch):
    """A fresh bucket on the moto server; the process-wide S3 client is reset around the test."""
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(storage, "_S3", None)
    boto3 = pytest.importorskip("boto3")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"buildenv-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    storage._S3 = None
