"""A pair's training as a Ray task: `build --all --executor ray`.

The driver does everything around the training exactly as a local build does (static checks,
lock check, validation, the cache, verification, the artifact, `dist/`, the matrix,
registration); only the training process runs on a Ray worker, which Ray chooses from the
resources the training declares (`[tool.buildenv.trainings.X] resources`). The worker starts
the same hermetic runner a local build starts (`launch.run_training`: scrubbed environment,
seeds, threads, time limit, process group), so the sandbox applies there as here, and it reads
the data through the data gate, verified against the lock's pins, from the same uris. What the
training wrote comes back to the driver as bytes, with its result, and is placed where a local
training would have written it: the same pairs give the same artifact digests either way
(tests/test_build_ray.py).

Code: on a local Ray the worker runs in the repository itself. On a cluster the repository
travels as Ray's runtime environment (`working_dir`), so its code digest is of what is shipped
(the working tree, uncommitted changes included), and datasets must be at uris every node
reaches (object storage, or a file system mounted at the same path): a local path is refused
before anything is scheduled (BE883), naming the dataset. A worker lost mid-build is retried
once, then the pair fails with BE305; a training that asks for more than any node has is
refused before scheduling (BE884), and so is a cluster whose Python or buildenv version
differs from the driver's (BE885, naming both).
"""

from __future__ import annotations

import base64
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from buildenv import __version__
from buildenv.compile.launch import (
    interrupt_trainings,
    package_parent,
    resume_trainings,
    run_training,
)
from buildenv.compile.sandbox_policy import SandboxPolicy
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.project import Project, TrainingConfig
from buildenv.data.executor import RayExecutor, when_stopped
from buildenv.data.storage import locate
from buildenv.env.resolve import Resolved
from buildenv.toolchain.toolchain import Toolchain, runner_interpreter

__all__ = ["RemoteTraining", "check_reachable", "check_resources", "check_versions",
           "ship_repository", "shipping_note", "train_on_ray", "version_problems", "versions"]

GIB = 1 << 30
SHIPPED_EXCLUDES = [".git/", ".buildenv/", "dist/", ".venv/", "**/__pycache__/"]


@dataclass(frozen=True)
class RemoteTraining:
    """Everything a worker needs to run one training, picklable."""

    project: Project
    config: TrainingConfig
    res: Resolved
    timeout: float
    pins: dict[str, str]
    label_pins: dict[str, dict[str, Any]]
    manifests: dict[str, Any]
    key: str  # what a private release of the model's figures is remembered under
    shipped: bool  # the repository came as the runtime environment's working_dir
    policy: SandboxPolicy  # the pair's sandbox policy, decided by the driver
    rows: dict[str, int]  # the lock's row counts (the pre-check skips small datasets)
    toolchain: Toolchain | None = None  # the training's locked environment (made on the worker)


def train_task(task: RemoteTraining) -> tuple[dict, dict[str, str]]:
    """Runs on the worker: the training, and the files it wrote (base64, by relative path).
    When the build is interrupted, the training's process group is killed and its temp dirs
    removed, and KeyboardInterrupt ends the task (a normal "stopped" reply: `run_one`)."""
    project = task.project
    if task.shipped:  # the working_dir Ray unpacked is this worker's copy of the repository
        project = Project.discover(Path.cwd())
    work = Path(tempfile.mkdtemp(prefix="buildenv-remote-"))
    try:
        model_dir = work / "model"
        try:
            interpreter = None if task.toolchain is None else runner_interpreter(
                project, task.toolchain, package_parent())
        except DiagnosticError as exc:  # the environment cannot be had on this worker
            return {"ok": False, "diagnostics": [d.to_json() for d in exc.diagnostics]}, {}
        try:  # an interrupted build's stop flag stops the training as a local Ctrl-C does
            with when_stopped(interrupt_trainings):
                result = run_training(project, task.config, task.res, model_dir, task.timeout,
                                      task.pins, task.label_pins, task.manifests, task.key,
                                      task.rows, task.policy, interpreter)
        finally:  # this worker's next task may start trainings again
            resume_trainings()
        files = {}
        if model_dir.is_dir():
            for path in sorted(model_dir.rglob("*")):
                if path.is_file():
                    files[path.relative_to(model_dir).as_posix()] = base64.b64encode(
                        path.read_bytes()).decode("ascii")
        return result, files
    finally:
        shutil.rmtree(work, ignore_errors=True)


def train_on_ray(executor: RayExecutor, task: RemoteTraining, model_dir: Path) -> dict:
    """The training's result as `launch.run_training` returns it, its files written under
    `model_dir` here. A worker lost twice is BE305, like a local training process that died."""
    resources = task.config.resources
    cpus = resources.cpus or task.config.threads or 1
    memory = int(resources.memory_gb * GIB) if resources.memory_gb else None
    try:
        result, files = executor.run_one(train_task, task, num_cpus=cpus, memory=memory,
                                         retries=1)
    except DiagnosticError:
        raise
    except Exception as exc:  # the worker died twice, its node went away, the task was lost
        if executor.cancelled:  # cancelled by an interrupt: the pair stopped, it did not fail
            raise KeyboardInterrupt from None
        text = str(exc).strip().splitlines()
        return {"ok": False, "transient": True, "diagnostics": [{
            "code": "BE305", "message": "training task lost on its Ray worker after one retry: "
            f"{type(exc).__name__}" + (f": {text[-1]}" if text else ""),
            "path": task.config.module_path, "line": None, "col": None, "severity": "error",
            "hints": ["the Ray dashboard or `ray logs` has the worker's output",
                      "rerun with --executor local to rule the cluster out"]}]}
    model_dir.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        target = model_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
    return result


def ship_repository(executor: RayExecutor, project: Project) -> None:
    """Have a cluster's connection carry the repository as its runtime environment's
    `working_dir` (Ray takes a local directory only for the whole job, not for one task):
    call before `prepare()`. A local Ray's workers run in the repository itself."""
    if executor.remote:
        executor.runtime_env = {"working_dir": str(project.root), "excludes": SHIPPED_EXCLUDES}


def shipping_note(project: Project) -> Diagnostic | None:
    """A note when the repository shipped to a cluster has uncommitted changes (git): they
    are shipped as they are, and the lineage's code digest is of what is shipped, not of a
    commit. None for a clean tree, or where git cannot tell."""
    try:
        status = subprocess.run(
            ["git", "-C", str(project.root), "status", "--porcelain", "--", "."],
            capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    changed = [line[3:] for line in status.stdout.splitlines() if len(line) > 3]
    if status.returncode != 0 or not changed:
        return None
    shown = ", ".join(changed[:3]) + (f" (and {len(changed) - 3} more)" if len(changed) > 3
                                      else "")
    return Diagnostic(
        "BE886", f"the repository has uncommitted changes ({len(changed)} path(s): {shown}); "
        "they are shipped to the Ray cluster as they are, and each artifact's code digest is "
        "of the files shipped, not of a commit", severity=Severity.NOTE,
        hints=("commit first to build what a commit names",))


def check_resources(executor: RayExecutor, trainings: dict[str, TrainingConfig],
                    project: Project | None = None) -> list[Diagnostic]:
    """BE884 for each training whose resources no live node has, before anything runs; at the
    line of pyproject.toml that asks (its `resources`, else `threads`, else its table)."""
    nodes = executor.node_resources()
    problems = []
    for name, config in sorted(trainings.items()):
        cpus = config.resources.cpus or config.threads or 1
        memory = (config.resources.memory_gb or 0) * GIB
        if not any(n.get("CPU", 0) >= cpus and (not memory or n.get("memory", 0) >= memory)
                   for n in nodes):
            most = max((n.get("CPU", 0) for n in nodes), default=0)
            most_mem = max((n.get("memory", 0) for n in nodes), default=0) / GIB
            asked = "resources" if "resources" in config.model_fields_set else (
                "threads" if config.threads else None)
            line = project.config_line("trainings", name, *([asked] if asked else [])) \
                if project is not None else None
            problems.append(Diagnostic(
                "BE884", f"training '{name}' asks for {cpus:g} CPU(s)"
                + (f" and {memory / GIB:g} GiB" if memory else "")
                + f", more than any node of the Ray cluster has (the largest: {most:g} CPU(s), "
                f"{most_mem:.1f} GiB)", "pyproject.toml" if project is not None else None,
                line, hints=(
                    f"lower [tool.buildenv.trainings.{name}] resources, or add a larger node",)
                if executor.remote else (
                    f"this machine's Ray was started with {most:g} CPU(s) "
                    "(BUILDENV_RAY_NUM_CPUS, default every core): lower "
                    f"[tool.buildenv.trainings.{name}] resources, or run on a cluster "
                    "(BUILDENV_RAY_ADDRESS)", "or build with --executor local, which reserves "
                    "nothing")))
    return problems


def check_reachable(project: Project, resolved: dict[str, Resolved]) -> list[Diagnostic]:
    """BE883 for each dataset at a repository path, which the workers of a cluster cannot read
    (the repository shipped to them holds the code, not the data). A `file://` uri names the
    same absolute path on every node: a shared mount, which workers read as they read s3://."""
    problems = []
    seen: set[str] = set()
    for env_name, res in sorted(resolved.items()):
        for ds_name, ds in sorted(res.env.datasets.items()):
            if ds.uri in seen:
                continue
            seen.add(ds.uri)
            if urlparse(ds.uri).scheme == "":
                mounted = locate(ds.uri, project).local
                problems.append(res.diag(
                    "BE883", f"dataset '{ds_name}' of environment '{env_name}' is at a "
                    f"repository path ('{ds.uri}') that the Ray cluster's workers cannot read",
                    "datasets", ds_name, "uri", hints=(
                        "put it in object storage (s3://, gs://) and use that uri",
                        f"or mount it at the same path on every node and write the uri as "
                        f"'{mounted.as_uri() if mounted else 'file:///...'}"
                        f"{'/' if ds.uri.endswith('/') else ''}'",
                        "or run with --executor local")))
    return problems


def versions(_: object = None) -> dict[str, str]:
    """This interpreter's Python (major.minor) and buildenv versions: run on a worker too."""
    return {"python": ".".join(platform.python_version_tuple()[:2]), "buildenv": __version__}


def version_problems(driver: dict[str, str], worker: dict[str, str]) -> list[Diagnostic]:
    """BE885 when a worker's Python or buildenv version is not the driver's."""
    differ = [k for k in ("python", "buildenv") if driver.get(k) != worker.get(k)]
    if not differ:
        return []
    both = "; ".join(f"{k} {driver.get(k)} here, {worker.get(k)} on the cluster" for k in differ)
    return [Diagnostic("BE885", f"the Ray cluster runs other versions than this driver: {both}",
                       hints=("install the driver's versions in the cluster's image (pip install "
                              f"'buildenv[ray]=={driver.get('buildenv')}' on Python "
                              f"{driver.get('python')}), or build with --executor local",))]


def check_versions(executor: RayExecutor) -> list[Diagnostic]:
    """BE885 before scheduling: a worker's versions, asked with one small task."""
    return version_problems(versions(), executor.run_one(versions, None, num_cpus=0.01))
