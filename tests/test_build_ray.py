"""`build --all` with each pair's training as a Ray task: the same artifact digests as local
processes (on a local Ray with 2 workers), the driver writing dist/ and the matrix, a lost
worker retried once then BE305, and what a cluster cannot run refused before scheduling."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from buildrepo import make_build_repo
from conftest import REPO_ROOT, invoke_cli, process_alive, recorded_cancels

from buildenv.compile import remote
from buildenv.compile.artifact import LINEAGE_FILE, read_lineage
from buildenv.compile.build import BuildOptions
from buildenv.compile.cache import intact
from buildenv.compile.plan import pairs, run_matrix
from buildenv.compile.sandbox_policy import sandbox_policy
from buildenv.core import progress
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project, TrainingConfig
from buildenv.data import executor as executor_module
from buildenv.data.executor import RayExecutor
from buildenv.env.resolve import Multiverse

pytestmark = pytest.mark.slow

PYPROJECT = """
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.lr]
entry = "train/lr.py:train"
environments = ["base", "next"]
threads = 1

[tool.buildenv.trainings.lr7]
entry = "train/lr.py:train"
environments = ["base", "next"]
seed = 7
threads = 1
resources = {cpus = 1, memory_gb = 0.25}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_build_repo(tmp_path_factory.mktemp("rayrepo") / "repo")
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (root / "environments" / "private.yaml").unlink()
    code, _, err = invoke_cli(["lock"], root)
    assert code == 0, err
    return root


@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray")
    executor = RayExecutor(address="", num_cpus=2, object_store_mb=100, timeout=120)
    executor.prepare()
    yield executor
    executor.close()


def build_all(root: Path, ray: RayExecutor | None) -> dict[tuple[str, str], str]:
    shutil.rmtree(root / "dist", ignore_errors=True)
    shutil.rmtree(root / ".buildenv" / "cache", ignore_errors=True)
    project = Project.discover(root)
    multiverse = Multiverse(project)
    selected = pairs(project.trainings, multiverse.names())
    assert len(selected) == 4
    outcomes = run_matrix(project, multiverse, selected,
                          BuildOptions(register=False, use_cache=False, ray=ray))
    assert [o.status for o in outcomes] == ["built"] * 4, [
        d.to_text() for o in outcomes for d in o.diagnostics]
    return {(o.training, o.env): read_lineage(root / "dist" / o.training / o.env)["model_digest"]
            for o in outcomes}


def test_pairs_on_ray_give_the_local_artifact_digests(repo, ray_executor, monkeypatch):
    local = build_all(repo, None)
    submitted: list[str] = []
    run_one = ray_executor.run_one  # counted on the driver: the task itself runs in a worker

    def spy(fn, item, **kwargs):
        submitted.append(f"{item.config.entry}@{item.res.name}:{kwargs['num_cpus']:g}")
        return run_one(fn, item, **kwargs)

    monkeypatch.setattr(ray_executor, "run_one", spy)
    on_ray = build_all(repo, ray_executor)
    assert on_ray == local
    assert sorted(submitted) == sorted(
        f"train/lr.py:train@{e}:1" for _ in ("lr", "lr7") for e in ("base", "next"))


def test_a_worker_lost_twice_fails_its_pair_with_be305(repo, ray_executor, monkeypatch):
    calls = []

    def lost(fn, item, **kwargs):
        calls.append(kwargs["retries"])
        raise RuntimeError("WorkerCrashedError: the worker died unexpectedly")

    monkeypatch.setattr(ray_executor, "run_one", lost)
    shutil.rmtree(repo / "dist", ignore_errors=True)
    project = Project.discover(repo)
    multiverse = Multiverse(project)
    outcomes = run_matrix(project, multiverse, [("lr", "base")],
                          BuildOptions(register=False, use_cache=False, ray=ray_executor))
    assert outcomes[0].status == "failed" and calls == [1]  # Ray retries once
    first = outcomes[0].first_error()
    assert first.code == "BE305" and "lost on its Ray worker after one retry" in first.message
    assert not (repo / "dist" / "lr").exists()  # nothing partial, not even dist/lr/


def test_an_interrupted_pair_is_stopped_not_failed_and_leaves_no_directory(repo, ray_executor,
                                                                           monkeypatch):
    """Ctrl-C cancels the Ray tasks, whose `ray.get` then raises: the pair unwinds as
    interrupted (shown "stopped", not "failed" with a BE305), and the directories its build
    made are gone while one that existed before stays."""
    def cancelled(fn, item, **kwargs):
        ray_executor.cancel_all()
        raise RuntimeError("TaskCancelledError: the task was cancelled")

    class Statuses(progress.Reporter):
        def __init__(self) -> None:
            self.seen: dict[str, str] = {}

        def finished(self, task: progress.Task) -> None:
            self.seen[task.label] = task.status

    monkeypatch.setattr(ray_executor, "run_one", cancelled)
    monkeypatch.setattr(ray_executor, "_cancelled", False)
    shutil.rmtree(repo / "dist", ignore_errors=True)
    (repo / "dist" / "lr7").mkdir(parents=True)
    (repo / "dist" / "lr7" / "mine.txt").write_text("kept")
    project = Project.discover(repo)
    reporter = Statuses()
    try:
        with progress.installed(reporter), pytest.raises(KeyboardInterrupt):
            run_matrix(project, Multiverse(project), [("lr", "base")],
                       BuildOptions(register=False, use_cache=False, ray=ray_executor))
    finally:
        monkeypatch.setattr(ray_executor, "_cancelled", False)
    assert reporter.seen.get("lr @ base") == "stopped", reporter.seen
    assert sorted(p.name for p in (repo / "dist").iterdir()) == ["lr7"]
    assert (repo / "dist" / "lr7" / "mine.txt").read_text() == "kept"
    shutil.rmtree(repo / "dist")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_matrix(project, Multiverse(project), [("lr", "base")],
                       BuildOptions(register=False, use_cache=False, ray=ray_executor))
    finally:
        monkeypatch.setattr(ray_executor, "_cancelled", False)
    assert not (repo / "dist").exists()  # dist/ itself was made by the build: gone too


def _start_task(executor: RayExecutor, fn, marker: Path, item=None
                ) -> tuple[threading.Thread, list]:
    """`executor.run_one(fn, item)` (default: `marker`) on a thread of its own, like a pair
    of `build --all`; returns once the task wrote `marker` on its worker. A `fn` of a test is
    nested in it so that Ray ships it by value: workers cannot import the tests."""
    raised: list = []

    def pair() -> None:
        try:
            executor.run_one(fn, str(marker) if item is None else item, num_cpus=0.5,
                             retries=0)
        except BaseException as exc:  # what the driver's pair thread would see
            raised.append(exc)

    thread = threading.Thread(target=pair, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not marker.is_file():
        assert thread.is_alive() and time.monotonic() < deadline, raised
        time.sleep(0.05)
    return thread, raised


def test_an_interrupted_build_stops_its_ray_tasks_without_ray_cancel(ray_executor, tmp_path,
                                                                     monkeypatch):
    """Ctrl-C sets the build's stop flag; the task sees it on its worker, stops what it runs
    and returns normally, well within the grace: no `ray.cancel`, whose crossing with a
    task's reply aborts Ray's driver (exit 1 instead of 130), and the pair unwinds as
    interrupted."""
    def stoppable(marker: str) -> None:
        import time
        from pathlib import Path

        from buildenv.data.executor import when_stopped

        stopped: list[bool] = []
        with when_stopped(lambda: stopped.append(True)):
            Path(marker).write_text("running")
            while not stopped:
                time.sleep(0.05)
        Path(marker).write_text("stopped")  # its clean-up ran
        raise KeyboardInterrupt  # as run_training raises when its training was stopped

    forces = recorded_cancels(monkeypatch)
    build = RayExecutor(address="")  # joins the fixture's Ray
    marker = tmp_path / "marker"
    thread, raised = _start_task(build, stoppable, marker)
    start = time.monotonic()
    build.cancel_all()
    stopped_in = time.monotonic() - start
    thread.join(30)
    build.close()
    assert not thread.is_alive() and [type(e) for e in raised] == [KeyboardInterrupt], raised
    assert marker.read_text() == "stopped"
    assert forces == []  # not one ray.cancel
    assert stopped_in < executor_module.CANCEL_GRACE  # seen within STOP_POLL s, not killed
    assert ray_executor.run_one(remote.versions, None, num_cpus=0.01) == remote.versions()


def test_a_stopped_training_task_kills_its_training_without_ray_cancel(
        ray_executor, tmp_path, monkeypatch):  # ray_executor: the Ray they join
    """On the worker, the stop flag stops a training as a local Ctrl-C does (its whole
    process group is killed) and the task returns normally (no `ray.cancel`: the worker
    lives)."""
    root = _sleeper_repo(tmp_path / "stop")
    forces = recorded_cancels(monkeypatch)
    build = RayExecutor(address="")
    pid_file = root / "train" / "sleeper.pids"
    thread, raised = _start_task(build, remote.train_task, pid_file,
                                 _sleeper_task(root, "sleeper"))
    deadline = time.monotonic() + 60
    while len(pid_file.read_text().split()) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runner, _, own = (int(p) for p in pid_file.read_text().split())
    build.cancel_all()
    thread.join(30)
    build.close()
    assert [type(e) for e in raised] == [KeyboardInterrupt] and forces == [], raised
    assert not process_alive(runner) and not process_alive(own)


def test_a_stopped_training_task_leaves_its_process_able_to_train_again(tmp_path,
                                                                      monkeypatch):
    """The worker process that ran a stopped task runs the next task too: the stop must not
    leave it refusing every training (KeyboardInterrupt at once). In this process, with the
    flag a task sees replaced by one set once the training runs: deterministic, where
    Ray's choice of worker for the next task is not."""
    from buildenv.compile import launch

    root = _sleeper_repo(tmp_path / "again")
    pid_file = root / "train" / "sleeper.pids"

    class RunningThenSet:
        seen = False

        def is_set(self) -> bool:
            self.seen = self.seen or (pid_file.is_file()
                                      and len(pid_file.read_text().split()) >= 3)
            return self.seen

    monkeypatch.setattr(executor_module, "STOP_POLL", 0.05)
    monkeypatch.setattr(executor_module, "_task_flag", RunningThenSet())
    try:
        with pytest.raises(KeyboardInterrupt):
            remote.train_task(_sleeper_task(root, "sleeper"))
        runner, _, own = (int(p) for p in pid_file.read_text().split())
        assert not process_alive(runner) and not process_alive(own)
        assert launch._RUNNING.interrupted is False  # it would refuse every training otherwise
    finally:
        launch.resume_trainings()


def _sleeper_task(root: Path, training: str) -> remote.RemoteTraining:
    project = Project.discover(root)
    base = Multiverse(project).resolve("base")
    config = project.training(training)
    return remote.RemoteTraining(project, config, base, 60.0, {}, {}, {}, "sha256:k",
                                 shipped=False, rows={},
                                 policy=sandbox_policy(project, training, config, base))


def test_a_task_that_does_not_stop_is_killed_after_the_grace(ray_executor, tmp_path,
                                                             monkeypatch):
    """A task that ignores the stop flag (a training stuck in native code) has its worker
    killed once the grace is over: `ray.cancel(force=True)`, never the interrupting kind."""
    def stuck(marker: str) -> None:
        import time
        from pathlib import Path

        Path(marker).write_text("running")
        time.sleep(300)

    forces = recorded_cancels(monkeypatch)
    monkeypatch.setattr(executor_module, "CANCEL_GRACE", 1.0)
    build = RayExecutor(address="")
    thread, raised = _start_task(build, stuck, tmp_path / "marker")
    start = time.monotonic()
    build.cancel_all()
    took = time.monotonic() - start
    thread.join(30)
    build.close()
    assert not thread.is_alive() and len(raised) == 1, raised
    assert forces == [True]
    assert 1.0 <= took < 30


def test_a_training_larger_than_every_node_is_refused_before_scheduling(repo, ray_executor,
                                                                        monkeypatch):
    text = (repo / "pyproject.toml").read_text()
    try:
        (repo / "pyproject.toml").write_text(text.replace(
            "resources = {cpus = 1, memory_gb = 0.25}", "resources = {cpus = 64}"))
        project = Project.discover(repo)
        submitted = []
        monkeypatch.setattr(ray_executor, "run_one", lambda *a, **k: submitted.append(a))
        with pytest.raises(DiagnosticError) as info:
            run_matrix(project, Multiverse(project), [("lr", "base"), ("lr7", "base")],
                       BuildOptions(register=False, use_cache=False, ray=ray_executor))
        (d,) = info.value.diagnostics
        assert d.code == "BE884" and "training 'lr7' asks for 64 CPU(s), more than any " \
                                     "node of the Ray cluster has (the largest: 2 CPU(s)" in d.message
        assert info.value.exit_code == 2 and submitted == []
        lines = (repo / "pyproject.toml").read_text().splitlines()  # at the line that asks
        assert (d.path, d.line) == ("pyproject.toml",
                                    lines.index("resources = {cpus = 64}") + 1)
    finally:
        (repo / "pyproject.toml").write_text(text)


def test_a_training_larger_than_this_machine_s_ray_says_how_to_build_it():
    """On a Ray started for the command (no address) there is no node to add: the hint names
    the CPUs it was started with, and a local build, which reserves nothing."""
    class Here:
        remote = False

        def node_resources(self):
            return [{"CPU": 2.0, "memory": 4.0 * remote.GIB}]

    (d,) = remote.check_resources(Here(), {"big": TrainingConfig(
        entry="t.py:train", resources={"cpus": 4})})
    assert d.code == "BE884" and "asks for 4 CPU(s), more than any node" in d.message
    assert d.hints == (
        "this machine's Ray was started with 2 CPU(s) (BUILDENV_RAY_NUM_CPUS, default every "
        "core): lower [tool.buildenv.trainings.big] resources, or run on a cluster "
        "(BUILDENV_RAY_ADDRESS)", "or build with --executor local, which reserves nothing")
    Here.remote = True  # a cluster: a larger node is the way
    (d,) = remote.check_resources(Here(), {"big": TrainingConfig(
        entry="t.py:train", resources={"cpus": 4})})
    assert d.hints == ("lower [tool.buildenv.trainings.big] resources, or add a larger node",)


def test_local_datasets_are_refused_for_a_cluster(repo):
    project = Project.discover(repo)
    resolved, _ = Multiverse(project).resolve_all()
    problems = remote.check_reachable(project, resolved)
    assert problems and all(p.code == "BE883" for p in problems)
    first = problems[0]
    assert "dataset 'items' of environment 'base' is at a repository path " \
           "('data/items.parquet') that the Ray cluster's workers cannot read" in first.message
    # at the uri's line, saying what to write for a file system mounted on every node
    assert first.path is not None and first.path.endswith(".yaml") and first.line
    assert first.to_text().splitlines()[0].startswith(f"{first.path}:{first.line}:")
    mounted = (project.data_base / "data/items.parquet").resolve().as_uri()
    assert any(f"write the uri as '{mounted}'" in hint for hint in first.hints)


def test_a_shared_mount_named_by_a_file_uri_is_not_refused(repo, tmp_path):
    """`file:///mnt/...` is how docs/scale.md says to name a file system mounted at the same
    path on every node: the cluster reads it there, so it is not a local path to refuse."""
    root = tmp_path / "mounted"
    shutil.copytree(repo, root, ignore=shutil.ignore_patterns(".buildenv", "dist"))
    for env in (root / "environments").glob("*.yaml"):
        text = env.read_text()
        for found in (root / "data").iterdir():
            text = text.replace(f"uri: data/{found.name}", f"uri: {found.resolve().as_uri()}")
        env.write_text(text)
    project = Project.discover(root)
    resolved, _ = Multiverse(project).resolve_all()
    assert all(ds.uri.startswith("file:///") for res in resolved.values()
               for ds in res.env.datasets.values())
    assert remote.check_reachable(project, resolved) == []


def test_a_cluster_gets_the_repository_and_never_local_data(repo, tmp_path, monkeypatch):
    cluster = RayExecutor(address="ray://head:10001")
    assert cluster.remote
    monkeypatch.setattr(cluster, "prepare", lambda: None)
    monkeypatch.setattr(cluster, "node_resources", lambda: [{"CPU": 8.0, "memory": 16 * 2**30}])
    seen: dict = {}

    def fake_run_one(fn, item, **kwargs):
        if fn is remote.versions:
            return remote.versions()
        seen.update(kwargs, fn=fn)
        return {"ok": True}, {"model.pkl": "aGVsbG8="}

    monkeypatch.setattr(cluster, "run_one", fake_run_one)
    project = Project.discover(repo)
    multiverse = Multiverse(project)
    with pytest.raises(DiagnosticError) as info:  # refused before anything is scheduled
        run_matrix(project, multiverse, [("lr", "base")], BuildOptions(ray=cluster))
    assert {d.code for d in info.value.diagnostics} == {"BE883"} and not seen
    # the repository travels with the connection: Ray refuses a local working_dir per task
    assert cluster.runtime_env is not None
    assert cluster.runtime_env["working_dir"] == str(project.root)
    assert {".git/", "dist/", ".buildenv/"} <= set(cluster.runtime_env["excludes"])
    # what a pair sends: the training's resources; the worker runs in the shipped repository
    base = multiverse.resolve("base")
    policy = sandbox_policy(project, "lr7", project.training("lr7"), base)
    task = remote.RemoteTraining(project, project.training("lr7"), base, 10.0, {}, {}, {},
                                 "sha256:k", shipped=True, policy=policy, rows={})
    assert remote.train_on_ray(cluster, task, tmp_path / "model") == {"ok": True}
    assert (tmp_path / "model" / "model.pkl").read_bytes() == b"hello"
    assert seen["fn"] is remote.train_task and seen["retries"] == 1
    assert seen["num_cpus"] == 1 and seen["memory"] == int(0.25 * 2**30)
    assert seen.get("runtime_env") is None


def test_one_pair_on_a_cluster_is_checked_like_the_matrix(repo, tmp_path, monkeypatch):
    """`build T --env E --executor ray` with a cluster address: the repository travels with the
    connection, local data is refused before scheduling (BE883, exit 2), and uncommitted
    changes are named in a note (BE886) before anything runs."""
    root = tmp_path / "one"
    shutil.copytree(repo, root, ignore=shutil.ignore_patterns(".buildenv", "dist"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(root)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    shipped: list = []

    def prepare(self):
        shipped.append(self.runtime_env)

    monkeypatch.setattr(RayExecutor, "prepare", prepare)
    monkeypatch.setattr(RayExecutor, "node_resources", lambda self: [{"CPU": 8.0}])
    monkeypatch.setattr(RayExecutor, "run_one", lambda self, fn, item, **k: remote.versions())
    args = ["build", "lr", "--env", "base", "--executor", "ray", "--no-register",
            "--no-progress"]
    cluster = {"BUILDENV_RAY_ADDRESS": "ray://head:10001"}
    assert remote.shipping_note(Project.discover(root)) is None  # a clean tree: nothing to say
    code, _, err = invoke_cli(args, root, env=cluster)
    assert code == 2 and "error[BE883]: dataset 'items'" in err and "BE886" not in err
    assert shipped and shipped[0]["working_dir"] == str(root)
    (root / "train" / "lr.py").write_text((root / "train" / "lr.py").read_text() + "\n# wip\n")
    code, _, err = invoke_cli(args, root, env=cluster)
    assert code == 2
    assert "note[BE886]: the repository has uncommitted changes (1 path(s): train/lr.py); " \
           "they are shipped to the Ray cluster as they are" in err
    assert not (root / "dist").exists()


def test_a_cluster_with_other_versions_is_refused_naming_both(repo, ray_executor, monkeypatch):
    assert remote.check_versions(ray_executor) == []  # a real worker: the driver's versions
    here = remote.versions()
    (d,) = remote.version_problems(here, {"python": "3.10", "buildenv": here["buildenv"]})
    assert d.code == "BE885" and d.message == (
        f"the Ray cluster runs other versions than this driver: python {here['python']} here, "
        "3.10 on the cluster")
    cluster = RayExecutor(address="ray://head:10001")
    monkeypatch.setattr(cluster, "prepare", lambda: None)
    monkeypatch.setattr(cluster, "node_resources", lambda: [{"CPU": 8.0}])
    monkeypatch.setattr(cluster, "run_one", lambda fn, item, **k: {"python": here["python"],
                                                                   "buildenv": "0.0.1"})
    project = Project.discover(repo)
    with pytest.raises(DiagnosticError) as info:
        run_matrix(project, Multiverse(project), [("lr", "base")], BuildOptions(ray=cluster))
    assert "BE885" in {d.code for d in info.value.diagnostics}
    assert info.value.exit_code == 2


SLEEPER = '''
import os
import subprocess
import sys
import time
from pathlib import Path


def train(ctx):
    """Starts a worker of its own (as joblib would), says who runs it, then never ends."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    pids = f"{os.getpid()} {os.getppid()} {worker.pid}"
    Path(__file__).with_name("sleeper.pids").write_text(pids)
    time.sleep(600)
'''


def test_ctrl_c_cancels_the_ray_tasks_and_leaves_no_partial_artifact(tmp_path):
    """SIGINT to `build --all --executor ray` while a training runs on a Ray worker: exit 130,
    the training, its own worker and the Ray worker that ran it all gone, nothing of the
    interrupted pair in dist/ or the cache, and what was finished whole."""
    pytest.importorskip("ray")
    _interrupted_build(tmp_path, ray=True)


def test_ctrl_c_stops_local_trainings_of_build_all(tmp_path):
    """The same on this machine: local trainings run in sessions of their own (the terminal's
    Ctrl-C reaches only buildenv), so `build --all` must stop them itself instead of waiting
    for every one of them to finish."""
    _interrupted_build(tmp_path, ray=False)


def test_sigterm_stops_local_trainings_of_build_all(tmp_path):
    """A cancelled CI job sends SIGTERM, not SIGINT: the build unwinds the same way (exit 130,
    its trainings killed, nothing partial kept) instead of dying with its trainings left
    running or waiting for them."""
    _interrupted_build(tmp_path, ray=False, sig=signal.SIGTERM)


def _sleeper_repo(tmp_path: Path) -> Path:
    """The build repository plus `sleeper`, a training that never ends (sandbox off: it
    writes its process ids beside its module), locked."""
    root = make_build_repo(tmp_path / "repo")
    (root / "environments" / "private.yaml").unlink()
    text = textwrap.dedent(PYPROJECT).replace("[tool.buildenv]\n",
                                               '[tool.buildenv]\nsandbox = "off"\n', 1)
    (root / "pyproject.toml").write_text(text + textwrap.dedent("""
        [tool.buildenv.trainings.sleeper]
        entry = "train/sleeper.py:train"
        environments = ["base"]
        threads = 1
        """))
    (root / "train" / "sleeper.py").write_text(SLEEPER)
    code, _, err = invoke_cli(["lock"], root)
    assert code == 0, err
    return root


def _default_sigint() -> None:
    """In the build's process: SIGINT as a terminal's Ctrl-C finds it. A test run started in
    the background of a script (`cmd &`) has SIGINT ignored, which the build would inherit:
    the signal would then do nothing and the test wait for its timeout."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupted_build(tmp_path: Path, ray: bool, sig: int = signal.SIGINT) -> None:
    root = _sleeper_repo(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("BUILDENV_ROOT", "BUILDENV_TRACKING_URI", "RAY_ADDRESS",
                        "BUILDENV_RAY_ADDRESS")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
               BUILDENV_RAY_NUM_CPUS="2", BUILDENV_RAY_OBJECT_STORE_MB="100")
    executor = ["--executor", "ray"] if ray else []
    proc = subprocess.Popen([sys.executable, "-m", "buildenv", "build", "--all", *executor,
                             "--no-register", "--jobs", "2", "--no-progress"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_default_sigint)
    pid_file = root / "train" / "sleeper.pids"
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not pid_file.is_file() or len(pid_file.read_text().split()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        pids = [int(p) for p in pid_file.read_text().split()]
        if ray:
            assert "ray" in Path(f"/proc/{pids[1]}/cmdline").read_text().lower()
        else:  # the training's parent is the build itself, which must exit
            pids = [pids[0], pids[2]]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, out + err
        assert "interrupted" in err and "Traceback" not in err, err
        deadline = time.monotonic() + 30
        while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p for p in pids if process_alive(p)] == [], "outlived the build"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
    # nothing of the interrupted pair (atomic_dir makes the training's directory up front)
    assert not (root / "dist" / "sleeper").exists()  # not even an empty directory
    for lineage_file in (root / "dist").rglob(LINEAGE_FILE):  # finished pairs: whole
        art = lineage_file.parent
        assert intact(art, read_lineage(art)), art
    cache = root / ".buildenv" / "cache"
    for entry in cache.glob("builds/*/*"):  # sharded by the key's first two hex digits
        assert not entry.name.startswith("."), f"a partial cache entry: {entry}"
        lineage = read_lineage(entry)
        assert lineage is not None and lineage["training"] != "sleeper"
        assert intact(entry, lineage), entry
    # an interrupted training is not a failure to replay
    assert [f for f in cache.glob("failures/*/*") if "sleeper" in f.read_text()] == []
    leftovers = [p for p in [*(root / ".buildenv").rglob("*"), *(root / "dist").rglob("*")]
                 if p.is_dir() and ".tmp-" in p.name]
    assert leftovers == []


def test_ctrl_c_handed_to_another_thread_stops_build_all_at_once(monkeypatch):
    """The kernel may hand Ctrl-C to any thread of the build (Ray's, a pair's); Python runs
    the handler in the main thread only when that thread runs. It waited for the pairs
    without end, so the interrupt sat there until a pair finished: on Ray, every pair of
    `build --all` was trained before the build stopped."""
    from buildenv.compile import launch, plan

    def build_pair(project, multiverse, training, env, options, resolved):
        if training == "first":  # Ctrl-C, delivered to this pair's thread once the main
            time.sleep(1)  # thread waits for the pairs
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        deadline = time.monotonic() + 30
        while not launch._RUNNING.interrupted and time.monotonic() < deadline:
            time.sleep(0.05)  # a training, stopped by the interrupted build
        raise KeyboardInterrupt

    class Envs:
        def resolve_all(self):
            return {}, []

        def resolve(self, env):
            return None

    monkeypatch.setattr(plan, "build_pair", build_pair)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_matrix(None, Envs(), [("first", "a"), ("second", "a")],  # type: ignore[arg-type]
                   BuildOptions(), jobs=2)
    assert time.monotonic() - start < 10
    assert launch._RUNNING.interrupted is False  # resumed for the next build
