"""Test services for promotion, retraining and images: a small seeded repo, an `mlflow server`,
a throwaway PostgreSQL cluster and a Docker daemon.

Everything binds to 127.0.0.1 on a free port, lives in a temp dir, and is stopped by the
fixture that started it (by pid, never by name). Nothing here skips when a tool is missing
from PATH in CI: `.ci/run` installs them (see docs/production.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Pants runs tests with a scrubbed environment: find system tools on the usual paths too.
SYSTEM_PATH = os.pathsep.join(filter(None, [os.environ.get("PATH"), "/usr/local/sbin",
                                            "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin",
                                            "/bin"]))


def tool(name: str) -> str:
    """Absolute path of a system tool (skopeo, dockerd, debootstrap, runuser, tar)."""
    found = shutil.which(name, path=SYSTEM_PATH)
    if found is None:
        raise RuntimeError(f"{name} is not installed; .ci/run installs it (see "
                           "docs/production.md)")
    return found


def system_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": SYSTEM_PATH, **extra}

# --- a small, self-contained repository ------------------------------------------------------

PYPROJECT = """\
[project]
name = "mini"
version = "0"

[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.churn]
entry = "train.py:train"
environments = ["prod*"]
"""

ENV_YAML = """\
# The production environment of the test repo.
name: prod
datasets:
  events:
    uri: data/events-v1.parquet   # replaced by retrain --uri
    columns:
      tenure: {dtype: float64, nullable: false, range: [0, 100]}
      spend: {dtype: float64, nullable: false, range: [0, 1000]}
      plan: {dtype: string, nullable: false, domain: [basic, pro, team]}
      notes: {dtype: int64, serving: false}
      churned: {dtype: bool, nullable: false}
label: {dataset: events, column: churned, classes: [false, true]}
serving:
  stack: sklearn
  ops: [sklearn.pipeline.Pipeline, sklearn.compose.ColumnTransformer,
        sklearn.preprocessing.*, sklearn.linear_model.LogisticRegression]
  requirements: ["scikit-learn>=1.6,<2"]
promotion:
  metric: val_auc
  direction: maximize
  min_value: 0.65
  max_regression: 0.03
"""

TRAIN = '''\
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

FEATURES = ["tenure", "spend", "plan"]


def train(ctx):
    df = ctx.read("events", columns=["tenure", "spend", "plan", "churned"])
    X = df[FEATURES].copy()
    X["plan"] = X["plan"].astype(object)
    y = df["churned"].astype(bool).to_numpy()
    model = Pipeline([
        ("features", ColumnTransformer([
            ("plan", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["plan"]),
            ("numeric", StandardScaler(), ["tenure", "spend"]),
        ])),
        ("classifier", LogisticRegression(random_state=ctx.seed)),
    ])
    return model.fit(X, y)  # the environment holds out its evaluation rows and scores it
'''


def events(seed: int, rows: int = 1200, shuffle_labels: bool = False,
           corrupt_basic: float = 0.0) -> pd.DataFrame:
    """Churn events with a real signal (evaluation AUC ~0.75-0.8).

    `shuffle_labels` kills the signal (AUC ~0.5). `corrupt_basic` mimics a bad label backfill:
    in the training rows (those the environment does not hold out: the default 20% by a hash
    of the row without its label) that fraction of `basic`-plan rows is marked not churned, so
    a model trained on them is worse on the clean evaluation rows.
    """
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 100, rows).round(1)
    spend = rng.gamma(2.0, 60.0, rows).clip(0, 1000).round(2)
    plan = rng.choice(["basic", "pro", "team"], rows, p=[0.5, 0.3, 0.2])
    logit = 1.2 - 0.035 * tenure + 0.004 * spend + np.where(plan == "basic", 0.8, -0.4)
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    if shuffle_labels:
        churned = rng.permutation(churned)
    notes = rng.integers(0, 5, rows)
    if corrupt_basic:
        import pyarrow as pa

        from buildenv.data.evaluation import holdout_mask

        features = pa.table({"tenure": tenure, "spend": spend, "plan": plan, "notes": notes})
        training_part = ~holdout_mask(features, ["tenure", "spend", "plan", "notes"], 0.2)
        churned = churned & ~(training_part & (plan == "basic")
                              & (rng.random(rows) < corrupt_basic))
    return pd.DataFrame({"tenure": tenure, "spend": spend, "plan": plan, "notes": notes,
                         "churned": churned})


def write_events(root: Path, name: str, frame: pd.DataFrame) -> str:
    path = root / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return f"data/{name}"


def make_churn_repo(root: Path) -> Path:
    """The test repo: one environment `prod` with gates, one training `churn`, data v1."""
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "environments" / "prod.yaml").write_text(ENV_YAML)
    (root / "train.py").write_text(TRAIN)
    write_events(root, "events-v1.parquet", events(1))
    return root


def reset_champion(root: Path, model: str = "churn", alias: str = "prod-champion") -> None:
    """The registry as before any promotion: the champion alias unset, no history tags."""
    from buildenv.compile.registry import client
    from buildenv.core.project import Project
    from buildenv.release.champion import HISTORY_PREFIX

    c = client(Project.discover(root))
    registered = c.get_registered_model(model)
    if alias in (registered.aliases or {}):
        c.delete_registered_model_alias(model, alias)
    for key in registered.tags or {}:
        if key.startswith(HISTORY_PREFIX):
            c.delete_registered_model_tag(model, key)


# --- processes and ports --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s\n{tail}")


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process group we started (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


@contextlib.contextmanager
def mlflow_server(workdir: Path, backend_uri: str | None = None) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with one worker; yields its tracking URI."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend = backend_uri or f"sqlite:///{workdir / 'server.db'}"
    log = workdir / "mlflow-server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", backend,
           "--artifacts-destination", (workdir / "artifacts").as_uri()]
    env = system_env(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                start_new_session=True)
    try:
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/health"), 120, "mlflow server",
                 proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster owned by the `postgres` user; yields a SQLAlchemy URI."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "pgdata"
    sockets = workdir / "pgsock"
    sockets.mkdir(exist_ok=True)
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(workdir, "postgres")
        shutil.chown(sockets, "postgres")
        as_user = [tool("runuser"), "-u", "postgres", "--"]
        _traversable(workdir)
    subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "buildenv",
                    "--auth=trust", "--no-sync", "-E", "UTF8"], check=True,
                   capture_output=True)
    log = workdir / "postgres.log"
    with open(log, "wb") as log_file:  # the server writes to its own copy of the descriptor
        proc = subprocess.Popen(
            [*as_user, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-k", str(sockets), "-c", "fsync=off"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready() -> bool:
            return subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p",
                                   str(port)], capture_output=True).returncode == 0
        wait_for(ready, 60, "postgres", proc, log)
        subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p",
                        str(port), "-U", "buildenv", "mlflow"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://buildenv@127.0.0.1:{port}/mlflow"
    finally:
        stop(proc)


def _traversable(path: Path) -> None:
    """Let the postgres user reach a dir under root's tmp (pytest's tmp dirs are 0700)."""
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


# --- a local base image (no registry is reachable in CI) ------------------------------------

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "buildenv"
MIRROR = os.environ.get("BUILDENV_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def base_rootfs() -> Path:
    """Debian bookworm minbase + python3 (3.11, the venv's minor version) as a rootfs tarball.

    Built once per machine with debootstrap (needs root and the Debian mirror apt uses) and
    cached in ~/.cache/buildenv; later calls return the cached file.
    """
    target = CACHE / "base" / "bookworm-python3.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile_dir(target.parent))
    rootfs = work / "rootfs"
    try:
        subprocess.run([tool("debootstrap"), "--variant=minbase",
                        "--include=python3,ca-certificates", "bookworm", str(rootfs), MIRROR],
                       check=True, capture_output=True, timeout=1800, env=system_env())
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        tmp = work / "rootfs.tar"
        subprocess.run([tool("tar"), "-C", str(rootfs), "--sort=name", "--numeric-owner",
                        "--mtime=@0", "--exclude=./dev/*", "--exclude=./proc/*",
                        "--exclude=./sys/*", "-cf", str(tmp), "."], check=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def tempfile_dir(parent: Path) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=".build-", dir=parent)


# --- a Docker daemon --------------------------------------------------------------------------

def _docker_ok(host: str) -> bool:
    import docker

    client = docker.DockerClient(base_url=host, version="auto", timeout=5)
    try:
        return bool(client.ping())
    finally:
        client.close()


@contextlib.contextmanager
def docker_daemon(workdir: Path) -> Iterator[str]:
    """A reachable Docker daemon; yields its DOCKER_HOST.

    Uses DOCKER_HOST when it answers; otherwise starts Debian's dockerd (root) on a private
    socket: overlay2 storage, no iptables, no bridge (so containers run with --network host).
    Its data root is cached in ~/.cache/buildenv/docker, so imported base images survive runs.
    """
    given = os.environ.get("DOCKER_HOST")
    if given:
        with contextlib.suppress(Exception):
            if _docker_ok(given):
                yield given
                return
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "docker.sock"
    host = f"unix://{sock}"
    data_root = CACHE / "docker"
    data_root.mkdir(parents=True, exist_ok=True)
    log = workdir / "dockerd.log"
    cmd = [tool("dockerd"), "--host", host, "--data-root", str(data_root),
           "--exec-root", str(workdir / "exec"), "--pidfile", str(workdir / "docker.pid"),
           "--storage-driver", os.environ.get("BUILDENV_DOCKER_STORAGE", "overlay2"),
           "--iptables=false", "--ip6tables=false", "--bridge=none",
           "--containerd-namespace", "buildenv-tests", "--containerd-plugins-namespace",
           "buildenv-tests-plugins"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=system_env(),
                                start_new_session=True)
    try:
        wait_for(lambda: _docker_ok(host), 90, "dockerd", proc, log)
        yield host
    finally:
        stop(proc, timeout=30)
        _unmount_under(workdir / "exec")


def _unmount_under(root: Path) -> None:
    """dockerd leaves its netns bind mount behind: unmount it, so pytest can clean its tmp."""
    prefix = str(root.resolve())
    with contextlib.suppress(OSError):
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for point in sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")),
                            reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def base_image(host: str, tag: str = "buildenv-base:bookworm") -> str:
    """`docker import` the cached base rootfs once per daemon data root."""
    import docker

    client = docker.DockerClient(base_url=host, version="auto", timeout=600)
    try:
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        repository, _, name = tag.partition(":")
        with open(base_rootfs(), "rb") as data:
            client.api.import_image_from_data(data.read(), repository=repository, tag=name)
        client.images.get(tag)
        return tag
    finally:
        client.close()
