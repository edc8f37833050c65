"""Start the hermetic training process and collect its result.

The runner (`python -m buildenv.training.runner REQ`; for derived datasets and labeling
functions `buildenv.training.sources_runner`) gets a scrubbed environment, fixed seeds
and thread counts, dies with its parent (PR_SET_PDEATHSIG), and is stopped at its time limit.
It leads its own process group (a new session), so what the training starts itself (joblib
or multiprocessing workers) is killed with it: the whole group, on timeout and on interrupt.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from buildenv.core.project import Project, TrainingConfig
from buildenv.env.resolve import Resolved

__all__ = ["child_env", "kill_group", "run_sources", "run_training"]


_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "USER",
             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "OMP_WAIT_POLICY",
             "MKL_NUM_THREADS", "SOURCE_DATE_EPOCH", "SSL_CERT_FILE", "SSL_CERT_DIR",
             "REQUESTS_CA_BUNDLE", "VIRTUAL_ENV")


_KEEP_PREFIXES = ("AWS_", "GOOGLE_", "GCS_")


def child_env(seed: int, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith(_KEEP_PREFIXES)}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    # OpenMP threads that wait for each other by spinning burn the cores they wait for as soon
    # as anything else runs (the build's own threads, other jobs): measured 4-8x slower fits on
    # a loaded two-core machine. Sleeping waits cost little when the machine is idle, and the
    # schedule (so the model's bytes) is the same. A user's OMP_WAIT_POLICY is kept.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # The runner must import this very buildenv (a Pants sandbox, a test's PYTHONPATH).
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update({"PYTHONHASHSEED": str(seed % (2**32)), "TZ": "UTC",
                "PYTHONDONTWRITEBYTECODE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true", "MLFLOW_TRACKING_URI": "file:///nonexistent-buildenv"})
    return env


def _die_with_parent() -> None:
    """Linux: the training dies when the build process does (SIGKILL leaves no orphan)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the runner's process group (the runner and everything it started); reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_training(project: Project, config: TrainingConfig, res: Resolved, out_dir: Path,
                 timeout: float, pins: dict[str, str],
                 label_pins: dict[str, dict] | None = None, manifests: dict | None = None,
                 release_key: str | None = None) -> dict:
    """Run the training; its result (a dict) or failure diagnostics. `pins` (datasets) and
    `label_pins` (label sets) are the lock's digests: every read of the training and of its
    evaluation is verified against them (and `manifests`, the file lists of partitioned
    datasets). `release_key` (the build's cache key) names what a private release of its
    figures is remembered under."""
    request = {
        "module_path": config.module_path, "function": config.function,
        "seed": config.seed, "out_dir": str(out_dir),
        "label_pins": dict(label_pins or {}), "release_key": release_key,
    }
    return _launch(project, res, "buildenv.training.runner", request, pins, manifests or {},
                   config.seed, config.native_threads, timeout, "training", config.module_path,
                   "raise `timeout` in the training's [tool.buildenv.trainings] table")


def run_sources(project: Project, res: Resolved, jobs: list[dict], pins: dict[str, str],
                manifests: dict, timeout: float, path: str, timeout_hint: str) -> dict:
    """Run derived datasets' transforms and label sets' labeling functions (`jobs`) in the
    same hermetic process a training gets (`buildenv.training.sources_runner`), reading
    through the gate pinned to `pins`/`manifests`; its result (outputs and diagnostics).
    `path` is what a timeout or crash is reported at."""
    threads = TrainingConfig(entry="x.py:x").native_threads
    return _launch(project, res, "buildenv.training.sources_runner", {"jobs": jobs}, pins,
                   manifests, 0, threads, timeout, "source", path, timeout_hint)


def _launch(project: Project, res: Resolved, runner: str, request: dict, pins: dict[str, str],
            manifests: dict, seed: int, threads: int, timeout: float, what: str, path: str,
            timeout_hint: str) -> dict:
    """Start `python -m <runner> REQUEST` hermetically and wait for its `result.json`."""
    work = Path(tempfile.mkdtemp(prefix="buildenv-train-"))
    try:
        request = {
            **request,
            "root": str(project.root), "data_root": str(project.data_root or project.root),
            "env": res.env.model_dump(mode="json", by_alias=True),
            "result": str(work / "result.json"), "pins": dict(pins),
            "manifests": {name: {"partitions": list(m.partitions), "files": m.files_json()}
                          for name, m in manifests.items()},
        }
        (work / "request.json").write_text(json.dumps(request))
        log_path = work / "output.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", runner, str(work / "request.json")],
                cwd=project.root, env=child_env(seed, threads), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                return {"ok": False, "diagnostics": [{
                    "code": "BE302" if what == "training" else "BE344",
                    "message": f"{what} exceeded its time limit of {timeout:g} s", "path": path,
                    "line": None, "col": None, "severity": "error", "hints": [timeout_hint]}]}
            except BaseException:  # Ctrl-C, SIGTERM turned into an exception, a bug
                kill_group(proc)
                raise
            kill_group(proc)  # the runner exited: workers it left behind go too
        output = log_path.read_text(errors="replace")
        result_file = work / "result.json"
        if not result_file.is_file():
            tail = _output_tail(output, res)
            return {"ok": False, "diagnostics": [{
                "code": "BE305" if what == "training" else "BE345",
                "message": f"{what} process exited with code {proc.returncode} and no result",
                "path": path, "line": None, "col": None, "severity": "error", "hints": tail}]}
        return json.loads(result_file.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _output_tail(output: str, res: Resolved) -> list[str]:
    """The last lines the training printed, unless it may have printed restricted rows."""
    lines = output.strip().splitlines()
    if res.env.privacy.restricted:
        return [f"({len(lines)} line(s) of output withheld: environment {res.name} has "
                "restricted datasets)"] if lines else []
    return lines[-5:]
