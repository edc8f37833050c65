"""Where the per-file work on a partitioned dataset runs: in this process, or as Ray tasks.

Locking, validating and profiling a partitioned dataset split into one task per file (hash it;
check its columns; summarise its columns), whose partial results the caller merges in file
order. An `Executor` only runs those tasks: `LocalExecutor` on a few threads of this process
(hashing and pyarrow's decoding release the GIL), `RayExecutor` as Ray tasks on a local Ray or
a cluster (`BUILDENV_RAY_ADDRESS`, else `RAY_ADDRESS`). Because tasks and the merge are the
same code whichever runs them, results are identical (tests/test_executor.py). Ray schedules,
retries and moves the results; buildenv has no scheduler or worker protocol of its own.

Tasks read their file from its storage uri and verify it against the manifest themselves, so
every worker must reach the data under the same uri: on a cluster, object storage (`s3://`,
`gs://`) or a file system mounted at the same path everywhere (docs/scale.md).

An interrupted build stops its Ray tasks cooperatively (`StopFlag`, `when_stopped`): each task
watches its build's stop flag in the cluster's key-value store and returns normally once it is
set. `ray.cancel` is left to tasks that do not stop within CANCEL_GRACE: Ray 2.60's driver can
abort (a failed internal check, exit 1) when a task's reply crosses its cancellation.
"""

from __future__ import annotations

import _thread
import functools
import importlib.util
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "StopFlag", "make_executor",
           "when_stopped"]

EXECUTORS = ("local", "ray")
RAY_TIMEOUT = 30.0  # seconds to reach a Ray cluster (BUILDENV_RAY_TIMEOUT)
CANCEL_GRACE = 10.0  # seconds a stopped task has to return before its worker is killed
STOP_POLL = 0.5  # seconds between a running task's looks at its build's stop flag
STOP_NAMESPACE = "buildenv"  # the key-value store's namespace of the stop flags


class Executor:
    """Runs `fn(item)` for each item; results in the order of the items."""

    name = "executor"

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    @property
    def remote(self) -> bool:
        """Whether tasks may run on other machines (they cannot read this one's paths)."""
        return False

    def prepare(self) -> None:
        """Connect now, from the calling (main) thread, before work is spread over threads."""

    def defer(self) -> None:
        """Connect only if work needs it: a thread that first does asks the main thread, which
        calls `serve` while it waits for its threads (a lock whose stat cache vouches for every
        file then starts nothing)."""
        self.prepare()

    def serve(self) -> None:
        """From the main thread, while it waits: connect if a thread asked (`defer`)."""

    def end_deferral(self) -> None:
        """The main thread stops serving: a thread still waiting is told (it raises)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalExecutor(Executor):
    """A few threads of this process: hashing and Arrow decoding release the GIL, so two files
    are worked on at once on a two-core machine, while memory stays a few files' worth."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = workers or max(1, min(os.cpu_count() or 1, 4))

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if self.workers <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(min(self.workers, len(items)),
                                thread_name_prefix="buildenv-task") as pool:
            return list(pool.map(fn, items))


class StopFlag:
    """One build's stop flag, a key in the Ray cluster's key-value store (its GCS), which the
    driver and every worker of every node reach: the interrupted driver sets it, the build's
    tasks look at it. Picklable: it travels with each task."""

    def __init__(self, build: str) -> None:
        self.key = f"stop/{build}"
        self.seen = False  # on a worker: the task saw it set

    def set(self) -> bool:
        """Set it (on the driver); whether the store took it."""
        try:
            from ray.experimental import internal_kv  # pants: no-infer-dep

            internal_kv._internal_kv_put(self.key, b"1", namespace=STOP_NAMESPACE)
        except Exception:  # no store to reach: the caller kills the tasks at once
            return False
        return True

    def is_set(self) -> bool:
        if not self.seen:
            try:
                from ray.experimental import internal_kv  # pants: no-infer-dep

                self.seen = internal_kv._internal_kv_get(
                    self.key, namespace=STOP_NAMESPACE) is not None
            except Exception:  # the store did not answer this time: looked at again later
                return False
        return self.seen

    def clear(self) -> None:
        try:
            from ray.experimental import internal_kv  # pants: no-infer-dep

            internal_kv._internal_kv_del(self.key, namespace=STOP_NAMESPACE)
        except Exception:  # the cluster is gone: so is the key
            pass


class _Stopped:
    """What a task returns when its build's stop flag stopped it: a normal reply, which
    `run_one` turns into KeyboardInterrupt on the driver."""


_task_flag: StopFlag | None = None  # on a worker: the flag of the task it runs (one at a time)


def _task(fn: Callable[[Any], Any], item: Any, flag: StopFlag) -> Any:
    """A task of `run_one`, on its worker: `fn(item)`, unless its build was stopped before it
    started or while it ran (then `_Stopped`, returned: no exception crosses back)."""
    global _task_flag
    if flag.is_set():  # queued while the build was interrupted: nothing to start
        return _Stopped()
    _task_flag = flag
    try:
        return fn(item)
    except KeyboardInterrupt:
        if flag.seen:
            return _Stopped()
        raise
    finally:
        _task_flag = None


@contextmanager
def when_stopped(stop: Callable[[], None]) -> Iterator[None]:
    """Inside a task `RayExecutor.run_one` started: `stop()` is called, from a thread, within
    STOP_POLL seconds of the driver setting its build's stop flag; the task should then end
    (KeyboardInterrupt counts as stopped). Anywhere else (a local build, a direct call),
    nothing happens. One read of the key-value store per STOP_POLL seconds per task."""
    flag = _task_flag
    if flag is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(STOP_POLL):
            if flag.is_set():
                stop()
                return

    watcher = threading.Thread(target=watch, name="buildenv-stop-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()  # no stop() after the task: its worker runs the next task


def _interruptible(fn: Callable[[Any], Any], item: Any) -> Any:
    """A data task of `RayExecutor.map`, on its worker: `fn(item)`, interrupted as by a
    Ctrl-C (KeyboardInterrupt in the task's thread, as Ray's own cancellation does) when its
    map is stopped; `_task` then returns `_Stopped`. Hashing and decoding are cut at the
    next Python step; a task stuck in native code longer is killed after CANCEL_GRACE."""
    if threading.current_thread() is not threading.main_thread():  # nothing to interrupt
        return fn(item)
    with when_stopped(_thread.interrupt_main):
        return fn(item)


class RayExecutor(Executor):
    """Ray tasks, one per item. Connects on first use: to `address` (a cluster), else to a
    Ray started here with `num_cpus` CPUs and an object store capped at `object_store_mb`."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 object_store_mb: int | None = None, timeout: float | None = None):
        self.address = address if address is not None else (
            os.environ.get("BUILDENV_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS") or None)
        self.num_cpus = num_cpus or _setting("BUILDENV_RAY_NUM_CPUS", int) or os.cpu_count() or 1
        self.object_store_mb = object_store_mb or _setting("BUILDENV_RAY_OBJECT_STORE_MB",
                                                           int) or 256
        self.timeout = timeout or _setting("BUILDENV_RAY_TIMEOUT", float) or RAY_TIMEOUT
        self._ray: Any = None
        self._started = False
        self._remotes: dict[Callable[[Any], Any], Any] = {}
        self._flight_lock = threading.Lock()
        self._in_flight: set[Any] = set()  # run_one's task refs, for cancel_all
        self._cancelled = False
        self._stop = StopFlag(uuid.uuid4().hex)  # this build's; its tasks watch it
        self._stop_set = False
        self._task: Any = None  # `_task` as a Ray remote function
        # `defer`: a thread that needs Ray asks; the main thread connects in `serve`
        self._deferred = False
        self._asked = threading.Event()
        self._answered = threading.Event()
        self._answer: BaseException | None = None
        # Ray's runtime environment for the whole connection (a cluster only): a local
        # `working_dir` can be shipped only there, not per task
        self.runtime_env: dict[str, Any] | None = None

    @property
    def remote(self) -> bool:
        return self.address not in (None, "", "local")

    @property
    def cancelled(self) -> bool:
        """Whether `cancel_all` ran: a task failing now was stopped by the interrupt."""
        return self._cancelled

    def prepare(self) -> None:
        self._connect()

    def defer(self) -> None:
        self._deferred = True
        self._asked.clear()
        self._answered.clear()
        self._answer = None

    def serve(self) -> None:
        if self._asked.is_set() and not self._answered.is_set():
            try:
                self._connect()
            except BaseException as exc:  # the asking thread raises it (a diagnostic, Ctrl-C)
                self._answer = exc
                raise
            finally:
                self._answered.set()

    def end_deferral(self) -> None:
        self._deferred = False
        if not self._answered.is_set():
            self._answer = self._answer or RuntimeError("RayExecutor: the main thread stopped "
                                                        "before it could connect")
            self._answered.set()

    def _connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        if self._deferred and threading.current_thread() is not threading.main_thread():
            self._asked.set()  # Ray starts only from the main thread: it connects (`serve`)
            self._answered.wait()
            if self._ray is None:
                raise self._answer or RuntimeError("RayExecutor: not connected")
            return self._ray
        try:
            import ray  # pants: no-infer-dep (an optional extra: not in the build runtime)
        except ImportError:
            raise DiagnosticError([Diagnostic(
                "BE880", "the Ray executor needs Ray, which is not installed",
                hints=("pip install 'buildenv[ray]'", "or run with --executor local"))],
                2) from None
        if ray.is_initialized():  # a caller (a notebook, a test) already connected
            self._ray = ray
            return ray
        if threading.current_thread() is not threading.main_thread():
            # Ray starts (or joins) a cluster only from the main thread; callers that spread
            # work over threads call prepare() first
            raise RuntimeError("RayExecutor used from a thread before prepare()")
        if not self.remote:  # a Ray of our own
            self._init(ray)
            self._ray, self._started = ray, True
            return ray
        self._probe()
        self._check_token(ray)
        box = self._within(lambda: self._init(ray), "buildenv-ray-init")
        if isinstance(box[0], BaseException):
            if _refused_token(ray, box[0]):  # RAY_AUTH_MODE=token here, and no token
                raise self._refused()
            why = str(box[0]).splitlines()[0] if str(box[0]) else type(box[0]).__name__
            if "ray[client]" in why:  # the cluster answered; this machine lacks Ray Client
                raise DiagnosticError([Diagnostic(
                    "BE880", f"a ray:// address ('{self.address}') needs Ray Client, which is "
                    "not installed", hints=(
                        f"pip install 'ray[client]=={ray.__version__}'",
                        "or run on a machine of the cluster with its GCS address (head:6379 "
                        "or auto), or with --executor local"))], 2)
            raise self._unreachable(why)
        self._ray, self._started = ray, True
        return ray

    def _init(self, ray: Any) -> Any:
        with _ray_quiet():
            return self._start(ray)

    def _start(self, ray: Any) -> Any:
        kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if self.remote:
            if self.runtime_env:
                kwargs["runtime_env"] = self.runtime_env
            return ray.init(address=self.address, **kwargs)
        # A Ray of our own: its workers are started from this interpreter and must import this
        # very buildenv (a checkout on PYTHONPATH, a Pants sandbox), so they get its path.
        package_parent = str(Path(__file__).resolve().parents[2])
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([package_parent] + ([saved] if saved else []))
        try:
            # address="local": a Ray of our own even when one runs on this machine (`ray
            # start`, another user's): without it ray.init joins that one and, given num_cpus,
            # refuses to
            return ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                            object_store_memory=self.object_store_mb << 20, **kwargs)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved

    def _probe(self) -> None:
        """A TCP connect to the address first: an address that does not answer fails in
        seconds with its name, instead of Ray retrying for minutes."""
        assert self.address is not None
        if self.address == "auto":
            return
        target = self.address if "://" in self.address else f"ray://{self.address}"
        parsed = urlparse(target)
        host, port = parsed.hostname, parsed.port
        if not host or not port:
            raise self._unreachable("not host:port (write ray://host:10001 or host:6379)")
        try:
            with socket.create_connection((host, port), timeout=min(self.timeout, 10.0)):
                pass
        except OSError as exc:
            raise self._unreachable(exc.strerror or str(exc) or type(exc).__name__) from None

    def _check_token(self, ray: Any) -> None:
        """A cluster with token authentication answers a driver without its token by
        refusing each call, which `ray.init` retries until the timeout (not "does not
        answer"): one call to its GCS first says so at once (BE887). A `ray://` address is
        Ray Client's server, not the GCS: not checked here."""
        if self.address in (None, "", "auto") or "://" in (self.address or ""):
            return
        try:
            from ray._raylet import GcsClient  # type: ignore[attr-defined]  # pants: no-infer-dep
        except ImportError:  # another Ray: ray.init alone tells
            return
        box = self._within(lambda: GcsClient(address=self.address), "buildenv-ray-token")
        if isinstance(box[0], BaseException) and _refused_token(ray, box[0]):
            raise self._refused()

    def _within(self, call: Callable[[], Any], name: str) -> list[Any]:
        """`[what call returned, or what it raised]`, from a thread given `self.timeout`
        seconds (Ray's connection calls retry for as long as they like); BE881 when it has
        not answered by then."""
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(call())
            except BaseException as exc:  # the caller looks at it, with the address
                box.append(exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        thread.join(self.timeout)
        if not box:
            raise self._unreachable(f"no answer within {self.timeout:g} s")
        return box

    def _refused(self) -> DiagnosticError:
        mode = os.environ.get("RAY_AUTH_MODE") or "not set"
        return DiagnosticError([Diagnostic(
            "BE887", f"Ray cluster at '{self.address}' answered but refused this machine's "
            f"authentication token: it uses token authentication and the token is missing "
            f"or wrong here (RAY_AUTH_MODE is {mode})",
            hints=("give buildenv's environment RAY_AUTH_MODE=token and the cluster's token "
                   "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)",
                   "or run with --executor local"))], 2)

    def _unreachable(self, why: str) -> DiagnosticError:
        return DiagnosticError([Diagnostic(
            "BE881", f"Ray cluster at '{self.address or 'local'}' does not answer: {why}",
            hints=("check BUILDENV_RAY_ADDRESS / RAY_ADDRESS (ray://head:10001 for Ray "
                   "Client, head:6379 from inside the cluster)",
                   "or run with --executor local"))], 2)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """One Ray task per item. When a task fails (or Ctrl-C here), the others are stopped as
        an interrupted build's are (`_halt`): the map's own stop flag, which queued tasks see
        before they start and running ones within STOP_POLL seconds (KeyboardInterrupt in
        their thread, as a Ctrl-C), then the workers of those still running after
        CANCEL_GRACE are killed; it returns once every reply has arrived."""
        if not items:
            return []
        ray = self._connect()
        if self._task is None:
            self._task = ray.remote(_task)
        flag = StopFlag(uuid.uuid4().hex)  # this map's: a failed map stops only its own tasks
        options = {"num_cpus": 1, "max_retries": 2, "name": getattr(fn, "__name__", "task")}
        refs = [self._task.options(**options).remote(functools.partial(_interruptible, fn),
                                                      item, flag) for item in items]
        pending = list(refs)
        try:
            while pending:  # a failure as it happens; in slices, as Python runs a Ctrl-C's
                # handler only when the main thread runs (the kernel may hand it to Ray's)
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=STOP_POLL)
                ray.get(done)
            results = ray.get(refs)
        except KeyboardInterrupt:  # Ctrl-C here: no task of the map goes on
            self._halt(ray, pending, flag)
            raise
        except Exception as exc:  # a worker died, an object was lost: not the data's fault
            self._halt(ray, pending, flag)
            text = str(exc).strip().splitlines()
            raise DiagnosticError([Diagnostic(
                "BE882", f"a Ray task failed: {type(exc).__name__}"
                + (f": {text[-1]}" if text else ""),
                hints=("the Ray dashboard or `ray logs` has the worker's output",
                       "rerun with --executor local to rule the cluster out"))], 2) from None
        if any(isinstance(result, _Stopped) for result in results):  # never set: defensive
            raise KeyboardInterrupt
        return list(results)

    def run_one(self, fn: Callable[[Any], Any], item: Any, num_cpus: float = 1,
                memory: int | None = None, retries: int = 1,
                runtime_env: dict[str, Any] | None = None) -> Any:
        """`fn(item)` as one Ray task asking for `num_cpus` and `memory` bytes, retried
        `retries` times when its worker dies; Ray chooses the node. Raises what the task
        raised, or ray's error for a task lost after its retries (the caller reports it).
        KeyboardInterrupt when the build was interrupted (`cancel_all`, or Ctrl-C here): the
        task was asked to stop (`when_stopped`) and it did, or its worker was killed."""
        ray = self._connect()
        options: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": retries,
                                   "name": getattr(fn, "__name__", "task")}
        if memory:
            options["memory"] = memory
        if runtime_env:
            options["runtime_env"] = runtime_env
        with self._flight_lock:
            if self._cancelled:  # interrupted: no new task after cancel_all()
                raise KeyboardInterrupt
            if self._task is None:
                self._task = ray.remote(_task)
            ref = self._task.options(**options).remote(fn, item, self._stop)
            self._in_flight.add(ref)
        try:
            result = ray.get(ref)
        except KeyboardInterrupt:  # Ctrl-C on this thread (a single pair): the whole build
            self.cancel_all()
            raise
        finally:
            with self._flight_lock:
                self._in_flight.discard(ref)
        if isinstance(result, _Stopped):
            raise KeyboardInterrupt
        return result

    def cancel_all(self) -> None:
        """Stop every task `run_one` is waiting for, and refuse new ones: the interrupted
        driver's threads then return instead of waiting for trainings nobody will use. The
        build's stop flag is set; each task sees it within STOP_POLL seconds, stops its
        training's process group, removes its temp dir and returns. A task still running
        after CANCEL_GRACE seconds has its worker killed. Returns once every task's reply
        has arrived (a reply crossing `ray.shutdown` or `ray.cancel` can abort Ray's driver)."""
        with self._flight_lock:
            self._cancelled = True
            refs = list(self._in_flight)
        if refs and self._ray is not None:
            self._halt(self._ray, refs)

    def _halt(self, ray: Any, refs: list[Any], flag: StopFlag | None = None) -> None:
        """Set the stop flag (the build's, or a map's `flag`, removed again here), wait up to
        CANCEL_GRACE seconds for `refs`, kill the workers of those still running, and wait
        for their replies too."""
        if flag is not None:
            if not refs:
                return
            try:
                self._wait_out(ray, refs, flag.set())
            finally:
                flag.clear()
            return
        if not self._stop_set:
            self._stop_set = self._stop.set()
        self._wait_out(ray, refs, self._stop_set)

    def _wait_out(self, ray: Any, refs: list[Any], flagged: bool) -> None:
        grace = CANCEL_GRACE if flagged else 0.0  # no flag: nothing would stop them
        try:
            _, refs = ray.wait(refs, num_returns=len(refs), timeout=grace, fetch_local=False)
        except Exception:  # the connection is gone: so are the tasks
            return
        if not refs:
            return
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # finished meanwhile
                pass
        try:
            ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE, fetch_local=False)
        except Exception:
            pass

    def node_resources(self) -> list[dict[str, float]]:
        """The resources of each live node of the cluster (CPU, memory in bytes, ...)."""
        ray = self._connect()
        return [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]

    def close(self) -> None:
        if self._stop_set and self._ray is not None:  # a cluster outlives the build: no key left
            self._stop.clear()
            self._stop_set = False
        if self._started and self._ray is not None:
            with _ray_quiet():
                self._ray.shutdown()
        self._ray, self._started = None, False


def _refused_token(ray: Any, exc: BaseException) -> bool:
    """Whether `exc` is Ray's authentication error (a missing or wrong token)."""
    kind = getattr(getattr(ray, "exceptions", None), "AuthenticationError", None)
    return isinstance(kind, type) and isinstance(exc, kind)


@contextmanager
def _ray_quiet() -> Iterator[None]:
    """Keep Ray's start-up and shutdown chatter (its token-authentication banner, "started a
    local Ray instance") out of buildenv's output: with `configure_logging=False` Ray's
    warnings would reach stderr through Python's last-resort handler. Errors still show."""
    logger = logging.getLogger("ray")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _setting(name: str, kind: type[int] | type[float]) -> Any:
    """A positive number from the environment variable `name` (None when unset or empty);
    BE004 (exit 2) naming the variable when it is something else (`30s`, `two`, `0`): a
    typo must not become an internal error, nor silently the default."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        unit = "seconds" if name == "BUILDENV_RAY_TIMEOUT" else (
            "MiB" if name.endswith("_MB") else "CPUs")
        raise DiagnosticError([Diagnostic(
            "BE004", f"{name} must be a positive {'whole ' if kind is int else ''}number "
            f"({unit}), not '{raw}'", hints=(f"e.g. {name}={'30' if kind is float else '2'}, "
                                             "or unset it for the default",))], 2)
    return value


def make_executor(name: str | None, project: Any = None) -> Executor:
    """`--executor` if given, else `[tool.buildenv] executor`, else local."""
    chosen = name or (project.config.executor if project is not None else None) or "local"
    if chosen not in EXECUTORS:
        raise DiagnosticError([Diagnostic("BE004", f"unknown executor '{chosen}'", hints=(
            did_you_mean(chosen.lower(), EXECUTORS) or "use local or ray",))], 2)
    if chosen == "ray" and not _ray_installed():
        # said when asked for, not when first used: work the caches spare would hide it
        raise DiagnosticError([Diagnostic(
            "BE880", "the Ray executor needs Ray, which is not installed",
            hints=("pip install 'buildenv[ray]'", "or run with --executor local"))], 2)
    return RayExecutor() if chosen == "ray" else LocalExecutor()


def _ray_installed() -> bool:
    """Whether `import ray` can work, without importing it (seconds of start-up)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules: blocked
        return False
