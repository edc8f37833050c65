"""`build --all` with each pair's training as a Ray task: the same artifact digests as local
processes (on a local Ray with 2 workers), the driver writing dist/ and the matrix, a lost
worker retried once then BE305, and what a cluster cannot run refused before scheduling."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from buildrepo import make_build_repo
from conftest import invoke_cli

from buildenv.compile import remote
from buildenv.compile.artifact import read_lineage
from buildenv.compile.build import BuildOptions
from buildenv.compile.plan import pairs, run_matrix
from buildenv.compile.sandbox_policy import sandbox_policy
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project
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
    assert not (repo / "dist" / "lr" / "base").exists()  # nothing partial


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
    finally:
        (repo / "pyproject.toml").write_text(text)


def test_local_datasets_are_refused_for_a_cluster(repo):
    project = Project.discover(repo)
    resolved, _ = Multiverse(project).resolve_all()
    problems = remote.check_reachable(project, resolved)
    assert problems and all(p.code == "BE883" for p in problems)
    assert "dataset 'items' of environment 'base' is at a local path ('data/items.parquet') " \
           "that the Ray cluster's workers cannot read" in problems[0].message


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
    # what a pair sends: the repository as the working_dir, the training's resources
    base = multiverse.resolve("base")
    policy = sandbox_policy(project, "lr7", project.training("lr7"), base)
    task = remote.RemoteTraining(project, project.training("lr7"), base, 10.0, {}, {}, {},
                                 "sha256:k", shipped=True, policy=policy, rows={})
    assert remote.train_on_ray(cluster, task, tmp_path / "model") == {"ok": True}
    assert (tmp_path / "model" / "model.pkl").read_bytes() == b"hello"
    assert seen["fn"] is remote.train_task and seen["retries"] == 1
    assert seen["num_cpus"] == 1 and seen["memory"] == int(0.25 * 2**30)
    assert seen["runtime_env"]["working_dir"] == str(project.root)
    assert {".git/", "dist/", ".buildenv/"} <= set(seen["runtime_env"]["excludes"])


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
