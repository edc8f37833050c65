"""A real REAPI cache (BuildGrid on loopback): a model built once is a remote cache hit
for a machine with empty local caches."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from pants_toy_repo import MAIN_REPO, ToyRepo, make_toy_repo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def remote_store(tmp_path_factory: pytest.TempPathFactory):
    server_dir = tmp_path_factory.mktemp("buildgrid")
    proc = subprocess.run([str(MAIN_REPO / "tests/pants/start_buildgrid.sh"), str(server_dir)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    yield proc.stdout.strip()
    pid = int((server_dir / "buildgrid.pid").read_text())
    os.kill(pid, signal.SIGTERM)


def _counter(output: str, name: str) -> int:
    match = re.search(rf"^\s*{name}: (\d+)$", output, flags=re.M)
    assert match, f"no counter {name} in:\n{output}"
    return int(match.group(1))


def test_second_machine_gets_remote_cache_hits(tmp_path: Path, remote_store: str) -> None:
    repo: ToyRepo = make_toy_repo(tmp_path / "repo", tmp_path / "trainings.log")
    repo.pants("tailor", "::")
    store = tmp_path / "lmdb_store"
    remote = {
        "PANTS_REMOTE_CACHE_READ": "true",
        "PANTS_REMOTE_CACHE_WRITE": "true",
        "PANTS_REMOTE_STORE_ADDRESS": remote_store,
        "PANTS_REMOTE_INSTANCE_NAME": "",
        "PANTS_LOCAL_STORE_DIR": str(store),
    }
    target = "models:toy#a"

    repo.trained()
    repo.pants("--stats-log", "package", target, **remote)
    assert repo.trained() == ["toy a"]
    first = (repo.root / "dist/toy/a/buildenv.json").read_bytes()

    # A second machine: no local cache, no dist/.
    shutil.rmtree(store)
    shutil.rmtree(repo.root / "dist")
    proc = repo.pants("--stats-log", "package", target, **remote)
    assert repo.trained() == [], "the training ran again instead of coming from the remote cache"
    assert _counter(proc.stderr, "remote_cache_requests_cached") >= 1
    assert (repo.root / "dist/toy/a/buildenv.json").read_bytes() == first
