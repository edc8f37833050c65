"""The serving app of a `buildenv image`: stdlib HTTP, one model, the environment's contract.

Runs inside the image as `python3 /opt/buildenv/app/serve.py`. It imports nothing outside the
standard library but `model_runtime.py` (copied beside it from buildenv/core: the one
implementation of loading and predicting that the build measured) and the model's own runtime
(onnxruntime for the `onnx` stack; scikit-learn, skops and pandas for `sklearn`, vendored next
to it). It reads `serving.json`, written by `buildenv image`, for what production promised: the
model's inputs, each one a served column of the environment with its dtype, nullability,
domain and range; the model's descriptor; the types a skops file may hold (from the
environment's `serving.ops`, never from the file); and `validate_inputs`.

  GET  /ping, /health   200 "ok" once the model is loaded
  GET  /schema          the served inputs, as JSON
  POST /invocations     {"dataframe_records": [{col: value, ...}, ...]}
                        or {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
                        or {"instances": [...]} (same as dataframe_records)
       -> 200 {"predictions": [...], "probabilities": [[...]], "classes": [...]}
          predictions are the environment's label values (a model fitted on encoded labels
          answers "late", not 1); probabilities follow `classes`
       -> 400 {"error": "...", "column": "..."} when a row lacks a served input, has a null
          where the environment forbids it, or a value of the wrong type; with
          `validate_inputs: reject` (the default) also a value outside the column's declared
          domain or range (with `warn`, those are predicted and counted on stderr); columns
          the model does not read are ignored.

Before the model file is loaded, the files of the model directory are hashed and compared
with `model_digest` in serving.json (the digest the artifact was built and registered with);
on a mismatch the app refuses to start, since loading a modified file can run any code.

Every request is bounded, and every error is a JSON body `{"error": ...}` (never row values):

  BUILDENV_SERVE_MAX_BODY  bytes of a request body (default 1048576): larger is 413, unread
  BUILDENV_SERVE_MAX_ROWS  rows in one request (default 10000): more is 413
  BUILDENV_SERVE_TIMEOUT   seconds for a whole request (line, headers, body) to arrive
                           (default 10): slower is 408, and the connection is closed
  BUILDENV_SERVE_THREADS   requests handled at once (default 8); further connections wait
                           in the listen backlog, and get 503 after the timeout

Request log (opt-in): with BUILDENV_SERVE_LOG=PATH every accepted request (one that passed the
contract check) is appended to PATH as JSON lines, one line per row holding exactly the model's
inputs (other fields of the request are never written; NaN and infinities as null), which is the
serving data `buildenv validate --serving` and `buildenv skew --serving` read. A request's rows
go out in one append under a lock, so lines of concurrent requests never interleave. The file is
created owner-only (0600). A model with an input from a restricted dataset (`restricted` in
serving.json) does not log: the app refuses to start with BUILDENV_SERVE_LOG set, naming the
columns, because the log would be a copy of restricted values outside the data gate and its
audit log. A failed write is reported on stderr (without values) and serving goes on.

A POST without Content-Length (or chunked) is 411; a Content-Length that is not a
non-negative integer, a body shorter than announced, or JSON that is not a request is 400; a
model that raises while predicting is 500 naming only the exception's type. The server keeps
serving after each of them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Deferred imports (pandas): the app imports only the standard library; pandas comes with the
# model's runtime, loaded with the model.
# model_runtime sits beside this file in the image (a copy of buildenv/core/model_runtime.py).
import model_runtime  # type: ignore[import-not-found]  # pants: no-infer-dep

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "serving.json"), encoding="utf-8") as handle:
    CONFIG = json.load(handle)
MODEL_DIR = os.environ.get("BUILDENV_MODEL", os.path.join(os.path.dirname(HERE), "model"))
NUMERIC = {"int8", "int16", "int32", "int64", "float32", "float64"}
TEMPORAL = {"date", "timestamp"}
REJECT = CONFIG.get("validate_inputs", "reject") == "reject"


def _setting(name: str, default: float, kind: type = int) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value <= 0:
        sys.exit(f"buildenv serving: {name}={raw!r} must be a positive number")
    return value


MAX_BODY = int(_setting("BUILDENV_SERVE_MAX_BODY", 1 << 20))
MAX_ROWS = int(_setting("BUILDENV_SERVE_MAX_ROWS", 10_000))
TIMEOUT = float(_setting("BUILDENV_SERVE_TIMEOUT", 10.0, float))
THREADS = int(_setting("BUILDENV_SERVE_THREADS", 8))


class RequestLog:
    """Accepted requests as JSON lines: the model's inputs only, one append per request."""

    def __init__(self, path: str) -> None:
        withheld = [n for n, spec in CONFIG["inputs"].items() if spec.get("restricted")]
        if withheld:
            sys.exit(f"buildenv serving: BUILDENV_SERVE_LOG is set, but the model's inputs "
                     f"{', '.join(withheld)} come from restricted datasets of environment "
                     f"{CONFIG['environment']}: requests are not logged (a log would copy "
                     "restricted values outside the data gate); unset BUILDENV_SERVE_LOG")
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            sys.exit(f"buildenv serving: cannot open the request log {path}: {exc.strerror}")
        self.lock = threading.Lock()

    def append(self, rows: list[dict]) -> None:
        data = "".join(json.dumps({name: _loggable(row.get(name)) for name in CONFIG["inputs"]},
                                  ensure_ascii=False, separators=(",", ":"), allow_nan=False)
                       + "\n" for row in rows).encode("utf-8")
        with self.lock:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError as exc:
                sys.stderr.write(f"buildenv serving: request not logged: {exc.strerror}\n")


def _loggable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class BadRequest(Exception):
    def __init__(self, message: str, column: str | None = None, status: int = 400):
        super().__init__(message)
        self.column = column
        self.status = status


def _check_python() -> None:
    want = CONFIG["python"]
    have = "%d.%d" % sys.version_info[:2]
    if have != want:
        sys.exit(f"buildenv serving: this image vendors packages built for Python {want}, but "
                 f"the base image runs Python {have}; use a base with python{want}")


def load_model():
    """Load the model only if the directory still holds the bytes it was built with, and only
    with the trust serving.json gives (the environment's), never the artifact's."""
    expected = CONFIG.get("model_digest")
    actual = model_runtime.artifact_digest(MODEL_DIR)
    if not expected or actual != expected:
        sys.exit(f"buildenv serving: the model files in {MODEL_DIR} hash to {actual}, but the "
                 f"image was built for {expected}; refusing to load a modified model")
    if CONFIG.get("code_dir"):  # repository classes shipped with the model (MLflow code_paths)
        sys.path.insert(0, os.path.join(MODEL_DIR, CONFIG["code_dir"]))
    try:
        return model_runtime.load(MODEL_DIR, CONFIG["model"], CONFIG.get("trusted") or [],
                                  allow_pickle=bool(CONFIG.get("allow_pickle")))
    except model_runtime.ModelLoadError as exc:
        sys.exit(f"buildenv serving: {exc}; refusing to load the model")


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
        if not isinstance(data, list):
            raise BadRequest("dataframe_split.data must be a list of rows")
        _cap(len(data))
        if not all(isinstance(c, str) for c in columns):
            raise BadRequest("dataframe_split.columns must be column names")
        if not all(isinstance(r, list) and len(r) == len(columns) for r in data):
            raise BadRequest("each row of dataframe_split.data needs one value per column")
        return [dict(zip(columns, r)) for r in data]
    for key in ("dataframe_records", "instances"):
        if key in body:
            records = body[key]
            if not isinstance(records, list):
                raise BadRequest(f"{key} must be a list of objects (column -> value)")
            _cap(len(records))
            if not all(isinstance(r, dict) for r in records):
                raise BadRequest(f"{key} must be a list of objects (column -> value)")
            return records
    raise BadRequest("expected one of dataframe_records, dataframe_split or instances")


def _cap(rows: int) -> None:
    if rows > MAX_ROWS:
        raise BadRequest(f"{rows} rows in one request; the limit is {MAX_ROWS} "
                         "(BUILDENV_SERVE_MAX_ROWS)", status=413)


def check(rows: list[dict]) -> int:
    """Every row against the environment's served inputs: present, typed, non-null if declared
    (always), within the declared domain and range (`validate_inputs`). The number of values
    outside domain or range that were let through (`warn`)."""
    if not rows:
        raise BadRequest("the request holds no rows")
    env = CONFIG["environment"]
    outside = 0
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
                if ok and isinstance(value, int) and abs(value) > 2 ** 63:
                    raise BadRequest(f"row {i}: served column '{name}' holds an integer too "
                                     f"large for {dtype}", name)
            elif dtype == "bool":
                ok = isinstance(value, bool)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise BadRequest(f"row {i}: served column '{name}' must be {dtype}, got "
                                 f"{type(value).__name__} {json.dumps(value)[:80]}", name)
            problem = _outside(value, spec)
            if problem:
                if REJECT:
                    raise BadRequest(f"row {i}: served column '{name}' {problem} declared by "
                                     f"environment {env}", name)
                outside += 1
    return outside


def _outside(value, spec: dict) -> str | None:
    """Why `value` is outside the column's declared domain or range (None when inside). The
    message names the constraint, never the value."""
    domain = spec.get("domain")
    if domain is not None and not any((value == d and type(value) is type(d)) or (
            spec["dtype"] in NUMERIC and not isinstance(d, bool) and value == d)
            for d in domain):
        return "holds a value outside the domain"
    bounds = spec.get("range")
    if bounds is None:
        return None
    lo, hi = bounds
    if spec["dtype"] in TEMPORAL:
        try:
            value, lo, hi = (None if v is None else _instant(v) for v in (value, lo, hi))
        except ValueError:
            return f"is not an ISO 8601 {spec['dtype']}, as"
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return "holds a value outside the range"
    return None


def _instant(text: str):
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def frame_of(rows: list[dict]):
    """The model's input columns: a DataFrame for scikit-learn models (pandas is vendored for
    them), plain lists for an ONNX graph (onnxruntime takes arrays; no pandas needed)."""
    columns = {name: [row.get(name) for row in rows] for name in CONFIG["inputs"]}
    if CONFIG["model"].get("format") == "onnx":
        return columns
    import pandas as pd

    data = {}
    for name, spec in CONFIG["inputs"].items():
        values = columns[name]
        if spec["dtype"] in NUMERIC:
            data[name] = pd.Series(values, dtype="float64")
        else:
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


def _plain(value):
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Deadlines:
    """One watchdog thread for every connection's deadline: when a request has not fully
    arrived in time, the read side of its socket is shut down, so the handler's blocked read
    returns at once (a per-read socket timeout alone lets a client trickle forever)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[Handler, float] = {}
        self._thread: threading.Thread | None = None

    def start(self, handler: Handler) -> None:
        with self._lock:
            self._due[handler] = time.monotonic() + TIMEOUT
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="deadlines",
                                                daemon=True)
                self._thread.start()

    def stop(self, handler: Handler) -> None:
        with self._lock:
            self._due.pop(handler, None)

    def _watch(self) -> None:
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with self._lock:
                late = [h for h, due in self._due.items() if due <= now]
                for handler in late:
                    del self._due[handler]
            for handler in late:
                handler.expired = True
                try:
                    handler.connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


DEADLINES = Deadlines()


class Handler(BaseHTTPRequestHandler):
    model: Any = None  # the loaded model, set once before serving
    log: RequestLog | None = None  # the request log, when BUILDENV_SERVE_LOG is set
    server_version = "buildenv-serving/1"
    timeout = TIMEOUT  # each read; DEADLINES bounds the whole request
    expired = False

    def setup(self) -> None:
        super().setup()
        DEADLINES.start(self)

    def finish(self) -> None:
        DEADLINES.stop(self)
        try:
            super().finish()
        except OSError:
            pass

    def _send(self, status: int, payload: object, close: bool = False) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, column: str | None = None) -> None:
        """A JSON error; the connection is closed (what is left of the request is unread)."""
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # a status line even for garbage
        payload: dict = {"error": message}
        if column is not None or status == 400:
            payload["column"] = column
        try:
            self._send(status, payload, close=True)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return
        self._drain()

    def _drain(self) -> None:
        """Close gently: a client still sending the rest of a refused request would get a
        connection reset, and lose the answer, if unread bytes were left behind. Bounded:
        at most one second and MAX_BODY + 64 KiB."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            until = time.monotonic() + 1.0
            left = MAX_BODY + (1 << 16)
            while left > 0:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self.connection.settimeout(remaining)
                chunk = self.connection.recv(1 << 16)
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, too many headers), as JSON."""
        self._error(code, message or HTTPStatus(code).phrase)

    def handle_one_request(self) -> None:
        self.close_connection = True  # HTTP/1.0: one request per connection
        self.requestline, self.command = "", ""  # for the access log, before parsing
        try:
            line = self.rfile.readline(65537)
            if self.expired:
                self._late()
                return
            if not line:
                return
            if len(line) > 65536:
                self._error(414, "the request line is longer than 65536 bytes")
                return
            self.raw_requestline = line
            if not self.parse_request():
                return
            if self.expired:
                self._late()
                return
            method = getattr(self, f"do_{self.command}", None)
            if method is None:
                self._error(405, f"method {self.command} is not supported")
                return
            method()
            self.wfile.flush()
        except TimeoutError:
            self._late()
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception as exc:  # a bug here must not drop the connection without an answer
            sys.stderr.write(f"buildenv serving: internal error {type(exc).__name__}\n")
            self._error(500, f"internal error ({type(exc).__name__})")

    def _late(self) -> None:
        self._error(408, f"the request did not arrive within {TIMEOUT:g} s "
                         "(BUILDENV_SERVE_TIMEOUT)")

    def do_GET(self) -> None:  # http.server's naming
        DEADLINES.stop(self)
        if self.path in ("/ping", "/health"):
            self._send(200, "ok")
        elif self.path == "/schema":
            self._send(200, {k: CONFIG[k] for k in ("training", "environment", "inputs")})
        else:
            self._send(404, {"error": f"no route {self.path[:200]}"})

    def do_POST(self) -> None:
        if self.path != "/invocations":
            self._error(404, f"no route {self.path[:200]}")
            return
        try:
            body = self._read_body()
            DEADLINES.stop(self)  # all of it arrived; predicting may take longer
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError) as exc:
                raise BadRequest(f"the request body is not JSON: {str(exc)[:200]}") from None
            rows = rows_of(payload)
            outside = check(rows)
            frame = frame_of(rows)
            log = type(self).log
            if log is not None:
                log.append(rows)
        except BadRequest as exc:
            self._error(exc.status, str(exc), exc.column)
            return
        if outside:
            sys.stderr.write(f"buildenv serving: {outside} value(s) outside their declared "
                             "domain or range predicted (validate_inputs: warn)\n")
        model = type(self).model
        try:
            if model.is_classifier and model.has_proba and hasattr(model, "predict_both"):
                labels, proba = model.predict_both(frame)
            else:
                labels = model.predict(frame)
                proba = model.predict_proba(frame) if model.has_proba else None
            out: dict = {"predictions": [_plain(v) for v in labels]}
            if proba is not None:
                out["probabilities"] = [[_plain(float(p)) for p in row] for row in proba]
                out["classes"] = [_plain(c) for c in model.classes]
        except Exception as exc:  # the message may quote row values: only the type leaves
            sys.stderr.write(f"buildenv serving: predict raised {type(exc).__name__}\n")
            self._error(500, f"the model failed to predict ({type(exc).__name__}); the "
                             "request was valid for the environment's contract")
            return
        self._send(200, out)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest("chunked bodies are not accepted; send Content-Length", status=411)
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise BadRequest("Content-Length is required", status=411)
        raw = raw.strip()
        if not raw.isdigit() or not raw.isascii():
            raise BadRequest("Content-Length must be a non-negative integer")
        if len(raw) > 18 or int(raw) > MAX_BODY:
            raise BadRequest(f"the body is {raw} bytes; the limit is {MAX_BODY} "
                             "(BUILDENV_SERVE_MAX_BODY)", status=413)
        length = int(raw)
        chunks = []
        left = length
        while left:
            chunk = self.rfile.read1(min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if self.expired:
            raise _Late()
        if left:
            raise BadRequest(f"the body ended after {length - left} of {length} bytes "
                             "(Content-Length)")
        return b"".join(chunks)

    def log_message(self, format: str, *args) -> None:  # http.server's parameter name
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


class _Late(TimeoutError):
    """The deadline passed while the body was arriving."""


class Server(ThreadingHTTPServer):
    """At most THREADS requests at once: a connection beyond that waits for a slot (up to
    the timeout, then 503), so a flood of idle connections cannot exhaust threads."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(THREADS)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(timeout=TIMEOUT):
            _busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _busy(request: socket.socket) -> None:
    body = json.dumps({"error": f"busy: {THREADS} requests in progress "
                                "(BUILDENV_SERVE_THREADS)"}).encode()
    head = (f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        request.settimeout(1.0)
        request.sendall(head + body)
    except OSError:
        pass


def main() -> None:
    _check_python()
    if os.environ.get("BUILDENV_SERVE_LOG"):
        Handler.log = RequestLog(os.environ["BUILDENV_SERVE_LOG"])
    Handler.model = load_model()
    port = int(os.environ.get("PORT", CONFIG.get("port", 8080)))
    host = os.environ.get("HOST", "0.0.0.0")
    server = Server((host, port), Handler)
    print(f"buildenv serving {CONFIG['training']} @ {CONFIG['environment']} on {host}:{port} "
          f"(max body {MAX_BODY} B, {MAX_ROWS} rows, timeout {TIMEOUT:g} s, {THREADS} threads)",
          file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
