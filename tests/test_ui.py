"""`buildenv ui`: the project's own MLflow store in a browser."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from conftest import REPO_ROOT, write_repo
from services import free_port, wait_for

from buildenv.compile.registry import client
from buildenv.core.project import Project

pytestmark = pytest.mark.slow


def test_ui_serves_the_projects_store_and_stops_with_the_command(tmp_path):
    root = write_repo(tmp_path / "repo")
    client(Project.discover(root)).create_experiment("seen-in-the-ui")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("BUILDENV_TRACKING_URI", None)
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"  # files: the server logs a lot
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "buildenv", "ui", "--port", str(port)],
                                cwd=root, env=env, stdout=stdout, stderr=stderr)
    try:
        url = f"http://127.0.0.1:{port}"

        def listed() -> bool:
            request = urllib.request.Request(
                f"{url}/api/2.0/mlflow/experiments/search", method="POST",
                data=json.dumps({"max_results": 50}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                names = {e["name"] for e in json.load(response)["experiments"]}
            return "seen-in-the-ui" in names

        wait_for(listed, 300, "buildenv ui", proc, err)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, err.read_text()[-2000:]
    assert out.read_text().splitlines()[0] == (
        f"MLflow UI for sqlite:///{root.resolve()}/.buildenv/mlflow.db at "
        f"http://127.0.0.1:{port} (Ctrl-C stops it)")
    with pytest.raises(OSError, match="Connection refused"):  # the server went with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_a_tracking_server_needs_no_ui_of_ours(tmp_path):
    from conftest import invoke_cli

    root = write_repo(tmp_path / "repo")
    code, out, err = invoke_cli(["ui"], root,
                                env={"BUILDENV_TRACKING_URI": "http://mlflow.internal:5000"})
    assert (code, err) == (0, "")
    assert out == "the tracking URI is a server with its own UI: http://mlflow.internal:5000\n"
