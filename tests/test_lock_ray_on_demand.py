"""`executor = "ray"` costs a lock nothing when the stat cache vouches for every file: Ray is
started only when a file must be hashed, from the main thread, which a hashing thread asks
(`Executor.defer`/`serve`). A user who sets Ray for builds paid a Ray start (16 s under load)
on every relock of a directory dataset before."""

from __future__ import annotations

import os
import shutil

import pytest
from partitioned_repo import ENV, age, make_partitioned_repo, write_file

from buildenv.core.project import Project
from buildenv.data.executor import RayExecutor
from buildenv.env.resolve import Multiverse
from buildenv.labels.locking import lock_environments

pytestmark = pytest.mark.slow

# a second directory dataset declared as the first: two datasets, hashed from two threads
MORE = ENV[ENV.index("  events:\n"):ENV.index("label:")].replace(
    "  events:", "  more:").replace("data/events/", "data/more/")


def test_ray_is_started_only_when_a_file_must_be_hashed(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    root = make_partitioned_repo(tmp_path)
    shutil.copytree(root / "data/events", root / "data/more")  # two datasets: two threads
    env = root / "environments/ev.yaml"
    env.write_text(env.read_text().replace("label:", MORE + "label:"))
    age(root)
    started: list[str] = []
    init = RayExecutor._init

    def counted(self, ray):
        started.append("ray")
        return init(self, ray)

    monkeypatch.setattr(RayExecutor, "_init", counted)

    def lock():
        executor = RayExecutor(address="", num_cpus=2, object_store_mb=100, timeout=120)
        try:
            results, problems = lock_environments(Multiverse(Project.discover(root)), ["ev"],
                                                  executor=executor)
        finally:
            executor.close()
        assert problems == []
        return results[0][1]

    first = lock()  # every file to hash: a hashing thread asked, the main thread started Ray
    assert started == ["ray"]
    assert len(first.datasets["more"].manifest.files) == len(first.datasets["events"].manifest.files)

    again = lock()  # the stat cache vouches for every file: no Ray
    assert started == ["ray"]
    assert again.to_json() == first.to_json()

    age(root, write_file(root, 1, 7, seed=4242))  # one new file: Ray again, and it is pinned
    third = lock()
    assert started == ["ray", "ray"]
    paths = [f.path for f in third.datasets["events"].manifest.files]
    assert len(paths) == len(first.datasets["events"].manifest.files) + 1


def test_a_cluster_that_does_not_answer_when_a_thread_asks_is_named(tmp_path):
    """The connection a hashing thread asks for fails in the main thread: the lock ends with
    the cluster's diagnostic (exit 2), and neither the asking thread nor the pool hangs."""
    pytest.importorskip("ray")
    import socket
    import subprocess
    import sys

    from conftest import REPO_ROOT

    root = make_partitioned_repo(tmp_path)
    shutil.copytree(root / "data/events", root / "data/more")
    env = root / "environments/ev.yaml"
    env.write_text(env.read_text().replace("label:", MORE + "label:"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens once closed
    proc = subprocess.run([sys.executable, "-m", "buildenv", "lock", "ev", "--executor", "ray"],
                          cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT),
                               "BUILDENV_RAY_ADDRESS": f"127.0.0.1:{port}",
                               "BUILDENV_RAY_TIMEOUT": "5"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error[BE881]" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (root / "environments/ev.lock.json").exists()
