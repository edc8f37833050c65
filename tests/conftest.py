"""Shared fixtures for buildenv's tests. Names here are a stable API for every test file.

Fixtures
--------
``make_repo``
    A factory ``make_repo(root, envs=None, files=None, lock=False) -> Path`` that writes a small,
    seeded repository into ``root`` (usually ``tmp_path``) and returns ``root``:

    - ``pyproject.toml`` with ``[tool.buildenv]`` and one training, ``demo``
      (``train/demo.py:train``, environments ``["*"]``);
    - ``environments/base.yaml`` (root: datasets ``movies`` + ``ratings``, label, sklearn
      serving, monitoring, privacy) and ``environments/child.yaml`` (``extends: base``, only the
      movies uri changes);
    - ``data/movies.parquet`` (20 rows), ``data/movies-v2.parquet`` (20 other rows, same
      schema), ``data/ratings.parquet`` (60 rows) — seeded, byte-identical on every run;
    - ``train/demo.py``: a training that reads through ``ctx`` and fits a LogisticRegression.

    ``envs`` maps environment name -> YAML text to add or replace a file (``None`` removes one),
    ``files`` maps a repo-relative path -> text (or bytes) for anything else, and ``lock=True``
    runs ``buildenv lock`` on every environment afterwards.
``run_cli``
    ``run_cli(args, cwd, *, subprocess=False, env=None) -> (exit_code, stdout, stderr)``:
    runs ``buildenv ARGS`` with ``cwd`` as working directory, in-process via typer's CliRunner
    (fast; the default) or as ``python -m buildenv`` in a subprocess. ``BUILDENV_ROOT`` is
    unset so the root is discovered from ``cwd``; ``env`` adds/overrides variables.
``repo``
    ``make_repo(tmp_path)``: the default repository, not locked.

Trainings run in their own locked environments (docs/toolchains.md). Those are
content-addressed, so every test repository shares one store (``BUILDENV_TOOLCHAINS_DIR``,
default ``~/.cache/buildenv/test-toolchains``, or ``BUILDENV_TEST_TOOLCHAINS_DIR``): a
requirement set is resolved and installed once per machine, not once per test. A test of the
store itself sets its own directory.

The same helpers are importable as plain functions (``from conftest import write_repo,
invoke_cli, write_env, BASE_YAML, CHILD_YAML``) for module-level use.
"""

from __future__ import annotations

import os
import subprocess as _subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

__all__ = [
    "BASE_YAML",
    "CHILD_YAML",
    "PYPROJECT",
    "REPO_ROOT",
    "TOOLCHAINS",
    "TRAIN_DEMO",
    "invoke_cli",
    "movies_table",
    "ratings_table",
    "write_env",
    "write_parquet",
    "write_repo",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

TOOLCHAINS = Path(os.environ.get("BUILDENV_TEST_TOOLCHAINS_DIR")
                  or Path.home() / ".cache" / "buildenv" / "test-toolchains")
os.environ.setdefault("BUILDENV_TOOLCHAINS_DIR", str(TOOLCHAINS))


def _pip_find_links() -> str:
    """The wheel directories this machine's pip is configured with (PIP_FIND_LINKS, else
    pip's configuration files), comma-separated as uv reads them."""
    found = os.environ.get("PIP_FIND_LINKS", "")
    if not found:
        try:
            found = _subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, _subprocess.SubprocessError):
            found = ""
    return ",".join(found.split())


# uv, which resolves the trainings' environments, reads no pip configuration. A machine whose
# pip finds wheels in a local directory (here: the CPU build of torch, where PyPI's is the
# CUDA one) lends that directory to uv, as a user would with `find_links` (docs/toolchains.md).
if "UV_FIND_LINKS" not in os.environ and (_links := _pip_find_links()):
    os.environ["UV_FIND_LINKS"] = _links

PYPROJECT = """\
[project]
name = "demo-repo"
version = "0.0.0"

[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.demo]
entry = "train/demo.py:train"
environments = ["*"]
"""

# Line numbers of this file are pinned by tests: append, don't insert.
BASE_YAML = """\
schema: 1
name: base
description: The root environment of the test repo.
datasets:
  movies:
    uri: data/movies.parquet
    format: parquet
    columns:
      movie_id: {dtype: int64, nullable: false}
      genre: {dtype: string, nullable: false, domain: [comedy, drama, horror]}
      runtime_minutes: {dtype: float64, range: [1, 600]}
      critic_score: {dtype: float64, range: [0, 100], serving: false}
  ratings:
    uri: data/ratings.parquet
    columns:
      movie_id: {dtype: int64, nullable: false}
      liked: {dtype: bool, nullable: false}
label: {dataset: ratings, column: liked, classes: [false, true]}
serving:
  stack: sklearn
  ops: [sklearn.pipeline.Pipeline, sklearn.preprocessing.*, sklearn.linear_model.*]
  requirements: ["scikit-learn>=1.6,<2"]
monitoring:
  drift:
    columns:
      genre: {linf: 0.05}
privacy:
  restricted: [ratings]
"""

CHILD_YAML = """\
name: child
extends: base
datasets:
  movies:
    uri: data/movies-v2.parquet
"""

TRAIN_DEMO = '''\
"""A tiny training over the test repo's data."""

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def train(ctx):
    movies = ctx.read("movies", columns=["movie_id", "runtime_minutes"])
    ratings = ctx.read("ratings", columns=["movie_id", "liked"])
    df = ratings.merge(movies, on="movie_id")
    X, y = df[["runtime_minutes"]], df["liked"]
    model = make_pipeline(StandardScaler(), LogisticRegression(random_state=ctx.seed))
    model.fit(X, y)
    ctx.log_metric("train_accuracy", float((model.predict(X) == y).mean()))
    return model
'''

GENRES = ["comedy", "drama", "horror"]


def movies_table(seed: int, n: int = 20) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "movie_id": pa.array(np.arange(1, n + 1), pa.int64()),
        "genre": pa.array([GENRES[i] for i in rng.integers(0, 3, n)], pa.string()),
        "runtime_minutes": pa.array(np.round(rng.uniform(80, 160, n), 1), pa.float64()),
        "critic_score": pa.array(np.round(rng.uniform(0, 100, n), 1), pa.float64()),
    })


def ratings_table(seed: int, n: int = 60, movies: int = 20) -> pa.Table:
    rng = np.random.default_rng(seed)
    movie_id = rng.integers(1, movies + 1, n)
    liked = rng.random(n) < 0.5
    liked[:2] = [True, False]  # both classes, whatever the seed
    return pa.table({"movie_id": pa.array(movie_id, pa.int64()),
                     "liked": pa.array(liked, pa.bool_())})


def write_parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_env(root: Path, name: str, text: str) -> Path:
    """Write environments/<name>.yaml (dedented) and return its path."""
    path = Path(root) / "environments" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_repo(root: Path, envs: Mapping[str, str | None] | None = None,
               files: Mapping[str, str | bytes] | None = None, lock: bool = False) -> Path:
    """Write the small seeded test repository into `root` (see the module docstring)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    write_parquet(root / "data" / "movies.parquet", movies_table(1))
    write_parquet(root / "data" / "movies-v2.parquet", movies_table(2))
    write_parquet(root / "data" / "ratings.parquet", ratings_table(3))
    (root / "train").mkdir(exist_ok=True)
    (root / "train" / "demo.py").write_text(TRAIN_DEMO, encoding="utf-8")
    all_envs: dict[str, str | None] = {"base": BASE_YAML, "child": CHILD_YAML}
    all_envs.update(envs or {})
    for name, text in all_envs.items():
        path = root / "environments" / f"{name}.yaml"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            write_env(root, name, text)
    for rel, content in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if lock:
        code, out, err = invoke_cli(["lock"], root)
        assert code == 0, (out, err)
    return root


def drop_store(root: Path) -> None:
    """Remove the local object store, where `buildenv lock` kept the pinned bytes: tests of
    the gate refusing changed bytes need them to exist nowhere else (else the gate reads the
    pinned bytes from the store, as it should)."""
    import shutil

    shutil.rmtree(Path(root) / ".buildenv" / "objects", ignore_errors=True)


def invoke_cli(args: Sequence[object], cwd: Path | str, *, subprocess: bool = False,
               env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """Run `buildenv ARGS` in `cwd`; returns (exit_code, stdout, stderr)."""
    argv = [str(a) for a in args]
    if subprocess:
        full_env = {k: v for k, v in os.environ.items() if k != "BUILDENV_ROOT"}
        # The child must import this buildenv (under Pants it lives in the test's sandbox).
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        full_env.update(env or {})
        proc = _subprocess.run([sys.executable, "-m", "buildenv", *argv], cwd=cwd,
                               capture_output=True, text=True, env=full_env, timeout=300)
        return proc.returncode, proc.stdout, proc.stderr
    from typer.testing import CliRunner

    from buildenv.cli import app

    run_env: dict[str, str | None] = {"BUILDENV_ROOT": None}
    run_env.update(env or {})
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, argv, env=run_env, catch_exceptions=False,
                                    prog_name="buildenv")
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


def recorded_cancels(monkeypatch) -> list[bool]:
    """Every `ray.cancel` from now on, by its `force`: a stop must not cancel tasks by force
    while they can still stop by their flag."""
    import ray

    forces: list[bool] = []
    cancel = ray.cancel

    def recording(ref, *, force=False, recursive=True):
        forces.append(force)
        return cancel(ref, force=force, recursive=recursive)

    monkeypatch.setattr(ray, "cancel", recording)
    return forces


@pytest.fixture
def hash_calls(monkeypatch) -> list[str]:
    """Every full hash of a file's bytes by the lock (stat-cache misses), by uri."""
    from buildenv.data.lock import digests

    calls: list[str] = []
    real = digests._digest_bytes

    def counting(location, algorithm):
        calls.append(location.uri)
        return real(location, algorithm)

    monkeypatch.setattr(digests, "_digest_bytes", counting)
    return calls


@pytest.fixture
def make_repo() -> Callable[..., Path]:
    return write_repo


@pytest.fixture
def run_cli() -> Callable[..., tuple[int, str, str]]:
    return invoke_cli


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path)


# --- S3 on a local moto server (offline: 127.0.0.1 only) --------------------------------------

@pytest.fixture(scope="module")
def moto_endpoint():
    """A moto S3 server on a free local port, for the tests of one module."""
    yield from moto_server_running()


def moto_server_running():
    """Start a moto S3 server on a free local port; yield its endpoint; stop it (fixtures of
    several modules share this)."""
    import socket
    import time
    import urllib.request

    pytest.importorskip("moto.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = _subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                              str(port)], stdout=_subprocess.DEVNULL, stderr=_subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("moto server did not start within 30 s")
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except _subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A fresh bucket on the moto server, its endpoint and credentials in the AWS variables
    (what buildenv, delta-rs and PyIceberg read); the process-wide S3 client is reset around
    the test."""
    import uuid

    boto3 = pytest.importorskip("boto3")
    from buildenv.data import storage

    for key in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(storage, "_S3", None)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"buildenv-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    storage._S3 = None


def kept_copy_of_data(root: Path, path: Path) -> bool:
    """Whether `path` is the object store's kept copy of one of the repository's data files
    (`.buildenv/objects/`, readable by its owner only, the very bytes of a file under `data/`):
    the one place a restricted dataset's bytes may be besides the dataset itself
    (docs/tables.md). Anything else holding them is a leak."""
    objects = root / ".buildenv" / "objects"
    if not path.is_relative_to(objects) or path.stat().st_mode & 0o777 != 0o400:
        return False
    data = path.read_bytes()
    return any(f.is_file() and f.stat().st_size == len(data) and f.read_bytes() == data
               for f in (root / "data").rglob("*"))


def process_alive(pid: int) -> bool:
    """Is `pid` running (a zombie is not)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
