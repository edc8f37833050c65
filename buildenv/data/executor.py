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
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "make_executor"]

EXECUTORS = ("local", "ray")
RAY_TIMEOUT = 30.0  # seconds to reach a Ray cluster (BUILDENV_RAY_TIMEOUT)
CANCEL_GRACE = 10.0  # seconds a cancelled task has to stop its training before its worker dies


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

    def _connect(self) -> Any:
        if self._ray is not None:
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
        if not items:
            return []
        ray = self._connect()
        remote = self._remotes.get(fn)
        if remote is None:
            remote = self._remotes[fn] = ray.remote(num_cpus=1, max_retries=2)(fn)
        refs = [remote.remote(item) for item in items]
        try:
            return list(ray.get(refs))
        except Exception as exc:  # a worker died, an object was lost: not the data's fault
            for ref in refs:
                try:
                    ray.cancel(ref)
                except Exception:
                    pass
            text = str(exc).strip().splitlines()
            raise DiagnosticError([Diagnostic(
                "BE882", f"a Ray task failed: {type(exc).__name__}"
                + (f": {text[-1]}" if text else ""),
                hints=("the Ray dashboard or `ray logs` has the worker's output",
                       "rerun with --executor local to rule the cluster out"))], 2) from None

    def run_one(self, fn: Callable[[Any], Any], item: Any, num_cpus: float = 1,
                memory: int | None = None, retries: int = 1,
                runtime_env: dict[str, Any] | None = None) -> Any:
        """`fn(item)` as one Ray task asking for `num_cpus` and `memory` bytes, retried
        `retries` times when its worker dies; Ray chooses the node. Raises what the task
        raised, or ray's error for a task lost after its retries (the caller reports it). An
        interrupt (Ctrl-C) cancels the task, killing its worker."""
        ray = self._connect()
        options: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": retries}
        if memory:
            options["memory"] = memory
        if runtime_env:
            options["runtime_env"] = runtime_env
        with self._flight_lock:
            if self._cancelled:  # interrupted: no new task after cancel_all()
                raise KeyboardInterrupt
            ref = ray.remote(fn).options(**options).remote(item)
            self._in_flight.add(ref)
        try:
            return ray.get(ref)
        except BaseException:
            self._cancel(ray, [ref])
            raise
        finally:
            with self._flight_lock:
                self._in_flight.discard(ref)

    def cancel_all(self) -> None:
        """Cancel every task `run_one` is waiting for, and refuse new ones: the interrupted
        driver's threads then return instead of waiting for trainings nobody will use. Ray
        first raises KeyboardInterrupt in each task (the training's process group is stopped
        and its temp dir removed, as on a local Ctrl-C); a task still running after
        CANCEL_GRACE seconds has its worker killed."""
        with self._flight_lock:
            self._cancelled = True
            refs = list(self._in_flight)
        if refs and self._ray is not None:
            self._cancel(self._ray, refs)

    @staticmethod
    def _cancel(ray: Any, refs: list[Any]) -> None:
        for force in (False, True):
            for ref in refs:
                try:
                    ray.cancel(ref, force=force)
                except Exception:  # finished, or already cancelled
                    pass
            if force:
                return
            try:
                _, refs = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE)
            except Exception:
                return
            if not refs:
                return

    def node_resources(self) -> list[dict[str, float]]:
        """The resources of each live node of the cluster (CPU, memory in bytes, ...)."""
        ray = self._connect()
        return [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]

    def close(self) -> None:
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
