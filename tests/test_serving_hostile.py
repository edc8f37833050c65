"""The serving app (buildenv/serving/serve.py) against hostile clients, over raw sockets.

The app runs as in an image (`python3 app/serve.py`, serving.json beside it) with small limits
so that every limit is reached in a second or two: a body of at most 4096 bytes, 5 rows, a
1.5 s request deadline and 2 handler threads. Each refusal must be a JSON error with the
right status, arrive within the deadline, and leave the server serving.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import free_port, stop, wait_for
from serving_app import SECRET, exchange, make_app, post, request

TIMEOUT = 1.5
THREADS = 2


class Pwn:
    """Unpickling this creates the file `path`: what a tampered model.pkl could do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def start(root: Path, port: int) -> subprocess.Popen:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(root),
           "BUILDENV_MODEL": str(root / "model"), "PORT": str(port), "HOST": "127.0.0.1",
           "BUILDENV_SERVE_TIMEOUT": str(TIMEOUT), "BUILDENV_SERVE_MAX_BODY": "4096",
           "BUILDENV_SERVE_MAX_ROWS": "5", "BUILDENV_SERVE_THREADS": str(THREADS),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(root / "serve.log", "w")  # noqa: SIM115 (the server holds it)
    return subprocess.Popen([sys.executable, str(root / "app" / "serve.py")], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = make_app(tmp_path_factory.mktemp("serving"))
    port = free_port()
    proc = start(root, port)
    wait_for(lambda: _ping(port), 60, "the serving app", proc)
    yield {"port": port, "proc": proc}
    stop(proc)


def _ping(port: int) -> bool:
    try:
        return exchange(port, b"GET /ping HTTP/1.0\r\n\r\n", wait=5)[0] == 200
    except OSError:
        return False


ROW = {"x1": 1.5, "cat": "a"}


def alive(port: int) -> None:
    status, body, _ = exchange(port, request({"dataframe_records": [ROW]}))
    assert (status, body["predictions"]) == (200, [True])


def test_valid_request(server):
    status, body, _ = exchange(server["port"], request({"dataframe_records": [ROW, {
        "x1": -2, "cat": "b"}]}))
    assert status == 200
    assert body == {"predictions": [True, False], "probabilities": [[0.25, 0.75], [0.75, 0.25]],
                    "classes": [False, True]}


@pytest.mark.parametrize("header, status, message", [
    ("Content-Length: 99999999999", 413, "the body is 99999999999 bytes; the limit is 4096"),
    ("Content-Length: " + "9" * 5000, 413, "the limit is 4096"),
    ("Content-Length: -1", 400, "Content-Length must be a non-negative integer"),
    ("Content-Length: abc", 400, "Content-Length must be a non-negative integer"),
    ("Content-Length: ٣", 400, "Content-Length must be a non-negative integer"),
    ("Transfer-Encoding: chunked", 411, "chunked bodies are not accepted"),
    (None, 411, "Content-Length is required"),
])
def test_bad_content_length_is_answered_at_once(server, header, status, message):
    raw = post(b"", *([header] if header else []))
    got, body, elapsed = exchange(server["port"], raw)
    assert (got, body["error"][:len(message)]) == (status, message) or message in body["error"]
    assert got == status
    assert elapsed < TIMEOUT  # answered without waiting for a body
    alive(server["port"])


def test_body_shorter_than_announced_times_out_with_408(server):
    raw = post(b'{"dataframe_records": [', "Content-Length: 500")
    status, body, elapsed = exchange(server["port"], raw)  # the client never sends the rest
    assert status == 408
    assert body == {"error": "the request did not arrive within 1.5 s (BUILDENV_SERVE_TIMEOUT)"}
    assert TIMEOUT - 0.2 <= elapsed < TIMEOUT + 5
    alive(server["port"])


def test_body_ending_early_is_400(server):
    status, body, _ = exchange(server["port"], post(b'{"a": 1}', "Content-Length: 50"),
                               hold=False)
    assert (status, body["error"]) == (400, "the body ended after 8 of 50 bytes "
                                            "(Content-Length)")


def test_trickling_headers_time_out_with_408(server):
    sock = socket.create_connection(("127.0.0.1", server["port"]), timeout=15)
    started = time.monotonic()
    answer = b""
    try:
        sock.sendall(b"POST /invocations HTTP/1.1\r\n")
        for _ in range(40):  # one header byte every 0.2 s: each read is quick, the whole is not
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.2)
            sock.setblocking(False)
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if answer:
                break
        sock.settimeout(10)
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.0 408 "), answer[:200]
    assert elapsed < TIMEOUT + 3
    alive(server["port"])


def test_too_many_rows_and_too_large_bodies_are_413(server):
    status, body, _ = exchange(server["port"], request({"dataframe_records": [ROW] * 6}))
    assert (status, body["error"]) == (413, "6 rows in one request; the limit is 5 "
                                            "(BUILDENV_SERVE_MAX_ROWS)")
    status, body, _ = exchange(server["port"], request({"dataframe_split": {
        "columns": ["x1", "cat"], "data": [[1.0, "a"]] * 6}}))
    assert status == 413
    status, body, _ = exchange(server["port"], request({"instances": [ROW], "pad": "x" * 5000}))
    assert status == 413 and "the limit is 4096" in body["error"]


@pytest.mark.parametrize("body, message", [
    (b"{not json", "the request body is not JSON"),
    (b"[" * 2000 + b"]" * 2000, "the request body is not JSON"),
    (b'{"instances": [{"x1": ' + b"1" * 4000 + b', "cat": "a"}]}',
     "row 0: served column 'x1' holds an integer too large for float64"),
    (b'{"dataframe_records": {"x1": 1}}', "dataframe_records must be a list of objects"),
    (b'{"dataframe_split": {"columns": [["x"]], "data": [[1]]}}', "dataframe_split.columns must be column names"),
    (b'"just a string"', "the request body must be a JSON object"),
])
def test_malformed_json_is_400(server, body, message):
    status, answer, _ = exchange(server["port"], post(body, f"Content-Length: {len(body)}"))
    assert status == 400 and answer["error"].startswith(message), answer


def test_failing_predict_is_500_and_names_no_row_value(server):
    status, body, _ = exchange(server["port"], request({"dataframe_records": [
        {"x1": 666.0, "cat": "a"}]}))
    assert status == 500
    assert body == {"error": "the model failed to predict (ValueError); the request was valid "
                             "for the environment's contract"}
    assert "666" not in json.dumps(body) and str(SECRET) not in json.dumps(body)
    alive(server["port"])


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n", 414),
    (b"POST /invocations HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(150))
     + b"\r\n", 431),
    (b"DELETE /invocations HTTP/1.0\r\n\r\n", 405),
    (b"POST /elsewhere HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 404),
])
def test_protocol_errors_are_json(server, raw, status):
    got, body, _ = exchange(server["port"], raw)
    assert got == status and isinstance(body["error"], str)
    alive(server["port"])


def _threads(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)$", text, re.M).group(1))


def test_idle_connections_cannot_exhaust_threads(server):
    port, pid = server["port"], server["proc"].pid
    alive(port)
    before = _threads(pid)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
    try:
        time.sleep(0.5)
        assert _threads(pid) <= before + THREADS
        started = time.monotonic()
        status, body, _ = exchange(port, request({"dataframe_records": [ROW]}), wait=60)
        # served once the deadline has closed the idle connections ahead of it in the queue
        assert status in (200, 503), body
        assert time.monotonic() - started < 12 * TIMEOUT / THREADS + 10
        assert _threads(pid) <= before + THREADS
    finally:
        for sock in idle:
            sock.close()
    alive(port)
    assert server["proc"].poll() is None


def test_tampered_model_is_never_unpickled(tmp_path):
    root = make_app(tmp_path / "app")
    marker = tmp_path / "pwned"
    (root / "model" / "model.pkl").write_bytes(pickle.dumps(Pwn(str(marker))))
    proc = start(root, free_port())
    try:
        proc.wait(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 1
    assert "refusing to load a modified model" in (root / "serve.log").read_text()
    assert not marker.exists()
