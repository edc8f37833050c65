"""The process that runs code-made sources: `python -m buildenv.training.sources_runner REQ`
(or `- [SANDBOX]`: started early by `compile.source_process`, it confines itself as file
SANDBOX says, imports what jobs need, then reads REQ's path from standard input).

Started by the compile room like a training (scrubbed environment, fixed seeds, its own
process group, a time limit, the training's sandbox: `training.confinement.Guard`, whose
refusals each job reports as its own), it runs a list of jobs -- derived datasets'
transforms (`derive_run`) and label sets' labeling functions (`label_run`) -- reading data only
through the data gate, pinned to the lock, and writes each output file into the directory the
build gave it. The build moves finished outputs into its stores; a job that fails leaves no
output the build would keep. The result (`result.json`) lists the outputs, the problems and,
per job, the repository files its code read (`code_reads`: the build pins them as code).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any

# The sandbox's side is imported and applied first (see training.runner): Landlock and seccomp
# bind only the threads started after them.
from buildenv.core.confine import ConfinementError
from buildenv.core.leave import leave
from buildenv.training.confinement import Guard
from buildenv.training.env_view import EnvironmentView, ProjectView

# Deferred imports (buildenv, numpy): like the training runner, an import that fails inside
# `run` becomes a BE345 result instead of a process that dies before writing one.

__all__ = ["main"]


def run(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from buildenv.training.code_reads import CodeReads
    from buildenv.training.derive_run import run_transform_job
    from buildenv.training.label_run import run_functions_job
    from buildenv.training.user_code import manifests as _manifests

    random.seed(0)
    np.random.seed(0)
    root = Path(request["root"]).resolve()
    own = Path(__file__).resolve().parents[1]
    jobs = request["jobs"]
    views = request.get("views") or [None] * len(jobs)
    if "cache_dir" in request and all(v is not None for v in views):
        # every job is a transform the build described: no pydantic in this process
        project: Any = ProjectView(root, Path(request["data_root"]), request["cache_dir"],
                                   request.get("store"), lambda: _project(request, root))
        envs: list[Any] = [EnvironmentView.of(v, partial(_narrowed, request, job))
                           for v, job in zip(views, jobs)]
    else:
        project = _project(request, root)
        envs = [_environment(request)] * len(jobs)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    pins = dict(request.get("pins") or {})
    manifests = _manifests(request)
    outputs: dict[str, Any] = {}
    diagnostics: list[dict[str, Any]] = []
    recorder = CodeReads.installed(root, own)
    reads: list[list[str]] = []  # per job: the repository files its code read
    started = time.perf_counter()
    for job, env in zip(jobs, envs):
        runner = run_transform_job if job["kind"] == "transform" else run_functions_job
        if Guard.active is not None:  # what the sandbox refuses is reported as the job's
            Guard.active.subject = (
                f"the transform {job['transform']} of dataset '{job['dataset']}'"
                if job["kind"] == "transform" else
                f"the labeling functions of label set '{job['label_set']}' ({job['module']})")
        with recorder.recording() as read:
            diagnostics = runner(job, env, project, pins, manifests, root, own, outputs)
        reads.append(read)
        if diagnostics:
            break
    seconds = outputs.pop("_seconds", None)
    failed = outputs.pop("_failed", None)  # the index of a transform job's file that failed
    timings = {"run": round(time.perf_counter() - started, 6)}
    if seconds is not None:
        timings["apply"] = round(seconds, 6)
    return {"ok": not diagnostics, "diagnostics": diagnostics, "outputs": outputs,
            "timings": timings, "failed": failed, "reads": reads}


def _project(request: dict[str, Any], root: Path) -> Any:
    """The project, as `core.project` opens it (pydantic: its configuration's models)."""
    from buildenv.core.project import Project

    return Project(root=root, data_root=Path(request["data_root"]))


def _environment(request: dict[str, Any]) -> Any:
    """The request's environment, validated by its model (pydantic)."""
    from buildenv.env.spec import Environment

    return Environment.model_validate(request["env"])


def _narrowed(request: dict[str, Any], job: dict[str, Any]) -> Any:
    """The model of what a transform job's view describes: its inputs' environment."""
    from buildenv.data.lock.derived import narrowed

    return narrowed(_environment(request), list(job["inputs"]))


def _prepare() -> None:
    """What every job needs, imported before the request comes (`-`: started early)."""
    # deferred on purpose: imported while the build still checks the code (see the module)
    import pandas  # noqa: F401 -- what transforms and labeling functions use

    import buildenv.training.derive_run
    import buildenv.training.label_run  # noqa: F401


def _confine(path: str | None) -> tuple[Guard | None, dict[str, Any] | None]:
    """Enter the sandbox file `path` describes (`compile.sandbox.Sandbox`'s request and the
    root); the guard, or the BE326 result when it could not be entered."""
    if path is None:
        return None, None
    spec = json.loads(Path(path).read_text())
    try:
        return Guard.enter(spec["sandbox"], Path(spec["root"]).resolve()), None
    except ConfinementError as exc:
        return None, {"ok": False, "diagnostics": [{
            "code": "BE326", "message": f"the sandbox could not confine the process building "
            f"code-made sources: {exc}", "path": None, "line": None, "col": None,
            "severity": "error", "hints": ["`buildenv doctor` checks this machine's sandbox"]}]}


def main(argv: list[str] | None = None) -> int:
    """`REQ`: run the request in file REQ. `- [SANDBOX]`: confine itself as file SANDBOX
    says, import, then read REQ's path from standard input (no line: the build needs nothing
    after all, exit quietly)."""
    argv = argv if argv is not None else sys.argv[1:]
    path = argv[0]
    guard, refused = _confine(argv[1] if len(argv) > 1 else None)
    if path == "-":
        try:
            if refused is None:
                _prepare()
        except Exception:  # `run` imports them again and reports the failure (BE345)
            pass
        path = sys.stdin.readline().strip()
        if not path:
            return 0
    request = json.loads(Path(path).read_text())
    result_path = Path(request["result"])
    try:
        result = refused or run(request)
    except BaseException as exc:  # a bug in buildenv, or a crash in a library
        frames = [f"at {Path(f.filename).name}:{f.lineno} in {f.name}"
                  for f in traceback.extract_tb(exc.__traceback__)[-5:]]
        result = {"ok": False, "diagnostics": [{
            "code": "BE345", "message": f"the process building code-made sources failed: "
            f"{type(exc).__name__}", "path": None, "line": None, "col": None,
            "severity": "error", "hints": frames}]}
    left = guard.reap() if guard is not None else None
    if left is not None:
        result.setdefault("diagnostics", []).append({**left, "path": None})
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    leave(main())  # the result is written: without the teardown the build would wait for
