"""The serving app as an image runs it, for tests: `app/serve.py` + `serving.json` + `model/`
laid out in a directory, a stand-in model, and raw-socket HTTP exchanges with it."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import socket
import sys
import time
from pathlib import Path

from conftest import REPO_ROOT

from buildenv.compile.artifact import tree_digest

__all__ = ["SECRET", "exchange", "make_app", "post", "request"]

UNHASHED = ("buildenv.json", "buildenv.sig")  # outside the recorded artifact digest

SECRET = 123456.789  # a row value the model's error message quotes: must never be answered

MODEL_MODULE = f'''
"""A stand-in model for the serving tests: predicts x1 > 0, fails on x1 == 666."""


class Model:
    classes_ = [False, True]

    def predict(self, frame):
        if (frame["x1"] == 666).any():
            raise ValueError(f"cannot score row with x1={{frame['x1'].max()}} and {SECRET}")
        return list(frame["x1"] > 0)

    def predict_proba(self, frame):
        return [[0.25, 0.75] if x > 0 else [0.75, 0.25] for x in frame["x1"]]
'''


def make_app(root: Path) -> Path:
    """app/serve.py + serving.json + model/, laid out as `buildenv image` does."""
    app, model = root / "app", root / "model"
    app.mkdir(parents=True)
    model.mkdir()
    shutil.copyfile(REPO_ROOT / "buildenv" / "serving" / "serve.py", app / "serve.py")
    shutil.copyfile(REPO_ROOT / "buildenv" / "core" / "model_runtime.py",
                    app / "model_runtime.py")
    (root / "hostile_model.py").write_text(MODEL_MODULE)
    sys.path.insert(0, str(root))
    try:
        import hostile_model

        (model / "model.pkl").write_bytes(pickle.dumps(hostile_model.Model()))
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("hostile_model", None)
    (model / "buildenv.json").write_text("{}\n")
    config = {"training": "t", "environment": "prod", "python": "%d.%d" % sys.version_info[:2],
              "port": 0, "model": {"format": "pickle", "file": "model.pkl",
                                   "inputs": ["x1", "cat"]}, "allow_pickle": True,
              "model_digest": tree_digest(model, exclude=UNHASHED),
              "inputs": {"x1": {"dtype": "float64", "nullable": False},
                         "cat": {"dtype": "string", "nullable": False}}, "label": None}
    (app / "serving.json").write_text(json.dumps(config))
    return root


def exchange(port: int, data: bytes, wait: float = 15, hold: bool = True
             ) -> tuple[int, dict | str, float]:
    """Send raw bytes, keep the socket open (a client that says no more), read the answer:
    (status, JSON body, seconds until the answer was complete)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    started = time.monotonic()
    try:
        sock.sendall(data)
        if not hold:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    assert match, answer[:300]
    return int(match.group(1)), json.loads(body), elapsed


def post(body: bytes, *headers: str) -> bytes:
    lines = ["POST /invocations HTTP/1.1", "Host: x", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def request(payload: object) -> bytes:
    body = json.dumps(payload).encode()
    return post(body, f"Content-Length: {len(body)}", "Content-Type: application/json")
