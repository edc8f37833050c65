"""The hermetic process that runs code-made sources, started before its request is ready.

A small rebuild of a derived dataset (one new day of input) spends most of its time starting
the process that runs user code: a fresh interpreter importing pandas, pyarrow and buildenv.
`SourceProcess.start` starts `python -m buildenv.training.sources_runner -` as soon as the
build knows a transform will run; that process imports what transforms use while the build
still checks the code statically, then waits for the request's path on its standard input.
`run` hands the request over and waits for the result under the time limit. The process is
like a training's (`launch`): scrubbed environment, fixed seeds, its own process
group (killed whole, on timeout, interrupt and exit), dead with its parent -- and in the
training's sandbox (`Sandbox.for_sources`): its declared inputs readable through the broker,
its output directory (`out`) and private work directory writable, no network, nothing else;
it confines itself before it imports anything. `close` kills it when nothing was asked of it
(the static check failed). A process started `early` (`compile.early_runner`: before the
build knows the pins) is used only if `adopt` finds it started exactly as `start` would start
it now; its broker hands over no file until then.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from buildenv.compile.launch import (
    _output_tail,
    child_env,
    kill_group,
    own_interpreter,
)
from buildenv.compile.sandbox import Sandbox
from buildenv.core import process_tree
from buildenv.core.process_tree import die_with_parent
from buildenv.core.project import Project, TrainingConfig
from buildenv.core.tempdirs import owned_temp_dir, scratch_dir, sweep
from buildenv.data.lock.derived import narrowed
from buildenv.data.lock.manifest import Manifest
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Environment
from buildenv.training.env_view import describe

__all__ = ["SourceProcess"]


class SourceProcess:
    """One started sources runner; `run` at most once, `close` always (a context manager)."""

    def __init__(self, project: Project, proc: subprocess.Popen, work: Path, log: IO[bytes],
                 box: Sandbox):
        self.project, self.proc, self.work, self._log, self.box = project, proc, work, log, box
        self.out = work / "out"
        """Where the jobs write their outputs (the only place they may write them)."""
        self.signature: dict[str, Any] = {}
        """What it was started with and confined to (`Sandbox.signature`)."""

    @classmethod
    def start(cls, project: Project, res: Resolved, modules: tuple[str, ...],
              reads: Environment, manifests: dict[str, Manifest], *,
              early: bool = False) -> SourceProcess:
        """Start the process for jobs of `modules` (user code) reading the datasets of
        `reads`, pinned to `manifests` (the partitioned ones). `early`: started before the
        build knows the pins (`compile.early_runner`); its broker serves nothing until `adopt`
        hands it the files the build computes."""
        # in the repository's scratch, named by its owner: what a killed build leaves (its
        # request: the environment, the pins) is swept by the next one
        scratch = scratch_dir(project.data_state_dir)
        sweep(scratch)
        work = owned_temp_dir(scratch, "source")
        (work / "out").mkdir()
        log = open(work / "output.log", "wb")  # noqa: SIM115 -- closed by close()
        box = None
        try:
            box, argv, base_env = _sandbox(project, res, modules, reads, manifests, work)
            if box.request is not None:  # confined before it imports anything
                (work / "sandbox.json").write_text(json.dumps(
                    {"sandbox": box.request, "root": str(project.root)}))
            proc = subprocess.Popen(
                box.command(argv), cwd=project.root, env=box.env(base_env),
                stdin=subprocess.PIPE, pass_fds=box.pass_fds,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        except BaseException:
            if box is not None:
                box.close()
            log.close()
            shutil.rmtree(work, ignore_errors=True)
            raise
        box.started(serve=not early)
        process = cls(project, proc, work, log, box)
        process.signature = _signature(box, argv, base_env)
        return process

    def adopt(self, project: Project, res: Resolved, modules: tuple[str, ...],
              reads: Environment, manifests: dict[str, Manifest]) -> bool:
        """Whether this process, started `early`, is the one `start` would start now: still
        waiting for its request, started with the command, environment and confinement the
        build computes (in this process's work directory), and having asked its broker for
        nothing; if so its broker serves the files the build computed. False: `close` it and
        start another."""
        if self.proc.poll() is not None or project.root != self.project.root:
            return False
        box, argv, base_env = _sandbox(project, res, modules, reads, manifests, self.work)
        try:
            if _signature(box, argv, base_env) != self.signature:
                return False
            return self.box.hand_over(box)
        finally:
            box.close()

    def __enter__(self) -> SourceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, res: Resolved, jobs: list[dict], pins: dict[str, str], manifests: dict,
            timeout: float, path: str, timeout_hint: str) -> dict[str, Any]:
        """Run `jobs` (derived datasets' transforms, label sets' labeling functions) reading
        through the gate pinned to `pins`/`manifests`; the result (outputs and diagnostics).
        `path` is what a timeout or crash is reported at."""
        project = self.project
        request = {
            "jobs": jobs,
            "root": str(project.root), "data_root": str(project.data_root or project.root),
            "env": res.env.model_dump(mode="json", by_alias=True),
            "result": str(self.work / "result.json"), "pins": dict(pins),
            "manifests": {name: m.to_json() for name, m in manifests.items()},
            # what the runner needs of the project and a transform's environment, so that it
            # imports no pydantic (training.env_view)
            "cache_dir": project.config.cache_dir, "store": project.config.store,
            "views": [_view(res, job) for job in jobs],
        }
        (self.work / "request.json").write_text(json.dumps(request))
        deadline = time.monotonic() + timeout
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{self.work / 'request.json'}\n".encode())
            self.proc.stdin.close()
        except OSError:
            pass  # it died while starting: reported below as a process without result
        try:
            process_tree.wait_exit(self.proc, deadline - time.monotonic())
        except subprocess.TimeoutExpired:
            self._kill()
            return {"ok": False, "diagnostics": [{
                "code": "BE344", "message": f"source exceeded its time limit of {timeout:g} s",
                "path": path, "line": None, "col": None, "severity": "error",
                "hints": [timeout_hint]}]}
        except BaseException:  # Ctrl-C, SIGTERM turned into an exception, a bug
            self._kill()
            raise
        self._kill()  # the runner exited: workers it left behind go too
        result_file = self.work / "result.json"
        if not result_file.is_file():
            self._log.flush()
            output = (self.work / "output.log").read_text(errors="replace")
            failed = self.box.setup_failure(output)
            if failed is not None:
                return {"ok": False, "diagnostics": [{**failed, "path": path}]}
            return {"ok": False, "diagnostics": [{
                "code": "BE345", "message": f"source process exited with code "
                f"{self.proc.returncode} and no result", "path": path, "line": None,
                "col": None, "severity": "error", "hints": _output_tail(output, res)}]}
        result: dict[str, Any] = json.loads(result_file.read_text())
        errors = [d for d in result.get("diagnostics") or [] if d.get("severity") == "error"]
        if errors:  # what the user's code printed before it failed, as a training's is shown
            self._log.flush()
            output = (self.work / "output.log").read_text(errors="replace")
            errors[0]["hints"] = [*(errors[0].get("hints") or []),
                                  *(f"output: {line}" for line in _output_tail(output, res))]
        return result

    def close(self) -> None:
        """Stop the process (whatever it is doing) and remove its request and result."""
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass
        self._kill()
        self.box.close()
        self._log.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def kill(self) -> None:
        """Stop the process now (a `run` waiting for it in another thread then returns)."""
        self._kill()

    def _kill(self) -> None:
        """The whole tree (bubblewrap starts the runner in a session of its own)."""
        self.box.stop(self.proc)
        kill_group(self.proc)



def _view(res: Resolved, job: dict[str, Any]) -> dict[str, Any] | None:
    """A transform job's environment (its inputs'), described for the runner; None (the
    runner validates the environment itself) for labeling functions or a value the
    description cannot hold."""
    if job["kind"] != "transform":
        return None
    try:
        return describe(narrowed(res.env, list(job["inputs"])))
    except Exception:  # a value JSON cannot hold, a property that fails: the model's path
        return None


def _sandbox(project: Project, res: Resolved, modules: tuple[str, ...], reads: Environment,
             manifests: dict[str, Manifest], work: Path
             ) -> tuple[Sandbox, list[str], dict[str, str]]:
    """The sandbox of a runner working in `work`, its command and its environment before the
    sandbox's changes."""
    threads = TrainingConfig(entry="x.py:x").native_threads
    python = own_interpreter()
    box = Sandbox.for_sources(project, res, modules, reads, manifests, work, work / "out",
                              python.python, python.runtime_paths())
    argv = [python.python, "-m", "buildenv.training.sources_runner", "-"]
    if box.request is not None:
        argv.append(str(work / "sandbox.json"))
    return box, argv, child_env(0, threads, interpreter=python)


def _signature(box: Sandbox, argv: list[str], base_env: dict[str, str]) -> dict[str, Any]:
    """`Sandbox.signature` but for OMP_WAIT_POLICY, which follows the load average of the
    moment it is started (`launch.wait_policy`: how idle threads wait, never what they
    compute) and may cross its threshold between an early start and the build's check."""
    signature = box.signature(argv, base_env)
    signature["env"].pop("OMP_WAIT_POLICY", None)
    return signature
