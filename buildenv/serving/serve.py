"""The serving app of a `buildenv image`: stdlib HTTP, one model, the environment's contract.

Runs inside the image as `python3 /opt/buildenv/app/serve.py`. It imports nothing outside the
standard library but the model's own runtime (scikit-learn, pandas, cloudpickle, vendored next
to it) and reads `serving.json`, written by `buildenv image`, for what production promised:
the model's inputs, each one a served column of the environment with its dtype and nullability.

  GET  /ping, /health   200 "ok" once the model is loaded
  GET  /schema          the served inputs, as JSON
  POST /invocations     {"dataframe_records": [{col: value, ...}, ...]}
                        or {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
                        or {"instances": [...]} (same as dataframe_records)
       -> 200 {"predictions": [...], "probabilities": [[...]], "classes": [...]}
       -> 400 {"error": "...", "column": "..."} when a row lacks a served input, has a null
          where the environment forbids it, or a value of the wrong type; columns the model
          does not read are ignored.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "serving.json"), encoding="utf-8") as handle:
    CONFIG = json.load(handle)
MODEL_DIR = os.environ.get("BUILDENV_MODEL", os.path.join(os.path.dirname(HERE), "model"))
NUMERIC = {"int8", "int16", "int32", "int64", "float32", "float64"}


class BadRequest(Exception):
    def __init__(self, message: str, column: str | None = None):
        super().__init__(message)
        self.column = column


def _check_python() -> None:
    want = CONFIG["python"]
    have = "%d.%d" % sys.version_info[:2]
    if have != want:
        sys.exit(f"buildenv serving: this image vendors packages built for Python {want}, but "
                 f"the base image runs Python {have}; use a base with python{want}")


def load_model():
    with open(os.path.join(MODEL_DIR, CONFIG["model_file"]), "rb") as handle:
        return pickle.load(handle)


def rows_of(body: object) -> list[dict]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object such as "
                         '{"dataframe_records": [{...}]}')
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
            raise BadRequest("dataframe_split needs 'columns' and 'data'")
        columns = split["columns"]
        data = split.get("data") or []
        if not all(isinstance(r, list) and len(r) == len(columns) for r in data):
            raise BadRequest("each row of dataframe_split.data needs one value per column")
        return [dict(zip(columns, r)) for r in data]
    for key in ("dataframe_records", "instances"):
        if key in body:
            records = body[key]
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise BadRequest(f"{key} must be a list of objects (column -> value)")
            return records
    raise BadRequest("expected one of dataframe_records, dataframe_split or instances")


def check(rows: list[dict]) -> None:
    """Every row against the environment's served inputs: present, typed, non-null if declared."""
    if not rows:
        raise BadRequest("the request holds no rows")
    env = CONFIG["environment"]
    for i, row in enumerate(rows):
        for name, spec in CONFIG["inputs"].items():
            if name not in row:
                raise BadRequest(f"row {i} is missing served column '{name}' (environment {env}"
                                 f" serves this model: {', '.join(CONFIG['inputs'])})", name)
            value = row[name]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if not spec["nullable"]:
                    raise BadRequest(f"row {i}: served column '{name}' is null, but environment "
                                     f"{env} declares it non-nullable", name)
                continue
            dtype = spec["dtype"]
            if dtype in NUMERIC:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif dtype == "bool":
                ok = isinstance(value, bool)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise BadRequest(f"row {i}: served column '{name}' must be {dtype}, got "
                                 f"{type(value).__name__} {json.dumps(value)}", name)


def frame_of(rows: list[dict]):
    import pandas as pd

    data = {}
    for name, spec in CONFIG["inputs"].items():
        values = [row.get(name) for row in rows]
        if spec["dtype"] in NUMERIC:
            data[name] = pd.Series(values, dtype="float64")
        else:
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


def _plain(value):
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class Handler(BaseHTTPRequestHandler):
    model = None
    server_version = "buildenv-serving/1"

    def _send(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path in ("/ping", "/health"):
            self._send(200, "ok")
        elif self.path == "/schema":
            self._send(200, {k: CONFIG[k] for k in ("training", "environment", "inputs")})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/invocations":
            self._send(404, {"error": f"no route {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError as exc:
                raise BadRequest(f"the request body is not JSON: {exc}") from None
            rows = rows_of(body)
            check(rows)
            frame = frame_of(rows)
        except BadRequest as exc:
            self._send(400, {"error": str(exc), "column": exc.column})
            return
        model = type(self).model
        out: dict = {"predictions": [_plain(v) for v in model.predict(frame)]}
        if hasattr(model, "predict_proba"):
            out["probabilities"] = [[float(p) for p in row] for row in model.predict_proba(frame)]
            out["classes"] = [_plain(c) for c in model.classes_]
        self._send(200, out)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


def main() -> None:
    _check_python()
    Handler.model = load_model()
    port = int(os.environ.get("PORT", CONFIG.get("port", 8080)))
    host = os.environ.get("HOST", "0.0.0.0")
    server = ThreadingHTTPServer((host, port), Handler)
    print(f"buildenv serving {CONFIG['training']} @ {CONFIG['environment']} on {host}:{port}",
          file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
