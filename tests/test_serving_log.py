"""The serving app's request log (BUILDENV_SERVE_LOG, issue #27): accepted rows as JSON lines
holding the model's inputs only, which `buildenv validate --serving` reads; whole lines under
concurrent requests and concurrent processes; after a kill, every line is whole and every
answered request is in it; a model with a restricted input does not log at all.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import invoke_cli, write_repo
from services import free_port, stop, wait_for
from serving_app import exchange, make_app, request

SENTINEL = "QZLOGSENTINEL"
CLIENTS = 6
REQUESTS = 15


def start(root: Path, port: int, log: Path, *extra: str) -> subprocess.Popen:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(root),
           "BUILDENV_MODEL": str(root / "model"), "PORT": str(port), "HOST": "127.0.0.1",
           "BUILDENV_SERVE_LOG": str(log), "BUILDENV_SERVE_THREADS": "4",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = open(root / f"serve-{port}.log", "w")  # noqa: SIM115 (the server holds it)
    return subprocess.Popen([sys.executable, str(root / "app" / "serve.py"), *extra], env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def ping(port: int) -> bool:
    try:
        return exchange(port, b"GET /ping HTTP/1.0\r\n\r\n", wait=5)[0] == 200
    except OSError:
        return False


def running(root: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = start(root, port, log)
    wait_for(lambda: ping(port), 60, "the serving app", proc)
    return proc, port


def lines_of(log: Path) -> list[dict]:
    text = log.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_accepted_rows_are_logged_with_the_model_inputs_only(tmp_path):
    root = make_app(tmp_path / "app")
    log = tmp_path / "requests.jsonl"
    proc, port = running(root, log)
    try:
        status, _, _ = exchange(port, request({"dataframe_records": [
            {"x1": 1.5, "cat": "a", "email": SENTINEL}, {"x1": float("nan"), "cat": "b"}]}))
        assert status == 400  # x1 is not nullable: refused, not logged
        status, _, _ = exchange(port, request({"dataframe_records": [
            {"x1": 1.5, "cat": "a", "email": SENTINEL}, {"x1": -2, "cat": "b"}]}))
        assert status == 200
        status, _, _ = exchange(port, request({"dataframe_split": {
            "columns": ["cat", "x1", "note"], "data": [["c", 3.25, SENTINEL]]}}))
        assert status == 200
    finally:
        stop(proc)
    assert lines_of(log) == [{"x1": 1.5, "cat": "a"}, {"x1": -2, "cat": "b"},
                             {"x1": 3.25, "cat": "c"}]
    assert SENTINEL not in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # ... in the format `validate --serving` reads
    repo = write_repo(tmp_path / "repo", envs={"served": (
        "name: served\ndatasets:\n  t:\n    uri: data/movies.parquet\n    columns:\n"
        "      x1: {dtype: float64, nullable: false, range: [0, 10]}\n"
        "      cat: {dtype: string, domain: [a, b]}\n")})
    (repo / "requests.jsonl").write_bytes(log.read_bytes())
    code, out, err = invoke_cli(["validate", "served", "--serving", "requests.jsonl"], repo)
    assert code == 1
    assert [line.split(": ", 2)[1:] for line in err.splitlines() if "error[" in line] == [
        ["error[BE205]", "t.x1 (serving data): 1 of 3 non-null values (fraction 0.3333) are "
         "outside range [0, 10] (1 below, 0 above); e.g. -2.0"],
        ["error[BE204]", "t.cat (serving data): 1 of 3 non-null values (fraction 0.3333) are "
         "outside the domain ('c': 1)"]]


def _client(port: int, client: int, answered: list, errors: list) -> None:
    for i in range(REQUESTS):
        rows = [{"x1": client * 1000 + i + j / 10, "cat": f"c{client}"} for j in range(3)]
        try:
            status, _, _ = exchange(port, request({"dataframe_records": rows}))
        except (OSError, AssertionError, ValueError) as exc:  # no (whole) answer: not counted
            errors.append(exc)
            continue
        if status == 200:
            answered.append(rows)


def test_concurrent_requests_and_processes_write_whole_lines(tmp_path):
    root = make_app(tmp_path / "app")
    log = tmp_path / "requests.jsonl"
    servers = [running(root, log) for _ in range(2)]  # two processes, one log
    answered: list = []
    errors: list = []
    try:
        threads = [threading.Thread(target=_client, args=(servers[c % 2][1], c, answered,
                                                          errors)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for proc, _ in servers:
            stop(proc)
    assert not errors and len(answered) == CLIENTS * REQUESTS
    logged = lines_of(log)
    assert len(logged) == CLIENTS * REQUESTS * 3
    # a request's rows are consecutive: one append each, never interleaved
    for start_at in range(0, len(logged), 3):
        block = logged[start_at:start_at + 3]
        assert len({row["cat"] for row in block}) == 1
        assert [round(row["x1"] % 1, 1) for row in block] == [0.0, 0.1, 0.2]
    assert sorted(map(json.dumps, logged)) == sorted(json.dumps(r) for rows in answered
                                                     for r in rows)


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.6])
def test_a_killed_server_leaves_whole_lines_and_every_answered_request(tmp_path, delay):
    root = make_app(tmp_path / "app")
    log = tmp_path / "requests.jsonl"
    proc, port = running(root, log)
    answered: list = []
    errors: list = []
    threads = [threading.Thread(target=_client, args=(port, c, answered, errors))
               for c in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    for t in threads:
        t.join()
    logged = lines_of(log) if log.exists() else []
    assert len(logged) % 3 == 0
    have = {json.dumps(r) for r in logged}
    assert all(json.dumps(r) in have for rows in answered for r in rows)


def test_a_model_with_a_restricted_input_does_not_log(tmp_path):
    root = make_app(tmp_path / "app")
    config_path = root / "app" / "serving.json"
    config = json.loads(config_path.read_text())
    config["inputs"]["cat"]["restricted"] = True
    config_path.write_text(json.dumps(config))
    log = tmp_path / "requests.jsonl"
    proc = start(root, free_port(), log)
    assert proc.wait(60) != 0
    message = "".join(p.read_text() for p in root.glob("serve-*.log"))
    assert "BUILDENV_SERVE_LOG is set, but the model's inputs cat come from restricted " \
        "datasets of environment prod: requests are not logged" in message
    assert not log.exists()
