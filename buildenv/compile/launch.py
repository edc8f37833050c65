"""Start the hermetic training process and collect its result.

The runner (`python -m buildenv.training.runner REQ`) runs in the training's toolchain: the
interpreter of its locked environment, with only buildenv's source on PYTHONPATH
(`toolchain.runner_interpreter`). It gets a scrubbed environment, fixed seeds
and thread counts, dies with its parent (PR_SET_PDEATHSIG), and is stopped at its time limit.
It leads its own process group (a new session), so what the training starts itself (joblib
or multiprocessing workers) is killed with it: the whole group, on timeout and on interrupt.
It runs in the sandbox its policy asks for (`sandbox.Sandbox`: no network, read-only code,
data only as descriptors the build hands over), which wraps its command and environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from buildenv.compile.sandbox import Sandbox
from buildenv.compile.sandbox_policy import SandboxPolicy
from buildenv.core.process_tree import die_with_parent
from buildenv.core.project import Project, TrainingConfig
from buildenv.env.resolve import Resolved
from buildenv.toolchain.bytecode import fill_cache
from buildenv.toolchain.toolchain import Interpreter
from buildenv.training import skops_table

__all__ = ["EarlyTraining", "child_env", "interrupt_trainings", "kill_group", "own_interpreter",
           "package_parent", "resume_trainings", "run_training", "wait_policy"]


_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "USER",
             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "OMP_WAIT_POLICY",
             "MKL_NUM_THREADS", "SOURCE_DATE_EPOCH", "SSL_CERT_FILE", "SSL_CERT_DIR",
             "REQUESTS_CA_BUNDLE", "VIRTUAL_ENV")


_KEEP_PREFIXES = ("AWS_", "GOOGLE_", "GCS_")


def package_parent() -> Path:
    """The directory holding this very buildenv package (a checkout, site-packages, a Pants
    sandbox): the runner must import the same buildenv."""
    return Path(__file__).resolve().parents[2]


def own_interpreter() -> Interpreter:
    """buildenv's own interpreter, importing this very buildenv (interpreter mode)."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return Interpreter(sys.executable, (str(package_parent()), *inherited),
                       {"PYTHONDONTWRITEBYTECODE": "1"})


def wait_policy(threads: int, load: float | None = None, cores: int | None = None
                ) -> str | None:
    """The OMP_WAIT_POLICY a training process gets unless the user set one: None (OpenMP's
    own default: spin briefly, then sleep) on a machine with a free core per training thread,
    PASSIVE on a busy one. Spinning waits burn the cores they wait for as soon as anything
    else runs (measured 4-8x slower fits on a loaded two-core machine); on an idle machine
    passive waits cost a 1.4x slower fit (bench/bench_build.py --only waitpolicy). The
    schedule, so the model's bytes, is the same either way. `load`: the one-minute load
    average (default: the machine's now)."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average (not Linux/macOS): assume idle, like most users
            return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return "PASSIVE" if load + threads > cores + 0.5 else None


class _Running:
    """The trainings this process runs now (`build --all` runs pairs side by side): their
    native threads, which compete for cores before the load average shows it, and their
    processes, which an interrupted build stops (they run in sessions of their own, so the
    terminal's Ctrl-C reaches only buildenv)."""

    def __init__(self) -> None:
        self.threads = 0
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.interrupted = False

    def add(self, threads: int) -> int:
        """Count `threads` in; the threads already running before them. KeyboardInterrupt once
        the build was interrupted: no training starts after that."""
        with self.lock:
            if self.interrupted:
                raise KeyboardInterrupt
            before = self.threads
            self.threads += threads
            return before

    def remove(self, threads: int) -> None:
        with self.lock:
            self.threads -= threads

    def started(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.add(proc)
            late = self.interrupted
        if late:
            _kill_group_of(proc)

    def finished(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.discard(proc)

    def interrupt(self) -> None:
        """Stop every running training and refuse new ones: the threads waiting for them raise
        KeyboardInterrupt instead of returning, so nothing of an interrupted pair is kept."""
        with self.lock:
            self.interrupted = True
            procs = list(self.procs)
        for proc in procs:
            _kill_group_of(proc)

    def resume(self) -> None:
        with self.lock:
            self.interrupted = False


_RUNNING = _Running()


def child_env(seed: int, threads: int, others: int = 0,
              interpreter: Interpreter | None = None) -> dict[str, str]:
    """The training process's environment; `others`: threads of trainings running beside it;
    `interpreter`: the training's toolchain (default: buildenv's own)."""
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith(_KEEP_PREFIXES)}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    policy = wait_policy(threads + others)
    if policy is not None:
        env.setdefault("OMP_WAIT_POLICY", policy)
    if interpreter is None:  # buildenv's own interpreter (a Pants sandbox, a test's PYTHONPATH)
        interpreter = own_interpreter()
    env["PYTHONPATH"] = os.pathsep.join(interpreter.pythonpath)
    env.update(interpreter.env)
    env.update({"PYTHONHASHSEED": str(seed % (2**32)), "TZ": "UTC",
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true", "MLFLOW_TRACKING_URI": "file:///nonexistent-buildenv"})
    return env


def _kill_group_of(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the runner's process group (the runner and everything it started); reap it."""
    _kill_group_of(proc)
    proc.wait()


def interrupt_trainings() -> None:
    """Ctrl-C (or SIGTERM) of a build running several trainings: kill them all, start none
    until `resume_trainings` (once the interrupted build's threads are done)."""
    _RUNNING.interrupt()


def resume_trainings() -> None:
    _RUNNING.resume()


class EarlyTraining:
    """A training started (`run_training` in a thread, given `on_start`) while its build still
    validates: the process's start and imports overlap validation. `result()` once validation
    passed; `stop()` when it failed or was interrupted: the process group is killed and
    reaped, and whatever it did is dropped (its model directory is the build's to remove)."""

    def __init__(self, start: Callable[[Callable[[subprocess.Popen], None]], dict]) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stopped = self._finished = False
        self._value: dict = {}
        self._error: BaseException | None = None
        self._launched = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(start,), daemon=True,
                                        name="buildenv-early-training")
        self._thread.start()
        # The caller waits until the process is started: a fork while this thread imports
        # (dlopen holds the loader's lock) leaves a child whose preexec_fn never returns.
        self._launched.wait()

    def _run(self, start: Callable[[Callable[[subprocess.Popen], None]], dict]) -> None:
        try:
            self._value = start(self._started)
        except BaseException as exc:  # taken back by result(), on the build's thread
            self._error = exc
        finally:
            with self._lock:
                self._finished = True  # reaped: its process id may be another's now
            self._launched.set()

    def _started(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._proc, stopped = proc, self._stopped
        self._launched.set()
        if stopped:
            _kill_group_of(proc)

    def result(self) -> dict:
        try:
            self._thread.join()
        except BaseException:  # Ctrl-C while waiting: the training goes too
            self.stop()
            raise
        if self._error is not None:
            raise self._error
        return self._value

    def stop(self) -> None:
        """Kill it unless it has ended (then nothing is left to kill); wait for its thread."""
        with self._lock:
            self._stopped = True
            proc = None if self._finished else self._proc
        if proc is not None:
            _kill_group_of(proc)
        self._thread.join()


def run_training(project: Project, config: TrainingConfig, res: Resolved, out_dir: Path,
                 timeout: float, pins: dict[str, str],
                 label_pins: dict[str, dict] | None = None, manifests: dict | None = None,
                 release_key: str | None = None, rows: dict[str, int] | None = None,
                 policy: SandboxPolicy | None = None, interpreter: Interpreter | None = None,
                 on_start: Callable[[subprocess.Popen], None] | None = None) -> dict:
    """Run the training; its result (a dict) or failure diagnostics. `pins` (datasets) and
    `label_pins` (label sets) are the lock's digests: every read of the training and of its
    evaluation is verified against them (and `manifests`, the file lists of partitioned
    datasets). `release_key` (the build's cache key without the sandbox policy: the same
    model spends once) names what a private release of its figures is remembered under.
    `rows`: the lock's row counts (the pre-check skips small datasets). `policy`: the pair's
    sandbox policy (default: from its configuration). `interpreter`: the training's toolchain
    (default: buildenv's own). `on_start(proc)`: told the process once it runs (a build that
    started it before validation ends kills it if validation fails: `stop_training`)."""
    work = Path(tempfile.mkdtemp(prefix="buildenv-train-"))
    box = None
    try:
        python = interpreter or own_interpreter()
        box = Sandbox.prepare(project, config, res, policy, out_dir, work, manifests or {},
                              python.python, release_key, runtime=python.runtime_paths())
        request = {
            "root": str(project.root), "data_root": str(project.data_root or project.root),
            "module_path": config.module_path, "function": config.function,
            "seed": config.seed, "threads": config.native_threads,
            "precheck": config.precheck, "rows": dict(rows or {}),
            "env": res.env.model_dump(mode="json", by_alias=True),
            "out_dir": str(out_dir), "result": str(work / "result.json"),
            "pins": dict(pins), "label_pins": dict(label_pins or {}), "release_key": release_key,
            "manifests": {name: m.to_json() for name, m in (manifests or {}).items()},
            "sandbox": box.request, "skops_types": skops_table.cached(python.python),
        }
        (work / "request.json").write_text(json.dumps(request))
        log_path = work / "output.log"
        threads = config.native_threads
        others = _RUNNING.add(threads)
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.Popen(
                    box.command([python.python, "-m", "buildenv.training.runner",
                                 str(work / "request.json")]),
                    cwd=project.root, env=box.env(child_env(config.seed, threads, others, python)),
                    stdin=subprocess.DEVNULL, pass_fds=box.pass_fds,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
            except BaseException:
                _RUNNING.remove(threads)
                raise
            _RUNNING.started(proc)
            box.started()
            if on_start is not None:
                on_start(proc)
            try:
                proc.wait(timeout=timeout)
                if _RUNNING.interrupted:  # killed by interrupt_trainings: not a result
                    raise KeyboardInterrupt
            except subprocess.TimeoutExpired:
                box.stop(proc)
                kill_group(proc)
                return {"ok": False, "diagnostics": [{
                    "code": "BE302", "message": f"training exceeded its time limit of "
                    f"{timeout:g} s", "path": config.module_path, "line": None, "col": None,
                    "severity": "error", "hints": ["raise `timeout` in the training's "
                                                   "[tool.buildenv.trainings] table"]}]}
            except BaseException:  # Ctrl-C, SIGTERM turned into an exception, a bug
                box.stop(proc)
                kill_group(proc)
                raise
            finally:
                _RUNNING.remove(threads)
                _RUNNING.finished(proc)
            kill_group(proc)  # the runner exited: workers it left behind go too
        output = log_path.read_text(errors="replace")
        result_file = work / "result.json"
        if not result_file.is_file():
            failed = box.setup_failure(output)
            if failed is not None:
                return {"ok": False, "diagnostics": [failed]}
            tail = _output_tail(output, res)
            return {"ok": False, "diagnostics": [{
                "code": "BE305", "message": f"training process exited with code "
                f"{proc.returncode} and no result", "path": config.module_path, "line": None,
                "col": None, "severity": "error", "hints": tail}]}
        result = json.loads(result_file.read_text())
        uncached = result.pop("uncached_sources", None)
        if uncached and interpreter is not None:
            fill_cache(python.python, python.env, python.cache_trees(), uncached)
        fresh_types = result.pop("skops_types", None)
        if fresh_types is not None:  # the sandboxed runner built it: kept for the next build
            skops_table.store(python.python, fresh_types)
        return box.finish(result)
    finally:
        if box is not None:
            box.close()
        shutil.rmtree(work, ignore_errors=True)


def _output_tail(output: str, res: Resolved) -> list[str]:
    """The last lines the training printed, unless it may have printed restricted rows."""
    lines = output.strip().splitlines()
    if res.env.privacy.restricted:
        return [f"({len(lines)} line(s) of output withheld: environment {res.name} has "
                "restricted datasets)"] if lines else []
    return lines[-5:]
