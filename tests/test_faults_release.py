"""Fault suite, release: racing promotions, tampered models (a pickle that would create a file
when loaded), images of the wrong or a modified artifact, retrains killed at random points.

One churn repository and MLflow store for the module: three builds are registered up front
(v1, v2, v3 on three clean data versions) and their artifacts kept aside; each test starts
from an unset alias and an empty history.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli
from services import events, make_churn_repo, reset_champion, write_events

from buildenv.compile.artifact import read_lineage, tree_digest
from buildenv.compile.registry import client
from buildenv.core.project import Project
from buildenv.release.champion import history_entries

UNHASHED = ("buildenv.json", "buildenv.sig")  # outside the recorded artifact digest

pytestmark = pytest.mark.slow

DIST = Path("dist/churn/prod")


class Pwn:
    """Unpickling this creates the file `path`: what a tampered model.pkl could do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = make_churn_repo(tmp_path_factory.mktemp("faults") / "repo")
    kept = {}
    for i, seed in enumerate((1, 2, 5), start=1):
        write_events(root, "events-v1.parquet", events(seed))
        assert invoke_cli(["lock", "prod"], root)[0] == 0
        code, out, err = invoke_cli(["build", "churn", "--env", "prod"], root)
        assert code == 0 and f"registered churn v{i}" in out, out + err
        kept[str(i)] = root / "kept" / f"v{i}"
        shutil.copytree(root / DIST, kept[str(i)])
    return {"root": root, "kept": kept}


@pytest.fixture
def repo(world: dict) -> Path:
    root = world["root"]
    reset_champion(root)
    use(world, "1")
    return root


def use(world: dict, version: str) -> None:
    root = world["root"]
    shutil.rmtree(root / DIST, ignore_errors=True)
    shutil.copytree(world["kept"][version], root / DIST)


def env_for(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BUILDENV_ROOT",
                                                            "BUILDENV_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def start(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "buildenv", *args], cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_for(root))


def champion(root: Path) -> str | None:
    found = (client(Project.discover(root)).get_registered_model("churn").aliases or {})
    return None if found.get("prod-champion") is None else str(found["prod-champion"])


def history(root: Path) -> list[dict]:
    return history_entries(client(Project.discover(root)), "churn", "prod")


def assert_chain(root: Path) -> None:
    """History is a chain of compare-and-set moves: each starts where the last one ended."""
    entries = history(root)
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(1, len(entries) + 1)), seqs
    for before, after in pairwise(entries):
        assert str(after["previous"]) == str(before["version"]), entries
    assert champion(root) == (str(entries[-1]["version"]) if entries else None)


def test_concurrent_promotions_of_one_candidate_move_the_alias_once(world, repo):
    assert invoke_cli(["promote", "churn", "--env", "prod"], repo)[0] == 0
    use(world, "2")
    procs = [start(repo, "promote", "churn", "--env", "prod") for _ in range(3)]
    results = [(p.wait(300), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, out + err
    moved = [err for _, _, err in results if "prod-champion: v1 -> v2 (history #2)" in err]
    assert len(moved) == 1, [r[2] for r in results]
    assert sum("churn v2 is already prod-champion" in err for _, _, err in results) == 2
    assert [(e["action"], e["version"]) for e in history(repo)] == [("promote", "1"),
                                                                    ("promote", "2")]
    assert_chain(repo)


PROMOTE_ARTIFACT = """
import sys
from pathlib import Path
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.release.champion import promote
from buildenv.release.gates import evaluate

project = Project.discover(".")
try:
    ev = evaluate(project, Multiverse(project).resolve("prod"), "churn", artifact=Path(sys.argv[1]))
    print("moved", promote(project, ev))
except DiagnosticError as exc:
    print("refused", " ".join(d.code for d in exc.diagnostics))
"""


def test_concurrent_promotions_of_different_candidates_never_both_win(world, repo):
    assert invoke_cli(["promote", "churn", "--env", "prod"], repo)[0] == 0
    procs = [subprocess.Popen([sys.executable, "-c", PROMOTE_ARTIFACT, str(world["kept"][v])],
                              cwd=repo, env=env_for(repo), text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for v in ("2", "3", "2", "3")]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out.strip())
    assert any(o.startswith("moved") and o != "moved None" for o in outs), outs
    # a loser either saw the winner (and was compared with it) or was refused by the CAS
    assert all(o.startswith(("moved", "refused")) for o in outs), outs
    assert_chain(repo)  # a lost update would show as two moves starting from v1


def _model_file(artifact: Path) -> Path:
    """The artifact's model file, whatever its format (skops by default; pickle on request)."""
    return next(artifact / name for name in ("model.skops", "model.onnx", "model.pkl")
                if (artifact / name).is_file())


def _stored_copies(root: Path, original: bytes) -> list[Path]:
    return [p for name in ("model.skops", "model.onnx", "model.pkl")
            for p in (root / ".buildenv").rglob(name) if p.read_bytes() == original]


def test_tampered_champion_is_never_unpickled(world, repo, tmp_path):
    assert invoke_cli(["promote", "churn", "--env", "prod"], repo)[0] == 0
    original = _model_file(world["kept"]["1"]).read_bytes()
    copies = _stored_copies(repo, original)
    assert any("mlartifacts" in p.parts for p in copies) and any("cache" in p.parts
                                                                 for p in copies)
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Pwn(str(marker)))
    for path in copies:
        path.write_bytes(evil)
    data = repo / "data" / "events-v1.parquet"
    saved_data = data.read_bytes()
    try:
        use(world, "2")
        code, out, err = invoke_cli(["promote", "churn", "--env", "prod"], repo)
        assert code == 1
        assert "error[BE761]: model 'churn' v1 in the registry: its files hash to" in err
        assert not marker.exists(), "a tampered champion was unpickled by promote"
        assert champion(repo) == "1"
        # retrain gates through the same loader
        write_events(repo, "events-v1.parquet", events(7))
        log = tmp_path / "events.jsonl"
        code, out, err = invoke_cli(["retrain", "prod", "--promote", "--events", str(log)], repo)
        assert code == 1 and "error[BE761]" in err
        steps = [(e["step"], e["status"]) for e in map(json.loads, log.read_text().splitlines())]
        assert steps[-2:] == [("gate", "failed"), ("finish", "failed")]
        assert not marker.exists(), "a tampered champion was unpickled by retrain"
        assert champion(repo) == "1"
    finally:
        for path in copies:
            path.write_bytes(original)
        data.write_bytes(saved_data)


def test_image_refuses_a_tampered_artifact(world, repo, tmp_path):
    marker = tmp_path / "pwned"
    (repo / DIST / "model.pkl").write_bytes(pickle.dumps(Pwn(str(marker))))
    code, out, err = invoke_cli(["image", "churn", "--env", "prod", "--no-docker", "--out",
                                 str(tmp_path / "ctx")], repo)
    assert code == 1
    assert "error[BE761]: the artifact of churn @ prod: its files hash to" in err
    assert not (tmp_path / "ctx").exists() and not marker.exists()


def test_image_after_rollback_says_it_is_not_the_champion(world, repo, tmp_path):
    for version in ("1", "2"):
        use(world, version)
        assert invoke_cli(["promote", "churn", "--env", "prod"], repo)[0] == 0
    assert invoke_cli(["rollback", "churn", "--env", "prod"], repo)[0] == 0
    code, out, err = invoke_cli(["image", "churn", "--env", "prod", "--no-docker", "--out",
                                 str(tmp_path / "dist-ctx")], repo)
    assert code == 0, err
    assert ("warning[BE769]: dist/churn/prod holds churn v2, but prod-champion is v1; the "
            "image packages dist/churn/prod") in err
    assert "hint: `buildenv image churn --env prod --champion` packages the champion" in err
    code, out, err = invoke_cli(["image", "churn", "--env", "prod", "--no-docker", "--champion",
                                 "--out", str(tmp_path / "champion-ctx")], repo)
    assert code == 0, err
    assert "BE769" not in err
    packaged = json.loads((tmp_path / "champion-ctx" / "image.json").read_text())
    assert packaged["model_digest"] == read_lineage(world["kept"]["1"])["model_digest"]
    dist = json.loads((tmp_path / "dist-ctx" / "image.json").read_text())
    assert dist["model_digest"] == read_lineage(world["kept"]["2"])["model_digest"]


def test_retrain_stopped_by_a_configuration_error_closes_its_run_and_log(world, repo,
                                                                        tmp_path):
    (repo / "environments" / "prod-eu.yaml").write_text("name: prod-eu\nextends: prod\n")
    try:
        assert invoke_cli(["lock", "prod-eu"], repo)[0] == 0
        log = tmp_path / "events.jsonl"
        code, out, err = invoke_cli(["retrain", "prod-eu", "--dataset", "events", "--uri",
                                     "data/eu.parquet", "--events", str(log)], repo)
        assert code == 2
        assert "error[BE710]: the uri of dataset 'events' is inherited" in err
        got = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(e["step"], e["status"]) for e in got] == [("start", "started"),
                                                           ("finish", "failed")]
        assert "error[BE710]" in got[-1]["alert"][0]
        c = client(Project.discover(repo))
        exp = c.get_experiment_by_name("buildenv/retrain")
        [run] = c.search_runs([exp.experiment_id],
                              f"tags.`buildenv.retrain_id` = '{got[0]['retrain']}'")
        assert run.info.status == "FAILED"  # was left RUNNING
        assert run.data.tags["buildenv.retrain_status"] == "stopped"
    finally:
        (repo / "environments" / "prod-eu.yaml").unlink()
        (repo / "environments" / "prod-eu.lock.json").unlink(missing_ok=True)


def _registered_artifacts_are_complete(root: Path) -> None:
    """Every version's stored files hash to its recorded digest: no orphan, no partial one."""
    import mlflow.artifacts

    c = client(Project.discover(root))
    for version in c.search_model_versions("name='churn'"):
        digest = (version.tags or {}).get("buildenv.artifact_digest")
        assert digest, f"v{version.version} has no digest"
        with tempfile.TemporaryDirectory() as scratch:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=c.get_model_version_download_uri("churn", version.version),
                dst_path=scratch, tracking_uri=Project.discover(root).tracking_uri())
            assert tree_digest(Path(local), exclude=UNHASHED) == digest, version.version


def test_sigkill_at_random_points_of_retrains(world, repo):
    assert invoke_cli(["promote", "churn", "--env", "prod"], repo)[0] == 0
    root = repo
    data = root / "data" / "events-v1.parquet"
    saved_data = data.read_bytes()
    saved_lock = (root / "environments" / "prod.lock.json").read_bytes()
    rng = random.Random(7)
    try:
        for i, delay in enumerate(sorted(rng.uniform(1.0, 14.0) for _ in range(3))):
            write_events(root, "events-v1.parquet", events(20 + i))
            proc = start(root, "retrain", "prod", "--promote")
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            for path in (root / "dist").rglob("*"):
                assert not path.name.startswith("."), f"left in dist/: {path}"
            lineage = read_lineage(root / DIST)
            assert lineage is not None
            assert tree_digest(root / DIST, exclude=UNHASHED) == lineage["model_digest"]
            proc = start(root, "retrain", "prod", "--promote")  # recovers, then runs
            out, err = proc.communicate(timeout=600)
            assert proc.returncode in (0, 1), f"after a kill at {delay:.1f} s: {out}{err}"
            leftovers = [p for p in (root / ".buildenv" / "retrain").iterdir() if p.is_dir()]
            assert leftovers == []
            assert json.loads((root / "environments" / "prod.lock.json").read_text())
            assert_chain(root)
        _registered_artifacts_are_complete(root)
    finally:
        data.write_bytes(saved_data)
        (root / "environments" / "prod.lock.json").write_bytes(saved_lock)


def test_recover_finishes_the_swaps_of_a_retrain_killed_while_swapping(tmp_path):
    from buildenv.release.journal import recover

    (tmp_path / "pyproject.toml").write_text("[tool.buildenv]\n")
    project = Project.discover(tmp_path)
    old = tmp_path / "dist" / "churn" / "prod"
    old.mkdir(parents=True)
    (old / "model.pkl").write_text("old")
    work = project.state_dir / "retrain" / "feedbeef0000"
    staged = work / "dist" / "churn"
    staged.mkdir(parents=True)
    (staged / "model.pkl").write_text("new")
    (work / "journal.json").write_text(json.dumps({
        "phase": "swapping", "saved": [],
        "staged": [{"staged": "dist/churn", "final": "dist/churn/prod"}]}))
    assert recover(project) == ["dist/churn/prod"]  # the lock was new: its artifact too
    assert (old / "model.pkl").read_text() == "new"
    assert not work.exists()
    assert [p.name for p in old.parent.iterdir()] == ["prod"]


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no `except Exception` sees it."""


def _artifact(path: Path, model: str, **lineage: str) -> str:
    from buildenv.compile.artifact import write_lineage

    path.mkdir(parents=True)
    (path / "model.pkl").write_text(model)
    digest = tree_digest(path, exclude=UNHASHED)
    write_lineage(path, {"model_digest": digest, **lineage})
    return digest


def test_recover_keeps_a_swap_killed_while_it_removed_the_old_artifact(tmp_path, monkeypatch):
    """The swap exchanges the staged and the old artifact, then deletes the old one from the
    staged place: a kill there leaves the (half-deleted) old artifact where the journal names
    the staged one. Recovery must see the swap done, not swap the old one back."""
    from buildenv.core import atomic
    from buildenv.release import journal

    (tmp_path / "pyproject.toml").write_text("[tool.buildenv]\n")
    project = Project.discover(tmp_path)
    final = tmp_path / "dist" / "churn" / "prod"
    _artifact(final, "old")
    work = project.state_dir / "retrain" / "feedbeef0001"
    staged = work / "dist" / "churn"
    new = _artifact(staged, "new")
    journal.journal(work, {"phase": "swapping", "saved": [], "staged": [
        {"staged": "dist/churn", "final": "dist/churn/prod", "digest": journal.lineage_sha(staged)}]})

    def killed_midway(path, ignore_errors=False):
        (Path(path) / "model.pkl").unlink()  # part of the old artifact is gone
        raise _Killed

    monkeypatch.setattr(atomic, "shutil", type("S", (), {"rmtree": staticmethod(killed_midway)}))
    with pytest.raises(_Killed):
        journal.swap(staged, final)
    monkeypatch.undo()
    if not staged.is_dir():
        pytest.skip("no renameat2 exchange here: the swap moves the old artifact aside")
    assert read_lineage(final)["model_digest"] == new
    journal.recover(project)
    assert (final / "model.pkl").read_text() == "new"
    assert read_lineage(final)["model_digest"] == new
    assert tree_digest(final, exclude=UNHASHED) == new
    assert not work.exists()


def test_recover_installs_a_staged_artifact_whose_model_bytes_equal_the_old_ones(tmp_path):
    """A retrain on new data may train the same model bytes: the staged artifact differs from
    the one in dist/ only by its lineage (what it was built from). Killed before its swap,
    recovery installs it: the swap is known done only by the lineage's bytes."""
    from buildenv.release import journal

    (tmp_path / "pyproject.toml").write_text("[tool.buildenv]\n")
    project = Project.discover(tmp_path)
    final = tmp_path / "dist" / "churn" / "prod"
    old = _artifact(final, "same", data="v1")
    work = project.state_dir / "retrain" / "feedbeef0002"
    staged = work / "dist" / "churn"
    assert _artifact(staged, "same", data="v2") == old
    journal.journal(work, {"phase": "swapping", "saved": [], "staged": [
        {"staged": "dist/churn", "final": "dist/churn/prod", "digest": journal.lineage_sha(staged)}]})
    assert journal.recover(project) == ["dist/churn/prod"]
    assert read_lineage(final)["data"] == "v2"
    assert not work.exists()
